"""`crm-triggers rules test`: run scenario files and the `tests:` embedded in packs.

A path is a scenario file (top-level `scenario:`), a pack file (top-level `pack:`; its
`tests:` run against the pack itself) or a folder, searched recursively for both. An
embedded test is a scenario without `packs`:

```yaml
tests:
  - name: card velocity fires on the fifth card payment in 10 minutes
    customer: {id: c1}
    defaults: {type: transaction, channel: card, direction: debit, amount: 120}
    events: [{at: 0m, repeat: 5, every: 1m}]
    expect: [{at: 4m, rule: card-velocity, emitted: true}]
```
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

from rules.errors import RuleError, RuleProblem
from rules.pack import (
    Path_,
    _Mark,
    _nearest,
    _problem_at,
    _to_python,
    load_pack_file,
    pack_files,
)
from rules.ruleset import RuleSet, load_rules
from rules.scenarios import (
    Scenario,
    ScenarioError,
    ScenarioResult,
    build_scenario,
    load_scenario,
    run_scenario,
)

TEST_KEYS = {"name", "start", "customer", "defaults", "events", "expect"}


@dataclass
class Collected:
    """Scenarios found under the paths, and the files that could not be used."""

    scenarios: list[Scenario] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _kind(path: Path) -> str | None:
    """'scenario', 'pack' or None, by the file's top-level keys; a YAML error is raised."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ScenarioError(f"{at}: error: invalid YAML: {exc.problem or exc.context}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: error: cannot read: {exc}") from None
    if isinstance(doc, dict):
        if "scenario" in doc:
            return "scenario"
        if "pack" in doc:
            return "pack"
    return None


def collect(paths: list[str]) -> Collected:
    out = Collected()
    for given in paths:
        root = Path(given)
        if not root.exists():
            out.errors.append(f"{given}: error: no such file or folder")
            continue
        for path in pack_files(root, recursive=True):
            kind = None
            try:
                kind = _kind(path)
                if kind == "scenario":
                    out.scenarios.append(load_scenario(path))
                elif kind == "pack":
                    out.scenarios.extend(pack_tests(path))
                elif path == root:  # named on purpose; in a folder, other YAML is skipped
                    out.errors.append(
                        f"{path}: error: neither a scenario (`scenario:`) nor a pack (`pack:`)"
                    )
            except RuleError as err:
                out.errors.append(str(err))
            except ScenarioError as err:
                out.errors.append(str(_located(path, err)) if kind == "scenario" else str(err))
            except (TypeError, ValueError, AttributeError) as err:
                out.errors.append(f"{path}: error: not a valid scenario: {err}")
    return out


def _located(path: Path, err: ScenarioError) -> RuleProblem | ScenarioError:
    """A scenario file's error at file:line:col with the line, as `rules check` prints."""
    message = str(err).removeprefix(f"{path}: ")
    try:
        text = path.read_text(encoding="utf-8")
        marks: dict[Path_, _Mark] = {}
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return err
        _to_python(node, (), marks)
    except Exception:  # the plain message is still right
        return err
    return _problem_at(str(path), text.splitlines(), _nearest(marks, err.loc), message)


def pack_tests(path: Path) -> list[Scenario]:
    """The embedded tests of a pack file, each run against that pack only."""
    loaded = load_pack_file(path)
    scenarios = []
    for i, test in enumerate(loaded.spec.tests):
        where = f"tests[{i}]"
        unknown = sorted(set(test) - TEST_KEYS)
        if unknown:
            allowed = ", ".join(sorted(TEST_KEYS))
            message = f"{where}: unknown key `{unknown[0]}` (a test has {allowed})"
            raise RuleError([loaded.problem(("tests", i, f"{unknown[0]}:key"), message)])
        if "name" not in test:
            raise RuleError([loaded.problem(("tests", i), f"{where}: a test needs a `name`")])
        try:
            scenario = build_scenario(
                test, str(test["name"]), path, [path.resolve()], where, f"{path.stem}-t{i}"
            )
        except ScenarioError as err:
            raise RuleError([loaded.problem(("tests", i, *err.loc), str(err))]) from None
        scenarios.append(scenario)
    return scenarios


@dataclass
class Outcome:
    result: ScenarioResult
    error: str | None = None  # the scenario could not run (an invalid event)

    @property
    def passed(self) -> bool:
        return self.error is None and self.result.passed


def run_all(scenarios: list[Scenario]) -> Iterator[Outcome]:
    """Run each scenario on a fresh state; packs compile once per combination."""
    compiled: dict[tuple[Path, ...], RuleSet] = {}
    for scenario in scenarios:
        key = tuple(scenario.packs)
        try:
            if key not in compiled:
                compiled[key] = load_rules(key)
            yield Outcome(run_scenario(scenario, compiled[key]))
        except (RuleError, ScenarioError) as err:
            yield Outcome(ScenarioResult(scenario.name, str(scenario.file)), str(err))


def junit_xml(outcomes: list[Outcome], seconds: float) -> bytes:
    """JUnit XML, one testcase per scenario, for CI systems."""
    errors = sum(1 for o in outcomes if o.error)
    failed = sum(1 for o in outcomes if not o.passed) - errors
    suite = ElementTree.Element(
        "testsuite",
        name="crm-triggers rules test",
        tests=str(len(outcomes)),
        failures=str(failed),
        errors=str(errors),
        time=f"{seconds:.3f}",
    )
    for o in outcomes:
        case = ElementTree.SubElement(
            suite, "testcase", classname=o.result.file, name=o.result.name
        )
        if o.error:
            ElementTree.SubElement(case, "error", message=o.error.splitlines()[0]).text = o.error
        elif not o.result.passed:
            report = o.result.report()
            attrs: dict[str, Any] = {"message": report.splitlines()[0]}
            ElementTree.SubElement(case, "failure", **attrs).text = report
    data: bytes = ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)
    return data
