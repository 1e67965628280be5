"""`crm-triggers simulate --brokers`: the events reach their topics, keyed and co-partitioned."""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from streams.cli import main
from streams.produce import produce
from streams.settings import Settings, Topics
from streams.simulate import simulate
from streams.topics import create_topics


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    topics = Topics(**{name: f"{prefix}.{name}" for name in Topics.model_fields})
    s = Settings(brokers=kafka_bootstrap, app_id=prefix, topics=topics, partitions=4)
    create_topics(s)
    return s


def read_inputs(s: Settings, expect: int) -> list[tuple[str, int, bytes, dict[str, object]]]:
    """Every record of the input topics: (topic, partition, key, event)."""
    consumer = Consumer(
        {
            "bootstrap.servers": s.brokers,
            "group.id": f"check-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(list(s.topics.inputs()))
    out: list[tuple[str, int, bytes, dict[str, object]]] = []
    idle = 0
    try:
        while len(out) < expect and idle < 20:
            msg = consumer.poll(0.5)
            if msg is None:
                idle += 1
                continue
            assert msg.error() is None, msg.error()
            idle = 0
            out.append((msg.topic(), msg.partition(), msg.key(), json.loads(msg.value())))
    finally:
        consumer.close()
    return out


def test_every_event_reaches_its_type_topic_keyed_by_customer_and_co_partitioned(
    settings: Settings,
) -> None:
    events = list(simulate(60, 3, 7))
    stats = produce(events, settings)
    assert stats.events == len(events) and stats.undelivered == 0
    got = read_inputs(settings, len(events))
    assert sorted(e["event_id"] for *_, e in got) == sorted(e["event_id"] for e in events)
    kinds = settings.topics.inputs()
    assert all(kinds[topic] == event["type"] for topic, _, _, event in got)
    assert all(key == str(event["customer_id"]).encode() for _, _, key, event in got)
    partitions: dict[object, set[int]] = defaultdict(set)
    for _, partition, _, event in got:
        partitions[event["customer_id"]].add(partition)
    assert all(len(p) == 1 for p in partitions.values())  # one partition number per customer
    assert stats.by_topic == dict(Counter(topic for topic, *_ in got))


def test_simulate_to_kafka_from_the_command_line_writes_the_same_events_to_a_file_too(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    out, labels = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    argv = ["simulate", "--customers", "40", "--days", "2", "--seed", "3"]
    assert (
        main([*argv, "--brokers", settings.brokers, "--out", str(out), "--labels", str(labels)])
        == 0
    )
    lines = out.read_text().splitlines()
    assert f"sent {len(lines):,} events" in capsys.readouterr().err
    got = read_inputs(settings, len(lines))
    assert sorted(e["event_id"] for *_, e in got) == sorted(
        json.loads(x)["event_id"] for x in lines
    )


def test_rate_needs_brokers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--customers", "5", "--days", "1", "--rate", "100"]) == 2
    assert "--rate needs --brokers" in capsys.readouterr().err
