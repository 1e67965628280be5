"""Kafka-side faults on a real broker: an output too large for its topic, an output topic
deleted mid-run. The worker recovers or dead-letters, and loses nothing.

(A broker restarted mid-stream is in test_worker.py.)
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from rules.ruleset import load_rules
from state.store import MemoryStore, StateCache
from streams.engine import Engine, Record
from streams.settings import Settings
from tests.integration import test_worker
from tests.integration.test_worker import (
    PACKS,
    _decision_key,
    _ids,
    assert_same_decisions,
    collect,
    produce,
)

# the fixtures of test_worker.py: a scenario and what replay makes of it, settings with
# topics of their own, a worker process factory
scenario = test_worker.scenario
settings = test_worker.settings
start_worker = test_worker.start_worker

LIMIT = 1200
"""max.message.bytes given to the alerts topic: two alerts of the scenario (impossible
travel, about 1,470 bytes as a record batch) are over it, the others (at most about
1,080) are not."""


def replay_actions(events: list[bytes]) -> list[tuple[dict[str, Any], int]]:
    """Every action replay makes of `events`, with its size as a Kafka record batch."""
    engine = Engine(load_rules([PACKS]), StateCache(MemoryStore()))
    out = engine.process([Record(raw) for raw in events])
    return [
        (
            json.loads(value),
            DefaultRecordBatchBuilder.estimate_size_in_bytes(key.encode(), value, []),
        )
        for value, (_kind, key) in zip(out.actions, out.action_keys, strict=True)
    ]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def admin(s: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": s.brokers})


def set_max_message_bytes(s: Settings, topic: str, limit: int) -> None:
    """Set the topic's max.message.bytes and wait until the broker reports it."""
    client = admin(s)
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(
                "max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET
            )
        ],
    )
    for future in client.incremental_alter_configs([resource]).values():
        future.result(timeout=30)

    def applied() -> bool:
        res = ConfigResource(ResourceType.TOPIC, topic)
        entries = client.describe_configs([res])[res].result(timeout=10)
        return bool(entries["max.message.bytes"].value == str(limit))

    wait_for(applied, f"max.message.bytes of {topic} is {limit}")


def delete_topic(s: Settings, topic: str) -> None:
    client = admin(s)
    for future in client.delete_topics([topic], operation_timeout=30).values():
        future.result(timeout=30)
    wait_for(lambda: topic not in client.list_topics(timeout=10).topics, f"{topic} deleted")


def create_topic(s: Settings, topic: str) -> None:
    """Create the topic again (retrying while the broker still finishes deleting it) and
    wait until every partition has a leader."""
    client = admin(s)

    def created() -> bool:
        for future in client.create_topics([NewTopic(topic, s.partitions, 1)]).values():
            try:
                future.result(timeout=30)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    return False
        meta = client.list_topics(topic, timeout=10).topics[topic]
        parts = meta.partitions.values()
        return (
            meta.error is None and len(parts) == s.partitions and all(p.leader >= 0 for p in parts)
        )

    wait_for(created, f"{topic} created again")


def input_at(s: Settings, origin: str) -> dict[str, Any]:
    """The input record a dead letter's origin (`topic/partition@offset`) points at."""
    where, offset = origin.rsplit("@", 1)
    topic, partition = where.rsplit("/", 1)
    consumer = Consumer({"bootstrap.servers": s.brokers, "group.id": "check-origin"})
    try:
        consumer.assign([TopicPartition(topic, int(partition), int(offset))])
        msg = wait_for(lambda: consumer.poll(0.5), f"the record at {origin}", timeout=20)
        assert msg.error() is None and msg.offset() == int(offset)
        record: dict[str, Any] = json.loads(msg.value())
        return record
    finally:
        consumer.close()


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    """The worker's /readyz: status and body (0 and {} while it does not listen)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def log_of(tmp_path: Path, n: int = 0) -> str:
    return (tmp_path / f"worker-{n}.log").read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_dead_lettered(
    s: Settings, got: dict[str, list[Any]], too_large: list[dict[str, Any]]
) -> None:
    """`too_large` (actions) are in the dlq as output_too_large, with where their input is."""
    letters = [d for d in got["dlq"] if d["reason"] == "output_too_large"]
    assert sorted(d["action_id"] for d in letters) == sorted(a["action_id"] for a in too_large)
    for letter in letters:
        assert letter["output"] == "action"
        assert letter["output_topic"] == s.topics.alerts
        assert letter["size"] > letter["limit"] == LIMIT
        assert letter["origin"] == f"{letter['topic']}/{letter['partition']}@{letter['offset']}"
        assert letter["raw"] is None and letter["customer_id"]
        event = input_at(s, letter["origin"])  # nothing lost: the input is still there
        assert event["event_id"] == letter["event_id"]
        assert event["customer_id"] == letter["customer_id"]


def test_an_output_over_its_topics_limit_is_dead_lettered_with_where_its_input_is(
    settings: Settings,
    scenario: dict[str, Any],
    start_worker: Any,
) -> None:
    set_max_message_bytes(settings, settings.topics.alerts, LIMIT)
    actions = replay_actions(scenario["events"])
    too_large = [a for a, size in actions if a["kind"] == "alert" and size > LIMIT]
    assert 0 < len(too_large) < len(actions)
    settings.web_port = free_port()
    produce(settings, scenario["events"])
    worker = start_worker()
    got = collect(settings, scenario["decisions"], timeout=75)
    assert worker.poll() is None
    assert_same_decisions(got, scenario)
    assert_dead_lettered(settings, got, too_large)
    delivered = {a["action_id"] for a in got["offers"] + got["alerts"]}
    assert delivered == scenario["actions"] - {a["action_id"] for a in too_large}
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    metrics = urllib.request.urlopen(url, timeout=10).read().decode()
    assert f'crm_dead_letters_total{{reason="output_too_large"}} {len(too_large)}.0' in metrics


def test_an_output_kafka_refuses_as_too_large_is_dead_lettered_and_the_worker_goes_on(
    settings: Settings,
    scenario: dict[str, Any],
    start_worker: Any,
    tmp_path: Path,
) -> None:
    """The topic's limit is lowered after the worker has read it: Kafka refuses the record
    (or a batch holding it), the worker reads the limits again and dead-letters it."""
    events: list[bytes] = scenario["events"]
    first = events[:1000]  # one decision, no action over the limit
    actions = replay_actions(events)
    too_large = [a for a, size in actions if a["kind"] == "alert" and size > LIMIT]
    assert not {a["event_id"] for a in too_large} & set(_ids(first))
    produce(settings, first)
    worker = start_worker()
    collect(settings, {k for k in scenario["decisions"] if k[0] in set(_ids(first))})
    set_max_message_bytes(settings, settings.topics.alerts, LIMIT)
    produce(settings, events[1000:], in_order=True)
    got = collect(settings, scenario["decisions"], timeout=75)
    assert worker.poll() is None, log_of(tmp_path)[-3000:]
    assert_same_decisions(got, scenario)
    assert_dead_lettered(settings, got, too_large)
    delivered = {a["action_id"] for a in got["offers"] + got["alerts"]}
    assert delivered == scenario["actions"] - {a["action_id"] for a in too_large}
    assert "output too large" in log_of(tmp_path)


def test_a_deleted_output_topic_holds_the_worker_until_it_exists_again_and_nothing_is_lost(
    settings: Settings,
    scenario: dict[str, Any],
    start_worker: Any,
    tmp_path: Path,
) -> None:
    events: list[bytes] = scenario["events"]
    half = len(events) // 2
    first_half = set(_ids(events[:half]))
    produce(settings, events[:half])
    settings.web_port = port = free_port()
    settings.ready_stall_s = 3
    worker = start_worker()
    collect(settings, {k for k in scenario["decisions"] if k[0] in first_half})
    wait_for(lambda: readyz(port)[0] == 200, "the worker is ready")
    alerts = settings.topics.alerts
    delete_topic(settings, alerts)  # the alerts delivered so far are gone with it
    produce(settings, events[half:], in_order=True)
    wait_for(lambda: f"topic {alerts} does not exist" in log_of(tmp_path), "the worker says so")
    assert worker.poll() is None, "the worker waits for the topic"
    flood = log_of(tmp_path).count("not found in cluster metadata")
    assert flood <= 5, f"aiokafka's log is throttled ({flood} lines)"
    # lag and no progress for ready_stall_s: not ready, and /readyz says why; still alive
    stalled = wait_for(lambda: readyz(port)[0] == 503 and readyz(port)[1], "/readyz says 503")
    assert not stalled["checks"]["progress"]["ok"], stalled
    assert "nothing processed for" in stalled["checks"]["progress"]["detail"]
    assert stalled["checks"]["broker"]["ok"] and stalled["checks"]["partitions"]["ok"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200
    create_topic(settings, alerts)
    got = collect(settings, scenario["decisions"], timeout=75)
    assert worker.poll() is None
    wait_for(lambda: readyz(port)[0] == 200, "ready again once it makes progress")
    assert_same_decisions(got, scenario)
    actions = [a for a, _ in replay_actions(events)]
    offers = {a["action_id"] for a in actions if a["kind"] == "offer"}
    after = {
        a["action_id"] for a in actions if a["kind"] == "alert" and a["event_id"] not in first_half
    }
    assert after  # the second half has alerts: they had to wait for the topic
    assert {a["action_id"] for a in got["offers"]} == offers
    alerted = {a["action_id"] for a in got["alerts"]}  # in the topic created again
    # every alert made after the deletion; an alert of the first half only if its batch
    # ran again (at-least-once: the same action id)
    assert after <= alerted <= after | {a["action_id"] for a in actions if a["kind"] == "alert"}
    assert "delivery resumed" in log_of(tmp_path)


def test_exactly_once_a_deleted_output_topic_stops_the_worker_and_a_restart_loses_nothing(
    settings: Settings,
    scenario: dict[str, Any],
    start_worker: Any,
    tmp_path: Path,
) -> None:
    settings.processing_guarantee = "exactly_once"
    events: list[bytes] = scenario["events"]
    half = len(events) // 2
    first_half = set(_ids(events[:half]))
    produce(settings, events[:half])
    worker = start_worker()
    collect(settings, {k for k in scenario["decisions"] if k[0] in first_half})
    alerts = settings.topics.alerts
    delete_topic(settings, alerts)
    produce(settings, events[half:], in_order=True)
    code = wait_for(worker.poll, "the worker stops", timeout=60)
    text = log_of(tmp_path)
    assert code != 0 and f"topic {alerts} does not exist" in text, text[-3000:]
    assert "its transactions are aborted and the worker stops" in text
    start_worker()  # waits for the topic
    wait_for(lambda: "topics missing" in log_of(tmp_path, 1), "the new worker waits for it")
    create_topic(settings, alerts)
    got = collect(settings, scenario["decisions"], timeout=75)
    keys = [_decision_key(d) for d in got["decisions"]]
    assert set(keys) == scenario["decisions"]
    assert len(keys) == len(set(keys)), "a decision was seen twice"
    actions = [a for a, _ in replay_actions(events)]
    offers = sorted(a["action_id"] for a in actions if a["kind"] == "offer")
    after = sorted(
        a["action_id"] for a in actions if a["kind"] == "alert" and a["event_id"] not in first_half
    )
    assert sorted(a["action_id"] for a in got["offers"]) == offers, "each offer exactly once"
    assert sorted(a["action_id"] for a in got["alerts"]) == after, "each later alert once"
