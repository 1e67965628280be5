"""`deliver`'s metrics and readiness without a broker: every family described with no
connectors (for `exported_sample_names`), bounded labels, promtool's view of a scrape, and
readiness on a fake clock (a stalled connector named, with why)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from connectors.base import ListSink
from connectors.config import DeliveryConfig
from connectors.dispatch import ConnectorDispatch
from monitoring.delivery import DeliveryCollector
from monitoring.health import Check, Health
from monitoring.metrics import exported_sample_names
from streams.deliver import DeliveryHealth
from streams.settings import Settings

CONFIG = DeliveryConfig.model_validate(
    {"connectors": {"hook": {"type": "stdout"}}, "routes": [{"to": ["hook"]}]}
)
NOW = 1_800_000_000.0


def test_with_no_connectors_every_family_is_still_described() -> None:
    families = {f.name: f.type for f in DeliveryCollector([]).collect()}
    assert families == {
        "crm_delivery_actions": "counter",
        "crm_delivery_retries": "counter",
        "crm_delivery_batch_failures": "counter",
        "crm_delivery_unrouted": "counter",
        "crm_delivery_circuit_open": "gauge",
        "crm_delivery_buffered_actions": "gauge",
        "crm_delivery_held_actions": "gauge",
        "crm_delivery_lag": "gauge",
        "crm_delivery_latency_seconds": "histogram",
    }
    names = exported_sample_names()
    assert {"crm_delivery_lag", "crm_delivery_latency_seconds_count"} <= names


def test_a_scrape_has_kinds_lag_and_latency_and_promtool_accepts_it(
    promtool: Path,
) -> None:
    d = ConnectorDispatch("hook", CONFIG, ListSink(), ListSink(), None, clock=lambda: NOW)
    record = {"action_id": "a1", "customer_id": "c-secret", "kind": "offer"}
    records = [json.dumps(record | {"ts": "2027-01-15T08:00:00+00:00"}).encode()]
    d.send(d.take(records))
    d.stats.lag = {("crm.offers", 0): 7, ("crm.alerts", 1): 0}
    registry = CollectorRegistry()
    registry.register(DeliveryCollector([d]))
    text = generate_latest(registry).decode()
    assert (
        'crm_delivery_actions_total{connector="hook",kind="offer",outcome="delivered"} 1.0' in text
    )
    assert 'crm_delivery_actions_total{connector="hook",kind="alert",outcome="held"} 0.0' in text
    assert 'crm_delivery_lag{connector="hook",partition="0",topic="crm.offers"} 7.0' in text
    assert 'crm_delivery_latency_seconds_count{connector="hook"} 1.0' in text
    assert "c-secret" not in text and "a1" not in text
    check = subprocess.run(
        [str(promtool), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


class FakeSink(ListSink):
    circuit_open = False
    retries = 0


def fake_loop(name: str) -> Any:
    """What DeliveryHealth reads of a ConnectorLoop (published by the loop's thread)."""
    dispatch = ConnectorDispatch(name, CONFIG, FakeSink(), ListSink(), None)
    return SimpleNamespace(
        dispatch=dispatch,
        failed=None,
        thread=SimpleNamespace(is_alive=lambda: True),
        consuming=True,
        beat=0.0,
        assigned=(("crm.offers", 0),),
        settled=0,
        job=None,
    )


def test_a_connector_with_lag_and_no_progress_is_not_ready_and_says_why() -> None:
    clock = [0.0]
    health = Health(clock=lambda: clock[0])
    hook, copy = fake_loop("hook"), fake_loop("copy")
    settings = Settings(ready_stall_s=3)
    reporter = DeliveryHealth(
        [hook, copy],
        settings,
        health,
        clock=lambda: clock[0],
        broker=lambda: Check("broker", True, "reachable"),
    )

    def report(at: float) -> dict[str, Any]:
        clock[0] = hook.beat = copy.beat = at
        reporter.report()
        ok, body = health.ready()
        assert body["ready"] is ok
        return body

    hook.dispatch.stats.lag = {("crm.offers", 0): 0}
    copy.dispatch.stats.lag = {("crm.offers", 0): 0}
    body = report(1.0)
    assert body["ready"], body
    assert set(body["checks"]) == {
        "broker",
        *(f"{c}:{n}" for c in ("loop", "partitions", "progress") for n in ("hook", "copy")),
    }

    hook.dispatch.stats.lag = {("crm.offers", 0): 40}  # the endpoint goes down
    hook.job = SimpleNamespace(batch=[b"x"] * 20, started=1.5)
    hook.dispatch.sink.circuit_open = True
    hook.dispatch.sink.retries = 9
    assert report(3.0)["ready"]  # not yet stall_s
    body = report(4.5)
    assert not body["ready"]
    failing = {name: c["detail"] for name, c in body["checks"].items() if not c["ok"]}
    assert list(failing) == ["progress:hook"]  # the other connector is fine
    assert "lag 40" in failing["progress:hook"]
    assert "circuit is open" in failing["progress:hook"]
    assert "a batch of 20 actions in flight for 3 s" in failing["progress:hook"]

    hook.dispatch.sink.circuit_open = False  # it comes back: the batch is settled
    hook.job = None
    hook.settled = 20
    hook.dispatch.stats.lag = {("crm.offers", 0): 20}
    assert report(5.0)["ready"]
    assert report(9.0)["ready"] is False  # lag and nothing settled again for 3 s
    hook.dispatch.stats.lag = {("crm.offers", 0): 0}
    assert report(9.5)["ready"]


def test_a_dead_loop_is_not_ready_and_not_alive() -> None:
    health = Health()
    hook = fake_loop("hook")
    reporter = DeliveryHealth(
        [hook], Settings(), health, broker=lambda: Check("broker", True, "reachable")
    )
    hook.failed = RuntimeError("boom")
    hook.thread = SimpleNamespace(is_alive=lambda: False)
    reporter.report()
    ok, body = health.ready()
    assert not ok and "boom" in body["checks"]["loop:hook"]["detail"]
    alive, liveness = health.alive()
    assert not alive and "connector hook stopped" in liveness["detail"]


def test_a_connector_without_partitions_is_named() -> None:
    health = Health()
    hook = fake_loop("hook")
    hook.assigned = ()
    DeliveryHealth(
        [hook], Settings(), health, broker=lambda: Check("broker", True, "reachable")
    ).report()
    ok, body = health.ready()
    assert not ok and not body["checks"]["partitions:hook"]["ok"]
