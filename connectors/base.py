"""The sink protocol every output connector implements.

A sink receives records already encoded as one JSON document each (bytes, no newline),
in batches. `write_batch()` may return before the records are delivered; `flush()` returns
only when everything written so far is delivered (or, for sinks that have one, handed to
their dead-letter sink), and raises `SinkError` when it cannot; `close()` flushes and
releases the target. A connector that must reach something first also has
`open()`, which raises `SinkError` while the target is not ready (callers retry with
backoff: see `connectors.dispatch.open_with_backoff`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any, Protocol

MAX_LETTER_RECORD = 256 * 1024
"""A dead letter keeps the record it is about up to this size; a larger one keeps its ids
and size only (the record is still in its Kafka topic), so a letter always fits Kafka."""
_IDS = ("action_id", "kind", "customer_id", "event_id", "pack", "pack_version", "rule_id")


class SinkError(Exception):
    """A sink could not deliver: the caller keeps the records and tries again later."""


class Sink(Protocol):
    def write_batch(self, records: Sequence[bytes]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class ListSink:
    """Keeps records in a list: the in-memory sink for tests and embedding."""

    def __init__(self) -> None:
        self.records: list[bytes] = []

    def write_batch(self, records: Sequence[bytes]) -> None:
        self.records.extend(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullSink:
    """Discards records (an output nobody asked for)."""

    def write_batch(self, records: Sequence[bytes]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class SharedSink:
    """One sink written by several threads (the connectors' dead letters): each batch is
    written and flushed under a lock, so it is delivered when `write_batch` returns (dead
    letters are rare). `close()` does nothing: whoever made the inner sink closes it."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def write_batch(self, records: Sequence[bytes]) -> None:
        if records:
            with self._lock:
                self.inner.write_batch(records)
                self.inner.flush()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def dead_letter(connector: str, reason: str, attempts: int, record: bytes, **where: Any) -> bytes:
    """A connector's dead letter as one JSON document: the connector, where it was sending
    (`where`: sink, url, topic, ...), the reason, the attempts made, and the record (as JSON
    if it is JSON, else as text; over MAX_LETTER_RECORD bytes only its ids and size)."""
    letter: dict[str, Any] = {"connector": connector, **where, "reason": reason}
    letter["attempts"] = attempts
    try:
        parsed: Any = json.loads(record)
    except (ValueError, RecursionError):
        parsed = None
    if len(record) > MAX_LETTER_RECORD:
        ids = parsed if isinstance(parsed, dict) else {}
        letter["record_ids"] = {k: ids[k] for k in _IDS if k in ids}
        letter["record_bytes"] = len(record)
    elif parsed is not None:
        letter["record"] = parsed
    else:
        letter["record_text"] = record.decode("utf-8", errors="replace")
    return json.dumps(letter, separators=(",", ":"), ensure_ascii=False).encode()
