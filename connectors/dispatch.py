"""One connector's share of the action stream: route, hold for quiet hours, deliver.

This is the broker-free core of delivery. A caller (the Kafka deliverer in
`streams/deliver.py`, or a test) feeds it batches of action records as they were written to
the output topics, and then, once `send()` has returned, marks the batch done (commits its
offsets). `take()` keeps the actions routed to this connector: those with a `not_before` in
the future go into the hold store (durably, before `take()` returns), the others are to be
sent now. `send()` blocks until the sink has delivered them or dead-lettered them, and
raises `SinkError` when it could do neither (the caller then sends the batch again).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.base import Sink, SinkError, dead_letter
from connectors.config import DeliveryConfig
from connectors.hold import HoldStore

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What one batch of input records means for one connector."""

    send: list[bytes] = field(default_factory=list)  # due now
    letters: list[bytes] = field(default_factory=list)  # unreadable: to the dead-letter sink
    held: int = 0  # kept in the hold store for later
    unrouted: int = 0  # routed nowhere
    hold_keys: list[bytes] = field(default_factory=list)  # held actions now due, in `send`

    def __len__(self) -> int:
        return len(self.send) + len(self.letters)


@dataclass
class Stats:
    delivered: int = 0
    dead_lettered: int = 0
    held: int = 0
    released: int = 0
    unrouted: int = 0
    failures: int = 0  # batches the sink could not take (SinkError), sent again
    buffered: int = 0  # actions handed to the sink and not yet confirmed


class ConnectorDispatch:
    def __init__(
        self,
        name: str,
        config: DeliveryConfig,
        sink: Sink,
        dead_letter: Sink,
        hold: HoldStore | None,
        *,
        primary: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.primary = primary  # the one connector that reports unreadable and unrouted ones
        self.config = config
        self.sink = sink
        self.dead_letter = dead_letter
        self.hold = hold
        self.clock = clock
        self.stats = Stats()

    def take(
        self, records: Sequence[bytes], positions: Sequence[tuple[int, int]] | None = None
    ) -> Batch:
        """`positions`: each record's (partition, offset) in its topic; held actions due at
        the same time are released in that order (a customer's are in one partition)."""
        batch = Batch()
        now = self.clock()
        to_hold: list[tuple[float, str, bytes]] = []
        for n, record in enumerate(records):
            try:
                action = json.loads(record)
                if not isinstance(action, dict):
                    raise ValueError("not a JSON object")
                targets = self.config.targets(action)
                due = _not_before(action)
            except (ValueError, TypeError, RecursionError) as exc:
                if self.primary:
                    reason = f"unreadable action: {exc}"
                    batch.letters.append(dead_letter(self.name, reason, 0, record))
                continue
            if not targets and self.primary:
                batch.unrouted += 1
            if self.name not in targets:
                continue
            if due is not None and due > now and self.hold is not None:
                if positions is not None:
                    partition, offset = positions[n]
                    order = f"{partition:05d}.{offset:020d}"
                else:
                    order = str(action.get("action_id", ""))
                to_hold.append((due, order, record))
            else:
                batch.send.append(record)
        if to_hold:
            assert self.hold is not None
            batch.held = len(to_hold)
            self.stats.held += self.hold.hold(to_hold)  # new ones (a batch may come again)
        self.stats.unrouted += batch.unrouted
        return batch

    def add_due(self, batch: Batch, limit: int) -> None:
        """Adds held actions that are now due to `batch` (up to `limit`), before its other
        actions: they were made before them."""
        if self.hold is None or limit <= 0:
            return
        due = self.hold.due(self.clock(), limit)
        batch.send[:0] = [record for _, record in due]
        batch.hold_keys.extend(key for key, _ in due)

    def send(self, batch: Batch) -> None:
        """Delivers `batch` (or dead-letters what cannot be delivered); releases its held
        actions. Raises `SinkError` when the sink failed: nothing is released then."""
        before = _dead_lettered(self.sink)
        self.stats.buffered = len(batch)
        try:
            if batch.letters:
                self.dead_letter.write_batch(batch.letters)
                self.dead_letter.flush()
            if batch.send:
                self.sink.write_batch(batch.send)
                self.sink.flush()
        except SinkError:
            self.stats.failures += 1
            raise
        finally:
            self.stats.buffered = 0
        if self.hold is not None and batch.hold_keys:
            self.hold.release(batch.hold_keys)
            self.stats.released += len(batch.hold_keys)
        dead = _dead_lettered(self.sink) - before
        self.stats.dead_lettered += dead + len(batch.letters)
        self.stats.delivered += len(batch.send) - dead

    def close(self) -> None:
        for closing in (self.sink, self.dead_letter):
            try:
                closing.close()
            except SinkError as exc:
                log.error("closing connector %s failed: %s", self.name, exc)
        if self.hold is not None:
            self.hold.close()


def _not_before(action: dict[str, Any]) -> float | None:
    value = action.get("not_before")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("not_before is not a string")
    return datetime.fromisoformat(value).timestamp()


def _dead_lettered(sink: Sink) -> int:
    return int(getattr(sink, "dead_lettered", 0))


def open_with_backoff(
    sink: Any,
    name: str,
    stop: Callable[[], bool],
    *,
    base_s: float = 0.5,
    max_s: float = 30.0,
    sleep: Callable[[float], Any] = time.sleep,
) -> bool:
    """Calls `sink.open()` (if it has one) until it succeeds, backing off exponentially and
    logging why; False if `stop()` became true first."""
    opener = getattr(sink, "open", None)
    if opener is None:
        return True
    delay = base_s
    while not stop():
        try:
            opener()
            return True
        except SinkError as exc:
            log.warning(
                "connector not ready, retrying in %.1f s: %s",
                delay,
                exc,
                extra={"connector": name},
            )
        sleep(delay)
        delay = min(max_s, delay * 2)
    return False
