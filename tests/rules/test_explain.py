"""Explanations of fired rules: each evaluated condition with the operand values it saw."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rules.compiler import Checked
from rules.explain import Frame, explain
from rules.outcomes import Decision
from rules.ruleset import RuleSet, load_rules
from state.events import Event
from state.model import CustomerState
from tests.factories import T0, make_event

PACK = """\
pack: x
version: 1
aggregates:
  card_txn_10m: {on: transaction, where: 'event.channel == "card"', kind: count, window: 10m}
  amount_1d: {on: transaction, kind: stats, field: event.amount, window: 1d}
  devices: {on: [transaction, interaction], kind: distinct, field: event.device_id, window: 1d}
  last_card: {on: transaction, where: 'event.lat != null', kind: last}
rules:
  - id: velocity
    kind: alert
    severity: high
    on: transaction
    when: 'event.channel == "card" and agg.card_txn_10m >= 5'
  - id: soon-after
    kind: alert
    severity: low
    on: transaction
    when: >-
      prior.last_card != null and prior.last_card.lat != null
      and hours_between(prior.last_card.ts, event.ts) < 1
      and prior.last_card.ts < event.ts
  - id: new-device
    kind: alert
    severity: low
    on: transaction
    when: 'event.device_id not in prior.devices and len(prior.devices) >= 2'
  - id: big-or-many
    kind: alert
    severity: low
    on: transaction
    when: '(event.amount > 100 and event.channel != "atm") or agg.amount_1d.count >= 1000'
  - id: ts-device
    kind: alert
    severity: low
    on: interaction
    when: '"ts" in agg.devices'
  - id: consented
    kind: alert
    severity: low
    on: interaction
    when: customer.consent.marketing
  - id: no-country
    kind: alert
    severity: low
    on: profile
    when: 'event.home_country == null and customer.consent.marketing'
"""


def event(kind: str = "transaction", minute: float = 0.0, **fields: Any) -> Event:
    return make_event(kind, minute * 60, **fields)


class Customer:
    def __init__(self, rules: RuleSet) -> None:
        self.rules, self.state = rules, CustomerState()

    def send(self, ev: Event) -> dict[str, Decision]:
        return {d.rule_id: d for d in self.rules.apply(self.state, ev).decisions}


@pytest.fixture
def customer(tmp_path: Path) -> Customer:
    path = tmp_path / "x.yaml"
    path.write_text(PACK)
    return Customer(load_rules([path]))


def test_each_condition_with_its_operand_values(customer: Customer) -> None:
    for minute in range(4):
        assert "velocity" not in customer.send(event(minute=minute))
    fired = customer.send(event(minute=4))
    assert fired["velocity"].explanation == [
        {
            "condition": 'event.channel == "card"',
            "values": {"event.channel": "card"},
            "result": True,
        },
        {
            "condition": "agg.card_txn_10m >= 5",
            "values": {"agg.card_txn_10m": 5},
            "result": True,
        },
    ]


def test_times_are_rfc_3339_and_a_last_event_is_a_snapshot(customer: Customer) -> None:
    customer.send(event(minute=0, lat=31.2, lon=121.5))
    why = customer.send(event(minute=30))["soon-after"].explanation
    assert why == [
        {
            "condition": "prior.last_card != null",
            "values": {"prior.last_card": {"ts": "2026-11-02T10:00:00+00:00", "lat": 31.2}},
            "result": True,
        },
        {
            "condition": "prior.last_card.lat != null",
            "values": {"prior.last_card.lat": 31.2},
            "result": True,
        },
        {
            "condition": "hours_between(prior.last_card.ts, event.ts) < 1",
            "values": {"hours_between(prior.last_card.ts, event.ts)": 0.5},
            "result": True,
        },
        {
            "condition": "prior.last_card.ts < event.ts",
            "values": {
                "prior.last_card.ts": "2026-11-02T10:00:00+00:00",
                "event.ts": "2026-11-02T10:30:00+00:00",
            },
            "result": True,
        },
    ]
    for text in ("2026-11-02T10:00:00+00:00", "2026-11-02T10:30:00+00:00"):
        assert datetime.fromisoformat(text).tzinfo is not None


def test_distinct_set_is_its_size(customer: Customer) -> None:
    customer.send(event(minute=0, device_id="phone"))
    # "ts" is also the key of a last-event snapshot; this is still a set of two
    why = customer.send(event("interaction", minute=1, device_id="ts"))["ts-device"].explanation
    assert why == [
        {
            "condition": '"ts" in agg.devices',
            "values": {"agg.devices": {"distinct": 2}},
            "result": True,
        }
    ]


def test_distinct_prior_is_the_set_as_seen_before_the_event(customer: Customer) -> None:
    customer.send(event(minute=0, device_id="phone"))
    customer.send(event("interaction", minute=1, device_id="tablet"))
    why = customer.send(event(minute=2, device_id="laptop"))["new-device"].explanation
    assert why == [
        {
            "condition": "event.device_id not in prior.devices",
            "values": {"event.device_id": "laptop", "prior.devices": {"distinct": 2}},
            "result": True,
        },
        {
            "condition": "len(prior.devices) >= 2",
            "values": {"len(prior.devices)": 2},
            "result": True,
        },
    ]


def test_or_records_only_the_conditions_it_evaluated(customer: Customer) -> None:
    short = customer.send(event(minute=0, amount=150.0))["big-or-many"].explanation
    assert [c["condition"] for c in short] == ["event.amount > 100", 'event.channel != "atm"']
    assert short[0]["values"] == {"event.amount": 150.0}

    long = customer.send(event(minute=1, amount=150.0, channel="atm"))
    assert "big-or-many" not in long  # both sides false: not fired, not explained


def test_or_records_the_false_side_before_the_true_one(tmp_path: Path) -> None:
    path = tmp_path / "o.yaml"
    path.write_text(
        "pack: o\nversion: 1\nrules:\n"
        "  - {id: r, kind: alert, severity: low, on: transaction,"
        " when: 'event.amount > 100 or event.lat == null'}\n"
    )
    why = Customer(load_rules([path])).send(event(amount=5.0))["r"].explanation
    assert why == [
        {"condition": "event.amount > 100", "values": {"event.amount": 5.0}, "result": False},
        {"condition": "event.lat == null", "values": {"event.lat": None}, "result": True},
    ]


def test_a_bare_true_false_condition_is_recorded(customer: Customer) -> None:
    customer.send(event("profile", consent={"marketing": True}, home_country="CN"))
    why = customer.send(event("interaction"))["consented"].explanation
    assert why == [{"condition": "customer.consent.marketing", "values": {}, "result": True}]


def test_a_field_left_out_of_a_profile_update_is_null(customer: Customer) -> None:
    fired = customer.send(event("profile", consent={"marketing": True}))
    assert fired["no-country"].explanation[0] == {
        "condition": "event.home_country == null",
        "values": {"event.home_country": None},
        "result": True,
    }


def test_explanations_are_json_serialisable(customer: Customer) -> None:
    decisions: list[Decision] = []
    customer.send(event(minute=0, lat=31.2, lon=121.5, device_id="a"))
    customer.send(event(minute=1, device_id="b"))
    decisions += customer.send(event("profile", minute=2, consent={"marketing": True})).values()
    decisions += customer.send(event("interaction", minute=3)).values()
    decisions += customer.send(event(minute=30, amount=500.0, device_id="c")).values()
    assert {d.rule_id for d in decisions} == {
        "no-country",
        "consented",
        "soon-after",
        "new-device",
        "big-or-many",
    }
    for d in decisions:
        encoded = msgspec.json.encode(d.explanation)
        assert json.loads(encoded) == d.explanation
        assert json.loads(msgspec.json.encode(d))["explanation"] == d.explanation


def test_stats_value_is_a_dict_of_its_members() -> None:
    """Rules read stats by member, but an explanation of a whole stats value (for instance from
    a hand-built expression) shows every member by name."""
    source = "(\nagg.amount_1d != null\n)"
    checked = Checked(source, ast.parse(source, mode="eval").body, "bool")
    stats = (3, 30.0, 10.0, 0.0, 10.0, 10.0)
    frame = Frame(
        event(), T0.timestamp(), {}, UTC, {"amount_1d": stats}, {}, {"amount_1d": "stats"}
    )
    assert explain(checked, frame) == [
        {
            "condition": "agg.amount_1d != null",
            "values": {
                "agg.amount_1d": {
                    "count": 3,
                    "sum": 30.0,
                    "mean": 10.0,
                    "std": 0.0,
                    "min": 10.0,
                    "max": 10.0,
                }
            },
            "result": True,
        }
    ]
