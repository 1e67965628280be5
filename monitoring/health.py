"""Liveness and readiness, and the one HTTP server for /metrics, /healthz and /readyz.

The process that owns a `Health` (the worker, `deliver`, the demo) works out its checks on
its own loop, where its state is safe to read, and hands them over with `report()`; each
report is also a heartbeat. The HTTP server's thread only reads the latest report:

- `/healthz` (liveness): 200 while reports keep coming (the loop turns) and nothing has
  declared the process failed; 503 otherwise. A restart is the cure for a 503 here.
- `/readyz` (readiness): 200 only when alive and every check of the latest report passed
  (for the worker: partitions assigned, state recovery finished, broker reachable, and
  not stalled); 503 otherwise. Both answer JSON with each check and its detail.

`crm_ready` (1 or 0) exports the same readiness to Prometheus.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

log = logging.getLogger("crm_triggers.http")

ALIVE_WITHIN = 30.0
"""Seconds without a report after which the process counts as hung (not alive)."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


class Progress:
    """Whether a consumer makes progress: stalled when it has had lag and processed
    nothing for `stall_s` seconds. No lag counts as progress (nothing to do)."""

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self.last = clock()
        self._done = 0
        self._lag: int | None = None

    def update(self, lag: int | None, done: int) -> None:
        """`lag`: records waiting (None: not known); `done`: records processed so far. When
        lag becomes known, the clock starts then (an idle worker given partitions with lag
        is not stalled at once)."""
        if done != self._done or lag == 0 or (lag and self._lag is None):
            self.last = self.clock()
        self._done = done
        self._lag = lag

    def idle_for(self) -> float:
        return self.clock() - self.last

    def check(self, lag: int | None) -> Check:
        idle = self.idle_for()
        if lag and idle >= self.stall_s:
            detail = f"lag {lag} and nothing processed for {idle:.0f} s (limit {self.stall_s:g} s)"
            return Check("progress", False, detail)
        if lag:
            return Check("progress", True, f"lag {lag}, last progress {idle:.0f} s ago")
        return Check("progress", True, "no lag" if lag == 0 else "lag not known yet")


class Health:
    """The latest liveness and readiness of a process (thread-safe: one writer, readers
    in the HTTP server's threads)."""

    def __init__(
        self, alive_within: float = ALIVE_WITHIN, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.alive_within = alive_within
        self.clock = clock
        self._checks: tuple[Check, ...] = (Check("started", False, "starting"),)
        self._at = clock()
        self._failed: str | None = None

    def report(self, checks: Sequence[Check]) -> None:
        """The current readiness checks; also says the process is alive."""
        self._checks, self._at = tuple(checks), self.clock()

    def fail(self, reason: str) -> None:
        """The process is broken for good (it stops, or should be restarted)."""
        self._failed = reason

    def alive(self) -> tuple[bool, dict[str, Any]]:
        age = self.clock() - self._at
        if self._failed is not None:
            return False, {"alive": False, "detail": self._failed}
        if age > self.alive_within:
            detail = f"no health report for {age:.0f} s: the process's loop is stuck"
            return False, {"alive": False, "detail": detail}
        return True, {"alive": True, "detail": f"last report {age:.1f} s ago"}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        alive, liveness = self.alive()
        checks = self._checks
        ok = alive and all(c.ok for c in checks)
        body = {
            "ready": ok,
            "alive": liveness,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        return ok, body

    def register(self, registry: CollectorRegistry) -> Health:
        registry.register(_ReadyCollector(self))
        return self


class _ReadyCollector(Collector):
    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready, _ = self.health.ready()
        yield GaugeMetricFamily(
            "crm_ready", "1 when /readyz says ready, else 0.", value=1.0 if ready else 0.0
        )


def serve(
    port: int, registry: CollectorRegistry, health: Health, addr: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on `addr:port` (0: any free port; the server's
    `server_port` says which) from a daemon thread. Raises OSError if the port is taken."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._answer(200, encoder(registry), content_type)
            elif path in ("/healthz", "/readyz"):
                ok, body = health.alive() if path == "/healthz" else health.ready()
                data = json.dumps(body, indent=1).encode() + b"\n"
                self._answer(200 if ok else 503, data, "application/json")
            elif path == "/":
                text = b"crm-triggers: /metrics /healthz /readyz\n"
                self._answer(200, text, "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every 15 s per target is not news

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="crm-http", daemon=True)
    thread.start()
    return server
