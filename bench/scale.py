"""Scale: the embedded core at 1M customers, worker memory, and state restore from the changelog.

    python -m bench.scale [--customers 100000 1000000] [--days 2] [--seed 1] [--quick]

For each customer count it simulates `--days` days (cached under `bench/.data/`; every customer
gets a full profile event on the first day, so every customer has a state) and:

1. **Core**: pinned to one CPU, runs the stream through `streams.replay.replay` with the default
   state store (RocksDB through rocksdict on local disk, `StateCache` of 100,000 customers in
   front), reading the file as it goes. Each record carries the Kafka position the worker would
   give it (`source` topic/partition, `offset`; partition = murmur2(customer id) % 4), so the
   states built are the worker's. Reports events/s, µs/event and the cache's hits and misses.
2. **Changelog**: writes every customer's final encoded state to the worker's changelog topic on
   a real broker (started here, or `$KAFKA_BOOTSTRAP`), as the worker does: key = customer id,
   value = encoded state, partition = the customer's input partition; one record per customer
   (a fully compacted changelog).
3. **Restore**: starts one `crm-triggers worker` (shipped packs, empty `--state-dir`) and sends a
   sentinel transaction right after start; times Faust's restore from its log lines and the
   sentinel's decision, against the same worker started on an empty changelog. The sentinel
   fires `dormant-reactivation` only if the customer's state was restored. Then it sends
   `--after-events` events (the stream's last day, moved one day on, new ids) and waits until
   they are committed.
4. **Memory**: the worker's RSS (VmRSS, VmHWM) after restore and after those events; the
   table's RocksDB size as the worker left it and after a full manual compaction; the restored
   keys are counted and compared byte for byte with the states built in step 1.

Results: `bench/results/scale.json` and the scale section of BENCHMARKS.md; `--quick` (10,000
customers, 10,000 events after restore) writes `bench/results/scale-quick.json` only. Progress
goes to stderr. Disk: the cached stream (1.5 GB for 1M customers x 2 days) and, while it runs,
about 0.5 KB of RocksDB per customer for the core's states and as much again for the worker's.
`--section-only` rewrites the BENCHMARKS.md section from `bench/results/scale.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rocksdict import Options, Rdict

from bench.replay_throughput import DATA, pin_one_cpu, stream_file
from bench.worker_throughput import (
    PACKS,
    PARTITIONS,
    ROOT,
    _delete_topics,
    _n,
    _pdeathsig,
    _tail,
    ancestors,
    bench_kafka,
    bench_settings,
    committed,
    cpu_seconds,
    high_watermarks,
    input_partitions,
    java_version,
    log,
    machine_info,
    offsets_reader,
    other_work,
    wait_for_leaders,
    worker_env,
)
from rules.ruleset import load_rules
from scripts.kafka_local import kafka_version
from state.store import RocksStore, StateCache
from streams.engine import Engine, Record
from streams.produce import produce
from streams.replay import Outputs, Progress, replay
from streams.settings import STATE_TABLE, Settings, Topics
from streams.topics import create_topics

RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
START, END = "<!-- scale:start -->", "<!-- scale:end -->"
BEFORE = "<!-- worker-throughput:start -->"
STATE_TTL = Settings.model_fields["state_ttl_days"].default * 86400
# Topic names in the states built by the core run: as long as the benchmark's (bench + 8 hex
# digits), so the states are the worker's size, but not the topics the worker reads, so its
# new events are never taken for redeliveries of these.
PRIOR = "bench" + "0" * 8
TYPES = ("transaction", "interaction", "profile")
READY_TIMEOUT = 900.0
FAUST_TIME = re.compile(rb"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
# Faust's recovery log lines (faust/tables/recovery.py), in the order they appear
MARKS = {
    "restoring": b"Restoring state from changelog topics",
    "done_reading": b"Done reading from changelog topics",
    "recovery_complete": b"Recovery complete",
    "ready": b"Worker ready",
}


# --- Kafka's partitioner ----------------------------------------------------------------------


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), a signed int32:
    the hash of the Java clients' default partitioner and librdkafka's `murmur2_random`."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    whole = length & ~3
    for i in range(0, whole, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * m) & mask
        k = ((k ^ (k >> 24)) * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h = ((h ^ data[whole]) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int = PARTITIONS) -> int:
    """The partition Kafka's default partitioner gives a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def shift_event(event: dict[str, Any], by: timedelta, suffix: str) -> dict[str, Any]:
    """The same event `by` later in event time (same UTC offset), with a new event id."""
    ts = datetime.fromisoformat(event["ts"]) + by
    return {**event, "ts": ts.isoformat(), "event_id": f"{event['event_id']}{suffix}"}


# --- the stream as the worker would see it ----------------------------------------------------


class _Line(msgspec.Struct):
    type: str = ""
    customer_id: str = ""
    ts: str = ""
    direction: str = ""


@dataclass
class Prepared:
    """Per non-blank line of the stream: its input partition (as `code` = type index *
    PARTITIONS + partition) and its offset there, in stream order; and facts for the run."""

    codes: array[int]
    offsets: array[int]
    customers: int
    last_day_start: int  # index of the first event of the stream's last (local) day
    last_ts: str
    sentinel_customer: str  # the customer of the last debit: it has a `last_active`
    seconds: float

    @property
    def events(self) -> int:
        return len(self.codes)


def prepare(path: Path) -> Prepared:
    decode = msgspec.json.Decoder(_Line).decode
    kinds = {t: i for i, t in enumerate(TYPES)}
    partition_of: dict[str, int] = {}
    next_offset = [0] * (len(TYPES) * PARTITIONS)
    codes, offsets = array("B"), array("q")
    day, last_day_start, last_ts, debit = "", 0, "", ""
    started = time.perf_counter()
    with path.open("rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            ev = decode(line)
            p = partition_of.get(ev.customer_id)
            if p is None:
                p = partition_of[ev.customer_id] = partition_for(ev.customer_id.encode())
            code = kinds[ev.type] * PARTITIONS + p
            codes.append(code)
            offsets.append(next_offset[code])
            next_offset[code] += 1
            if ev.ts[:10] != day:
                day, last_day_start = ev.ts[:10], len(codes) - 1
            last_ts = ev.ts
            if ev.type == "transaction" and ev.direction == "debit":
                debit = ev.customer_id
    if not debit:
        raise SystemExit(f"bench: no debit transaction in {path.name}")
    return Prepared(
        codes,
        offsets,
        len(partition_of),
        last_day_start,
        last_ts,
        debit,
        time.perf_counter() - started,
    )


def worker_records(lines: IO[bytes], prep: Prepared, topics: Topics) -> Iterator[Record]:
    """The stream's records with the Kafka positions the worker would give them."""
    names = {kind: name for name, kind in topics.inputs().items()}
    sources = [f"{names[t]}/{p}" for t in TYPES for p in range(PARTITIONS)]
    codes, offsets = prep.codes, prep.offsets
    i = 0
    for line in lines:
        line = line.strip()
        if line:
            yield Record(line, "", sources[codes[i]], offsets[i])
            i += 1


def ensure_stream(customers: int, days: int, seed: int) -> Path:
    """`stream_file`, simulated in a child process if it is not cached yet: simulating a
    million customers takes several GB, which the core measurement's process should not keep."""
    call = f"stream_file({customers}, {days}, {seed})"
    code = f"from bench.replay_throughput import stream_file; {call}"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return stream_file(customers, days, seed)


def prior_topics() -> Topics:
    return Topics(**{name: f"{PRIOR}.{name}" for name in Topics.model_fields})


# --- 1. the embedded core ---------------------------------------------------------------------


class CountingStore(RocksStore):
    """RocksStore that counts reads (every read is a StateCache miss) and states written."""

    reads = 0
    found = 0
    written = 0

    def get(self, customer_id: str) -> bytes | None:
        self.reads += 1
        value = super().get(customer_id)
        if value is not None:
            self.found += 1
        return value

    def write(self, updates: Mapping[str, bytes | None]) -> None:
        self.written += len(updates)
        super().write(updates)


def dir_bytes(path: Path) -> int:
    """Bytes of the files under `path` (apparent sizes)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(folder) / name).stat().st_size
    return total


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_core(
    path: Path, prep: Prepared, customers: int, days: int, store_dir: Path
) -> dict[str, Any]:
    """The stream through `replay` on RocksDB, pinned to one CPU; the states stay in `store_dir`."""
    original = os.sched_getaffinity(0)
    cpu = pin_one_cpu()
    try:
        store = CountingStore(store_dir, durable=False)
        states = StateCache(store)
        engine = Engine(load_rules([PACKS]), states, state_ttl=STATE_TTL)
        gc.collect()
        gc.freeze()
        log(f"core: {prep.events:,} events through replay on RocksDB (one CPU)")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with path.open("rb") as lines:
            summary = replay(
                engine,
                worker_records(lines, prep, prior_topics()),
                Outputs(),
                on_batch=Progress("bench core", interval=15.0),
            )
            store.close()
        wall, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
        gc.unfreeze()
    finally:
        os.sched_setaffinity(0, original)
    lookups = summary.events - summary.dead_letters
    log(f"core: {summary.line()}; CPU {cpu_s:.1f}s")
    return {
        "customers": customers,
        "days": days,
        "events": summary.events,
        "file": path.name,
        "mb": round(path.stat().st_size / 1e6, 1),
        "pinned_cpu": cpu,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu_s, 2),
        "events_per_s": round(summary.events / wall),
        "us_per_event": round(wall / summary.events * 1e6, 2),
        "cpu_events_per_s": round(summary.events / cpu_s),
        "cache": {
            "capacity": states.capacity,
            "lookups": lookups,
            "hits": lookups - store.reads,
            "misses": store.reads,
            "misses_read_from_rocksdb": store.found,
            "misses_new_customer": store.reads - store.found,
            "states_written": store.written,
            "states_written_per_event": round(store.written / summary.events, 3),
        },
        "outputs": {
            "actions": summary.actions,
            "decisions": summary.decisions,
            "dead_letters": summary.dead_letters,
            "duplicates": summary.duplicates,
        },
        "store_bytes": dir_bytes(store_dir),
        "prepare_seconds": round(prep.seconds, 1),
    }


def state_sizes(store_dir: Path) -> dict[str, Any]:
    db = Rdict(str(store_dir), Options(raw_mode=True))
    try:
        sizes: list[int] = []
        key_bytes = 0
        for key, value in db.items():
            assert isinstance(key, bytes) and isinstance(value, bytes)
            sizes.append(len(value))
            key_bytes += len(key)
    finally:
        db.close()
    return {
        "states": len(sizes),
        "value_bytes": sum(sizes),
        "key_bytes": key_bytes,
        "mean_bytes": round(statistics.fmean(sizes), 1) if sizes else 0,
        "p99_bytes": percentile(sizes, 0.99) if sizes else 0,
        "max_bytes": max(sizes, default=0),
    }


# --- 2. the changelog -------------------------------------------------------------------------


def write_changelog(s: Settings, store_dir: Path) -> dict[str, Any]:
    """Every state to the worker's changelog topic: the worker's key, value and partition.

    No compression and acks=all, like the worker's (Faust's aiokafka) producer."""
    producer = Producer(
        {
            "bootstrap.servers": s.brokers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            **s.kafka.librdkafka(),
        }
    )
    topic = s.changelog_topic()
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    records = nbytes = 0
    per_partition = [0] * PARTITIONS
    db = Rdict(str(store_dir), Options(raw_mode=True))
    started = time.perf_counter()
    try:
        for key, value in db.items():
            assert isinstance(key, bytes) and isinstance(value, bytes)
            p = partition_for(key)
            while True:
                try:
                    producer.produce(topic, value, key, partition=p, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            records += 1
            nbytes += len(key) + len(value)
            per_partition[p] += 1
            if records % 200_000 == 0:
                log(f"changelog: {records:,} records sent")
    finally:
        db.close()
    left = producer.flush(120)
    seconds = time.perf_counter() - started
    if left or failed:
        raise SystemExit(f"bench: {left} changelog records not delivered, {failed[:3]}")
    return {
        "changelog_records": records,
        "changelog_bytes": nbytes,
        "per_partition": per_partition,
        "produce_seconds": round(seconds, 2),
    }


# --- 3. the worker ----------------------------------------------------------------------------


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = round(int(value.split()[0]) / 1024, 1)
    return out


def faust_marks(log_bytes: bytes) -> dict[str, float]:
    """Wall-clock time (epoch s) of the first log line holding each of MARKS."""
    found: dict[str, float] = {}
    for line in log_bytes.splitlines():
        for name, text in MARKS.items():
            if name not in found and text in line:
                stamp = FAUST_TIME.match(line)
                if stamp:
                    local = datetime.strptime(stamp.group(1).decode(), "%Y-%m-%d %H:%M:%S,%f")
                    found[name] = local.timestamp()
    return found


def sentinel_event(customer: str, last_ts: str, tag: str) -> dict[str, Any]:
    """A card debit 400 days after the stream's end: `card-instalment` decides it on any state
    (emitted or suppressed); `dormant-reactivation` fires only if the customer's state, with
    its last customer-initiated activity, was restored."""
    ts = datetime.fromisoformat(last_ts) + timedelta(days=400)
    return {
        "event_id": f"sentinel-{tag}",
        "type": "transaction",
        "customer_id": customer,
        "ts": ts.isoformat(),
        "amount": 20000.0,
        "currency": "CNY",
        "direction": "debit",
        "channel": "card",
    }


def after_events(path: Path, prep: Prepared, count: int) -> list[dict[str, Any]]:
    """The first `count` events of the stream's last day, one day later, with new ids."""
    out: list[dict[str, Any]] = []
    i = 0
    with path.open("rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            if i >= prep.last_day_start:
                out.append(shift_event(json.loads(line), timedelta(days=1), "-after"))
                if len(out) >= count:
                    break
            i += 1
    return out


@dataclass
class WorkerRun:
    """One worker process from start to stop, and what was seen of it."""

    name: str
    s: Settings
    log_path: Path
    ours: set[int]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # epoch seconds
    result: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        with self.log_path.open("wb") as out:
            self.started = time.time()
            self.proc = subprocess.Popen(
                [*_pdeathsig(), sys.executable, "-m", "streams.cli", "worker"],
                cwd=ROOT,
                env=worker_env(self.s),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.ours.add(self.proc.pid)

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(
                f"bench: the {self.name} worker exited with {self.proc.returncode}:\n"
                + _tail(self.log_path)
            )

    def memory(self) -> dict[str, float]:
        assert self.proc is not None
        return proc_memory(self.proc.pid)

    def decided(self, event_id: str, timeout: float) -> tuple[float, list[str]]:
        """Seconds from start to the first decision on `event_id` (its Kafka timestamp, set by
        the worker's producer), and the rules decided on it (`rule:outcome`)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.s.brokers,
                "group.id": f"scale-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
            }
        )
        topic = self.s.topics.decisions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        first: float | None = None
        rules: list[str] = []
        deadline = time.monotonic() + timeout
        last_note = time.monotonic()
        try:
            while time.monotonic() < deadline:
                for msg in consumer.consume(500, 0.1):
                    if msg.error() is not None:
                        continue
                    decision = json.loads(msg.value() or b"{}")
                    if decision.get("event_id") != event_id:
                        continue
                    if first is None:
                        first = msg.timestamp()[1] / 1000 - self.started
                        self.result["cpu_seconds_at_decision"] = _cpu(self.proc)
                        deadline = time.monotonic() + 2.0  # the rest of its decisions
                    rules.append(f"{decision['rule_id']}:{decision['outcome']}")
                if first is None:
                    self.alive()
                    if time.monotonic() - last_note > 15:
                        last_note = time.monotonic()
                        log(
                            f"{self.name}: waiting for the sentinel's decision "
                            f"({time.time() - self.started:.0f}s since start)"
                        )
        finally:
            consumer.close()
        if first is None:
            raise SystemExit(
                f"bench: no decision on {event_id} from the {self.name} worker in "
                f"{timeout:.0f}s:\n{_tail(self.log_path)}"
            )
        return first, sorted(rules)

    def drain(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Produce `events` and wait until the worker has committed them all."""
        parts = input_partitions(self.s)
        reader = offsets_reader(self.s)
        began = time.perf_counter()
        cpu0 = _cpu(self.proc)
        produced = produce(events, self.s)
        highs = high_watermarks(self.s, parts)
        deadline = began + max(300.0, len(events) / 500)
        last_note = began
        try:
            while True:
                self.alive()
                offsets = committed(reader, parts)
                if offsets is not None and all(offsets.get(k, 0) >= v for k, v in highs.items()):
                    break
                now = time.perf_counter()
                if now > deadline:
                    raise SystemExit(f"bench: {self.name}: events not committed in time")
                if now - last_note > 10 and offsets is not None:
                    last_note = now
                    done = sum(offsets.values()) - sum(highs.values()) + len(events) + 1
                    log(f"{self.name}: about {max(done, 0):,}/{len(events):,} events committed")
                time.sleep(0.1)
        finally:
            reader.close()
        seconds = time.perf_counter() - began
        cpu1 = _cpu(self.proc)
        return {
            "events": len(events),
            "produce_seconds": round(produced.seconds, 2),
            "seconds": round(seconds, 2),
            "events_per_s": round(len(events) / seconds),
            "worker_cpu_seconds": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 else None,
            "customers_touched": len({e["customer_id"] for e in events}),
        }

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def marks(self) -> dict[str, float]:
        return {
            name: round(t - self.started, 3)
            for name, t in faust_marks(self.log_path.read_bytes()).items()
        }

    def log_notes(self) -> dict[str, Any]:
        """Warnings and errors the worker logged (counted, the first few quoted, by kind), and
        Faust's recovery lines."""
        text = self.log_path.read_bytes().decode(errors="replace").splitlines()
        bad = [x for x in text if "[WARNING]" in x or "[ERROR]" in x or "Traceback" in x]
        kinds: dict[str, int] = {}
        for line in bad:
            kind = re.sub(r"^\[[^]]*\] \[\d+\] ", "", line)
            kind = re.sub(r"[\d.]+", "N", kind)[:120]
            kinds[kind] = kinds.get(kind, 0) + 1
        recovery = [x[:200] for x in text if "Recovery]:" in x or "recovery" in x.lower()]
        return {
            "warnings_or_errors": len(bad),
            "kinds": kinds,
            "first": [x[:300] for x in bad[:5]],
            "recovery_lines": recovery[:40],
        }


def _cpu(proc: subprocess.Popen[bytes] | None) -> float | None:
    return cpu_seconds(proc.pid if proc is not None else None)


def running_work(ours: set[int]) -> set[str]:
    """Other tests, benchmarks, brokers or workers; not `flock` wrappers waiting for the lock
    this benchmark holds (their commands start once it is released)."""
    return {cmd for cmd in other_work(ours) if not re.match(r"(timeout \S+ )?flock ", cmd)}


def fresh_settings(bootstrap: str, state_dir: Path, stack: contextlib.ExitStack) -> Settings:
    """New topics (and consumer group) for one worker run on the broker."""
    s = bench_settings(bootstrap, state_dir)
    create_topics(s)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wait_for_leaders(admin, [*s.topics.inputs(), *s.topics.outputs(), s.changelog_topic()])
    if os.environ.get("KAFKA_BOOTSTRAP"):
        names = [*s.topics.inputs(), *s.topics.outputs(), s.changelog_topic()]
        stack.callback(_delete_topics, admin, names)
    return s


def table_dbs(state_dir: Path) -> dict[int, Path]:
    """The worker's table databases by partition (Faust: `<tabledir>/<table>-<p>.db`)."""
    found: dict[int, Path] = {}
    for path in state_dir.rglob(f"{STATE_TABLE}-*.db"):
        found[int(path.name[len(STATE_TABLE) + 1 : -3])] = path
    return found


def compression_of(db: Path) -> str:
    """The compression in a RocksDB's latest OPTIONS file."""
    options = sorted(db.glob("OPTIONS-*"))
    if options:
        match = re.search(r"^\s*compression=(\S+)", options[-1].read_text(), re.M)
        if match:
            return match.group(1)
    return "unknown"


def verify_and_compact(
    state_dir: Path, store_dir: Path, touched: set[str]
) -> tuple[dict[str, Any], int]:
    """Count the worker's restored keys, compare each with the state the core run built, check
    each is in its partition's database; then compact every database fully. Returns the check
    and the bytes on disk after compaction."""
    source = Rdict(str(store_dir), Options(raw_mode=True))
    check = {
        "keys": 0,
        "same_bytes": 0,
        "changed_after_restore": 0,
        "mismatched": 0,
        "unexpected": 0,
        "wrong_partition": 0,
        "missing": 0,
    }
    seen = 0
    try:
        for partition, path in sorted(table_dbs(state_dir).items()):
            db = Rdict(str(path), Options(raw_mode=True))
            try:
                for key, value in db.items():
                    assert isinstance(key, bytes)
                    if key.startswith(b"__faust"):
                        continue  # Faust's persisted changelog offset
                    check["keys"] += 1
                    if partition_for(key) != partition:
                        check["wrong_partition"] += 1
                    want = source.get(key)
                    if want is None:
                        check["unexpected"] += 1
                    else:
                        seen += 1
                        if want == value:
                            check["same_bytes"] += 1
                        elif key.decode() in touched:
                            check["changed_after_restore"] += 1
                        else:
                            check["mismatched"] += 1
                db.compact_range(None, None)
            finally:
                db.close()
        check["missing"] = sum(1 for _ in source.items()) - seen
    finally:
        source.close()
    compacted = sum(dir_bytes(p) for p in table_dbs(state_dir).values())
    check["ok"] = not (
        check["mismatched"] or check["unexpected"] or check["wrong_partition"] or check["missing"]
    )
    return check, compacted


def run_scale(
    stack: contextlib.ExitStack,
    bootstrap: str,
    tmp: Path,
    ours: set[int],
    path: Path,
    prep: Prepared,
    store_dir: Path,
    state: dict[str, Any],
    after: int,
    broker_data: Path | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore and memory for one customer count: an empty-changelog worker first, then one
    restoring every state. Returns (memory row, restore row)."""
    customers = prep.customers
    tag = f"c{customers}"

    # the same worker, the same way, on an empty changelog
    base_s = fresh_settings(bootstrap, tmp / f"state-empty-{tag}", stack)
    base = WorkerRun(f"empty-changelog {tag}", base_s, tmp / f"worker-empty-{tag}.log", ours)
    log(f"{base.name}: starting a worker on an empty changelog")
    sentinel = sentinel_event(prep.sentinel_customer, prep.last_ts, f"empty-{tag}")
    base.start()
    try:
        produce([sentinel], base_s)
        base_decided, base_rules = base.decided(sentinel["event_id"], 120)
        base_mem = base.memory()
    finally:
        base_exit = base.stop()
    base_marks = base.marks()
    log(f"{base.name}: sentinel decided {base_decided:.2f}s after start ({', '.join(base_rules)})")

    # the changelog of every customer, then a worker that restores it
    s = fresh_settings(bootstrap, tmp / f"state-{tag}", stack)
    log(f"changelog: writing {state['states']:,} states to {s.changelog_topic()}")
    changelog = write_changelog(s, store_dir)
    log(
        f"changelog: {changelog['changelog_records']:,} records, "
        f"{changelog['changelog_bytes'] / 1e6:.1f} MB in {changelog['produce_seconds']:.1f}s"
    )
    if broker_data is not None:
        changelog["broker_log_bytes"] = sum(  # the segments, not the preallocated indexes
            f.stat().st_size
            for p in range(PARTITIONS)
            for f in (broker_data / f"{s.changelog_topic()}-{p}").glob("*.log")
        )
    events = after_events(path, prep, after)
    run = WorkerRun(f"restore {tag}", s, tmp / f"worker-{tag}.log", ours)
    sentinel = sentinel_event(prep.sentinel_customer, prep.last_ts, tag)
    busy = running_work(ours)
    log(f"{run.name}: starting a worker with an empty state dir")
    run.start()
    try:
        produce([sentinel], s)
        decided, rules = run.decided(sentinel["event_id"], READY_TIMEOUT)
        mem_restored = run.memory()
        marks = run.marks()
        db_restored = sum(dir_bytes(p) for p in table_dbs(s.state_dir).values())
        log(
            f"{run.name}: sentinel decided {decided:.2f}s after start ({', '.join(rules)}); "
            f"RSS {mem_restored.get('VmRSS')} MiB"
        )
        log(f"{run.name}: {len(events):,} events of the last day, one day later")
        drained = run.drain(events)
        mem_after = run.memory()
        log(
            f"{run.name}: {drained['events']:,} events in {drained['seconds']:.1f}s; "
            f"RSS {mem_after.get('VmRSS')} MiB, peak {mem_after.get('VmHWM')} MiB"
        )
    finally:
        exit_code = run.stop()
    busy |= running_work(ours)
    db_left = sum(dir_bytes(p) for p in table_dbs(s.state_dir).values())
    compression = compression_of(next(iter(table_dbs(s.state_dir).values())))
    log(f"{run.name}: counting and comparing the restored keys, then compacting")
    touched = {e["customer_id"] for e in events} | {prep.sentinel_customer}
    check, db_compacted = verify_and_compact(s.state_dir, store_dir, touched)
    log(
        f"{run.name}: {check['keys']:,} keys, {check['same_bytes']:,} identical; "
        f"RocksDB {db_left / 1e6:.1f} MB as left, {db_compacted / 1e6:.1f} MB compacted"
    )

    states = state["states"]
    restore_s = _restore_seconds(marks)
    restore_row = {
        "customers": customers,
        **changelog,
        "seconds": restore_s,
        "records_per_s": round(changelog["changelog_records"] / restore_s) if restore_s else None,
        "mb_per_s": round(changelog["changelog_bytes"] / 1e6 / restore_s, 1) if restore_s else None,
        "method": "Faust log: 'Restoring state from changelog topics...' to 'Done reading from "
        "changelog topics' (timestamps of the worker's own log lines)",
        "ready_seconds": marks.get("ready"),
        "empty_ready_seconds": base_marks.get("ready"),
        "sentinel_seconds": round(decided, 3),
        "empty_sentinel_seconds": round(base_decided, 3),
        "restore_cost_seconds": round(decided - base_decided, 2),
        "worker_cpu_seconds_to_sentinel": run.result.get("cpu_seconds_at_decision"),
        "empty_worker_cpu_seconds_to_sentinel": base.result.get("cpu_seconds_at_decision"),
        **_restore_cpu(run.result, base.result, changelog["changelog_records"], restore_s),
        "marks": marks,
        "empty_marks": base_marks,
        "sentinel": {
            "customer_has_state": True,
            "event": sentinel["event_id"],
            "rules": rules,
            "empty_changelog_rules": base_rules,
            "needs_restored_state": "dormant-reactivation:emitted" in rules
            and "dormant-reactivation:emitted" not in base_rules,
        },
        "verify": check,
        "worker_exit_code": exit_code,
        "empty_worker_exit_code": base_exit,
        "worker_log": run.log_notes(),
        "other_work_seen": sorted(busy),
    }
    memory_row = {
        "customers": customers,
        "states": states,
        "rss_unit": "MiB (1,048,576 bytes; /proc/PID/status kB / 1024)",
        "worker_rss_mb": mem_after.get("VmRSS"),
        "worker_peak_rss_mb": mem_after.get("VmHWM"),
        "worker_rss_after_restore_mb": mem_restored.get("VmRSS"),
        "worker_peak_rss_after_restore_mb": mem_restored.get("VmHWM"),
        "empty_worker_rss_mb": base_mem.get("VmRSS"),
        "after_restore": drained,
        "rocksdb_bytes": db_left,
        "rocksdb_bytes_per_customer": round(db_left / states, 1),
        "rocksdb_bytes_after_restore": db_restored,
        "rocksdb_bytes_compacted": db_compacted,
        "rocksdb_bytes_per_customer_compacted": round(db_compacted / states, 1),
        "rocksdb_compression": compression,
        "rocksdb_note": "rocksdb_bytes: the table's databases (all partitions, WAL included) "
        "after the worker stopped, as it left them; compacted: after opening each and running "
        "a full manual compaction (compact_range over all keys)",
        "state_mean_bytes": state["mean_bytes"],
        "state_p99_bytes": state["p99_bytes"],
    }
    return memory_row, restore_row


def _restore_cpu(
    run: dict[str, Any], base: dict[str, Any], records: int, seconds: float | None
) -> dict[str, Any]:
    """The worker's CPU time to the sentinel's decision beyond the empty-changelog worker's:
    what the restore cost it."""
    a, b = run.get("cpu_seconds_at_decision"), base.get("cpu_seconds_at_decision")
    if a is None or b is None:
        return {"restore_worker_cpu_seconds": None}
    cpu = round(a - b, 2)
    return {
        "restore_worker_cpu_seconds": cpu,
        "restore_worker_cpu_us_per_record": round(cpu / records * 1e6, 1) if records else None,
        "restore_worker_cpu_share": round(cpu / seconds, 2) if seconds else None,
    }


def _restore_seconds(marks: dict[str, float]) -> float | None:
    if "restoring" in marks and "done_reading" in marks:
        return round(marks["done_reading"] - marks["restoring"], 2)
    return None


# --- report -----------------------------------------------------------------------------------


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def section(r: dict[str, Any]) -> str:
    m, pk = r["machine"], r["machine"]["packages"]
    core_rows = [
        "| customers | days | events | wall (s) | CPU (s) | events/s | µs/event | cache hits | "
        "cache misses: read from RocksDB / new customer | state mean / p99 (B) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in r["core"]:
        cache, st = c["cache"], c["states"]
        core_rows.append(
            f"| {_n(c['customers'])} | {c['days']} | {_n(c['events'])} | {c['wall_s']:.1f} | "
            f"{c['cpu_s']:.1f} | **{_n(c['events_per_s'])}** | {c['us_per_event']:.1f} | "
            f"{_n(cache['hits'])} | {_n(cache['misses_read_from_rocksdb'])} / "
            f"{_n(cache['misses_new_customer'])} | "
            f"{st['mean_bytes']:,.0f} / {_n(st['p99_bytes'])} |"
        )
    mem_rows = [
        "| customers | worker RSS after restore (MiB) | after N more events (MiB) | peak RSS (MiB) "
        "| worker on an empty changelog (MiB) | RocksDB as left (MB) | bytes/customer | "
        "compacted (MB) | bytes/customer |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for x in r["memory"]:
        mem_rows.append(
            f"| {_n(x['customers'])} | {_mb(x['worker_rss_after_restore_mb'])} | "
            f"{_mb(x['worker_rss_mb'])} (N = {_n(x['after_restore']['events'])}) | "
            f"{_mb(x['worker_peak_rss_mb'])} | {_mb(x['empty_worker_rss_mb'])} | "
            f"{x['rocksdb_bytes'] / 1e6:,.0f} | {_n(x['rocksdb_bytes_per_customer'])} | "
            f"{x['rocksdb_bytes_compacted'] / 1e6:,.0f} | "
            f"{_n(x['rocksdb_bytes_per_customer_compacted'])} |"
        )
    restore_rows = [
        "| customers | changelog records | changelog MB | **restore (s)** | records/s | "
        "start to ready (s), restoring / empty | start to sentinel decided (s), restoring / "
        "empty | verified |",
        "|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for x in r["restore"]:
        v = x["verify"]
        ok = (
            f"{_n(v['keys'])} keys, {_n(v['same_bytes'])} byte-identical"
            + (
                f", {_n(v['changed_after_restore'])} changed since"
                if v["changed_after_restore"]
                else ""
            )
            + ("" if v["ok"] else " **MISMATCH**")
        )
        restore_rows.append(
            f"| {_n(x['customers'])} | {_n(x['changelog_records'])} | "
            f"{x['changelog_bytes'] / 1e6:,.0f} | **{_s(x['seconds'])}** | "
            f"{_n(x['records_per_s'])} | {_s(x['ready_seconds'])} / "
            f"{_s(x['empty_ready_seconds'])} | {_s(x['sentinel_seconds'])} / "
            f"{_s(x['empty_sentinel_seconds'])} | {ok} |"
        )
    first = r["core"][0]
    capacity = first["cache"]["capacity"]
    sentinel_ok = all(x["sentinel"]["needs_restored_state"] for x in r["restore"])
    touched = " and ".join(
        f"{_n(x['after_restore']['customers_touched'])} customers at {_n(x['customers'])}"
        for x in r["memory"]
    )
    comp = r["memory"][0]["rocksdb_compression"] if r["memory"] else "unknown"
    return "\n".join([
        START,
        "## Scale: a million customers",
        "",
        f"Streams: `simulate(N customers, {first['days']} days, seed {r['seed']})`: every "
        f"customer gets a full profile event on the first day, so every customer has a state; "
        f"{first['days']} days keep the 1M-customer stream to a few million events (30 days "
        f"would be ~70M). Rule packs `{PACKS}`.",
        "",
        "**Embedded core** (one pinned core): `streams.replay.replay` over the file, read as "
        "it goes, with the default state store: RocksDB (rocksdict, no WAL) behind a "
        f"`StateCache` of {_n(capacity)} customers, checkpoint every 100,000 events. Records "
        "carry the Kafka position the worker would give them (topic/partition, offset), so the "
        "states are the worker's.",
        "",
        *core_rows,
        "",
        "A cache miss is a read from the store: of a state evicted earlier (read from RocksDB) "
        "or of a customer not seen before. Events/s is events / wall time "
        "(`time.perf_counter`, file reading included). "
        + _core_text(r["core"]),
        "",
        "**Worker memory and state on disk**: one `crm-triggers worker` (shipped packs, "
        "at_least_once, default settings) after it restored every customer's state from the "
        "changelog, then after it processed N events of the stream's last day moved one day on "
        "(new event ids), touching "
        + (touched or "many customers")
        + ". RSS is VmRSS of `/proc/PID/status`, peak is VmHWM. RocksDB is every partition "
        "database of the table (SST files, WAL, manifests) after the worker stopped, then "
        f"after a full manual compaction (`compact_range`); compression {comp}.",
        "",
        *mem_rows,
        "",
        "**Restore onto an empty disk**: every state written to the worker's changelog topic as "
        "the worker writes it (key = customer id, value = the encoded state, partition = the "
        "customer's input partition by murmur2), one record per customer: a fully compacted "
        "changelog, the best case (a live changelog also holds older records of the same "
        "customers until Kafka compacts them). Then one worker with an empty `--state-dir`. "
        "Restore (s) is from Faust's log line `Restoring state from changelog topics...` to "
        "`Done reading from changelog topics`; start to ready is from starting the process to "
        "Faust's `Worker ready`; the sentinel is a card debit produced right after start for "
        "a customer of the stream, 400 days after its end, timed by its decision's Kafka "
        "timestamp. The empty column is the same worker started the same way on an empty "
        "changelog.",
        "",
        *restore_rows,
        "",
        _restore_text(r["restore"]),
        "",
        "Verified: "
        + (
            "the sentinel fired `dormant-reactivation` (a debit after 12 months without "
            "activity, which needs the customer's restored history) after each restore, and "
            "not on the empty changelog"
            if sentinel_ok
            else "**the sentinel did not show restored state** (see the JSON)"
        )
        + "; after the worker stopped, every key of its RocksDB databases was compared with "
        "the states the core run built (and checked to be in its partition's database).",
        "",
        f"Command: `{r['command']}` (on {r['date'][:10]}, commit {m['git']}; one run, "
        f"{r['total_seconds'] / 60:.0f} min in all).",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['python']}, "
        f"rocksdict {pk['rocksdict']}, faust-streaming {pk['faust-streaming']}, aiokafka "
        f"{pk['aiokafka']}, confluent-kafka {pk['confluent-kafka']}; Apache Kafka "
        f"{r['kafka']['version']} ({r['kafka']['where']}), Java {r['kafka']['java']}.",
        END,
    ])  # fmt: skip


def _core_text(core: list[dict[str, Any]]) -> str:
    """What the cache did, per scale."""
    parts = []
    for c in core:
        cache = c["cache"]
        parts.append(
            f"at {_n(c['customers'])} customers {cache['hits'] / cache['lookups']:.1%} of "
            f"look-ups hit the cache, {_n(cache['misses_read_from_rocksdb'])} states were read "
            f"back from RocksDB, and the checkpoints wrote {cache['states_written_per_event']:.2f}"
            f" states per event (each a MessagePack encode)"
        )
    text = "Per scale: " + "; ".join(parts) + "."
    if len(core) > 1:
        a, b = core[0], core[-1]
        text += (
            f" From {_n(a['customers'])} to {_n(b['customers'])} customers the cost per event "
            f"went from {a['us_per_event']:.1f} to {b['us_per_event']:.1f} µs; a miss of an "
            "evicted customer is a RocksDB read and a MessagePack decode of the state."
        )
    return text


def _restore_text(restore: list[dict[str, Any]]) -> str:
    """How the restore spent its time, per scale."""
    parts, shares = [], []
    for x in restore:
        cpu, share = x.get("restore_worker_cpu_seconds"), x.get("restore_worker_cpu_share")
        if cpu is None or share is None or not x["seconds"]:
            continue
        parts.append(
            f"at {_n(x['customers'])} customers the worker used {cpu:.1f} s of CPU more than on "
            f"the empty changelog, {share:.0%} of the {x['seconds']:.1f} s restore "
            f"({x['restore_worker_cpu_us_per_record']:.0f} µs per record)"
        )
        shares.append(share)
    if not parts:
        return ""
    bound = (
        " The restore is CPU-bound in the worker."
        if min(shares) >= 0.8
        else f" So the restore is not CPU-bound: for {1 - max(shares):.0%} or more of it the "
        "worker process used no CPU (what it waited on was not profiled)."
    )
    return (
        "The worker's CPU time up to the sentinel's decision, against the empty-changelog "
        "worker's (`/proc/PID/stat`): " + "; ".join(parts) + "." + bound + " Faust reads the "
        "changelog with its own consumer and writes each batch of records to RocksDB from "
        "Python (`faust/tables/recovery.py`, `Store.apply_changelog_batch`)."
    )


def write_benchmarks(text: str) -> None:
    doc = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else "# Benchmarks\n"
    a, b = doc.find(START), doc.find(END)
    if a >= 0 and b > a:
        doc = doc[:a] + text + doc[b + len(END) :]
    elif (at := doc.find(BEFORE)) >= 0:
        doc = doc[:at] + text + "\n\n" + doc[at:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    BENCHMARKS.write_text(doc, encoding="utf-8")


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--after-events",
        type=int,
        default=100_000,
        help="events sent to the worker after its restore (default 100,000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10,000 customers, 10,000 events after restore; writes results/scale-quick.json",
    )
    parser.add_argument(
        "--section-only",
        action="store_true",
        help="measure nothing: rewrite the BENCHMARKS.md section from results/scale.json",
    )
    args = parser.parse_args(argv)
    if args.section_only:
        text = section(json.loads((RESULTS / "scale.json").read_text(encoding="utf-8")))
        print(text)
        write_benchmarks(text)
        log(f"updated {BENCHMARKS.relative_to(ROOT)} from bench/results/scale.json")
        return 0
    if args.quick:
        args.customers, args.after_events = [10_000], 10_000
    os.chdir(ROOT)
    began = time.perf_counter()
    info = machine_info()
    ours = ancestors()
    core: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    restore: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-", dir=DATA)))
        prepared: list[tuple[Path, Prepared, Path, dict[str, Any]]] = []
        for customers in args.customers:
            path = ensure_stream(customers, args.days, args.seed)
            log(f"reading {path.name}: partitions and offsets as the worker would see them")
            prep = prepare(path)
            if prep.customers != customers:
                log(f"note: {prep.customers:,} customers have events, of {customers:,}")
            store_dir = work / f"core-c{customers}"
            row = run_core(path, prep, customers, args.days, store_dir)
            row["states"] = state_sizes(store_dir)
            core.append(row)
            prepared.append((path, prep, store_dir, row["states"]))
        info["loadavg_after_core"] = round(os.getloadavg()[0], 2)

        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-kafka-")))
        kafka = bench_kafka(stack, tmp, ours)
        broker_data = None if kafka.broker_pid is None else tmp / "kafka" / "data"
        for path, prep, store_dir, state in prepared:
            mem_row, restore_row = run_scale(
                stack,
                kafka.settings.brokers,
                tmp,
                ours,
                path,
                prep,
                store_dir,
                state,
                args.after_events,
                broker_data,
            )
            memory.append(mem_row)
            restore.append(restore_row)
        info["loadavg_end"] = round(os.getloadavg()[0], 2)

    results: dict[str, Any] = {
        "benchmark": "scale",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.scale", *(argv or sys.argv[1:])]),
        "machine": info,
        "kafka": {"version": kafka_version(), "where": kafka.where, "java": java_version()},
        "seed": args.seed,
        "partitions": PARTITIONS,
        "core": core,
        "memory": memory,
        "restore": restore,
    }
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    problems = [
        f"{x['customers']:,} customers: restored state differs: {x['verify']}"
        for x in restore
        if not x["verify"]["ok"]
    ] + [
        f"{x['customers']:,} customers: the sentinel did not need restored state: "
        f"{x['sentinel']['rules']} vs {x['sentinel']['empty_changelog_rules']}"
        for x in restore
        if not x["sentinel"]["needs_restored_state"]
    ]
    results["problems"] = problems
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("scale-quick.json" if args.quick else "scale.json")
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    text = section(results)
    print(text)
    log(f"wrote {out.relative_to(ROOT)}")
    if not args.quick:
        write_benchmarks(text)
        log(f"updated {BENCHMARKS.relative_to(ROOT)}")
    for problem in problems:
        log(f"PROBLEM: {problem}")
    log(f"done in {results['total_seconds']:.0f}s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
