"""Decision quality of the shipped packs: rule precision and recall, and offers per customer.

    python -m bench.quality [--customers 10000] [--days 30] [--seed 1] [--window 3600] [--quick]

Replays a simulated stream (`streams.simulate`, cached under `bench/.data/` with its labels)
through the engine in memory with the shipped packs (`rules/packs`), in batches of 2,000
records in file order, and measures:

1. Per rule with a catalogue code (the `# R1` ... `# M8` comment after its id in the pack
   file): precision and recall against the simulator's labels. A rule has *fired* on an event
   when it has a decision there, emitted or suppressed (suppressions are counted by reason).
   - Strict match, by event id: a firing is a true positive if its event carries a label of
     the rule's code; otherwise a false positive. A label with no firing of the rule on its
     event is a false negative.
   - Relaxed match, by customer and time: a firing is explained if the same customer has a
     label of the rule's code within `--window` seconds (either side) of it; a label is
     detected if the rule fired for that customer within the window. Velocity and
     structuring rules keep holding on the events after the labelled one (R1 on the 6th and
     7th card of a burst, deduplicated), which the strict match counts as false positives.
   Precision is TP / firings and recall is TP / labels; either is None (n/a) when its
   denominator is 0. False positives are broken down by the other label their event carries.
2. Emitted offers per customer: per ISO week and per calendar day (the event's own UTC
   offset, the packs' time zone), over every customer of the stream and every ISO week the
   simulated period touches; and the most offers in any rolling 24 hours / 7 days, which is
   what the policy's `max_offers_per_day` / `max_offers_per_week` bound. Each emitted offer
   is checked against its pack's caps exactly as `rules.policy` counts them (offers of all
   packs emitted earlier in the last 24 h / 7 d); **exit status 1 if any cap is exceeded**.

Writes `bench/results/quality.json` and the `quality` section of BENCHMARKS.md; `--quick`
(1,000 customers x 7 days) writes `bench/results/quality-quick.json` only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec

from bench.replay_throughput import machine
from rules.ruleset import RuleSet, load_rules
from state.store import MemoryStore, StateCache
from streams.engine import Engine, Record
from streams.simulate import DEFAULT_START, Label, simulate, write_jsonl

ROOT: Final = Path(__file__).resolve().parent.parent
DATA: Final = ROOT / "bench" / ".data"
RESULTS: Final = ROOT / "bench" / "results"
BENCHMARKS: Final = ROOT / "BENCHMARKS.md"
PACKS: Final = "rules/packs"
START, END = "<!-- quality:start -->", "<!-- quality:end -->"
BATCH: Final = 2000
WINDOW: Final = 3600.0
DAY: Final = 86_400.0
WEEK: Final = 7 * DAY
_CODE: Final = re.compile(r"^\s*-\s*id:\s*([\w.-]+)\s*#\s*([RM]\d+)\b", re.MULTILINE)


def log(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Fired(msgspec.Struct):
    """The fields of an engine decision this benchmark reads."""

    event_id: str
    customer_id: str
    pack: str
    rule_id: str
    kind: str
    ts: str
    outcome: str
    reason: str | None = None


class _Seen(msgspec.Struct):
    customer_id: str


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


# --- which rule answers which label -----------------------------------------------------------


def rule_codes(ruleset: RuleSet) -> dict[str, tuple[str, str, str]]:
    """Catalogue code -> (pack, rule id, kind), from the `# R1` comments in the pack files."""
    codes: dict[str, tuple[str, str, str]] = {}
    for pack in ruleset.packs:
        kinds = {r.spec.id: r.spec.kind for r in pack.rules}
        for rule_id, code in _CODE.findall(Path(pack.file).read_text(encoding="utf-8")):
            if rule_id in kinds:
                codes[code] = (pack.name, rule_id, kinds[rule_id])
    return dict(sorted(codes.items(), key=lambda kv: (kv[0][0] != "R", int(kv[0][1:]))))


# --- scoring ----------------------------------------------------------------------------------


def ratio(num: int, den: int) -> float | None:
    """num / den rounded to 4 places, or None when den is 0 (no firings, or no labels)."""
    return round(num / den, 4) if den else None


def score(
    code: str,
    rule_id: str,
    labels: Sequence[Label],
    decisions: Sequence[Fired],
    window: float = WINDOW,
) -> dict[str, Any]:
    """Precision and recall of one rule against the labels of one code (see the module doc).

    `labels` and `decisions` may hold other codes and rules: only `code` and `rule_id` count,
    except that a false positive's event is looked up in all labels (`fp_on_label`).
    """
    mine = [lb for lb in labels if lb.kind == code]
    wanted = {lb.event_id for lb in mine}
    fired = [d for d in decisions if d.rule_id == rule_id]
    fired_ids = {d.event_id for d in fired}
    by_event: dict[str, set[str]] = defaultdict(set)
    for lb in labels:
        by_event[lb.event_id].add(lb.kind)

    tp = sum(1 for d in fired if d.event_id in wanted)
    fp_on: Counter[str] = Counter()
    for d in fired:
        if d.event_id not in wanted:
            fp_on["+".join(sorted(by_event.get(d.event_id, ()))) or "none"] += 1
    fn = sum(1 for e in wanted if e not in fired_ids)

    label_ts: dict[str, list[float]] = defaultdict(list)
    for lb in mine:
        label_ts[lb.customer_id].append(epoch(lb.ts))
    fire_ts: dict[str, list[float]] = defaultdict(list)
    for d in fired:
        fire_ts[d.customer_id].append(epoch(d.ts))

    def near(t: float, others: list[float]) -> bool:
        return any(abs(t - o) <= window for o in others)

    # unlabelled false positives: the latest earlier label of the customer (any code), and gap
    by_customer: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for lb in labels:
        by_customer[lb.customer_id].append((epoch(lb.ts), lb.kind))
    after: Counter[str] = Counter()
    gaps: list[float] = []
    for d in fired:
        if d.event_id in by_event or d.event_id in wanted:
            continue
        t = epoch(d.ts)
        before = [x for x in by_customer.get(d.customer_id, []) if x[0] < t]
        if before:
            last = max(before)
            after[last[1]] += 1
            gaps.append((t - last[0]) / 3600)
        else:
            after["none"] += 1
    gaps.sort()

    explained = sum(1 for d in fired if near(epoch(d.ts), label_ts.get(d.customer_id, [])))
    detected = sum(1 for lb in mine if near(epoch(lb.ts), fire_ts.get(lb.customer_id, [])))
    suppressed = Counter(d.reason or "unknown" for d in fired if d.outcome == "suppressed")
    tp_suppressed = Counter(
        d.reason or "unknown" for d in fired if d.outcome == "suppressed" and d.event_id in wanted
    )
    return {
        "code": code,
        "rule_id": rule_id,
        "labels": len(wanted),
        "fired": len(fired),
        "emitted": sum(1 for d in fired if d.outcome == "emitted"),
        "suppressed": dict(suppressed.most_common()),
        "tp": tp,
        "fp": len(fired) - tp,
        "fn": fn,
        "precision": ratio(tp, len(fired)),
        "recall": ratio(len(wanted) - fn, len(wanted)),
        "tp_suppressed": dict(tp_suppressed.most_common()),
        "fp_on_label": dict(fp_on.most_common()),
        "unlabelled_fp_after_label": dict(after.most_common()),
        "unlabelled_fp_median_hours_after": round(gaps[len(gaps) // 2], 1) if gaps else None,
        "relaxed": {
            "window_s": window,
            "firings_explained": explained,
            "labels_detected": detected,
            "fp": len(fired) - explained,
            "fn": len(mine) - detected,
            "precision": ratio(explained, len(fired)),
            "recall": ratio(detected, len(mine)),
        },
    }


# --- offers and caps --------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """An emitted offer: who, when (epoch seconds), the event's local date, and whose pack."""

    customer_id: str
    t: float
    day: date
    pack: str


def check_caps(
    offers: Sequence[Offer], caps: dict[str, tuple[int | None, int | None]]
) -> dict[str, Any]:
    """Check emitted offers (in emission order) against each pack's (per day, per week) caps.

    Counts as `rules.policy` does: an offer breaks a cap if the customer already had `cap`
    offers (of any pack) emitted in the 24 hours / 7 days before it, bounds included as the
    policy includes them (`now - t < window`). Also returns the most offers any customer had
    in a rolling 24 h and 7 d window.
    """
    earlier: dict[str, list[float]] = defaultdict(list)
    violations: list[dict[str, Any]] = []
    max_day = max_week = 0
    for o in offers:
        prior = earlier[o.customer_id]
        in_day = sum(1 for t in prior if o.t - t < DAY)
        in_week = sum(1 for t in prior if o.t - t < WEEK)
        max_day, max_week = max(max_day, in_day + 1), max(max_week, in_week + 1)
        day_cap, week_cap = caps.get(o.pack, (None, None))
        for name, cap, n in (("day", day_cap, in_day), ("week", week_cap, in_week)):
            if cap is not None and n >= cap:
                violations.append({"customer_id": o.customer_id, "pack": o.pack, "cap": name,
                                   "limit": cap, "offers_before": n, "t": o.t})  # fmt: skip
        prior.append(o.t)
    return {"max_rolling_24h": max_day, "max_rolling_7d": max_week, "violations": violations}


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not sorted_values:
        return 0
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def offer_distribution(
    offers: Sequence[Offer], customers: Iterable[str], first: date, last: date
) -> dict[str, Any]:
    """Emitted offers per (customer, ISO week) and per (customer, day) in [first, last]."""
    weeks = sorted(
        {(first + timedelta(d)).isocalendar()[:2] for d in range((last - first).days + 1)}
    )
    ids = list(customers)
    per_week: Counter[tuple[str, tuple[int, int]]] = Counter()
    per_day: Counter[tuple[str, date]] = Counter()
    outside = 0
    for o in offers:
        if not first <= o.day <= last:
            outside += 1
            continue
        per_week[(o.customer_id, o.day.isocalendar()[:2])] += 1
        per_day[(o.customer_id, o.day)] += 1
    cells = len(ids) * len(weeks)
    values = sorted(per_week.values())
    all_values = [0] * (cells - len(values)) + values
    return {
        "customers": len(ids),
        "iso_weeks": [f"{y}-W{w:02d}" for y, w in weeks],
        "customer_weeks": cells,
        "offers_in_period": sum(values),
        "offers_outside_period": outside,
        "mean_per_customer_week": round(sum(values) / cells, 5) if cells else None,
        "p99_per_customer_week": percentile(all_values, 99),
        "max_per_customer_week": max(values, default=0),
        "customer_weeks_with_offers": len(values),
        "mean_per_customer_week_with_offers": round(sum(values) / len(values), 3)
        if values
        else None,
        "weeks_by_offers": {str(k): v for k, v in sorted(Counter(all_values).items())},
        "max_per_customer_day": max(per_day.values(), default=0),
    }


# --- the measurement --------------------------------------------------------------------------


def run_engine(ruleset: RuleSet, lines: Sequence[bytes]) -> tuple[list[Fired], int]:
    """All decisions of the engine (in memory, batches of 2,000 in file order), and actions."""
    engine = Engine(ruleset, StateCache(MemoryStore()))
    decode = msgspec.json.Decoder(Fired).decode
    decisions: list[Fired] = []
    actions = 0
    for i in range(0, len(lines), BATCH):
        out = engine.process([Record(line) for line in lines[i : i + BATCH]], flush=False)
        decisions.extend(decode(d) for d in out.decisions)
        actions += len(out.actions)
    engine.states.flush()
    return decisions, actions


def measure(
    lines: Sequence[bytes],
    labels: Sequence[Label],
    ruleset: RuleSet,
    days: int,
    window: float = WINDOW,
    start: datetime = DEFAULT_START,
) -> dict[str, Any]:
    """Everything this benchmark reports, for one stream and its labels (no files written)."""
    started = time.perf_counter()
    decisions, actions = run_engine(ruleset, lines)
    engine_s = time.perf_counter() - started
    seen = msgspec.json.Decoder(_Seen).decode
    customers = {seen(line).customer_id for line in lines}
    codes = rule_codes(ruleset)
    rows = {
        code: score(code, rid, labels, decisions, window) for code, (_, rid, _) in codes.items()
    }
    unscored = sorted({lb.kind for lb in labels} - set(codes))

    caps = {
        p.name: (p.policy.max_offers_per_day, p.policy.max_offers_per_week) for p in ruleset.packs
    }
    offers = [
        Offer(d.customer_id, epoch(d.ts), datetime.fromisoformat(d.ts).date(), d.pack)
        for d in decisions
        if d.kind == "offer" and d.outcome == "emitted"
    ]
    first = start.date()
    dist = offer_distribution(offers, customers, first, first + timedelta(days=max(days, 1) - 1))
    checked = check_caps(offers, caps)
    return {
        "events": len(lines),
        "customers": len(customers),
        "labels": dict(sorted(Counter(lb.kind for lb in labels).items())),
        "unscored_label_kinds": unscored,
        "decisions": len(decisions),
        "actions": actions,
        "engine_seconds": round(engine_s, 2),
        "window_s": window,
        "risk": [r for c, r in rows.items() if codes[c][2] == "alert"],
        "marketing": [r for c, r in rows.items() if codes[c][2] == "offer"],
        "offers": {
            "emitted": len(offers),
            "caps": {k: {"per_day": d, "per_week": w} for k, (d, w) in caps.items()},
            **dist,
            **checked,
        },
    }


# --- the stream and its labels ----------------------------------------------------------------


def stream_files(customers: int, days: int, seed: int, data: Path = DATA) -> tuple[Path, Path]:
    """The cached stream (named as `bench.replay_throughput` names it) and its labels."""
    sources = b"".join((ROOT / "streams" / f).read_bytes() for f in ("simulate.py", "anomalies.py"))
    sim = hashlib.sha256(sources).hexdigest()[:10]
    events = data / f"sim-c{customers}-d{days}-s{seed}-{sim}.jsonl"
    labels = data / f"labels-c{customers}-d{days}-s{seed}-{sim}.jsonl"
    if events.exists() and labels.exists():
        log(f"reusing {events.name} and {labels.name}")
        return events, labels
    data.mkdir(parents=True, exist_ok=True)
    log(f"simulating {customers:,} customers x {days} days (seed {seed}) with labels")
    found: list[Label] = []
    tmp = events.with_suffix(".quality.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        write_jsonl(simulate(customers, days, seed, labels=found), out)
    os.replace(tmp, events)
    tmp = labels.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.Encoder().encode_lines(found))
    os.replace(tmp, labels)
    return events, labels


def read_stream(events: Path, labels: Path) -> tuple[list[bytes], list[Label]]:
    lines = [line for line in events.read_bytes().split(b"\n") if line.strip()]
    decode = msgspec.json.Decoder(Label).decode
    found = [decode(line) for line in labels.read_bytes().split(b"\n") if line.strip()]
    return lines, found


# --- the report -------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in c.items()) or "-"


def rule_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ("| code | rule | labels | fired | suppressed (reason) | TP | FP | FN | precision | "
            "recall | relaxed precision | relaxed recall | FP events labelled |")  # fmt: skip
    lines = [head, "|---|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        x = r["relaxed"]
        cells = (r["code"], f"`{r['rule_id']}`", f"{r['labels']:,}", f"{r['fired']:,}",
                 _counts(r["suppressed"]), f"{r['tp']:,}", f"{r['fp']:,}", f"{r['fn']:,}",
                 _pct(r["precision"]), _pct(r["recall"]), _pct(x["precision"]),
                 _pct(x["recall"]), _counts(r["fp_on_label"]))  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One data-driven sentence per rule that is not perfect, saying where its errors are."""
    out = []
    for r in rows:
        x, bits = r["relaxed"], []
        if r["fp"]:
            where = _counts(r["fp_on_label"]).replace("none", "unlabelled")
            bits.append(f"{r['fp']:,} false positives (events: {where})")
            if x["fp"] < r["fp"]:
                bits.append(f"{r['fp'] - x['fp']:,} of them within {x['window_s']:.0f} s of a "
                            f"label of the same customer")  # fmt: skip
        if r["fn"]:
            bits.append(f"{r['fn']:,} of {r['labels']:,} labels missed")
            if x["fn"] < r["fn"]:
                bits.append(f"{r['fn'] - x['fn']:,} of those fired on a nearby event")
        if r["tp_suppressed"]:
            bits.append(f"true positives suppressed: {_counts(r['tp_suppressed'])}")
        if bits:
            out.append(f"- {r['code']} `{r['rule_id']}`: " + "; ".join(bits) + ".")
    return out


def section(res: dict[str, Any]) -> str:
    m, s, q, o = res["machine"], res["stream"], res["quality"], res["offers_summary"]
    pk = m["packages"]
    caps = "; ".join(
        f"{k}: {v['per_day']} a day, {v['per_week']} a week"
        for k, v in q["offers"]["caps"].items()
        if v["per_day"] or v["per_week"]
    )
    verdict = ("**never exceeded**" if not o["violations"]
               else f"**exceeded {o['violations']:,} times**")  # fmt: skip
    return "\n".join([
        START,
        "## Decision quality",
        "",
        f"Stream: `simulate({s['customers']:,} customers, {s['days']} days, seed {s['seed']})`, "
        f"{q['events']:,} events, labels {_counts(q['labels'])}; rule packs `{PACKS}`, engine in "
        f"memory, batches of {BATCH:,} in file order: {q['decisions']:,} decisions, "
        f"{q['actions']:,} actions.",
        "",
        "A rule *fired* on an event if it has a decision there, emitted or suppressed. Strict "
        "match: by event id (TP: the event carries the rule's label; FP: it does not; FN: a "
        "label without a firing). Relaxed match: same customer, within "
        f"{q['window_s']:.0f} s either side. Precision = TP / fired, recall = TP / labels. "
        "\"FP events labelled\" says which other label an FP's event carries (none = unlabelled).",
        "",
        "Risk alerts:",
        "",
        rule_table(q["risk"]),
        "",
        "Marketing moments (offers; suppressed by the contact policy as well):",
        "",
        rule_table(q["marketing"]),
        "",
        *(notes([*q["risk"], *q["marketing"]]) or ["Every rule matched its labels exactly."]),
        "",
        "Emitted offers per customer (every customer of the stream, every ISO week of the "
        "simulated period, local time of the event):",
        "",
        "| offers | mean per customer-week | p99 | max per ISO week | max per day | "
        "max in rolling 24 h | max in rolling 7 d | caps | cap breaches |",
        "|--:|--:|--:|--:|--:|--:|--:|---|---|",
        f"| {o['emitted']:,} | {o['mean']:.4f} | {o['p99']} | {o['max_week']} | {o['max_day']} "
        f"| {o['max_24h']} | {o['max_7d']} | {caps} | {verdict} |",
        "",
        f"{o['customer_weeks']:,} customer-weeks ({', '.join(o['iso_weeks'])}, the first and last "
        f"partial); with 0, 1, 2, ... offers: {_counts(o['weeks_by_offers'])}.",
        "",
        *res["interpretation"],
        "",
        f"Command: `{res['command']}` (on {res['date'][:10]}, commit {m['git']}; "
        f"{res['total_seconds']:.0f} s in all).",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['python']}, "
        f"msgspec {pk['msgspec']}, pydantic {pk['pydantic']}.",
        END,
    ])  # fmt: skip


def interpretation(q: dict[str, Any]) -> list[str]:
    """What the numbers say, from the data: the weakest rules and why, and the caps."""
    rows = [r for r in [*q["risk"], *q["marketing"]] if r["fired"] or r["labels"]]
    text = []
    low = [r for r in rows if r["precision"] is not None and r["precision"] < 0.9]
    for r in low:
        other = {k: v for k, v in r["fp_on_label"].items() if k != "none"}
        cause = (f"{sum(other.values()):,} of its {r['fp']:,} false positives are events "
                 f"injected for other rules ({_counts(other)}), which the simulator labels only "
                 f"with their own code") if other else ""  # fmt: skip
        nearby = r["fp"] - r["relaxed"]["fp"]
        if nearby:
            cause += ("; " if cause else "") + (
                f"{nearby:,} of them are the same anomaly seen again on a later event "
                f"(relaxed precision {_pct(r['relaxed']['precision'])})"
            )
        unlabelled = r["fp_on_label"].get("none", 0)
        if unlabelled:
            cause += ("; " if cause else "") + f"{unlabelled:,} fired on events with no label"
            prev = r["unlabelled_fp_after_label"]
            if prev and set(prev) != {"none"}:
                cause += (
                    f", the customer's latest earlier label being {_counts(prev)} "
                    f"(median {r['unlabelled_fp_median_hours_after']} h before)"
                )
        text.append(f"{r['code']} `{r['rule_id']}` has precision {_pct(r['precision'])}: {cause}.")
    missed = [r for r in rows if r["recall"] is not None and r["recall"] < 1]
    for r in missed:
        sup = _counts(r["tp_suppressed"])
        text.append(
            f"{r['code']} `{r['rule_id']}` recalls {_pct(r['recall'])} "
            f"({r['fn']:,} of {r['labels']:,} labels missed"
            + (
                f"; relaxed {_pct(r['relaxed']['recall'])}"
                if r["relaxed"]["recall"] != r["recall"]
                else ""
            )
            + ")."
            + (f" Of the detected, suppressed by policy: {sup}." if r["tp_suppressed"] else "")
        )
    quiet = [r["code"] for r in rows if not r["labels"]]
    if quiet:
        text.append(f"No labels in this stream for {', '.join(quiet)}: not scored here.")
    if not low and not missed:
        text.append("Every scored rule has precision and recall of at least 90% and 100%.")
    return [" ".join(text)] if text else []


# --- main -------------------------------------------------------------------------------------


def write_benchmarks(text: str, path: Path) -> None:
    """Replace the quality section of `path`, or append it at the end."""
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    a, b = doc.find(START), doc.find(END)
    if a >= 0 and b > a:
        doc = doc[:a] + text + doc[b + len(END) :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(doc, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=float, default=WINDOW, help="relaxed match, seconds")
    parser.add_argument("--quick", action="store_true", help="1,000 customers x 7 days")
    parser.add_argument("--data", type=Path, default=DATA, help="stream cache folder")
    parser.add_argument("--json", type=Path, help="results file (default bench/results/...)")
    parser.add_argument("--markdown", type=Path, help="file whose quality section to rewrite "
                        "(default BENCHMARKS.md, none with --quick)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.days = 1_000, 7
    began = time.perf_counter()
    events, label_file = stream_files(args.customers, args.days, args.seed, args.data)
    lines, labels = read_stream(events, label_file)
    log(f"{len(lines):,} events, {len(labels):,} labels; running the engine")
    ruleset = load_rules([ROOT / PACKS])
    q = measure(lines, labels, ruleset, args.days, args.window)
    o = q["offers"]
    info = machine(min(os.sched_getaffinity(0)))
    info.pop("pinned_cpu", None)
    res: dict[str, Any] = {
        "benchmark": "quality",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m bench.quality", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": info,
        "stream": {
            "customers": args.customers,
            "days": args.days,
            "seed": args.seed,
            "file": events.name,
            "labels_file": label_file.name,
        },
        "packs": [f"{p.name} v{p.version}" for p in ruleset.packs],
        "quality": q,
        "offers_summary": {
            "emitted": o["emitted"],
            "mean": o["mean_per_customer_week"] or 0.0,
            "p99": o["p99_per_customer_week"],
            "max_week": o["max_per_customer_week"],
            "max_day": o["max_per_customer_day"],
            "max_24h": o["max_rolling_24h"],
            "max_7d": o["max_rolling_7d"],
            "violations": len(o["violations"]),
            "customer_weeks": o["customer_weeks"],
            "iso_weeks": o["iso_weeks"],
            "weeks_by_offers": o["weeks_by_offers"],
        },
        "interpretation": interpretation(q),
    }
    res["total_seconds"] = round(time.perf_counter() - began, 1)
    out = args.json or RESULTS / ("quality-quick.json" if args.quick else "quality.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    text = section(res)
    print(text)
    log(f"wrote {out}")
    markdown = args.markdown or (None if args.quick else BENCHMARKS)
    if markdown is not None:
        write_benchmarks(text, markdown)
        log(f"updated {markdown}")
    if o["violations"]:
        for v in o["violations"][:10]:
            log(f"CAP EXCEEDED: {v}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
