"""The synthetic event stream: deterministic, ordered, valid, labelled, and streamed."""

from __future__ import annotations

import io
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from typing import Any

import msgspec
import pytest

from state.events import ProfileEvent, TransactionEvent, decode_event
from streams.simulate import LABEL_KINDS, Label, simulate, write_jsonl


def _jsonl(*args: Any, **kwargs: Any) -> str:
    out = io.StringIO()
    write_jsonl(simulate(*args, **kwargs), out)
    return out.getvalue()


@pytest.fixture(scope="module")
def stream() -> tuple[list[dict[str, Any]], list[Label]]:
    labels: list[Label] = []
    events = list(simulate(300, 60, seed=11, anomaly_rate=0.5, labels=labels))
    return events, labels


def test_same_arguments_give_identical_bytes_and_labels() -> None:
    first: list[Label] = []
    second: list[Label] = []
    a = _jsonl(150, 20, 7, anomaly_rate=0.3, labels=first)
    b = _jsonl(150, 20, 7, anomaly_rate=0.3, labels=second)
    assert a == b
    assert first == second
    assert len(a.splitlines()) > 150 * 20


def test_different_seed_or_start_differs() -> None:
    base = _jsonl(100, 10, 1)
    assert _jsonl(100, 10, 2) != base
    utc = datetime(2026, 10, 1, tzinfo=UTC)
    shifted = _jsonl(100, 10, 1, start=utc)
    assert shifted != base
    assert '"ts":"2026-10-01T00:00:00+00:00"' in shifted  # the offset of `start` is kept


def test_write_jsonl_returns_the_count_and_writes_lines() -> None:
    out = io.StringIO()
    n = write_jsonl(simulate(50, 5, 3), out)
    lines = out.getvalue().splitlines()
    assert n == len(lines) > 0
    assert msgspec.json.decode(lines[0])["type"] == "profile"


def test_every_event_is_valid_ordered_and_uniquely_identified(stream: Any) -> None:
    events, _ = stream
    previous = None
    for ev in events:
        decoded = decode_event(msgspec.json.encode(ev))
        assert decoded.event_id == ev["event_id"]
        assert previous is None or decoded.ts >= previous
        previous = decoded.ts
    assert len({ev["event_id"] for ev in events}) == len(events)
    assert {ev["type"] for ev in events} == {"transaction", "interaction", "profile"}


def test_first_appearance_is_a_full_profile(stream: Any) -> None:
    events, _ = stream
    first: dict[str, dict[str, Any]] = {}
    for ev in events:
        first.setdefault(ev["customer_id"], ev)
    assert len(first) == 300
    for ev in first.values():
        profile = decode_event(msgspec.json.encode(ev))
        assert isinstance(profile, ProfileEvent)
        assert set(profile.changes()) >= {"home_country", "segment", "birth_date", "timezone"}
        assert {"products", "consent", "delinquent"} <= set(profile.changes())


def test_balance_after_follows_a_running_balance(stream: Any) -> None:
    events, _ = stream
    balance: dict[str, float] = {}
    for ev in events:
        if ev["type"] != "transaction":
            continue
        signed = ev["amount"] if ev["direction"] == "credit" else -ev["amount"]
        before = balance.get(ev["customer_id"], ev["balance_after"] - signed)
        assert ev["balance_after"] == pytest.approx(before + signed, abs=0.011)
        balance[ev["customer_id"]] = ev["balance_after"]


def test_every_label_kind_is_present_and_points_at_its_event(stream: Any) -> None:
    events, labels = stream
    by_id = {ev["event_id"]: ev for ev in events}
    assert {label.kind for label in labels} == set(LABEL_KINDS)
    for label in labels:
        ev = by_id[label.event_id]
        assert (ev["customer_id"], ev["ts"]) == (label.customer_id, label.ts)
        assert ev["type"] == "transaction"


def test_labelled_events_have_the_shape_of_their_trigger(stream: Any) -> None:
    events, labels = stream
    by_id = {ev["event_id"]: decode_event(msgspec.json.encode(ev)) for ev in events}
    for label in labels:
        tx = by_id[label.event_id]
        assert isinstance(tx, TransactionEvent)
        if label.kind == "M1":
            assert tx.direction == "credit" and tx.amount >= 200_000
        elif label.kind == "M2":
            assert tx.tags == ["payroll"]
        elif label.kind == "M8":
            assert tx.channel == "card" and tx.amount >= 5_000
        elif label.kind in ("M4", "R3"):
            assert tx.channel == "card" and tx.merchant_country not in (None, "CN")
        elif label.kind == "R4":
            assert tx.amount >= 50_000 and tx.device_id is not None
        elif label.kind == "R5":
            assert tx.direction == "debit" and tx.amount >= 10_000
        elif label.kind == "R6":
            assert tx.tags == ["cash"] and 45_000 <= tx.amount < 50_000


def test_dormant_customers_have_old_history_first(stream: Any) -> None:
    events, labels = stream
    start = datetime(2026, 10, 1, tzinfo=timezone(timedelta(hours=8)))
    history = [ev for ev in events if datetime.fromisoformat(ev["ts"]) < start]
    assert history and events[: len(history)] == history
    dormant = {label.event_id for label in labels if label.kind == "R5"}
    last_seen: dict[str, datetime] = {}
    for ev in events:
        if ev["type"] == "transaction":
            ts = datetime.fromisoformat(ev["ts"])
            if ev["event_id"] in dormant:
                assert ts - last_seen[ev["customer_id"]] > timedelta(days=365)
            last_seen[ev["customer_id"]] = ts


def test_without_injection_only_natural_payroll_moments_are_labelled() -> None:
    labels: list[Label] = []
    for _ in simulate(300, 40, 5, anomaly_rate=0.0, labels=labels):
        pass
    assert labels and {label.kind for label in labels} == {"M2"}


def test_the_first_event_comes_before_the_stream_is_built() -> None:
    events = simulate(20_000, 1_000_000, 9)  # ~500 billion events if it were built eagerly
    first = next(events)
    assert first["type"] == "profile"
    assert len(list(islice(events, 1_000))) == 1_000


def test_memory_does_not_grow_with_days() -> None:
    def peak(days: int) -> int:
        tracemalloc.start()
        for _ in simulate(100, days, 4):
            pass
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    list(simulate(1, 1, 0))  # warm the module's caches (the HH:MM:SS table) out of the measure
    assert peak(60) < 1.5 * peak(15)  # a list of the whole stream would be ~4x


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        simulate(-1, 1, 0)
    with pytest.raises(ValueError):
        simulate(1, 1, 0, anomaly_rate=2.0)
