"""The Kafka sink on the real broker: idempotent delivery keyed by customer, a record the
topic refuses as too large goes to the dead-letter sink alone, a missing topic is reported."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from connectors.base import ListSink, SinkError
from connectors.kafka import KafkaSink

from .conftest import consume


def test_records_arrive_keyed_by_customer_and_an_oversized_one_is_dead_lettered(
    kafka_bootstrap: str, new_topics: Any
) -> None:
    (topic,) = new_topics(n_partitions=3, config={"max.message.bytes": "4096"})
    records = [
        json.dumps({"action_id": f"a{n}", "customer_id": f"c{n % 5}", "n": n}).encode()
        for n in range(200)
    ]
    big = json.dumps({"action_id": "big", "customer_id": "c1", "pad": "x" * 10_000}).encode()
    records.insert(100, big)
    dead = ListSink()
    sink = KafkaSink(topic, kafka_bootstrap, dead_letter=dead, compression="none")
    sink.open()
    sink.write_batch(records)
    sink.flush()
    sink.close()
    got = consume(kafka_bootstrap, topic, 200, linger_s=1.0)
    assert sorted(m.value() for m in got) == sorted(r for r in records if r != big)
    for m in got:  # keyed by customer: one customer, one partition
        assert m.key() == json.loads(m.value())["customer_id"].encode()
    partitions: dict[bytes, set[int]] = {}
    for m in got:
        partitions.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())
    [letter] = [json.loads(r) for r in dead.records]
    assert letter["record"]["action_id"] == "big"
    assert letter["reason"] == "refused by Kafka: MSG_SIZE_TOO_LARGE"
    assert sink.dead_lettered == 1


def test_a_missing_topic_is_reported_by_open(kafka_bootstrap: str) -> None:
    sink = KafkaSink(f"missing-{uuid.uuid4().hex[:8]}", kafka_bootstrap)
    with pytest.raises(SinkError, match="does not exist"):
        sink.open(timeout_s=5)
