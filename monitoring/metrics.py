"""What the engine and the worker report while they run.

`Observer` is the narrow interface the engine calls; `NoopObserver` ignores everything and
`PrometheusObserver` exports Prometheus metrics. `WorkerGauges` holds what only the Kafka
worker knows (consumer lag, assigned partitions, progress, state size, event-to-action
latency). Labels are bounded (topic, event type, pack, rule, reason, partition): never a
customer id or any other unbounded value. `exported_sample_names()` lists every sample
name the worker, the demo and the deliverer can expose (the dashboard and the alert rules
are checked against it).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
EVENT_BUCKETS = (
    0.000005,
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.01,
    0.1,
    1.0,
)
"""Processing time of one event: tens of microseconds typically."""
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
)
"""Event time to an action confirmed by Kafka or a connector: milliseconds to (during an
outage) an hour."""
DEAD_LETTER_REASONS = ("malformed_json", "invalid_event", "processing_error", "output_too_large")

__all__ = [
    "FastHistogram",
    "NoopObserver",
    "Observer",
    "PrometheusObserver",
    "WorkerGauges",
    "exported_sample_names",
    "standard_collectors",
]


class Observer(Protocol):
    def event_in(self, topic: str, event_type: str, outcome: str, seconds: float) -> None:
        """One input event from `topic` (a topic name, or `file`/`simulate` off Kafka):
        outcome is processed, duplicate or dead_letter; `seconds` it took."""

    def dead_letter(self, reason: str) -> None:
        """One dead letter: malformed_json, invalid_event, processing_error or (the worker)
        output_too_large."""

    def decision(self, pack: str, rule: str, outcome: str, reason: str | None) -> None: ...

    def rule_error(self, pack: str, rule: str) -> None:
        """A rule read a missing value (or divided by zero) and so did not match."""

    def action(self, kind: str, pack: str) -> None: ...

    def batch(self, events: int, seconds: float) -> None: ...

    def rules_loaded(self, packs: dict[str, int]) -> None:
        """The packs now running, by name, with their versions."""

    def late_events(self, count: int) -> None:
        """Events applied after events of their partition with later event times."""

    def refetched(self, count: int) -> None:
        """Input records the Kafka client skipped, read again by the worker."""


class NoopObserver:
    """Reports nothing."""

    def event_in(self, topic: str, event_type: str, outcome: str, seconds: float) -> None:
        pass

    def dead_letter(self, reason: str) -> None:
        pass

    def decision(self, pack: str, rule: str, outcome: str, reason: str | None) -> None:
        pass

    def rule_error(self, pack: str, rule: str) -> None:
        pass

    def action(self, kind: str, pack: str) -> None:
        pass

    def batch(self, events: int, seconds: float) -> None:
        pass

    def rules_loaded(self, packs: dict[str, int]) -> None:
        pass

    def late_events(self, count: int) -> None:
        pass

    def refetched(self, count: int) -> None:
        pass


class FastHistogram(Collector):
    """A histogram for the hot path: `observe` is a bisect and two additions, no lock.

    prometheus_client's `Histogram.observe` takes a lock per call (about 1 µs), which is
    a noticeable share of an event that takes 20 µs. Here one thread observes and the
    scrape reads: a scrape may see the counts one observation ahead of the sum, never
    counts that go down. Observations must not be negative or NaN.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        label: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(sorted(buckets))
        self.label = label
        self._series: dict[str, list[float]] = {}  # label value -> bucket counts + [sum]
        self._create = threading.Lock()
        if registry is not None:
            registry.register(self)

    def series(self, value: str = "") -> list[float]:
        """The counters of one label value (created on first use); pass them to `add`."""
        found = self._series.get(value)
        if found is None:
            with self._create:
                found = self._series.setdefault(value, [0.0] * (len(self.bounds) + 2))
        return found

    def observe(self, amount: float, value: str = "") -> None:
        self.add(self.series(value), amount)

    def add(self, series: list[float], amount: float) -> None:
        series[bisect_left(self.bounds, amount)] += 1
        series[-1] += amount

    def collect(self) -> Iterator[HistogramMetricFamily]:
        labels = [self.label] if self.label else None
        family = HistogramMetricFamily(self.name, self.documentation, labels=labels)
        for value, series in list(self._series.items()):
            counts = series[:]
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=False):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            family.add_metric([value] if self.label else [], buckets, counts[-1])
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        labels = [self.label] if self.label else None
        yield HistogramMetricFamily(self.name, self.documentation, labels=labels)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def standard_collectors(registry: CollectorRegistry) -> None:
    """The process (memory, CPU, open files), Python and garbage-collector metrics, and
    `crm_build_info{version}`, in `registry`. Counters' `_created` samples are turned off
    for the whole process: they double the size of a scrape and no query uses them."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    info = Gauge(
        "crm_build_info", "The running crm-triggers version.", ["version"], registry=registry
    )
    info.labels(_version()).set(1)


def _version() -> str:
    try:
        return metadata.version("crm-triggers")
    except metadata.PackageNotFoundError:
        return "unknown"


class PrometheusObserver:
    """Prometheus metrics in `registry` (a fresh one per instance unless given), with the
    standard process metrics unless `standard` is False."""

    def __init__(self, registry: CollectorRegistry | None = None, *, standard: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if standard:
            standard_collectors(r)
        self._events = Counter(
            "crm_events",
            "Input events by topic, type and outcome (processed, duplicate, dead_letter).",
            ["topic", "type", "outcome"],
            registry=r,
        )
        self._event_seconds = FastHistogram(
            "crm_event_processing_seconds",
            "Time to process one event (decode, state, rules, policy), by event type.",
            EVENT_BUCKETS,
            label="type",
            registry=r,
        )
        self._dead = Counter(
            "crm_dead_letters", "Events sent to the dead-letter output.", ["reason"], registry=r
        )
        for reason in DEAD_LETTER_REASONS:  # at 0 from the start: rate() sees the first one
            self._dead.labels(reason)
        self._decisions = Counter(
            "crm_rule_decisions",
            "Matched rules by pack, rule, outcome and suppression reason.",
            ["pack", "rule", "outcome", "reason"],
            registry=r,
        )
        self._errors = Counter(
            "crm_rule_eval_errors",
            "Rule evaluations that read a missing value or divided by zero (no match).",
            ["pack", "rule"],
            registry=r,
        )
        self._actions = Counter(
            "crm_actions", "Actions emitted by kind and pack.", ["kind", "pack"], registry=r
        )
        self._batch = Histogram(
            "crm_batch_duration_seconds",
            "Time to process one batch of events.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._packs = Gauge(
            "crm_rules_loaded",
            "Rule packs loaded, by pack and version.",
            ["pack", "version"],
            registry=r,
        )
        self._late = Counter(
            "crm_late_events",
            "Events applied after events of their partition with later event times.",
            registry=r,
        )
        self._refetched = Counter(
            "crm_input_refetched_records",
            "Input records the Faust consumer skipped without a rebalance, read again directly.",
            registry=r,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Counter, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def event_in(self, topic: str, event_type: str, outcome: str, seconds: float) -> None:
        key = ("e", topic, event_type, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._events.labels(topic, event_type, outcome)
        child.inc()
        series = self._children.get(("t", event_type))
        if series is None:
            series = self._children["t", event_type] = self._event_seconds.series(event_type)
        self._event_seconds.add(series, seconds)

    def dead_letter(self, reason: str) -> None:
        self._child(self._dead, reason).inc()

    def decision(self, pack: str, rule: str, outcome: str, reason: str | None) -> None:
        self._child(self._decisions, pack, rule, outcome, reason or "").inc()

    def rule_error(self, pack: str, rule: str) -> None:
        self._child(self._errors, pack, rule).inc()

    def action(self, kind: str, pack: str) -> None:
        self._child(self._actions, kind, pack).inc()

    def batch(self, events: int, seconds: float) -> None:
        self._batch.observe(seconds)

    def rules_loaded(self, packs: dict[str, int]) -> None:
        self._packs.clear()
        for name, version in packs.items():
            self._packs.labels(name, str(version)).set(1)

    def late_events(self, count: int) -> None:
        self._late.inc(count)

    def refetched(self, count: int) -> None:
        self._refetched.inc(count)


class WorkerGauges:
    """What only the Kafka worker knows, in the observer's registry. The worker sets it from
    its event loop every few seconds (`update`) and per batch (`action_latency`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._lag = Gauge(
            "crm_consumer_lag",
            "Input records in Kafka not yet processed, per assigned input partition.",
            ["topic", "partition"],
            registry=r,
        )
        self._assigned = Gauge(
            "crm_assigned_partitions", "Input partitions assigned to this worker.", registry=r
        )
        self._progress = Gauge(
            "crm_last_progress_timestamp_seconds",
            "When this worker last processed a record or had no lag (Unix time).",
            registry=r,
        )
        self._keys = Gauge(
            "crm_state_keys",
            "Customer states in the local RocksDB store (RocksDB's estimate).",
            registry=r,
        )
        self._disk = Gauge(
            "crm_state_disk_bytes", "Size of the local state folder on disk.", registry=r
        )
        self.latency = FastHistogram(
            "crm_event_to_action_seconds",
            "From the event's time to its action acknowledged by Kafka, by kind (includes the "
            "producer's clock skew and any wait in the input topic; with exactly_once the "
            "transaction commits within about a second after).",
            LATENCY_BUCKETS,
            label="kind",
            registry=r,
        )
        self._shown: set[tuple[str, str]] = set()

    def update(
        self,
        lag: Mapping[tuple[str, int], int],
        assigned: int,
        progress: float,
    ) -> None:
        """`lag` per (topic, partition) assigned now (partitions no longer assigned are
        removed); `progress`: Unix time of the last progress."""
        shown = {(topic, str(partition)) for topic, partition in lag}
        for gone in self._shown - shown:
            self._lag.remove(*gone)
        for (topic, partition), value in lag.items():
            self._lag.labels(topic, str(partition)).set(value)
        self._shown = shown
        self._assigned.set(assigned)
        self._progress.set(progress)

    def state(self, keys: int | None, disk_bytes: int | None) -> None:
        if keys is not None:
            self._keys.set(keys)
        if disk_bytes is not None:
            self._disk.set(disk_bytes)

    def action_latency(self, kinds: Sequence[str], seconds: Sequence[float]) -> None:
        """One observation per action. An event time ahead of this clock (a producer's
        clock skew) counts as 0 s: a negative observation would make the sum go down."""
        for kind, value in zip(kinds, seconds, strict=True):
            if value == value:  # not NaN
                self.latency.observe(max(0.0, value), kind)


def exported_sample_names() -> set[str]:
    """Every sample name the worker, the demo and `deliver` can expose on /metrics."""
    from monitoring.delivery import DeliveryCollector
    from monitoring.health import Health

    registry = CollectorRegistry()
    PrometheusObserver(registry)
    WorkerGauges(registry)
    Health().register(registry)
    registry.register(DeliveryCollector([]))
    names: set[str] = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
        "info": ("_info",),
        "gauge": ("",),
        "unknown": ("",),
    }
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
