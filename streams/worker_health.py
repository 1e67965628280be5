"""The worker's health report: readiness checks, consumer lag, progress and state size.

Every HEALTH_EVERY seconds, on the worker's event loop (where Faust's state is safe to
read), `WorkerReport.report` works out the checks `/readyz` answers (partitions assigned,
recovery finished, the broker answering with the input topics, no stall: lag with nothing
processed for `ready_stall_s`) and sets the worker's gauges. Each report is also the
liveness heartbeat of `/healthz`: a stuck event loop stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException

from monitoring.health import Check, Progress
from streams.topics import admin_client

if TYPE_CHECKING:
    from streams.agent import Worker

HEALTH_EVERY = 5.0
"""Seconds between health reports (readiness checks, lag, state size)."""

DISK_EVERY = 60.0
"""Seconds between measurements of the state folder's size on disk."""


class WorkerReport:
    """Reads a worker's state (its Faust app, table, positions) and reports its health."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.progress = Progress(worker.settings.ready_stall_s)
        self._admin: Any = None
        self._broker = Check("broker", False, "not checked yet")
        self._disk_at = -math.inf

    async def report(self) -> None:
        """Every HEALTH_EVERY seconds: readiness checks (for /readyz), consumer lag, progress
        and state size (for /metrics). Also the liveness heartbeat: it runs on the event
        loop, so a stuck loop stops it."""
        with contextlib.suppress(Exception):  # a report must never break the worker
            if self.worker.failed is None:
                self.worker.health.report(await self._checks())

    async def _checks(self) -> list[Check]:
        worker = self.worker
        app: Any = worker.app
        consumer: Any = app.consumer
        assigned = {tp for tp in consumer.assignment() if tp.topic in worker.types}
        lag: dict[tuple[str, int], int] = {}
        for tp in assigned:
            key = (tp.topic, tp.partition)
            try:
                highwater = consumer.highwater(tp)  # the last stable offset with exactly_once
            except (KeyError, AttributeError, AssertionError, TypeError):
                highwater = None
            position = worker.position.get(key)
            if position is None:  # nothing processed yet: where the group starts
                position = consumer._committed_offset.get(tp)
            if highwater is not None and position is not None:
                lag[key] = max(0, highwater - position)
        total = sum(lag.values()) if lag else None  # of the partitions whose lag is known
        self.progress.update(total, worker.processed)
        idle = self.progress.idle_for()
        worker.gauges.update(lag, len(assigned), time.time() - idle)
        self._broker = await asyncio.to_thread(self._check_broker)
        keys = None
        with contextlib.suppress(Exception):
            store: Any = worker.table.data
            dbs = store._dbs.values()
            keys = sum(db.property_int_value("rocksdb.estimate-num-keys") or 0 for db in dbs)
        disk = None
        if time.monotonic() - self._disk_at >= DISK_EVERY:
            self._disk_at = time.monotonic()
            disk = await asyncio.to_thread(_folder_bytes, Path(app.conf.tabledir))
        worker.gauges.state(keys, disk)
        recovery = app.tables.recovery
        recovering = app.rebalancing or recovery.in_recovery or not recovery.completed.is_set()
        n = len(assigned)
        return [
            Check(
                "partitions",
                n > 0,
                f"{n} input partitions assigned"
                if n
                else "no input partitions assigned (a rebalance, or more workers than partitions)",
            ),
            Check(
                "recovery",
                not recovering,
                "state restored" if not recovering else "rebalancing or restoring state",
            ),
            self._broker,
            self.progress.check(total),
        ]

    def _check_broker(self) -> Check:
        """Whether Kafka answers and holds the input topics (blocking: run off the loop)."""
        if self._admin is None:
            self._admin = admin_client(self.worker.settings)
        try:
            existing = self._admin.list_topics(timeout=5).topics
        except KafkaException as exc:
            return Check("broker", False, f"Kafka does not answer: {exc.args[0]}")
        missing = [t for t in self.worker.types if t not in existing]
        if missing:
            return Check("broker", False, f"input topics missing: {', '.join(missing)}")
        return Check("broker", True, f"reachable, {len(existing)} topics")


def _folder_bytes(folder: Path) -> int:
    """The size of the files under `folder` (0 if it does not exist)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total
