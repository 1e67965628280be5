"""The Kafka worker on a real broker gives exactly what `crm-triggers replay` gives."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from rules.ruleset import load_rules
from state.store import MemoryStore, StateCache
from streams.cli import main
from streams.engine import Engine, Record
from streams.settings import Settings, Topics
from streams.topics import create_topics

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "rules" / "packs"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A simulated stream and what replay makes of it."""
    folder = tmp_path_factory.mktemp("parity")
    events = folder / "events.jsonl"
    actions, decisions = folder / "actions.jsonl", folder / "decisions.jsonl"
    argv = ["simulate", "--customers", "600", "--days", "20", "--seed", "5", "--out", str(events)]
    assert main(argv) == 0
    bad = [b"not json", b'{"type": "transaction", "event_id": "bad-1"}']
    assert (
        main(
            [
                "replay",
                "--rules",
                str(PACKS),
                "--events",
                str(events),
                "--actions",
                str(actions),
                "--decisions",
                str(decisions),
                "--quiet",
            ]
        )
        == 0
    )
    return {
        "events": [line for line in events.read_bytes().splitlines() if line],
        "bad": bad,
        "actions": {json.loads(line)["action_id"] for line in actions.read_text().splitlines()},
        "decisions": {
            _decision_key(json.loads(line)) for line in decisions.read_text().splitlines()
        },
        "decision_events": [
            json.loads(line)["event_id"] for line in decisions.read_text().splitlines()
        ],
    }


def _replay_decisions(events: list[bytes]) -> set[tuple[Any, ...]]:
    engine = Engine(load_rules([PACKS]), StateCache(MemoryStore()))
    out = engine.process([Record(raw) for raw in events])
    return {_decision_key(json.loads(d)) for d in out.decisions}


def _ids(events: list[bytes]) -> list[str]:
    return [json.loads(raw)["event_id"] for raw in events]


def _decision_key(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["event_id"], d["pack"], d["rule_id"], d["outcome"], d["reason"], d["action_id"])


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topics = Topics(**{name: f"{prefix}.{name}" for name in Topics.model_fields})
    s = Settings(
        brokers=kafka_bootstrap,
        app_id=prefix,
        topics=topics,
        partitions=4,
        rules=[str(PACKS)],
        state_dir=tmp_path / "state",
        web_port=0,
    )
    create_topics(s)
    return s


def worker_env(s: Settings) -> dict[str, str]:
    return {**os.environ, **s.to_env()}


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []
    logs = contextlib.ExitStack()

    def start(state_dir: Path | None = None) -> subprocess.Popen[bytes]:
        """A worker process; `state_dir` for a second worker on this machine (each worker
        needs its own: RocksDB locks it)."""
        log = logs.enter_context((tmp_path / f"worker-{len(procs)}.log").open("wb"))
        env = worker_env(settings)
        if state_dir is not None:
            env["CRM_STATE_DIR"] = str(state_dir)
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    with logs:
        stop_all(procs)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def produce(s: Settings, events: list[bytes], *, in_order: bool = False) -> None:
    """Each event to its type's topic, keyed by customer id. With `in_order`, an event
    reaches the broker only after every event before it in the list (the producer is
    flushed whenever the topic changes), as when upstream systems write in time order; a
    worker already running cannot then fetch an event before an older one of another topic."""
    producer = Producer(
        {
            "bootstrap.servers": s.brokers,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 0 if in_order else 5,
            "compression.type": "lz4",  # the worker must read compressed input
        }
    )
    by_type = {v: k for k, v in s.topics.inputs().items()}
    previous = None
    for raw in events:
        try:
            event = json.loads(raw)
            topic, key = by_type[event["type"]], str(event.get("customer_id", "")).encode()
        except (ValueError, KeyError):
            topic, key = s.topics.transactions, b"?"
        if in_order and previous is not None and topic != previous:
            assert producer.flush(30) == 0
        previous = topic
        producer.produce(topic, key=key, value=raw)
        producer.poll(0)
    assert producer.flush(30) == 0


def collect(
    s: Settings, want: set[tuple[Any, ...]] | int, timeout: float = 120.0
) -> dict[str, list[Any]]:
    """Read the output topics until every wanted decision (a set of keys, or a count of
    distinct decisions) has arrived and nothing more comes for 3 s, or `timeout` passes."""
    consumer = Consumer(
        {
            "bootstrap.servers": s.brokers,
            "group.id": f"check-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    names = {
        s.topics.offers: "offers",
        s.topics.alerts: "alerts",
        s.topics.decisions: "decisions",
        s.topics.dlq: "dlq",
    }
    consumer.subscribe(list(names))
    got: dict[str, list[Any]] = {n: [] for n in names.values()}
    keys: set[tuple[Any, ...]] = set()
    deadline, quiet_since = time.monotonic() + timeout, time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                done = want <= keys if isinstance(want, set) else len(keys) >= want
                if done and time.monotonic() - quiet_since > 3:
                    break
                continue
            assert msg.error() is None, msg.error()
            record = json.loads(msg.value())
            got[names[msg.topic()]].append(record)
            if msg.topic() == s.topics.decisions:
                keys.add(_decision_key(record))
            quiet_since = time.monotonic()
    finally:
        consumer.close()
    return got


def assert_same_decisions(got: dict[str, list[Any]], scenario: dict[str, Any]) -> None:
    """The worker's decisions are replay's; if not, say which differ and what the worker said."""
    decisions = {_decision_key(d) for d in got["decisions"]}
    missing = sorted(scenario["decisions"] - decisions)
    extra = sorted(decisions - scenario["decisions"])
    customers = {k[0] for k in missing + extra}
    related = [d for d in got["decisions"] if d["event_id"] in customers]
    assert not missing and not extra, (
        f"missing {missing}; extra {extra}; dead letters {got['dlq'][:5]}; related {related}"
    )


def test_worker_gives_the_same_actions_and_decisions_as_replay(
    settings: Settings, scenario: dict[str, Any], start_worker: Any
) -> None:
    events: list[bytes] = scenario["events"]
    half = len(events) // 2
    produce(settings, events[:half] + scenario["bad"])  # before the worker starts...
    start_worker()
    time.sleep(2)
    produce(settings, events[half:], in_order=True)  # ...and while it runs
    got = collect(settings, scenario["decisions"])
    actions = {a["action_id"] for a in got["offers"] + got["alerts"]}
    decisions = {_decision_key(d) for d in got["decisions"]}
    assert_same_decisions(got, scenario)
    assert actions == scenario["actions"]
    assert len(got["decisions"]) == len(decisions)  # no duplicates in a clean run
    assert {a["kind"] for a in got["alerts"]} == {"alert"}
    assert {a["kind"] for a in got["offers"]} == {"offer"}
    assert sorted(d["reason"] for d in got["dlq"]) == ["invalid_event", "malformed_json"]
    for letter in got["dlq"]:  # the original, and where it was
        assert letter["raw"].encode() in scenario["bad"]
        assert letter["topic"] == settings.topics.transactions
        assert letter["origin"] == f"{letter['topic']}/{letter['partition']}@{letter['offset']}"


def crash_and_restart(
    settings: Settings, scenario: dict[str, Any], start_worker: Any
) -> dict[str, list[Any]]:
    """Produce everything, kill -9 the worker once a third of the decisions are out, start
    another, and return the outputs once every decision has arrived (or the time is up)."""
    settings.batch_size = 50  # small batches: the stream takes long enough to be cut mid-way
    produce(settings, scenario["events"])
    worker = start_worker()
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline and seen < len(scenario["decisions"]) // 3:
        seen = len(collect(settings, 0, timeout=2)["decisions"])
    assert 0 < seen < len(scenario["decisions"]), "kill the worker mid-stream"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    start_worker()
    return collect(settings, scenario["decisions"])


def test_a_worker_killed_mid_stream_loses_no_action(
    settings: Settings, scenario: dict[str, Any], start_worker: Any
) -> None:
    got = crash_and_restart(settings, scenario, start_worker)
    assert_same_decisions(got, scenario)
    ids = [a["action_id"] for a in got["offers"] + got["alerts"]]
    assert set(ids) == scenario["actions"]  # every action, and any duplicate is the same id


def test_a_worker_that_lost_its_disk_restores_state_from_the_changelog(
    settings: Settings, scenario: dict[str, Any], start_worker: Any
) -> None:
    events: list[bytes] = scenario["events"]
    half = len(events) // 2
    produce(settings, events[:half])
    first = start_worker()
    first_half = set(_ids(events[:half]))
    want = {k for k in scenario["decisions"] if k[0] in first_half}
    # The second half alone decides differently: the test needs the restored state.
    fresh = {k for k in _replay_decisions(events[half:]) if k[0] not in first_half}
    assert fresh != {k for k in scenario["decisions"] if k[0] not in first_half}
    collect(settings, want)
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    shutil.rmtree(settings.state_dir)
    produce(settings, events[half:])
    start_worker()
    got = collect(settings, scenario["decisions"])
    assert_same_decisions(got, scenario)


def test_two_workers_share_the_partitions_and_one_takes_over_from_the_other(
    settings: Settings, scenario: dict[str, Any], start_worker: Any
) -> None:
    events: list[bytes] = scenario["events"]
    half = len(events) // 2
    produce(settings, events[:half])
    first, _second = start_worker(), start_worker(settings.state_dir.with_name("state-2"))
    first_half = set(_ids(events[:half]))
    collect(settings, {k for k in scenario["decisions"] if k[0] in first_half})
    first.send_signal(signal.SIGTERM)  # the other takes over its partitions and their state
    first.wait(timeout=30)
    produce(settings, events[half:], in_order=True)  # a worker is running
    got = collect(settings, scenario["decisions"])
    assert_same_decisions(got, scenario)
    assert {a["action_id"] for a in got["offers"] + got["alerts"]} == scenario["actions"]


def test_broker_down_at_start_and_mid_run_the_worker_waits_and_resumes(
    settings: Settings,
    scenario: dict[str, Any],
    start_worker: Any,
    kafka_broker: Any,
    tmp_path: Path,
) -> None:
    if kafka_broker is None:
        pytest.skip("needs the session's own broker (KAFKA_BOOTSTRAP points elsewhere)")
    events: list[bytes] = scenario["events"]
    half = len(events) // 2
    produce(settings, events[:half])
    kafka_broker.stop()
    try:
        worker = start_worker()
        log = tmp_path / "worker-0.log"
        deadline = time.monotonic() + 30
        while "cannot reach Kafka" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "cannot reach Kafka" in log.read_text() and worker.poll() is None
    finally:
        kafka_broker.start(kafka_broker.data_dir, kafka_broker.log_dir)
    first_half = set(_ids(events[:half]))
    collect(settings, {k for k in scenario["decisions"] if k[0] in first_half})
    kafka_broker.stop()  # mid-run
    time.sleep(3)
    kafka_broker.start(kafka_broker.data_dir, kafka_broker.log_dir)
    produce(settings, events[half:], in_order=True)  # a worker is running
    got = collect(settings, scenario["decisions"])
    assert worker.poll() is None, "the worker kept running through the outage"
    assert_same_decisions(got, scenario)


def test_exactly_once_a_read_committed_consumer_sees_each_action_once_after_a_crash(
    settings: Settings, scenario: dict[str, Any], start_worker: Any
) -> None:
    settings.processing_guarantee = "exactly_once"
    got = crash_and_restart(settings, scenario, start_worker)
    keys = [_decision_key(d) for d in got["decisions"]]
    assert set(keys) == scenario["decisions"]
    assert len(keys) == len(set(keys)), "a decision was seen twice"
    ids = [a["action_id"] for a in got["offers"] + got["alerts"]]
    assert sorted(ids) == sorted(scenario["actions"]), "each action exactly once"
