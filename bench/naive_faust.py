"""Naive Faust baseline: a Faust app written the way a user would write it by hand.

    python -m bench.naive_faust [--customers 10000] [--days 7] [--seed 1]   # the benchmark
    python -m bench.naive_faust app --broker HOST:PORT --app-id ID ...      # the app itself
    python -m bench.worker_latency --app naive                              # its latency

The app (`build_app`, run as its own process by the benchmark) is the textbook Faust program:
one agent over the three input topics, `async for event in stream`, `json.loads` per record,
the customer's dict read from one `app.Table('naive-state', default=dict)` (RocksDB through
rocksdict, JSON values, changelog in Kafka), a few aggregates updated in plain Python (card
transactions in the last 10 minutes, debits of the last 30 days, known countries, known
devices, the last new-device login, the last activity), five of the shipped rules written as
if-statements (card velocity, amount spike, first trip abroad, dormant reactivation, new device
+ large transfer), the dict written back to the table on every event (so one changelog message
per event, Faust's normal path) and each alert or offer sent with `await topic.send(...)`. No
batching, no event-time merge across topics, no decisions topic, no policy (consent, caps,
cooldowns, holdouts), no dead letters. It does not reproduce the engine's outputs: it is a
baseline of the programming model, not of the rules.

With `--probe` (used by `bench.worker_latency --app naive`, not by this throughput benchmark)
the app has a sixth rule, `every-transaction`, an if-statement that fires on every transaction,
so each transaction is followed by one more `await topic.send(...)` of an alert whose Kafka
timestamp can be timed: the counterpart of `bench/packs/latency-probe.yaml` for our worker.

The benchmark does what `bench.worker_throughput` does for `crm-triggers worker` (and reuses
its machinery): a local Apache Kafka broker (or `$KAFKA_BOOTSTRAP`), fresh topics with 4
partitions, the cached simulated stream produced to the input topics before the app starts,
then the app process is started and the consumer group's committed offsets are polled against
the input high watermarks:

- start-up: from starting the process until the group first commits an offset;
- drain: from that first commit until the committed offsets equal the high watermarks;
- events/s: events / drain; CPU µs per event: the app process's CPU in the drain divided by
  the events committed in it (and the same for the broker JVM when the script started it).

The app commits with the same settings as our worker (every 1 s or 2,000 records), so both
drains are measured to the same resolution. Results go to `bench/results/naive.json` and the
naive-faust section of BENCHMARKS.md, with the ratio of our worker (`bench/results/worker.json`)
to this baseline. One run, about 1-2 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from bench.worker_throughput import (
    PARTITIONS,
    POLL,
    ROOT,
    _delta,
    _n,
    ancestors,
    backlog,
    backlog_parser,
    bench_kafka,
    high_watermarks,
    java_version,
    kafka_footer,
    log,
    machine_info,
    produce,
    time_drain,
    write_section,
)
from scripts.kafka_local import kafka_version
from streams.settings import Settings

RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
WORKER_JSON = RESULTS / "worker.json"
START, END = "<!-- naive-faust:start -->", "<!-- naive-faust:end -->"
TABLE = "naive-state"
RULES = (
    "card velocity (5+ card transactions in 10 min, one alert per 30 min)",
    "amount spike (debit > 5x the 30-day mean debit, >= 1,000, after 20+ debits)",
    "first trip abroad (first card transaction in a country other than home)",
    "dormant reactivation (debit >= 10,000 after 365 days without activity)",
    "new device + large transfer (debit >= 50,000 to a counterparty within 30 min "
    "of a login from a new device)",
)


# --- the naive app ----------------------------------------------------------------------------


PROBE_RULE = "every-transaction"


def build_app(
    broker: str,
    app_id: str,
    datadir: str,
    inputs: list[str],
    alerts: str,
    offers: str,
    probe: bool = False,
) -> Any:
    """The naive Faust app: one agent, one table, the rules as if-statements. `probe`: one
    more rule that sends an alert on every transaction (for latency measurements)."""
    import faust

    app = faust.App(
        app_id,
        broker=f"kafka://{broker}",
        store="rocksdb://",
        datadir=datadir,
        topic_allow_declare=True,  # Faust creates its own changelog and leader topics
        topic_partitions=PARTITIONS,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        # the same commit settings as our worker, so the drain is measured the same way
        broker_commit_interval=1.0,
        broker_commit_every=2000,
    )
    table = app.Table(TABLE, default=dict, partitions=PARTITIONS, options={"driver": "rocksdict"})
    source = app.topic(*inputs, key_serializer="raw", value_serializer="raw")
    alerts_topic = app.topic(alerts, value_serializer="json")
    offers_topic = app.topic(offers, value_serializer="json")

    @app.agent(source)
    async def process(stream: Any) -> None:
        async for raw in stream:
            event = json.loads(raw)
            cid = event["customer_id"]
            state = table[cid]
            now = datetime.fromisoformat(event["ts"]).timestamp()
            kind = event["type"]
            fired: list[tuple[str, str]] = []  # (rule, "alert" | "offer")

            if kind == "profile":
                state["home_country"] = event.get("home_country")
                state["products"] = event.get("products") or []
            elif kind == "interaction":
                device = event.get("device_id")
                if device:
                    devices = state.setdefault("devices", [])
                    if device not in devices:
                        if devices and event.get("action") == "login":
                            state["new_device_login"] = now
                        devices.append(device)
                state["last_active"] = now
            elif kind == "transaction":
                amount = float(event.get("amount") or 0)
                debit = event.get("direction") == "debit"
                channel = event.get("channel")
                last_active = state.get("last_active")

                if channel == "card":
                    recent = [t for t in state.get("card_10m", []) if now - t <= 600]
                    recent.append(now)
                    state["card_10m"] = recent
                    if len(recent) >= 5 and now - state.get("velocity_alerted", 0) >= 1800:
                        state["velocity_alerted"] = now
                        fired.append(("card-velocity", "alert"))
                    country = event.get("merchant_country")
                    home = state.get("home_country")
                    if country and home and country != home:
                        known = state.setdefault("countries", [])
                        if not any(c != home for c in known) and "travel_insurance" not in (
                            state.get("products") or []
                        ):
                            fired.append(("first-trip-abroad", "offer"))
                        if country not in known:
                            known.append(country)

                if debit:
                    debits = [d for d in state.get("debits_30d", []) if now - d[0] <= 30 * 86400]
                    if len(debits) >= 20:
                        mean = sum(d[1] for d in debits) / len(debits)
                        if amount >= 1000 and amount > 5 * mean:
                            fired.append(("amount-spike", "alert"))
                    debits.append([now, amount])
                    state["debits_30d"] = debits
                    if amount >= 10000 and last_active and now - last_active >= 365 * 86400:
                        fired.append(("dormant-reactivation", "alert"))
                    payee = event.get("counterparty_id")
                    login = state.get("new_device_login")
                    if amount >= 50000 and payee and login and 0 <= now - login <= 1800:
                        fired.append(("new-device-transfer", "alert"))
                if probe:
                    fired.append((PROBE_RULE, "alert"))
                state["last_active"] = now

            table[cid] = state  # one changelog message per event
            for rule, what in fired:
                out = {"rule_id": rule, "customer_id": cid, "event_id": event.get("event_id"),
                       "ts": event["ts"]}  # fmt: skip
                target = alerts_topic if what == "alert" else offers_topic
                await target.send(key=cid.encode(), value=out)

    return app


def run_app(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_faust app")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--inputs", required=True, help="comma-separated input topics")
    parser.add_argument("--alerts", required=True)
    parser.add_argument("--offers", required=True)
    parser.add_argument("--probe", action="store_true", help=f"add the {PROBE_RULE} rule")
    parser.add_argument("--loglevel", default="warn", help="info logs Faust's 'Ready'")
    args = parser.parse_args(argv)
    app = build_app(args.broker, args.app_id, args.datadir, args.inputs.split(","),
                    args.alerts, args.offers, probe=args.probe)  # fmt: skip
    sys.argv = [sys.argv[0], "worker", "--loglevel", args.loglevel]
    app.main()
    return 0


def app_command(s: Settings, probe: bool = False, loglevel: str = "warn") -> list[str]:
    """The command that runs the naive app on the benchmark's topics, in group `s.app_id`."""
    cmd = [sys.executable, "-m", "bench.naive_faust", "app",
           "--broker", s.brokers, "--app-id", s.app_id, "--datadir", str(s.state_dir),
           "--inputs", ",".join(s.topics.inputs()), "--alerts", s.topics.alerts,
           "--offers", s.topics.offers, "--loglevel", loglevel]  # fmt: skip
    return [*cmd, "--probe"] if probe else cmd


def app_topics(s: Settings) -> list[str]:
    """The topics Faust creates for the app itself (deleted after a run on an external broker)."""
    return [f"{s.app_id}-{TABLE}-changelog", f"{s.app_id}-__assignor-__leader"]


# --- the measurement --------------------------------------------------------------------------


def run_naive(
    s: Settings, events: int, log_path: Path, ours: set[int], broker_pid: int | None
) -> dict[str, Any]:
    # group s.app_id: the naive app's id
    d = time_drain(s, events, app_command(s), None, log_path, ours, broker_pid, name="naive app")
    started, first, end, samples, busy = d.started, d.first, d.end, d.samples, d.busy
    changelog = f"{s.app_id}-{TABLE}-changelog"
    state_writes = sum(
        high_watermarks(s, [TopicPartition(changelog, p) for p in range(PARTITIONS)]).values()
    )
    outs = {
        name: sum(high_watermarks(s, [TopicPartition(t, p) for p in range(PARTITIONS)]).values())
        for name, t in (("alerts", s.topics.alerts), ("offers", s.topics.offers))
    }
    drain = end[0] - first[0]
    after = events - first[1]
    app_cpu = _delta(end[2], first[2])
    broker_cpu = _delta(end[3], first[3])
    return {
        "startup_seconds": round(first[0] - started, 3),
        "committed_at_first_commit": first[1],
        "drain_seconds": round(drain, 3),
        "total_seconds": round(end[0] - started, 3),
        "events_per_s": round(events / drain) if drain > 0 else None,
        "events_per_s_after_first_commit": round(after / drain) if drain else None,
        "events_per_s_incl_startup": round(events / (end[0] - started)),
        "app_cpu_seconds_drain": app_cpu,
        "app_cpu_share_of_one_core": round(app_cpu / drain, 2) if app_cpu and drain else None,
        "app_cpu_us_per_event": round(app_cpu / after * 1e6, 1) if app_cpu and after else None,
        "broker_cpu_seconds_drain": broker_cpu,
        "broker_cpu_us_per_event": (
            round(broker_cpu / after * 1e6, 1) if broker_cpu and after else None
        ),
        "changelog_topic": changelog,
        "changelog_records": state_writes,
        "changelog_records_per_event": round(state_writes / events, 3),
        "outputs": outs,
        "commit_samples": [[round(t, 2), n] for t, n in samples],
        "other_work_seen": sorted(busy),
    }


# --- report -----------------------------------------------------------------------------------


def ours_from_file() -> dict[str, Any] | None:
    try:
        data = json.loads(WORKER_JSON.read_text(encoding="utf-8"))
        return {
            "file": str(WORKER_JSON.relative_to(ROOT)),
            "date": data["date"][:10],
            "worker_events_per_s": data["worker"]["events_per_s"],
            "worker_cpu_us_per_event": data["worker"].get("worker_cpu_us_per_event"),
            "ceiling_events_per_s": (data.get("ceiling") or {}).get("events_per_s"),
            "stream": data.get("stream"),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def section(r: dict[str, Any]) -> str:
    m, st, n, p, w = r["machine"], r["stream"], r["naive"], r["producer"], r["ours"]
    rate = n["events_per_s"]
    head = ("events", "app start-up (s)", "drain (s)", "naive events/s",
            "app CPU µs/event", "broker CPU µs/event", "changelog records/event",
            "our worker events/s", "our worker / naive")  # fmt: skip
    ratio = w["worker_events_per_s"] / rate if w and rate else None
    us = n["app_cpu_us_per_event"]
    bus = n["broker_cpu_us_per_event"]
    row = (_n(p["events"]), f"{n['startup_seconds']:.1f}", f"{n['drain_seconds']:.1f}",
           f"**{_n(rate)}**", _n(us), _n(bus), f"{n['changelog_records_per_event']:.2f}",
           _n(w["worker_events_per_s"]) if w else "n/a",
           f"**{ratio:.2f}x**" if ratio else "n/a")  # fmt: skip
    table = "\n".join(["| " + " | ".join(head) + " |", "|" + "--:|" * len(head),
                       "| " + " | ".join(row) + " |"])  # fmt: skip
    busy = n["other_work_seen"]
    load = (
        f"1-minute load average {m['loadavg_start']:.2f} at start, {m['loadavg_end']:.2f} at end"
        + (
            f"; **other work ran during the measurement** ({len(busy)} processes, listed in the "
            "JSON), so the numbers may be low."
            if busy
            else "; no other test, benchmark, broker or worker process ran."
        )
    )
    compare = ""
    if w:
        ceiling = (
            f" The bare-consumer ceiling measured in that run was "
            f"{_n(w['ceiling_events_per_s'])} events/s: the naive app reaches "
            f"{rate / w['ceiling_events_per_s']:.1%} of it, our worker "
            f"{w['worker_events_per_s'] / w['ceiling_events_per_s']:.1%}."
            if w["ceiling_events_per_s"] and rate
            else ""
        )
        cpu = (
            f" Per event the naive app used {us:.0f} µs of CPU against our worker's "
            f"{w['worker_cpu_us_per_event']:.0f} µs."
            if us and w["worker_cpu_us_per_event"]
            else ""
        )
        compare = (
            f"Our worker drained the same stream at {_n(w['worker_events_per_s'])} events/s "
            f"(`{w['file']}`, {w['date']}): **{ratio:.2f}x** this baseline.{ceiling}{cpu} "
        )
    return "\n".join([
        START,
        "## Naive Faust baseline",
        "",
        f"Stream: `simulate({st['customers']:,} customers, {st['days']} days, seed "
        f"{st['seed']})`, {_n(p['events'])} events, produced to the same three input topics "
        f"({PARTITIONS} partitions each, keyed by customer id) before the app starts, exactly as "
        f"for the worker benchmark; Apache Kafka {r['kafka']['version']} ({r['kafka']['where']}). "
        "The app (`bench/naive_faust.py`, `build_app`) is a Faust program written the way a user "
        "would write it by hand: one agent over the three topics, `json.loads` per record, the "
        f"customer's dict read from one `app.Table('{TABLE}', default=dict)` (RocksDB via "
        "rocksdict, JSON values) and written back on every event (Faust's own changelog path, "
        "one changelog message per event), five rules as if-statements, each alert or offer "
        "sent with `await topic.send(...)`; at-least-once, Faust defaults except the commit "
        "settings (every 1 s or 2,000 records, as our worker, so both drains are measured alike).",
        "",
        table,
        "",
        "Start-up, drain and events/s are measured as in the worker benchmark (committed offsets "
        f"of the {3 * PARTITIONS} input partitions polled every {POLL:.1f} s against their high "
        f"watermarks; events/s = events / drain, {_n(n['events_per_s_after_first_commit'])} "
        f"counting only events committed after the first commit, "
        f"{_n(n['events_per_s_incl_startup'])} including start-up). The app process used "
        f"{n['app_cpu_seconds_drain']:.1f} s of CPU in the {n['drain_seconds']:.1f} s drain "
        f"({n['app_cpu_share_of_one_core']:.0%} of one core). It wrote "
        f"{_n(n['changelog_records'])} changelog records and sent {_n(n['outputs']['alerts'])} "
        f"alerts and {_n(n['outputs']['offers'])} offers. " + load,
        "",
        compare
        + "**Not like for like, in the baseline's favour:** the naive app evaluates 5 simplified "
        "rules (card velocity, amount spike, first trip abroad, dormant reactivation, new device "
        "+ large transfer) where the worker runs every rule of the shipped packs with their "
        "aggregates, policy (consent, caps, cooldowns, holdouts, risk blocks) and a decision "
        "record per rule fired; it writes no decisions, has no dead-letter handling, does not "
        "merge the three topics in event time (each partition's records are processed in "
        "arrival order), and does not wait for its outputs and changelog records to be "
        "acknowledged before its offsets are committed. Its outputs are not those of the engine "
        "and are not checked: this is a baseline of the programming model (per-event table "
        "read/write and sends), not of the rules.",
        "",
        *kafka_footer(r),
        END,
    ])  # fmt: skip


def write_benchmarks(text: str) -> None:
    write_section(START, END, text)


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["app"]:
        return run_app(argv[1:])
    args = backlog_parser("python -m bench.naive_faust", __doc__).parse_args(argv)
    os.chdir(ROOT)
    began = time.perf_counter()
    info = machine_info()
    ours = ancestors()
    path, lines = backlog(args)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="naive-bench-")))
        kafka = bench_kafka(stack, tmp, ours, app_topics)
        s, where, broker_pid, warmup = kafka.settings, kafka.where, kafka.broker_pid, kafka.warmup

        log(f"producing {len(lines):,} events to {', '.join(s.topics.inputs())}")
        producer = produce(s, lines, warmup)
        log(f"produced in {producer['seconds']:.1f}s ({_n(producer['events_per_s'])} events/s)")

        log("starting the naive Faust app")
        naive = run_naive(s, len(lines), tmp / "naive.log", ours, broker_pid)
        log(
            f"naive: start-up {naive['startup_seconds']:.1f}s, drain "
            f"{naive['drain_seconds']:.1f}s, {_n(naive['events_per_s'])} events/s, "
            f"{naive['app_cpu_us_per_event']} µs CPU/event"
        )
        info["loadavg_end"] = round(os.getloadavg()[0], 2)

    results: dict[str, Any] = {
        "benchmark": "naive_faust",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.naive_faust", *argv]),
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
        "app": {
            "module": "bench/naive_faust.py (build_app)",
            "table": f"{TABLE}, default=dict, JSON values, rocksdict, written every event",
            "rules": list(RULES),
            "faust_settings": "defaults (at-least-once, acks -1) except "
            "broker_commit_interval=1.0, broker_commit_every=2000, web disabled",
        },
        "producer": producer,
        "naive": naive,
        "ours": ours_from_file(),
    }
    w = results["ours"]
    if w and naive["events_per_s"]:
        results["ratio_worker_to_naive"] = round(
            w["worker_events_per_s"] / naive["events_per_s"], 2
        )
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    text = section(results)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / "naive.json"
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        write_benchmarks(text)
        log(f"wrote {out.relative_to(ROOT)} and the naive-faust section of BENCHMARKS.md")
    if naive["other_work_seen"]:
        log("WARNING: other work ran during the measurement:")
        for cmd in naive["other_work_seen"]:
            log(f"  {cmd}")
    log(f"done in {results['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
