"""The per-batch pipeline: decode -> state -> rules -> policy -> outputs. No Faust here.

`Engine.process` takes a batch of raw input records, in order, and returns everything they
produced: actions, decisions and dead letters, each encoded as one JSON document. Each
customer's state is read once per batch (through the state cache), updated event by event
and written back once at the end of the batch.

Nothing in a record can make `process` raise: undecodable or invalid input, and any error
while applying one event, becomes a dead letter with the reason, and is counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from monitoring.logs import RateLimited
from monitoring.metrics import NoopObserver, Observer
from rules.outcomes import Action, Decision, to_json
from rules.ruleset import DUPLICATE, RuleSet
from state.events import InvalidEvent, decode_event
from state.model import CustomerState
from state.store import StateCache

log = logging.getLogger("crm_triggers.engine")


@dataclass(frozen=True)
class Record:
    """One raw input message and where it came from (file:line, topic/partition@offset)."""

    value: bytes
    origin: str = ""
    # The Kafka position (topic/partition, offset) when the record came from Kafka: a
    # customer's state remembers the last offset applied per input partition, so a record
    # delivered again after a crash is recognised however many came after it.
    source: str | None = None
    offset: int = -1
    # where it was read, for metrics: its topic, or `file` / `simulate` off Kafka
    topic: str = "file"


@dataclass
class BatchOutput:
    """What a batch produced, encoded, in input order."""

    actions: list[bytes] = field(default_factory=list)
    decisions: list[bytes] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)
    # for routing to topics: (kind, customer id) per action, customer id per decision and
    # per dead letter (None when unreadable), in the same order as the lists above
    action_keys: list[tuple[str, str]] = field(default_factory=list)
    action_times: list[float] = field(default_factory=list)  # its event's time (epoch s)
    decision_keys: list[str] = field(default_factory=list)
    dead_letter_keys: list[str | None] = field(default_factory=list)
    events: int = 0
    processed: int = 0
    duplicates: int = 0
    shadow: int = 0  # decisions of rules in shadow mode (in `decisions` too)


class DeadLetter(msgspec.Struct, kw_only=True):
    """An input record that could not be processed, with the reason."""

    reason: str
    error: str
    origin: str
    customer_id: str | None
    raw: str | None
    raw_base64: bytes | None = None
    topic: str | None = None  # for records from Kafka: where the original is
    partition: int | None = None
    offset: int | None = None


class Engine:
    """Applies batches of events to customer states with a rule set.

    `rules` may be replaced between batches (a new rule version). `state_ttl` (seconds of
    event time) forgets a customer idle for longer: their next event starts a fresh state.
    """

    def __init__(
        self,
        rules: RuleSet,
        states: StateCache,
        observer: Observer | None = None,
        *,
        state_ttl: float | None = None,
    ) -> None:
        self.rules = rules
        self.states = states
        self.observer: Observer = observer if observer is not None else NoopObserver()
        self.state_ttl = state_ttl
        self.newest = 0.0  # the latest event time seen, epoch seconds
        # one line per dead letter, at most 10 a second; the next says how many were left out.
        # Processing errors (bugs) have their own budget: bad input must not hide them.
        self._dead_log = RateLimited(log, per_second=10)
        self._error_log = RateLimited(log, per_second=10)
        self.observer.rules_loaded({p.name: p.version for p in rules.packs})

    def process(self, records: Iterable[Record], *, flush: bool = True) -> BatchOutput:
        """Process records in order. With `flush`, changed states are written back now;
        otherwise they stay in the state cache until a later `flush` (or `self.states.flush()`).
        """
        started = time.perf_counter()
        out = BatchOutput()
        obs = self.observer
        rules = self.rules
        on_error = obs.rule_error
        clock = time.perf_counter
        for record in records:
            began = clock()
            out.events += 1
            try:
                event = decode_event(record.value)
            except InvalidEvent as exc:
                reason = "malformed_json" if exc.reason.startswith("malformed") else "invalid_event"
                self._dead(out, record, reason, exc.reason, exc.customer_id, "unknown", began)
                continue
            state: CustomerState | None = None
            try:
                now = event.ts.timestamp()
                if now > self.newest:
                    self.newest = now
                state = self._state(event.customer_id, now)
                if record.source is not None and not state.advance(record.source, record.offset):
                    result = DUPLICATE
                else:
                    result = rules.apply(state, event, on_error, now)
                self.states.mark(event.customer_id)
            except Exception as exc:  # one bad event must not stop the stream
                if state is not None:  # it may be changed in part: store it as cached, so
                    self.states.mark(event.customer_id)  # a restart sees what the cache saw
                error = f"processing error: {type(exc).__name__}: {exc}"
                self._dead(
                    out,
                    record,
                    "processing_error",
                    error,
                    event.customer_id,
                    event.type,
                    began,
                    event_id=event.event_id,
                    exc=exc,
                )
                continue
            if result.duplicate:
                out.duplicates += 1
                obs.event_in(record.topic, event.type, "duplicate", clock() - began)
                continue
            out.processed += 1
            if result.decisions:
                self._emit(out, result.actions, result.decisions, now)
            obs.event_in(record.topic, event.type, "processed", clock() - began)
        if flush:
            self.states.flush()
        obs.batch(out.events, time.perf_counter() - started)
        return out

    def _state(self, cid: str, now: float) -> CustomerState:
        state = self.states.get(cid)
        if state is None or (
            self.state_ttl is not None and state.last_ts and now - state.last_ts > self.state_ttl
        ):
            state = CustomerState()
            self.states.put(cid, state)
        return state

    def _emit(
        self,
        out: BatchOutput,
        actions: Sequence[Action],
        decisions: Sequence[Decision],
        event_time: float,
    ) -> None:
        obs = self.observer
        debug = log.isEnabledFor(logging.DEBUG)
        for d in decisions:
            obs.decision(d.pack, d.rule_id, d.outcome, d.reason)
            out.decisions.append(to_json(d))
            out.decision_keys.append(d.customer_id)
            if d.outcome == "shadow":
                out.shadow += 1
            if debug:
                log.debug(
                    "rule %s/%s %s%s",
                    d.pack,
                    d.rule_id,
                    d.outcome,
                    f" ({d.reason})" if d.reason else "",
                    extra={"event_id": d.event_id, "rule_id": d.rule_id, "pack": d.pack},
                )
        for a in actions:
            obs.action(a.kind, a.pack)
            out.actions.append(to_json(a))
            out.action_keys.append((a.kind, a.customer_id))
            out.action_times.append(event_time)

    def _dead(
        self,
        out: BatchOutput,
        record: Record,
        reason: str,
        error: str,
        customer_id: str | None,
        event_type: str,
        began: float,
        *,
        event_id: str | None = None,
        exc: Exception | None = None,
    ) -> None:
        """A dead letter for `record`, counted and logged (a processing error, a bug, at
        ERROR with its traceback; bad input at WARNING)."""
        self.observer.event_in(record.topic, event_type, "dead_letter", time.perf_counter() - began)
        self.observer.dead_letter(reason)
        (self._error_log if exc is not None else self._dead_log).log(
            logging.ERROR if exc is not None else logging.WARNING,
            "dead letter (%s) from %s: %s",
            reason,
            record.origin or "input",
            error,
            exc_info=exc,
            extra={"reason": reason, "origin": record.origin}
            | ({"event_id": event_id} if event_id else {}),
        )
        out.dead_letters.append(
            msgspec.json.encode(dead_letter(record, reason, error, customer_id))
        )
        out.dead_letter_keys.append(customer_id)


def dead_letter(record: Record, reason: str, error: str, customer_id: str | None) -> DeadLetter:
    """The dead-letter record for `record`: the original text, or base64 if it is not UTF-8."""
    raw: str | None
    b64: Any = None
    try:
        raw = record.value.decode("utf-8")
    except UnicodeDecodeError:
        raw, b64 = None, record.value
    topic, partition, offset = None, None, None
    if record.source is not None:
        topic, _, number = record.source.rpartition("/")
        partition, offset = int(number), record.offset
    return DeadLetter(
        reason=reason,
        error=error,
        origin=record.origin,
        customer_id=customer_id,
        raw=raw,
        raw_base64=b64,
        topic=topic,
        partition=partition,
        offset=offset,
    )
