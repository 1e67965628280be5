"""monitoring/metrics.py: the lock-free histogram exposes what prometheus_client's own
Histogram would, the standard collectors are there, and rate-limited logging."""

from __future__ import annotations

import logging
import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from monitoring.logs import RateLimited
from monitoring.metrics import (
    EVENT_BUCKETS,
    FastHistogram,
    PrometheusObserver,
    WorkerGauges,
    exported_sample_names,
)


def test_fast_histogram_matches_prometheus_clients_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("crm_x_seconds", "X.", EVENT_BUCKETS, label="type", registry=ours)
    reference = Histogram("crm_x_seconds", "X.", ["type"], buckets=EVENT_BUCKETS, registry=theirs)
    rng = random.Random(7)
    values = [rng.expovariate(20_000) for _ in range(5000)] + [0.00001, 0.0025, 7.0]
    for i, v in enumerate(values):
        kind = "transaction" if i % 3 else "profile"
        fast.observe(v, kind)
        reference.labels(kind).observe(v)

    def samples(
        registry: CollectorRegistry,
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    a, b = samples(ours), samples(theirs)
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert value == pytest.approx(b[key]), key


def test_observer_registry_has_process_metrics_and_build_info() -> None:
    text = generate_latest(PrometheusObserver().registry).decode()
    assert "process_resident_memory_bytes" in text
    assert 'crm_build_info{version="' in text
    assert "_created" not in text  # turned off: no query uses them


def test_worker_gauges_drop_partitions_no_longer_assigned() -> None:
    registry = CollectorRegistry()
    gauges = WorkerGauges(registry)
    gauges.update({("t", 0): 5, ("t", 1): 0}, assigned=2, progress=1.7e9)
    gauges.update({("t", 1): 3}, assigned=1, progress=1.7e9)
    text = generate_latest(registry).decode()
    assert 'crm_consumer_lag{partition="1",topic="t"} 3.0' in text
    assert 'partition="0"' not in text
    assert "crm_assigned_partitions 1.0" in text


def test_exported_sample_names_cover_worker_and_deliver() -> None:
    names = exported_sample_names()
    for name in (
        "crm_events_total",
        "crm_event_processing_seconds_bucket",
        "crm_event_to_action_seconds_count",
        "crm_consumer_lag",
        "crm_ready",
        "crm_delivery_actions_total",
        "process_cpu_seconds_total",
    ):
        assert name in names


def test_rate_limited_logs_a_burst_then_counts_what_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limited = RateLimited(logging.getLogger("t.limited"), per_second=5, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t.limited"):
        for i in range(100):
            limited.log(logging.WARNING, "bad %d", i)
        assert len(caplog.records) == 5
        now[0] += 1.0
        limited.log(logging.WARNING, "bad again")
    last = caplog.records[-1]
    assert last.getMessage() == "bad again" and last.__dict__["suppressed"] == 95
