"""The local broker is a real Kafka: keyed partitioning, transactions, restart durability."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Producer

from scripts.kafka_local import Broker

from .conftest import NewTopics, consume


def test_same_key_same_partition(kafka_bootstrap: str, new_topics: NewTopics) -> None:
    (topic,) = new_topics(n_partitions=4)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    keys = [f"customer-{i}" for i in range(12)]
    sent = [(key, f"{key}:{seq}") for seq in range(5) for key in keys]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    got = consume(kafka_bootstrap, topic, len(sent))
    assert len(got) == len(sent)
    partitions: dict[str, set[int]] = defaultdict(set)
    values: dict[str, list[str]] = defaultdict(list)
    for msg in got:
        key = (msg.key() or b"").decode()
        partitions[key].add(msg.partition() or 0)
        values[key].append((msg.value() or b"").decode())
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert len({p for ps in partitions.values() for p in ps}) > 1  # keys really spread out
    assert values == {key: [f"{key}:{seq}" for seq in range(5)] for key in keys}  # in order


def test_read_committed_skips_aborted_batch(kafka_bootstrap: str, new_topics: NewTopics) -> None:
    (topic,) = new_topics(n_partitions=4)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"it-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    batches = {"committed": True, "aborted": False, "end": True}
    for name, commit in batches.items():
        producer.begin_transaction()
        for i in range(3):  # one partition, so offset order spans all three batches
            producer.produce(topic, key=b"k", value=f"{name}-{i}".encode(), partition=0)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)  # the aborted records really reach the log
            producer.abort_transaction(30)

    committed = consume(kafka_bootstrap, topic, 6, **{"isolation.level": "read_committed"})
    assert [m.value() for m in committed] == [
        f"{name}-{i}".encode() for name in ("committed", "end") for i in range(3)
    ]
    # control: the aborted batch is in the log, only hidden from read_committed readers
    everything = consume(kafka_bootstrap, topic, 9, **{"isolation.level": "read_uncommitted"})
    assert sum((m.value() or b"").startswith(b"aborted") for m in everything) == 3


def test_data_survives_restart_on_same_ports(
    kafka_broker: Broker | None, kafka_bootstrap: str, new_topics: NewTopics
) -> None:
    if kafka_broker is None:
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker; cannot restart it")
    (topic,) = new_topics(n_partitions=4)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    producer.produce(topic, key=b"before", value=b"written before the restart")
    assert producer.flush(30) == 0
    old_pid = kafka_broker.pid

    assert kafka_broker.restart() == kafka_bootstrap
    assert kafka_broker.pid != old_pid

    producer.produce(topic, key=b"after", value=b"same producer, after the restart")
    assert producer.flush(30) == 0
    got = {m.key(): m.value() for m in consume(kafka_bootstrap, topic, 2)}
    assert got == {
        b"before": b"written before the restart",
        b"after": b"same producer, after the restart",
    }
