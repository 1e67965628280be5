"""Kafka connection security and the Kafka sink (confluent-kafka).

`KafkaSink` produces each record to one topic with an idempotent producer (`acks=all`,
`enable.idempotence`), keyed by the record's `customer_id`, so a consumer of that topic sees
a customer's actions in order. `flush()` returns when the broker has every record, or raises
`SinkError` naming what failed; a record the broker refuses for its size goes to the
dead-letter sink instead (it would be refused again on every retry).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self

from confluent_kafka import KafkaError, KafkaException, Producer
from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from connectors.base import Sink, SinkError, dead_letter
from connectors.secrets import secret_from_file

log = logging.getLogger(__name__)

# the broker's "message too large" and the client's own check before sending
_TOO_LARGE = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)


class KafkaSecurity(BaseModel):
    """Connection security, passed to every Kafka client (worker, admin, producers).

    The SASL password comes from the environment (`CRM_KAFKA__SASL_PASSWORD`) or from
    `sasl_password_file` (a mounted secret); it is a `SecretStr`, never printed or logged.
    """

    model_config = ConfigDict(extra="forbid")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _password_from_file(self) -> Self:
        if self.sasl_password_file is None:
            return self
        if self.sasl_password is not None:
            raise ValueError("set one of sasl_password and sasl_password_file, not both")
        self.sasl_password = secret_from_file(self.sasl_password_file, "sasl_password_file")
        return self

    def librdkafka(self) -> dict[str, Any]:
        """This security as confluent-kafka (librdkafka) configuration."""
        conf: dict[str, Any] = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, path in (
            ("ssl.ca.location", self.ssl_cafile),
            ("ssl.certificate.location", self.ssl_certfile),
            ("ssl.key.location", self.ssl_keyfile),
        ):
            if path is not None:
                conf[key] = str(path)
        return conf


class KafkaSink:
    """Records to `topic`, keyed by customer id, idempotent and `acks=all`."""

    def __init__(
        self,
        topic: str,
        brokers: str,
        *,
        security: KafkaSecurity | None = None,
        compression: str = "lz4",
        delivery_timeout_s: float = 120.0,
        dead_letter: Sink | None = None,
        name: str = "kafka",
    ) -> None:
        self.topic = topic
        self.name = name
        self._dead_letter = dead_letter
        conf: dict[str, Any] = {
            "bootstrap.servers": brokers,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": compression,
            "linger.ms": 5,
            "delivery.timeout.ms": int(delivery_timeout_s * 1000),
            "partitioner": "murmur2_random",
            **(security or KafkaSecurity()).librdkafka(),
        }
        self._producer = Producer(conf)
        self._failed: list[tuple[bytes, KafkaError]] = []
        self.dead_lettered = 0

    def open(self, timeout_s: float = 10.0) -> None:
        """Raises `SinkError` unless the topic exists and has a leader for every partition."""
        try:
            meta = self._producer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as exc:
            raise SinkError(f"kafka: cannot reach the brokers: {exc.args[0]}") from None
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise SinkError(f"kafka: topic {self.topic} does not exist")

    def write_batch(self, records: Sequence[bytes]) -> None:
        for record in records:
            self._produce(record)

    def _produce(self, record: bytes) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic, record, _customer_key(record), on_delivery=self._on_delivery
                )
                return
            except BufferError:  # the producer's queue is full: let it drain
                self._producer.poll(0.1)
            except KafkaException as exc:
                self._failed.append((record, exc.args[0]))
                return

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed.append((msg.value(), err))

    def flush(self) -> None:
        self._drain()
        failed, self._failed = self._failed, []
        fatal = [err for _, err in failed if err.code() not in _TOO_LARGE]
        if fatal:
            raise SinkError(f"kafka: {self.topic}: {len(fatal)} records failed: {fatal[0].str()}")
        letters = []
        for record, _ in failed:  # refused as too large: alone, in case its batch was
            self._produce(record)
            self._drain()
            again, self._failed = self._failed, []
            if not again:
                continue
            err = again[0][1]
            if err.code() not in _TOO_LARGE or self._dead_letter is None:
                raise SinkError(f"kafka: {self.topic}: a record failed: {err.str()}")
            reason = f"refused by Kafka: {err.name()}"
            letters.append(
                dead_letter(self.name, reason, 1, record, sink="kafka", topic=self.topic)
            )
            self.dead_lettered += 1
        if letters:
            assert self._dead_letter is not None
            self._dead_letter.write_batch(letters)
            self._dead_letter.flush()

    def _drain(self) -> None:
        """Waits until librdkafka has an answer for every record (it gives up on a record
        after `delivery_timeout_s`)."""
        while self._producer.flush(1.0) > 0:
            pass

    def close(self) -> None:
        if self._producer is None:
            return
        self.flush()
        self._producer = None  # type: ignore[assignment]  # freed now, not at exit


def _customer_key(record: bytes) -> bytes | None:
    try:
        cid = json.loads(record).get("customer_id")
    except (ValueError, AttributeError):
        return None
    return cid.encode() if isinstance(cid, str) else None
