"""`crm-triggers deliver` on the real broker: actions from the output topics to a webhook
(a real local HTTP server), a Kafka topic and a file, each connector on its own.

What the design says, checked here: each action reaches each connector it is routed to
exactly once (no crash or rebalance in these tests), in order per customer, signed; an
endpoint that is down holds back only its own connector; actions held for quiet hours are
delivered when due, also after a restart of the deliverer. And what an SRE sees of it:
/metrics (actions by connector, kind and outcome, lag, latency; `promtool check metrics`
accepts it) and /readyz, which names the connector whose endpoint is down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from connectors.config import DeliveryConfig
from scripts.promtool import ensure_promtool
from streams import deliver
from streams.deliver import run_deliver
from streams.settings import Settings, Topics
from streams.topics import create_topics
from tests.connectors.endpoint import SECRET, Endpoint, serve
from tests.integration.promtext import sample, samples

from .conftest import consume

CUSTOMERS = 12
PER_CUSTOMER = 10


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    prefix = f"d{uuid.uuid4().hex[:8]}"
    topics = Topics(**{name: f"{prefix}.{name}" for name in Topics.model_fields})
    s = Settings(brokers=kafka_bootstrap, app_id=prefix, topics=topics, partitions=3)
    create_topics(s)
    return s


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    monkeypatch.setenv("CRM_TEST_HOOK_KEY", SECRET)
    gen = serve([])
    yield next(gen)
    gen.close()


def actions(
    not_before: Callable[[int, int], float | None] = lambda c, n: None,
) -> list[dict[str, Any]]:
    out = []
    ts = datetime.now(UTC).isoformat()  # the events' time
    for n in range(PER_CUSTOMER):
        for c in range(CUSTOMERS):
            kind = "alert" if n % 3 == 0 else "offer"
            nb = not_before(c, n)
            out.append(
                {
                    "action_id": f"a-{c}-{n}",
                    "kind": kind,
                    "pack": "p",
                    "rule_id": "r",
                    "customer_id": f"c{c}",
                    "ts": ts,
                    "n": n,
                    "severity": "high" if kind == "alert" else None,
                    "channel": "push" if kind == "offer" else "fraud_queue",
                    "not_before": (
                        datetime.fromtimestamp(nb, UTC).isoformat() if nb is not None else None
                    ),
                }
            )
    return out


def produce(settings: Settings, records: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": settings.brokers, "partitioner": "murmur2_random"})
    for r in records:
        topic = settings.topics.alerts if r["kind"] == "alert" else settings.topics.offers
        producer.produce(topic, json.dumps(r).encode(), r["customer_id"].encode())
    assert producer.flush(30) == 0


def config(tmp_path: Path, url: str, cases_topic: str) -> DeliveryConfig:
    return DeliveryConfig.model_validate(
        {
            "connectors": {
                "hook": {
                    "type": "webhook",
                    "url": url,
                    "secret_env": "CRM_TEST_HOOK_KEY",
                    "backoff_base_s": 0.05,
                    "backoff_max_s": 0.2,
                    "max_attempts": 3,
                    "breaker_threshold": 3,
                    "breaker_reset_s": 0.3,
                },
                "cases": {"type": "kafka", "topic": cases_topic},
                "copy": {"type": "file", "path": str(tmp_path / "copy" / "actions.jsonl")},
            },
            "routes": [
                {"match": {"kind": ["offer"]}, "to": ["hook"]},
                {"match": {"kind": ["alert"], "severity": ["high"]}, "to": ["cases"]},
                {"to": ["copy"]},
            ],
            "batch_size": 50,
            "hold_dir": str(tmp_path / "hold"),
            "start_from": "earliest",  # the actions are produced before it starts
        }
    )


class Deliverer:
    """`run_deliver` on a thread, as the CLI runs it (minus signals; /metrics, /healthz and
    /readyz on `port` unless it is 0)."""

    def __init__(self, settings: Settings, config: DeliveryConfig, port: int = 0) -> None:
        self.stop = threading.Event()
        self.code: int | None = None
        self.port = port
        self.thread = threading.Thread(target=self._run, args=(settings, config), daemon=True)
        self.thread.start()

    def _run(self, settings: Settings, config: DeliveryConfig) -> None:
        self.code = run_deliver(settings, config, metrics_port=self.port, stop=self.stop)

    def get(self, path: str) -> tuple[int, str]:
        """HTTP status and body of `path` (0 while nothing listens)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/readyz")
        return status, json.loads(body) if body else {}

    def metrics(self) -> str:
        return self.get("/metrics")[1]

    def close(self) -> int | None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def file_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["action_id"] for line in path.read_bytes().splitlines()]


def read_topic(brokers: str, topic: str, count: int) -> list[dict[str, Any]]:
    """`count` records of `topic`, and any beyond them that show up within a second."""
    return [json.loads(m.value()) for m in consume(brokers, topic, count, linger_s=1.0)]


def per_customer(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    order: dict[str, list[int]] = {}
    for r in records:
        order.setdefault(r["customer_id"], []).append(r["n"])
    return order


def test_a_down_endpoint_holds_back_only_its_connector_and_then_gets_every_action_once(
    settings: Settings,
    endpoint: Endpoint,
    new_topics: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Also what an SRE sees meanwhile: /readyz names the connector that is stuck, and
    once all is delivered, /metrics counts every action by connector and kind, with no lag
    left, and promtool accepts it."""
    (cases_topic,) = new_topics(n_partitions=3)
    sent = actions()
    offers = [a for a in sent if a["kind"] == "offer"]
    alerts = [a for a in sent if a["kind"] == "alert"]
    endpoint.go_down()
    produce(settings, sent)
    settings.ready_stall_s = 3  # CRM_READY_STALL_S
    monkeypatch.setattr(deliver, "LAG_EVERY_S", 0.5)  # every 2 s: a quicker test
    monkeypatch.setattr(deliver, "REPORT_EVERY_S", 0.5)
    cfg = config(tmp_path, endpoint.url, cases_topic)
    deliverer = Deliverer(settings, cfg, port=free_port())
    connectors = list(cfg.connectors)
    try:
        copy = tmp_path / "copy" / "actions.jsonl"
        wait_for("the file connector", lambda: len(file_ids(copy)) >= len(sent))
        cases = read_topic(settings.brokers, cases_topic, len(alerts))
        assert endpoint.received == []  # it was down all along

        def stuck() -> bool:
            status, body = deliverer.ready()
            return status == 503 and not body["checks"]["progress:hook"]["ok"]

        wait_for("/readyz to say the webhook connector is stuck", stuck, timeout=30)
        status, body = deliverer.ready()
        failing = {name: c["detail"] for name, c in body["checks"].items() if not c["ok"]}
        assert list(failing) == ["progress:hook"], body  # the other connectors are fine
        assert "nothing processed" in failing["progress:hook"]
        assert "in flight" in failing["progress:hook"]  # and why: a batch waits
        assert deliverer.get("/healthz")[0] == 200  # alive: a restart would not help

        endpoint.come_back()
        wait_for("the webhook", lambda: len(endpoint.accepted_ids()) >= len(offers))

        def caught_up() -> bool:
            metrics = deliverer.metrics()
            if not all(samples(metrics, "crm_delivery_lag", connector=c) for c in connectors):
                return False
            return all(sample(metrics, "crm_delivery_lag", connector=c) == 0 for c in connectors)

        wait_for("no lag left", caught_up, timeout=30)

        def ready() -> bool:
            status, body = deliverer.ready()
            return status == 200 and body["checks"]["progress:hook"]["detail"] == "no lag"

        wait_for("/readyz 200 with no lag", ready, timeout=30)
        time.sleep(1.0)  # room for a duplicate to show up
        metrics = deliverer.metrics()
        status, body = deliverer.ready()
    finally:
        assert deliverer.close() == 0
    # ready again, every check passing
    assert status == 200 and body["ready"] is True
    assert set(body["checks"]) == {
        "broker",
        *(f"{check}:{c}" for check in ("loop", "partitions", "progress") for c in connectors),
    }
    assert all(c["ok"] for c in body["checks"].values()), body
    assert body["checks"]["progress:hook"]["detail"] == "no lag"
    # promtool, the Prometheus project's own linter, accepts the exposition
    check = subprocess.run(
        [str(ensure_promtool()), "check", "metrics"], input=metrics, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # every action counted by connector and kind, exactly as delivered
    delivered = {
        ("hook", "offer"): len(offers),
        ("hook", "alert"): 0,  # alerts are not routed to the webhook
        ("cases", "offer"): 0,
        ("cases", "alert"): len(alerts),
        ("copy", "offer"): len(offers),
        ("copy", "alert"): len(alerts),
    }
    for (c, kind), n in delivered.items():
        got = sample(metrics, "crm_delivery_actions_total", connector=c, kind=kind)
        assert got == n, (c, kind)  # all of them delivered (none held, none dead-lettered)
        labels = {"connector": c, "kind": kind, "outcome": "delivered"}
        assert sample(metrics, "crm_delivery_actions_total", **labels) == n, (c, kind)
    assert sample(metrics, "crm_delivery_actions_total", outcome="dead_lettered") == 0
    for c in connectors:  # the latency of each delivered action, from its event time
        n = sample(metrics, "crm_delivery_actions_total", connector=c, outcome="delivered")
        assert sample(metrics, "crm_delivery_latency_seconds_count", connector=c) == n
    assert sample(metrics, "crm_delivery_retries_total", connector="hook") > 0
    assert sample(metrics, "crm_ready") == 1
    assert sample(metrics, "process_resident_memory_bytes") > 0
    assert sample(metrics, "crm_build_info") == 1
    # never a customer id (nor an action id) in a label
    values = set(re.findall(r'="([^"]*)"', metrics))
    assert not values & {a["customer_id"] for a in sent}
    assert not values & {a["action_id"] for a in sent}
    assert sorted(file_ids(copy)) == sorted(a["action_id"] for a in sent)
    assert sorted(c["action_id"] for c in cases) == sorted(a["action_id"] for a in alerts)
    assert per_customer(cases) == per_customer(alerts)
    hooked = [json.loads(b) for b in endpoint.accepted]
    assert sorted(h["action_id"] for h in hooked) == sorted(a["action_id"] for a in offers)
    assert per_customer(hooked) == per_customer(offers)
    assert endpoint.bad_signatures == 0
    assert read_topic(settings.brokers, settings.topics.delivery_dlq, 0) == []


def test_actions_held_for_quiet_hours_are_delivered_when_due_also_after_a_restart(
    settings: Settings, endpoint: Endpoint, new_topics: Any, tmp_path: Path
) -> None:
    (cases_topic,) = new_topics(n_partitions=3)
    due = time.time() + 6
    sent = actions(lambda c, n: due if c % 2 == 0 else None)  # even customers: quiet hours
    offers = [a for a in sent if a["kind"] == "offer"]
    held = {a["action_id"] for a in offers if a["not_before"] is not None}
    produce(settings, sent)
    cfg = config(tmp_path, endpoint.url, cases_topic)
    deliverer = Deliverer(settings, cfg, port=free_port())

    def hook(metrics: str, outcome: str) -> float:
        return sample(metrics, "crm_delivery_actions_total", connector="hook", outcome=outcome)

    try:
        wait_for(
            "the offers not held", lambda: len(endpoint.accepted_ids()) >= len(offers) - len(held)
        )
        assert held.isdisjoint(endpoint.accepted_ids())
        wait_for("held counted", lambda: hook(deliverer.metrics(), "held") == len(held))
        metrics = deliverer.metrics()
    finally:
        assert deliverer.close() == 0
    assert time.time() < due, "the test machine was too slow to stop before the held ones were due"
    assert (tmp_path / "hold" / "hook").is_dir()
    assert hook(metrics, "held") == len(held)
    assert hook(metrics, "held") == sample(
        metrics, "crm_delivery_actions_total", connector="hook", kind="offer", outcome="held"
    )
    assert sample(metrics, "crm_delivery_held_actions", connector="hook") == len(held)
    deliverer = Deliverer(settings, cfg, port=free_port())  # restarted: held ones on its disk
    try:
        wait_for("the held offers", lambda: len(endpoint.accepted_ids()) >= len(offers))
        time.sleep(1.0)
        metrics = deliverer.metrics()
    finally:
        assert deliverer.close() == 0
    assert hook(metrics, "released") == len(held)  # then sent, and delivered
    assert hook(metrics, "released") == sample(
        metrics, "crm_delivery_actions_total", connector="hook", kind="offer", outcome="released"
    )
    assert hook(metrics, "delivered") == len(held)  # this run's
    assert sample(metrics, "crm_delivery_latency_seconds_count", connector="hook") == len(held)
    assert sample(metrics, "crm_delivery_held_actions", connector="hook") == 0
    accepted = endpoint.accepted_ids()
    assert sorted(accepted) == sorted(a["action_id"] for a in offers)  # each once
    when = dict(zip(accepted, endpoint.accepted_at, strict=True))
    assert min(when[a] for a in held) >= due  # not before the end of quiet hours


def test_a_deliverer_killed_mid_stream_loses_nothing_after_a_restart(
    settings: Settings, endpoint: Endpoint, new_topics: Any, tmp_path: Path
) -> None:
    """`crm-triggers deliver` as a process, `kill -9` while the webhook is slow: the restarted
    process delivers every action at least once; only the batch in flight comes twice."""
    (cases_topic,) = new_topics(n_partitions=3)
    sent = actions()
    offers = [a["action_id"] for a in sent if a["kind"] == "offer"]
    cfg = config(tmp_path, endpoint.url, cases_topic).model_dump(mode="json")
    cfg["connectors"]["hook"]["concurrency"] = 1
    cfg["batch_size"] = 20
    path = tmp_path / "connectors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    produce(settings, sent)
    env = {**os.environ, **settings.to_env(), "CRM_TEST_HOOK_KEY": SECRET}
    command = [sys.executable, "-m", "streams.cli", "deliver", "--connectors", str(path)]
    command += ["--metrics-port", "0"]
    endpoint.delay_s = 0.02  # slow: the kill lands mid-stream
    first = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for("some offers", lambda: len(endpoint.accepted_ids()) >= 25)
    finally:
        first.kill()
        first.wait(10)
    assert len(set(endpoint.accepted_ids())) < len(offers), "finished before the kill"
    endpoint.delay_s = 0.0
    second = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        wait_for("every offer", lambda: set(offers) <= set(endpoint.accepted_ids()))
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode()[-2000:]
    logs = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any(entry["msg"] == "stopped" for entry in logs)  # structured JSON logs
    assert SECRET not in err.decode()  # the signing key is never logged
    assert "c1" not in {str(v) for entry in logs for v in entry.values()}  # nor customers
    accepted = endpoint.accepted_ids()
    assert set(accepted) == set(offers)
    assert len(accepted) - len(offers) <= 20  # at most the batch that was in flight
