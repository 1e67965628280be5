"""One connector's dispatch without a broker: routing, holding for quiet hours in RocksDB
on disk (across a restart), dead letters, and a sink that fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.base import ListSink, SinkError
from connectors.config import DeliveryConfig
from connectors.dispatch import ConnectorDispatch
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
