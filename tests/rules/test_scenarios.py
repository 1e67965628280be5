"""Every scenario file in rules/packs/scenarios passes, and together they cover every rule.

Coverage convention: each rule of each shipped pack is emitted in at least one scenario, and
has a near-miss file, `<pack kind>-<rule id>-near-miss*.yaml`, that loads the rule's pack and
holds events that come close to the trigger without firing it.
"""

from __future__ import annotations

import textwrap
from functools import cache
from pathlib import Path

import pytest

from rules.ruleset import RuleSet, load_rules
from rules.scenarios import ScenarioResult, load_scenario, run_scenario

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "rules" / "packs"
FILES = sorted((PACKS / "scenarios").glob("*.yaml"))


@cache
def _rules(packs: tuple[Path, ...]) -> RuleSet:
    """Packs compile once per combination; each run still starts from a fresh state."""
    return load_rules(packs)


def _run(path: Path) -> ScenarioResult:
    scenario = load_scenario(path)
    return run_scenario(scenario, _rules(tuple(scenario.packs)))


def test_there_are_scenarios() -> None:
    assert len(FILES) >= 2 * 13  # 13 shipped rules, each emitted and near-missed


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_scenario_passes(path: Path) -> None:
    result = _run(path)
    assert result.passed, result.report()


def test_every_shipped_rule_is_emitted_and_has_a_near_miss() -> None:
    shipped = load_rules([PACKS])
    assert {p.name for p in shipped.packs} == {"retail-risk", "retail-marketing"}
    scenarios = [load_scenario(f) for f in FILES]
    problems = []
    for pack in shipped.packs:
        pack_file = Path(pack.file).resolve()
        kind = Path(pack.file).stem  # risk / marketing
        using = [s for s in scenarios if pack_file in s.packs]
        for rule in pack.rules:
            rid = rule.spec.id
            emitted = [s for s in using if (rid, "emitted") in {e[1:3] for e in s.expected}]
            near = [s for s in using if s.file.stem.startswith(f"{kind}-{rid}-near-miss")]
            if not emitted:
                problems.append(f"{pack.name}/{rid}: no scenario expects it to be emitted")
            if not near:
                problems.append(f"{pack.name}/{rid}: no {kind}-{rid}-near-miss*.yaml scenario")
    assert not problems, "\n".join(problems)


def test_every_contact_policy_reason_is_exercised() -> None:
    expected = [e for f in FILES for e in load_scenario(f).expected]
    reasons = {reason for _, _, outcome, reason, _ in expected if outcome == "suppressed"}
    wanted = {"dedup", "cooldown", "no_consent", "holdout", "risk_block", "arbitration",
              "frequency_cap"}  # fmt: skip
    assert not wanted - reasons, f"no scenario expects: {sorted(wanted - reasons)}"
    held = [nb for *_, nb in expected if nb is not None]
    assert any(nb.endswith("T08:00:00+08:00") for nb in held), "no quiet-hours hold is checked"


def _write(tmp_path: Path, start: str, body: str) -> Path:
    """A scenario on both shipped packs, for customer cn-40001; `body` has events and expect."""
    risk, marketing = (PACKS / "risk.yaml").as_posix(), (PACKS / "marketing.yaml").as_posix()
    path = tmp_path / "wrong.yaml"
    head = f"""\
        scenario: a deliberately wrong scenario
        packs: ["{risk}", "{marketing}"]
        start: "{start}"
        customer:
          id: cn-40001
          profile: {{home_country: CN, timezone: Asia/Shanghai, consent: {{marketing: true}}}}
        defaults: {{type: transaction, channel: card, direction: debit, amount: 120}}
        """
    path.write_text(textwrap.dedent(head) + textwrap.dedent(body), encoding="utf-8")
    return path


def test_a_wrong_scenario_fails_with_a_readable_diff(tmp_path: Path) -> None:
    body = """\
        events:
          - {at: 0m, repeat: 6, every: 1m}
          - {at: 6m, amount: 6000}
        expect:
          - {at: 3m, rule: card-velocity, emitted: true}
          - {at: 5m, rule: card-velocity, suppressed: cooldown}
          - {at: 6m, rule: card-velocity, suppressed: dedup}
        """
    path = _write(tmp_path, "2026-11-02T10:00:00+08:00", body)
    result = run_scenario(load_scenario(path))
    assert not result.passed
    lines = result.report().splitlines()
    assert lines[0] == f"FAIL {path}: a deliberately wrong scenario"

    def said(marker: str, text: str) -> bool:
        return any(marker in line and line.endswith(text) for line in lines[1:])

    assert said("expected, did not happen", "at 3m card-velocity emitted")
    assert said("expected, did not happen", "at 5m card-velocity suppressed (cooldown)")
    assert said("happened, not expected", "at 4m card-velocity emitted")
    assert said("happened, not expected", "at 5m card-velocity suppressed (dedup)")
    assert said("happened, not expected", "at 6m card-instalment suppressed (risk_block)")
    assert len(lines) == 6  # the matching 6m dedup is not reported


def test_a_wrong_not_before_fails(tmp_path: Path) -> None:
    body = """\
        events:
          - {at: 0m, amount: 7200}
        expect:
          - {at: 0m, rule: card-instalment, emitted: true, not_before: "2026-11-03T07:00:00+08:00"}
        """
    result = run_scenario(load_scenario(_write(tmp_path, "2026-11-02T23:30:00+08:00", body)))
    lines = result.report().splitlines()
    held = "at 0 card-instalment emitted not_before 2026-11-03T0{}:00:00+08:00"
    assert any("did not happen" in line and line.endswith(held.format(7)) for line in lines)
    assert any("not expected" in line and line.endswith(held.format(8)) for line in lines)
