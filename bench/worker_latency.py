"""Event-to-decision latency of one `crm-triggers worker` at fixed input rates, on a real broker.

    python -m bench.worker_latency [--rates 1000,5000,10000] [--seconds 20]

Starts a local Apache Kafka broker (or uses `$KAFKA_BOOTSTRAP`), creates fresh topics
(4 partitions), starts one worker with the shipped packs plus `bench/packs/latency-probe.yaml`
(one rule that fires on every transaction, so about half the events yield a decision to time),
waits until it is ready, then feeds the cached simulated stream (`bench/.data/`, 10,000
customers x 30 days) through `streams.produce.produce` at each rate in turn, for `--seconds`
each. Latency per transaction = the decision record's Kafka timestamp (set by the worker's
producer when it sends) minus the time the event was handed to the producer. The worker's
batches wait up to 10 ms and the event-time merge up to 50 ms (defaults).

A rate the worker cannot sustain shows as latency that grows through the phase; the report
gives p50/p99/p99.9/max and the achieved input rate. Results: `bench/results/latency.json`
and the worker-latency section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from bench.replay_throughput import stream_file
from bench.worker_throughput import (
    PACKS,
    ROOT,
    _n,
    bench_kafka,
    log,
    machine_info,
    worker_env,
)
from streams.produce import produce

PROBE = ROOT / "bench" / "packs" / "latency-probe.yaml"
RESULTS = ROOT / "bench" / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def events_from(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_latency", description=__doc__)
    parser.add_argument("--rates", default="1000,5000,10000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    os.chdir(ROOT)
    info = machine_info()
    path = stream_file(10_000, 30, 1)
    stream = events_from(path)
    phases: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="latency-bench-")))
        s = bench_kafka(stack, tmp, set()).settings
        s.rules = [str(PACKS), str(PROBE)]
        bootstrap = s.brokers
        worker_log = tmp / "worker.log"
        out = stack.enter_context(worker_log.open("wb"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            cwd=ROOT,
            env=worker_env(s),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        stack.callback(proc.wait, 30)
        stack.callback(proc.terminate)
        deadline = time.monotonic() + 60
        while b"Worker]: Ready" not in worker_log.read_bytes():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(
                    "bench: the worker did not become ready:\n" + worker_log.read_text()
                )
            time.sleep(0.2)
        log("worker ready")
        decisions = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"latency-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        stack.callback(decisions.close)
        decisions.subscribe([s.topics.decisions])
        for rate in rates:
            sent: dict[str, float] = {}
            count = int(rate * args.seconds)

            def timed(n: int = count, sent: dict[str, float] = sent) -> Iterator[dict[str, Any]]:
                for _, event in zip(range(n), stream, strict=False):
                    if event["type"] == "transaction":
                        sent[event["event_id"]] = time.time()
                    yield event

            log(f"producing {count:,} events at {rate:,}/s")
            stats = produce(timed(), s, rate=rate)
            latencies: list[float] = []
            quiet, expected = time.monotonic(), len(sent)
            while time.monotonic() - quiet < 10 and len(latencies) < expected:
                msg = decisions.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                quiet = time.monotonic()
                decision = json.loads(msg.value() or b"{}")
                if decision.get("rule_id") != "every-transaction":
                    continue
                started = sent.pop(decision["event_id"], None)
                if started is not None:
                    latencies.append(msg.timestamp()[1] / 1000 - started)
            phase: dict[str, Any] = {
                "rate": rate,
                "events": stats.events,
                "achieved_rate": round(stats.rate),
                "samples": len(latencies),
                "missing": len(sent),
            }
            if latencies:
                ms = [x * 1000 for x in latencies]
                phase.update(
                    p50_ms=round(percentile(ms, 0.5), 1),
                    p99_ms=round(percentile(ms, 0.99), 1),
                    p999_ms=round(percentile(ms, 0.999), 1),
                    max_ms=round(max(ms), 1),
                    mean_ms=round(statistics.fmean(ms), 1),
                )
            log(f"rate {rate:,}/s: {json.dumps(phase)}")
            if not latencies:
                lines = worker_log.read_text().splitlines()
                tail = [x for x in lines if "Crashed" in x or "Error" in x][:5] + lines[-5:]
                log("no decisions timed; the worker's log ends:\n" + "\n".join(tail))
            phases.append(phase)
    results = {
        "benchmark": "worker_latency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.worker_latency", *(argv or sys.argv[1:])]),
        "machine": info,
        "seconds_per_rate": args.seconds,
        "phases": phases,
    }
    text = section(results)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "latency.json").write_text(json.dumps(results, indent=2) + "\n")
        write_section(text)
    return 0


def section(r: dict[str, Any]) -> str:
    rows = [
        "| input rate (events/s) | achieved | events | samples | p50 (ms) | p99 (ms) | p99.9 (ms) "
        "| max (ms) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in r["phases"]:
        rows.append(
            f"| {_n(p['rate'])} | {_n(p['achieved_rate'])} | {_n(p['events'])} | "
            f"{_n(p['samples'])} | {p.get('p50_ms', 'n/a')} | {p.get('p99_ms', 'n/a')} | "
            f"{p.get('p999_ms', 'n/a')} | {p.get('max_ms', 'n/a')} |"
        )
    m = r["machine"]
    return "\n".join(
        [
            "<!-- worker-latency:start -->",
            "## Kafka worker latency",
            "",
            f"One worker (shipped packs plus `bench/packs/latency-probe.yaml`, at_least_once, "
            f"default batches) on a local Kafka broker; the stream `simulate(10,000 customers, "
            f"30 days, seed 1)` fed in order by `streams.produce.produce` at each rate for "
            f"{r['seconds_per_rate']:.0f} s, one rate after the other on the same worker. "
            "Latency: the probe decision's Kafka timestamp (set by the worker's producer) minus "
            "the moment the transaction was handed to the producer; one sample per transaction "
            "(about half the events).",
            "",
            *rows,
            "",
            _target(r["phases"]),
            "",
            "A rate above what the worker sustains (about 6,000 events/s in the throughput "
            "benchmark, less here with the probe's extra decision per transaction) builds a "
            "backlog, and its latency is the time that backlog takes to drain.",
            "",
            f"Command: `{r['command']}` (on {r['date'][:10]}). Machine: "
            f"{m.get('cpu_model', '')}, {m.get('cores', '')} cores, "
            f"{m.get('memory_gb', '')} GB RAM, commit {m.get('git', '')}.",
            "<!-- worker-latency:end -->",
        ]
    )


def _target(phases: list[dict[str, Any]]) -> str:
    at = {p["rate"]: p for p in phases}
    five = at.get(5000, {}).get("p99_ms")
    one = at.get(1000, {})
    return (
        f"Target: p99 under 25 ms at 5,000 events/s. Measured p99 at 5,000/s: {five} ms: "
        f"**not met**. At 1,000/s the median is {one.get('p50_ms')} ms and p99 "
        f"{one.get('p99_ms')} ms. Not profiled yet; the suspects are the event-time merge's "
        "wait when a topic of the partition has nothing buffered (`max_task_idle_ms` 50 ms, "
        "or until a fetch response newer than the record, up to `fetch_max_wait` 500 ms), "
        "the batch wait (10 ms) and two acknowledged produce round trips per batch (outputs, "
        "then changelog). At 5,000/s and above the worker, slowed by the probe's extra "
        "decision per transaction, falls behind and latency is backlog."
        if five is not None
        else ""
    )


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text()
    start, end = "<!-- worker-latency:start -->", "<!-- worker-latency:end -->"
    if start in current:
        head, rest = current.split(start, 1)
        tail = rest.split(end, 1)[1]
        path.write_text(head + text + tail)
    else:
        path.write_text(current.rstrip("\n") + "\n\n" + text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
