"""Prometheus metrics of `crm-triggers deliver`, read from the connectors at scrape time.

Labels are bounded: the connector name (from the config), the action's kind (offer, alert,
unknown), an outcome, and a topic and partition of the action topics; never a customer or
action id. `DeliveryCollector([])` (no connectors) still yields every family it can
export, without samples (`monitoring.metrics.exported_sample_names` relies on it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from connectors.dispatch import LATENCY_METRIC, OUTCOMES, ConnectorDispatch


class DeliveryCollector(Collector):
    def __init__(self, dispatches: Sequence[ConnectorDispatch]) -> None:
        self._dispatches = list(dispatches)

    def collect(self) -> Iterator[Any]:
        actions = CounterMetricFamily(
            "crm_delivery_actions",
            "Actions by connector, kind (offer, alert; unknown: absent or unreadable) and "
            "outcome: delivered, dead_lettered (after retries, or refused), held (for quiet "
            "hours), released (held, then sent).",
            labels=["connector", "kind", "outcome"],
        )
        retries = CounterMetricFamily(
            "crm_delivery_retries", "Failed attempts that were retried.", labels=["connector"]
        )
        failures = CounterMetricFamily(
            "crm_delivery_batch_failures",
            "Batches a connector could not take (sent again after a backoff).",
            labels=["connector"],
        )
        unrouted = CounterMetricFamily(
            "crm_delivery_unrouted", "Actions that matched no route (they stay in Kafka)."
        )
        circuit = GaugeMetricFamily(
            "crm_delivery_circuit_open",
            "1 while the connector's endpoint circuit is open.",
            labels=["connector"],
        )
        buffered = GaugeMetricFamily(
            "crm_delivery_buffered_actions",
            "Actions handed to the connector and not yet confirmed.",
            labels=["connector"],
        )
        held = GaugeMetricFamily(
            "crm_delivery_held_actions",
            "Actions waiting for the end of quiet hours.",
            labels=["connector"],
        )
        lag = GaugeMetricFamily(
            "crm_delivery_lag",
            "Records of an action topic partition assigned to this process that the "
            "connector's group has not delivered (or committed) yet: the high watermark "
            "minus the next record to deliver. Refreshed every few seconds.",
            labels=["connector", "topic", "partition"],
        )
        latency = HistogramMetricFamily(
            LATENCY_METRIC,
            "From the action's event time (its ts) to the connector confirming delivery, of "
            "delivered actions. Includes the worker's latency and any wait in Kafka or for "
            "the endpoint, and for actions held for quiet hours the whole hold (hours: "
            "those land in the +Inf bucket).",
            labels=["connector"],
        )
        for d in self._dispatches:
            s = d.stats
            for (outcome, kind), value in sorted(dict(s.by_kind).items()):
                if outcome in OUTCOMES:
                    actions.add_metric([d.name, kind, outcome], value)
            retries.add_metric([d.name], int(getattr(d.sink, "retries", 0)))
            failures.add_metric([d.name], s.failures)
            circuit.add_metric([d.name], 1.0 if getattr(d.sink, "circuit_open", False) else 0.0)
            buffered.add_metric([d.name], s.buffered)
            held.add_metric([d.name], len(d.hold) if d.hold is not None else 0)
            for (topic, partition), value in sorted(s.lag.items()):
                lag.add_metric([d.name, topic, str(partition)], value)
            for family in d.latency.collect():
                latency.samples.extend(family.samples)
            if d.primary:
                unrouted.add_metric([], s.unrouted)
        yield from (actions, retries, failures, unrouted, circuit, buffered, held, lag, latency)
