"""Event-time order across co-partitioned topics, the way Kafka Streams synchronises them.

Kafka orders messages only within one partition of one topic, but a customer's events arrive
on three topics (transactions, interactions, profiles), keyed by customer id and
co-partitioned: partition p of each holds the same customers. `EventTimeMerger` buffers what
the consumer delivers, per partition p and topic, and releases records in event-time order:

- While every topic of partition p has a buffered record, the one with the oldest event time
  goes first (ties: profiles, then interactions, then transactions, so a consent change
  applies before a payment stamped the same instant).
- While a topic of partition p has nothing buffered, records of p wait: not at all if that
  topic is caught up (the worker has everything the broker had for it, so nothing older
  can be on its way); up to `max_lag_wait` seconds if the broker is known to hold records
  the worker has not received yet (they are being fetched); up to `max_idle` seconds when
  that is not known. Then the oldest buffered record goes anyway. Kafka Streams calls the
  latter `max.task.idle.ms`.

The guarantee: a customer's events are applied in event-time order whenever they are in
Kafka before the worker has waited those bounds for them. An event that arrives later than
that, behind events of its partition with later event times, is still processed (never
dropped), after them, and counted as late (`crm_late_events_total`).

Nothing here knows Faust: the worker feeds it records and asks what is ready.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

CaughtUp = Callable[[str, int, float], bool | None]
"""(topic, partition, since) -> True: caught up with everything the broker held at `since`
(a time of this merger's clock: when the oldest record now waiting was fetched); False: records
known to be on their way, or not known yet as of `since`; None: unknown."""


@dataclass(order=True)
class _Entry(Generic[T]):
    ts: float
    rank: int
    seq: int
    arrived: float = field(compare=False)
    item: T = field(compare=False)
    fetched: float = field(compare=False)


@dataclass
class Released(Generic[T]):
    """A record released in order: its partition, the record, and whether it was late."""

    partition: int
    item: T
    late: bool


class EventTimeMerger(Generic[T]):
    """Merges the buffered records of co-partitioned topics in event-time order."""

    def __init__(
        self,
        topics: list[str],
        max_idle: float,
        clock: Callable[[], float] = time.monotonic,
        max_lag_wait: float = 5.0,
    ) -> None:
        """`topics` in tie-break order (first wins a tie); times in seconds."""
        self.max_lag_wait = max_lag_wait
        self.topics = list(topics)
        self.rank = {t: i for i, t in enumerate(self.topics)}
        self.max_idle = max_idle
        self.clock = clock
        self._queues: dict[int, dict[str, deque[_Entry[T]]]] = {}
        self._released_ts: dict[int, float] = {}
        self._seq = 0

    def add(
        self, topic: str, partition: int, ts: float, item: T, fetched: float | None = None
    ) -> None:
        """Buffer one record. Records of one topic partition must come in offset order.

        A record without a readable event time has `ts` minus infinity: it goes first.
        `fetched` (this merger's clock, default now) is an upper bound of when the record
        left the broker, such as the fetch response that brought it: `caught_up` is asked
        about that moment. The waits count from now, when the record joins the merger.
        """
        queues = self._queues.get(partition)
        if queues is None:
            queues = self._queues[partition] = {t: deque() for t in self.topics}
        self._seq += 1
        now = self.clock()
        when = now if fetched is None else min(fetched, now)
        queues[topic].append(_Entry(ts, self.rank[topic], self._seq, now, item, when))

    def __len__(self) -> int:
        return sum(len(q) for qs in self._queues.values() for q in qs.values())

    def ready(self, caught_up: CaughtUp | None = None) -> list[Released[T]]:
        """Every record that may go now, in the order to apply them."""
        out: list[Released[T]] = []
        now = self.clock()
        for partition, queues in self._queues.items():
            while True:
                heads = [q[0] for q in queues.values() if q]
                if not heads:
                    break
                if not self._may_release(partition, queues, heads, now, caught_up):
                    break
                first = min(heads)
                queues[self.topics[first.rank]].popleft()
                last = self._released_ts.get(partition)
                late = last is not None and first.ts < last and first.ts != -math.inf
                if last is None or first.ts > last:
                    self._released_ts[partition] = first.ts
                out.append(Released(partition, first.item, late))
        return out

    def drain(self) -> list[Released[T]]:
        """Everything buffered, in order, waiting for nothing (at shutdown or revocation)."""
        return self.ready(lambda topic, partition, since: True)

    def forget(self, partitions: set[int]) -> list[Released[T]]:
        """Drop the buffers of partitions this worker no longer owns; return what they held
        (unprocessed: the new owner will read those records again from the committed offset)."""
        dropped: list[Released[T]] = []
        for p in partitions:
            queues = self._queues.pop(p, {})
            for q in queues.values():
                dropped.extend(Released(p, e.item, False) for e in q)
            self._released_ts.pop(p, None)
        return dropped

    def _may_release(
        self,
        partition: int,
        queues: dict[str, deque[_Entry[T]]],
        heads: list[_Entry[T]],
        now: float,
        caught_up: CaughtUp | None,
    ) -> bool:
        empty = [t for t, q in queues.items() if not q]
        if not empty:
            return True
        since = min(e.arrived for e in heads)
        fetched = min(e.fetched for e in heads)
        states = [caught_up(t, partition, fetched) if caught_up else None for t in empty]
        if all(state is True for state in states):
            return True
        waited = now - since
        if any(state is False for state in states):
            return waited >= self.max_lag_wait
        return waited >= self.max_idle
