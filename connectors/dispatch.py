"""One connector's share of the action stream: route, hold for quiet hours, deliver.

This is the broker-free core of delivery. A caller (the Kafka deliverer in
`streams/deliver.py`, or a test) feeds it batches of action records as they were written to
the output topics, and then, once `send()` has returned, marks the batch done (commits its
offsets). `take()` keeps the actions routed to this connector: those with a `not_before` in
the future go into the hold store (durably, before `take()` returns), the others are to be
sent now. `send()` blocks until the sink has delivered them or dead-lettered them, and
raises `SinkError` when it could do neither (the caller then sends the batch again).

Counting, per kind (`offer`, `alert`; `unknown` when absent or anything else): what a
batch sent is known per record, not only as a number. A sink that dead-letters (webhook,
kafka) writes its letters to the dead-letter sink it was built with; when that is this
dispatch's `LetterTap` (as `streams.deliver.build_dispatches` wires it), each letter says
which action it is about (its kind and ids), so delivered and dead-lettered actions are
told apart exactly, and only the delivered ones count towards the delivery latency
(event time `ts` to the sink's confirmation). Sinks that never dead-letter (files, stdout)
deliver every record of a batch `send()` returns from.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.base import Sink, SinkError, dead_letter
from connectors.config import DeliveryConfig
from connectors.hold import HoldStore
from monitoring.logs import RateLimited
from monitoring.metrics import LATENCY_BUCKETS, FastHistogram

log = logging.getLogger(__name__)

KINDS = ("offer", "alert")
"""The kinds of action counted by name; any other (or none) counts as `unknown`."""
OUTCOMES = ("delivered", "dead_lettered", "held", "released")
LATENCY_METRIC = "crm_delivery_latency_seconds"
LETTERS_PER_SECOND = 10.0
"""Dead letters logged per second and connector at most (the rest are counted)."""
_IDS = ("action_id", "event_id", "rule_id", "pack")  # correlation ids: never the customer


def kind_of(action: Any) -> str:
    """The bounded `kind` label of an action (a parsed JSON object, or anything else)."""
    kind = action.get("kind") if isinstance(action, dict) else None
    return kind if kind in KINDS else "unknown"


@dataclass(frozen=True)
class Meta:
    """What counting and logging need of one action: its kind, event time and ids."""

    kind: str = "unknown"
    ts: float | None = None  # the event's time (the action's `ts`), Unix seconds
    ids: dict[str, str] = field(default_factory=dict)  # action, event, rule, pack ids

    @classmethod
    def of(cls, action: Any) -> Meta:
        if not isinstance(action, dict):
            return cls()
        ids = {k: v for k in _IDS if isinstance(v := action.get(k), str)}
        return cls(kind_of(action), _event_time(action.get("ts")), ids)

    @classmethod
    def of_record(cls, record: bytes) -> Meta:
        try:
            return cls.of(json.loads(record))
        except (ValueError, RecursionError):
            return cls()


@dataclass(frozen=True)
class Letter:
    """One dead letter a sink wrote: which action it is about, and why."""

    about: Meta
    reason: str


class LetterTap:
    """A connector's dead-letter sink: passes letters on to `inner` and keeps what each is
    about (its record's kind and ids) until `take()`. Build the connector's sink with it as
    its dead-letter sink, and give it to the `ConnectorDispatch` too. Thread-safe (a
    webhook sink writes letters from its own event-loop thread)."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self._seen: list[Letter] = []
        self._lock = threading.Lock()

    def write_batch(self, records: Sequence[bytes]) -> None:
        self.inner.write_batch(records)  # raises: not written, not seen
        letters = [_letter_of(r) for r in records]
        with self._lock:
            self._seen.extend(letters)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def take(self) -> list[Letter]:
        """The letters written since the last `take()`."""
        with self._lock:
            seen, self._seen = self._seen, []
        return seen


def _letter_of(letter: bytes) -> Letter:
    try:
        parsed = json.loads(letter)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        return Letter(Meta(), "")
    record = parsed.get("record")
    if not isinstance(record, dict):
        record = parsed.get("record_ids")  # a letter about a huge record keeps its ids
    reason = parsed.get("reason")
    return Letter(Meta.of(record), reason if isinstance(reason, str) else "")


@dataclass
class Batch:
    """What one batch of input records means for one connector."""

    send: list[bytes] = field(default_factory=list)  # due now
    letters: list[bytes] = field(default_factory=list)  # unreadable: to the dead-letter sink
    held: int = 0  # kept in the hold store for later
    unrouted: int = 0  # routed nowhere
    hold_keys: list[bytes] = field(default_factory=list)  # held actions now due, in `send`
    meta: list[Meta] = field(default_factory=list)  # of each record in `send`

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
    # actions by (outcome, kind): for each outcome, the kinds add up to its total above
    by_kind: dict[tuple[str, str], int] = field(
        default_factory=lambda: {(o, k): 0 for o in OUTCOMES for k in (*KINDS, "unknown")}
    )
    # records of the input topics not yet delivered (or committed), per (topic, partition)
    # assigned now: set (replaced whole) by whoever consumes for this connector
    lag: dict[tuple[str, int], int] = field(default_factory=dict)

    def count(self, outcome: str, kinds: Iterable[str]) -> None:
        """Counts one action of each kind in `kinds` (with repeats) as `outcome`."""
        total = 0
        for kind, n in Counter(kinds).items():
            key = (outcome, kind)
            self.by_kind[key] = self.by_kind.get(key, 0) + n
            total += n
        setattr(self, outcome, getattr(self, outcome) + total)


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
        """`dead_letter` takes the unreadable actions (and, as a `LetterTap` the sink was
        built with, tells which actions the sink dead-lettered)."""
        self.name = name
        self.primary = primary  # the one connector that reports unreadable and unrouted ones
        self.config = config
        self.sink = sink
        self.dead_letter = dead_letter
        self.hold = hold
        self.clock = clock
        self.stats = Stats()
        # event time to delivery confirmed, of the delivered actions (one thread observes:
        # the one running `send()`, one batch at a time)
        self.latency = FastHistogram(LATENCY_METRIC, "", LATENCY_BUCKETS, label="connector")
        self.latency.series(name)  # exported from the start, at 0
        self._letters = RateLimited(log, per_second=LETTERS_PER_SECOND)
        self._untraced_said = False

    def take(
        self, records: Sequence[bytes], positions: Sequence[tuple[int, int]] | None = None
    ) -> Batch:
        """`positions`: each record's (partition, offset) in its topic; held actions due at
        the same time are released in that order (a customer's are in one partition)."""
        batch = Batch()
        now = self.clock()
        to_hold: dict[str, list[tuple[float, str, bytes]]] = {}  # by kind
        held: list[Meta] = []
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
                to_hold.setdefault(kind_of(action), []).append((due, order, record))
                if log.isEnabledFor(logging.DEBUG):
                    held.append(Meta.of(action))
            else:
                batch.send.append(record)
                batch.meta.append(Meta.of(action))
        for kind, items in to_hold.items():  # one write per kind: exact counts by kind
            assert self.hold is not None
            batch.held += len(items)
            new = self.hold.hold(items)  # only new ones count (a batch may come again)
            self.stats.count("held", [kind] * new)
        for meta in held:
            log.debug(
                "action held for quiet hours by connector %s",
                self.name,
                extra={**meta.ids, "connector": self.name},
            )
        self.stats.unrouted += batch.unrouted
        return batch

    def add_due(self, batch: Batch, limit: int) -> None:
        """Adds held actions that are now due to `batch` (up to `limit`), before its other
        actions: they were made before them."""
        if self.hold is None or limit <= 0:
            return
        due = self.hold.due(self.clock(), limit)
        if not due:
            return
        self._complete(batch)
        batch.send[:0] = [record for _, record in due]
        batch.meta[:0] = [Meta.of_record(record) for _, record in due]
        batch.hold_keys.extend(key for key, _ in due)

    def send(self, batch: Batch) -> None:
        """Delivers `batch` (or dead-letters what cannot be delivered); releases its held
        actions. Raises `SinkError` when the sink failed: nothing is released then."""
        self._complete(batch)
        tap = self.dead_letter if isinstance(self.dead_letter, LetterTap) else None
        before = _dead_lettered(self.sink)
        self.stats.buffered = len(batch)
        letters: list[Letter] = []
        try:
            if batch.letters:
                self.dead_letter.write_batch(batch.letters)
                self.dead_letter.flush()
            if tap is not None:
                tap.take()  # this dispatch's own letters (unreadable): not the sink's
            if batch.send:
                self.sink.write_batch(batch.send)
                self.sink.flush()
        except SinkError:
            self.stats.failures += 1
            if tap is not None:  # in the dead-letter topic, even though the batch comes again
                self._log_letters(tap.take())
            raise
        finally:
            self.stats.buffered = 0
        if tap is not None:
            letters = tap.take()
        if self.hold is not None and batch.hold_keys:
            self.hold.release(batch.hold_keys)
            released = batch.meta[: len(batch.hold_keys)]
            self.stats.count("released", (m.kind for m in released))
            for meta in released if log.isEnabledFor(logging.DEBUG) else ():
                log.debug(
                    "held action released by connector %s",
                    self.name,
                    extra={**meta.ids, "connector": self.name},
                )
        own = [_letter_of(letter) for letter in batch.letters]  # unreadable actions
        self.stats.count("dead_lettered", (letter.about.kind for letter in own))
        self._log_letters(own)
        self._settle(batch.meta, letters, _dead_lettered(self.sink) - before)

    def _complete(self, batch: Batch) -> None:
        """Reads what `batch.meta` lacks (a batch not made by `take()`) from the records."""
        if len(batch.meta) != len(batch.send):
            batch.meta = [Meta.of_record(record) for record in batch.send]

    def _settle(self, sent: list[Meta], letters: list[Letter], counted: int) -> None:
        """Counts the actions the sink took: dead-lettered (`letters`, each matched to its
        action by action id) or delivered (the others); `counted`: the dead letters the sink
        says it wrote, in case some did not pass through this dispatch's LetterTap."""
        self._log_letters(letters)
        dead_ids = Counter(letter.about.ids.get("action_id") for letter in letters)
        delivered: list[Meta] = []
        for meta in sent:
            key = meta.ids.get("action_id")
            if dead_ids[key] > 0:
                dead_ids[key] -= 1
            else:
                delivered.append(meta)
        dead = [letter.about.kind for letter in letters]
        untraced = counted - len(letters)
        if untraced > 0:  # not exact: which ones is not known; the last ones are taken
            if not self._untraced_said:
                self._untraced_said = True
                log.warning(
                    "connector %s: its sink dead-letters past the dispatch's LetterTap: "
                    "dead letters by kind and the delivery latency are approximate",
                    self.name,
                    extra={"connector": self.name},
                )
            untraced = min(untraced, len(delivered))
            dead += [m.kind for m in delivered[len(delivered) - untraced :]]
            delivered = delivered[: len(delivered) - untraced]
        self.stats.count("dead_lettered", dead)
        self.stats.count("delivered", (m.kind for m in delivered))
        now = self.clock()
        series = self.latency.series(self.name)
        for meta in delivered:
            if meta.ts is not None:
                self.latency.add(series, max(0.0, now - meta.ts))

    def _log_letters(self, letters: Iterable[Letter]) -> None:
        for letter in letters:
            self._letters.log(
                logging.WARNING,
                "action dead-lettered by connector %s: %s",
                self.name,
                letter.reason,
                extra={**letter.about.ids, "connector": self.name},
            )

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


def _event_time(value: Any) -> float | None:
    """An ISO 8601 time as Unix seconds (UTC when it names no zone); None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


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
