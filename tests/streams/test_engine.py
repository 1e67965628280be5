"""The batch engine: bad input becomes dead letters, counts add up, batching changes nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import generate_latest

from monitoring.metrics import PrometheusObserver
from rules.ruleset import EventResult, RuleSet, load_rules
from state.events import Event
from state.model import CustomerState
from state.store import MemoryStore, RocksStore, StateCache, Store
from streams.engine import Engine, Record

PACK = """
pack: t
version: 3
aggregates:
  card_10m: {on: transaction, where: 'event.channel == "card"', kind: count, window: 10m}
rules:
  - id: velocity
    kind: alert
    on: transaction
    when: 'agg.card_10m >= 3'
    severity: high
    dedup: 30m
"""


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    path = tmp_path / "t.yaml"
    path.write_text(PACK)
    return load_rules([path])


def txn(i: int, customer: str = "c1", minute: int | None = None, **extra: Any) -> bytes:
    body = {
        "type": "transaction",
        "event_id": f"e{i}",
        "customer_id": customer,
        "ts": f"2026-11-02T10:{minute if minute is not None else i:02d}:00+08:00",
        "amount": 10.0,
        "direction": "debit",
        "channel": "card",
        **extra,
    }
    return json.dumps(body).encode()


def records(*values: bytes) -> list[Record]:
    return [Record(v, f"test:{n}") for n, v in enumerate(values, 1)]


def test_bad_input_becomes_dead_letters_with_reasons_and_counts_add_up(rules: RuleSet) -> None:
    observer = PrometheusObserver()
    engine = Engine(rules, StateCache(MemoryStore()), observer)
    batch = records(
        b"{not json",
        b'{"type": "transaction", "event_id": "x"}',
        b"\xff\xfe binary",
        txn(1),
        b"[1, 2, 3]",
        txn(2, amount=-5),
    )
    out = engine.process(batch)
    assert out.events == 6
    assert out.processed == 1
    assert out.events == out.processed + out.duplicates + len(out.dead_letters)
    letters = [json.loads(d) for d in out.dead_letters]
    assert [d["reason"] for d in letters] == [
        "malformed_json",
        "invalid_event",
        "malformed_json",
        "invalid_event",
        "invalid_event",
    ]
    assert [d["origin"] for d in letters] == ["test:1", "test:2", "test:3", "test:5", "test:6"]
    assert letters[0]["raw"] == "{not json"
    assert letters[2]["raw"] is None and letters[2]["raw_base64"]
    assert "amount" in letters[4]["error"] and letters[4]["customer_id"] == "c1"
    metrics = generate_latest(observer.registry).decode()
    assert 'crm_dead_letters_total{reason="invalid_event"} 3.0' in metrics
    assert 'crm_events_total{outcome="processed",topic="file",type="transaction"} 1.0' in metrics
    assert 'crm_events_total{outcome="dead_letter",topic="file",type="unknown"} 5.0' in metrics
    assert 'crm_event_processing_seconds_count{type="transaction"} 1.0' in metrics


class ExplodingRules(RuleSet):
    """A rule set with a bug that raises on one event: the engine must contain it."""

    def apply(self, state: CustomerState, event: Event, *args: Any, **kw: Any) -> EventResult:
        if event.event_id == "e2":
            raise RuntimeError("boom")
        return super().apply(state, event, *args, **kw)


def test_an_exception_while_applying_one_event_is_dead_lettered_not_raised(
    rules: RuleSet, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(ExplodingRules(rules.packs), StateCache(MemoryStore()))
    with caplog.at_level(logging.WARNING, logger="crm_triggers.engine"):
        out = engine.process(records(txn(1), txn(2), txn(3), txn(4)))
    assert out.processed == 3
    (letter,) = [json.loads(d) for d in out.dead_letters]
    assert letter["reason"] == "processing_error"
    assert "RuntimeError: boom" in letter["error"]
    # a bug: logged at ERROR with its traceback and the event's id to find it by
    (logged,) = caplog.records
    assert logged.levelno == logging.ERROR and logged.exc_info is not None
    assert logged.__dict__["event_id"] == "e2" and logged.__dict__["reason"] == "processing_error"


def test_dead_letters_are_logged_at_most_ten_a_second(
    rules: RuleSet, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(rules, StateCache(MemoryStore()))
    with caplog.at_level(logging.WARNING, logger="crm_triggers.engine"):
        out = engine.process([Record(b"{not json", f"test:{i}") for i in range(1000)])
    assert len(out.dead_letters) == 1000  # every one dead-lettered and counted...
    assert 10 <= len(caplog.records) < 20  # ...but not 1,000 log lines
    assert caplog.records[0].levelno == logging.WARNING
    assert "test:0" in caplog.records[0].getMessage()


def test_redelivered_events_are_dropped_and_fire_nothing_twice(rules: RuleSet) -> None:
    engine = Engine(rules, StateCache(MemoryStore()))
    first = engine.process(records(txn(1), txn(2), txn(3)))
    again = engine.process(records(txn(3), txn(2)))
    assert len(first.actions) == 1
    assert again.duplicates == 2 and again.actions == [] and again.decisions == []


def _run(
    rules: RuleSet, events: list[bytes], batch: int, store: Store | None = None
) -> tuple[list[Any], list[Any]]:
    """Actions and decisions of a run in batches of `batch`."""
    engine = Engine(rules, StateCache(store if store is not None else MemoryStore()))
    actions: list[Any] = []
    decisions: list[Any] = []
    recs = records(*events)
    for i in range(0, len(recs), batch):
        result = engine.process(recs[i : i + batch])
        actions += [msgspec.json.decode(a) for a in result.actions]
        decisions += [msgspec.json.decode(d) for d in result.decisions]
    return actions, decisions


def stream() -> Iterator[bytes]:
    for i in range(60):
        yield txn(i, customer=f"c{i % 4}", minute=i // 2)


def test_batch_size_does_not_change_results(rules: RuleSet) -> None:
    events = list(stream())
    one = _run(rules, events, 1)
    many = _run(rules, events, 7)
    whole = _run(rules, events, 1000)
    assert one == many == whole
    assert len(one[0]) == 4  # one alert per customer...
    assert any(d["reason"] == "dedup" for d in one[1])  # ...then dedup


class CountingStore(RocksStore):
    """A real RocksDB store that counts its batch writes."""

    writes = 0

    def write(self, updates: Any) -> None:
        self.writes += 1
        super().write(updates)


def test_state_is_written_once_per_batch_and_survives_a_restart(
    rules: RuleSet, tmp_path: Path
) -> None:
    events = list(stream())
    expected = _run(rules, events, 1000)
    store = CountingStore(tmp_path / "state")
    first = _run(rules, events[:30], 10, store)
    assert store.writes == 3
    store.close()
    reopened = RocksStore(tmp_path / "state")
    rest = _run(rules, events[30:], 10, reopened)
    reopened.close()
    assert (first[0] + rest[0], first[1] + rest[1]) == expected


def test_state_ttl_forgets_idle_customers_in_event_time(rules: RuleSet) -> None:
    engine = Engine(rules, StateCache(MemoryStore()), state_ttl=3600)
    engine.process(records(txn(1, minute=0), txn(2, minute=1), txn(3, minute=2)))
    assert engine.states.get("c1") is not None
    assert len(engine.states.get("c1").ledger.fired) == 1  # type: ignore[union-attr]

    def at(i: int, ts: str) -> bytes:
        body = json.loads(txn(i))
        body["ts"] = ts
        return json.dumps(body).encode()

    engine.process(records(at(4, "2026-11-02T10:59:00+08:00")))
    kept = engine.states.get("c1")
    assert kept is not None and len(kept.ledger.fired) == 1  # idle 57 minutes: kept
    engine.process(records(at(5, "2026-11-02T12:30:00+08:00")))
    fresh = engine.states.get("c1")
    assert fresh is not None
    assert fresh.ledger.fired == {}  # idle 91 minutes: forgotten, a fresh state
    assert len(fresh.seen) == 8  # remembers only this event's id


def test_a_last_snapshot_of_a_partial_profile_update_reads_unset_fields_as_null(
    tmp_path: Path,
) -> None:
    (tmp_path / "p.yaml").write_text(
        "pack: p\nversion: 1\naggregates:\n  lastp: {on: profile, kind: last}\nrules:\n"
        "  - id: r\n    kind: alert\n    severity: low\n    on: transaction\n"
        "    when: 'agg.lastp != null and agg.lastp.home_country == null'\n"
    )
    engine = Engine(load_rules([tmp_path / "p.yaml"]), StateCache(MemoryStore()))
    profile = b'{"type": "profile", "event_id": "p1", "customer_id": "c1",'
    profile += b' "ts": "2026-11-02T09:00:00+08:00", "segment": "mass"}'
    out = engine.process(records(profile, txn(1)))
    assert out.dead_letters == []
    assert [json.loads(a)["rule_id"] for a in out.actions] == ["r"]


def test_records_from_kafka_are_applied_once_per_offset_however_many_follow(
    rules: RuleSet,
) -> None:
    engine = Engine(rules, StateCache(MemoryStore()))

    def kafka(i: int, offset: int) -> Record:
        return Record(txn(i, minute=i % 60), f"t/0@{offset}", "t/0", offset)

    first = engine.process([kafka(i, i) for i in range(100)])  # more than SEEN_IDS
    again = engine.process([kafka(i, i) for i in range(100)])  # redelivered after a crash
    assert first.processed == 100 and first.actions
    assert again.duplicates == 100 and again.actions == [] and again.decisions == []


def test_a_dead_letter_from_kafka_names_its_topic_partition_and_offset(rules: RuleSet) -> None:
    engine = Engine(rules, StateCache(MemoryStore()))
    out = engine.process([Record(b"{oops", "crm.transactions/3@42", "crm.transactions/3", 42)])
    (letter,) = [json.loads(d) for d in out.dead_letters]
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("crm.transactions", 3, 42)
    assert letter["raw"] == "{oops"
