"""What the engine's Prometheus metrics cost: the same events through `Engine.process` with
`NoopObserver` and with `PrometheusObserver`, alternating, on one core.

    python -m bench.observer_cost [--events 100000] [--rounds 2]

Prints events/s per run; writes nothing (BENCHMARKS.md, "Cost of the metrics and health
checks", quotes its output).
"""

from __future__ import annotations

import argparse
import time

import msgspec

from monitoring.metrics import NoopObserver, Observer, PrometheusObserver
from rules.ruleset import load_rules
from state.store import MemoryStore, StateCache
from streams.engine import Engine, Record
from streams.simulate import simulate

BATCH = 2000


def run(lines: list[bytes], observer: Observer) -> float:
    engine = Engine(load_rules(["rules/packs"]), StateCache(MemoryStore()), observer)
    records = [Record(line) for line in lines]
    started = time.perf_counter()
    for i in range(0, len(records), BATCH):
        engine.process(records[i : i + BATCH])
    return len(records) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    encode = msgspec.json.encode
    lines = [encode(e) for e, _ in zip(simulate(2000, 20, 1), range(args.events), strict=False)]
    print(f"{len(lines):,} events (2,000 customers x 20 days, seed 1), batches of {BATCH:,}")
    for _ in range(args.rounds):
        for name, observer in (("noop", NoopObserver()), ("prometheus", PrometheusObserver())):
            print(f"{name:>10}: {run(lines, observer):,.0f} events/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
