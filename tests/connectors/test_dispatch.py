"""One connector's dispatch without a broker: routing, holding for quiet hours in RocksDB
on disk (across a restart), dead letters, a sink that fails, and what it counts (by kind)
and logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors.base import ListSink, Sink, SinkError, dead_letter
from connectors.config import DeliveryConfig
from connectors.dispatch import OUTCOMES, ConnectorDispatch, LetterTap
from connectors.hold import HoldStore

CONFIG = DeliveryConfig.model_validate(
    {
        "connectors": {"push": {"type": "stdout"}, "cases": {"type": "stdout"}},
        "routes": [
            {"match": {"kind": ["offer"]}, "to": ["push"]},
            {"match": {"kind": ["alert"], "severity": ["high"]}, "to": ["cases"]},
        ],
    }
)
NOW = 1_800_000_000.0


def action(n: int, kind: str = "offer", not_before: float | None = None, **extra: Any) -> bytes:
    from datetime import UTC, datetime

    nb = datetime.fromtimestamp(not_before, UTC).isoformat() if not_before else None
    return json.dumps(
        {"action_id": f"a{n}", "kind": kind, "customer_id": f"c{n}", "not_before": nb} | extra
    ).encode()


def dispatch(tmp_path: Path, name: str = "push", clock: list[float] | None = None) -> Any:
    now = clock or [NOW]
    return ConnectorDispatch(
        name,
        CONFIG,
        ListSink(),
        ListSink(),
        HoldStore(tmp_path / "hold" / name),
        primary=name == "push",
        clock=lambda: now[0],
    )


def test_takes_only_its_own_actions_and_reports_unrouted_and_unreadable_once(
    tmp_path: Path,
) -> None:
    records = [
        action(1),
        action(2, "alert", severity="high"),
        action(3, "alert", severity="low"),  # no route
        b"{not json",
    ]
    push, cases = dispatch(tmp_path, "push"), dispatch(tmp_path, "cases")
    pb, cb = push.take(records), cases.take(records)
    assert pb.send == [records[0]] and cb.send == [records[1]]
    assert pb.unrouted == 1 and cb.unrouted == 0  # counted by the primary connector only
    assert len(pb.letters) == 1 and cb.letters == []
    push.send(pb)
    assert push.sink.records == [records[0]]
    letter = json.loads(push.dead_letter.records[0])
    assert letter["reason"].startswith("unreadable action") and letter["record_text"] == "{not json"
    assert (push.stats.delivered, push.stats.dead_lettered) == (1, 1)


def test_an_action_in_quiet_hours_is_held_on_disk_across_a_restart_and_sent_when_due(
    tmp_path: Path,
) -> None:
    clock = [NOW]
    held, now_due = action(1, not_before=NOW + 3600), action(2, not_before=NOW - 1)
    d = dispatch(tmp_path, clock=clock)
    batch = d.take([held, now_due])
    assert batch.send == [now_due] and batch.held == 1
    d.send(batch)
    d.close()  # a restart: only the disk remains

    clock[0] = NOW + 3599
    d = dispatch(tmp_path, clock=clock)
    assert len(d.hold) == 1
    batch = d.take([])
    d.add_due(batch, 100)
    assert batch.send == []
    clock[0] = NOW + 3600
    d.add_due(batch, 100)
    assert batch.send == [held]
    d.send(batch)
    assert d.sink.records == [held] and len(d.hold) == 0
    assert (d.stats.released, d.stats.delivered) == (1, 1)


class FailingSink(ListSink):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def flush(self) -> None:
        if self.fail:
            self.records.clear()
            raise SinkError("target gone")


def test_a_failing_sink_keeps_held_actions_until_it_delivers(tmp_path: Path) -> None:
    clock = [NOW]
    d = dispatch(tmp_path, clock=clock)
    d.sink = FailingSink()
    d.take([action(1, not_before=NOW + 10)])
    clock[0] += 10
    batch = d.take([])
    d.add_due(batch, 10)
    with pytest.raises(SinkError):
        d.send(batch)
    assert len(d.hold) == 1 and d.stats.failures == 1
    d.sink.fail = False
    batch = d.take([])
    d.add_due(batch, 10)
    d.send(batch)
    assert len(d.hold) == 0 and len(d.sink.records) == 1


def test_held_actions_due_together_come_out_in_the_order_they_were_made_and_first(
    tmp_path: Path,
) -> None:
    clock = [NOW]
    d = dispatch(tmp_path, clock=clock)
    held = [action(n, not_before=NOW + 60, customer="c1") for n in (7, 3, 9)]  # ids unordered
    d.take(held, positions=[(2, 100), (2, 101), (2, 102)])
    d.take(held, positions=[(2, 100), (2, 101), (2, 102)])  # the batch read again: no copies
    assert len(d.hold) == 3
    clock[0] = NOW + 60
    newer = action(5)
    batch = d.take([newer], positions=[(2, 103)])
    d.add_due(batch, 10)
    assert batch.send == [*held, newer]


def test_a_dead_letter_about_a_huge_record_keeps_its_ids_not_the_record(tmp_path: Path) -> None:
    d = dispatch(tmp_path)
    huge = b"[" * 400_000  # not JSON an action could be, and 400 KB
    batch = d.take([huge])
    [letter] = batch.letters
    parsed = json.loads(letter)
    assert parsed["record_bytes"] == 400_000 and "record" not in parsed
    assert len(letter) < 1000


# Counting by kind: every outcome has a kind label, and the kinds of an outcome add up to
# its total. Which actions of a batch were delivered and which dead-lettered is known per
# record (the sink's letters pass through the dispatch's LetterTap), not only as a number.


def by_kind(d: ConnectorDispatch) -> dict[tuple[str, str], int]:
    """The non-zero (outcome, kind) counts; each outcome's kinds add up to its total."""
    s = d.stats
    for outcome in OUTCOMES:
        total = sum(n for (o, _), n in s.by_kind.items() if o == outcome)
        assert total == getattr(s, outcome), outcome
    return {key: n for key, n in s.by_kind.items() if n}


def stamped(n: int, kind: str, ts: float, **extra: Any) -> bytes:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(ts, UTC).isoformat()
    return action(n, kind, ts=when, event_id=f"e{n}", rule_id="r1", pack="p", **extra)


def every(name: str) -> DeliveryConfig:
    """One connector that every action goes to."""
    return DeliveryConfig.model_validate(
        {"connectors": {name: {"type": "stdout"}}, "routes": [{"to": [name]}]}
    )


def test_every_outcome_is_counted_by_kind_and_latency_is_event_time_to_delivery(
    tmp_path: Path,
) -> None:
    clock = [NOW]
    d = ConnectorDispatch(
        "all",
        every("all"),
        ListSink(),
        ListSink(),
        HoldStore(tmp_path / "hold"),
        clock=lambda: clock[0],
    )
    records = [
        stamped(1, "offer", NOW - 2.0),
        stamped(2, "alert", NOW - 0.2),
        stamped(3, "offer", NOW - 30, not_before=NOW + 60),  # held
        json.dumps({"action_id": "a4", "customer_id": "c4"}).encode(),  # no kind, no ts
        b"{not json",
    ]
    batch = d.take(records)
    assert batch.held == 1
    d.take(records[2:3])  # the held one read again: not counted twice
    d.send(batch)
    assert by_kind(d) == {
        ("delivered", "offer"): 1,
        ("delivered", "alert"): 1,
        ("delivered", "unknown"): 1,
        ("held", "offer"): 1,
        ("dead_lettered", "unknown"): 1,
    }
    clock[0] = NOW + 60
    batch = d.take([])
    d.add_due(batch, 10)
    d.send(batch)
    assert by_kind(d)[("released", "offer")] == 1
    assert by_kind(d)[("delivered", "offer")] == 2

    [family] = d.latency.collect()
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples["crm_delivery_latency_seconds_count", None] == 3  # delivered with a ts
    assert samples["crm_delivery_latency_seconds_sum", None] == pytest.approx(2.0 + 0.2 + 90)
    assert samples["crm_delivery_latency_seconds_bucket", "0.25"] == 1
    assert samples["crm_delivery_latency_seconds_bucket", "2.5"] == 2
    assert samples["crm_delivery_latency_seconds_bucket", "60.0"] == 2  # held 90 s
    assert {s.labels["connector"] for s in family.samples} == {"all"}


class Poisoned(ListSink):
    """Dead-letters the records of some action ids through its dead-letter sink, as the
    webhook and Kafka sinks do (and counts them, as they do)."""

    def __init__(self, letters: Sink, poison: set[str]) -> None:
        super().__init__()
        self.letters, self.poison, self.dead_lettered = letters, poison, 0

    def write_batch(self, records: Sequence[bytes]) -> None:
        for record in records:
            if json.loads(record)["action_id"] in self.poison:
                self.letters.write_batch([dead_letter("hook", "http 500", 5, record, sink="x")])
                self.dead_lettered += 1
            else:
                self.records.append(record)


def test_the_dead_lettered_actions_of_a_batch_are_known_by_kind_not_only_their_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dlq = ListSink()
    tap = LetterTap(dlq)
    sink = Poisoned(tap, poison={"a2", "a3"})
    d = ConnectorDispatch("hook", every("hook"), sink, tap, None, clock=lambda: NOW)
    records = [
        stamped(1, "offer", NOW - 1),
        stamped(2, "offer", NOW - 1),  # dead-lettered
        stamped(3, "alert", NOW - 1),  # dead-lettered
        stamped(4, "alert", NOW - 1),
        stamped(5, "alert", NOW - 1),
    ]
    with caplog.at_level(logging.WARNING, logger="connectors.dispatch"):
        d.send(d.take(records))
    assert by_kind(d) == {
        ("delivered", "offer"): 1,
        ("delivered", "alert"): 2,
        ("dead_lettered", "offer"): 1,
        ("dead_lettered", "alert"): 1,
    }
    assert len(dlq.records) == 2 and tap.take() == []
    [family] = d.latency.collect()
    count = [s.value for s in family.samples if s.name.endswith("_count")]
    assert count == [3]  # the delivered ones only
    # one WARNING per dead letter, with its correlation ids and never the customer
    logged = [r for r in caplog.records if r.name == "connectors.dispatch"]
    assert [(r.levelno, r.action_id) for r in logged] == [  # type: ignore[attr-defined]
        (logging.WARNING, "a2"),
        (logging.WARNING, "a3"),
    ]
    first = logged[0].__dict__
    assert (first["event_id"], first["rule_id"], first["pack"], first["connector"]) == (
        "e2",
        "r1",
        "p",
        "hook",
    )
    assert "customer_id" not in first and "c2" not in logged[0].getMessage()


def test_dead_letters_past_the_tap_keep_the_totals_right(tmp_path: Path) -> None:
    """A sink wired to another dead-letter sink: which ones is not known, but each outcome's
    kinds still add up to its total."""
    sink = Poisoned(ListSink(), poison={"a2"})
    d = ConnectorDispatch("hook", every("hook"), sink, ListSink(), None, clock=lambda: NOW)
    d.send(d.take([stamped(n, "offer", NOW) for n in (1, 2, 3)]))
    assert (d.stats.delivered, d.stats.dead_lettered) == (2, 1)
    assert by_kind(d) == {("delivered", "offer"): 2, ("dead_lettered", "offer"): 1}


def test_dead_letters_are_logged_at_most_ten_a_second_and_held_ones_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tap = LetterTap(ListSink())
    poison = {f"a{n}" for n in range(30)}
    d = ConnectorDispatch(
        "hook",
        every("hook"),
        Poisoned(tap, poison),
        tap,
        HoldStore(tmp_path / "h"),
        clock=lambda: NOW,
    )
    with caplog.at_level(logging.DEBUG, logger="connectors.dispatch"):
        batch = d.take(
            [stamped(n, "offer", NOW) for n in range(30)]
            + [stamped(99, "alert", NOW, not_before=NOW + 5)]
        )
        d.send(batch)
    levels = [(r.levelno, r.getMessage().split(" by ")[0]) for r in caplog.records]
    assert levels.count((logging.WARNING, "action dead-lettered")) == 10
    assert (logging.DEBUG, "action held for quiet hours") in levels
    assert d.stats.dead_lettered == 30 and by_kind(d)[("held", "alert")] == 1
