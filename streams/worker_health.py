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
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mode
from confluent_kafka import KafkaException
from faust.types import TP

from monitoring.health import Check, Progress
from monitoring.logs import RateLimited
from streams.topics import admin_client, check_topics

if TYPE_CHECKING:
    from streams.agent import Worker

log = logging.getLogger("crm_triggers.worker")

HEALTH_EVERY = 5.0
"""Seconds between health reports (readiness checks, lag, state size)."""

DISK_EVERY = 60.0
"""Seconds between measurements of the state folder's size on disk."""


class WorkerReport:
    """Reads a worker's state (its Faust app, table, positions) and reports its health.

    Lag per assigned input partition is the partition's end (asked of the broker, the last
    stable offset with exactly_once; aiokafka's own figure is stale while a partition is
    paused) minus the next offset to process (where the group starts, asked of Kafka, until
    the worker has processed a record of it). When the worker has processed everything it
    received of a partition and its consumer has fetched up to the end, the lag is 0: what
    is left are transaction markers, which are never records.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.progress = Progress(worker.settings.ready_stall_s)
        self._admin: Any = None
        self._group: Any = None  # asked for committed offsets only, never joined
        self._start: dict[tuple[str, int], int] = {}  # where the group starts, per partition
        self._disk_at = -math.inf
        self._errors = RateLimited(log, per_second=1 / 60)

    async def report(self) -> None:
        """Every HEALTH_EVERY seconds: readiness checks (for /readyz), consumer lag, progress
        and state size (for /metrics). Also the liveness heartbeat: it runs on the event
        loop, so a stuck loop stops it. A failing report is a failing check, not silence."""
        if self.worker.failed is not None:
            return  # /healthz already says why
        try:
            checks = await self._checks()
        except Exception as exc:
            self._errors.log(logging.ERROR, "health report failed: %r", exc, exc_info=exc)
            checks = [Check("report", False, f"health report failed: {exc!r}")]
        self.worker.health.report(checks)

    async def _checks(self) -> list[Check]:
        worker = self.worker
        app: Any = worker.app
        if app._consumer is None:  # the Faust worker has not created its consumer yet
            broker, _ = await asyncio.to_thread(self._ask_kafka, [])
            return [Check("started", False, "connecting to Kafka"), broker]
        consumer: Any = app.consumer
        assigned = sorted(tp for tp in consumer.assignment() if tp.topic in worker.types)
        unknown = [tp for tp in assigned if (tp.topic, tp.partition) not in worker.position]
        broker, ends = await asyncio.to_thread(self._ask_kafka, assigned, unknown)
        lag: dict[tuple[str, int], int] = {}
        for tp in assigned:
            key = (tp.topic, tp.partition)
            end = ends.get(key)
            if end is None:
                with contextlib.suppress(Exception):
                    end = consumer.highwater(tp)
            position = worker.position.get(key, self._start.get(key))
            if end is None or position is None:
                continue
            lag[key] = max(0, end - position)
            received = worker.last_offset.get(key)
            if lag[key] and (received is None or received < position):  # all received done
                fetched = _fetch_position(consumer, tp)
                if fetched is not None and fetched >= end:
                    lag[key] = 0  # only transaction markers left
        for key in set(self._start) - {(tp.topic, tp.partition) for tp in assigned}:
            del self._start[key]
        # unknown while any partition's lag is
        total = sum(lag.values()) if assigned and len(lag) == len(assigned) else None
        self.progress.update(total, worker.processed)
        worker.gauges.update(lag, len(assigned), time.time() - self.progress.idle_for())
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
            broker,
            self.progress.check(total),
        ]

    def _ask_kafka(
        self, assigned: Sequence[TP], unknown: Sequence[TP] = ()
    ) -> tuple[Check, dict[tuple[str, int], int]]:
        """Blocking (run off the loop): whether Kafka answers and holds the input topics; the
        end offsets of `assigned`; where the group starts on `unknown` (into `_start`)."""
        from confluent_kafka import IsolationLevel, TopicPartition
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

        settings = self.worker.settings
        if self._admin is None:
            self._admin = admin_client(settings)
        broker = check_topics(self._admin, list(self.worker.types), "input topics")
        if not broker.ok:
            return broker, {}
        ends: dict[tuple[str, int], int] = {}
        if not assigned:
            return broker, ends
        exactly_once = settings.processing_guarantee == "exactly_once"
        isolation = (
            IsolationLevel.READ_COMMITTED if exactly_once else IsolationLevel.READ_UNCOMMITTED
        )
        with contextlib.suppress(KafkaException):
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
            asked = {TopicPartition(tp.topic, tp.partition): latest for tp in assigned}
            for tp, future in self._admin.list_offsets(
                asked, isolation_level=isolation, request_timeout=5
            ).items():
                with contextlib.suppress(KafkaException):
                    ends[tp.topic, tp.partition] = int(future.result().offset)
        new = [tp for tp in unknown if (tp.topic, tp.partition) not in self._start]
        if new:
            with contextlib.suppress(KafkaException):
                self._start.update(self._group_starts(new))
        return broker, ends

    def _group_starts(self, tps: Sequence[TP]) -> dict[tuple[str, int], int]:
        """Where the worker's group starts on each partition: its committed offset, or the
        partition's first offset if it has none."""
        from confluent_kafka import Consumer, TopicPartition

        settings = self.worker.settings
        if self._group is None:
            self._group = Consumer(
                {
                    "bootstrap.servers": settings.brokers,
                    "group.id": settings.app_id,
                    "enable.auto.commit": False,
                    **settings.kafka.librdkafka(),
                }
            )
        asked = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        starts: dict[tuple[str, int], int] = {}
        for tp in self._group.committed(asked, timeout=5):
            offset = tp.offset
            if offset < 0:
                offset, _ = self._group.get_watermark_offsets(tp, timeout=5, cached=False)
            starts[tp.topic, tp.partition] = int(offset)
        return starts


class ReportService(mode.Service):
    """Runs `report` every HEALTH_EVERY seconds from the moment the Faust worker starts
    (Faust's own timers start only after the first state recovery, which can take minutes:
    /healthz must say the worker is alive meanwhile, and /readyz that it restores)."""

    def __init__(self, report: WorkerReport) -> None:
        super().__init__()
        self._report = report

    @mode.Service.task
    async def _reporting(self) -> None:
        while not self.should_stop:
            await self._report.report()
            await self.sleep(HEALTH_EVERY)


def _fetch_position(consumer: Any, tp: TP) -> int | None:
    """The next offset the consumer fetches from `tp` (past transaction markers), or None."""
    try:
        kafka = consumer._thread._ensure_consumer()
        state = kafka._subscription.subscription.assignment.state_value(tp)
        return int(state.position) if state.has_valid_position else None
    except Exception:  # aiokafka internals: unknown is the safe answer
        return None


def _folder_bytes(folder: Path) -> int:
    """The size of the files under `folder` (0 if it does not exist)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total
