"""What the engine reports while it runs: one observer protocol, two implementations.

`Observer` is the narrow interface the engine calls; `NoopObserver` ignores everything and
`PrometheusObserver` exports Prometheus metrics. Labels are bounded (event type, pack,
rule, reason): never a customer id or any other unbounded value.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Observer(Protocol):
    def event_in(self, event_type: str, outcome: str) -> None:
        """One input event: outcome is processed, duplicate or dead_letter."""

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

    def event_in(self, event_type: str, outcome: str) -> None:
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


class PrometheusObserver:
    """Prometheus metrics in `registry` (a fresh one per instance unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._events = Counter(
            "crm_events", "Input events by type and outcome.", ["type", "outcome"], registry=r
        )
        self._dead = Counter(
            "crm_dead_letters", "Events sent to the dead-letter output.", ["reason"], registry=r
        )
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
        self._children: dict[tuple[str, ...], Counter] = {}

    def _child(self, metric: Counter, *labels: str) -> Counter:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def event_in(self, event_type: str, outcome: str) -> None:
        self._child(self._events, event_type, outcome).inc()

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
