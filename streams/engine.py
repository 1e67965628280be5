"""The per-batch pipeline: decode -> state -> rules -> policy -> outputs. No Faust here.

`Engine.process` takes a batch of raw input records, in order, and returns everything they
produced: actions, decisions and dead letters, each encoded as one JSON document. Each
customer's state is read once per batch (through the state cache), updated event by event
and written back once at the end of the batch.

Nothing in a record can make `process` raise: undecodable or invalid input, and any error
while applying one event, becomes a dead letter with the reason, and is counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from monitoring.metrics import NoopObserver, Observer
from rules.outcomes import Action, Decision, to_json
from rules.ruleset import DUPLICATE, RuleSet
from state.events import InvalidEvent, decode_event
from state.model import CustomerState
from state.store import StateCache


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


@dataclass
class BatchOutput:
    """What a batch produced, encoded, in input order."""

    actions: list[bytes] = field(default_factory=list)
    decisions: list[bytes] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)
    # for routing to topics: (kind, customer id) per action, customer id per decision and
    # per dead letter (None when unreadable), in the same order as the lists above
    action_keys: list[tuple[str, str]] = field(default_factory=list)
    decision_keys: list[str] = field(default_factory=list)
    dead_letter_keys: list[str | None] = field(default_factory=list)
    events: int = 0
    processed: int = 0
    duplicates: int = 0


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
        for record in records:
            out.events += 1
            try:
                event = decode_event(record.value)
            except InvalidEvent as exc:
                reason = "malformed_json" if exc.reason.startswith("malformed") else "invalid_event"
                self._dead(out, record, reason, exc.reason, exc.customer_id, "unknown")
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
                self._dead(out, record, "processing_error", error, event.customer_id, event.type)
                continue
            if result.duplicate:
                out.duplicates += 1
                obs.event_in(event.type, "duplicate")
                continue
            out.processed += 1
            obs.event_in(event.type, "processed")
            if result.decisions:
                self._emit(out, result.actions, result.decisions)
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
        self, out: BatchOutput, actions: Sequence[Action], decisions: Sequence[Decision]
    ) -> None:
        obs = self.observer
        for d in decisions:
            obs.decision(d.pack, d.rule_id, d.outcome, d.reason)
            out.decisions.append(to_json(d))
            out.decision_keys.append(d.customer_id)
        for a in actions:
            obs.action(a.kind, a.pack)
            out.actions.append(to_json(a))
            out.action_keys.append((a.kind, a.customer_id))

    def _dead(
        self,
        out: BatchOutput,
        record: Record,
        reason: str,
        error: str,
        customer_id: str | None,
        event_type: str,
    ) -> None:
        self.observer.event_in(event_type, "dead_letter")
        self.observer.dead_letter(reason)
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
