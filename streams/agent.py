"""The Kafka worker: a Faust agent over the input topics, state in a RocksDB-backed table.

This is the only module that knows Faust. Per batch taken from the input topics it:
1. checks each record's offset follows on from the last one of its input partition (or
   from the group's committed offset) and reads any range Faust's consumer skipped again
   straight from Kafka (`Refetcher`); drops records fetched before the latest rebalance;
2. buffers the records in the event-time merger (streams/merge.py) and takes what is
   ready, once Faust has finished restoring state;
3. per partition, in order, runs them through the same Engine as replay, with customer
   state in the Faust table (RocksDB through rocksdict, changelog in Kafka): each customer
   is read once and written once per batch, so one changelog message per customer per batch;
4. sends actions, decisions and dead letters to their topics and waits until Kafka has them,
   then writes the changed states to the local store and sends their changelog records
   itself, waits for those too, then acks the input records.
Offsets are committed by Faust only up to acked records (at-least-once), or inside the
Kafka transaction of the input partition that also holds the batch's outputs and changelog
records (exactly-once); a commit always waits for the batch in progress. Records still
waiting in the merger are not acked, so a crash or a rebalance never loses them.

No exception from one event reaches Faust (which would ack and drop the message): the
Engine turns it into a dead letter. An output over its topic's size limit becomes a small
`output_too_large` dead letter that says where its input is (`SizeLimits`). With
at_least_once, outputs Kafka cannot take now (a topic missing, the broker away) are sent again
with backoff, saying what is wrong, and nothing is acked meanwhile; with exactly_once a failed
delivery aborts the open transactions and stops the worker (a restart resumes from the last
committed transaction). Any other failure to deliver stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import sys
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import faust
import msgspec
from aiokafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    UnknownTopicOrPartitionError,
)
from confluent_kafka import KafkaException
from faust.exceptions import ProducerSendError
from faust.streams import Stream, _current_event
from faust.types import TP, EventT, StreamT

from monitoring.health import Health, serve
from monitoring.metrics import PrometheusObserver, WorkerGauges
from rules.ruleset import RuleSet
from state.store import StateCache
from streams.engine import BatchOutput, Engine, Record
from streams.merge import EventTimeMerger, Released
from streams.outputs import (
    BATCH_HEADER,
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_BATCH_SIZE,
    MAX_REQUEST_SIZE,
    RECORD_FRAMING,
    TOO_LARGE,
    DeliveryError,
    OutputIds,
    OutputTooLarge,
    SizeLimits,
    event_id_decoder,
    ids_decoder,
    quiet_aiokafka,
    retriable,
)
from streams.settings import STATE_TABLE, Settings
from streams.topics import admin_client, wait_for_kafka
from streams.worker_health import ReportService, WorkerReport

log = logging.getLogger("crm_triggers.worker")

TIE_ORDER = ("profile", "interaction", "transaction")


class _Timestamp(msgspec.Struct):
    ts: str | None = None


_ts_decoder = msgspec.json.Decoder(_Timestamp)


def event_time(raw: bytes) -> float:
    """The event time of a raw input record, read cheaply; minus infinity if it has none we
    can read (such a record goes first and becomes a dead letter: it must not hold others)."""
    try:
        ts = _ts_decoder.decode(raw).ts
        if ts is not None:
            return datetime.fromisoformat(ts).timestamp()
    # RecursionError: JSON nested deeper than msgspec can follow (it becomes a dead letter)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError, RecursionError):
        pass
    return -math.inf


Message = tuple[str, bytes | None, bytes | None, int | None, str | None]
"""An output record: topic, key, value, partition (None: by key), transactional id."""


@dataclass
class Input:
    """One input record in the merger: from Faust (`event`, acked after processing) or
    read again directly because Faust's consumer skipped it (`event` None)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    generation: int | None
    event: EventT[Any] | None = None


STALL_REPORT = 5.0
"""Seconds a delivery may take before the worker says it waits, and why."""


class Refetcher:
    """Reads input records straight from Kafka (confluent-kafka, no consumer group).

    Faust's consumer can skip records without a rebalance (seen under load: a run of
    records of one partition never reached the agent, and the commit moved past them).
    The worker notices the jump in offsets and reads the missing range here, so no input
    record is lost; `crm_input_refetched_records_total` counts them.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: Any = None
        self._group: Any = None

    def _connect(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer

            s = self.settings
            isolation = "read_committed" if s.processing_guarantee == "exactly_once" else None
            self._consumer = Consumer(
                {
                    "bootstrap.servers": s.brokers,
                    "group.id": f"{s.app_id}-refetch",  # never joined: partitions are assigned
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "isolation.level": isolation or "read_uncommitted",
                    **s.kafka.librdkafka(),
                }
            )
        return self._consumer

    def read(self, topic: str, partition: int, start: int, end: int) -> list[tuple[int, bytes]]:
        """The records with offsets in [start, end), in order."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        consumer = self._connect()
        consumer.assign([TopicPartition(topic, partition, start)])
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise KafkaException(error)
                if msg.offset() >= end:
                    return out
                out.append((msg.offset(), msg.value() or b""))
        finally:
            consumer.unassign()
        raise TimeoutError(f"reading {topic}/{partition} offsets {start}..{end - 1} timed out")

    def start_offset(self, topic: str, partition: int) -> int:
        """Where the worker's consumer group starts on a partition: its committed offset,
        or the first offset the partition holds if the group has committed none."""
        from confluent_kafka import Consumer, TopicPartition

        s = self.settings
        if self._group is None:
            self._group = Consumer(
                {
                    "bootstrap.servers": s.brokers,
                    "group.id": s.app_id,  # only asked for its committed offsets, never joined
                    "enable.auto.commit": False,
                    **s.kafka.librdkafka(),
                }
            )
        tp = TopicPartition(topic, partition)
        committed = self._group.committed([tp], timeout=30)[0].offset
        if committed >= 0:
            return int(committed)
        low, _high = self._group.get_watermark_offsets(tp, 30, False)
        return int(low)

    def close(self) -> None:
        for consumer in (self._consumer, self._group):
            if consumer is not None:
                consumer.close()


class TableStore:
    """The Store protocol over a Faust table of encoded customer states.

    Reads and writes go to the table's local RocksDB store, one database per partition:
    Faust picks it from the current event, so the worker sets `partition` before it
    processes a partition's records, the store remembers which partition each customer
    read belongs to, and `write` sets the current event to `anchor(partition)` for that
    partition's states. Writes do not go through Faust's buffered changelog path, whose
    flush gives up after 0.1 s and can leave changelog records unsent behind committed
    offsets: they are collected per partition in `changes`, and the worker sends them and
    waits until Kafka has them.
    """

    def __init__(self, table: Any, anchor: Callable[[int], EventT[Any]]) -> None:
        self.table = table
        self.anchor = anchor
        self.partition = 0
        self._owner: dict[str, int] = {}
        self.changes: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)

    def get(self, customer_id: str) -> bytes | None:
        self._owner[customer_id] = self.partition
        value: bytes | None = self.table.data.get(customer_id.encode())
        return value

    def write(self, updates: Mapping[str, bytes | None]) -> None:
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        for key, value in updates.items():
            by_partition[self._owner.get(key, self.partition)].append((key.encode(), value))
        self._owner.clear()
        data = self.table.data
        for partition, writes in by_partition.items():
            token = _current_event.set(weakref.ref(self.anchor(partition)))
            try:
                for k, value in writes:
                    if value is None:
                        if k in data:
                            del data[k]
                    else:
                        data[k] = value
            finally:
                _current_event.reset(token)
            self.changes[partition].extend(writes)

    def items(self) -> Iterator[tuple[str, bytes]]:
        for key, value in self.table.data.items():
            yield key.decode(), value

    def close(self) -> None:
        pass


class Worker:
    """Wires settings, rules and observer into a Faust app."""

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        observer: PrometheusObserver,
        limits: SizeLimits | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.observer = observer
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        # the size limits of the topics it writes (read from Kafka by run_worker; Kafka's
        # default for a topic not read)
        self.limits = limits if limits is not None else SizeLimits.of_settings(settings)
        self.app = build_app(settings)
        # The failure that made the worker give a batch up: from then on it processes
        # nothing more and stops; with exactly_once it commits nothing more (see _give_up).
        self.failed: BaseException | None = None
        self._admin: Any = None
        quiet_aiokafka()
        self.table = self.app.Table(
            STATE_TABLE,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            options={
                "driver": "rocksdict",
                "block_cache_size": 32 * 1024 * 1024,
                "write_buffer_size": 16 * 1024 * 1024,
            },
        )
        types = settings.topics.inputs()
        self.types = types
        self.rank = sorted(types, key=lambda t: TIE_ORDER.index(types[t]))
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.inputs = self.app.topic(*types, partitions=settings.partitions, **raw)
        self.merger: EventTimeMerger[Input] = EventTimeMerger(
            self.rank,
            settings.max_task_idle_ms / 1000,
            # Wall-clock time, as the consumer stamps its fetch responses: arrivals and
            # responses compare without conversion.
            clock=time.time,
            max_lag_wait=settings.max_lag_wait_ms / 1000,
        )
        self.store = TableStore(self.table, lambda partition: self.anchor[partition])
        self.engine = Engine(
            rules,
            StateCache(self.store, capacity=0),
            observer,
            state_ttl=settings.state_ttl_days * 86400,
        )
        self.last_offset: dict[tuple[str, int], int] = {}
        self.refetcher = Refetcher(settings)
        # the latest Faust event per partition: the table store needs one of the partition
        self.anchor: dict[int, EventT[Any]] = {}
        self.lock = asyncio.Lock()
        self.stream: Stream[Any] | None = None
        self.app.agent(self.inputs, name="crm-triggers")(self._agent)
        self.app.timer(max(settings.max_task_idle_ms / 1000, 0.01))(self._tick)
        self.app.on_partitions_revoked.connect(self._revoked)
        self._commits_guarded = False
        # for health and runtime metrics (streams/worker_health.py): the next offset to
        # process per input partition, and how many input records were processed
        self.position: dict[tuple[str, int], int] = {}
        self.processed = 0
        self.health = Health().register(observer.registry)
        self.gauges = WorkerGauges(observer.registry)
        self.reporter = ReportService(WorkerReport(self))  # started with the Faust worker

    def _guard_commits(self) -> None:
        """Faust commits offsets (and, with exactly_once, ends the Kafka transaction) from
        its own tasks at any moment. Make every commit wait for the batch in progress, so a
        transaction always holds whole batches: their outputs, state and input offsets.

        Installed when the agent starts: the consumer must not be created before the Faust
        worker runs (it reads the processing guarantee then)."""
        if self._commits_guarded:
            return
        self._commits_guarded = True
        consumer: Any = self.app.consumer
        commit = consumer.commit

        async def commit_between_batches(*args: Any, **kwargs: Any) -> bool:
            async with self.lock:
                if self.failed is not None and self.exactly_once:  # a failed batch is in
                    return False  # the open transactions: they must never commit
                done: bool = await commit(*args, **kwargs)
                return done

        consumer.commit = commit_between_batches

    def _current(self, generation: int | None) -> bool:
        """False for a record fetched before the latest rebalance: the partition was revoked
        (and maybe assigned again), and Kafka delivers it again from the committed offset."""
        return generation == self.app.consumer_generation_id

    async def _agent(self, stream: StreamT[Any]) -> None:
        assert isinstance(stream, Stream)  # noack_take is on the implementation
        self.stream = stream
        self._guard_commits()
        wait = self.settings.batch_wait_ms / 1000 or 0.001
        async for events in stream.noack_take(self.settings.batch_size, within=wait):
            # Shielded: a batch that has begun sending finishes even when the worker is
            # stopping, and holds the lock (so no commit) until then.
            await asyncio.shield(self._step(events))

    async def _tick(self) -> None:
        """Release what has waited long enough even when no new records arrive."""
        if self.stream is None or not len(self.merger) or self.app.rebalancing:
            return
        if self.lock.locked():  # a batch in progress asks the merger itself when it ends
            return
        await asyncio.shield(self._step([]))

    async def _step(self, events: Sequence[EventT[Any]]) -> None:
        async with self.lock:
            if self.failed is not None:  # a batch was given up: the worker stops
                return
            fetched: dict[tuple[str, int], float | None] = {}
            for event in events:
                message = event.message
                if not self._current(message.generation_id):
                    continue
                key = (message.topic, message.partition)
                expected = self._next_offset(key)
                if message.offset < expected:
                    continue  # delivered twice: the first delivery is held or applied
                if message.offset > expected:
                    await self._refetch(key, expected, message.offset, message.generation_id)
                self.anchor[message.partition] = event
                if key not in fetched:
                    fetched[key] = self._fetched(*key)
                self._add(
                    Input(
                        message.topic,
                        message.partition,
                        message.offset,
                        message.value or b"",
                        message.generation_id,
                        event,
                    ),
                    fetched[key],
                )
            if not self.app.rebalancing:
                # Faust may hand over records while it still restores state after a
                # rebalance: they wait in the merger until the state is complete.
                await self._process(self.merger.ready(self._caught_up))

    def _add(self, record: Input, fetched: float | None = None) -> None:
        ts = event_time(record.value)
        self.merger.add(record.topic, record.partition, ts, record, fetched)
        self.last_offset[record.topic, record.partition] = record.offset

    def _next_offset(self, key: tuple[str, int]) -> int:
        """The offset the next record of this input partition should have: one past the last
        one received or, for the first, where the consumer group starts (asked from Kafka:
        Faust may hand over records before it has fetched its committed offsets)."""
        last = self.last_offset.get(key)
        if last is not None:
            return last + 1
        offset = self.refetcher.start_offset(*key)
        self.last_offset[key] = offset - 1
        return offset

    async def _refetch(
        self, key: tuple[str, int], start: int, end: int, generation: int | None
    ) -> None:
        """Records [start, end) of an input partition never reached the agent: read them
        again. (Offsets with no record, such as transaction markers, simply read nothing.
        Faust's own record of skipped offsets is not trusted: it also covers records its
        consumer dropped.)"""
        records = await asyncio.to_thread(self.refetcher.read, key[0], key[1], start, end)
        if not records:
            return
        log.warning(
            "input %s/%d: offsets %d..%d never reached the agent; read %d records again",
            key[0],
            key[1],
            start,
            end - 1,
            len(records),
        )
        self.observer.refetched(len(records))
        for offset, value in records:
            self._add(Input(key[0], key[1], offset, value, generation))

    async def _revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[TP] = args[0] if args else kwargs.get("revoked", set())
        async with self.lock:
            dropped = self.merger.forget({tp.partition for tp in revoked})
            for tp in revoked:
                self.last_offset.pop((tp.topic, tp.partition), None)
                self.position.pop((tp.topic, tp.partition), None)
        if dropped:
            log.info("partitions revoked: %d buffered records left to the new owner", len(dropped))

    def _fetched(self, topic: str, partition: int) -> float | None:
        """When (epoch seconds) the consumer last had a fetch response for the partition: an
        upper bound of when the records of it handed over now were fetched. It lets the
        response that brought a record also vouch for the other topics of its partition."""
        try:
            client: Any = self.app.consumer
            kafka = client._thread._ensure_consumer()
            polled: int | None = kafka.last_poll_timestamp(TP(topic, partition))
        except (KeyError, AttributeError, AssertionError, TypeError):
            return None
        return None if polled is None else polled / 1000

    def _caught_up(self, topic: str, partition: int, since: float) -> bool | None:
        """True if this worker has every record the broker held for the partition when the
        oldest waiting record was fetched (`since`, epoch seconds); False if the broker
        holds records it has not received yet, or its last word on the partition is older
        than that (the next fetch response, within `fetch_max_wait`, settles it); None if
        nothing is known."""
        try:
            consumer: Any = self.app.consumer
            highwater = consumer.highwater(TP(topic, partition))  # LSO with exactly_once
        except (KeyError, AttributeError, AssertionError, TypeError):
            return None
        polled = self._fetched(topic, partition)
        if highwater is None or polled is None:
            return None
        try:
            # Nothing received from the partition yet: where the group starts reading it
            # (asked from Kafka once), so an empty partition counts as caught up.
            expected = self._next_offset((topic, partition))
        except KafkaException:
            return None
        if expected < highwater:
            return False
        # The highwater mark is as of the last fetch response for this partition: it
        # covers a record of another topic only if it is newer than that record's arrival.
        # (`since`: a response's own stamp or later; 1 µs for float noise.)
        return bool(polled >= since - 1e-6)

    async def _process(self, released: list[Released[Input]]) -> None:
        if not released:
            return
        by_partition: dict[int, list[Released[Input]]] = defaultdict(list)
        for r in released:
            if self._current(r.item.generation):  # a stale record comes again: skip it
                by_partition[r.partition].append(r)
        outputs: list[Message] = []
        tids: dict[int, str | None] = {}
        fits = self.limits.fits
        kinds: list[str] = []  # of the actions, for the event-to-action latency
        times: list[float] = []
        for partition, partition_records in by_partition.items():
            inputs = [r.item for r in partition_records]
            tid = tids[partition] = self._transactional_id(inputs[0])
            # Faust's table store takes the partition from the current event.
            held = [i.event for i in inputs if i.event is not None]
            if held:
                self.anchor[partition] = held[-1]
            self.store.partition = partition
            token = _current_event.set(weakref.ref(self.anchor[partition]))
            try:
                records = [
                    Record(
                        i.value,
                        f"{i.topic}/{i.partition}@{i.offset}",
                        f"{i.topic}/{i.partition}",
                        i.offset,
                        i.topic,
                    )
                    for i in inputs
                ]
                out = self.engine.process(records, flush=False)
            finally:
                _current_event.reset(token)
            kinds.extend(kind for kind, _ in out.action_keys)
            times.extend(out.action_times)
            for topic, key, value in self._outputs(out):
                if len(value) + (len(key) if key else 0) > fits[topic]:
                    # rarely: near or over the topic's limit; measured exactly
                    topic, key, value = self._fit(topic, key, value, inputs)
                outputs.append((topic, key, value, None, tid))
            late = sum(1 for r in partition_records if r.late)
            if late:
                self.observer.late_events(late)
        # Outputs reach Kafka before the state that remembers these events does: after a
        # crash in between, the events run again and resend the same action ids
        # (at-least-once) rather than being skipped as already seen. One round trip for
        # the outputs of every partition of the batch, one for their changelog records.
        try:
            await self._deliver(outputs, released)
            self.engine.states.flush()  # into the local store; changelog records kept
            await self._send_changelog(tids)
        except BaseException as exc:  # not acked: the batch runs again at the next start
            await self._give_up(tids.values(), exc)
            if not isinstance(exc, Exception):
                raise
            return
        if kinds:
            now = time.time()
            self.gauges.action_latency(kinds, [now - t for t in times])
        assert self.stream is not None
        consumer: Any = self.app.consumer
        position = self.position
        for partition_records in by_partition.values():
            for r in partition_records:
                i = r.item
                if i.event is not None:
                    await self.stream.ack(i.event)
                else:  # read again by the worker: let Faust commit past it
                    await consumer._add_gap(TP(i.topic, i.partition), i.offset, i.offset)
                where = (i.topic, i.partition)
                if i.offset >= position.get(where, 0):
                    position[where] = i.offset + 1
            self.processed += len(partition_records)

    def _outputs(self, out: BatchOutput) -> Iterator[tuple[str, bytes | None, bytes]]:
        t = self.settings.topics
        for value, (kind, key) in zip(out.actions, out.action_keys, strict=True):
            yield (t.alerts if kind == "alert" else t.offers), key.encode(), value
        for value, key in zip(out.decisions, out.decision_keys, strict=True):
            yield t.decisions, key.encode(), value
        for value, maybe_key in zip(out.dead_letters, out.dead_letter_keys, strict=True):
            yield t.dlq, (maybe_key.encode() if maybe_key else None), value

    def _fit(
        self, topic: str, key: bytes | None, value: bytes, inputs: Iterable[Input]
    ) -> tuple[str, bytes | None, bytes]:
        """The output as it is if its topic takes it, else its `output_too_large` dead letter."""
        size, limit = self.limits.too_large(topic, key, value)
        if size <= limit:
            return topic, key, value
        return self._too_large(topic, key, value, size, limit, inputs, refused=False)

    def _too_large(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        size: int,
        limit: int,
        inputs: Iterable[Input],
        *,
        refused: bool,
    ) -> tuple[str, bytes | None, bytes]:
        """The small dead letter that replaces an output too large for its topic: which output
        it was and where its input is (found in the batch by event id)."""
        t = self.settings.topics
        kind = {t.offers: "action", t.alerts: "action", t.decisions: "decision"}.get(
            topic, "dead_letter"
        )
        try:
            ids = ids_decoder.decode(value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            ids = OutputIds()
        origin, source, partition, offset = ids.origin, ids.topic, ids.partition, ids.offset
        if kind != "dead_letter":  # an action or decision: its event's input record
            origin = source = partition = offset = None
            for i in inputs:
                try:
                    found = event_id_decoder.decode(i.value).event_id == ids.event_id
                except (msgspec.DecodeError, msgspec.ValidationError):
                    found = False
                if found and ids.event_id is not None:
                    origin = f"{i.topic}/{i.partition}@{i.offset}"
                    source, partition, offset = i.topic, i.partition, i.offset
                    break
        how = "refused by Kafka as too large" if refused else "over the topic's limit"
        error = (
            f"{kind} of {size} bytes for {topic}: {how} (max.message.bytes {limit}); "
            f"the input is at {origin}"
        )
        letter = OutputTooLarge(
            error=error,
            origin=origin,
            customer_id=ids.customer_id,
            topic=source,
            partition=partition,
            offset=offset,
            output=kind,
            output_topic=topic,
            size=size,
            limit=limit,
            event_id=ids.event_id,
            pack=ids.pack,
            rule_id=ids.rule_id,
            action_id=ids.action_id,
            dead_letter_reason=ids.reason if kind == "dead_letter" else None,
        )
        ids_seen = {
            "event_id": ids.event_id,
            "rule_id": ids.rule_id,
            "pack": ids.pack,
            "action_id": ids.action_id,
            "origin": origin,
        }
        log.warning(
            "output too large: %s; sent to %s as output_too_large",
            error,
            t.dlq,
            extra={k: v for k, v in ids_seen.items() if v is not None},
        )
        self.observer.dead_letter("output_too_large")
        return t.dlq, key, msgspec.json.encode(letter)

    async def _deliver(
        self, messages: Sequence[Message], batch: Sequence[Released[Input]] | None = None
    ) -> list[Any]:
        """Send and wait until Kafka has every message (each inside its transaction, if
        any); the record metadata, in order. Nothing is acked before this returns.

        With at_least_once, outputs (`batch`: the input records they came from) that Kafka
        refuses as too large become `output_too_large` dead letters (a record refused in a
        batch of several is first sent again alone), and records Kafka cannot take now (a
        topic missing, a leader or the broker away, a timeout) are sent again with backoff
        until it has them, saying what is wrong. With exactly_once any failure raises
        (`_process` then abandons the transactions). Other failures raise DeliveryError.
        """
        if not messages:
            return []
        messages = list(messages)
        results: list[Any] = [None] * len(messages)
        todo = list(range(len(messages)))
        alone: set[int] = set()  # refused as too large with others: sent by itself next
        replaced: set[int] = set()  # now the output_too_large dead letter of an output
        delay = 1.0
        began, troubled = time.monotonic(), False
        while todo:
            sending = [messages[i] for i in todo]
            singly = {n for n, i in enumerate(todo) if i in alone} if alone else set()
            outcome, stalled = await self._watch(self._send(sending, singly), sending)
            troubled = troubled or stalled
            again: list[int] = []
            refused: list[int] = []
            errors: list[BaseException] = []
            for i, result in zip(todo, outcome, strict=True):
                if not isinstance(result, BaseException):
                    results[i] = result
                elif self.exactly_once:
                    raise DeliveryError(
                        f"Kafka did not take a record for {messages[i][0]}: {result!r}"
                    ) from result
                elif isinstance(result, TOO_LARGE) and batch is not None and i not in replaced:
                    refused.append(i)
                elif retriable(result):
                    again.append(i)
                    errors.append(result)
                else:
                    raise DeliveryError(
                        f"Kafka refused a record for {messages[i][0]}: {result!r}"
                    ) from result
            if refused:
                assert batch is not None
                problems = await self._refresh_limits()
                for i in refused:
                    topic, key, value, partition, tid = messages[i]
                    size, limit = self.limits.too_large(topic, key, value)
                    if size <= limit and i not in alone:
                        alone.add(i)  # maybe only the batch it went in was too large
                    else:
                        inputs = (r.item for r in batch)
                        topic, key, value = self._too_large(
                            topic, key, value, size, limit, inputs, refused=size <= limit
                        )
                        messages[i] = (topic, key, value, partition, tid)
                        replaced.add(i)
                        alone.discard(i)
                    again.append(i)
                for problem in problems:
                    log.warning("%s", problem)
            if errors:
                topics = sorted({messages[i][0] for i in again})
                log.error(
                    "Kafka did not take %d records for %s (%r); sending them again in %.0f s; "
                    "nothing after them is acknowledged until it has them",
                    len(errors),
                    ", ".join(topics),
                    errors[0],
                    delay,
                )
                await self._pause(delay)
                delay = min(delay * 2, 30.0)
                troubled = True
            todo = sorted(again)
        if troubled:
            waited = time.monotonic() - began
            log.warning("delivery resumed: Kafka has the batch's records after %.0f s", waited)
            for problem in await self._refresh_limits():  # a topic created again may differ
                log.warning("%s", problem)
        return results

    async def _send(self, messages: Sequence[Message], alone: set[int]) -> list[Any]:
        """Send the messages and wait for Kafka's answers: per message its record metadata
        or the error. Those at the positions in `alone` go last, one at a time (each in a
        record batch of its own). After a topic's send fails, its other messages are not
        tried (aiokafka would wait for its metadata again each time).

        Kafka refuses a whole record batch over the topic's limit, and aiokafka does not
        split it as Java clients do: for a topic whose limit is below the producer's batch
        size, a message that would take the records sent to it past the limit waits until
        Kafka has those (their batches are then closed)."""
        producer: Any = self.app.producer
        await producer.maybe_start()
        pending: list[Any] = []
        failed: dict[str, BaseException] = {}
        small = self.limits.small
        batched: dict[str, tuple[int, list[Any]]] = {}  # small-limit topic: bytes, futures
        loop = asyncio.get_running_loop()
        try:
            for n, (topic, key, value, partition, tid) in enumerate(messages):
                error = failed.get(topic)
                if error is None and n not in alone:
                    if topic in small:  # rarely: a topic with a limit below the batch size
                        size = len(value or b"") + len(key or b"") + RECORD_FRAMING
                        used, sent = batched.get(topic, (BATCH_HEADER, []))
                        if sent and used + size > small[topic]:
                            await asyncio.wait(sent)
                            used, sent = BATCH_HEADER, []
                        batched[topic] = (used + size, sent)
                    try:
                        pending.append(
                            await producer.send(
                                topic, key, value, partition, None, None, transactional_id=tid
                            )
                        )
                        if topic in small:
                            batched[topic][1].append(pending[-1])
                        continue
                    except ProducerSendError as exc:
                        error = exc.__cause__ or exc
                        if not isinstance(error, TOO_LARGE):
                            failed[topic] = error
                future = loop.create_future()
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(None)  # sent below
                pending.append(future)
            results: list[Any] = list(await asyncio.gather(*pending, return_exceptions=True))
        except asyncio.CancelledError:  # given up: so are the answers still to come
            for future in pending:
                if not future.cancel() and not future.cancelled():
                    future.exception()  # already answered: taken, so never reported
            raise
        for n in sorted(alone):
            topic, key, value, partition, tid = messages[n]
            try:
                answer = await producer.send(
                    topic, key, value, partition, None, None, transactional_id=tid
                )
                results[n] = await answer
            except ProducerSendError as exc:
                results[n] = exc.__cause__ or exc
            except KafkaError as exc:
                results[n] = exc
        return results

    async def _watch(
        self, sending: Coroutine[Any, Any, list[Any]], messages: Sequence[Message]
    ) -> tuple[list[Any], bool]:
        """Await `sending`, and whether it took long; while it does, say why (`_stalled`).
        When the worker is stopping, give up (nothing of the batch is acked)."""
        task = asyncio.ensure_future(sending)
        started = time.monotonic()
        report = STALL_REPORT
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=1.0)
                if done:
                    break
                if self.app.should_stop:
                    raise DeliveryError(
                        f"stopping with {len(messages)} records of a batch not confirmed by "
                        "Kafka: the batch is not acknowledged and runs again at the next start"
                    )
                waited = time.monotonic() - started
                if waited >= report:
                    report = waited + min(report * 2, 60.0)
                    await self._stalled(messages, waited)
        finally:
            if not task.done():
                task.cancel()
        return task.result(), report > STALL_REPORT

    async def _stalled(self, messages: Sequence[Message], waited: float) -> None:
        """Say why Kafka has not confirmed the records yet. A topic missing: with
        exactly_once, raise (the open transaction cannot wait for it: see _give_up); with
        at_least_once, fail its records aiokafka queues (it would refresh metadata in a
        tight loop, a core busy, until they expire): `_deliver` sends them again, with
        backoff, and aiokafka then waits for the topic's metadata at 10 requests a second."""
        topics = sorted({m[0] for m in messages})
        missing = await asyncio.to_thread(self._missing_topics, topics)
        if missing is None:
            log.warning(
                "Kafka has not confirmed %d records for %.0f s and does not answer; waiting",
                len(messages),
                waited,
            )
        elif missing:
            names = ", ".join(missing)
            if self.exactly_once:
                raise DeliveryError(
                    f"topic {names} does not exist: with exactly_once the worker cannot wait "
                    "for it inside the open transaction"
                )
            log.error(
                "topic %s does not exist (deleted?): %d records of this batch wait for it "
                "(%.0f s so far); nothing after them is acknowledged; delivery resumes once "
                "it exists again (`crm-triggers topics create` creates it)",
                names,
                sum(1 for m in messages if m[0] in missing),
                waited,
            )
            self._fail_pending(UnknownTopicOrPartitionError(), missing)
        else:
            log.warning(
                "Kafka has not confirmed %d records for %.0f s; waiting", len(messages), waited
            )

    def _missing_topics(self, topics: Sequence[str]) -> list[str] | None:
        """Which of `topics` do not exist (blocking: run off the event loop); None if Kafka
        does not answer."""
        if self._admin is None:
            self._admin = admin_client(self.settings)
        try:
            existing = self._admin.list_topics(timeout=5).topics
        except KafkaException:
            return None
        return [t for t in topics if t not in existing]

    async def _refresh_limits(self) -> list[str]:
        problems: list[str] = await asyncio.to_thread(self.limits.read, self.settings)
        return problems

    async def _pause(self, seconds: float) -> None:
        """Sleep before sending again; raise if the worker stops meanwhile."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if self.app.should_stop:
                raise DeliveryError("stopping before Kafka took a batch: it is not acknowledged")
            await asyncio.sleep(min(1.0, until - time.monotonic()))

    def _fail_pending(self, reason: BaseException, topics: Iterable[str] | None = None) -> None:
        """Fail the record batches the producers still queue (for `topics`, or all), once
        the worker gives their batch up, or while a topic is missing. Otherwise aiokafka
        waits for them, up to the producer's request timeout (20 minutes), also when it
        stops: a batch for a deleted topic waits for a leader that does not come. Each is
        taken off the queue as aiokafka does with a batch that expired without a leader
        (failing it in place breaks aiokafka's bookkeeping)."""
        only = None if topics is None else set(topics)
        producer: Any = self.app.producer
        clients = [
            getattr(producer, "_producer", None),
            *getattr(producer, "_transaction_producers", {}).values(),
        ]
        for client in clients:
            accumulator = getattr(client, "_message_accumulator", None)
            queued = getattr(accumulator, "_batches", None)
            if accumulator is None or queued is None:
                continue
            with contextlib.suppress(Exception):  # best effort: the worker stops anyway
                for tp in list(queued):
                    while queued.get(tp) and (only is None or tp.topic in only):
                        accumulator._pop_batch(tp).failure(exception=reason)

    async def _give_up(self, tids: Iterable[str | None], exc: BaseException) -> None:
        """The batch failed part-way: it is not acked, so it runs again at the next start.
        The worker processes nothing more (a later batch would store the state this one
        left in memory) and stops, with exit code 1 unless it was stopping anyway (an
        agent's own crash only restarts the agent).

        With exactly_once the open transactions must not commit: aiokafka commits one that
        lacks a refused record, and after a refusal the next record of that partition fails
        (sequence numbers). Every commit is refused from now on and the batch's
        transactions are aborted (best effort: one waiting for a deleted topic cannot end;
        Kafka aborts it when the restarted worker takes its transactional id over). The
        restarted worker goes on from the last committed transaction, with state restored
        from the changelog (no clean shutdown is recorded)."""
        if self.failed is not None:
            return
        self.failed = exc
        self.health.fail(f"a batch could not be delivered: {exc}")
        self._fail_pending(exc)
        stopping = self.app.should_stop
        if self.exactly_once:
            log.error(
                "exactly_once: a batch could not be delivered (%s); its transactions are "
                "aborted and the worker stops: restarted, it resumes from the last committed "
                "transaction",
                exc,
            )
            producer: Any = self.app.producer
            aborts = [producer.abort_transaction(t) for t in sorted({t for t in tids if t})]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*aborts, return_exceptions=True), 5)
        elif not stopping:
            log.error("a batch could not be delivered (%s); the worker stops", exc)
        if not stopping:
            await self.app.crash(exc)

    async def _send_changelog(self, tids: Mapping[int, str | None]) -> None:
        """The state changes of the batch to the table's changelog (partition p's to
        changelog partition p, in the transaction of input partition p), then the changelog
        offsets the local store has (so a restart restores only what came after them)."""
        changes, self.store.changes = self.store.changes, defaultdict(list)
        topic = self.table.changelog_topic.get_topic_name()
        sent = await self._deliver(
            [
                (topic, k, v, partition, tids.get(partition))
                for partition, writes in changes.items()
                for k, v in writes
            ]
        )
        last: dict[Any, int] = {}
        for m in sent:
            last[m.topic_partition] = max(m.offset, last.get(m.topic_partition, -1))
        store: Any = self.table.data
        for tp, offset in last.items():
            if self.exactly_once:  # the offset counts once the transaction is committed
                self.app.tables.persist_offset_on_commit(store, tp, offset)
            else:
                store.set_persisted_offset(tp, offset)

    def _transactional_id(self, record: Input) -> str | None:
        """With exactly_once, the Kafka transaction of the record's input partition (the one
        Faust commits that partition's offsets in); None otherwise."""
        if not self.exactly_once:
            return None
        group = self.app.assignor.group_for_topic(record.topic)
        return f"{self.app.conf.id}-{group}-{record.partition}"


def build_app(settings: Settings) -> faust.App:
    """The Faust app for these settings (aiokafka transport, RocksDB tables, no auto topics)."""
    conf: dict[str, Any] = {
        "broker": [f"kafka://{b}" for b in settings.bootstrap()],
        "store": "rocksdb://",
        "datadir": str(settings.state_dir),
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "topic_partitions": settings.partitions,
        "processing_guarantee": settings.processing_guarantee,
        "web_enabled": False,
        "producer_acks": -1,
        "producer_max_batch_size": MAX_BATCH_SIZE,
        "producer_max_request_size": MAX_REQUEST_SIZE,
        "consumer_auto_offset_reset": "earliest",
        "stream_wait_empty": False,
        "broker_commit_interval": 1.0,
        "broker_commit_every": 2000,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    credentials = broker_credentials(settings)
    if credentials is not None:
        conf["broker_credentials"] = credentials
    return faust.App(settings.app_id, **conf)


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for the configured security, or None for PLAINTEXT."""
    sec = settings.kafka
    if sec.security_protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if sec.security_protocol in ("SSL", "SASL_SSL"):
        import ssl

        ssl_context = ssl.create_default_context(cafile=sec.ssl_cafile)
        if sec.ssl_certfile is not None:
            ssl_context.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile)
    if sec.security_protocol.startswith("SASL"):
        password = sec.sasl_password.get_secret_value() if sec.sasl_password else None
        return faust.SASLCredentials(
            username=sec.sasl_username,
            password=password,
            mechanism=sec.sasl_mechanism or "PLAIN",
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


def run_worker(settings: Settings, rules: RuleSet) -> int:
    """Run a worker until it is stopped (SIGINT/SIGTERM); serves /metrics, /healthz and
    /readyz on web_port."""

    def say(message: str) -> None:
        print(f"crm-triggers worker: {message}", file=sys.stderr, flush=True)

    wait_for_kafka(settings, say)
    limits = SizeLimits.of_settings(settings)
    for problem in limits.read(settings):  # Kafka's default limit for those topics
        say(f"{problem}; assuming Kafka's default ({DEFAULT_MAX_MESSAGE_BYTES} bytes)")
    observer = PrometheusObserver()
    worker = Worker(settings, rules, observer, limits)
    if settings.web_port:
        serve(settings.web_port, observer.registry, worker.health)
        log.info("/metrics, /healthz and /readyz on http://0.0.0.0:%d", settings.web_port)
    clean = CleanShutdown(Path(worker.app.conf.tabledir), enabled=worker.exactly_once)
    clean.check(say)
    faust_worker = faust.Worker(
        worker.app, worker.reporter, loglevel="INFO", quiet=True, override_logging=False
    )  # our JSON handler (monitoring/logs.py) stays: Faust would replace it
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exit:
        failed = worker.failed  # a batch given up: with exactly_once, state not trusted
        if exit.code in (0, None) and worker.app.crash_reason is None and failed is None:
            clean.mark()
        raise
    return 0


class CleanShutdown:
    """With exactly_once, local state is only trusted after a clean shutdown.

    After a crash the local RocksDB can hold writes of a transaction that Kafka aborted:
    events that will be delivered again would then look already applied, and their
    actions would never be committed. Like Kafka Streams under exactly-once, a worker that
    did not stop cleanly discards its local state and restores it from the changelog
    (read_committed, so only committed state comes back).
    """

    def __init__(self, tabledir: Path, *, enabled: bool) -> None:
        self.tabledir = tabledir
        self.marker = tabledir.parent / "clean-shutdown"
        self.enabled = enabled

    def check(self, say: Callable[[str], None]) -> None:
        """Discard local state unless the last run stopped cleanly; then unmark."""
        if not self.enabled:
            return
        if not self.marker.exists() and self.tabledir.exists() and any(self.tabledir.iterdir()):
            say(
                "no clean shutdown recorded (exactly_once): local state discarded, "
                "restoring it from the changelog"
            )
            shutil.rmtree(self.tabledir)
        self.marker.unlink(missing_ok=True)

    def mark(self) -> None:
        if self.enabled:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
