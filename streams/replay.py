"""Replay: a file (or any iterable) of events through the engine, in order, on event time."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from connectors.base import NullSink, Sink
from streams.engine import BatchOutput, Engine, Record

DEFAULT_BATCH = 2000
DEFAULT_CHECKPOINT = 100_000


@dataclass
class Outputs:
    """Where replay writes: one sink each for actions, decisions and dead letters."""

    actions: Sink = field(default_factory=NullSink)
    decisions: Sink = field(default_factory=NullSink)
    dead_letters: Sink = field(default_factory=NullSink)

    def write(self, out: BatchOutput) -> None:
        self.actions.write_batch(out.actions)
        self.decisions.write_batch(out.decisions)
        self.dead_letters.write_batch(out.dead_letters)

    def close(self) -> None:
        for sink in (self.actions, self.decisions, self.dead_letters):
            sink.close()


@dataclass
class ReplaySummary:
    events: int = 0
    processed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    actions: int = 0
    decisions: int = 0
    shadow: int = 0  # decisions of rules in shadow mode (counted in `decisions` too)
    seconds: float = 0.0

    def add(self, out: BatchOutput) -> None:
        self.events += out.events
        self.processed += out.processed
        self.duplicates += out.duplicates
        self.dead_letters += len(out.dead_letters)
        self.actions += len(out.actions)
        self.decisions += len(out.decisions)
        self.shadow += out.shadow

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        shadow = f" ({self.shadow:,} shadow)" if self.shadow else ""
        return (
            f"{self.events:,} events ({self.processed:,} processed, {self.duplicates:,} "
            f"duplicates, {self.dead_letters:,} dead letters) -> {self.actions:,} actions, "
            f"{self.decisions:,} decisions{shadow} in {self.seconds:.1f}s "
            f"({self.rate:,.0f} events/s)"
        )


def file_records(stream: IO[bytes], name: str) -> Iterator[Record]:
    """Non-blank lines of a JSON Lines stream as records whose origin is `name:line`."""
    for number, line in enumerate(stream, 1):
        line = line.strip()
        if line:
            yield Record(line, f"{name}:{number}")


def batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def replay(
    engine: Engine,
    records: Iterable[Record],
    outputs: Outputs,
    *,
    batch_size: int = DEFAULT_BATCH,
    checkpoint_every: int = DEFAULT_CHECKPOINT,
    on_batch: Callable[[ReplaySummary, BatchOutput], None] | None = None,
) -> ReplaySummary:
    """Run every record through the engine in order; write outputs batch by batch.

    Customer states are written to the store every `checkpoint_every` events and at the end.
    """
    summary = ReplaySummary()
    started = time.perf_counter()
    since_checkpoint = 0
    for batch in batches(records, batch_size):
        since_checkpoint += len(batch)
        checkpoint = since_checkpoint >= checkpoint_every
        if checkpoint:
            since_checkpoint = 0
        out = engine.process(batch, flush=checkpoint)
        outputs.write(out)
        summary.add(out)
        summary.seconds = time.perf_counter() - started
        if on_batch is not None:
            on_batch(summary, out)
    engine.states.flush()
    for sink in (outputs.actions, outputs.decisions, outputs.dead_letters):
        sink.flush()
    summary.seconds = time.perf_counter() - started
    return summary


class Progress:
    """Prints a progress line to stderr at most every `interval` seconds."""

    def __init__(self, label: str, interval: float = 2.0, stream: IO[str] | None = None) -> None:
        self.label, self.interval = label, interval
        self.stream = stream if stream is not None else sys.stderr
        self._next = time.monotonic() + interval

    def __call__(self, summary: ReplaySummary, out: BatchOutput) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            print(f"{self.label}: {summary.line()}", file=self.stream, flush=True)
