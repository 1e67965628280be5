"""Scenario files: "given these events, expect these decisions", for analysts and CI.

A scenario is a YAML file:

```yaml
scenario: card velocity fires on the fifth card payment in 10 minutes, then dedups
packs: [../risk.yaml]                 # relative to this file
start: "2026-11-02T10:00:00+08:00"
customer:                             # optional; sent as a profile event at `start`
  id: c1
  profile: {home_country: CN, consent: {marketing: true}}
defaults: {type: transaction, channel: card, direction: debit, amount: 120}
events:                               # in time order; `at` is an offset from `start`
  - {at: 0m}
  - {at: 1m, repeat: 4, every: 1m}    # four more, a minute apart
expect:                               # exactly these decisions, no others ([] = none)
  - {at: 4m, rule: card-velocity, emitted: true}
  - {at: 5m, rule: card-velocity, suppressed: dedup}
```

Each expectation names the event by its offset `at` (`4m`, `1h10m`, `-400d`) and the rule,
and says `emitted: true` or `suppressed: REASON` (a shadow rule: `shadow: true` if it would
have been emitted, else `shadow: REASON`); `not_before` may be given too
(`not_before: null` asserts the action is not held). Events may name other customers with
`customer_id`; each customer has its own state. The run uses the real decoder and
the same per-event core as every other mode, on event time.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from rules.ruleset import RuleSet, load_rules
from state.events import InvalidEvent, decode_event
from state.model import CustomerState

Expectation = tuple[str, str, str, str | None, str | None]  # at, rule, outcome, reason, not_before
_ANY = "(any)"  # not_before not stated in the scenario: not compared


class ScenarioError(Exception):
    """The scenario file itself is wrong (not the rules it tests).

    `loc` is where in the document, e.g. ("events", 3), when known."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


@dataclass
class ScenarioResult:
    name: str
    file: str
    missing: list[Expectation] = field(default_factory=list)
    unexpected: list[Expectation] = field(default_factory=list)
    why: dict[Expectation, str] = field(default_factory=dict)  # decision -> its explanation

    @property
    def passed(self) -> bool:
        return not self.missing and not self.unexpected

    def report(self, because: bool = False) -> str:
        """A diff an analyst can read: what was expected and did not happen, and vice versa.

        With `because`, each unexpected decision is followed by its rule's conditions and
        the values they saw."""
        if self.passed:
            return f"PASS {self.file}: {self.name}"
        lines = [f"FAIL {self.file}: {self.name}"]
        lines += [f"  - expected, did not happen: {_show(e)}" for e in self.missing]
        for e in self.unexpected:
            lines.append(f"  + happened, not expected:   {_show(e)}")
            if because and self.why.get(e):
                lines.append(f"      because: {self.why[e]}")
        return "\n".join(lines)


def _because(explanation: list[dict[str, Any]]) -> str:
    """'agg.card_txn_10m >= 5 [agg.card_txn_10m=5]; ...': the conditions and their values."""
    parts = []
    for item in explanation:
        values = ", ".join(
            f"{k}={_short(v)}" for k, v in (item.get("values") or {}).items() if k != v
        )
        parts.append(f"{item.get('condition')}" + (f" [{values}]" if values else ""))
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _show(e: Expectation) -> str:
    at, rule, outcome, reason, not_before = e
    text = f"at {at} {rule} {outcome}" + (f" ({reason})" if reason else "")
    return text + (f" not_before {not_before}" if not_before not in (None, _ANY) else "")


_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _offset(value: Any, where: str) -> timedelta:
    """'4m', '1h10m', '-400d', '0' -> a timedelta."""
    text = str(value).strip().replace(" ", "")
    negative = text.startswith("-")
    body = text.lstrip("-+")
    if body == "0":
        return timedelta(0)
    if not body or _PART.sub("", body):
        raise ScenarioError(f"{where}: {value!r} is not an offset such as 0, 4m, 1h10m or -400d")
    seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(body))
    return timedelta(seconds=-seconds if negative else seconds)


def _label(delta: timedelta) -> str:
    """A canonical offset: '-400d', '4m', '1h30m', '0'."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + ("".join(parts) or "0")


@dataclass
class Scenario:
    name: str
    file: Path
    packs: list[Path]
    events: list[tuple[str, bytes]]
    expected: list[Expectation]


def load_scenario(path: Path) -> Scenario:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or "scenario" not in doc or "events" not in doc:
        raise ScenarioError(f"{path}: a scenario needs `scenario`, `events` and `expect`")
    packs = [(path.parent / p).resolve() for p in doc.get("packs") or ["."]]
    return build_scenario(doc, str(doc["scenario"]), path, packs, str(path), path.stem)


def build_scenario(
    doc: dict[str, Any], name: str, file: Path, packs: list[Path], where: str, stem: str
) -> Scenario:
    """A scenario from its parsed YAML; `where` starts error messages, `stem` event ids."""
    path = where
    if "events" not in doc:
        raise ScenarioError(f"{path}: a scenario needs `events` and `expect`")
    if "expect" not in doc:
        raise ScenarioError(f"{path}: `expect` is missing (use `expect: []` for no decisions)")
    try:
        start = datetime.fromisoformat(str(doc.get("start", "2026-11-02T10:00:00+08:00")))
    except ValueError as exc:
        raise ScenarioError(f"{path}: start: {exc}", ("start",)) from None
    if start.tzinfo is None:
        raise ScenarioError(f"{path}: start needs a UTC offset, e.g. +08:00", ("start",))
    customer = doc.get("customer") or {}
    cid = str(customer.get("id", "c-scenario"))
    defaults = doc.get("defaults") or {}
    events: list[tuple[str, bytes]] = []
    if customer.get("profile"):
        profile = {
            "type": "profile",
            "event_id": f"{stem}-profile",
            "customer_id": cid,
            "ts": (start - timedelta(seconds=1)).isoformat(),
            **customer["profile"],
        }
        events.append(("-1s", json.dumps(profile).encode()))
    last = None
    for i, spec in enumerate(doc["events"] or []):
        try:
            spec = dict(spec)
            at = _offset(spec.pop("at", 0), f"{path}: events[{i}].at")
            repeat = int(spec.pop("repeat", 1))
            every = _offset(spec.pop("every", "0"), f"{path}: events[{i}].every")
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"{path}: events[{i}]: {exc}", ("events", i)) from None
        except ScenarioError as exc:
            raise ScenarioError(str(exc), ("events", i)) from None
        for r in range(repeat):
            when = at + every * r
            if last is not None and when < last:
                raise ScenarioError(
                    f"{path}: events[{i}] is earlier than the event before it", ("events", i)
                )
            last = when
            body = {**defaults, **spec}
            body.setdefault("event_id", f"{stem}-{len(events)}")
            body.setdefault("customer_id", cid)
            body["ts"] = (start + when).isoformat()
            events.append((_label(when), json.dumps(body).encode()))
    expected = []
    for i, e in enumerate(doc["expect"] or []):
        try:
            expected.append(_expectation(e, f"{path}: expect[{i}]"))
        except ScenarioError as exc:
            raise ScenarioError(str(exc), ("expect", i)) from None
    return Scenario(name, file, packs, events, expected)


def _expectation(spec: dict[str, Any], where: str) -> Expectation:
    if not isinstance(spec, dict) or "rule" not in spec:
        raise ScenarioError(
            f"{where}: name the `rule` and say `emitted: true` or `suppressed: REASON`"
        )
    at = _label(_offset(spec.get("at", 0), where))
    if "shadow" in spec:  # a shadow rule: `true` if it would have been emitted, else why not
        shadow = spec["shadow"]
        return (at, str(spec["rule"]), "shadow", None if shadow is True else str(shadow), None)
    if "suppressed" in spec:
        return (at, str(spec["rule"]), "suppressed", str(spec["suppressed"]), None)
    if spec.get("emitted") is True:
        if "not_before" not in spec:
            return (at, str(spec["rule"]), "emitted", None, _ANY)
        nb = spec["not_before"]
        return (at, str(spec["rule"]), "emitted", None, None if nb is None else str(nb))
    raise ScenarioError(
        f"{where}: say `emitted: true`, `suppressed: REASON` or (a shadow rule) "
        "`shadow: true` / `shadow: REASON`"
    )


def run_scenario(scenario: Scenario, rules: RuleSet | None = None) -> ScenarioResult:
    """Run a scenario on a fresh customer state and compare the decisions."""
    ruleset = rules if rules is not None else load_rules(scenario.packs)
    states: dict[str, CustomerState] = {}
    actual: list[Expectation] = []
    why: dict[Expectation, str] = {}
    for at, raw in scenario.events:
        try:
            event = decode_event(raw)
        except InvalidEvent as exc:
            raise ScenarioError(
                f"{scenario.file}: event at {at} is invalid: {exc.reason}"
            ) from None
        state = states.setdefault(event.customer_id, CustomerState())
        result = ruleset.apply(state, event)
        not_before = {a.rule_id: a.not_before for a in result.actions}
        for d in result.decisions:
            nb = not_before.get(d.rule_id)
            actual.append((at, d.rule_id, d.outcome, d.reason, nb))
            why.setdefault((*actual[-1][:4], _ANY), _because(d.explanation))
    # Compare not_before only where the scenario states it (`not_before: null` = not held).
    unstated = {e[:4] for e in scenario.expected if e[4] == _ANY}
    actual = [(*a[:4], _ANY) if a[:4] in unstated else a for a in actual]
    want, got = Counter(scenario.expected), Counter(actual)
    return ScenarioResult(
        scenario.name,
        str(scenario.file),
        missing=list((want - got).elements()),
        unexpected=list((got - want).elements()),
        why={e: why.get((*e[:4], _ANY), "") for e in (got - want)},
    )
