"""`crm-triggers demo`: a synthetic bank's events through the engine, shown live.

Events come from the simulator at a steady rate (event time runs much faster than wall
time), go through the same engine as replay and the worker, and every action is printed as
it fires, with a running count per rule every few seconds and a final table. Prometheus
metrics are served on /metrics while it runs, with /healthz and /readyz.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from connectors.base import NullSink
from connectors.files import JsonLinesSink
from monitoring.health import Check, Health, serve
from monitoring.metrics import PrometheusObserver
from rules.ruleset import RuleSet
from state.store import MemoryStore, StateCache
from streams.engine import Engine, Record
from streams.replay import Outputs, ReplaySummary
from streams.simulate import simulate

TICK = 0.1
TABLE_EVERY = 5.0
MAX_LINES_PER_TICK = 4


class _View:
    """Prints actions and rule counts to a terminal (colours only on a TTY)."""

    def __init__(self, out: IO[str], rules: RuleSet) -> None:
        self.out = out
        self.color = out.isatty()
        self.emitted: Counter[tuple[str, str]] = Counter()
        self.suppressed: Counter[tuple[str, str]] = Counter()
        self.shadow: Counter[tuple[str, str]] = Counter()
        self.kinds = {(p.name, r.spec.id): r.spec.kind for p in rules.packs for r in p.rules}
        # the shadow column only when a rule is in shadow mode
        self.shadows = any(
            (r.spec.mode or p.spec.mode) == "shadow" for p in rules.packs for r in p.rules
        )

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def count(self, decisions: list[bytes]) -> None:
        for raw in decisions:
            d = msgspec.json.decode(raw)
            key = (d["pack"], d["rule_id"])
            outcome = d["outcome"]
            counter = (
                self.emitted
                if outcome == "emitted"
                else self.shadow
                if outcome == "shadow"
                else self.suppressed
            )
            counter[key] += 1

    def actions(self, actions: list[bytes]) -> None:
        shown = actions[:MAX_LINES_PER_TICK]
        for raw in shown:
            a = msgspec.json.decode(raw)
            if a["kind"] == "alert":
                what = self.paint(f"ALERT {a['severity'].upper():8}", "1;31")
            else:
                what = self.paint(f"OFFER {a['offer']['product'][:8]:8}", "1;32")
            held = f"  held until {a['not_before'][11:16]}" if a["not_before"] else ""
            print(
                f"{a['ts'][:16]}  {what}  {a['rule_id']:24} {a['customer_id']:10} "
                f"via {a['channel']}{held}",
                file=self.out,
            )
        if len(actions) > len(shown):
            print(
                self.paint(f"{'':16}  ... and {len(actions) - len(shown)} more", "2"), file=self.out
            )

    def table(self, summary: ReplaySummary, title: str) -> None:
        print(self.paint(f"\n{title}: {summary.line()}", "1"), file=self.out)
        extra = f" {'shadow':>7}" if self.shadows else ""
        print(
            f"  {'pack / rule':42} {'kind':6} {'emitted':>8} {'suppressed':>11}{extra}",
            file=self.out,
        )
        for key in sorted(self.kinds):
            extra = f" {self.shadow[key]:>7}" if self.shadows else ""
            print(
                f"  {key[0] + ' / ' + key[1]:42} {self.kinds[key]:6} "
                f"{self.emitted[key]:>8} {self.suppressed[key]:>11}{extra}",
                file=self.out,
            )
        print(file=self.out, flush=True)


def _records(customers: int, days: int, seed: int) -> Iterator[Record]:
    encode = msgspec.json.encode
    for i, event in enumerate(simulate(customers, days, seed)):
        yield Record(encode(event), f"simulate:{i + 1}", topic="simulate")


def run_demo(
    rules: RuleSet,
    *,
    customers: int,
    days: int,
    seed: int,
    rate: float,
    metrics_port: int,
    out_dir: str | None,
    out: IO[str] | None = None,
) -> int:
    stream = out if out is not None else sys.stdout
    observer = PrometheusObserver()
    health = Health().register(observer.registry)
    server = None
    if metrics_port:
        try:
            server = serve(metrics_port, observer.registry, health, addr="127.0.0.1")
            print(
                f"metrics: http://127.0.0.1:{metrics_port}/metrics (and /healthz, /readyz)",
                file=stream,
            )
        except OSError as exc:
            print(f"metrics: not served (port {metrics_port}: {exc.strerror})", file=stream)
    engine = Engine(rules, StateCache(MemoryStore()), observer)
    outputs = Outputs()
    if out_dir:
        outputs = Outputs(
            JsonLinesSink(Path(out_dir) / "actions.jsonl"),
            JsonLinesSink(Path(out_dir) / "decisions.jsonl"),
            JsonLinesSink(Path(out_dir) / "dead-letters.jsonl"),
        )
    view = _View(stream, rules)
    print(
        f"demo: {customers:,} customers, {days} days of events at "
        f"{'full speed' if rate <= 0 else f'{rate:,.0f} events/s'}; rules: "
        f"{', '.join(rules.describe())}. Ctrl-C stops.\n",
        file=stream,
        flush=True,
    )
    summary = ReplaySummary()
    started = time.perf_counter()
    next_table = started + TABLE_EVERY
    per_tick = max(1, int(rate * TICK)) if rate > 0 else 2000
    records = _records(customers, days, seed)
    try:
        while True:
            tick_start = time.perf_counter()
            health.report([Check("running", True, "generating events")])
            batch = [r for _, r in zip(range(per_tick), records, strict=False)]
            if not batch:
                break
            result = engine.process(batch)
            outputs.write(result)
            summary.add(result)
            view.count(result.decisions)
            view.actions(result.actions)
            now = time.perf_counter()
            summary.seconds = now - started
            if now >= next_table:
                view.table(summary, "so far")
                next_table = now + TABLE_EVERY
            if rate > 0:
                time.sleep(max(0.0, TICK - (now - tick_start)))
    except KeyboardInterrupt:
        print("\ninterrupted", file=stream)
    finally:
        health.report([Check("running", False, "finished")])
        if server is not None:
            server.shutdown()
            server.server_close()
        summary.seconds = time.perf_counter() - started
        for sink in (outputs.actions, outputs.decisions, outputs.dead_letters):
            if not isinstance(sink, NullSink):
                sink.close()
    view.table(summary, "demo finished")
    return 0
