"""Embedded replay throughput on one core: decode, engine (memory, RocksDB), CLI end to end.

    python -m bench.replay_throughput [--customers 10000] [--days 30] [--seed 1] [--quick]

Pins itself to one CPU, generates (or reuses) a simulated stream under `bench/.data/`, and
measures each step as the median of 3 timed runs after a warm-up (every run is recorded in
the JSON). Results go to `bench/results/replay.json` and the replay-throughput section of
BENCHMARKS.md; `--quick` (1,000 customers x 7 days) writes `bench/results/quick.json` only.
Progress goes to stderr, the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import importlib.metadata
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from rules.ruleset import RuleSet, load_rules
from state.events import InvalidEvent, decode_event
from state.events import _decoder as events_decoder
from state.store import MemoryStore, RocksStore, StateCache
from state.timezones import zone
from streams.engine import Engine, Record
from streams.replay import DEFAULT_CHECKPOINT, Outputs, replay
from streams.simulate import simulate, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data"
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
PACKS = "rules/packs"
START, END = "<!-- replay-throughput:start -->", "<!-- replay-throughput:end -->"
BATCH = 2000
RUNS = 3
TARGET = 100_000  # the target for the embedded core on one core
PROFILE_EVENTS = 100_000
TOP = 12


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the pydantic v2 equivalent of state.events (only for the decode comparison) -------------


def _known_zone(name: str | None) -> str | None:
    if name is not None and zone(name) is None:
        raise ValueError("unknown IANA time zone")
    return name


PId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
PShort = Annotated[str, StringConstraints(max_length=256)]
PAmount = Annotated[float, Field(ge=0)]
PLat = Annotated[float, Field(ge=-90, le=90)]
PLon = Annotated[float, Field(ge=-180, le=180)]
PCountry = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
PCurrency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class PTransaction(BaseModel):
    # strict: like msgspec, no "12.5" -> 12.5 or "true" -> True coercion (int -> float is fine)
    model_config = ConfigDict(strict=True)
    type: Literal["transaction"]
    event_id: PId
    customer_id: PId
    ts: AwareDatetime
    amount: PAmount
    direction: Literal["credit", "debit"]
    channel: Literal["card", "online", "mobile", "branch", "atm", "transfer"]
    currency: PCurrency = "CNY"
    account_id: PShort | None = None
    card_id: PShort | None = None
    merchant_country: PCountry | None = None
    merchant_category: PShort | None = None
    counterparty_id: PShort | None = None
    counterparty_bank: PShort | None = None
    device_id: PShort | None = None
    lat: PLat | None = None
    lon: PLon | None = None
    balance_after: float | None = None
    tags: Annotated[list[PShort], Field(max_length=32)] = []


class PInteraction(BaseModel):
    model_config = ConfigDict(strict=True)
    type: Literal["interaction"]
    event_id: PId
    customer_id: PId
    ts: AwareDatetime
    channel: Literal["app", "web", "call_center", "branch", "email", "sms"]
    action: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    device_id: PShort | None = None
    lat: PLat | None = None
    lon: PLon | None = None
    offer_id: PShort | None = None
    page: PShort | None = None


class PProfile(BaseModel):
    # extra keys are kept (msgspec: `extra`); set fields are `model_fields_set` (msgspec: UNSET)
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["profile"]
    event_id: PId
    customer_id: PId
    ts: AwareDatetime
    home_country: PCountry | None = None
    segment: PShort | None = None
    birth_date: PShort | None = None
    timezone: Annotated[PShort | None, AfterValidator(_known_zone)] = None
    products: Annotated[list[PShort], Field(max_length=64)] | None = None
    consent: dict[PShort, bool] | None = None


PEvent = Annotated[PTransaction | PInteraction | PProfile, Field(discriminator="type")]
pydantic_event: TypeAdapter[Any] = TypeAdapter(PEvent)

# Both decoders must reject each of these (a cheap check that the constraints match).
_INVALID = [
    b'{"type":"transaction","event_id":"e","customer_id":"c","ts":"2026-01-01T00:00:00+08:00",'
    b'"amount":-1,"direction":"debit","channel":"card"}',
    b'{"type":"transaction","event_id":"e","customer_id":"c","ts":"2026-01-01T00:00:00",'
    b'"amount":1,"direction":"debit","channel":"card"}',
    b'{"type":"transaction","event_id":"e","customer_id":"c","ts":"2026-01-01T00:00:00+08:00",'
    b'"amount":1,"direction":"sideways","channel":"card"}',
    b'{"type":"transaction","event_id":"e","customer_id":"c","ts":"2026-01-01T00:00:00+08:00",'
    b'"amount":"1","direction":"debit","channel":"card"}',
    b'{"type":"interaction","event_id":"e","customer_id":"c","ts":"2026-01-01T00:00:00+08:00",'
    b'"channel":"fax","action":"login"}',
    b'{"type":"profile","event_id":"e","customer_id":"","ts":"2026-01-01T00:00:00+08:00"}',
    b'{"type":"profile","event_id":"e","customer_id":"c","ts":"2026-01-01T00:00:00+08:00",'
    b'"timezone":"Mars/Olympus"}',
    b'{"type":"refund","event_id":"e","customer_id":"c","ts":"2026-01-01T00:00:00+08:00"}',
]


def check_pydantic_parity() -> None:
    for raw in _INVALID:
        for name, decode, error in (
            ("msgspec", decode_event, InvalidEvent),
            ("pydantic", pydantic_event.validate_json, ValidationError),
        ):
            try:
                decode(raw)
            except error:
                continue
            raise SystemExit(f"bench: {name} accepted an invalid event: {raw.decode()}")


# --- timing helpers ---------------------------------------------------------------------------


def cpu_now() -> float:
    """CPU seconds used so far by this process and its finished children (user + system)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed_runs(
    label: str, run: Callable[[], Any], runs: int = RUNS, *, quiet: bool = False
) -> tuple[Timing, Any]:
    """Time `run` `runs` times (after the caller's warm-up); return the timings and last result."""
    timing = Timing([], [])
    result: Any = None
    for i in range(runs):
        gc.collect()
        cpu, started = cpu_now(), time.perf_counter()
        result = run()
        timing.wall.append(time.perf_counter() - started)
        timing.cpu.append(cpu_now() - cpu)
        if not quiet:
            log(f"{label}: run {i + 1}/{runs} {timing.wall[-1]:.2f}s (CPU {timing.cpu[-1]:.2f}s)")
    return timing, result


@dataclass
class Timing:
    wall: list[float]
    cpu: list[float]


def rate(events: int, timing: Timing) -> dict[str, Any]:
    """Rates from the median wall time; the CPU-time rate shows what a quiet core would do."""
    median = statistics.median(timing.wall)
    cpu = statistics.median(timing.cpu)
    return {
        "events": events,
        "seconds": [round(s, 4) for s in timing.wall],
        "cpu_seconds": [round(s, 4) for s in timing.cpu],
        "median_seconds": round(median, 4),
        "events_per_s": round(events / median),
        "us_per_event": round(median / events * 1e6, 3),
        "best_events_per_s": round(events / min(timing.wall)),
        "cpu_events_per_s": round(events / cpu) if cpu > 0 else None,
        "wall_over_cpu": round(median / cpu, 2) if cpu > 0 else None,
    }


# --- the stream -------------------------------------------------------------------------------


def stream_file(customers: int, days: int, seed: int) -> Path:
    """The cached JSON Lines stream for these arguments (and this version of the simulator)."""
    sources = b"".join((ROOT / "streams" / f).read_bytes() for f in ("simulate.py", "anomalies.py"))
    sim = hashlib.sha256(sources).hexdigest()[:10]
    path = DATA / f"sim-c{customers}-d{days}-s{seed}-{sim}.jsonl"
    if path.exists():
        log(f"reusing {path.relative_to(ROOT)}")
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    for stale in DATA.glob(f"sim-c{customers}-d{days}-s{seed}-*.jsonl"):
        log(f"removing {stale.name} (made by another version of the simulator)")
        stale.unlink()
    log(f"simulating {customers:,} customers x {days} days (seed {seed}) -> {path.name}")
    started = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        count = write_jsonl(simulate(customers, days, seed), out)
    os.replace(tmp, path)
    log(f"simulated {count:,} events in {time.perf_counter() - started:.1f}s")
    return path


# --- the measurements -------------------------------------------------------------------------


def _decode_all(decode: Callable[[bytes], Any], lines: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        for line in lines:
            decode(line)
        return len(lines)

    return run


def bench_decode(lines: list[bytes]) -> dict[str, Any]:
    check_pydantic_parity()
    decoders: dict[str, Callable[[bytes], Any]] = {
        "msgspec": decode_event,
        "pydantic": pydantic_event.validate_json,
        "msgspec_raw": events_decoder.decode,
    }
    by_type: dict[str, list[bytes]] = {}
    for line in lines:
        by_type.setdefault(decode_event(line).type, []).append(line)
    for decode in decoders.values():  # warm-up
        _decode_all(decode, lines[:20_000])()
    result: dict[str, Any] = {}
    for name, decode in decoders.items():
        log(f"decode: {name} over all events")
        timing, _ = timed_runs(f"decode {name}", _decode_all(decode, lines))
        result[name] = rate(len(lines), timing)
    result["ratio"] = round(
        result["pydantic"]["median_seconds"] / result["msgspec"]["median_seconds"], 2
    )
    result["cpu_ratio"] = round(
        result["msgspec"]["cpu_events_per_s"] / result["pydantic"]["cpu_events_per_s"], 2
    )
    log("decode: per event type (msgspec, pydantic, msgspec raw decoder)")
    result["by_type"] = {}
    for kind, subset in sorted(by_type.items()):
        row: dict[str, Any] = {"events": len(subset)}
        for name, decode in decoders.items():
            timing, _ = timed_runs(f"decode {kind} {name}", _decode_all(decode, subset), quiet=True)
            # CPU time: these runs are short, so a busy neighbour would skew wall time
            row[f"{name}_us"] = round(statistics.median(timing.cpu) / len(subset) * 1e6, 3)
        row["ratio"] = round(row["pydantic_us"] / row["msgspec_us"], 2)
        result["by_type"][kind] = row
    return result


_RULES: list[RuleSet] = []


def new_engine(store: MemoryStore | RocksStore) -> Engine:
    """A fresh engine and state; the rule set is loaded once (it holds no per-run state)."""
    if not _RULES:
        _RULES.append(load_rules([PACKS]))
    return Engine(_RULES[0], StateCache(store))


def run_memory(records: list[Record]) -> tuple[Engine, dict[str, int]]:
    engine = new_engine(MemoryStore())
    counts = {"actions": 0, "decisions": 0, "dead_letters": 0, "duplicates": 0, "processed": 0}
    process = engine.process
    for i in range(0, len(records), BATCH):
        out = process(records[i : i + BATCH], flush=False)
        counts["actions"] += len(out.actions)
        counts["decisions"] += len(out.decisions)
        counts["dead_letters"] += len(out.dead_letters)
        counts["duplicates"] += out.duplicates
        counts["processed"] += out.processed
    engine.states.flush()
    return engine, counts


def bench_memory(records: list[Record]) -> tuple[dict[str, Any], Engine, dict[str, int]]:
    log(f"engine in memory: warm-up on {min(len(records), 50_000):,} events")
    run_memory(records[:50_000])
    timing, (engine, counts) = timed_runs("engine in memory", lambda: run_memory(records))
    return rate(len(records), timing), engine, counts


def bench_rocks(records: list[Record]) -> tuple[dict[str, Any], dict[str, int]]:
    def run() -> dict[str, int]:
        with tempfile.TemporaryDirectory(prefix="rocks-", dir=DATA) as tmp:
            store = RocksStore(tmp, durable=False)
            try:
                summary = replay(new_engine(store), iter(records), Outputs())
            finally:
                store.close()
        return {
            "actions": summary.actions,
            "decisions": summary.decisions,
            "dead_letters": summary.dead_letters,
            "duplicates": summary.duplicates,
            "processed": summary.processed,
        }

    log("engine on RocksDB: warm-up")
    warm = records[:50_000]
    with tempfile.TemporaryDirectory(prefix="rocks-", dir=DATA) as tmp:
        store = RocksStore(tmp, durable=False)
        replay(new_engine(store), iter(warm), Outputs())
        store.close()
    timing, counts = timed_runs("engine on RocksDB (replay)", run)
    return rate(len(records), timing), counts


def cli_command(events: Path, actions: Path, decisions: Path) -> list[str]:
    exe = Path(sys.executable).parent / "crm-triggers"
    prog = [str(exe)] if exe.exists() else [sys.executable, "-m", "streams.cli"]
    return [*prog, "replay", "--rules", PACKS, "--events", str(events),
            "--actions", str(actions), "--decisions", str(decisions), "--quiet"]  # fmt: skip


def bench_cli(path: Path, events: int) -> tuple[dict[str, Any], dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix="cli-", dir=DATA) as tmp_dir:
        tmp = Path(tmp_dir)
        tiny = tmp / "one.jsonl"
        with path.open("rb") as src:
            tiny.write_bytes(src.readline())
        actions, decisions = tmp / "actions.jsonl", tmp / "decisions.jsonl"

        def run_on(source: Path) -> None:
            cmd = cli_command(source, actions, decisions)
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{done.stderr}")

        log("CLI: warm-up and start-up time (one event)")
        run_on(tiny)
        startup, _ = timed_runs("CLI one event", lambda: run_on(tiny))
        log("CLI: end to end")
        timing, _ = timed_runs("CLI end to end", lambda: run_on(path))
        counts = {"actions": _count_lines(actions), "decisions": _count_lines(decisions)}
    result = rate(events, timing)
    result["startup_seconds"] = round(statistics.median(startup.wall), 3)
    result["command"] = " ".join(
        cli_command(path.relative_to(ROOT), Path("OUT"), Path("OUT2"))
    ).replace(str(Path(sys.executable).parent) + "/", "")
    return result, counts


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def state_sizes(store: MemoryStore) -> dict[str, Any]:
    sizes = sorted(len(v) for v in store.data.values())
    if not sizes:
        return {"customers": 0, "mean_bytes": 0, "p99_bytes": 0, "max_bytes": 0, "total_bytes": 0}
    p99 = sizes[min(len(sizes) - 1, int(0.99 * len(sizes)))]
    return {
        "customers": len(sizes),
        "mean_bytes": round(statistics.fmean(sizes), 1),
        "median_bytes": sizes[len(sizes) // 2],
        "p99_bytes": p99,
        "max_bytes": sizes[-1],
        "total_bytes": sum(sizes),
    }


def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func
    try:
        file = str(Path(file).resolve().relative_to(ROOT))
    except ValueError:
        parts = Path(file).parts
        file = (
            "/".join(parts[parts.index("site-packages") + 1 :])
            if "site-packages" in parts
            else Path(file).name
        )
    return f"{file}:{line}({func})"


def _area(key: tuple[str, int, str]) -> str:
    file, _, func = key
    if file == "~":
        return "msgspec (C)" if "msgspec" in func else "builtins (C)"
    if file.startswith("<pack "):
        return "compiled rule code"
    parts = Path(file).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    try:
        return Path(file).resolve().relative_to(ROOT).parts[0] + "/"
    except ValueError:
        return "stdlib"


class _Customer(msgspec.Struct):
    customer_id: str


def profile_slice(records: list[Record]) -> tuple[list[Record], int]:
    """Every event of 1 in k customers, k chosen for about PROFILE_EVENTS events.

    A slice by customer keeps each customer's whole history (states grow over the days, and
    so does the cost per event), which a slice of the first N events would not.
    """
    k = max(1, round(len(records) / PROFILE_EVENTS))
    decode = msgspec.json.Decoder(_Customer).decode
    picked = [r for r in records if zlib.crc32(decode(r.value).customer_id.encode()) % k == 0]
    return picked, k


# Stages of the hot path, by cumulative time (they overlap: window reads and updates happen
# inside the compiled rule programs). (label, file suffix or "<pack", function names)
STAGES: list[tuple[str, str, tuple[str, ...]]] = [
    ("decode (`decode_event`)", "state/events.py", ("decode_event",)),
    ("state cache look-up (`Engine._state`)", "streams/engine.py", ("_state",)),
    ("redelivery check (`_event_key`, `remember`)", "", ("_event_key", "remember")),
    ("compiled rule programs (`<pack ...>._eval`)", "<pack", ("_eval",)),
    ("window reads (`windows.py` `value`)", "state/windows.py", ("value",)),
    ("window updates (`windows.py` `add`)", "state/windows.py", ("add",)),
    ("explanations of matches (`explain`)", "rules/explain.py", ("explain",)),
    ("contact policy (`decide`)", "rules/policy.py", ("decide",)),
    ("outputs (`Engine._emit`)", "streams/engine.py", ("_emit",)),
    ("state encode at flush (`encode_state`)", "state/model.py", ("encode_state",)),
]


def _stage_of(key: tuple[str, int, str]) -> str | None:
    file, _, func = key
    for label, where, funcs in STAGES:
        if func not in funcs:
            continue
        if where == "<pack" and file.startswith("<pack "):
            return label
        if where != "<pack" and (not where or file.endswith(where)):
            return label
    return None


def bench_profile(records: list[Record]) -> dict[str, Any]:
    sample, k = profile_slice(records)
    log(f"profile: cProfile over the in-memory engine, 1 in {k} customers ({len(sample):,} events)")
    run_memory(sample[:10_000])
    profiler = cProfile.Profile()
    profiler.enable()
    _, counts = run_memory(sample)
    profiler.disable()
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1.0
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:TOP]
    areas: dict[str, float] = {}
    stages = dict.fromkeys([label for label, _, _ in STAGES], 0.0)
    for key, value in stats.items():
        areas[_area(key)] = areas.get(_area(key), 0.0) + value[2]
        stage = _stage_of(key)
        if stage is not None:
            stages[stage] += value[3]
    return {
        "events": len(sample),
        "customers_one_in": k,
        "decisions": counts["decisions"],
        "profiled_seconds": round(total, 3),
        "top": [
            {
                "function": _where(key),
                "calls": value[1],
                "tottime_s": round(value[2], 4),
                "percent": round(100 * value[2] / total, 1),
            }
            for key, value in top
        ],
        "by_area": {
            k: round(100 * v / total, 1) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])
        },
        "stages_cumulative": {k: round(100 * v / total, 1) for k, v in stages.items()},
    }


# --- machine info and reporting ---------------------------------------------------------------


def pin_one_cpu() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    log(f"pinned to CPU {cpu} (of {os.cpu_count()}); subprocesses inherit the pin")
    return cpu


def machine(cpu: int) -> dict[str, Any]:
    model = "unknown"
    mem_kb = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    versions = {}
    for pkg in ("msgspec", "pydantic", "pydantic-core", "rocksdict"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "pinned_cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "packages": versions,
        "git": _git(),
    }


def _run_git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _git() -> str:
    try:
        head = _run_git("rev-parse", "--short", "HEAD")
        dirty = _run_git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' (uncommitted changes)' if dirty else ''}"


def _n(x: float) -> str:
    return f"{x:,.0f}"


def table(r: dict[str, Any]) -> str:
    d, mem, rocks, cli = r["decode"], r["engine_memory"], r["engine_rocksdb"], r["cli"]
    st, c = r["state"], r["counts"]
    gap = mem["events_per_s"] / TARGET
    verdict = "met" if gap >= 1 else f"**not met**: {gap:.0%} of target"

    def row(name: str, m: dict[str, Any], note: str) -> tuple[str, ...]:
        cpu = _n(m["cpu_events_per_s"]) if m.get("cpu_events_per_s") else ""
        return (name, _n(m["events_per_s"]), f"{m['us_per_event']:.2f}", cpu, note)

    rows = [
        ("Measurement (median of 3, one core)", "events/s", "µs/event", "events/s by CPU time",
         "Notes"),
        row("Decode: msgspec `decode_event`", d["msgspec"], "validated typed event"),
        row("Decode: pydantic v2 `TypeAdapter.validate_json`", d["pydantic"],
            "same contract: strict, discriminated union on `type`"),
        ("Decode: msgspec / pydantic", f'{d["ratio"]:.1f}x', "", f'{d["cpu_ratio"]:.1f}x',
         "pydantic time / msgspec time"),
        row("Decode: msgspec `Decoder(Event).decode` alone", d["msgspec_raw"],
            "without `decode_event`'s wrapper and profile extras"),
        row("**Engine in memory** (`Engine.process`, batches of 2,000)", mem,
            f"target {_n(TARGET)} events/s: {verdict}"),
        row(f"Engine on RocksDB (`replay`, checkpoint every {_n(DEFAULT_CHECKPOINT)})", rocks,
            f'{rocks["events_per_s"] / mem["events_per_s"]:.0%} of in memory'),
        row("CLI end to end (`crm-triggers replay`)", cli,
            f'wall time {cli["median_seconds"]:.1f}s incl. {cli["startup_seconds"]:.2f}s start-up'),
        ("State per customer (MessagePack)", "", "", "",
         f'mean {st["mean_bytes"]:,.0f} B, p99 {_n(st["p99_bytes"])} B, max {_n(st["max_bytes"])}'
         f' B; {st["customers"]:,} customers, {st["total_bytes"] / 1e6:.1f} MB total'),
        ("Outputs", "", "", "",
         f'{_n(c["actions"])} actions, {_n(c["decisions"])} decisions, '
         f'{_n(c["dead_letters"])} dead letters, {_n(c["duplicates"])} duplicates'),
    ]  # fmt: skip
    lines = ["| " + " | ".join(rows[0]) + " |", "|---|--:|--:|--:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def load_text(r: dict[str, Any]) -> str:
    before, after = r["machine"]["loadavg_start"], r["machine"]["loadavg_end"]
    ratio = r["engine_memory"]["wall_over_cpu"] or 1.0
    text = (
        f'events/s is events / median wall time (`time.perf_counter`); "events/s by CPU time" '
        f"divides by the CPU time this process (and the CLI child) used, for comparison. "
        f"1-minute load average: {before:.2f} at start, {after:.2f} at end."
    )
    if ratio > 1.1:
        text += (
            f" **The pinned core was shared with other work during this run** (engine wall time "
            f"was {ratio:.2f}x its CPU time): on a quiet core expect rates nearer the CPU-time "
            f"column."
        )
    return text


def by_type_text(d: dict[str, Any]) -> str:
    parts = [
        f"{kind} ({row['events'] / d['msgspec']['events']:.0%} of events) "
        f"{row['msgspec_us']:.2f} vs {row['pydantic_us']:.2f} µs ({row['ratio']:.1f}x)"
        for kind, row in d["by_type"].items()
    ]
    return (
        "Decode per event type, msgspec `decode_event` vs pydantic (median CPU time): "
        + "; ".join(parts)
        + "."
    )


def profile_text(p: dict[str, Any]) -> str:
    k = p["customers_one_in"]
    who = "all customers" if k == 1 else f"1 in {k} customers"
    lines = [
        f"cProfile of the in-memory engine over every event of {who} "
        f"({_n(p['events'])} events, {_n(p['decisions'])} decisions; "
        f"top {TOP} by own time; cProfile slows Python calls, so shares are indicative):",
        "",
    ]
    for i, row in enumerate(p["top"], 1):
        lines.append(f"{i}. `{row['function']}` - {row['percent']:.1f}% ({_n(row['calls'])} calls)")
    areas = ", ".join(f"{k} {v:.0f}%" for k, v in p["by_area"].items() if v >= 0.5)
    stages = "; ".join(f"{k} {v:.0f}%" for k, v in p["stages_cumulative"].items())
    lines += [
        "",
        f"Own time by area: {areas}.",
        "",
        f"Cumulative time by stage (overlapping; window work runs inside the rule programs): "
        f"{stages}.",
    ]
    return "\n".join(lines)


def section(r: dict[str, Any]) -> str:
    m, s = r["machine"], r["stream"]
    pk = m["packages"]
    return "\n".join([
        START,
        "## Embedded replay throughput",
        "",
        f"Stream: `simulate({s['customers']:,} customers, {s['days']} days, seed {s['seed']})`, "
        f"{_n(s['events'])} events, {s['mb']:.1f} MB of JSON Lines; rule packs: `{PACKS}` "
        f"({r['packs']}).",
        "",
        table(r),
        "",
        load_text(r),
        "",
        by_type_text(r["decode"]),
        "",
        f"Command: `{r['command']}` (on {r['date'][:10]}, commit {m['git']}).",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores (pinned to CPU {m['pinned_cpu']}), "
        f"{m['memory_gb']} GB RAM, {m['python']}, msgspec {pk['msgspec']}, "
        f"pydantic {pk['pydantic']}, rocksdict {pk['rocksdict']}.",
        "",
        "CLI end to end runs as: `" + r["cli"]["command"] + "`.",
        "",
        profile_text(r["profile"]),
        END,
    ])  # fmt: skip


INTRO = """# Benchmarks

Measured numbers for crm-triggers, each produced by a script in `bench/` that writes its
results (with the machine it ran on) to `bench/results/`. Sections between the
`<!-- ...:start -->` / `<!-- ...:end -->` markers are rewritten by those scripts: edit around
them, not inside.

"""

LATER = """
## Still to come

Other sections (the Kafka worker, a baseline to compare against, and the ceiling of the
hardware) come with later issues.
"""


def write_benchmarks(text: str) -> None:
    if BENCHMARKS.exists():
        doc = BENCHMARKS.read_text(encoding="utf-8")
        a, b = doc.find(START), doc.find(END)
        if a >= 0 and b > a:
            doc = doc[:a] + text + doc[b + len(END) :]
        else:
            doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    else:
        doc = INTRO + text + "\n" + LATER
    BENCHMARKS.write_text(doc, encoding="utf-8")


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1,000 customers x 7 days; writes results/quick.json only",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.days = 1_000, 7
    os.chdir(ROOT)
    began = time.perf_counter()
    cpu = pin_one_cpu()
    info = machine(cpu)
    info["loadavg_start"] = round(os.getloadavg()[0], 2)

    path = stream_file(args.customers, args.days, args.seed)
    lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    mb = path.stat().st_size / 1e6
    log(f"stream: {len(lines):,} events, {mb:.1f} MB ({path.relative_to(ROOT)})")
    records = [Record(line) for line in lines]
    # The preloaded input (~1M objects) is not the engine's: keep it out of the cyclic GC's scans.
    gc.collect()
    gc.freeze()

    started = time.perf_counter()
    ruleset = load_rules([PACKS])
    _RULES.append(ruleset)
    rules_ms = (time.perf_counter() - started) * 1000
    results: dict[str, Any] = {
        "benchmark": "replay_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.replay_throughput", *(argv or sys.argv[1:])]),
        "method": f"median of {RUNS} timed runs (time.perf_counter) after a warm-up",
        "target_events_per_s": TARGET,
        "machine": info,
        "stream": {
            "customers": args.customers,
            "days": args.days,
            "seed": args.seed,
            "events": len(lines),
            "mb": round(mb, 2),
            "file": path.name,
        },
        "rules_load_ms": round(rules_ms, 1),
        "packs": ", ".join(f"{p.name} v{p.version}, {len(p.rules)} rules" for p in ruleset.packs),
    }
    results["decode"] = bench_decode(lines)
    results["engine_memory"], engine, counts = bench_memory(records)
    store = engine.states.store
    assert isinstance(store, MemoryStore)
    results["state"] = state_sizes(store)
    del engine, store
    results["counts"] = counts
    results["engine_rocksdb"], rocks_counts = bench_rocks(records)
    results["cli"], cli_counts = bench_cli(path, len(lines))
    results["counts_rocksdb"], results["counts_cli"] = rocks_counts, cli_counts
    results["profile"] = bench_profile(records)
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    info["loadavg_end"] = round(os.getloadavg()[0], 2)

    warnings = []
    if counts["actions"] == 0 or counts["decisions"] == 0:
        warnings.append("the engine produced no actions or no decisions")
    for name, other in (("RocksDB", rocks_counts), ("CLI", cli_counts)):
        for key in ("actions", "decisions"):
            if other[key] != counts[key]:
                warnings.append(f"{name} {key} {other[key]:,} != in-memory {counts[key]:,}")
    results["warnings"] = warnings

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("quick.json" if args.quick else "replay.json")
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    text = section(results)
    print(text)
    log(f"wrote {out.relative_to(ROOT)}")
    if not args.quick:
        write_benchmarks(text)
        log(f"updated {BENCHMARKS.relative_to(ROOT)}")
    for warning in warnings:
        log(f"WARNING: {warning}")
    log(f"done in {results['total_seconds']:.0f}s")
    return 1 if warnings else 0


if __name__ == "__main__":
    sys.exit(main())
