"""What an SRE sees of a worker on a real broker: /metrics (checked by `promtool check
metrics`), /healthz and /readyz.

(Readiness failing while an output topic is missing and the worker makes no progress is in
test_worker_faults.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from scripts.promtool import ensure_promtool
from streams.settings import Settings
from tests.integration import test_worker
from tests.integration.promtext import sample, samples
from tests.integration.test_worker import collect, produce
from tests.integration.test_worker_faults import free_port, wait_for

scenario = test_worker.scenario
settings = test_worker.settings
start_worker = test_worker.start_worker


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:  # not listening yet
        return 0, ""


def test_worker_serves_metrics_promtool_accepts_and_says_when_it_is_ready(
    settings: Settings, scenario: dict[str, Any], start_worker: Any, tmp_path: Path
) -> None:
    promtool = ensure_promtool()
    settings.web_port = port = free_port()
    events: list[bytes] = scenario["events"]
    produce(settings, events + scenario["bad"])
    worker = start_worker()
    ready = wait_for(lambda: get(port, "/readyz")[0] == 200, "the worker is ready", timeout=90)
    assert ready
    status, body = get(port, "/healthz")
    assert status == 200 and json.loads(body)["alive"] is True
    collect(settings, scenario["decisions"])

    def caught_up() -> str | None:
        _, metrics = get(port, "/metrics")
        if not samples(metrics, "crm_consumer_lag") or not samples(metrics, "crm_events_total"):
            return None
        lag = sample(metrics, "crm_consumer_lag")
        processed = sample(metrics, "crm_events_total")
        return metrics if lag == 0 and processed == len(events) + 2 else None

    metrics = wait_for(caught_up, "lag 0 and every event counted in /metrics")
    assert worker.poll() is None

    # promtool, the Prometheus project's own linter, accepts the exposition
    check = subprocess.run(
        [str(promtool), "check", "metrics"], input=metrics, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    t = settings.topics
    # events in by topic, type and outcome; the bad ones as dead letters by reason
    assert sample(metrics, "crm_events_total", topic=t.transactions, outcome="processed") > 0
    assert sample(metrics, "crm_events_total", outcome="dead_letter") == 2
    assert sample(metrics, "crm_dead_letters_total", reason="malformed_json") == 1
    assert sample(metrics, "crm_dead_letters_total", reason="invalid_event") == 1
    # rule decisions and actions, processing time, event-to-action latency
    decisions = len(scenario["decisions"])
    assert sample(metrics, "crm_rule_decisions_total") == decisions
    actions = len(scenario["actions"])
    assert sample(metrics, "crm_actions_total") == actions
    assert sample(metrics, "crm_event_to_action_seconds_count") == actions
    assert sample(metrics, "crm_event_processing_seconds_count") == len(events) + 2
    assert sample(metrics, "crm_batch_duration_seconds_count") > 0
    # lag per partition, assignment, progress, state, rules, readiness, the process
    for topic in t.inputs():
        for partition in range(settings.partitions):
            assert sample(metrics, "crm_consumer_lag", topic=topic, partition=str(partition)) == 0
    assert sample(metrics, "crm_assigned_partitions") == 3 * settings.partitions
    assert sample(metrics, "crm_last_progress_timestamp_seconds") > 1.7e9
    assert sample(metrics, "crm_state_keys") > 0
    assert sample(metrics, "crm_rules_loaded") >= 2
    assert sample(metrics, "crm_ready") == 1
    assert sample(metrics, "process_resident_memory_bytes") > 0
    # never a customer id: no label value looks like one of the scenario's customers
    customers = {json.loads(e)["customer_id"] for e in events}
    values = set(re.findall(r'="([^"]*)"', metrics))
    assert not values & customers

    status, body = get(port, "/readyz")
    checks = json.loads(body)["checks"]
    assert status == 200
    assert set(checks) == {"partitions", "recovery", "broker", "progress"}
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["progress"]["detail"] == "no lag"


@pytest.fixture(scope="module", autouse=True)
def _promtool() -> None:
    ensure_promtool()  # fetched before the worker starts: its time is not the worker's


def test_lag_is_zero_when_only_transaction_markers_are_left(
    settings: Settings, scenario: dict[str, Any], start_worker: Any
) -> None:
    """Input written in Kafka transactions (as by upstream systems with exactly-once) ends
    each partition with a commit marker, which is never a record: once the worker has
    processed every record, its lag is 0 and /readyz does not call it stalled."""
    settings.web_port = port = free_port()
    settings.ready_stall_s = 3
    events = [e for e in scenario["events"] if json.loads(e)["type"] == "transaction"][:400]
    producer = Producer(
        {
            "bootstrap.servers": settings.brokers,
            "transactional.id": f"upstream-{uuid.uuid4().hex[:8]}",
            "partitioner": "murmur2_random",
        }
    )
    producer.init_transactions(30)
    for i in range(0, len(events), 100):  # four transactions: four markers per partition
        producer.begin_transaction()
        for raw in events[i : i + 100]:
            key = json.loads(raw)["customer_id"].encode()
            producer.produce(settings.topics.transactions, key=key, value=raw)
        producer.commit_transaction(30)
    start_worker()

    def settled() -> str | None:
        _, metrics = get(port, "/metrics")
        if not samples(metrics, "crm_events_total") or not samples(metrics, "crm_consumer_lag"):
            return None
        if sample(metrics, "crm_events_total") < len(events):
            return None
        return metrics if sample(metrics, "crm_consumer_lag") == 0 else None

    metrics = wait_for(settled, "every event processed and lag 0", timeout=90)
    assert sample(metrics, "crm_events_total") == len(events)
    time.sleep(2 * settings.ready_stall_s)  # long enough to be called stalled, were it lag
    status, body = get(port, "/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"]["progress"]["detail"] == "no lag"
