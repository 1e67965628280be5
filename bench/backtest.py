"""`crm-triggers backtest` on a simulated month: events/s and peak RSS.

    python -m bench.backtest [--customers 100000] [--days 30] [--seed 1] [--no-baseline]
                             [--state]

Generates (or reuses) the history under `bench/.data/`, then runs the CLI in a child process
(the shipped packs, against themselves as the baseline unless `--no-baseline`; `--state`
keeps customer states in RocksDB in a temporary folder) and reports its wall time, events/s
and peak RSS (the child's `ru_maxrss`). The result goes to stdout and to
`bench/results/backtest.json`. Not part of `make bench`: the full month of 100k customers
(about 7M events) takes several minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streams.simulate import simulate, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data"
RESULTS = ROOT / "bench" / "results"
PACKS = ROOT / "rules" / "packs"


def history(customers: int, days: int, seed: int) -> Path:
    path = DATA / f"backtest-{customers}x{days}-s{seed}.jsonl"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        print(f"generating {path.name} ...", file=sys.stderr)
        with partial.open("w", encoding="utf-8") as out:
            write_jsonl(simulate(customers, days, seed), out)
        partial.rename(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--state", action="store_true", help="RocksDB state (default: memory)")
    args = parser.parse_args()
    events = history(args.customers, args.days, args.seed)
    with tempfile.TemporaryDirectory(prefix="backtest-") as tmp:
        command = [
            sys.executable, "-m", "streams.cli", "--log-level", "WARNING", "backtest",
            "--rules", str(PACKS), "--events", str(events), "--report", f"{tmp}/report",
        ]  # fmt: skip
        if not args.no_baseline:
            command += ["--baseline", str(PACKS)]
        if args.state:
            command += ["--state", f"{tmp}/state"]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        report = json.loads(Path(f"{tmp}/report/report.json").read_text(encoding="utf-8"))
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "customers": args.customers,
        "days": args.days,
        "events": report["run"]["events"],
        "baseline": not args.no_baseline,
        "state": "rocksdb" if args.state else "memory",
        "wall_seconds": round(seconds, 1),
        "events_per_second": round(report["run"]["events"] / seconds),
        "peak_rss_mb": round(peak_mb),
        "actions": report["new"]["totals"]["actions"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "backtest.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
