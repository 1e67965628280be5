"""What Kafka may refuse of the worker's outputs, and what the worker does about it.

`SizeLimits` knows the largest record batch each output topic takes (its `max.message.bytes`,
read from Kafka); an output over it is replaced by an `OutputTooLarge` dead letter that says
where its input is. `retriable` tells a failure that may pass (a topic or leader missing, the
broker away) from one that will not. Used by `streams.agent.Worker`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from aiokafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)
from confluent_kafka import KafkaException

from streams.settings import Settings
from streams.topics import admin_client

DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
"""Kafka's default `message.max.bytes`: a topic's limit when it cannot be read."""
MAX_REQUEST_SIZE = 1_000_000
"""The producer's `max_request_size` (Faust's default): no record can be larger."""
MAX_BATCH_SIZE = 16_384
"""The producer's batch size (Faust's default): a record batch of several records is at
most this big. Batches for a topic with a smaller limit are kept under it (`Worker._send`)."""
RECORD_HEADROOM = 100
"""Bytes a record batch of one record adds to its key and value, at most (aiokafka's own
estimate adds 85 to 95): outputs within it of their limit are measured exactly."""
BATCH_HEADER = 61
"""Bytes of a record batch's header."""
RECORD_FRAMING = 32
"""Bytes a record adds to its key and value in a record batch, at most."""


class SizeLimits:
    """The largest record batch each topic the worker writes accepts: its `max.message.bytes`
    (read from Kafka at start, and again when Kafka refuses a record as too large or a
    missing topic is back), at most the producer's `max_request_size`.

    The hot path only compares `len(key) + len(value)` with `fits[topic]`; an output over
    it is measured exactly (`too_large`). Topics not read have Kafka's default limit.
    `small` holds the topics whose limit is below the producer's batch size.
    """

    def __init__(self, topics: Iterable[str], max_request_size: int = MAX_REQUEST_SIZE) -> None:
        self.max_request_size = max_request_size
        self.limit: dict[str, int] = {}
        self.fits: dict[str, int] = {}
        self.small: dict[str, int] = {}
        self.set(dict.fromkeys(topics, DEFAULT_MAX_MESSAGE_BYTES))

    @classmethod
    def of_settings(cls, settings: Settings) -> SizeLimits:
        """Kafka's default limit for every topic the worker writes (outputs, changelog)."""
        return cls([*settings.topics.outputs(), settings.changelog_topic()])

    def set(self, limits: Mapping[str, int]) -> None:
        for topic, limit in limits.items():
            self.limit[topic] = min(limit, self.max_request_size)
            self.fits[topic] = self.limit[topic] - RECORD_HEADROOM
        self.small = {t: limit for t, limit in self.limit.items() if limit < MAX_BATCH_SIZE}

    def of(self, topic: str) -> int:
        return self.limit.get(topic, min(DEFAULT_MAX_MESSAGE_BYTES, self.max_request_size))

    def too_large(self, topic: str, key: bytes | None, value: bytes | None) -> tuple[int, int]:
        """(size, limit) of the record: its record batch's size in bytes, as aiokafka
        estimates it (never less than Kafka counts), and its topic's limit."""
        size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
        return size, self.of(topic)

    def read(self, settings: Settings, timeout: float = 15.0) -> list[str]:
        """Read `max.message.bytes` of the topics from Kafka (blocking: not on the event
        loop). Returns the problems met; a topic not read keeps the limit it had."""
        from confluent_kafka.admin import (  # type: ignore[attr-defined]
            ConfigResource,
            ResourceType,
        )

        problems: list[str] = []
        resources = [ConfigResource(ResourceType.TOPIC, t) for t in self.limit]
        admin = admin_client(settings)  # kept until the answers are in (or they never come)
        try:
            futures = admin.describe_configs(resources, request_timeout=timeout)
        except KafkaException as exc:
            return [f"cannot read the topics' max.message.bytes: {exc.args[0]}"]
        read: dict[str, int] = {}
        for resource, future in futures.items():
            try:
                entry = future.result(timeout=timeout).get("max.message.bytes")
                if entry is not None and entry.value is not None:
                    read[resource.name] = int(entry.value)
            except (KafkaException, ValueError, TimeoutError) as exc:
                problems.append(f"cannot read max.message.bytes of {resource.name}: {exc}")
        self.set(read)
        return problems


class OutputTooLarge(msgspec.Struct, kw_only=True):
    """The dead letter that replaces an output over its topic's size limit: which output,
    how big, and where its input is (`origin`, `topic`/`partition`/`offset`; the input is
    still in Kafka, so nothing is lost). The first fields are those of every dead letter."""

    reason: str = "output_too_large"
    error: str
    origin: str | None
    customer_id: str | None
    raw: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    output: str  # action, decision or dead_letter
    output_topic: str
    size: int
    limit: int
    event_id: str | None = None
    pack: str | None = None
    rule_id: str | None = None
    action_id: str | None = None
    dead_letter_reason: str | None = None  # what the dead letter replaced said


class OutputIds(msgspec.Struct):
    """What an oversize output says about itself (actions, decisions and dead letters)."""

    event_id: str | None = None
    customer_id: str | None = None
    pack: str | None = None
    rule_id: str | None = None
    action_id: str | None = None
    reason: str | None = None
    origin: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


class EventId(msgspec.Struct):
    event_id: Any = None


ids_decoder = msgspec.json.Decoder(OutputIds)
event_id_decoder = msgspec.json.Decoder(EventId)

TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
"""What Kafka (or aiokafka, before sending) says of a record, or of the batch it went in,
over the size limit."""


def retriable(error: BaseException) -> bool:
    """An error that may pass: a topic or leader missing, the broker away, a timeout."""
    return isinstance(error, KafkaError) and (
        error.retriable or isinstance(error, KafkaTimeoutError)
    )


class DeliveryError(RuntimeError):
    """Kafka did not take a batch's records and the worker cannot go on past the batch."""


class _Throttle(logging.Filter):
    """Lets a message through once per `every` seconds. aiokafka logs 'Topic X not found
    in cluster metadata' at each metadata refresh, thousands of times a second while a
    batch waits for a deleted topic; the worker says what is wrong itself."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self.last: dict[tuple[str, Any], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or "not found in cluster metadata" not in record.msg:
            return True
        key = (record.msg, record.args)
        now = time.monotonic()
        if now - self.last.get(key, -math.inf) < self.every:
            return False
        self.last[key] = now
        return True


def quiet_aiokafka() -> None:
    cluster = logging.getLogger("aiokafka.cluster")
    if not any(isinstance(f, _Throttle) for f in cluster.filters):
        cluster.addFilter(_Throttle())
