"""Liveness, readiness and the HTTP server of monitoring/health.py, on a fake clock and a
real local HTTP server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from monitoring.health import Check, Health, Progress, serve


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_stalls_only_with_lag_and_nothing_processed_for_the_limit() -> None:
    clock = Clock()
    p = Progress(60, clock)
    p.update(lag=500, done=0)
    clock.now += 59
    p.update(lag=800, done=0)
    assert p.check(800).ok  # 59 s: not yet
    clock.now += 2
    p.update(lag=900, done=0)
    stalled = p.check(900)
    assert not stalled.ok and "lag 900" in stalled.detail and "61 s" in stalled.detail
    p.update(lag=900, done=10)  # it processed something: progress
    assert p.check(900).ok
    clock.now += 600
    p.update(lag=0, done=10)  # idle with nothing to do is not a stall
    assert p.check(0).ok and p.check(0).detail == "no lag"
    clock.now += 600
    p.update(lag=None, done=10)  # lag not known: never called stalled
    assert p.check(None).ok
    clock.now += 600
    p.update(lag=50, done=10)  # lag appears after a long idle time: the clock starts now
    assert p.check(50).ok
    clock.now += 61
    p.update(lag=50, done=10)
    assert not p.check(50).ok


def test_ready_needs_every_check_and_a_recent_report() -> None:
    clock = Clock()
    h = Health(alive_within=30, clock=clock)
    ok, body = h.ready()
    assert not ok and body["checks"]["started"]["detail"] == "starting"
    assert h.alive()[0]  # starting is alive
    h.report([Check("partitions", True, "4 assigned"), Check("broker", False, "down")])
    ok, body = h.ready()
    assert not ok and body["checks"]["broker"] == {"ok": False, "detail": "down"}
    h.report([Check("partitions", True), Check("broker", True)])
    assert h.ready()[0]
    clock.now += 31  # no report for 31 s: the loop is stuck; neither alive nor ready
    alive, detail = h.alive()
    assert not alive and "stuck" in detail["detail"]
    assert not h.ready()[0]
    h.report([Check("partitions", True)])
    assert h.ready()[0]
    h.fail("a batch could not be delivered")
    assert h.alive() == (False, {"alive": False, "detail": "a batch could not be delivered"})
    assert not h.ready()[0]


@pytest.fixture
def server() -> Iterator[tuple[int, Health, Counter]]:
    registry = CollectorRegistry()
    counter = Counter("crm_test_things", "Things.", registry=registry)
    health = Health().register(registry)
    srv = serve(0, registry, health, addr="127.0.0.1")
    try:
        yield srv.server_port, health, counter
    finally:
        srv.shutdown()
        srv.server_close()


def fetch(port: int, path: str, accept: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_server_answers_metrics_healthz_readyz_and_404(
    server: tuple[int, Health, Counter],
) -> None:
    port, health, counter = server
    counter.inc(3)
    status, kind, text = fetch(port, "/metrics")
    assert status == 200 and kind.startswith("text/plain")
    assert "crm_test_things_total 3.0" in text and "crm_ready 0.0" in text
    status, kind, _ = fetch(port, "/metrics", "application/openmetrics-text; version=1.0.0")
    assert status == 200 and kind.startswith("application/openmetrics-text")
    status, kind, text = fetch(port, "/readyz")
    assert status == 503 and kind == "application/json" and json.loads(text)["ready"] is False
    health.report([Check("partitions", True, "4 input partitions assigned")])
    status, _, text = fetch(port, "/readyz")
    assert status == 200 and json.loads(text)["checks"]["partitions"]["ok"] is True
    assert "crm_ready 1.0" in fetch(port, "/metrics")[2]
    status, _, text = fetch(port, "/healthz?verbose=1")
    assert status == 200 and json.loads(text)["alive"] is True
    assert fetch(port, "/nothing")[0] == 404
