"""The combined benchmark report: one table of every figure `make bench` measures.

    python -m bench.report [--since 2026-11-25T04:00:00Z] [--no-write]

Reads the results each benchmark wrote to `bench/results/` (`replay.json`, `scale.json`,
`worker.json`, `naive.json`, `latency.json`, `latency-naive.json`, `quality.json`; any of
them may be missing) and builds one table, a row per figure: value and unit, its ratio to the
naive Faust baseline (`naive.json`; for a latency, the naive app's latency at the same rate
and percentile) and to the bare-consumer ceiling (`worker.json`, events/s only), the target
and whether it is met, the command that reproduces it, and the date and commit of the run
that produced it. A row is flagged when the runs it is built from (the figure's, the
baseline's, the ceiling's) are from different commits, machines or streams, when other work
ran during its run, and, with `--since`, when its run is older than that time (`make bench`
passes its own start, so rows it did not refresh show up).

Prints the table (Markdown), writes it as JSON with the machines and commits of the runs
(`bench/results/latest.json`, for tools comparing runs) and rewrites the summary section at
the top of BENCHMARKS.md (between `<!-- summary:start -->` and `<!-- summary:end -->`,
created after the intro paragraph if missing). Reads files only: runs in well under a second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
LATEST = "latest.json"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
SOURCES = {
    "replay": "replay.json",
    "scale": "scale.json",
    "worker": "worker.json",
    "naive": "naive.json",
    "latency": "latency.json",
    "latency_naive": "latency-naive.json",
    "quality": "quality.json",
    "outage": "webhook_outage.json",
}
CORE_TARGET = 100_000  # events/s on one core (the target)
WORKER_TARGET = 5.0  # x the naive Faust baseline's events/s
P99_TARGET_MS, P99_TARGET_RATE = 25.0, 5000
CORE_SIZES, MEMORY_SIZES, RESTORE_SIZES = (1_000_000,), (100_000, 1_000_000), (1_000_000,)
PERCENTILES = (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))
ITEMS = {
    "1": "Embedded core",
    "2": "Kafka worker",
    "3": "Naive Faust baseline",
    "4": "Ceiling: bare consumer",
    "5": "Memory",
    "6": "Recovery",
    "7": "Decision quality",
    "8": "Webhook outage (issue 5)",
}


@dataclass
class Row:
    """One figure of the report."""

    item: str  # the item number, "1".."7"
    id: str  # stable key, for tools comparing runs
    figure: str
    value: float | str | None
    unit: str
    source: str  # the results key the value comes from
    ratio_baseline: float | None = None
    ratio_ceiling: float | None = None
    target: str | None = None
    met: bool | None = None
    command: str | None = None
    date: str | None = None
    commit: str | None = None
    machine: str | None = None
    flags: list[str] = field(default_factory=list)
    # the results keys its ratios come from (for the provenance checks)
    compared_with: list[str] = field(default_factory=list)


# --- reading ----------------------------------------------------------------------------------


def load_sources(directory: Path = RESULTS) -> dict[str, dict[str, Any] | None]:
    """Every results file by key; None where it is missing or unreadable."""
    out: dict[str, dict[str, Any] | None] = {}
    for key, name in SOURCES.items():
        try:
            data = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        out[key] = data if isinstance(data, dict) else None
    return out


def machine_key(m: dict[str, Any] | None) -> str:
    """The machine as compared between runs: CPU model, cores, memory."""
    if not m:
        return "unknown"
    return f"{m.get('cpu_model', 'unknown')}, {m.get('cores', '?')} cores, " + (
        f"{m.get('memory_gb', '?')} GB RAM"
    )


def stream_key(data: dict[str, Any] | None) -> str | None:
    """The simulated stream a run used, shortly: "10k x 30 d" (seed 1 is left out)."""
    st = (data or {}).get("stream")
    if not isinstance(st, dict) or "customers" not in st:
        return None
    c = st["customers"]
    size = (
        f"{c // 1_000_000}M"
        if c >= 1_000_000 and not c % 1_000_000
        else (f"{c // 1000}k" if c >= 1000 and not c % 1000 else f"{c:,}")
    )
    seed = st.get("seed", 1)
    return f"{size} x {st.get('days', '?')} d" + ("" if seed == 1 else f" seed {seed}")


def _stem(key: str) -> str:
    return SOURCES[key].removesuffix(".json")


def _short(commit: str) -> str:
    return commit.replace(" (uncommitted changes)", "*")


def _get(data: dict[str, Any] | None, *path: str | int) -> Any:
    cur: Any = data
    for key in path:
        try:
            cur = cur[key]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _div(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return a / b
    return None


# --- the rows ---------------------------------------------------------------------------------


def _embedded(src: dict[str, dict[str, Any] | None]) -> list[Row]:
    rows = []
    r = src["replay"]
    customers = _get(r, "stream", "customers") or 10_000
    days = _get(r, "stream", "days")
    shape = f"{customers:,} customers x {days} days" if days else f"{customers:,} customers"
    for key, how in (("engine_memory", "in memory"), ("engine_rocksdb", "on RocksDB")):
        rows.append(
            Row(
                "1",
                f"embedded.{key.split('_')[1]}.c{customers}",
                f"Embedded core {how}, {shape}, one core",
                _get(r, key, "events_per_s"),
                "events/s",
                "replay",
            )
        )
    for c in _sizes(_get(src["scale"], "core"), CORE_SIZES):
        shape = f"{c['customers']:,} customers" + (f" x {c['days']} days" if c.get("days") else "")
        rows.append(
            Row(
                "1",
                f"embedded.scale.c{c['customers']}",
                f"Embedded core, {shape}",
                c.get("events_per_s"),
                "events/s",
                "scale",
            )
        )
    for row in rows:
        row.target = f">= {CORE_TARGET:,} events/s on one core"
        if isinstance(row.value, int | float):
            row.met = row.value >= CORE_TARGET
    return rows


def _kafka(src: dict[str, dict[str, Any] | None]) -> list[Row]:
    w = src["worker"]
    worker = Row(
        "2",
        "worker.events_per_s",
        "Kafka worker, max sustained events/s (one process draining a backlog)",
        _get(w, "worker", "events_per_s"),
        "events/s",
        "worker",
        target=f">= {WORKER_TARGET:g}x the naive baseline",
    )
    match = _get(w, "parity", "match")
    parity = Row(
        "2",
        "worker.parity",
        "Kafka worker outputs equal `crm-triggers replay`'s",
        None if match is None else ("yes" if match else "no"),
        "",
        "worker",
        target="equal",
        met=match,
    )
    naive = Row(
        "3",
        "naive.events_per_s",
        "Naive Faust app, events/s (draining a backlog)",
        _get(src["naive"], "naive", "events_per_s"),
        "events/s",
        "naive",
    )
    ceiling = Row(
        "4",
        "ceiling.events_per_s",
        "Bare confluent-kafka consumer (no group, no processing), events/s",
        _get(w, "ceiling", "events_per_s"),
        "events/s",
        "worker",
    )
    return [worker, parity, naive, ceiling]


def _latency(src: dict[str, dict[str, Any] | None]) -> list[Row]:
    rows = []
    for key, item, who in (("latency", "2", "worker"), ("latency_naive", "3", "naive")):
        phases = _get(src[key], "phases") or [{"rate": r} for r in (1000, 5000, 10000)]
        label = "Kafka worker" if who == "worker" else "Naive Faust app"
        for p in phases:
            for field_, name in PERCENTILES:
                row = Row(
                    item,
                    f"{who}.latency.{name}.r{p['rate']}",
                    f"{label}, event-to-output latency {name} at {p['rate']:,} events/s",
                    p.get(field_),
                    "ms",
                    key,
                )
                if who == "worker" and name == "p99" and p["rate"] == P99_TARGET_RATE:
                    row.target = f"< {P99_TARGET_MS:g} ms"
                    if isinstance(row.value, int | float):
                        row.met = row.value < P99_TARGET_MS
                rows.append(row)
    return rows


def _scale(src: dict[str, dict[str, Any] | None]) -> list[Row]:
    rows = []
    s = src["scale"]
    for m in _sizes(_get(s, "memory"), MEMORY_SIZES):
        c = m["customers"]
        rows += [
            Row(
                "5",
                f"memory.worker_rss_mb.c{c}",
                f"Worker RSS, {c:,} customers",
                m.get("worker_rss_mb"),
                "MiB",
                "scale",
            ),
            Row(
                "5",
                f"memory.worker_peak_rss_mb.c{c}",
                f"Worker peak RSS, {c:,} customers",
                m.get("worker_peak_rss_mb"),
                "MiB",
                "scale",
            ),
            Row(
                "5",
                f"memory.rocksdb_bytes_per_customer.c{c}",
                f"RocksDB bytes per customer, {c:,} customers",
                m.get("rocksdb_bytes_per_customer"),
                "B",
                "scale",
            ),
        ]
        if m.get("rocksdb_bytes_per_customer_compacted") is not None:
            rows.append(
                Row(
                    "5",
                    f"memory.rocksdb_bytes_per_customer_compacted.c{c}",
                    f"RocksDB bytes per customer after a full compaction, {c:,} customers",
                    m["rocksdb_bytes_per_customer_compacted"],
                    "B",
                    "scale",
                )
            )
    for r in _sizes(_get(s, "restore"), RESTORE_SIZES):
        c = r["customers"]
        records = r.get("changelog_records")
        what = f" ({records:,} changelog records)" if isinstance(records, int) else ""
        rows.append(
            Row(
                "6",
                f"restore.seconds.c{c}",
                f"Restore {c:,} customers from the changelog{what}",
                r.get("seconds"),
                "s",
                "scale",
            )
        )
    return rows


def _sizes(entries: Any, required: tuple[int, ...]) -> list[dict[str, Any]]:
    """The entries of a scale.json list by customers, with an empty one for each required
    size it lacks (so a figure the issue asks for shows as n/a rather than vanishing)."""
    found = {e["customers"]: e for e in entries or [] if isinstance(e, dict) and "customers" in e}
    return [found.get(c, {"customers": c}) for c in sorted(set(found) | set(required))]


def _pct(a: int, b: int) -> float | None:
    return round(100 * a / b, 1) if b else None


def _quality(src: dict[str, dict[str, Any] | None]) -> list[Row]:
    q = src["quality"]
    rows = []
    for group, name in (("risk", "risk alerts"), ("marketing", "marketing offers")):
        rules = _get(q, "quality", group) or []
        fired = sum(r.get("fired", 0) for r in rules)
        labels = sum(r.get("labels", 0) for r in rules)
        tp = sum(r.get("tp", 0) for r in rules)
        explained = sum(_get(r, "relaxed", "firings_explained") or 0 for r in rules)

        rows += [
            Row(
                "7",
                f"quality.{group}.precision",
                f"Precision of the {name} (all rules, by event)",
                _pct(tp, fired),
                "%",
                "quality",
            ),
            Row(
                "7",
                f"quality.{group}.precision_relaxed",
                f"Precision of the {name} (same customer within the window)",
                _pct(explained, fired),
                "%",
                "quality",
            ),
            Row(
                "7",
                f"quality.{group}.recall",
                f"Recall of the {name} (all rules, by event)",
                _pct(tp, labels),
                "%",
                "quality",
            ),
        ]
    breaches = _get(q, "offers_summary", "violations")
    rows.append(
        Row(
            "7",
            "quality.offer_cap_breaches",
            "Offers over the contact policy's caps",
            breaches,
            "offers",
            "quality",
            target="0",
            met=None if breaches is None else breaches == 0,
        )
    )
    return rows


def _outage(src: dict[str, dict[str, Any] | None]) -> list[Row]:
    o = src.get("outage")
    minutes = _get(o, "config", "outage_s")
    label = f"{minutes / 60:g}-minute webhook outage" if minutes else "webhook outage"
    kib = _get(o, "rss_kb", "outage", "max"), _get(o, "rss_kb", "warmup_last_20s", "median")
    checks = _get(o, "checks") or {}
    lost = None
    if checks:
        lost = sum(checks.get(k, 0) for k in ("webhook_missing", "file_missing", "dead_letters"))
    return [
        Row("8", "outage.backlog", f"Backlog in Kafka after a {label}",
            _get(o, "backlog_at_end_of_outage", "webhook_lag"), "actions", "outage"),
        Row("8", "outage.rss_growth", f"Deliverer memory growth during a {label}",
            None if None in kib else round((kib[0] - kib[1]) / 1024, 1), "MiB", "outage"),
        Row("8", "outage.catchup_s", f"Catch-up time after a {label}",
            _get(o, "catchup", "seconds"), "s", "outage"),
        Row("8", "outage.catchup_rate", "Catch-up delivery rate (one webhook connector)",
            _get(o, "catchup", "rate_per_s"), "actions/s", "outage"),
        Row("8", "outage.lost", "Actions lost or dead-lettered by the outage",
            lost, "actions", "outage", target="0", met=None if lost is None else lost == 0),
    ]  # fmt: skip


def _ratios(rows: list[Row], src: dict[str, dict[str, Any] | None]) -> None:
    by_id = {r.id: r for r in rows}
    naive, ceiling = by_id["naive.events_per_s"], by_id["ceiling.events_per_s"]
    for row in rows:
        if row.unit == "events/s":
            row.ratio_baseline = _div(row.value, naive.value)
            row.ratio_ceiling = _div(row.value, ceiling.value)
            row.compared_with = [naive.source, ceiling.source]
        elif row.unit == "ms" and row.id.startswith("worker.latency."):
            twin = by_id.get("naive" + row.id.removeprefix("worker"))
            if twin is not None:
                row.ratio_baseline = _div(row.value, twin.value)
                row.compared_with = [twin.source]
        elif row.unit == "ms" and row.id.startswith("naive.latency."):
            row.ratio_baseline = 1.0 if isinstance(row.value, int | float) else None
    worker = by_id["worker.events_per_s"]
    if worker.ratio_baseline is not None:
        worker.met = worker.ratio_baseline >= WORKER_TARGET


def _provenance(rows: list[Row], src: dict[str, dict[str, Any] | None], since: str | None) -> None:
    cutoff = _when(since) if since else None
    for row in rows:
        data = src[row.source]
        if data is None:
            row.flags.append(f"missing: bench/results/{SOURCES[row.source]}")
            continue
        row.command = data.get("command") if row.value is not None else None
        row.date = data.get("date")
        row.commit = _get(data, "machine", "git") or "unknown"
        row.machine = machine_key(data.get("machine"))
        if row.value is None:
            row.flags.append(f"not in bench/results/{SOURCES[row.source]}")
        others = [k for k in dict.fromkeys(row.compared_with) if k != row.source and src[k]]
        if row.ratio_baseline is None and row.ratio_ceiling is None:
            others = []
        commits = {k: _get(src[k], "machine", "git") or "unknown" for k in others}
        if any(c != row.commit for c in commits.values()):
            every = {row.source: row.commit, **commits}
            row.flags.append(
                "commits differ: " + ", ".join(f"{_stem(k)} {_short(c)}" for k, c in every.items())
            )
        if any(machine_key(_get(src[k], "machine")) != row.machine for k in others):
            row.flags.append("machines differ")
        own = stream_key(data) or (_LATENCY_STREAM if row.source.startswith("latency") else None)
        streams = {k: stream_key(src[k]) for k in others}
        if own and any(s and s != own for s in streams.values()):
            every_stream = {row.source: own, **streams}
            row.flags.append(
                "streams differ: "
                + ", ".join(f"{_stem(k)} {s}" for k, s in every_stream.items() if s)
            )
        busy = _other_work(data)
        if busy:
            row.flags.append(f"other work ran during the run ({busy} processes)")
        problems = (data.get("problems") or []) + (data.get("warnings") or [])
        if problems:
            row.flags.append(f"the run reported {len(problems)} problems")
        if cutoff and row.date and _when(row.date) < cutoff:
            row.flags.append(f"not from this run ({row.date[:16]})")


_LATENCY_STREAM = "10k x 30 d"  # (latency.json from before it recorded its stream)


def _other_work(data: Any) -> int:
    """How many other processes a run saw (its `other_work_seen` lists, wherever they are)."""
    if isinstance(data, dict):
        return sum(
            len(v) if k == "other_work_seen" and isinstance(v, list) else _other_work(v)
            for k, v in data.items()
        )
    if isinstance(data, list):
        return sum(_other_work(v) for v in data)
    return 0


def _when(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def build(src: dict[str, dict[str, Any] | None], since: str | None = None) -> dict[str, Any]:
    """The report: rows, the runs they come from, and their machines and commits."""
    rows = [
        *_embedded(src),
        *_kafka(src),
        *_latency(src),
        *_scale(src),
        *_quality(src),
        *_outage(src),
    ]
    rows.sort(key=lambda r: r.item)  # stable: keeps the order within an item
    _ratios(rows, src)
    _provenance(rows, src, since)
    runs = {
        key: {
            "file": f"bench/results/{SOURCES[key]}",
            "date": data.get("date"),
            "commit": _get(data, "machine", "git") or "unknown",
            "machine": machine_key(data.get("machine")),
            "command": data.get("command"),
        }
        for key, data in src.items()
        if data is not None
    }
    machines = {
        machine_key(d.get("machine")): _machine_summary(d.get("machine"))
        for d in src.values()
        if d is not None
    }
    targets = [r for r in rows if r.target]
    return {
        "benchmark": "report",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.report",
        "commit": _git(),
        "since": since,
        "machine": next(iter(machines.values())) if len(machines) == 1 else None,
        "machines": machines,
        "commits": sorted({r["commit"] for r in runs.values()}),
        "runs": runs,
        "missing": [f"bench/results/{SOURCES[k]}" for k, d in src.items() if d is None],
        "targets": {"met": sum(r.met is True for r in targets), "of": len(targets)},
        "rows": [_row_json(r) for r in rows],
    }


def _row_json(r: Row) -> dict[str, Any]:
    d = asdict(r)
    d.pop("compared_with")
    for key in ("ratio_baseline", "ratio_ceiling"):
        if d[key] is not None:
            d[key] = round(d[key], 4)
    return d


def _machine_summary(m: dict[str, Any] | None) -> dict[str, Any]:
    m = m or {}
    return {k: m.get(k) for k in ("cpu_model", "cores", "memory_gb", "python", "platform")}


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head


# --- writing ----------------------------------------------------------------------------------


def _value(v: Any, unit: str) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if unit in ("ms", "s", "MiB"):
        return f"{v:,.1f}"
    if unit == "%":
        return f"{v:.1f}%"
    return f"{v:,.0f}"


def _ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x"


def _run(r: dict[str, Any]) -> str:
    if not r.get("date"):
        return "-"
    return f"{r['date'][:10]}, {_short(str(r.get('commit') or 'unknown'))}"


def table(report: dict[str, Any]) -> str:
    head = (
        "#",
        "figure",
        "value",
        "unit",
        "vs naive baseline",
        "vs ceiling",
        "target",
        "met",
        "command",
        "run (date, commit)",
        "flags",
    )
    lines = ["| " + " | ".join(head) + " |", "|--:|---|--:|---|--:|--:|---|---|---|---|---|"]
    for r in report["rows"]:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        cells = (
            r["item"],
            r["figure"],
            _value(r["value"], r["unit"]),
            r["unit"] or "-",
            _ratio(r["ratio_baseline"]),
            _ratio(r["ratio_ceiling"]),
            r["target"] or "-",
            met,
            f"`{r['command']}`" if r["command"] else "-",
            _run(r),
            "; ".join(r["flags"]) or "-",
        )
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _verdicts(report: dict[str, Any]) -> list[str]:
    out = []
    for r in report["rows"]:
        if not r["target"] or r["id"] in ("worker.parity", "quality.offer_cap_breaches"):
            continue
        met = "no figure" if r["met"] is None else ("met" if r["met"] else "**not met**")
        value = _value(r["value"], r["unit"])
        if r["id"] == "worker.events_per_s" and r["ratio_baseline"] is not None:
            value += f" events/s = {r['ratio_baseline']:.2f}x the naive baseline"
        elif r["unit"]:
            value += f" {r['unit']}"
        out.append(f"{r['figure']}: {value}, target {r['target']}: {met}")
    return out


def markdown(report: dict[str, Any]) -> str:
    """The summary section (without its markers)."""
    machines = report["machines"]
    machine = (
        "Machine: "
        + "; ".join(
            f"{m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['python']}"
            for m in machines.values()
        )
        + (" (every run)" if len(machines) == 1 else " (**the runs differ in machine**)")
        + "."
        if machines
        else "Machine: no results."
    )
    commits = report["commits"]
    notes = [
        f"Built by `python -m bench.report` on {report['date'][:10]} (commit {report['commit']}) "
        f"from {len(report['runs'])} results files in `bench/results/`"
        + (f"; **missing: {', '.join(report['missing'])}**" if report["missing"] else "")
        + ". The runs are from "
        + (
            f"one commit ({_short(commits[0])})"
            if len(commits) == 1
            else f"**{len(commits)} different commits** ({', '.join(map(_short, commits))})"
        )
        + "; a `*` marks a run with uncommitted changes, whose code the commit does not pin."
        if commits
        else "No results files in `bench/results/`.",
    ]
    return "\n".join(
        [
            "## Summary",
            "",
            "Every figure of `make bench` in one table (issue items: 1 embedded core, 2 Kafka "
            "worker, 3 naive Faust baseline, 4 ceiling, 5 memory, 6 recovery, 7 decision "
            'quality), built from the results files of the benchmarks below. "vs naive '
            "baseline\" is the figure divided by the naive Faust app's (`bench/naive_faust.py`): "
            "its events/s, or for a latency its latency at the same rate and percentile (lower "
            'is better there). "vs ceiling" divides an events/s by what a bare confluent-kafka '
            "consumer reads on the same broker (`bench/worker_throughput.py`). A row is flagged "
            "when the runs behind it (the figure's, the baseline's, the ceiling's) differ in "
            "commit, machine or stream; the embedded core runs on a longer stream than the "
            "Kafka benchmarks, and without Kafka, so its ratios only place it.",
            "",
            "Targets:",
            "",
            *(f"- {v}" for v in _verdicts(report)),
            "",
            table(report),
            "",
            *notes,
            "",
            machine,
        ]
    )


def write_summary(text: str, path: Path = BENCHMARKS) -> None:
    """Rewrite the summary section; create it after the intro paragraph if it is missing."""
    block = f"{START}\n{text}\n{END}"
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    a, b = doc.find(START), doc.find(END)
    if a >= 0 and b > a:
        doc = doc[:a] + block + doc[b + len(END) :]
    else:
        paragraphs = doc.rstrip("\n").split("\n\n")
        at = 1 if paragraphs[0].startswith("# ") else 0  # after the title
        if at < len(paragraphs) and not paragraphs[at].lstrip().startswith(("<!--", "#")):
            at += 1  # and after the intro paragraph
        paragraphs.insert(at, block)
        doc = "\n\n".join(paragraphs)
    path.write_text(doc if doc.endswith("\n") else doc + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder")
    parser.add_argument("--benchmarks", type=Path, default=BENCHMARKS)
    parser.add_argument("--since", help="flag rows from runs before this ISO time")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.since:
        try:
            _when(args.since)
        except ValueError:
            parser.error(f"--since: not an ISO time: {args.since}")
    report = build(load_sources(args.results), since=args.since)
    text = markdown(report)
    print(text)
    if not args.no_write:
        out = args.results / LATEST
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        write_summary(text, args.benchmarks)
        print(f"[report] wrote {out} and the summary of {args.benchmarks}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
