"""Prometheus metrics of `crm-triggers deliver`, read from the connectors at scrape time.

Labels are the connector name (from the config: bounded) and an outcome; never a customer
or action id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from connectors.dispatch import ConnectorDispatch


class DeliveryCollector(Collector):
    def __init__(self, dispatches: Sequence[ConnectorDispatch]) -> None:
        self._dispatches = list(dispatches)

    def collect(self) -> Iterator[Any]:
        actions = CounterMetricFamily(
            "crm_delivery_actions",
            "Actions by connector and outcome: delivered, dead_lettered (after retries, or "
            "refused), held (for quiet hours), released (held, then sent).",
            labels=["connector", "outcome"],
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
        for d in self._dispatches:
            s = d.stats
            for outcome, value in (
                ("delivered", s.delivered),
                ("dead_lettered", s.dead_lettered),
                ("held", s.held),
                ("released", s.released),
            ):
                actions.add_metric([d.name, outcome], value)
            retries.add_metric([d.name], int(getattr(d.sink, "retries", 0)))
            failures.add_metric([d.name], s.failures)
            circuit.add_metric([d.name], 1.0 if getattr(d.sink, "circuit_open", False) else 0.0)
            buffered.add_metric([d.name], s.buffered)
            held.add_metric([d.name], len(d.hold) if d.hold is not None else 0)
            if d.primary:
                unrouted.add_metric([], s.unrouted)
        yield from (actions, retries, failures, unrouted, circuit, buffered, held)
