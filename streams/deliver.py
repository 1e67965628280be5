"""`crm-triggers deliver`: actions from the output topics to the configured connectors.

Each connector has its own consumer group (`<app_id>-deliver-<connector>`) on the offers
and alerts topics (`read_committed`, so an exactly-once worker's aborted actions are never
delivered), its own thread, its own dead-letter producer and its own hold store. So a slow
or dead endpoint holds back only its own group, and Kafka's log is its buffer: while an
endpoint is down, nothing piles up in memory; the connector's lag grows and is worked off
when it returns, while the other connectors keep going.

Per connector, one batch (at most `batch_size` actions) is in flight at a time. The loop
waits for it up to `quick_s` (2 s) while the consumer keeps prefetching; a batch that takes
longer (an endpoint down) pauses the consumer, which is then polled, so it keeps its group
membership. Offsets are
committed only after the batch is delivered, dead-lettered or held: delivery is at least
once. After a crash or a rebalance a batch may be delivered again with the same
`action_id` (the webhook's `Idempotency-Key`). A sink that fails (`SinkError`: a Kafka
topic gone, a full disk) gets the batch again after a backoff; nothing is skipped.

For an SRE, on `--metrics-port` (6067): /metrics (`monitoring/delivery.py` and the process
metrics), /healthz (alive while the main thread keeps reporting and no connector died) and
/readyz. Each loop refreshes its connector's lag (high watermark minus the next record to
deliver, per assigned partition) every `LAG_EVERY_S` from its own thread (a confluent
consumer is not to be shared); every `REPORT_EVERY_S` the main thread reads what the
loops published and reports readiness: every loop running, every connector with
partitions assigned, the broker answering with the action topics, and every connector
making progress (lag and no batch settled for `Settings.ready_stall_s` is a stall; the
detail says what the connector is waiting for, e.g. an endpoint whose circuit is open).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from connectors.base import SharedSink, Sink, SinkError
from connectors.config import DeliveryConfig, KafkaConnector
from connectors.dispatch import Batch, ConnectorDispatch, LetterTap, open_with_backoff
from connectors.factory import build_sink
from connectors.hold import HoldStore
from monitoring.delivery import DeliveryCollector
from monitoring.health import ALIVE_WITHIN, Check, Health, Progress, serve
from monitoring.metrics import standard_collectors
from streams.settings import Settings
from streams.topics import admin_client, check_topics

log = logging.getLogger("crm_triggers.deliver")

SHUTDOWN_GRACE_S = 10.0
LAG_EVERY_S = 2.0
"""Seconds between refreshes of a connector's lag (by its loop thread)."""
REPORT_EVERY_S = 2.0
"""Seconds between health reports (the main thread)."""
BROKER_EVERY_S = 5.0
"""Seconds between checks that the broker answers (an AdminClient metadata request)."""


def build_dispatches(
    settings: Settings, config: DeliveryConfig
) -> tuple[list[ConnectorDispatch], Sink]:
    """One dispatch per configured connector, each with its own sink and hold store, and the
    dead-letter sink they share (a ValueError if the config cannot work with these settings)."""
    loops = {settings.topics.offers, settings.topics.alerts}
    for name, c in config.connectors.items():
        if not isinstance(c, KafkaConnector) or c.brokers not in (None, settings.brokers):
            continue
        if c.topic in loops:
            raise ValueError(f"connector {name}: topic {c.topic} is deliver's own input")
    dead_letter_config = config.dead_letter or KafkaConnector.model_validate(
        {"type": "kafka", "topic": settings.topics.delivery_dlq}
    )
    common: dict[str, Any] = {"brokers": settings.brokers, "security": settings.kafka}
    dead_letter = build_sink("dead-letter", dead_letter_config, **common)
    shared = SharedSink(dead_letter)  # one file or producer, whatever the connectors
    dispatches = []
    for n, (name, connector) in enumerate(config.connectors.items()):
        letters = LetterTap(shared)  # which actions the sink dead-letters, for the counts
        sink = build_sink(name, connector, dead_letter=letters, **common)
        hold = HoldStore(Path(config.hold_dir) / name)
        dispatches.append(ConnectorDispatch(name, config, sink, letters, hold, primary=n == 0))
    return dispatches, dead_letter


@dataclass
class _Job:
    batch: Batch
    commit: dict[tuple[str, int], int]  # next offset to commit, per partition
    first: dict[tuple[str, int], int]  # where the batch started, to read it again
    records: int = 0  # input records it settles (committed once it is done)
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class ConnectorLoop:
    """Consumes the action topics for one connector and feeds its dispatch."""

    def __init__(
        self,
        dispatch: ConnectorDispatch,
        settings: Settings,
        stop: threading.Event,
        *,
        batch_size: int,
        start_from: str = "latest",
        retry_s: float = 1.0,
        quick_s: float = 2.0,
    ) -> None:
        self.dispatch = dispatch
        self.settings = settings
        self.stop = stop
        self.batch_size = batch_size
        self.retry_s = retry_s
        self.quick_s = quick_s  # a batch taking longer pauses the consumer
        self.job: _Job | None = None
        self.failed: BaseException | None = None
        self.start_from = start_from
        # published by the loop thread for the main thread's health report
        self.consuming = False  # the sink is open and the consumer subscribed
        self.assigned: tuple[tuple[str, int], ...] = ()  # as of the last lag refresh
        self.settled = 0  # input records delivered, dead-lettered, held or not ours
        self.beat = time.monotonic()  # the loop turned (a stuck loop stops it)
        self._lag_at = -LAG_EVERY_S
        self._committed: dict[tuple[str, int], int] = {}  # the group's, read once per partition
        self.thread = threading.Thread(target=self._run, name=f"deliver-{dispatch.name}")
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.brokers,
                "group.id": f"{settings.app_id}-deliver-{dispatch.name}",
                "enable.auto.commit": False,
                # a connector's first start (no committed offsets): see DeliveryConfig
                "auto.offset.reset": start_from,
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
                # a crashed deliverer's partitions move after 10 s (Kafka's default: 45 s)
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 3_000,
                # librdkafka prefetches up to 64 MiB per consumer by default: 8 MiB bounds a
                # connector's memory while it catches up, far more than one batch needs
                "queued.max.messages.kbytes": 8192,
                **settings.kafka.librdkafka(),
            }
        )

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by run_deliver, which stops the process
            log.exception("connector %s stopped on an error", self.dispatch.name)
            self.failed = exc
            self.stop.set()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        name = self.dispatch.name
        if not open_with_backoff(self.dispatch.sink, name, self.stop.is_set, sleep=self.stop.wait):
            return
        topics = [self.settings.topics.offers, self.settings.topics.alerts]
        self.consumer.subscribe(topics, on_revoke=self._revoked, on_lost=self._revoked)
        self.consuming = True
        log.info("connector %s: consuming %s", name, ", ".join(topics))
        while not self.stop.is_set():
            self.beat = time.monotonic()
            if self.beat - self._lag_at >= LAG_EVERY_S:
                self._lag_at = self.beat
                self._refresh_lag()
            if self.job is None:
                self._next_batch()
            else:
                self._wait_for_job(self.job)

    def _refresh_lag(self) -> None:
        """Publishes the lag of every partition assigned now (`dispatch.stats.lag`): high
        watermark minus the next record to deliver. That is where the batch in flight
        started, for its partitions; else the consumer's position (what it read before is
        committed); before it has read anything, the group's committed offset (or, with
        none, where `start_from` starts). While a batch is in flight the consumer is
        paused and fetches nothing, so the watermarks are asked of the broker then."""
        try:
            assignment = self.consumer.assignment()
            tps = {(tp.topic, tp.partition): tp for tp in assignment}
            self.assigned = tuple(sorted(tps))
            for gone in set(self._committed) - set(tps):
                del self._committed[gone]
            positions = {
                (tp.topic, tp.partition): tp.offset for tp in self.consumer.position(assignment)
            }
            unknown = [
                tp
                for key, tp in tps.items()
                if positions.get(key, -1) < 0 and key not in self._committed
            ]
            if unknown:
                for tp in self.consumer.committed(unknown, timeout=5):
                    self._committed[tp.topic, tp.partition] = tp.offset
        except (KafkaException, RuntimeError) as exc:
            log.debug("connector %s: lag not refreshed: %s", self.dispatch.name, exc)
            return
        job = self.job
        lag: dict[tuple[str, int], int] = {}
        for key, tp in tps.items():
            try:
                watermarks = self.consumer.get_watermark_offsets(
                    tp, timeout=1.0, cached=job is None
                )
            except KafkaException:
                watermarks = None
            if watermarks is None or watermarks[1] < 0:
                if key in self.dispatch.stats.lag:  # not known now: the last value stands
                    lag[key] = self.dispatch.stats.lag[key]
                continue
            low, high = watermarks
            if job is not None and key in job.first:
                done = job.first[key]
            elif positions.get(key, -1) >= 0:
                done = positions[key]
            elif self._committed.get(key, OFFSET_INVALID) >= 0:
                done = self._committed[key]
            else:  # no offset committed: the group starts at one end
                done = low if self.start_from == "earliest" else high
            lag[key] = max(0, high - max(done, low))
        self.dispatch.stats.lag = lag  # replaced whole: the collector reads it at any time

    def _next_batch(self) -> None:
        messages = self.consumer.consume(self.batch_size, timeout=0.2)
        records: list[bytes] = []
        positions: list[tuple[int, int]] = []
        commit: dict[tuple[str, int], int] = {}
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            if m.error() is not None:
                log.warning("connector %s: consumer: %s", self.dispatch.name, m.error())
                continue
            tp = (m.topic() or "", m.partition() or 0)
            first.setdefault(tp, m.offset() or 0)
            commit[tp] = (m.offset() or 0) + 1
            records.append(m.value() or b"")
            positions.append((m.partition() or 0, m.offset() or 0))
        try:
            batch = self.dispatch.take(records, positions)  # held ones are on disk now
        except Exception as exc:  # e.g. the hold store's disk is full: read them again
            log.error(
                "connector %s: cannot take a batch, reading it again in %.0f s: %s",
                self.dispatch.name,
                self.retry_s,
                exc,
            )
            self.dispatch.stats.failures += 1
            self._rewind(first)
            self.stop.wait(self.retry_s)
            return
        self.dispatch.add_due(batch, self.batch_size - len(batch))
        if not len(batch):
            self._commit(commit)
            self.settled += len(records)
            return
        job = self.job = _Job(batch, commit, first, len(records))
        job.thread = threading.Thread(
            target=self._send, args=(job,), name=f"send-{self.dispatch.name}", daemon=True
        )
        job.thread.start()
        if job.done.wait(self.quick_s):  # the usual case: the consumer keeps prefetching
            self.job = None
            self._finish(job)
            return
        # A slow batch (an endpoint down, retries): pause, and poll to stay in the group.
        # Not for every batch: librdkafka drops what it prefetched on pause and fetches
        # again about a second after resume, which capped delivery at one batch a second.
        self.consumer.pause(self.consumer.assignment())

    def _send(self, job: _Job) -> None:
        try:
            self.dispatch.send(job.batch)
        except BaseException as exc:
            job.error = exc
        finally:
            job.done.set()

    def _wait_for_job(self, job: _Job) -> None:
        message = self.consumer.poll(0.1)  # paused: keeps the group membership alive
        if message is not None:
            self._put_back(message)
        if not job.done.is_set():
            return
        self.job = None
        try:
            self._finish(job)
        finally:
            self.consumer.resume(self.consumer.assignment())

    def _finish(self, job: _Job) -> None:
        """Commits a delivered batch; rewinds to a failed one, to send it again."""
        if job.error is None:
            self._commit(job.commit)
            self.settled += job.records
        elif isinstance(job.error, SinkError):
            log.error(
                "connector %s: delivery failed, sending the batch again in %.0f s: %s",
                self.dispatch.name,
                self.retry_s,
                job.error,
            )
            self._rewind(job.first)
            self.stop.wait(self.retry_s)
        else:
            raise job.error

    def _put_back(self, message: Message) -> None:
        """A record from a partition assigned while a batch was in flight: read it again
        after the batch (the partition is paused until then)."""
        if message.error() is not None:
            return
        topic, partition = message.topic() or "", message.partition() or 0
        self.consumer.seek(TopicPartition(topic, partition, message.offset() or 0))
        self.consumer.pause([TopicPartition(topic, partition)])

    def _rewind(self, first: dict[tuple[str, int], int]) -> None:
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, partition), offset in first.items():
            if (topic, partition) in owned:
                self.consumer.seek(TopicPartition(topic, partition, offset))

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in owned]
        if not tps:
            return
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:  # a rebalance: the next owner delivers them again
            log.warning("connector %s: commit failed: %s", self.dispatch.name, exc.args[0])

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        lag = self.dispatch.stats.lag
        self.dispatch.stats.lag = {tp: n for tp, n in lag.items() if tp not in gone}
        job = self.job
        if job is None:
            return
        for tp in gone:  # their new owner reads them from the committed offset
            job.commit.pop(tp, None)
            job.first.pop(tp, None)

    def _shutdown(self) -> None:
        self.consuming = False
        self.assigned = ()
        self.dispatch.stats.lag = {}
        job = self.job
        if job is not None and job.done.wait(SHUTDOWN_GRACE_S) and job.error is None:
            self._commit(job.commit)
            self.job = job = None
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("connector %s: closing the consumer: %s", self.dispatch.name, exc)
        if job is not None:
            log.warning(
                "connector %s: stopping with %d actions in flight; they are delivered again "
                "after a restart",
                self.dispatch.name,
                len(job.batch),
            )
            return  # the sink is still busy with them: do not wait on it
        self.dispatch.close()


class DeliveryHealth:
    """The readiness of `deliver`, worked out on the main thread from what the connector
    loops publish (it never touches their consumers): per connector, its loop running,
    partitions assigned and progress; and the broker answering (an AdminClient of its own,
    asked every BROKER_EVERY_S)."""

    def __init__(
        self,
        loops: list[ConnectorLoop],
        settings: Settings,
        health: Health,
        *,
        clock: Callable[[], float] = time.monotonic,
        broker: Callable[[], Check] | None = None,
    ) -> None:
        """`broker`: the broker check (default: an AdminClient's metadata request)."""
        self.loops = loops
        self.settings = settings
        self.health = health
        self.clock = clock
        self._check_broker = broker or self._ask_broker
        self.progress = {
            loop.dispatch.name: Progress(settings.ready_stall_s, clock) for loop in loops
        }
        self._admin: AdminClient | None = None
        self._broker = Check("broker", False, "not checked yet")
        self._broker_at = -math.inf
        self._seen: dict[str, tuple[int, int]] = {}  # per connector: sink retries, failures

    def report(self) -> list[Check]:
        now = self.clock()
        if now - self._broker_at >= BROKER_EVERY_S:
            self._broker_at = now
            self._broker = self._check_broker()
        checks = [self._broker]
        for loop in self.loops:
            checks += self._connector(loop, now)
        failed = [loop for loop in self.loops if loop.failed is not None]
        if failed:
            self.health.fail(
                "; ".join(
                    f"connector {loop.dispatch.name} stopped on an error: {loop.failed!r}"
                    for loop in failed
                )
            )
        self.health.report(checks)
        return checks

    def _connector(self, loop: ConnectorLoop, now: float) -> list[Check]:
        name = loop.dispatch.name
        stats = loop.dispatch.stats
        if loop.failed is not None:
            running = Check(f"loop:{name}", False, f"stopped on an error: {loop.failed!r}")
        elif not loop.thread.is_alive():
            running = Check(f"loop:{name}", False, "not running")
        elif not loop.consuming:
            running = Check(f"loop:{name}", False, "waiting for its sink to open (see the logs)")
        elif (stuck := now - loop.beat) > ALIVE_WITHIN:
            running = Check(f"loop:{name}", False, f"its loop has not turned for {stuck:.0f} s")
        else:
            running = Check(f"loop:{name}", True, "consuming")
        n = len(loop.assigned)
        partitions = Check(
            f"partitions:{name}",
            n > 0,
            f"{n} action topic partitions assigned"
            if n
            else "no partitions assigned (starting, a rebalance, or more deliverers than "
            "partitions)",
        )
        lag = dict(stats.lag)
        total = sum(lag.values()) if lag else None
        progress = self.progress[name]
        progress.update(total, loop.settled + stats.released)
        check = progress.check(total)
        why = self._waiting_on(loop, now)  # every report: it counts since the last one
        detail = f"{check.detail}; {why}" if total and why else check.detail
        return [running, partitions, Check(f"progress:{name}", check.ok, detail)]

    def _waiting_on(self, loop: ConnectorLoop, now: float) -> str:
        """What a connector waits for, as far as it is known ("" if nothing)."""
        sink = loop.dispatch.sink
        retries, failures = int(getattr(sink, "retries", 0)), loop.dispatch.stats.failures
        before = self._seen.get(loop.dispatch.name, (retries, failures))
        self._seen[loop.dispatch.name] = (retries, failures)
        why: list[str] = []
        job = loop.job
        if job is not None:
            why.append(
                f"a batch of {len(job.batch)} actions in flight for {now - job.started:.0f} s"
            )
        if getattr(sink, "circuit_open", False):
            why.append("the endpoint's circuit is open (it is down or failing)")
        if retries > before[0]:
            why.append(f"{retries - before[0]} attempts failed and retried since the last report")
        if failures > before[1]:
            why.append(f"{failures - before[1]} batches failed (sent again; see the logs)")
        return "; ".join(why)

    def _ask_broker(self) -> Check:
        """Whether Kafka answers and holds the action topics (blocks up to 5 s)."""
        if self._admin is None:
            self._admin = admin_client(self.settings)
        topics = self.settings.topics
        return check_topics(self._admin, [topics.offers, topics.alerts], "action topics")


def run_deliver(
    settings: Settings,
    config: DeliveryConfig,
    *,
    metrics_port: int = 6067,
    stop: threading.Event | None = None,
) -> int:
    """Runs until SIGTERM/SIGINT (or `stop`); 0 on a clean stop, 1 if a connector failed.
    Serves /metrics, /healthz and /readyz on `metrics_port` (0: not at all)."""
    stop = stop or threading.Event()
    dispatches, dead_letter = build_dispatches(settings, config)
    loops = [
        ConnectorLoop(d, settings, stop, batch_size=config.batch_size, start_from=config.start_from)
        for d in dispatches
    ]
    registry = CollectorRegistry()
    standard_collectors(registry)
    registry.register(DeliveryCollector(dispatches))
    health = Health().register(registry)
    server = serve(metrics_port, registry, health) if metrics_port else None
    if server is not None:
        log.info("/metrics, /healthz and /readyz on http://0.0.0.0:%d", server.server_port)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    log.info("delivering to %d connectors: %s", len(loops), ", ".join(config.connectors))
    for loop in loops:
        loop.start()
    reporter = DeliveryHealth(loops, settings, health)
    report_at = -math.inf
    while not stop.is_set():
        if time.monotonic() - report_at >= REPORT_EVERY_S:
            report_at = time.monotonic()
            try:
                reporter.report()
            except Exception:  # a report must never stop the delivery
                log.exception("health report failed")
        stop.wait(0.5)
    health.report([Check("stopping", False, "shutting down")])
    deadline = time.monotonic() + SHUTDOWN_GRACE_S + 15
    for loop in loops:
        loop.thread.join(max(0.1, deadline - time.monotonic()))
    if not any(loop.thread.is_alive() or loop.job is not None for loop in loops):
        try:
            dead_letter.close()
        except SinkError as exc:
            log.error("closing the dead-letter sink: %s", exc)
    if server is not None:
        server.shutdown()
        server.server_close()
    failed = [loop.dispatch.name for loop in loops if loop.failed is not None]
    if failed:
        log.error("stopped: connectors failed: %s", ", ".join(failed))
        return 1
    log.info("stopped")
    return 0
