"""Backtest: a rule set (and optionally a baseline) over a history of events, with a report.

The events file is read once. Each batch goes through the NEW engine and, with a baseline,
through the baseline's own engine (its own fresh state), one after the other, on event time
(the engine's clock is the events' `ts`: a virtual clock). What they produce is aggregated
on the fly and then dropped: nothing per decision is kept for the whole run.

Memory is bounded by the number of customers, not by the number of events or decisions:
counters per (rule, day), per (rule, reason) and per severity; one set of (interned)
customer ids per rule that acted; and up to `EXAMPLES` examples per rule and diff kind.

The diff against the baseline is streaming: both engines see the same batch, and every
decision an event causes is in the output of the batch holding that event, so the two
runs are compared batch by batch on the key (event_id, pack, rule_id) and forgotten. No
map of millions of keys (or temporary RocksDB) is needed.
"""

from __future__ import annotations

import html
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from rules.ruleset import RuleSet
from streams.engine import BatchOutput, Engine, Record
from streams.replay import ReplaySummary, batches, file_records

EXAMPLES: Final = 5
DEFAULT_CHECKPOINT: Final = 100_000
Key = tuple[str, str, str]  # (event_id, pack, rule_id)


class _Action(msgspec.Struct):
    """The fields of an action the backtest reads (the explanation is decoded on demand)."""

    action_id: str
    kind: str
    pack: str
    rule_id: str
    customer_id: str
    event_id: str
    ts: str
    offer: dict[str, Any] | None = None
    severity: str | None = None
    channel: str | None = None
    not_before: str | None = None


class _Decision(msgspec.Struct):
    event_id: str
    customer_id: str
    pack: str
    rule_id: str
    kind: str
    ts: str
    outcome: str  # emitted, suppressed (or any other outcome a later version adds)
    reason: str | None = None
    action_id: str | None = None


class _Explained(msgspec.Struct):
    explanation: list[dict[str, Any]] = []


_action = msgspec.json.Decoder(_Action)
_decision = msgspec.json.Decoder(_Decision)
_explained = msgspec.json.Decoder(_Explained)


def fingerprint(a: _Action) -> tuple[Any, ...]:
    """What makes two actions of the same rule on the same event "the same action"."""
    offer = a.offer or {}
    return (
        a.kind,
        offer.get("product"),
        offer.get("channel"),
        a.channel,
        a.severity,
        a.not_before,
    )


def _rule(pack: str, rule_id: str) -> str:
    return f"{pack}/{rule_id}"


@dataclass
class RunStats(ReplaySummary):
    """Aggregates of one rule set's run: replay's totals (`seconds`: the time spent in this
    engine) and what the report shows per rule."""

    per_rule_day: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    reached: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    all_reached: set[str] = field(default_factory=set)
    suppressed: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    severity: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)

    def take(
        self, out: BatchOutput
    ) -> tuple[dict[Key, tuple[_Decision, bytes]], dict[str, tuple[_Action, bytes]]]:
        """Count one batch's output; return its decisions by key and actions by id."""
        self.add(out)
        decisions: dict[Key, tuple[_Decision, bytes]] = {}
        for raw in out.decisions:
            d = _decision.decode(raw)
            rule = _rule(d.pack, d.rule_id)
            self.outcomes[rule][d.outcome] += 1
            if d.outcome == "suppressed":
                self.suppressed[rule][d.reason or "unknown"] += 1
            decisions[(d.event_id, d.pack, d.rule_id)] = (d, raw)
        actions: dict[str, tuple[_Action, bytes]] = {}
        intern = sys.intern
        for raw in out.actions:
            a = _action.decode(raw)
            rule = _rule(a.pack, a.rule_id)
            self.per_rule_day[rule][a.ts[:10]] += 1
            cid = intern(a.customer_id)
            self.reached[rule].add(cid)
            self.all_reached.add(cid)
            self.kinds[a.kind] += 1
            if a.kind == "alert":
                self.severity[a.severity or "none"] += 1
            actions[a.action_id] = (a, raw)
        return decisions, actions

    def to_json(self, rules: RuleSet) -> dict[str, Any]:
        names = sorted(
            {_rule(p.name, r.spec.id) for p in rules.packs for r in p.rules}
            | set(self.outcomes)
            | set(self.per_rule_day)
        )
        meta = {_rule(p.name, r.spec.id): (p, r.spec) for p in rules.packs for r in p.rules}
        per_rule: dict[str, Any] = {}
        for name in names:
            pack, spec = meta.get(name, (None, None))
            days = self.per_rule_day.get(name, Counter())
            per_rule[name] = {
                "pack": pack.name if pack else name.split("/", 1)[0],
                "pack_version": pack.version if pack else None,
                "rule_id": spec.id if spec else name.split("/", 1)[1],
                "kind": spec.kind if spec else None,
                "description": spec.description if spec else None,
                "actions": sum(days.values()),
                "customers_reached": len(self.reached.get(name, ())),
                "decisions": dict(sorted(self.outcomes.get(name, Counter()).items())),
                "suppressed_by_reason": dict(sorted(self.suppressed.get(name, Counter()).items())),
                "actions_per_day": dict(sorted(days.items())),
            }
        by_reason: Counter[str] = Counter()
        for reasons in self.suppressed.values():
            by_reason.update(reasons)
        return {
            "packs": [
                {"pack": p.name, "version": p.version, "file": p.file, "rules": len(p.rules)}
                for p in rules.packs
            ],
            "totals": {
                "events": self.events,
                "processed": self.processed,
                "duplicates": self.duplicates,
                "dead_letters": self.dead_letters,
                "decisions": self.decisions,
                "actions": self.actions,
                "offers": self.kinds.get("offer", 0),
                "alerts": self.kinds.get("alert", 0),
                "suppressed": sum(by_reason.values()),
                # decisions of rules in shadow mode: matched, but no action by design
                "shadow": self.shadow,
                "customers_reached": len(self.all_reached),
                "engine_seconds": round(self.seconds, 3),
            },
            "rules": per_rule,
            "suppressions_by_reason": dict(by_reason.most_common()),
            "alerts_by_severity": dict(sorted(self.severity.items())),
        }


@dataclass
class RuleDiff:
    added: int = 0
    removed: int = 0
    changed: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"added": [], "removed": [], "changed": []}
    )


class Differ:
    """Compares the two runs' outputs for the same batch, action by action."""

    def __init__(self, examples: int = EXAMPLES) -> None:
        self.limit = examples
        self.rules: dict[str, RuleDiff] = defaultdict(RuleDiff)

    def add(
        self,
        new: tuple[dict[Key, tuple[_Decision, bytes]], dict[str, tuple[_Action, bytes]]],
        old: tuple[dict[Key, tuple[_Decision, bytes]], dict[str, tuple[_Action, bytes]]],
    ) -> None:
        new_acts = {(a.event_id, a.pack, a.rule_id): (a, raw) for a, raw in new[1].values()}
        old_acts = {(a.event_id, a.pack, a.rule_id): (a, raw) for a, raw in old[1].values()}
        for key, (a, raw) in new_acts.items():
            base = old_acts.get(key)
            if base is None:
                self._note("added", key, a.customer_id, a.ts, new=(a, raw), other=old[0].get(key))
            elif fingerprint(base[0]) != fingerprint(a):
                self._note("changed", key, a.customer_id, a.ts, new=(a, raw), old=base)
        for key, (a, raw) in old_acts.items():
            if key not in new_acts:
                self._note("removed", key, a.customer_id, a.ts, old=(a, raw), other=new[0].get(key))

    def _note(
        self,
        what: str,
        key: Key,
        customer_id: str,
        ts: str,
        *,
        new: tuple[_Action, bytes] | None = None,
        old: tuple[_Action, bytes] | None = None,
        other: tuple[_Decision, bytes] | None = None,
    ) -> None:
        diff = self.rules[_rule(key[1], key[2])]
        setattr(diff, what, getattr(diff, what) + 1)
        examples = diff.examples[what]
        if len(examples) >= self.limit:
            return
        example: dict[str, Any] = {"event_id": key[0], "customer_id": customer_id, "ts": ts}
        if new is not None:
            example["new"] = _action_view(*new)
        if old is not None:
            example["baseline"] = _action_view(*old)
        if other is not None:  # the same rule matched on the other side, without acting
            d, raw = other
            side = "baseline" if what == "added" else "new"
            example[side] = {
                "outcome": d.outcome,
                "reason": d.reason,
                "explanation": _explained.decode(raw).explanation,
            }
        elif what in ("added", "removed"):
            example["baseline" if what == "added" else "new"] = {"outcome": "no match"}
        examples.append(example)

    def to_json(self) -> dict[str, Any]:
        return {
            name: {
                "added": d.added,
                "removed": d.removed,
                "changed": d.changed,
                "examples": d.examples,
            }
            for name, d in sorted(self.rules.items())
        }


def _action_view(a: _Action, raw: bytes) -> dict[str, Any]:
    return {
        "outcome": "emitted",
        "kind": a.kind,
        "offer": a.offer,
        "severity": a.severity,
        "channel": a.channel,
        "not_before": a.not_before,
        "explanation": _explained.decode(raw).explanation,
    }


class ByteProgress:
    """Progress on stderr by bytes read: a bar redrawn at most 4 times a second on a TTY,
    otherwise one line per 10%."""

    def __init__(self, total: int, stream: IO[str] | None = None, label: str = "backtest") -> None:
        self.total, self.label = max(total, 1), label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._next_draw = 0.0
        self._next_tenth = 1

    def __call__(self, done_bytes: int, events: int, final: bool = False) -> None:
        now = time.monotonic()
        fraction = min(done_bytes / self.total, 1.0)
        if self.tty:
            if now < self._next_draw and not final:
                return
            self._next_draw = now + 0.25
            width = 30
            full = int(fraction * width)
            bar = "#" * full + "-" * (width - full)
            end = "\n" if final else ""
            print(
                f"\r{self.label} [{bar}] {self._text(fraction, events, now)}",
                end=end,
                file=self.stream,
                flush=True,
            )
        elif int(fraction * 10) >= self._next_tenth or (final and self._next_tenth <= 10):
            self._next_tenth = int(fraction * 10) + 1
            print(
                f"{self.label}: {self._text(fraction, events, now)}", file=self.stream, flush=True
            )

    def _text(self, fraction: float, events: int, now: float) -> str:
        elapsed = now - self.started
        rate = events / elapsed if elapsed > 0 else 0.0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        return f"{fraction:4.0%} {events:,} events {rate:,.0f} events/s ETA {eta:,.0f}s"


@dataclass
class Backtest:
    """The result: everything the report shows."""

    events_file: str
    rules: RuleSet
    new: RunStats
    baseline_rules: RuleSet | None = None
    baseline: RunStats | None = None
    diff: Differ | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "run": {
                "events_file": self.events_file,
                "events": self.new.events,
                "seconds": round(self.seconds, 3),
                "events_per_second": round(self.new.events / self.seconds, 1)
                if self.seconds > 0
                else 0.0,
                "rules": [{"pack": p.name, "version": p.version} for p in self.rules.packs],
                "baseline": None
                if self.baseline_rules is None
                else [{"pack": p.name, "version": p.version} for p in self.baseline_rules.packs],
            },
            "new": self.new.to_json(self.rules),
            "baseline": None,
        }
        if self.baseline is not None and self.baseline_rules is not None and self.diff:
            base = self.baseline.to_json(self.baseline_rules)
            diff = self.diff.to_json()
            per_rule: dict[str, Any] = {}
            for name in sorted(set(report["new"]["rules"]) | set(base["rules"])):
                d = diff.get(name, {"added": 0, "removed": 0, "changed": 0, "examples": {}})
                per_rule[name] = {
                    "new_actions": report["new"]["rules"].get(name, {}).get("actions", 0),
                    "baseline_actions": base["rules"].get(name, {}).get("actions", 0),
                    **d,
                }
            report["baseline"] = base
            report["diff"] = {
                "totals": {
                    k: sum(r[k] for r in per_rule.values()) for k in ("added", "removed", "changed")
                },
                "rules": per_rule,
            }
        return report


def run_backtest(
    records: Iterable[Record],
    new: Engine,
    baseline: Engine | None = None,
    *,
    events_file: str = "",
    batch_size: int = 2000,
    checkpoint_every: int = DEFAULT_CHECKPOINT,
    on_batch: Callable[[int], None] | None = None,
) -> Backtest:
    """Run the events through `new` (and `baseline`), batch by batch, aggregating as it goes.

    `on_batch(events so far)` is called after each batch (for progress).
    """
    result = Backtest(events_file, new.rules, RunStats())
    if baseline is not None:
        result.baseline_rules, result.baseline, result.diff = baseline.rules, RunStats(), Differ()
    started = time.perf_counter()
    clock = time.perf_counter
    since = 0
    for batch in batches(records, batch_size):
        since += len(batch)
        flush = since >= checkpoint_every
        if flush:
            since = 0
        t0 = clock()
        out = new.process(batch, flush=flush)
        result.new.seconds += clock() - t0
        got = result.new.take(out)
        if baseline is not None and result.baseline is not None and result.diff is not None:
            t0 = clock()
            base_out = baseline.process(batch, flush=flush)
            result.baseline.seconds += clock() - t0
            result.diff.add(got, result.baseline.take(base_out))
        if on_batch is not None:
            on_batch(result.new.events)
    for engine in (new, baseline):
        if engine is not None:
            engine.states.flush()
    result.seconds = time.perf_counter() - started
    return result


class _Counting:
    """A binary file wrapper whose lines are counted in bytes, for progress."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.read = stream, 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self.stream:
            self.read += len(line)
            yield line


def backtest_file(
    path: str,
    new: Engine,
    baseline: Engine | None = None,
    *,
    batch_size: int = 2000,
    progress: bool = True,
    stream: IO[str] | None = None,
) -> Backtest:
    size = os.path.getsize(path)
    bar = ByteProgress(size, stream) if progress else None
    with open(path, "rb") as fh:
        counting = _Counting(fh)
        tick = None if bar is None else (lambda events: bar(counting.read, events))
        result = run_backtest(
            file_records(counting, path),  # type: ignore[arg-type]
            new,
            baseline,
            events_file=path,
            batch_size=batch_size,
            on_batch=tick,
        )
    if bar is not None:
        bar(size, result.new.events, final=True)
    return result


# ---------------------------------------------------------------------------------- report


def write_report(result: Backtest, directory: Path) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    report = result.to_json()
    (directory / "report.json").write_text(
        json.dumps(report, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    (directory / "report.html").write_text(render_html(report), encoding="utf-8")
    return report


def summary_lines(report: dict[str, Any], directory: Path) -> list[str]:
    run, new = report["run"], report["new"]["totals"]
    lines = [
        f"backtest: {run['events']:,} events in {run['seconds']:.1f}s "
        f"({run['events_per_second']:,.0f} events/s)",
        f"new:      {new['actions']:,} actions ({new['offers']:,} offers, {new['alerts']:,} "
        f"alerts), {new['suppressed']:,} suppressed, {new['customers_reached']:,} customers",
    ]
    if report["baseline"] is not None:
        base, diff = report["baseline"]["totals"], report["diff"]
        t = diff["totals"]
        lines.append(
            f"baseline: {base['actions']:,} actions ({base['offers']:,} offers, "
            f"{base['alerts']:,} alerts), {base['suppressed']:,} suppressed, "
            f"{base['customers_reached']:,} customers"
        )
        lines.append(
            f"diff:     +{t['added']:,} added, -{t['removed']:,} removed, ~{t['changed']:,} changed"
        )
        width = max((len(n) for n in diff["rules"]), default=4)
        lines.append(f"  {'rule':<{width}} {'new':>8} {'baseline':>8} {'+':>6} {'-':>6} {'~':>6}")
        for name, r in diff["rules"].items():
            lines.append(
                f"  {name:<{width}} {r['new_actions']:>8,} {r['baseline_actions']:>8,} "
                f"{r['added']:>6,} {r['removed']:>6,} {r['changed']:>6,}"
            )
    else:
        rules = report["new"]["rules"]
        width = max((len(n) for n in rules), default=4)
        lines.append(f"  {'rule':<{width}} {'actions':>8} {'customers':>9}")
        for name, r in rules.items():
            lines.append(f"  {name:<{width}} {r['actions']:>8,} {r['customers_reached']:>9,}")
    lines.append(f"report:   {directory / 'report.html'} and {directory / 'report.json'}")
    return lines


_PALETTE: Final = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#8c564b",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#d62728",
)

_CSS: Final = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
td.n{text-align:right} th{background:#f3f3f3}
h2{border-bottom:1px solid #ddd;margin-top:2em} .muted{color:#777}
ul.why{margin:0;padding-left:1.2em;font-family:monospace;font-size:90%}
.ok{color:#2a7} .no{color:#c33} svg text{font-size:11px;font-family:sans-serif}
details{margin:.3em 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for cell in row:
            if isinstance(cell, int | float) and not isinstance(cell, bool):
                out.append(f'<td class="n">{cell:,}</td>')
            else:
                out.append(f"<td>{_e(cell)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _hbars(title: str, data: dict[str, int]) -> str:
    """Horizontal bars, one per label."""
    if not data:
        return f'<p class="muted">{_e(title)}: none</p>'
    top = max(data.values()) or 1
    row, label_w, bar_w = 20, 260, 420
    height = row * len(data) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 80}" '
        f'height="{height}" role="img"><title>{_e(title)}</title>'
        f'<text x="0" y="14" font-weight="bold">{_e(title)}</text>'
    ]
    for i, (label, value) in enumerate(data.items()):
        y = 24 + i * row
        w = max(1.0, bar_w * value / top)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
            f'fill="{_PALETTE[i % len(_PALETTE)]}"><title>{_e(label)}: {value:,}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{value:,}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _stacked_days(title: str, rules: dict[str, Any]) -> str:
    """Actions per day, stacked by rule, with a legend."""
    series = {n: r["actions_per_day"] for n, r in rules.items() if r["actions"]}
    days = sorted({d for s in series.values() for d in s})
    if not days:
        return f'<p class="muted">{_e(title)}: no actions</p>'
    totals = [sum(s.get(d, 0) for s in series.values()) for d in days]
    top = max(totals) or 1
    plot_h, left, col = 220, 50, max(8, min(30, 900 // len(days)))
    width = left + col * len(days) + 20
    legend_y = plot_h + 60
    height = legend_y + 16 * len(series) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(width, 500)}" '
        f'height="{height}" role="img"><title>{_e(title)}</title>'
        f'<text x="0" y="14" font-weight="bold">{_e(title)}</text>'
        f'<text x="{left - 4}" y="34" text-anchor="end">{top:,}</text>'
        f'<text x="{left - 4}" y="{plot_h + 20}" text-anchor="end">0</text>'
        f'<line x1="{left}" y1="{plot_h + 20}" x2="{width - 10}" y2="{plot_h + 20}" '
        'stroke="#999"/>'
    ]
    colours = {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(series)}
    for i, day in enumerate(days):
        x = left + i * col
        y = plot_h + 20.0
        for name, s in series.items():
            value = s.get(day, 0)
            if not value:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                f'<rect x="{x + 1}" y="{y:.1f}" width="{col - 2}" height="{h:.1f}" '
                f'fill="{colours[name]}"><title>{_e(day)} {_e(name)}: {value:,}</title></rect>'
            )
        if i % max(1, len(days) // 10) == 0:
            parts.append(f'<text x="{x}" y="{plot_h + 34}">{_e(day[5:])}</text>')
    for i, (name, colour) in enumerate(colours.items()):
        y = legend_y + i * 16
        parts.append(
            f'<rect x="{left}" y="{y}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + 16}" y="{y + 9}">{_e(name)} ({rules[name]["actions"]:,})</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _why(explanation: Any) -> str:
    """An explanation (list of conditions with their values) as a readable list."""
    if not explanation:
        return '<span class="muted">(no explanation)</span>'
    items = []
    for cond in explanation:
        if not isinstance(cond, dict):
            items.append(f"<li>{_e(cond)}</li>")
            continue
        result = cond.get("result")
        mark = (
            '<span class="ok">✓</span>'
            if result is True
            else '<span class="no">✗</span>'
            if result is False
            else "?"
        )
        values = cond.get("values") or {}
        shown = ", ".join(
            f"{_e(k)} = {_e(json.dumps(v, ensure_ascii=False, default=str))}"
            for k, v in values.items()
        )
        items.append(
            f"<li>{mark} {_e(cond.get('condition', ''))}"
            + (f' <span class="muted">[{shown}]</span>' if shown else "")
            + "</li>"
        )
    return f'<ul class="why">{"".join(items)}</ul>'


def _side(label: str, side: dict[str, Any] | None) -> str:
    if not side:
        return ""
    parts = [f"<b>{_e(label)}</b>: {_e(side.get('outcome'))}"]
    if side.get("reason"):
        parts.append(f" ({_e(side['reason'])})")
    if side.get("outcome") == "emitted":
        what = side.get("offer") or {"severity": side.get("severity")}
        parts.append(
            f" {_e(side.get('kind'))} {_e(json.dumps(what, ensure_ascii=False, default=str))}"
            f" via {_e(side.get('channel'))}"
        )
        if side.get("not_before"):
            parts.append(f", not before {_e(side['not_before'])}")
    if "explanation" in side:
        parts.append(_why(side["explanation"]))
    return f"<div>{''.join(parts)}</div>"


def _run_section(title: str, run: dict[str, Any]) -> str:
    t = run["totals"]
    out = [f"<h2>{_e(title)}</h2>"]
    out.append(
        _table(
            ["pack", "version", "file", "rules"],
            [(p["pack"], p["version"], p["file"], p["rules"]) for p in run["packs"]],
        )
    )
    out.append(
        _table(
            ["actions", "offers", "alerts", "suppressed", "customers reached", "dead letters"],
            [
                (
                    t["actions"],
                    t["offers"],
                    t["alerts"],
                    t["suppressed"],
                    t["customers_reached"],
                    t["dead_letters"],
                )
            ],
        )
    )
    out.append(_stacked_days(f"{title}: actions per day, by rule", run["rules"]))
    out.append(_hbars(f"{title}: suppressions by reason", run["suppressions_by_reason"]))
    out.append(_hbars(f"{title}: alerts by severity", run["alerts_by_severity"]))
    rows = []
    for name, r in run["rules"].items():
        reasons = ", ".join(f"{k} {v:,}" for k, v in r["suppressed_by_reason"].items())
        rows.append(
            (
                name,
                r["kind"] or "",
                r["description"] or "",
                r["actions"],
                r["customers_reached"],
                reasons or "-",
            )
        )
    out.append(_table(["rule", "kind", "description", "actions", "customers", "suppressed"], rows))
    return "".join(out)


def render_html(report: dict[str, Any]) -> str:
    run = report["run"]
    packs = ", ".join(f"{p['pack']} v{p['version']}" for p in run["rules"])
    body = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>Backtest: {_e(packs)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Backtest: {_e(packs)}</h1>",
        f"<p>{run['events']:,} events from <code>{_e(run['events_file'])}</code> in "
        f"{run['seconds']:.1f}s ({run['events_per_second']:,.0f} events/s)",
    ]
    if run["baseline"]:
        base = ", ".join(f"{p['pack']} v{p['version']}" for p in run["baseline"])
        body.append(f"; baseline: {_e(base)}")
    body.append('.</p><p class="muted">Contains customer ids: for analysts only, do not share.</p>')
    if report["baseline"] is not None:
        diff = report["diff"]
        t = diff["totals"]
        body.append("<h2>Against the baseline</h2>")
        body.append(
            f"<p>{t['added']:,} actions added, {t['removed']:,} removed, "
            f"{t['changed']:,} changed.</p>"
        )
        body.append(
            _table(
                ["rule", "new", "baseline", "added", "removed", "changed"],
                [
                    (
                        n,
                        r["new_actions"],
                        r["baseline_actions"],
                        r["added"],
                        r["removed"],
                        r["changed"],
                    )
                    for n, r in diff["rules"].items()
                ],
            )
        )
        for name, r in diff["rules"].items():
            for what in ("added", "removed", "changed"):
                examples = r.get("examples", {}).get(what) or []
                if not examples:
                    continue
                body.append(
                    f"<details><summary>{_e(name)}: {r[what]:,} {what} "
                    f"({len(examples)} example{'s' if len(examples) != 1 else ''})</summary>"
                )
                for ex in examples:
                    body.append(
                        f"<p><b>event</b> <code>{_e(ex['event_id'])}</code> "
                        f"<b>customer</b> <code>{_e(ex['customer_id'])}</code> "
                        f"at {_e(ex['ts'])}</p>"
                        + _side("new", ex.get("new"))
                        + _side("baseline", ex.get("baseline"))
                    )
                body.append("</details>")
    body.append(_run_section("New rules", report["new"]))
    if report["baseline"] is not None:
        body.append(_run_section("Baseline", report["baseline"]))
    body.append("</body></html>\n")
    return "".join(body)
