"""Shadow mode: a rule or pack with `mode: shadow` is decided (outcome `shadow`) but never
acts, and never changes what live rules get."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from monitoring.metrics import PrometheusObserver
from rules.errors import RuleError
from rules.outcomes import Action, Decision, to_json
from rules.pack import PolicySpec
from rules.policy import Candidate, decide
from rules.ruleset import RuleSet, load_rules
from state.events import decode_event
from state.model import CustomerState, Ledger, decode_state, encode_state
from state.store import MemoryStore, StateCache
from streams.demo import _View
from streams.engine import Engine, Record
from streams.replay import ReplaySummary
from streams.simulate import simulate

T0 = datetime(2024, 5, 1, 4, 0, tzinfo=UTC).timestamp()
HOUR, DAY = 3600.0, 86400.0
PACKS = Path(__file__).resolve().parents[2] / "rules" / "packs"


def policy(**fields: Any) -> PolicySpec:
    return PolicySpec.model_validate({"consent_required": False, **fields})


def offer(
    rule_id: str,
    *,
    shadow: bool = False,
    pack: str = "m",
    pol: PolicySpec | None = None,
    cooldown: float | None = None,
    priority: int = 0,
) -> Candidate:
    return Candidate(
        pack=pack,
        rule_id=rule_id,
        kind="offer",
        policy=pol or policy(),
        zone=UTC,
        cooldown=cooldown,
        priority=priority,
        shadow=shadow,
    )


def alert(
    rule_id: str, *, shadow: bool = False, severity: str = "high", dedup: float | None = None
) -> Candidate:
    return Candidate(
        pack="risk",
        rule_id=rule_id,
        kind="alert",
        policy=policy(),
        zone=UTC,
        severity=severity,
        dedup=dedup,
        shadow=shadow,
    )


def verdicts(cands: list[Candidate]) -> dict[str, tuple[str, str | None]]:
    return {c.rule_id: (c.outcome, c.reason) for c in cands}


# --- the policy -------------------------------------------------------------------------------


def test_shadow_offer_that_would_win_displaces_no_live_offer() -> None:
    ledger = Ledger()
    cands = [offer("live", priority=1), offer("shadow", shadow=True, priority=9)]
    decide(cands, ledger, "c1", T0, True)
    assert verdicts(cands) == {"live": ("emitted", None), "shadow": ("shadow", None)}
    assert ledger.fired == {"m/live": T0} and ledger.offers == [T0]
    assert ledger.shadow == {"m/shadow": T0}


def test_shadow_offer_loses_arbitration_to_a_better_live_offer() -> None:
    cands = [offer("live", priority=9), offer("shadow", shadow=True, priority=1)]
    decide(cands, Ledger(), "c1", T0, True)
    assert verdicts(cands) == {"live": ("emitted", None), "shadow": ("shadow", "arbitration")}


def test_shadow_offers_do_not_compete_with_each_other() -> None:
    cands = [offer("a", shadow=True, priority=9), offer("b", shadow=True, priority=1)]
    ledger = Ledger()
    decide(cands, ledger, "c1", T0, True)
    assert verdicts(cands) == {"a": ("shadow", None), "b": ("shadow", None)}
    assert ledger.fired == {} and ledger.offers == []


def test_shadow_offer_sees_the_live_checks() -> None:
    pol = policy(consent_required=True)
    cands = [offer("live", pol=pol), offer("shadow", shadow=True, pol=pol)]
    decide(cands, Ledger(), "c1", T0, False)
    assert verdicts(cands) == {
        "live": ("suppressed", "no_consent"),
        "shadow": ("shadow", "no_consent"),
    }
    ledger = Ledger(high_alert=T0)
    pol = policy(risk_block="1h")
    cands = [offer("shadow", shadow=True, pol=pol)]
    decide(cands, ledger, "c1", T0 + 60, True)
    assert verdicts(cands) == {"shadow": ("shadow", "risk_block")}


def test_shadow_offer_is_capped_by_live_offers_but_never_counts_toward_caps() -> None:
    pol = policy(max_offers_per_day=1)
    ledger = Ledger()
    # a shadow offer alone, twice: it would have been sent, but takes no cap slot
    for t in (T0, T0 + HOUR):
        cands = [offer("shadow", shadow=True, pol=pol)]
        decide(cands, ledger, "c1", t, True)
        assert verdicts(cands) == {"shadow": ("shadow", None)}
    assert ledger.offers == []
    cands = [offer("live", pol=pol)]
    decide(cands, ledger, "c1", T0 + 2 * HOUR, True)
    assert verdicts(cands) == {"live": ("emitted", None)}
    cands = [offer("shadow", shadow=True, pol=pol)]
    decide(cands, ledger, "c1", T0 + 3 * HOUR, True)
    assert verdicts(cands) == {"shadow": ("shadow", "frequency_cap")}


def test_shadow_offer_that_would_win_is_capped_as_of_before_the_live_winner() -> None:
    # had the shadow rule been live it would have won, and the live one would not count
    pol = policy(max_offers_per_day=1)
    cands = [offer("live", pol=pol), offer("shadow", shadow=True, pol=pol, priority=5)]
    decide(cands, Ledger(), "c1", T0, True)
    assert verdicts(cands) == {"live": ("emitted", None), "shadow": ("shadow", None)}


def test_shadow_offer_mirrors_its_own_cooldown_without_starting_the_live_one() -> None:
    ledger = Ledger()

    def send(t: float, shadow: bool = True) -> tuple[str, str | None]:
        cands = [offer("o", shadow=shadow, cooldown=DAY)]
        decide(cands, ledger, "c1", t, True)
        return (cands[0].outcome, cands[0].reason)

    assert send(T0) == ("shadow", None)
    assert send(T0 + HOUR) == ("shadow", "cooldown")
    assert send(T0 + DAY + 1) == ("shadow", None)
    assert ledger.fired == {}
    # promoted to live: its would-be emissions were never sent, so it may send now
    assert send(T0 + DAY + 2, shadow=False) == ("emitted", None)
    # back in shadow: the live emission counts for its cooldown
    assert send(T0 + DAY + 3) == ("shadow", "cooldown")


def test_shadow_alert_mirrors_dedup_and_opens_no_risk_block() -> None:
    ledger = Ledger()
    pol = policy(risk_block="1d")
    cands = [alert("a", shadow=True, dedup=HOUR), offer("live", pol=pol)]
    decide(cands, ledger, "c1", T0, True)
    assert verdicts(cands) == {"a": ("shadow", None), "live": ("emitted", None)}
    assert ledger.high_alert is None and ledger.fired == {"m/live": T0}
    cands = [alert("a", shadow=True, dedup=HOUR)]
    decide(cands, ledger, "c1", T0 + 60, True)
    assert verdicts(cands) == {"a": ("shadow", "dedup")}


def test_stale_shadow_entries_are_dropped() -> None:
    ledger = Ledger(shadow={"gone/rule": T0})
    decide([offer("o", shadow=True)], ledger, "c1", T0 + 401 * DAY, True)
    assert ledger.shadow == {"m/o": T0 + 401 * DAY}


def test_ledger_without_shadow_entries_encodes_as_before() -> None:
    state = CustomerState(ledger=Ledger(fired={"p/r": 1.0}))
    assert b"x" not in msgspec.msgpack.decode(encode_state(state))["l"]
    state.ledger.shadow["p/s"] = 2.0
    assert decode_state(encode_state(state)).ledger.shadow == {"p/s": 2.0}


# --- packs ------------------------------------------------------------------------------------

OFFERS = """\
pack: offers
version: 1
policy: {consent_required: false, max_offers_per_day: 1}
rules:
  - {id: small, kind: offer, on: transaction, when: 'event.amount > 10',
     offer: {product: p1, channel: sms}, priority: 1, cooldown: 1d}
  - {id: big, kind: offer, on: transaction, when: 'event.amount > 100',
     offer: {product: p2, channel: sms}, priority: 5, cooldown: 1d, mode: shadow}
"""


def txn(seconds: float, amount: float) -> Any:
    body = {
        "type": "transaction",
        "event_id": f"t{seconds}-{amount}",
        "customer_id": "c1",
        "ts": datetime.fromtimestamp(T0 + seconds, UTC).isoformat(),
        "amount": amount,
        "direction": "debit",
        "channel": "card",
    }
    return decode_event(json.dumps(body))


def test_shadow_rule_is_decided_but_never_acts(tmp_path: Path) -> None:
    (tmp_path / "offers.yaml").write_text(OFFERS)
    rules = load_rules([tmp_path])
    state = CustomerState()
    got = []
    for t, amount in ((0, 500), (HOUR, 500), (DAY + HOUR, 50)):
        result = rules.apply(state, txn(t, amount))
        got.append(sorted((d.rule_id, d.outcome, d.reason, d.action_id) for d in result.decisions))
        assert all(a.rule_id == "small" for a in result.actions)
    assert got[0][0] == ("big", "shadow", None, None)
    assert got[0][1][:3] == ("small", "emitted", None)
    assert got[1] == [
        ("big", "shadow", "cooldown", None),
        ("small", "suppressed", "cooldown", None),
    ]
    assert got[2][0][:3] == ("small", "emitted", None)


def test_pack_mode_is_the_default_and_a_rule_may_override_it(tmp_path: Path) -> None:
    text = OFFERS.replace("version: 1\n", "version: 1\nmode: shadow\n").replace(
        "cooldown: 1d, mode: shadow", "cooldown: 1d, mode: live"
    )
    (tmp_path / "offers.yaml").write_text(text)
    result = load_rules([tmp_path]).apply(CustomerState(), txn(0, 500))
    assert sorted((d.rule_id, d.outcome, d.reason) for d in result.decisions) == [
        ("big", "emitted", None),
        ("small", "shadow", "arbitration"),
    ]
    assert [a.rule_id for a in result.actions] == ["big"]


@pytest.mark.parametrize("where", ["pack", "rule"])
def test_an_unknown_mode_is_an_error_at_its_line(tmp_path: Path, where: str) -> None:
    if where == "pack":
        text = OFFERS.replace("version: 1\n", "version: 1\nmode: dark\n")
        line = 3
    else:
        text = OFFERS.replace("mode: shadow", "mode: dark")
        line = 8
    (tmp_path / "offers.yaml").write_text(text)
    with pytest.raises(RuleError) as err:
        load_rules([tmp_path])
    assert f"offers.yaml:{line}:" in str(err.value) and "'live' or 'shadow'" in str(err.value)


def _with_shadow_rules(tmp_path: Path, shadow: bool) -> RuleSet:
    """The shipped packs, and with `shadow` also shadow rules that match often and would
    win every arbitration, open risk blocks and take cap slots if they were live."""
    folder = tmp_path / ("with" if shadow else "without")
    folder.mkdir()
    extra = {
        "retail-marketing": "  - {id: shadow-credit, kind: offer, on: transaction, mode: shadow,"
        " when: 'event.direction == \"credit\"', priority: 1000, value: 1000000,"
        " offer: {product: x, channel: sms}, cooldown: 2d}\n",
        "retail-risk": "  - {id: shadow-card, kind: alert, on: transaction, mode: shadow,"
        " when: 'event.channel == \"card\"', severity: critical, dedup: 1h}\n",
    }
    for file in sorted(PACKS.glob("*.yaml")):
        text = file.read_text()
        name = re.search(r"^pack: (\S+)$", text, re.M)
        assert name is not None and text.count("\nrules:\n") == 1
        if shadow:
            text = text.replace("\nrules:\n", "\nrules:\n" + extra.pop(name.group(1)))
        (folder / file.name).write_text(text)
    assert not shadow or not extra
    if shadow:
        (folder / "trial.yaml").write_text(
            "pack: trial\nversion: 1\nmode: shadow\npolicy: {consent_required: false}\n"
            "rules:\n  - {id: any-txn, kind: offer, on: transaction, when: 'true',\n"
            "     offer: {product: y, channel: push}, priority: 5000}\n"
        )
    return load_rules([folder])


def _run(rules: RuleSet) -> tuple[list[Action], list[Decision]]:
    states: dict[str, CustomerState] = {}
    actions: list[Action] = []
    decisions: list[Decision] = []
    for ev in simulate(150, 45, 7):
        event = decode_event(msgspec.json.encode(ev))
        result = rules.apply(states.setdefault(event.customer_id, CustomerState()), event)
        actions.extend(result.actions)
        decisions.extend(result.decisions)
    return actions, decisions


def test_shadow_rules_leave_live_decisions_and_actions_exactly_as_without_them(
    tmp_path: Path,
) -> None:
    base_actions, base_decisions = _run(_with_shadow_rules(tmp_path, shadow=False))
    actions, decisions = _run(_with_shadow_rules(tmp_path, shadow=True))
    live = [d for d in decisions if d.outcome != "shadow"]
    shadow = [d for d in decisions if d.outcome == "shadow"]
    assert [to_json(d) for d in live] == [to_json(d) for d in base_decisions]
    assert [to_json(a) for a in actions] == [to_json(a) for a in base_actions]
    assert len(base_actions) > 50  # the live rules did act
    # the shadow rules were exercised, with honest reasons, and never acted
    assert {d.rule_id for d in shadow} == {"shadow-credit", "shadow-card", "any-txn"}
    assert all(d.action_id is None for d in shadow)
    reasons = Counter((d.rule_id, d.reason) for d in shadow)
    assert reasons[("shadow-credit", None)] and reasons[("shadow-credit", "cooldown")]
    assert reasons[("shadow-credit", "no_consent")] and reasons[("shadow-card", "dedup")]
    assert reasons[("any-txn", None)] and reasons[("shadow-card", None)]


# --- outputs: metrics, replay summary, demo view ----------------------------------------------


def test_engine_counts_shadow_decisions_and_no_actions(tmp_path: Path) -> None:
    (tmp_path / "offers.yaml").write_text(
        OFFERS.replace("version: 1\n", "version: 1\nmode: shadow\n")
    )
    rules = load_rules([tmp_path])
    observer = PrometheusObserver()
    engine = Engine(rules, StateCache(MemoryStore()), observer)
    raw = [msgspec.json.encode(ev) for ev in simulate(20, 10, 3)]
    out = engine.process([Record(r, f"t:{i}") for i, r in enumerate(raw)])
    assert out.decisions and not out.actions
    shadow = observer.registry.get_sample_value(
        "crm_rule_decisions_total",
        {"pack": "offers", "rule": "small", "outcome": "shadow", "reason": ""},
    )
    assert shadow is not None and shadow > 0
    assert observer.registry.get_sample_value(
        "crm_actions_total", {"kind": "offer", "pack": "offers"}
    ) in (None, 0.0)
    summary = ReplaySummary()
    summary.add(out)
    assert summary.shadow == summary.decisions == len(out.decisions)
    assert f"({summary.shadow:,} shadow)" in summary.line()
    view = _View(_Sink(), rules)
    view.count(out.decisions)
    assert sum(view.shadow.values()) == len(out.decisions) and not view.emitted


class _Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_the_replay_line_names_shadow_decisions_only_when_there_are_some() -> None:
    assert ReplaySummary().line().find("shadow") < 0
