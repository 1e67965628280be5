"""The `crm-triggers` command line.

Exit codes: 0 success (dead letters included: they are output, not failure), 1 a check
found problems (`rules check`), 2 bad usage or rules that do not load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from pydantic import ValidationError

from connectors.base import NullSink, Sink
from connectors.files import JsonLinesSink
from monitoring.logs import configure_logging
from rules.errors import RuleError
from rules.pack import parse_duration
from rules.ruleset import RuleSet, load_rules
from state.store import MemoryStore, RocksStore, StateCache, Store, expire_idle
from streams.engine import Engine
from streams.replay import DEFAULT_BATCH, Outputs, Progress, file_records, replay
from streams.settings import Settings, load_settings

DEFAULT_PACKS = Path(__file__).resolve().parent.parent / "rules" / "packs"


class UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.run(args)
    except RuleError as err:
        print(err, file=sys.stderr)
        n = len(err.problems)
        print(f"rules not loaded: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return 2
    except UsageError as err:
        print(f"crm-triggers: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-triggers",
        description="Real-time CRM triggers: offers and risk alerts from a bank's event streams.",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=os.environ.get("CRM_LOG_FORMAT", "json"),
        help="log format (CRM_LOG_FORMAT; default json; personal data masked in both)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=os.environ.get("CRM_LOG_LEVEL", "INFO").upper(),
        help="log level (CRM_LOG_LEVEL; default INFO)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("replay", help="run a file of events through rule packs")
    p.add_argument(
        "--rules",
        action="append",
        required=True,
        metavar="PATH",
        help="a pack file or a folder of packs; repeat for more",
    )
    p.add_argument(
        "--events",
        required=True,
        metavar="FILE",
        help="JSON Lines events, processed in file order; - for stdin",
    )
    p.add_argument(
        "--actions", default="-", metavar="FILE", help="actions output (default: stdout)"
    )
    p.add_argument("--decisions", metavar="FILE", help="decisions (audit) output")
    p.add_argument(
        "--dead-letter", metavar="FILE", help="invalid events with the reason (default: stderr)"
    )
    p.add_argument(
        "--state", metavar="DIR", help="keep customer state in RocksDB here (default: in memory)"
    )
    p.add_argument(
        "--state-ttl",
        metavar="DURATION",
        default="730d",
        help="forget customers idle this long in event time (default: 730d)",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N")
    p.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    p.set_defaults(run=_replay)

    b = sub.add_parser("backtest", help="run rule packs (and a baseline) over history; report")
    b.add_argument(
        "--rules", action="append", nargs="+", required=True, metavar="PATH",
        help="the new packs: files or folders",
    )  # fmt: skip
    b.add_argument(
        "--baseline", action="append", nargs="+", metavar="PATH",
        help="the packs to compare against (e.g. the ones in production)",
    )  # fmt: skip
    b.add_argument("--events", required=True, metavar="FILE", help="JSON Lines events")
    b.add_argument("--report", required=True, metavar="DIR", help="report.html and report.json")
    b.add_argument(
        "--state", metavar="DIR", help="keep customer states in RocksDB here (default: memory)"
    )
    b.add_argument("--state-ttl", metavar="DURATION", default="730d")
    b.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N")
    b.add_argument("--quiet", action="store_true", help="no progress on stderr")
    b.set_defaults(run=_backtest)

    rules = sub.add_parser("rules", help="work with rule packs").add_subparsers(
        title="rules commands", metavar="COMMAND"
    )
    c = rules.add_parser("check", help="validate packs; print every problem")
    c.add_argument("paths", nargs="+", metavar="PATH", help="pack files or folders")
    c.set_defaults(run=_rules_check)
    t = rules.add_parser("test", help="run scenario files and the tests embedded in packs")
    t.add_argument("paths", nargs="+", metavar="PATH", help="scenario files, pack files or folders")
    t.add_argument("-q", "--quiet", action="store_true", help="only failures and the summary")
    t.add_argument("--junit-xml", metavar="FILE", help="also write a JUnit XML report (for CI)")
    t.set_defaults(run=_rules_test)

    s = sub.add_parser("simulate", help="write a synthetic bank's event stream")
    s.add_argument("--customers", type=int, default=1000, metavar="N")
    s.add_argument("--days", type=int, default=30, metavar="D")
    s.add_argument("--seed", type=int, default=1, metavar="S")
    s.add_argument(
        "--out",
        metavar="FILE",
        help="JSON Lines output (default: stdout, unless --brokers sends the events to Kafka)",
    )
    s.add_argument("--labels", metavar="FILE", help="write the injected anomalies here")
    _kafka_flags(s)
    s.add_argument(
        "--rate", type=float, metavar="N", help="with --brokers: events per second (default: max)"
    )
    s.set_defaults(run=_simulate)

    d = sub.add_parser("demo", help="simulate a bank and watch offers and alerts fire")
    d.add_argument(
        "--rules", action="append", metavar="PATH", help=f"packs to run (default: {DEFAULT_PACKS})"
    )
    d.add_argument("--customers", type=int, default=2000, metavar="N")
    d.add_argument("--days", type=int, default=30, metavar="D")
    d.add_argument("--seed", type=int, default=7, metavar="S")
    d.add_argument(
        "--rate",
        type=float,
        default=5000.0,
        metavar="EPS",
        help="events per second to play (0: as fast as possible)",
    )
    d.add_argument(
        "--metrics-port",
        type=int,
        default=9108,
        metavar="PORT",
        help="serve Prometheus /metrics, /healthz and /readyz here (0: off)",
    )
    d.add_argument("--out", metavar="DIR", help="also write actions and decisions here")
    d.set_defaults(run=_demo)
    w = sub.add_parser("worker", help="run a Kafka worker (Faust) with the engine")
    _kafka_flags(w)
    w.add_argument("--rules", action="append", metavar="PATH", help="pack file or folder")
    w.add_argument("--state-dir", metavar="DIR", help="local RocksDB state (default var/state)")
    w.add_argument("--processing-guarantee", choices=["at_least_once", "exactly_once"])
    w.add_argument("--web-port", type=int, metavar="PORT", help="/metrics port (0: off)")
    w.set_defaults(run=_worker)

    dl = sub.add_parser("deliver", help="deliver actions from Kafka to webhooks, topics, files")
    _kafka_flags(dl)
    dl.add_argument(
        "--connectors", required=True, metavar="FILE", help="connectors and routes (YAML)"
    )
    dl.add_argument(
        "--metrics-port",
        type=int,
        default=6067,
        metavar="PORT",
        help="/metrics, /healthz and /readyz (0: off)",
    )
    dl.set_defaults(run=_deliver)
    conn = sub.add_parser("connectors", help="work with delivery configs").add_subparsers(
        title="connectors commands", metavar="COMMAND"
    )
    cc = conn.add_parser("check", help="validate a connectors file; print every problem")
    cc.add_argument("path", metavar="FILE")
    cc.set_defaults(run=_connectors_check)

    topics = sub.add_parser("topics", help="manage the worker's Kafka topics").add_subparsers(
        title="topics commands", metavar="COMMAND"
    )
    tc = topics.add_parser("create", help="create the input, output and state topics")
    _kafka_flags(tc)
    tc.set_defaults(run=_topics_create)
    return parser


def _kafka_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="settings file (YAML); also CRM_CONFIG")
    p.add_argument("--brokers", metavar="HOST:PORT", help="bootstrap servers (CRM_BROKERS)")
    p.add_argument("--app-id", metavar="ID", help="consumer group and state prefix")
    p.add_argument("--partitions", type=int, metavar="N", help="partitions per topic")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "brokers": args.brokers,
        "app_id": args.app_id,
        "partitions": args.partitions,
        "rules": getattr(args, "rules", None),
        "state_dir": getattr(args, "state_dir", None),
        "processing_guarantee": getattr(args, "processing_guarantee", None),
        "web_port": getattr(args, "web_port", None),
    }
    try:
        return load_settings(args.config, **overrides)
    except (ValidationError, ValueError) as exc:
        raise UsageError(f"settings: {exc}") from None


def _topics_create(args: argparse.Namespace) -> int:
    from streams.topics import create_topics

    settings = _settings(args)
    try:
        result = create_topics(settings)
    except (RuntimeError, KafkaException) as exc:
        print(f"crm-triggers: {exc}", file=sys.stderr)
        return 1
    for name, status in result.items():
        print(f"{status:8} {name} ({settings.partitions} partitions)")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from streams.agent import run_worker

    settings = _settings(args)
    if not settings.rules:
        raise UsageError("no rules: pass --rules PATH or set rules in the settings")
    ruleset = _load(settings.rules)
    return run_worker(settings, ruleset)


def _delivery_config(path: str) -> Any:
    from connectors.config import DeliveryConfigError, load_delivery_config

    try:
        return load_delivery_config(path)
    except DeliveryConfigError as exc:
        raise UsageError(f"connectors file:\n{exc}") from None


def _connectors_check(args: argparse.Namespace) -> int:
    from connectors.config import DeliveryConfigError, load_delivery_config

    try:
        config = load_delivery_config(args.path)
    except DeliveryConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for name, connector in config.connectors.items():
        print(f"{name}: {connector.type}")
    print(f"{args.path}: ok ({len(config.connectors)} connectors, {len(config.routes)} routes)")
    return 0


def _deliver(args: argparse.Namespace) -> int:
    from streams.deliver import run_deliver

    settings = _settings(args)
    config = _delivery_config(args.connectors)
    try:
        return run_deliver(settings, config, metrics_port=args.metrics_port)
    except ValueError as exc:  # settings and connectors that do not fit together
        raise UsageError(str(exc)) from None


def _sink(target: str | None, default: Sink | None = None) -> Sink:
    if target is None:
        return default if default is not None else NullSink()
    return JsonLinesSink(target)


def _duration(text: str) -> float:
    try:
        return parse_duration(text, limit=10 * 365 * 86400.0)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _load(paths: Sequence[str]) -> RuleSet:
    for path in paths:
        if not Path(path).exists():
            raise UsageError(f"--rules {path}: no such file or folder")
    return load_rules(paths)


def _replay(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    ttl = _duration(args.state_ttl)
    ruleset = _load(args.rules)
    if args.events != "-" and not Path(args.events).is_file():
        raise UsageError(f"--events {args.events}: no such file")
    with contextlib.ExitStack() as stack:
        store: Store = RocksStore(args.state, durable=False) if args.state else MemoryStore()
        stack.callback(store.close)
        outputs = Outputs(
            actions=JsonLinesSink(args.actions),
            decisions=_sink(args.decisions),
            dead_letters=_sink(args.dead_letter, JsonLinesSink(sys.stderr.buffer)),
        )
        stack.callback(outputs.close)
        stream = (
            sys.stdin.buffer if args.events == "-" else stack.enter_context(open(args.events, "rb"))
        )
        engine = Engine(ruleset, StateCache(store), state_ttl=ttl)
        summary = replay(
            engine,
            file_records(stream, args.events),
            outputs,
            batch_size=args.batch_size,
            on_batch=None if args.quiet else Progress("replay"),
        )
        expired = expire_idle(store, engine.newest - ttl) if args.state and engine.newest else 0
    if not args.quiet:
        print(f"replay: {summary.line()}", file=sys.stderr)
        if expired:
            print(
                f"replay: removed {expired:,} customers idle for over {args.state_ttl}",
                file=sys.stderr,
            )
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from streams.backtest import backtest_file, summary_lines, write_report

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    ttl = _duration(args.state_ttl)
    ruleset = _load([p for group in args.rules for p in group])
    baseline = _load([p for group in args.baseline for p in group]) if args.baseline else None
    if not Path(args.events).is_file():
        raise UsageError(f"--events {args.events}: no such file")
    if args.state and any(Path(args.state).glob("*")):
        raise UsageError(f"--state {args.state}: not empty (a backtest starts from no state)")
    with contextlib.ExitStack() as stack:

        def engine(rules: RuleSet, name: str) -> Engine:
            store: Store = (
                RocksStore(str(Path(args.state) / name), durable=False)
                if args.state
                else MemoryStore()
            )
            stack.callback(store.close)
            return Engine(rules, StateCache(store), state_ttl=ttl)

        result = backtest_file(
            args.events,
            engine(ruleset, "new"),
            engine(baseline, "baseline") if baseline is not None else None,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
    report = write_report(result, Path(args.report))
    for line in summary_lines(report, Path(args.report)):
        print(line)
    return 0


def _rules_check(args: argparse.Namespace) -> int:
    problems = 0
    for path in args.paths:
        if not Path(path).exists():
            print(f"{path}: error: no such file or folder", file=sys.stderr)
            problems += 1
            continue
        try:
            ruleset = load_rules([path])
        except RuleError as err:
            print(err, file=sys.stderr)
            problems += len(err.problems)
            continue
        for line in ruleset.describe():
            print(f"ok: {line}")
    if problems:
        print(f"{problems} problem{'s' if problems != 1 else ''} found", file=sys.stderr)
        return 1
    return 0


def _rules_test(args: argparse.Namespace) -> int:
    """Exit 0: all passed; 1: a scenario failed; 2: a file could not be used."""
    import time

    from rules.testing import collect, junit_xml, run_all

    began = time.perf_counter()
    found = collect(args.paths)
    for error in found.errors:
        print(error, file=sys.stderr)
    outcomes = []
    for outcome in run_all(found.scenarios):
        outcomes.append(outcome)
        if not args.quiet:
            mark = "PASS" if outcome.passed else "ERROR" if outcome.error else "FAIL"
            print(f"{mark} {outcome.result.file}: {outcome.result.name}")
    failures = [o for o in outcomes if not o.passed]
    if failures:
        print("\n=== failures ===")
    for o in failures:
        head = f"ERROR {o.result.file}: {o.result.name}"
        print(f"{head}\n  {o.error}" if o.error else o.result.report(because=True))
    seconds = time.perf_counter() - began
    passed = len(outcomes) - len(failures)
    summary = f"{passed} passed, {len(failures)} failed"
    if found.errors:
        summary += f", {len(found.errors)} file{'s' if len(found.errors) != 1 else ''} not usable"
    print(f"{summary} in {seconds:.2f}s")
    if args.junit_xml:
        Path(args.junit_xml).write_bytes(junit_xml(outcomes, seconds))
    return 2 if found.errors or any(o.error for o in failures) else 1 if failures else 0


def _simulate(args: argparse.Namespace) -> int:
    from streams.simulate import Label, simulate, write_jsonl

    if args.customers < 1 or args.days < 1:
        raise UsageError("--customers and --days must be at least 1")
    if args.rate is not None and (args.brokers is None or args.rate <= 0):
        raise UsageError("--rate needs --brokers and a positive number")
    labels: list[Label] | None = [] if args.labels else None
    events = simulate(args.customers, args.days, args.seed, labels=labels)
    if args.brokers is not None:
        count = _simulate_to_kafka(args, events)
    else:
        with contextlib.ExitStack() as stack:
            out = (
                sys.stdout
                if args.out in (None, "-")
                else stack.enter_context(open(args.out, "w", encoding="utf-8"))
            )
            count = write_jsonl(events, out)
    if labels is not None:
        with open(args.labels, "w", encoding="utf-8") as fh:
            for label in labels:
                fh.write(json.dumps(label.__dict__) + "\n")
    if args.brokers is None:
        print(f"simulate: wrote {count:,} events", file=sys.stderr)
    return 0


def _simulate_to_kafka(args: argparse.Namespace, events: Iterable[dict[str, Any]]) -> int:
    """Send the events to the input topics (and to --out too, if given)."""
    from streams.produce import Produced, produce
    from streams.simulate import write_jsonl

    settings = _settings(args)
    with contextlib.ExitStack() as stack:
        if args.out not in (None, "-"):
            copy = stack.enter_context(open(args.out, "w", encoding="utf-8"))
            events = _tee(events, lambda batch: write_jsonl(batch, copy))

        def say(p: Produced) -> None:
            print(f"simulate: {p.events:,} events sent ({p.rate:,.0f}/s)", file=sys.stderr)

        try:
            stats = produce(events, settings, rate=args.rate, progress=say)
        except KafkaException as exc:
            raise UsageError(f"cannot produce to {settings.brokers}: {exc}") from None
    if stats.undelivered:
        print(f"simulate: {stats.undelivered:,} events not delivered", file=sys.stderr)
        raise SystemExit(1)
    topics = ", ".join(f"{t} {n:,}" for t, n in (stats.by_topic or {}).items())
    print(
        f"simulate: sent {stats.events:,} events in {stats.seconds:.1f}s ({topics})",
        file=sys.stderr,
    )
    return stats.events


def _tee(
    events: Iterable[dict[str, Any]], write: Callable[[list[dict[str, Any]]], object]
) -> Iterator[dict[str, Any]]:
    batch: list[dict[str, Any]] = []
    for event in events:
        batch.append(event)
        if len(batch) == 2048:
            write(batch)
            batch = []
        yield event
    if batch:
        write(batch)


def _demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    ruleset = _load(args.rules or [str(DEFAULT_PACKS)])
    return run_demo(
        ruleset,
        customers=args.customers,
        days=args.days,
        seed=args.seed,
        rate=args.rate,
        metrics_port=args.metrics_port,
        out_dir=args.out,
    )


if __name__ == "__main__":
    sys.exit(main())
