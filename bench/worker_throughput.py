"""Kafka worker throughput: one `crm-triggers worker` process draining a backlog on a real broker.

    python -m bench.worker_throughput [--customers 10000] [--days 7] [--seed 1]

Starts a single-node Apache Kafka broker in a temporary folder (`scripts/kafka_local.Broker`),
or uses `$KAFKA_BOOTSTRAP` if it is set, creates fresh topics (4 partitions each), simulates
the stream (cached under `bench/.data/`, shared with `bench.replay_throughput`) and produces
every event to its type's topic keyed by customer id (murmur2), all before the worker starts.
Then it starts `python -m streams.cli worker` with the shipped packs and the default batch
settings, and polls the consumer group's committed offsets (OffsetFetch, from a consumer that
never joins the group) against the input partitions' high watermarks:

- start-up: from starting the process until the group first commits an offset;
- drain: until the committed offsets of every input partition equal their high watermarks;
- events/s: events / (drain end - first commit).

Afterwards it reads the output topics with a read_committed consumer and checks that the
decisions and actions are exactly those of `crm-triggers replay` on the same events (exit 1
if not). Nothing is pinned (the broker needs the second core). One run, about 1-2 minutes.
Results go to `bench/results/worker.json` and the worker-throughput section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.replay_throughput import machine, stream_file
from scripts.kafka_local import Broker, kafka_version
from streams.settings import Settings, Topics
from streams.topics import create_topics

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
REPLAY_JSON = RESULTS / "replay.json"
PACKS = "rules/packs"
PARTITIONS = 4
START, END = "<!-- worker-throughput:start -->", "<!-- worker-throughput:end -->"
BEFORE = "## Still to come"
POLL = 0.1  # seconds between committed-offset polls
STARTUP_TIMEOUT = 120.0
DRAIN_TIMEOUT = 300.0
# other work that would share the two cores: tests, benchmarks, brokers, workers
BUSY = re.compile(r"pytest|bench\.\w+|bench/\w+\.py|kafka\.Kafka|streams\.cli|crm-triggers")
TICKS = os.sysconf("SC_CLK_TCK")
RETRY = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _n(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


# --- the machine and what else runs on it -----------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a running process (its threads included)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def ancestors() -> set[int]:
    """This process and the ones that started it (a `timeout` or shell wrapper is not "other")."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def other_work(ours: set[int]) -> set[str]:
    """Command lines of other test, benchmark, broker or worker processes on the machine.

    With $KAFKA_BOOTSTRAP, Kafka JVMs are not counted: one of them is the broker in use."""
    found: set[str] = set()
    external = bool(os.environ.get("KAFKA_BOOTSTRAP"))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if not cmd or not BUSY.search(cmd) or "pgrep" in cmd:
            continue
        if not (external and "kafka.Kafka" in cmd):
            found.add(cmd if len(cmd) <= 160 else cmd[:157] + "...")
    return found


def machine_info() -> dict[str, Any]:
    info = machine(-1)
    info.pop("pinned_cpu", None)
    for pkg in ("faust-streaming", "aiokafka", "confluent-kafka"):
        try:
            info["packages"][pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info["packages"][pkg] = "not installed"
    info["loadavg_start"] = round(os.getloadavg()[0], 2)
    return info


# --- Kafka helpers ----------------------------------------------------------------------------


def bench_settings(bootstrap: str, state_dir: Path) -> Settings:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topics = Topics(**{name: f"{prefix}.{name}" for name in Topics.model_fields})
    values: dict[str, Any] = {
        "brokers": bootstrap,
        "app_id": prefix,
        "topics": topics,
        "partitions": PARTITIONS,
        "rules": [PACKS],
        "state_dir": state_dir,
        "web_port": 0,
    }
    return Settings(**values)


def worker_env(s: Settings) -> dict[str, str]:
    """The worker's environment: these settings; other CRM_* variables (batch sizes, a
    config file) are dropped so the worker runs with the benchmark's settings only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    return {**env, **s.to_env()}


def wait_for_leaders(admin: AdminClient, topics: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=10).topics
        if all(
            t in meta
            and meta[t].error is None
            and len(meta[t].partitions) == PARTITIONS
            and all(p.leader >= 0 for p in meta[t].partitions.values())
            for t in topics
        ):
            return
        time.sleep(0.1)
    raise SystemExit(f"bench: topics have no leaders after 30 s: {', '.join(topics)}")


class _Routing(msgspec.Struct):
    type: str = ""
    customer_id: str = ""


def produce(s: Settings, lines: list[bytes], warmup: str) -> dict[str, Any]:
    """Every event to its type's topic, keyed by customer id; returns counts and the rate.

    One record to the `warmup` topic first, so the rate leaves out connecting and getting a
    producer id (which waits for the transaction coordinator on a fresh broker)."""
    producer = Producer(
        {
            "bootstrap.servers": s.brokers,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )
    by_type = {v: k for k, v in s.topics.inputs().items()}
    decode = msgspec.json.Decoder(_Routing).decode
    per_topic = dict.fromkeys(by_type.values(), 0)
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    producer.produce(warmup, b"warm-up")
    if producer.flush(60):
        raise SystemExit("bench: the warm-up record was not delivered in 60 s")
    started = time.perf_counter()
    for raw in lines:
        event = decode(raw)
        topic = by_type[event.type]
        per_topic[topic] += 1
        while True:
            try:
                producer.produce(topic, raw, event.customer_id.encode(), on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    seconds = time.perf_counter() - started
    if left or failed:
        raise SystemExit(f"bench: {left} events not delivered, {len(failed)} failed: {failed[:3]}")
    mb = sum(len(raw) for raw in lines) / 1e6
    return {
        "events": len(lines),
        "mb": round(mb, 2),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(lines) / seconds),
        "mb_per_s": round(mb / seconds, 1),
        "per_topic": per_topic,
        "config": "confluent-kafka Producer, partitioner murmur2_random, enable.idempotence, "
        "other settings librdkafka defaults",
    }


def input_partitions(s: Settings) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in s.topics.inputs() for p in range(PARTITIONS)]


def high_watermarks(s: Settings, parts: list[TopicPartition]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": s.brokers, "group.id": f"hw-{uuid.uuid4()}"})
    try:
        return {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in parts
        }
    finally:
        consumer.close()


def ceiling(s: Settings) -> dict[str, Any]:
    """The hardware's ceiling: a bare confluent-kafka consumer (no group, no processing)
    reading every input record from the start to the high watermarks."""
    parts = input_partitions(s)
    highs = high_watermarks(s, parts)
    want = sum(highs.values())
    consumer = Consumer(
        {
            "bootstrap.servers": s.brokers,
            "group.id": f"ceiling-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    remaining = {key for key, high in highs.items() if high > 0}
    consumer.assign([TopicPartition(t, p, 0) for t, p in remaining])
    count, cpu0, t0 = 0, time.process_time(), time.perf_counter()
    deadline = t0 + 120
    try:
        while remaining and time.perf_counter() < deadline:
            for msg in consumer.consume(10_000, 1.0):
                if msg.error() is not None:
                    continue
                count += 1
                key = (msg.topic(), msg.partition())
                if msg.offset() + 1 >= highs[key]:
                    remaining.discard(key)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        consumer.close()
    return {
        "events": count,
        "expected": want,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "events_per_s": round(count / seconds) if seconds > 0 else None,
    }


def offsets_reader(s: Settings) -> Consumer:
    """A consumer in the worker's group that never joins it: only reads its committed offsets.

    (`AdminClient.list_consumer_group_offsets` would do, but librdkafka up to 2.16 crashes the
    process with SIGSEGV when the broker answers it NOT_COORDINATOR, as a fresh broker does
    while it sets up its group coordinator: librdkafka issue #5040. A consumer retries.)"""
    return Consumer(
        {"bootstrap.servers": s.brokers, "group.id": s.app_id, "enable.auto.commit": False}
    )


def committed(reader: Consumer, parts: list[TopicPartition]) -> dict[Any, int] | None:
    """The group's committed offset per input partition (0 where none is committed yet), or
    None when the broker cannot say just now (e.g. its group coordinator is still loading)."""
    try:
        result = reader.committed(parts, timeout=10)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and (error.retriable() or error.code() in RETRY):
            return None
        raise
    return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in result}


def read_outputs(s: Settings) -> dict[str, list[Any]]:
    """Every record on the output topics, read with isolation.level=read_committed."""
    consumer = Consumer(
        {
            "bootstrap.servers": s.brokers,
            "group.id": f"bench-check-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    names = {s.topics.offers: "offers", s.topics.alerts: "alerts",
             s.topics.decisions: "decisions", s.topics.dlq: "dlq"}  # fmt: skip
    got: dict[str, list[Any]] = {n: [] for n in names.values()}
    try:
        ends: dict[tuple[str, int], int] = {}
        for topic in names:
            for p in range(PARTITIONS):
                high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                if high > 0:
                    ends[topic, p] = high
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        left = set(ends)
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(2000, timeout=1.0):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), msg.offset()
                got[names[topic]].append(json.loads(msg.value() or b"null"))
                if offset is not None and offset + 1 >= ends[topic, partition]:
                    left.discard((topic, partition))
            if left:  # read_committed may end before the high watermark (transaction markers)
                for tp in consumer.position([TopicPartition(t, p) for t, p in left]):
                    if tp.offset >= ends[tp.topic, tp.partition]:
                        left.discard((tp.topic, tp.partition))
        if left:
            raise SystemExit(f"bench: output partitions not read to the end in 120 s: {left}")
    finally:
        consumer.close()
    return got


def decision_key(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["event_id"], d["pack"], d["rule_id"], d["outcome"], d["reason"], d["action_id"])


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Drain:
    """Timings of one process draining the input topics: `first` and `end` are
    (perf_counter time, events committed, process CPU s, broker CPU s)."""

    started: float
    first: tuple[float, int, float | None, float | None]
    end: tuple[float, int, float | None, float | None]
    samples: list[tuple[float, int]]
    busy: set[str]


def time_drain(
    s: Settings,
    events: int,
    cmd: list[str],
    env: dict[str, str] | None,
    log_path: Path,
    ours: set[int],
    broker_pid: int | None,
    name: str = "worker",
) -> Drain:
    """Start `cmd` (a consumer in group `s.app_id`), time it from start to its first commit
    and on until its committed offsets reach the input partitions' high watermarks, stop it."""
    reader = offsets_reader(s)
    parts = input_partitions(s)
    highs = high_watermarks(s, parts)
    if sum(highs.values()) != events:
        raise SystemExit(
            f"bench: input topics hold {sum(highs.values()):,} records, not {events:,}"
        )
    busy = other_work(ours)
    samples: list[tuple[float, int]] = []
    with log_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*_pdeathsig(), *cmd], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        ours.add(proc.pid)
        try:
            first = last_busy_check = None
            while True:
                now = time.perf_counter()
                if proc.poll() is not None:
                    raise SystemExit(
                        f"bench: the {name} exited with {proc.returncode}:\n{_tail(log_path)}"
                    )
                limit = STARTUP_TIMEOUT if first is None else DRAIN_TIMEOUT
                if now - (started if first is None else first[0]) > limit:
                    what = "start-up (first commit)" if first is None else "drain"
                    raise SystemExit(
                        f"bench: {what} took over {limit:.0f} s; {name} log:\n{_tail(log_path)}"
                    )
                offsets = committed(reader, parts)
                if offsets is None:
                    time.sleep(POLL)
                    continue
                t = time.perf_counter()
                done = sum(offsets.values())
                if done and (not samples or samples[-1][1] != done):
                    samples.append((t - started, done))
                if done and first is None:
                    first = (t, done, cpu_seconds(proc.pid), cpu_seconds(broker_pid))
                    log(f"first commit after {t - started:.2f}s ({done:,} events committed)")
                if all(offsets.get(k, 0) >= v for k, v in highs.items()):
                    end = (t, done, cpu_seconds(proc.pid), cpu_seconds(broker_pid))
                    break
                if last_busy_check is None or t - last_busy_check > 2:
                    busy |= other_work(ours)
                    last_busy_check = t
                    if first is not None:
                        log(f"committed {done:,}/{events:,}")
                time.sleep(POLL)
            log(f"drained after {end[0] - started:.2f}s")
        finally:
            reader.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    busy |= other_work(ours)
    assert first is not None
    return Drain(started, first, end, samples, busy)


def run_worker(
    s: Settings, events: int, log_path: Path, ours: set[int], broker_pid: int | None
) -> dict[str, Any]:
    d = time_drain(
        s,
        events,
        [sys.executable, "-m", "streams.cli", "worker"],
        worker_env(s),
        log_path,
        ours,
        broker_pid,
    )
    started, first, end, samples, busy = d.started, d.first, d.end, d.samples, d.busy
    changelog = [TopicPartition(s.changelog_topic(), p) for p in range(PARTITIONS)]
    state_writes = sum(high_watermarks(s, changelog).values())
    drain = end[0] - first[0]
    startup = first[0] - started
    worker_cpu = _delta(end[2], first[2])
    broker_cpu = _delta(end[3], first[3])
    return {
        "startup_seconds": round(startup, 3),
        "committed_at_first_commit": first[1],
        "drain_seconds": round(drain, 3),
        "total_seconds": round(end[0] - started, 3),
        "events_per_s": round(events / drain) if drain > 0 else None,
        "events_per_s_after_first_commit": round((events - first[1]) / drain) if drain else None,
        "events_per_s_incl_startup": round(events / (end[0] - started)),
        "worker_cpu_seconds_drain": worker_cpu,
        "worker_cpu_share_of_one_core": round(worker_cpu / drain, 2)
        if worker_cpu and drain
        else None,
        "worker_cpu_us_per_event": (
            round(worker_cpu / (events - first[1]) * 1e6, 1) if worker_cpu else None
        ),
        "broker_cpu_seconds_drain": broker_cpu,
        "broker_cpu_us_per_event": (
            round(broker_cpu / (events - first[1]) * 1e6, 1) if broker_cpu else None
        ),
        "changelog_records": state_writes,
        "changelog_records_per_event": round(state_writes / events, 3),
        "commit_samples": [[round(t, 2), n] for t, n in samples],
        "other_work_seen": sorted(busy),
    }


def _pdeathsig() -> list[str]:
    """setpriv that gives the worker SIGTERM if this script dies (it exec()s: same pid)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "SIGTERM"] if setpriv and sys.platform == "linux" else []


def _delta(b: float | None, a: float | None) -> float | None:
    return round(b - a, 2) if a is not None and b is not None else None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def replay_outputs(events_file: Path, tmp: Path) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "crm-triggers"
    prog = [str(exe)] if exe.exists() else [sys.executable, "-m", "streams.cli"]
    actions, decisions = tmp / "replay-actions.jsonl", tmp / "replay-decisions.jsonl"
    cmd = [*prog, "replay", "--rules", PACKS, "--events", str(events_file),
           "--actions", str(actions), "--decisions", str(decisions), "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{done.stderr}")

    def read(path: Path) -> list[Any]:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    return {"actions": read(actions), "decisions": read(decisions)}


def compare(worker: dict[str, list[Any]], replay: dict[str, list[Any]]) -> dict[str, Any]:
    w_actions = [a["action_id"] for a in worker["offers"] + worker["alerts"]]
    w_decisions = [decision_key(d) for d in worker["decisions"]]
    r_actions = [a["action_id"] for a in replay["actions"]]
    r_decisions = [decision_key(d) for d in replay["decisions"]]
    problems = []
    if len(w_decisions) != len(r_decisions):
        problems.append(f"decisions: worker {len(w_decisions):,}, replay {len(r_decisions):,}")
    if len(w_actions) != len(r_actions):
        problems.append(f"actions: worker {len(w_actions):,}, replay {len(r_actions):,}")
    if set(w_decisions) != set(r_decisions):
        only_w = len(set(w_decisions) - set(r_decisions))
        only_r = len(set(r_decisions) - set(w_decisions))
        problems.append(
            f"decision sets differ: {only_w} only from the worker, {only_r} only replay"
        )
    if set(w_actions) != set(r_actions):
        only_w = len(set(w_actions) - set(r_actions))
        only_r = len(set(r_actions) - set(w_actions))
        problems.append(f"action ids differ: {only_w} only from the worker, {only_r} only replay")
    if worker["dlq"]:
        problems.append(f"{len(worker['dlq']):,} dead letters from the worker")
    return {
        "worker": {
            "decisions": len(w_decisions),
            "actions": len(w_actions),
            "offers": len(worker["offers"]),
            "alerts": len(worker["alerts"]),
            "dead_letters": len(worker["dlq"]),
            "duplicate_decisions": len(w_decisions) - len(set(w_decisions)),
        },
        "replay": {"decisions": len(r_decisions), "actions": len(r_actions)},
        "match": not problems,
        "problems": problems,
    }


# --- report -----------------------------------------------------------------------------------


def embedded_rate() -> dict[str, Any] | None:
    try:
        data = json.loads(REPLAY_JSON.read_text(encoding="utf-8"))
        mem = data["engine_memory"]
        return {
            "events_per_s": mem["events_per_s"],
            "file": str(REPLAY_JSON.relative_to(ROOT)),
            "date": data["date"][:10],
            "customers": data["stream"]["customers"],
            "days": data["stream"]["days"],
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def table(r: dict[str, Any]) -> str:
    p, w, emb, bare = r["producer"], r["worker"], r["embedded"], r.get("ceiling")
    ratio = f"{w['events_per_s'] / emb['events_per_s']:.0%}" if emb and w["events_per_s"] else "n/a"
    top = bare["events_per_s"] if bare else None
    vs_top = f"{w['events_per_s'] / top:.1%}" if top and w["events_per_s"] else "n/a"
    head = ("events", "producer events/s", "ceiling: bare consumer events/s",
            "worker start-up (s)", "drain (s)", "worker events/s", "vs ceiling",
            "vs embedded engine in memory")  # fmt: skip
    row = (_n(p["events"]), _n(p["events_per_s"]), _n(top), f"{w['startup_seconds']:.1f}",
           f"{w['drain_seconds']:.1f}", f"**{_n(w['events_per_s'])}**", vs_top, ratio)  # fmt: skip
    return "\n".join(
        [
            "| " + " | ".join(head) + " |",
            "|" + "--:|" * len(head),
            "| " + " | ".join(row) + " |",
        ]
    )


def _ceiling_text(bare: dict[str, Any] | None) -> str:
    if not bare:
        return ""
    return (
        f"Ceiling: one confluent-kafka consumer with no group and no processing read the same "
        f"{_n(bare['events'])} records from offset 0 to the high watermarks in "
        f"{bare['seconds']:.2f} s ({bare['cpu_seconds']:.2f} s CPU), before the worker started. "
    )


def section(r: dict[str, Any]) -> str:
    m, s, w, p, c, emb = (r["machine"], r["stream"], r["worker"], r["producer"],
                          r["parity"], r["embedded"])  # fmt: skip
    cw = c["worker"]
    parity = (
        f"Outputs: {_n(cw['decisions'])} decisions and {_n(cw['actions'])} actions "
        f"({_n(cw['offers'])} offers, {_n(cw['alerts'])} alerts), {_n(cw['dead_letters'])} dead "
        f"letters, read back with a read_committed consumer: "
        + (
            "**the same decisions and action ids as `crm-triggers replay`** on the same events."
            if c["match"]
            else "**DIFFERENT from `crm-triggers replay`**: " + "; ".join(c["problems"]) + "."
        )
    )
    emb_text = (
        f"the embedded engine's {_n(emb['events_per_s'])} events/s in memory on one pinned core "
        f"(`{emb['file']}`, {emb['customers']:,} customers x {emb['days']} days"
        + (
            f", whose later events cost more than a {s['days']}-day stream's)"
            if emb["days"] > s["days"]
            else ")"
        )
        if emb
        else "the embedded engine (no `bench/results/replay.json` to compare with)"
    )
    busy = w["other_work_seen"]
    load = (
        f"1-minute load average {m['loadavg_start']:.2f} at start, {m['loadavg_end']:.2f} at end"
        + (
            f"; **other work ran during the measurement** ({len(busy)} "
            f"process{'es' if len(busy) != 1 else ''}, listed in the JSON), so the numbers may "
            f"be low."
            if busy
            else "; no other test, benchmark, broker or worker process ran."
        )
    )
    ratio = w["events_per_s"] / emb["events_per_s"] if emb and w["events_per_s"] else None
    meaning = [
        f"This is one worker process with a local broker on the same {m['cores']}-core machine "
        f"draining a backlog produced beforehand (throughput, not latency): "
        f"{_n(w['events_per_s'])} events/s, "
        + (f"{ratio:.0%} of " if ratio else "compared with ")
        + f"{emb_text}."
    ]
    if w["worker_cpu_us_per_event"]:
        engine_us = f" against the engine's ~{1e6 / emb['events_per_s']:.0f} µs" if emb else ""
        broker = (
            f", while the broker JVM used {w['broker_cpu_seconds_drain']:.1f} s "
            f"({w['broker_cpu_us_per_event']:.0f} µs per event)"
            if w["broker_cpu_us_per_event"]
            else ""
        )
        meaning.append(
            f"The worker was {'CPU-bound' if w['worker_cpu_share_of_one_core'] >= 0.8 else 'busy'}"
            f": {w['worker_cpu_seconds_drain']:.1f} s of CPU in the {w['drain_seconds']:.1f} s "
            f"drain ({w['worker_cpu_share_of_one_core']:.0%} of one core, "
            f"{w['worker_cpu_us_per_event']:.0f} µs per event{engine_us}){broker}."
        )
    meaning.append(
        "The difference is the transport around the same `Engine`: Faust, aiokafka and asyncio "
        "work per record (fetch, event-time merge across the three input topics, ack, commit), "
        "and state upkeep per batch: "
        + (
            "the batches the engine gets are small, so most events are their customer's only "
            "one in the batch and "
            if w["changelog_records_per_event"] >= 0.5
            else ""
        )
        + f"the worker wrote "
        f"{_n(w['changelog_records'])} state changelog records "
        f"({w['changelog_records_per_event']:.2f} per event), each a RocksDB read and write, a "
        "MessagePack encode and a Kafka message; each batch waits for Kafka to acknowledge "
        "its outputs (every partition of the batch in one round trip), then its changelog "
        "records, before it is acked."
    )
    meaning.append(
        "Latency (event to action) is in the worker-latency section, the naive Faust baseline "
        "in its own section, and where the worker's time goes after them."
    )
    ws = r["worker_settings"]
    return "\n".join([
        START,
        "## Kafka worker throughput",
        "",
        f"Stream: `simulate({s['customers']:,} customers, {s['days']} days, seed {s['seed']})`, "
        f"{_n(p['events'])} events ({p['mb']:.1f} MB), produced to the three input topics "
        f"({PARTITIONS} partitions each, keyed by customer id, murmur2) before the worker "
        f"starts; one `crm-triggers worker` process with the shipped packs (`{PACKS}`), "
        f"{ws['processing_guarantee']}, default batches ({ws['batch_size']} records or "
        f"{ws['batch_wait_ms']} ms, event-time merge waits up to {ws['max_task_idle_ms']} ms), on "
        f"Apache Kafka {r['kafka']['version']} ({r['kafka']['where']}).",
        "",
        table(r),
        "",
        f"Start-up is from starting `python -m streams.cli worker` until the consumer group first "
        f"commits an offset ({_n(w['committed_at_first_commit'])} events were committed by then); "
        f"drain is from that first commit until the committed offsets of all "
        f"{3 * PARTITIONS} input partitions equal their high watermarks (polled every "
        f"{POLL:.1f} s by a consumer's `committed()`, which never joins the group: "
        f"`AdminClient.list_consumer_group_offsets` crashed librdkafka 2.16 on a fresh broker, "
        f"librdkafka issue #5040; the worker commits every 1 s or 2,000 records "
        f"(streams/agent.py), so both are measured to within that); worker events/s is "
        f"events / drain ({_n(w['events_per_s_after_first_commit'])} counting only the events "
        f"committed after the first commit, {_n(w['events_per_s_incl_startup'])} including "
        f"start-up). Producer events/s: {p['config']}, {p['mb_per_s']:.1f} MB/s. "
        + _ceiling_text(r.get("ceiling"))
        + load,
        "",
        parity,
        "",
        " ".join(meaning),
        "",
        *kafka_footer(r),
        END,
    ])  # fmt: skip


def write_section(start: str, end: str, text: str, before: str | None = None) -> None:
    """Put `text` (which carries the markers) between the `start`/`end` markers of
    BENCHMARKS.md; without them, before the heading `before`, or at the end."""
    doc = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else "# Benchmarks\n"
    a, b = doc.find(start), doc.find(end)
    if a >= 0 and b > a:
        doc = doc[:a] + text + doc[b + len(end) :]
    elif before is not None and (at := doc.find("\n" + before)) >= 0:
        doc = doc[: at + 1] + text + "\n\n" + doc[at + 1 :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    BENCHMARKS.write_text(doc, encoding="utf-8")


def write_benchmarks(text: str) -> None:
    write_section(START, END, text, BEFORE)


def kafka_footer(r: dict[str, Any]) -> list[str]:
    """The command and machine lines of a Kafka benchmark's section."""
    m, pk = r["machine"], r["machine"]["packages"]
    return [
        f"Command: `{r['command']}` (on {r['date'][:10]}, commit {m['git']}; one run, "
        f"{r['total_seconds']:.0f} s in all, nothing pinned).",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['python']}, "
        f"faust-streaming {pk['faust-streaming']}, aiokafka {pk['aiokafka']}, confluent-kafka "
        f"{pk['confluent-kafka']}, rocksdict {pk['rocksdict']}, Java {r['kafka']['java']}.",
    ]


def java_version() -> str:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r'version "([^"]+)"', done.stderr)
    return match.group(1) if match else "unknown"


# --- main -------------------------------------------------------------------------------------


@dataclass
class BenchKafka:
    """A broker with the benchmark's fresh topics: `where` says which broker it is."""

    settings: Settings
    where: str
    broker_pid: int | None
    warmup: str


def bench_kafka(
    stack: contextlib.ExitStack,
    tmp: Path,
    ours: set[int],
    extra_topics: Callable[[Settings], list[str]] = lambda s: [],
) -> BenchKafka:
    """Start a local broker in `tmp` (or use `$KAFKA_BOOTSTRAP`), create fresh topics and a
    warm-up topic, wait for their leaders. On an external broker the topics (and
    `extra_topics`) are deleted when `stack` closes."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    broker_pid: int | None = None
    if external:
        bootstrap, where = external, f"external, $KAFKA_BOOTSTRAP={external}"
        log(f"using the broker at {bootstrap}")
    else:
        broker = Broker()
        log("starting a local Kafka broker")
        bootstrap = broker.start(tmp / "kafka" / "data", tmp / "kafka" / "logs")
        stack.callback(broker.stop)
        broker_pid = broker.pid
        assert broker_pid is not None
        ours.add(broker_pid)
        where = f"local single node started by the script, JVM {' '.join(_jvm_opts())}"
        log(f"broker up at {bootstrap} in {broker.start_seconds:.1f}s")
    s = bench_settings(bootstrap, tmp / "state")
    create_topics(s)
    warmup = f"{s.app_id}.warmup"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(warmup, 1, 1)]).values():
        future.result(timeout=30)
    wait_for_leaders(admin, [*s.topics.inputs(), *s.topics.outputs()])
    if external:
        names = [*s.topics.inputs(), *s.topics.outputs(), s.changelog_topic(), warmup]
        stack.callback(_delete_topics, admin, [*names, *extra_topics(s)])
    del admin  # (a client left open logs errors when the broker stops)
    return BenchKafka(s, where, broker_pid, warmup)


def backlog_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options of a benchmark that drains a simulated backlog from Kafka."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-write", action="store_true", help="print the section; write no JSON or Markdown"
    )
    return parser


def backlog(args: argparse.Namespace) -> tuple[Path, list[bytes]]:
    """The simulated stream of `backlog_parser`'s options: its file and its lines."""
    path = stream_file(args.customers, args.days, args.seed)
    lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    log(f"stream: {len(lines):,} events ({path.relative_to(ROOT)})")
    return path, lines


def main(argv: Sequence[str] | None = None) -> int:
    args = backlog_parser("python -m bench.worker_throughput", __doc__).parse_args(argv)
    os.chdir(ROOT)
    began = time.perf_counter()
    info = machine_info()
    ours = ancestors()
    path, lines = backlog(args)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="worker-bench-")))
        kafka = bench_kafka(stack, tmp, ours)
        s, where, broker_pid, warmup = kafka.settings, kafka.where, kafka.broker_pid, kafka.warmup

        log(f"producing {len(lines):,} events to {', '.join(s.topics.inputs())}")
        producer = produce(s, lines, warmup)
        log(f"produced in {producer['seconds']:.1f}s ({_n(producer['events_per_s'])} events/s)")

        log("measuring the ceiling: a bare consumer reading the same records")
        bare = ceiling(s)
        log(f"ceiling: {_n(bare['events_per_s'])} events/s ({bare['seconds']:.2f}s)")

        log("starting the worker")
        worker = run_worker(s, len(lines), tmp / "worker.log", ours, broker_pid)
        log(
            f"worker: start-up {worker['startup_seconds']:.1f}s, drain "
            f"{worker['drain_seconds']:.1f}s, {_n(worker['events_per_s'])} events/s"
        )
        info["loadavg_end"] = round(os.getloadavg()[0], 2)
        log("reading the output topics (read_committed)")
        outputs = read_outputs(s)
        log("running `crm-triggers replay` on the same events")
        parity = compare(outputs, replay_outputs(path, tmp))

    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    results: dict[str, Any] = {
        "benchmark": "worker_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.worker_throughput", *(argv or sys.argv[1:])]),
        "method": "one run; committed offsets polled with Consumer.committed (no group join)",
        "machine": info,
        "kafka": {"version": kafka_version(), "where": where, "java": java_version()},
        "stream": {
            "customers": args.customers,
            "days": args.days,
            "seed": args.seed,
            "file": path.name,
        },
        "partitions": PARTITIONS,
        "worker_settings": {
            "processing_guarantee": s.processing_guarantee,
            "batch_size": defaults["batch_size"],
            "batch_wait_ms": defaults["batch_wait_ms"],
            "max_task_idle_ms": defaults["max_task_idle_ms"],
            "max_lag_wait_ms": defaults["max_lag_wait_ms"],
            "command": "python -m streams.cli worker (CRM_* environment, web port 0)",
        },
        "producer": producer,
        "ceiling": bare,
        "worker": worker,
        "embedded": embedded_rate(),
        "parity": parity,
    }
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    text = section(results)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / "worker.json"
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        write_benchmarks(text)
        log(f"wrote {out.relative_to(ROOT)} and the worker-throughput section of BENCHMARKS.md")
    if worker["other_work_seen"]:
        log("WARNING: other work ran during the measurement:")
        for cmd in worker["other_work_seen"]:
            log(f"  {cmd}")
    if not parity["match"]:
        log("=" * 78)
        log("MISMATCH: the worker's outputs differ from `crm-triggers replay`:")
        for problem in parity["problems"]:
            log(f"  {problem}")
        log("=" * 78)
        return 1
    log(f"done in {results['total_seconds']:.0f}s")
    return 0


def _jvm_opts() -> list[str]:
    from scripts.kafka_local import JVM_OPTS

    return [o for o in JVM_OPTS if o.startswith("-Xm")]


def _delete_topics(admin: AdminClient, names: list[str]) -> None:
    for future in admin.delete_topics(names, operation_timeout=15).values():
        with contextlib.suppress(KafkaException):
            future.result(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
