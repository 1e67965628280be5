"""Event-to-output latency at fixed input rates, on a real broker: our worker and the naive
Faust baseline.

    python -m bench.worker_latency [--app worker,naive] [--rates 1000,5000,10000] [--seconds 20]

For each app in `--app` (default both, one after the other, each on its own fresh broker and
topics): starts a local Apache Kafka broker (or uses `$KAFKA_BOOTSTRAP`), creates fresh topics
(4 partitions), starts the app with a probe, a rule that fires on every transaction (so about
half the events yield an output to time), waits until it is ready, then feeds the cached
simulated stream (`bench/.data/`, 10,000 customers x 30 days, after a warm-up) through
`streams.produce.produce` at each rate in turn, for `--seconds` each, and reads the probe's
outputs back. Latency per transaction = the output record's Kafka timestamp (set by the app's
producer when it sends) minus the time the event was handed to the producer.

- `worker`: one `crm-triggers worker` with the shipped packs plus
  `bench/packs/latency-probe.yaml` (rule `every-transaction`: one more decision, and usually
  one alert, per transaction); timed on the decisions topic. Its batches wait up to 10 ms and
  the event-time merge up to 50 ms (defaults).
- `naive`: the naive Faust app of `bench.naive_faust` run with `--probe` (one more
  if-statement, `every-transaction`, so one more `await topic.send(...)` of an alert per
  transaction); timed on the alerts topic.

A rate an app cannot sustain shows as latency that grows through the phase; the report gives
p50/p99/p99.9/max, the achieved input rate and the app's CPU. Results:
`bench/results/latency.json` (worker), `bench/results/latency-naive.json` (naive), and the
worker-latency section of BENCHMARKS.md (built from both files, whichever app was measured).
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from bench.naive_faust import PROBE_RULE, app_command, app_topics
from bench.replay_throughput import stream_file
from bench.worker_throughput import (
    PACKS,
    ROOT,
    _n,
    _pdeathsig,
    bench_kafka,
    cpu_seconds,
    log,
    machine_info,
    worker_env,
)
from streams.produce import produce
from streams.settings import Settings

PROBE = ROOT / "bench" / "packs" / "latency-probe.yaml"
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
START, END = "<!-- worker-latency:start -->", "<!-- worker-latency:end -->"
RATES, SECONDS = "1000,5000,10000", 20.0
WARMUP, WARMUP_RATE = 10.0, 1000  # seconds at events/s before the first measured rate
QUIET = 10.0  # a phase ends when every probe output arrived or none came for this long
TARGET_RATE, TARGET_P99_MS = 5000, 25.0


@dataclass(frozen=True)
class App:
    """One app whose latency is measured: how it runs and where its probe outputs go."""

    name: str
    label: str
    results: Path
    output: str  # the attribute of `Topics` the probe's outputs are read from
    probe: str  # what the probe adds to the app's work


APPS = {
    "worker": App(
        "worker",
        "our worker",
        RESULTS / "latency.json",
        "decisions",
        "bench/packs/latency-probe.yaml: rule every-transaction, one more decision (and "
        "usually one alert) per transaction; timed on the decisions topic",
    ),
    "naive": App(
        "naive",
        "naive Faust app",
        RESULTS / "latency-naive.json",
        "alerts",
        "bench.naive_faust app --probe: rule every-transaction as one more if-statement, one "
        "more `await topic.send(...)` of an alert per transaction; timed on the alerts topic",
    ),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def events_from(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


# --- one app ----------------------------------------------------------------------------------


def start_app(app: App, stack: contextlib.ExitStack, s: Settings, tmp: Path) -> int:
    """Start the app with its probe; return its pid once it logs Faust's 'Ready'."""
    if app.name == "worker":
        s.rules = [PACKS, str(PROBE)]
        cmd, env = [sys.executable, "-m", "streams.cli", "worker"], worker_env(s)
    else:
        cmd, env = app_command(s, probe=True, loglevel="info"), None
    app_log = tmp / f"{app.name}.log"
    out = stack.enter_context(app_log.open("wb"))
    proc = subprocess.Popen(
        [*_pdeathsig(), *cmd], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
    )
    stack.callback(proc.wait, 30)
    stack.callback(proc.terminate)
    deadline = time.monotonic() + 60
    while b"Worker]: Ready" not in app_log.read_bytes():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"bench: the {app.label} did not become ready:\n{app_log.read_text()}")
        time.sleep(0.2)
    log(f"{app.label} ready")
    return proc.pid


def phase(
    rate: int,
    count: int,
    stream: Iterator[dict[str, Any]],
    s: Settings,
    outputs: Consumer,
    cpu: Callable[[], float | None],
) -> dict[str, Any]:
    """Produce `count` events at `rate`; time the probe output of each transaction."""
    sent: dict[str, float] = {}

    def timed() -> Iterator[dict[str, Any]]:
        for _, event in zip(range(count), stream, strict=False):
            if event["type"] == "transaction":
                sent[event["event_id"]] = time.time()
            yield event

    log(f"producing {count:,} events at {rate:,}/s")
    cpu0, t0 = cpu(), time.monotonic()
    stats = produce(timed(), s, rate=rate)
    produced = time.monotonic()
    latencies: list[float] = []
    quiet = last = time.monotonic()
    expected = len(sent)
    while time.monotonic() - quiet < QUIET and len(latencies) < expected:
        msg = outputs.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        quiet = time.monotonic()
        record = json.loads(msg.value() or b"{}")
        if record.get("rule_id") != PROBE_RULE:
            continue
        started = sent.pop(record.get("event_id"), None)
        if started is not None:
            latencies.append(msg.timestamp()[1] / 1000 - started)
            last = quiet
    cpu1 = cpu()
    result: dict[str, Any] = {
        "rate": rate,
        "events": stats.events,
        "achieved_rate": round(stats.rate),
        "samples": len(latencies),
        "missing": len(sent),
        "last_output_after_input_s": round(max(0.0, last - produced), 1),
        "app_cpu_share_of_one_core": (
            round((cpu1 - cpu0) / (last - t0), 2)
            if cpu0 is not None and cpu1 is not None and last > t0
            else None
        ),
    }
    if latencies:
        ms = [x * 1000 for x in latencies]
        result.update(
            p50_ms=round(percentile(ms, 0.5), 1),
            p99_ms=round(percentile(ms, 0.99), 1),
            p999_ms=round(percentile(ms, 0.999), 1),
            max_ms=round(max(ms), 1),
            mean_ms=round(statistics.fmean(ms), 1),
        )
    return result


def measure(
    app: App, rates: list[int], seconds: float, path: Path, warmup: float = 0.0
) -> dict[str, Any]:
    """Run `app` on a fresh broker and topics and measure each rate in turn."""
    info = machine_info()
    stream = events_from(path)
    phases: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="latency-bench-")))
        kafka = bench_kafka(stack, tmp, set(), app_topics if app.name == "naive" else lambda s: [])
        s = kafka.settings
        pid = start_app(app, stack, s, tmp)
        outputs = Consumer(
            {
                "bootstrap.servers": s.brokers,
                "group.id": f"latency-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        stack.callback(outputs.close)
        outputs.subscribe([getattr(s.topics, app.output)])
        if warmup:
            # Not measured: start-up, the first fetches and the stream's opening snapshot of
            # profiles (about 10,000 events) would otherwise land in the first rate's tail.
            w = phase(WARMUP_RATE, int(WARMUP_RATE * warmup), stream, s, outputs, lambda: None)
            log(f"{app.name} warm-up at {WARMUP_RATE:,}/s (not measured): {json.dumps(w)}")
        for rate in rates:
            p = phase(rate, int(rate * seconds), stream, s, outputs, lambda: cpu_seconds(pid))
            log(f"{app.name} at {rate:,}/s: {json.dumps(p)}")
            if not p["samples"]:
                lines = (tmp / f"{app.name}.log").read_text(errors="replace").splitlines()
                tail = [x for x in lines if "Crashed" in x or "Error" in x][:5] + lines[-5:]
                log(f"no outputs timed; the {app.label}'s log ends:\n" + "\n".join(tail))
            phases.append(p)
        info["loadavg_end"] = round(os.getloadavg()[0], 2)
    command = ["python -m bench.worker_latency", f"--app {app.name}"]
    if rates != [int(r) for r in RATES.split(",")]:
        command.append(f"--rates {','.join(map(str, rates))}")
    if seconds != SECONDS:
        command.append(f"--seconds {seconds:g}")
    if warmup != WARMUP:
        command.append(f"--warmup {warmup:g}")
    return {
        "benchmark": "worker_latency",
        "app": app.name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(command),
        "machine": info,
        "stream": {"customers": 10_000, "days": 30, "seed": 1, "file": path.name},
        "probe": app.probe,
        "seconds_per_rate": seconds,
        "warmup_seconds": warmup,
        "warmup_rate": WARMUP_RATE,
        "phases": phases,
    }


# --- report -----------------------------------------------------------------------------------


def load(app: App) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(app.results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    data.setdefault("app", app.name)  # (latency.json from before --app: the worker)
    return data


def sustained() -> dict[str, int | None]:
    """events/s each app drained in its throughput benchmark (worker.json, naive.json)."""
    rates: dict[str, int | None] = {}
    for name, file in (("worker", "worker.json"), ("naive", "naive.json")):
        try:
            rates[name] = json.loads((RESULTS / file).read_text(encoding="utf-8"))[name][
                "events_per_s"
            ]
        except (OSError, ValueError, KeyError, TypeError):
            rates[name] = None
    return rates


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.1f}"


def _at(r: dict[str, Any] | None, rate: int) -> dict[str, Any]:
    return next((p for p in (r or {}).get("phases", []) if p["rate"] == rate), {})


def section(runs: dict[str, dict[str, Any] | None]) -> str:
    """The worker-latency section of BENCHMARKS.md: a row per app and rate."""
    rows = [
        "| app | input rate (events/s) | achieved | events | samples | p50 (ms) | p99 (ms) "
        "| p99.9 (ms) | max (ms) | app CPU (share of one core) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in runs.items():
        for p in (r or {}).get("phases", []):
            share = p.get("app_cpu_share_of_one_core")
            rows.append(
                f"| {APPS[name].label} | {_n(p['rate'])} | {_n(p['achieved_rate'])} | "
                f"{_n(p['events'])} | {_n(p['samples'])} | {_ms(p.get('p50_ms'))} | "
                f"{_ms(p.get('p99_ms'))} | {_ms(p.get('p999_ms'))} | {_ms(p.get('max_ms'))} | "
                f"{'n/a' if share is None else f'{share:.0%}'} |"
            )
    w, nv = runs.get("worker"), runs.get("naive")
    rates = sustained()
    seconds = sorted({f"{r['seconds_per_rate']:.0f}" for r in runs.values() if r})
    runs_text = [
        f"{APPS[name].label}: `{r['command']}` (on {r['date'][:10]}, commit "
        f"{r['machine'].get('git', 'unknown')})"
        for name, r in runs.items()
        if r
    ]
    machines = {
        f"{m.get('cpu_model', '')}, {m.get('cores', '')} cores, {m.get('memory_gb', '')} GB RAM"
        for m in (r["machine"] for r in runs.values() if r)
    }
    return "\n".join(
        [
            START,
            "## Kafka worker latency",
            "",
            "Each app on its own local Kafka broker and fresh topics (4 partitions); the stream "
            "`simulate(10,000 customers, 30 days, seed 1)` fed in order by "
            "`streams.produce.produce` at each rate for "
            f"{' / '.join(seconds) or 'n/a'} s, one rate after the other on the same running "
            "app. Each app runs a probe, a rule that fires on every transaction, so that each "
            "transaction (about half the events) yields one output to time: **our worker** "
            "runs the shipped packs plus `bench/packs/latency-probe.yaml` (one more decision, "
            "and usually one alert, per transaction; timed on the decisions topic, at_least_once, "
            "default batches); the **naive Faust app** (`bench/naive_faust.py`, see its section) "
            "runs with `--probe`, one more if-statement whose alert is sent with "
            "`await topic.send(...)` like its other rules (timed on the alerts topic). Either "
            "way the probe adds an output per transaction to the app's work. Latency: the probe "
            "output's Kafka timestamp (set by the app's producer when it sends) minus the moment "
            "the transaction was handed to the input producer. App CPU: the app process's CPU "
            "time over the phase, from the first event produced to the last probe output. "
            + _warmup_text(w or nv),
            "",
            *rows,
            "",
            _target(w, nv),
            "",
            _behind(runs, rates),
            "",
            *_naive_idle(nv),
            "Commands: " + "; ".join(runs_text) + ".",
            "",
            "Machine: " + "; ".join(sorted(machines)) + ".",
            END,
        ]
    )


def _warmup_text(r: dict[str, Any] | None) -> str:
    warmup = (r or {}).get("warmup_seconds")
    if warmup:
        rate = (r or {}).get("warmup_rate", WARMUP_RATE)
        return (
            f"Before the first rate each app gets {warmup:g} s at {rate:,} events/s that are not "
            "measured: its start-up and the stream's opening snapshot of about 10,000 profile "
            "events (one per customer)."
        )
    return (
        "The stream opens with about 10,000 profile events (one per customer), so the first "
        "phase's samples come from its later part."
    )


def _target(w: dict[str, Any] | None, nv: dict[str, Any] | None) -> str:
    five, naive_five = _at(w, TARGET_RATE).get("p99_ms"), _at(nv, TARGET_RATE).get("p99_ms")
    if five is None:
        return f"Target: p99 under {TARGET_P99_MS:.0f} ms at {TARGET_RATE:,} events/s: no figure."
    met = five < TARGET_P99_MS
    one = _at(w, 1000)
    text = (
        f"Target: p99 under {TARGET_P99_MS:.0f} ms at {TARGET_RATE:,} events/s. Our worker's p99 "
        f"at {TARGET_RATE:,}/s: {_ms(five)} ms: **{'met' if met else 'not met'}**"
        + (f" (the naive app's: {_ms(naive_five)} ms)" if naive_five is not None else "")
        + "."
    )
    if one.get("p50_ms") is not None:
        text += f" At 1,000/s our worker's median is {_ms(one['p50_ms'])} ms and p99 "
        text += f"{_ms(one['p99_ms'])} ms"
        naive_one = _at(nv, 1000)
        if naive_one.get("p50_ms") is not None:
            text += (
                f" (the naive app's {_ms(naive_one['p50_ms'])} ms and "
                f"{_ms(naive_one['p99_ms'])} ms)"
            )
        text += "."
    if not met:
        text += (
            ' Where the time goes is traced in "Where the worker\'s time goes" below: at '
            "rates the worker sustains, the wait to receive a record (producer linger, fetch, "
            "Faust's hand-over, the 2 ms batch wait) and two acknowledged produce round trips "
            "per batch; above them, the backlog of a worker that is CPU-bound in Faust's "
            "per-record machinery."
        )
    return text


def _naive_idle(nv: dict[str, Any] | None) -> list[str]:
    """A note when the naive app is slow at 1,000/s without being busy."""
    p = _at(nv, 1000)
    share = p.get("app_cpu_share_of_one_core")
    if (p.get("p50_ms") or 0) < 500 or share is None or share > 0.6:
        return []
    return [
        f"At 1,000 events/s the naive app's median latency ({_ms(p['p50_ms'])} ms) is not CPU: "
        f"it used {share:.0%} of a core. Not investigated further.",
        "",
    ]


def _behind(runs: dict[str, dict[str, Any] | None], rates: dict[str, int | None]) -> str:
    """Which rates an app did not keep up with (p99 over a second): latency is backlog."""
    behind, kept = [], []
    for name, r in runs.items():
        phases = (r or {}).get("phases", [])
        slow = [p["rate"] for p in phases if (p.get("p99_ms") or 0) >= 1000]
        if slow:
            behind.append(f"{APPS[name].label} at {', '.join(f'{x:,}' for x in slow)}/s")
        # events / (the time to feed them + the time until the last output): what it kept up with
        done = [
            p["events"] / (p["events"] / p["achieved_rate"] + p["last_output_after_input_s"])
            for p in phases
            if (p.get("last_output_after_input_s") or 0) > 2 and p.get("achieved_rate")
        ]
        if done:
            kept.append(f"{APPS[name].label} {_n(max(done))}")
    drained = [
        f"{APPS[name].label} about {rate:,} events/s"
        for name, rate in rates.items()
        if rate and name in runs
    ]
    return (
        "A rate above what an app sustains builds a backlog, and its latency is the time that "
        "backlog takes to drain. Each phase waits until every probe output of its own has "
        f"arrived (or none for {QUIET:.0f} s) before the next begins, so a backlog does not "
        "carry over"
        + (f". p99 over a second: {'; '.join(behind)}" if behind else "")
        + (
            f". Drained from a backlog without the probe (throughput benchmarks): "
            f"{', '.join(drained)}"
            if drained
            else ""
        )
        + (
            f"; with the probe, events / (feeding time + time to the phase's last output), the "
            f"best of the phases it fell behind in: {', '.join(kept)} events/s"
            if kept
            else ""
        )
        + "."
    )


def write_section(text: str) -> None:
    current = BENCHMARKS.read_text(encoding="utf-8")
    if START in current and END in current:
        head, rest = current.split(START, 1)
        tail = rest.split(END, 1)[1]
        BENCHMARKS.write_text(head + text + (tail or "\n"), encoding="utf-8")
    else:
        BENCHMARKS.write_text(current.rstrip("\n") + "\n\n" + text + "\n", encoding="utf-8")


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worker_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--app", default="worker,naive", help="worker, naive or both (a,b)")
    parser.add_argument("--rates", default=RATES)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument(
        "--warmup", type=float, default=WARMUP, help="seconds at 1,000/s first, not measured"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    names = [a.strip() for a in args.app.split(",") if a.strip()]
    if not names or any(a not in APPS for a in names):
        parser.error(f"--app: one or more of {', '.join(APPS)}")
    rates = [int(r) for r in args.rates.split(",")]
    os.chdir(ROOT)
    path = stream_file(10_000, 30, 1)
    runs: dict[str, dict[str, Any] | None] = {name: load(app) for name, app in APPS.items()}
    for name in names:
        app = APPS[name]
        log(f"measuring {app.label}")
        runs[name] = result = measure(app, rates, args.seconds, path, args.warmup)
        if not args.no_write:
            RESULTS.mkdir(parents=True, exist_ok=True)
            app.results.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
            log(f"wrote {app.results.relative_to(ROOT)}")
    text = section(runs)
    print(text)
    if not args.no_write:
        write_section(text)
        log("wrote the worker-latency section of BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
