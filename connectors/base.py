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

from collections.abc import Sequence
from typing import Protocol


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
