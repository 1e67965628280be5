"""Sinks from their configs (connectors/config.py)."""

from __future__ import annotations

from pathlib import Path

from connectors.base import Sink
from connectors.config import (
    Connector,
    FileConnector,
    KafkaConnector,
    StdoutConnector,
    WebhookConnector,
)
from connectors.files import JsonLinesSink, RotatingJsonLinesSink
from connectors.kafka import KafkaSecurity, KafkaSink
from connectors.webhook import WebhookSink


def build_sink(
    name: str,
    config: Connector,
    *,
    brokers: str,
    security: KafkaSecurity,
    dead_letter: Sink | None = None,
) -> Sink:
    """The sink for `config`. `brokers` and `security` are the defaults for Kafka sinks that
    name none; `dead_letter` receives what the sink cannot deliver (webhook, kafka)."""
    if isinstance(config, StdoutConnector):
        return JsonLinesSink("-")
    if isinstance(config, FileConnector):
        return RotatingJsonLinesSink(
            Path(config.path),
            rotate_bytes=config.rotate_bytes,
            rotate_every_s=config.rotate_every_s,
            keep=config.keep,
            fsync=config.fsync,
        )
    if isinstance(config, KafkaConnector):
        return KafkaSink(
            config.topic,
            config.brokers or brokers,
            # another cluster never gets the worker's credentials
            security=config.kafka or (security if config.brokers is None else KafkaSecurity()),
            compression=config.compression,
            delivery_timeout_s=config.delivery_timeout_s,
            dead_letter=dead_letter,
            name=name,
        )
    if isinstance(config, WebhookConnector):
        if dead_letter is None:
            raise ValueError(f"connector {name}: a webhook needs a dead-letter sink")
        return WebhookSink(config, dead_letter, name=name)
    raise TypeError(f"unknown connector config {type(config).__name__}")
