"""Produce events to the worker's input topics: each to its type's topic, keyed by customer id.

Used by `crm-triggers simulate --brokers ...` (and the benchmarks) to feed a worker. The
producer is confluent-kafka (librdkafka: batching in C, idempotent, `acks=all`) with the
murmur2 partitioner Java clients and Faust use, so a customer's events share a partition
number on the three co-partitioned topics. Either as fast as possible or at a fixed rate
(events per second, paced against the clock so short stalls are caught up).

Each record's Kafka timestamp is the time it was produced: latency measurements compare it
with the arrival of the resulting action.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from streams.settings import Settings

_encode = msgspec.json.Encoder().encode


@dataclass
class Produced:
    """What a `produce` call sent."""

    events: int = 0
    by_topic: dict[str, int] | None = None
    seconds: float = 0.0
    undelivered: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def producer_config(settings: Settings) -> dict[str, Any]:
    """confluent-kafka settings for feeding the worker's input topics."""
    return {
        "bootstrap.servers": settings.brokers,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "compression.type": "lz4",
        **settings.kafka.librdkafka(),
    }


def produce(
    events: Iterable[dict[str, Any]],
    settings: Settings,
    *,
    rate: float | None = None,
    progress: Callable[[Produced], None] | None = None,
    progress_every: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> Produced:
    """Send every event to its type's topic; wait until Kafka has them all.

    `rate` in events per second (None: as fast as possible). `progress` is called about
    every `progress_every` seconds and at the end. Raises ValueError for an event whose
    type has no topic.
    """
    from confluent_kafka import Producer

    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    topic_for = {kind: topic for topic, kind in settings.topics.inputs().items()}
    producer = Producer(producer_config(settings))
    failed = 0

    def delivered(err: Any, _msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    stats = Produced(by_topic=dict.fromkeys(topic_for.values(), 0))
    counts = stats.by_topic
    assert counts is not None
    start = last_report = clock()
    for event in events:
        kind = event.get("type")
        topic = topic_for.get(kind) if isinstance(kind, str) else None
        if topic is None:
            raise ValueError(f"event {event.get('event_id')!r}: no input topic for type {kind!r}")
        if rate is not None:
            due = start + stats.events / rate
            ahead = due - clock()
            if ahead > 0:
                producer.poll(0)
                time.sleep(ahead)
        value = _encode(event)
        key = str(event.get("customer_id", "")).encode()
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.1)
        stats.events += 1
        counts[topic] += 1
        if stats.events % 1000 == 0:
            producer.poll(0)
            now = clock()
            if progress is not None and now - last_report >= progress_every:
                stats.seconds = now - start
                progress(stats)
                last_report = now
    stats.undelivered = producer.flush(60) + failed
    stats.seconds = clock() - start
    if progress is not None:
        progress(stats)
    return stats
