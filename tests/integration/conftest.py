"""Fixtures for tests that need a real Apache Kafka broker.

Set ``KAFKA_BOOTSTRAP`` to use a running broker (e.g. ``eval "$(scripts/kafka-local env)"``);
otherwise one broker is started for the whole session from the jars fetched by
``scripts/kafka_local.py`` and stopped at the end. Every test in this folder gets the
``kafka`` marker, so ``pytest -m "not kafka"`` skips them.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from scripts.kafka_local import Broker

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker | None]:
    """The session's own Broker (restartable), or None when KAFKA_BOOTSTRAP is external."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield None
        return
    base = tmp_path_factory.mktemp("kafka")
    broker = Broker()
    try:
        broker.start(base / "data", base / "logs")
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: Broker | None) -> str:
    if kafka_broker is None:
        return os.environ["KAFKA_BOOTSTRAP"]
    return kafka_broker.bootstrap


NewTopics = Callable[..., list[str]]


@pytest.fixture
def new_topics(kafka_bootstrap: str) -> Iterator[NewTopics]:
    """Factory: ``new_topics(n_partitions=4, count=1)`` -> fresh topic names, deleted after."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(
        n_partitions: int = 4, count: int = 1, config: dict[str, str] | None = None
    ) -> list[str]:
        names = [f"it-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        specs = [NewTopic(n, n_partitions, 1, config=config or {}) for n in names]
        for future in admin.create_topics(specs, operation_timeout=30).values():
            future.result(timeout=30)
        created.extend(names)
        for name in names:  # wait until the broker's metadata shows every partition led
            for _ in range(100):
                topic = admin.list_topics(name, timeout=10).topics[name]
                parts = topic.partitions.values()
                led = all(p.leader >= 0 for p in parts)
                if topic.error is None and len(parts) == n_partitions and led:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"topic {name} has no leaders after creation")
        return names

    yield make
    if created:
        for future in admin.delete_topics(created, operation_timeout=15).values():
            with contextlib.suppress(KafkaException):  # broker may be down after a failed test
                future.result(timeout=20)


def consume(
    bootstrap: str, topic: str, want: int, *, linger_s: float = 0.0, **conf: str
) -> list[Message]:
    """Read ``want`` messages from the start of ``topic`` with a fresh consumer group (for at
    most ~30 s), then ``linger_s`` more seconds of anything beyond them (duplicates)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"it-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **conf,
        }
    )
    consumer.subscribe([topic])
    got: list[Message] = []
    try:
        for _ in range(300):  # at most ~30 s
            for msg in consumer.consume(num_messages=max(want, 1), timeout=0.1):
                assert msg.error() is None, msg.error()
                got.append(msg)
            if len(got) >= want:
                break
        until = time.monotonic() + linger_s
        while time.monotonic() < until:
            got.extend(m for m in consumer.consume(num_messages=100, timeout=0.1) if not m.error())
    finally:
        consumer.close()
    return got
