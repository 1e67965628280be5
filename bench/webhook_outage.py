"""Webhook outage: what an outage of a webhook endpoint costs `crm-triggers deliver`.

    python -m bench.webhook_outage [--rate 200] [--outage-s 600] [--customers 100000]
                                   [--concurrency N] [--batch-size N] [--json PATH]
    python -m bench.webhook_outage --quick     # a 60 s outage; prints the section, writes nothing

Starts a single-node Kafka broker (`bench.worker_throughput.bench_kafka`: a local broker in a
temporary folder, or `$KAFKA_BOOTSTRAP`), creates fresh topics (4 partitions each), starts a
webhook endpoint (an aiohttp server in its own process: it checks every request's HMAC
signature with `connectors.webhook.verify` and records when it first accepted each action id
and how often), measures a reference (the same `WebhookSink` fed directly, without Kafka, 10
batches to that endpoint), then starts `crm-triggers deliver` as a subprocess with two
connectors that both take every action: `crm-webhook` (webhook; only `url` and `secret_env`
are set, plus `concurrency` with `--concurrency`) and `audit-file` (JSON Lines file,
`rotate_bytes` raised so nothing rotates during the run); `batch_size` is the default (500)
unless `--batch-size` is given.

A producer in this process writes actions at a steady `--rate` for the whole run to the
offers and alerts topics, keyed by customer id: three real actions from `crm-triggers replay`
(two alerts, one offer, see TEMPLATES) with a fresh `action_id` (its first 12 hex digits are
a sequence number), `customer_id` (uniform over `--customers`), `event_id` and `emitted_at`.
Timeline: `--warmup-s` (60) with the endpoint up; `--outage-s` (600) with the endpoint down
(it stops listening and closes its connections: the client sees connection refused); then up
again until every action produced before it came back has been accepted ("caught up"); then
`--tail-s` (30) more; then the producer stops and the run waits until both connectors have
everything, stops the deliverer with SIGTERM and checks the endpoint's and the file's
records against what was produced (missing, duplicates) and the delivery dead-letter topic.

Sampled every second: the deliverer's RSS (/proc/PID/status VmRSS), each connector's
consumer-group lag (committed offsets read with `Consumer.committed` from a consumer that never
joins the group, against the high watermarks), the CPU time of the deliverer, endpoint and
broker, the endpoint's counts, the file's new lines; the deliverer's metrics every 10 s. The
backlog's disk cost is the bytes of the two topics' log segments per record times the lag.
Afterwards: end-to-end delays (handed to the producer -> first accepted), how arrivals at the
endpoint bunch into bursts (one per batch), and when each partition caught up.

Progress on stderr every 10 s. Results go to `bench/results/webhook_outage.json` and the
webhook-outage section of BENCHMARKS.md (not with `--quick` or `--no-write`; `--json` writes
the JSON to another path as well). Exit 1 if an action was lost, duplicated or dead-lettered,
or the endpoint never caught up. The full run took 18 minutes on a 2-core VM (2026-11-25: a
10-minute outage took 6.5 minutes to catch up), `--quick` about 4; run nothing else heavy
meanwhile (`flock /tmp/bench.lock`).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from bench.worker_throughput import (
    ROOT,
    ancestors,
    bench_kafka,
    committed,
    cpu_seconds,
    java_version,
    kafka_footer,
    machine_info,
    other_work,
    worker_env,
    write_section,
)
from connectors.config import DeliveryConfig
from connectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookConfig, verify
from scripts.kafka_local import free_ports, kafka_version
from streams.settings import Settings

RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "webhook_outage.json"
START, END = "<!-- webhook-outage:start -->", "<!-- webhook-outage:end -->"
BEFORE = "## Where the worker's time goes"
PARTITIONS = 4
SECRET_ENV = "BENCH_WEBHOOK_SECRET"
WEBHOOK, FILE = "crm-webhook", "audit-file"
OPEN = f"crm_delivery_circuit_open{{{WEBHOOK}}}"  # metric keys as `scrape` returns them
IN_FLIGHT = f"crm_delivery_buffered_actions{{{WEBHOOK}}}"
SEQ_DIGITS = 12  # an action id's first hex digits: the action's sequence number in this run
PROBE_SEQ = 0xF << (4 * SEQ_DIGITS - 4)  # action ids from "f...": the sink-alone reference
TICK = 0.25  # seconds between checks of the endpoint's counts
PROGRESS_S = 10.0
FILE_ROTATE_BYTES = 1 << 34  # 16 GiB: the file connector never rotates during a run
WEBHOOK_FIELDS = ("concurrency", "timeout_s", "max_attempts", "backoff_base_s", "backoff_max_s",
                  "jitter", "rate_limit_per_s", "breaker_threshold", "breaker_reset_s",
                  "max_outage_s")  # fmt: skip

# Real actions from `crm-triggers replay --rules rules/packs` on the 1,000-customer x 7-day
# simulated stream (seed 1), with the weight each gets here. Every action gets a fresh
# action_id, customer_id, event_id and emitted_at; the rest (rule, explanation) is as emitted.
TEMPLATES: list[tuple[float, bytes]] = [
    (
        0.45,
        b'{"action_id":"9829a99156d14a97011b1f5d057631c4","kind":"alert","pack":"retail-risk",'
        b'"pack_version":1,"rule_id":"dormant-reactivation","customer_id":"c000581",'
        b'"event_id":"e1-000001081","ts":"2026-10-01T03:23:36+08:00",'
        b'"emitted_at":"2026-10-01T03:23:36+08:00","offer":null,"severity":"medium",'
        b'"channel":"fraud_queue","not_before":null,"explanation":[{"condition":'
        b'"event.direction == \\"debit\\"","values":{"event.direction":"debit"},"result":true},'
        b'{"condition":"event.amount >= 10000","values":{"event.amount":10562.12},'
        b'"result":true},{"condition":"prior.last_active != null","values":'
        b'{"prior.last_active":{"ts":"2025-08-27T02:37:50+00:00"}},"result":true},'
        b'{"condition":"days_since(prior.last_active.ts) >= 365","values":'
        b'{"days_since(prior.last_active.ts)":399.69844907407406},"result":true}]}',
    ),
    (
        0.35,
        b'{"action_id":"4e2a28cdf9159f79a4719b9a8a67fde2","kind":"alert","pack":"retail-risk",'
        b'"pack_version":1,"rule_id":"impossible-travel","customer_id":"c000089",'
        b'"event_id":"e1-000001446","ts":"2026-10-01T09:54:25+08:00",'
        b'"emitted_at":"2026-10-01T09:54:25+08:00","offer":null,"severity":"high",'
        b'"channel":"fraud_queue","not_before":null,"explanation":[{"condition":'
        b'"event.channel == \\"card\\"","values":{"event.channel":"card"},"result":true},'
        b'{"condition":"event.lat != null","values":{"event.lat":51.5266},"result":true},'
        b'{"condition":"event.lon != null","values":{"event.lon":-0.1243},"result":true},'
        b'{"condition":"prior.last_card_present != null","values":{"prior.last_card_present":'
        b'{"ts":"2026-10-01T00:52:36+00:00","lat":39.9468,"lon":116.4389}},"result":true},'
        b'{"condition":"distance_km(prior.last_card_present.lat, prior.last_card_present.lon, '
        b'event.lat, event.lon) > 500","values":{"distance_km(prior.last_card_present.lat, '
        b'prior.last_card_present.lon, event.lat, event.lon)":8137.113905834584},'
        b'"result":true},{"condition":"distance_km(prior.last_card_present.lat, '
        b"prior.last_card_present.lon, event.lat, event.lon) > 900 * "
        b'hours_between(prior.last_card_present.ts, event.ts)","values":'
        b'{"distance_km(prior.last_card_present.lat, prior.last_card_present.lon, event.lat, '
        b'event.lon)":8137.113905834584,"900 * hours_between(prior.last_card_present.ts, '
        b'event.ts)":927.2500000000001},"result":true}]}',
    ),
    (
        0.20,
        b'{"action_id":"23c58ce316d3d1e75f9c278e64eda3b4","kind":"offer",'
        b'"pack":"retail-marketing","pack_version":1,"rule_id":"first-trip-abroad",'
        b'"customer_id":"c000901","event_id":"e1-000002219","ts":"2026-10-01T15:06:11+08:00",'
        b'"emitted_at":"2026-10-01T15:06:11+08:00","offer":{"product":"travel_insurance",'
        b'"channel":"push"},"severity":null,"channel":"push","not_before":null,'
        b'"explanation":[{"condition":"event.channel == \\"card\\"","values":'
        b'{"event.channel":"card"},"result":true},{"condition":"event.merchant_country != null",'
        b'"values":{"event.merchant_country":"GB"},"result":true},{"condition":'
        b'"customer.home_country != null","values":{"customer.home_country":"CN"},'
        b'"result":true},{"condition":"event.merchant_country != customer.home_country",'
        b'"values":{"event.merchant_country":"GB","customer.home_country":"CN"},'
        b'"result":true},{"condition":"prior.last_foreign_card == null","values":'
        b'{"prior.last_foreign_card":null},"result":true},{"condition":'
        b'"\\"travel_insurance\\" not in customer.products","values":{"customer.products":'
        b'["current_account","wealth"]},"result":true}]}',
    ),
]


def log(message: str) -> None:
    print(f"[webhook-outage {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _n(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _mib(kb: float | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:,.1f} MiB"


def seq_of(action_id: str) -> int:
    return int(action_id[:SEQ_DIGITS], 16)


# --- the endpoint (its own process) -----------------------------------------------------------


class _Received:
    """What the endpoint accepted: per sequence number, the first arrival time and a count."""

    def __init__(self) -> None:
        self.first = array.array("d")
        self.count = array.array("I")
        self.accepted = 0  # requests answered 200 (duplicates included)
        self.unique = 0
        self.contiguous = 0  # every sequence number below this was accepted
        self.bad_signature = 0
        self.mismatched = 0  # Idempotency-Key not the body's action_id
        self.probe = 0  # actions of the sink-alone reference run (not recorded)
        self.up = False

    def accept(self, seq: int, now: float) -> None:
        if seq >= PROBE_SEQ:
            self.probe += 1
            return
        if seq >= len(self.first):
            grow = max(seq + 1 - len(self.first), 65_536)
            self.first.extend([0.0] * grow)
            self.count.extend([0] * grow)
        self.accepted += 1
        if self.count[seq] == 0:
            self.first[seq] = now
            self.unique += 1
        self.count[seq] += 1
        n = len(self.count)
        while self.contiguous < n and self.count[self.contiguous]:
            self.contiguous += 1

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "unique": self.unique,
            "contiguous": self.contiguous,
            "bad_signature": self.bad_signature,
            "mismatched": self.mismatched,
            "probe": self.probe,
            "up": self.up,
        }


async def _endpoint(hook_port: int, control_port: int, dump: Path) -> None:
    from aiohttp import web

    secret = os.environ[SECRET_ENV]
    got = _Received()
    hook_runner: web.AppRunner | None = None

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        signed = verify(
            secret,
            request.headers.get(TIMESTAMP_HEADER, ""),
            request.headers.get(SIGNATURE_HEADER, ""),
            body,
            now,
        )
        if not signed:
            got.bad_signature += 1
            return web.Response(status=401)
        key = request.headers.get("Idempotency-Key", "")
        try:
            action_id = json.loads(body)["action_id"]
        except (ValueError, KeyError, TypeError):
            action_id = None
        if action_id != key:
            got.mismatched += 1
            return web.Response(status=400)
        got.accept(seq_of(key), now)
        return web.Response(status=200)

    async def go_up() -> None:
        nonlocal hook_runner
        if hook_runner is not None:
            return
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook_port, reuse_address=True).start()
        hook_runner = runner
        got.up = True

    async def go_down() -> None:
        """Stop listening and close every connection: the client gets connection refused."""
        nonlocal hook_runner
        runner, hook_runner = hook_runner, None
        got.up = False
        if runner is not None:
            await runner.cleanup()

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(got.stats())

    async def down(_: web.Request) -> web.Response:
        await go_down()
        return web.json_response(got.stats())

    async def up(_: web.Request) -> web.Response:
        await go_up()
        return web.json_response(got.stats())

    async def write_dump(_: web.Request) -> web.Response:
        with (dump / "first.bin").open("wb") as out:
            got.first.tofile(out)
        with (dump / "count.bin").open("wb") as out:
            got.count.tofile(out)
        return web.json_response(got.stats())

    control = web.Application()
    control.router.add_get("/stats", stats)
    control.router.add_post("/down", down)
    control.router.add_post("/up", up)
    control.router.add_post("/dump", write_dump)
    control_runner = web.AppRunner(control, access_log=None, handle_signals=False)
    await control_runner.setup()
    await web.TCPSite(control_runner, "127.0.0.1", control_port).start()
    await go_up()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await go_down()
    await control_runner.cleanup()


def endpoint_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_outage endpoint")
    parser.add_argument("--hook-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--dump", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_endpoint(args.hook_port, args.control_port, args.dump))
    return 0


class EndpointProcess:
    """The endpoint process, driven over its control port."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.hook_port, self.control_port = free_ports(2)
        self.dump = tmp / "endpoint"
        self.dump.mkdir()
        self.url = f"http://127.0.0.1:{self.hook_port}/hook"
        self.log_path = tmp / "endpoint.log"
        cmd = [
            sys.executable, "-m", "bench.webhook_outage", "endpoint",
            "--hook-port", str(self.hook_port), "--control-port", str(self.control_port),
            "--dump", str(self.dump),
        ]  # fmt: skip
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if self.stats()["up"]:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"bench: the endpoint did not start:\n{self.log_path.read_text()[-2000:]}"
                )
            time.sleep(0.1)

    def _call(self, method: str, path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.control_port}{path}"
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=60) as response:
            return dict(json.loads(response.read()))

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def down(self) -> dict[str, Any]:
        return self._call("POST", "/down")

    def up(self) -> dict[str, Any]:
        return self._call("POST", "/up")

    def received(self) -> tuple[array.array[float], array.array[int]]:
        self._call("POST", "/dump")
        first, count = array.array("d"), array.array("I")
        for arr, name in ((first, "first.bin"), (count, "count.bin")):
            path = self.dump / name
            with path.open("rb") as f:
                arr.fromfile(f, path.stat().st_size // arr.itemsize)
        return first, count


def stop_process(proc: subprocess.Popen[bytes], name: str, timeout: float) -> int | None:
    """SIGTERM, wait up to `timeout` s, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop in {timeout:.0f} s after SIGTERM: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return proc.returncode


# --- the producer -----------------------------------------------------------------------------


class Feeder(threading.Thread):
    """Produces actions at a steady rate until stopped; `times[seq]` is when action `seq` was
    handed to the producer (unix seconds)."""

    def __init__(self, s: Settings, rate: float, customers: int, seed: int, warmup: str) -> None:
        super().__init__(name="feeder", daemon=True)
        self.s, self.rate, self.customers = s, rate, customers
        self.rng = random.Random(seed)
        self.salt = secrets.token_hex(16)[: 32 - SEQ_DIGITS]
        self.times = array.array("d")
        self.partition: dict[int, int] = {}  # seq -> alerts 0..3, offers 4..7
        self.offers = s.topics.offers
        self.bytes = 0
        self.failed: list[str] = []
        self.unflushed = 0
        self.stop = threading.Event()
        self.started_at = 0.0
        self.templates = [json.loads(t) for _, t in TEMPLATES]
        self.weights = [w for w, _ in TEMPLATES]
        # like the worker's output producer (aiokafka, acks=all, no compression), keyed by
        # customer id with Kafka's default partitioner
        self.producer: Producer | None = Producer(
            {
                "bootstrap.servers": s.brokers,
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "acks": "all",
                **s.kafka.librdkafka(),
            }
        )
        self.producer.produce(warmup, b"warm-up")  # connects and gets a producer id
        if self.producer.flush(60):
            raise SystemExit("bench: the warm-up record was not delivered in 60 s")

    def action(self, seq: int, now: float) -> tuple[str, bytes, bytes]:
        template = self.rng.choices(self.templates, self.weights)[0]
        customer = f"c{self.rng.randrange(self.customers):06d}"
        action = {
            **template,
            "action_id": f"{seq:0{SEQ_DIGITS}x}{self.salt}",
            "customer_id": customer,
            "event_id": f"e9-{seq:09d}",
            "emitted_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        }
        topic = self.s.topics.offers if action["kind"] == "offer" else self.s.topics.alerts
        value = json.dumps(action, separators=(",", ":"), ensure_ascii=False).encode()
        return topic, customer.encode(), value

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))
            return
        seq = seq_of(msg.value()[14:26].decode())  # after b'{"action_id":"'
        self.partition[seq] = msg.partition() + (PARTITIONS if msg.topic() == self.offers else 0)

    def run(self) -> None:
        producer = self.producer
        assert producer is not None
        self.started_at = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - self.started_at) * self.rate)
            while len(self.times) < due:
                seq = len(self.times)
                now = time.time()
                topic, key, value = self.action(seq, now)
                while True:
                    try:
                        producer.produce(topic, value, key, on_delivery=self._delivered)
                        break
                    except BufferError:
                        producer.poll(0.05)
                self.times.append(now)
                self.bytes += len(value)
            producer.poll(0)
            time.sleep(0.005)
        self.unflushed = producer.flush(30)
        self.producer = None  # (a producer left open logs errors when the broker stops)


# --- Kafka and process measurements -----------------------------------------------------------


class LagReader:
    """Each connector group's lag on the action topics: high watermark - committed offset,
    summed over the partitions (0 committed where the group has committed nothing yet)."""

    def __init__(self, s: Settings, groups: dict[str, str]) -> None:
        self.parts = [
            TopicPartition(t, p)
            for t in (s.topics.offers, s.topics.alerts)
            for p in range(PARTITIONS)
        ]
        self.readers = {
            name: Consumer(
                {"bootstrap.servers": s.brokers, "group.id": group, "enable.auto.commit": False}
            )
            for name, group in groups.items()
        }
        self.hw = next(iter(self.readers.values()))

    def highs(self) -> int:
        return sum(
            self.hw.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in self.parts
        )

    def lags(self) -> tuple[int, dict[str, int | None]]:
        """(sum of high watermarks, lag per connector); a lag is None when the broker could not
        say just then."""
        out: dict[str, int | None] = {}
        done = {name: committed(reader, self.parts) for name, reader in self.readers.items()}
        highs = {
            (tp.topic, tp.partition): self.hw.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            for tp in self.parts
        }
        for name, offsets in done.items():
            out[name] = (
                None if offsets is None else sum(highs[k] - offsets.get(k, 0) for k in highs)
            )
        return sum(highs.values()), out

    def close(self) -> None:
        for reader in self.readers.values():
            with contextlib.suppress(Exception):
                reader.close()


def topic_total(s: Settings, topic: str) -> int:
    """Records in `topic` (sum of its partitions' high watermarks)."""
    consumer = Consumer({"bootstrap.servers": s.brokers, "group.id": f"count-{os.getpid()}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def log_bytes(data_dir: Path | None, topics: Sequence[str]) -> int | None:
    """Bytes of the topics' log segments on the broker's disk (None for an external broker)."""
    if data_dir is None:
        return None
    total = 0
    for topic in topics:
        for part in data_dir.glob(f"{topic}-*"):
            total += sum(f.stat().st_size for f in part.glob("*.log"))
    return total


def others(ours: set[int]) -> set[str]:
    """`other_work`, less `flock` wrappers (one waiting for the bench lock runs nothing; the
    command it runs once it has the lock shows up on its own)."""
    return {cmd for cmd in other_work(ours) if not cmd.startswith("flock ")}


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


METRIC = re.compile(r"^(crm_delivery_\w+?)(?:_total)?\{([^}]*)\}\s+(\S+)$")


def scrape(port: int) -> dict[str, float]:
    """The deliverer's `crm_delivery_*` metrics as {"name{connector,outcome}": value}."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = METRIC.match(line)
        if match is None or match.group(1).endswith("_created"):
            continue
        labels = ",".join(v for v in re.findall(r'="([^"]*)"', match.group(2)))
        out[f"{match.group(1)}{{{labels}}}"] = float(match.group(3))
    return out


class FileTail:
    """New lines of the file connector's output; when each action was first seen there (to
    within one sample interval) and how often."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.rest = b""
        self.first: dict[int, float] = {}
        self.lines = 0
        self.duplicates = 0
        self.unreadable = 0
        self.contiguous = 0  # every sequence number below this was seen

    def read(self, now: float) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                chunk = f.read()
        except FileNotFoundError:
            return
        self.pos += len(chunk)
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        for line in lines:
            if not line:
                continue
            self.lines += 1
            try:
                seq = seq_of(json.loads(line)["action_id"])
            except (ValueError, KeyError, TypeError):
                self.unreadable += 1
                continue
            if seq in self.first:
                self.duplicates += 1
            else:
                self.first[seq] = now
        while self.contiguous in self.first:
            self.contiguous += 1


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the producer started
    phase: str
    produced: int
    rss_kb: int | None
    webhook_lag: int | None
    file_lag: int | None
    webhook_accepted: int
    file_lines: int
    cpu_s: dict[str, float | None]  # cumulative CPU seconds of the deliverer, endpoint, broker


@dataclass
class Marks:
    """Wall-clock times (unix s) of the phases and the action counts at each."""

    start: float = 0.0
    down: float = 0.0
    n_down: int = 0
    up: float = 0.0
    n_up: int = 0
    caught: float | None = None
    lag_normal: float | None = None  # webhook lag back at or under the warm-up's maximum
    tail_end: float = 0.0
    n_total: int = 0
    drained: float | None = None
    cpu: dict[str, dict[str, float | None]] = field(default_factory=dict)


def connectors_yaml(
    url: str, out_file: Path, hold_dir: Path, concurrency: int | None, batch_size: int | None
) -> str:
    webhook = f"    url: {url}\n    secret_env: {SECRET_ENV}\n"
    if concurrency is not None:
        webhook += f"    concurrency: {concurrency}\n"
    return (
        "connectors:\n"
        f"  {WEBHOOK}:\n    type: webhook\n{webhook}"
        f"  {FILE}:\n    type: file\n    path: {out_file}\n    rotate_bytes: {FILE_ROTATE_BYTES}\n"
        f"routes:\n  - to: [{WEBHOOK}, {FILE}]\n"
        f"hold_dir: {hold_dir}\nstart_from: earliest\n"
        + (f"batch_size: {batch_size}\n" if batch_size else "")
    )


def sink_alone(url: str, concurrency: int | None, batch_size: int) -> dict[str, Any]:
    """The reference: the same webhook sink (`WebhookSink`) fed directly, without Kafka or the
    deliver loop, batches of `batch_size` to the same endpoint (2 untimed, then 10 timed)."""
    from connectors.base import ListSink
    from connectors.webhook import WebhookSink

    config = WebhookConfig.model_validate(
        {
            "url": url,
            "secret_env": SECRET_ENV,
            **({"concurrency": concurrency} if concurrency else {}),
        }
    )
    dead: ListSink = ListSink()
    sink = WebhookSink(config, dead, name="reference")
    rng = random.Random(0)
    templates = [json.loads(t) for _, t in TEMPLATES]
    seq = PROBE_SEQ

    def batch() -> list[bytes]:
        nonlocal seq
        out = []
        for _ in range(batch_size):
            action = {**rng.choice(templates), "action_id": f"{seq:0{SEQ_DIGITS}x}" + "0" * 20,
                      "customer_id": f"c{rng.randrange(100_000):06d}"}  # fmt: skip
            out.append(json.dumps(action, separators=(",", ":")).encode())
            seq += 1
        return out

    try:
        for _ in range(2):
            sink.write_batch(batch())
            sink.flush()
        batches = [batch() for _ in range(10)]
        started, cpu = time.perf_counter(), time.process_time()
        for records in batches:
            sink.write_batch(records)
            sink.flush()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        sink.close()
    n = 10 * batch_size
    return {
        "actions": n,
        "seconds": round(seconds, 3),
        "actions_per_s": round(n / seconds),
        "client_cpu_share_of_one_core": round(cpu / seconds, 2),
        "dead_letters": len(dead.records),
    }


def arrival_bursts(times: Sequence[float], gap: float = 0.1) -> dict[str, float | None]:
    """How actions arrived at the endpoint in a period: bursts separated by gaps > `gap` s."""
    times = sorted(times)
    if len(times) < 2:
        return {"bursts": None, "mean_burst": None, "period_s": None, "idle_share": None}
    gaps = [b - a for a, b in itertools.pairwise(times)]
    idle = sum(g for g in gaps if g > gap)
    bursts = 1 + sum(1 for g in gaps if g > gap)
    span = times[-1] - times[0]
    return {
        "bursts": bursts,
        "mean_burst": round(len(times) / bursts, 1),
        "period_s": round(span / bursts, 3),
        "idle_share": round(idle / span, 3) if span > 0 else None,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _phase_stats(samples: list[Sample], phase: str, attr: str) -> dict[str, float | None]:
    values = [
        getattr(x, attr) for x in samples if x.phase == phase and getattr(x, attr) is not None
    ]
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook_outage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=200.0, help="actions/s (default 200)")
    parser.add_argument("--outage-s", type=float, default=600.0, help="outage (default 600)")
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--tail-s", type=float, default=30.0, help="after catching up")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--concurrency", type=int, default=None, help="the webhook's (default: its default, 8)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="the deliverer's (default: its default, 500)"
    )
    parser.add_argument("--quick", action="store_true", help="a 60 s outage; writes nothing")
    parser.add_argument(
        "--no-write", action="store_true", help="print the section; write no JSON or Markdown"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results JSON to this path"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.outage_s = 60.0
        args.no_write = True
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["endpoint"]:
        return endpoint_main(argv[1:])
    args = parse_args(argv)
    os.chdir(ROOT)
    began = time.perf_counter()
    info = machine_info()
    ours = ancestors()
    busy: set[str] = others(ours)
    if busy:
        log(f"WARNING: other work is running: {sorted(busy)}")

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="webhook-outage-")))
        kafka = bench_kafka(stack, tmp, ours)
        s = kafka.settings
        data_dir = tmp / "kafka" / "data" if kafka.broker_pid is not None else None
        os.environ[SECRET_ENV] = secrets.token_hex(32)  # for the reference sink in this process
        env = {**worker_env(s), SECRET_ENV: os.environ[SECRET_ENV]}

        endpoint = EndpointProcess(tmp, env)
        stack.callback(stop_process, endpoint.proc, "endpoint", 10)
        ours.add(endpoint.proc.pid)
        log(f"endpoint up at {endpoint.url} (pid {endpoint.proc.pid})")
        batch_size = args.batch_size or DeliveryConfig.model_fields["batch_size"].default
        reference = sink_alone(endpoint.url, args.concurrency, batch_size)
        log(
            f"reference: the webhook sink alone delivers {reference['actions_per_s']:,} "
            f"actions/s to this endpoint (batches of {batch_size}, no Kafka)"
        )

        out_file = tmp / "delivered" / "actions.jsonl"
        config = tmp / "connectors.yaml"
        config.write_text(
            connectors_yaml(
                endpoint.url, out_file, tmp / "hold", args.concurrency, args.batch_size
            ),
            "utf-8",
        )
        (metrics_port,) = free_ports(1)
        exe = Path(sys.executable).parent / "crm-triggers"
        cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "streams.cli"]
        cmd = [
            *cli, "deliver", "--connectors", str(config), "--brokers", s.brokers,
            "--app-id", s.app_id, "--metrics-port", str(metrics_port),
        ]  # fmt: skip
        deliver_log = tmp / "deliver.log"
        with deliver_log.open("wb") as out:
            deliverer = subprocess.Popen(
                cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip
        deliver_exit: dict[str, int | None] = {}
        stack.callback(
            lambda: deliver_exit.setdefault("code", stop_process(deliverer, "deliverer", 40))
        )
        ours.add(deliverer.pid)
        log(f"deliverer started (pid {deliverer.pid}): {' '.join(cmd[1:])}")

        groups = {name: f"{s.app_id}-deliver-{name}" for name in (WEBHOOK, FILE)}
        lags = LagReader(s, groups)
        stack.callback(lags.close)
        feeder = Feeder(s, args.rate, args.customers, args.seed, kafka.warmup)
        stack.callback(feeder.stop.set)
        tail = FileTail(out_file)

        pids = {"deliverer": deliverer.pid, "endpoint": endpoint.proc.pid,
                "broker": kafka.broker_pid}  # fmt: skip

        def cpu_mark() -> dict[str, float | None]:
            return {name: cpu_seconds(pid) for name, pid in pids.items()}

        marks = Marks()
        samples: list[Sample] = []
        metrics_series: list[dict[str, Any]] = []
        at_up: dict[str, Any] = {}
        feeder.start()
        marks.start = time.time()
        marks.cpu["start"] = cpu_mark()
        log(
            f"producing {args.rate:g} actions/s; warm-up {args.warmup_s:g} s, outage "
            f"{args.outage_s:g} s, then until caught up, then {args.tail_s:g} s"
        )
        phase = "warmup"
        next_sample = next_progress = next_busy = time.time()
        catchup_timeout = max(600.0, 2 * args.outage_s)
        warmup_lag_max = 0
        while True:
            now = time.time()
            if deliverer.poll() is not None:
                raise SystemExit(
                    f"bench: the deliverer exited with {deliverer.returncode}:\n"
                    + deliver_log.read_text(errors="replace")[-3000:]
                )
            stats = endpoint.stats()
            if phase == "warmup" and now >= marks.start + args.warmup_s:
                if stats["unique"] == 0 or tail.lines == 0:
                    raise SystemExit("bench: a connector delivered nothing during the warm-up")
                endpoint.down()
                marks.down, marks.n_down = time.time(), len(feeder.times)
                marks.cpu["down"] = cpu_mark()
                phase = "outage"
                log(f"endpoint DOWN after {marks.n_down:,} actions")
            elif phase == "outage" and now >= marks.down + args.outage_s:
                marks.n_up = len(feeder.times)
                highs, lag = lags.lags()
                at_up.update(
                    highs=highs,
                    lag=lag,
                    log_bytes=log_bytes(data_dir, [s.topics.offers, s.topics.alerts]),
                    endpoint=stats,
                    rss_kb=rss_kb(deliverer.pid),
                    metrics=scrape(metrics_port),
                )
                endpoint.up()
                marks.up = time.time()
                marks.cpu["up"] = cpu_mark()
                phase = "catchup"
                log(
                    f"endpoint UP after {marks.n_up:,} actions; webhook lag {_n(lag[WEBHOOK])}, "
                    f"file lag {_n(lag[FILE])}"
                )
            elif phase == "catchup" and stats["contiguous"] >= marks.n_up:
                marks.caught = now
                marks.cpu["caught"] = cpu_mark()
                phase = "tail"
                log(f"CAUGHT UP {now - marks.up:.1f} s after the endpoint came back")
            elif phase == "catchup" and now > marks.up + catchup_timeout:
                log(f"NOT caught up {catchup_timeout:.0f} s after the endpoint came back")
                marks.cpu["caught"] = cpu_mark()
                phase = "tail"
            elif phase == "tail" and now >= (marks.caught or now) + args.tail_s:
                feeder.stop.set()
                feeder.join(60)
                marks.tail_end, marks.n_total = time.time(), len(feeder.times)
                marks.cpu["tail_end"] = cpu_mark()
                phase = "drain"
                log(f"producer stopped after {marks.n_total:,} actions; waiting for the rest")
            elif phase == "drain" and (
                (stats["contiguous"] >= marks.n_total and tail.contiguous >= marks.n_total)
                or now > marks.tail_end + 120
            ):
                if stats["contiguous"] >= marks.n_total and tail.contiguous >= marks.n_total:
                    marks.drained = now
                break
            if now >= next_sample:
                next_sample += 1.0
                tail.read(now)
                _, lag = lags.lags()
                if phase == "warmup" and lag[WEBHOOK] is not None and now > marks.start + 10:
                    warmup_lag_max = max(warmup_lag_max, lag[WEBHOOK])
                if (
                    phase in ("catchup", "tail")
                    and marks.lag_normal is None
                    and lag[WEBHOOK] is not None
                    and lag[WEBHOOK] <= max(warmup_lag_max, 1)
                ):
                    marks.lag_normal = now
                samples.append(
                    Sample(
                        round(now - marks.start, 2), phase, len(feeder.times),
                        rss_kb(deliverer.pid), lag[WEBHOOK], lag[FILE], stats["unique"], tail.lines,
                        cpu_mark(),
                    )
                )  # fmt: skip
            if now >= next_progress:
                next_progress += PROGRESS_S
                last = samples[-1] if samples else None
                metrics = scrape(metrics_port)
                metrics_series.append({"t": round(now - marks.start, 1), "phase": phase, **metrics})
                log(
                    f"{phase:8} t={now - marks.start:6.0f}s produced {len(feeder.times):,} "
                    f"webhook accepted {stats['unique']:,} lag {_n(last and last.webhook_lag)} "
                    f"(circuit {'open' if metrics.get(OPEN) else 'closed'}, "
                    f"in flight {_n(metrics.get(IN_FLIGHT))}) "
                    f"| file lines {tail.lines:,} lag {_n(last and last.file_lag)} "
                    f"| deliverer RSS {_mib(last and last.rss_kb)}"
                )
            if now >= next_busy:
                next_busy += 30.0
                busy |= others(ours)
            time.sleep(TICK)

        tail.read(time.time())
        final_metrics = scrape(metrics_port)
        final_endpoint = endpoint.stats()
        rss_end = rss_kb(deliverer.pid)
        log("stopping the deliverer (SIGTERM)")
        deliver_exit["code"] = stop_process(deliverer, "deliverer", 40)
        first, count = endpoint.received()
        dead_letters = topic_total(s, s.topics.delivery_dlq)
        info["loadavg_end"] = round(os.getloadavg()[0], 2)
        deliver_text = deliver_log.read_text(errors="replace")

    results = analyse(
        args, argv, info, kafka, marks, samples, metrics_series, at_up, feeder, tail, first,
        count, final_endpoint, final_metrics, rss_end, dead_letters, deliver_exit.get("code"),
        deliver_text, busy, warmup_lag_max, cmd, reference, batch_size,
    )  # fmt: skip
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    text = section(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", "utf-8")
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        write_section(START, END, text, BEFORE)
        log(f"wrote {OUT.relative_to(ROOT)} and the webhook-outage section of BENCHMARKS.md")
    problems = results["problems"]
    for problem in problems:
        log(f"PROBLEM: {problem}")
    log(f"done in {results['total_seconds']:.0f} s")
    return 1 if problems else 0


def analyse(
    args: argparse.Namespace,
    argv: list[str],
    info: dict[str, Any],
    kafka: Any,
    marks: Marks,
    samples: list[Sample],
    metrics_series: list[dict[str, Any]],
    at_up: dict[str, Any],
    feeder: Feeder,
    tail: FileTail,
    first: array.array[float],
    count: array.array[int],
    final_endpoint: dict[str, Any],
    final_metrics: dict[str, float],
    rss_end: int | None,
    dead_letters: int,
    deliver_code: int | None,
    deliver_text: str,
    busy: set[str],
    warmup_lag_max: int,
    cmd: list[str],
    reference: dict[str, Any],
    batch_size: int,
) -> dict[str, Any]:
    produced = feeder.times
    n = marks.n_total or len(produced)
    got = [count[i] if i < len(count) else 0 for i in range(n)]
    missing_webhook = sum(1 for c in got if c == 0)
    duplicates_webhook = sum(1 for c in got if c > 1)
    extra_copies = sum(c - 1 for c in got if c > 1)
    missing_file = sum(1 for i in range(n) if i not in tail.first)

    def delays(lo: int, hi: int, arrival: Any) -> list[float]:
        out = []
        for i in range(lo, min(hi, n)):
            t = arrival(i)
            if t:
                out.append(t - produced[i])
        return out

    webhook_at = lambda i: first[i] if i < len(first) else 0.0  # noqa: E731
    file_at = lambda i: tail.first.get(i, 0.0)  # noqa: E731
    # steady state: from 10 s in (after the deliverer's start-up) to 5 s before the outage
    # (the batch in flight when the endpoint goes down waits for it)
    warm_lo, warm_hi = int(args.rate * 10), marks.n_down - int(args.rate * 5)
    d_warm = delays(warm_lo, warm_hi, webhook_at)
    d_out = delays(marks.n_down, marks.n_up, webhook_at)
    f_out = delays(marks.n_down, marks.n_up, file_at)
    f_warm = delays(warm_lo, warm_hi, file_at)
    warm_arrivals = [webhook_at(i) for i in range(warm_lo, max(warm_lo, warm_hi))]

    after_up = [first[i] for i in range(min(n, len(first))) if first[i] >= marks.up]
    first_after_up = min(after_up) if after_up else None
    catchup_s = marks.caught - marks.up if marks.caught is not None else None
    in_catchup = sum(1 for t in after_up if t <= marks.caught) if marks.caught is not None else None
    catchup_rate = in_catchup / catchup_s if in_catchup and catchup_s else None
    busy_s = (
        marks.caught - first_after_up
        if marks.caught is not None and first_after_up is not None
        else None
    )
    busy_rate = in_catchup / busy_s if in_catchup and busy_s else None
    # when each partition had delivered everything produced before the endpoint came back
    last_by_partition: dict[int, float] = {}
    for seq in range(min(marks.n_up, len(first))):
        part = feeder.partition.get(seq)
        if part is not None and first[seq]:
            last_by_partition[part] = max(last_by_partition.get(part, 0.0), first[seq])
    names = [f"{s}-{i}" for s in ("alerts", "offers") for i in range(PARTITIONS)]
    partition_caught = {
        names[part]: round(at - marks.up, 1) for part, at in sorted(last_by_partition.items())
    }
    catchup_arrivals = (
        [t for t in after_up if t <= marks.caught] if marks.caught is not None else []
    )

    def sampled_cpu(t0: float | None, t1: float | None) -> dict[str, float | None]:
        """CPU share of one core per process between two unix times (1 s samples)."""
        if t0 is None or t1 is None:
            return {}
        inside = [x for x in samples if t0 - marks.start <= x.t <= t1 - marks.start]
        if len(inside) < 2:
            return {}
        a, b = inside[0], inside[-1]
        out: dict[str, float | None] = {}
        for name, x in a.cpu_s.items():
            y = b.cpu_s.get(name)
            out[name] = round((y - x) / (b.t - a.t), 3) if x is not None and y is not None else None
        return out

    backlog = at_up.get("lag", {}).get(WEBHOOK)
    log_b, highs = at_up.get("log_bytes"), at_up.get("highs")
    per_record = log_b / highs if log_b is not None and highs else None
    outage_samples = [x for x in samples if x.phase == "outage"]
    file_during = (
        (outage_samples[-1].file_lines - outage_samples[0].file_lines) if outage_samples else None
    )

    def cpu_share(a: str, b: str) -> dict[str, float | None]:
        ca, cb = marks.cpu.get(a, {}), marks.cpu.get(b, {})
        out: dict[str, float | None] = {}
        span = {"down": marks.down, "up": marks.up, "caught": marks.caught, "start": marks.start,
                "tail_end": marks.tail_end}  # fmt: skip
        seconds = (span.get(b) or 0) - (span.get(a) or 0)
        for name in ca:
            x, y = ca.get(name), cb.get(name)
            out[name] = (
                round((y - x) / seconds, 3)
                if x is not None and y is not None and seconds > 0
                else None
            )
        return out

    rss = {
        "warmup_last_20s": _phase_stats(
            [x for x in samples if x.t >= args.warmup_s - 20], "warmup", "rss_kb"
        ),
        "outage": _phase_stats(samples, "outage", "rss_kb"),
        "catchup": _phase_stats(samples, "catchup", "rss_kb"),
        "tail": _phase_stats(samples, "tail", "rss_kb"),
        "end": rss_end,
    }
    warnings = [
        line for line in deliver_text.splitlines() if " WARNING " in line or " ERROR " in line
    ]
    webhook_m = {
        k: v
        for k, v in final_metrics.items()
        if k.endswith(f"{{{WEBHOOK}}}") or f"{{{WEBHOOK}," in k
    }
    file_m = {
        k: v for k, v in final_metrics.items() if k.endswith(f"{{{FILE}}}") or f"{{{FILE}," in k
    }
    buffered_outage = [m.get(IN_FLIGHT) for m in metrics_series if m["phase"] == "outage"]
    sizes = [len(t) for _, t in TEMPLATES]
    webhook = {name: WebhookConfig.model_fields[name].default for name in WEBHOOK_FIELDS}
    if args.concurrency:
        webhook["concurrency"] = args.concurrency

    problems = []
    if marks.caught is None:
        problems.append("the webhook did not catch up")
    if missing_webhook:
        problems.append(f"{missing_webhook:,} actions never reached the endpoint")
    if missing_file:
        problems.append(f"{missing_file:,} actions never reached the file")
    if dead_letters:
        problems.append(f"{dead_letters:,} dead letters")
    if duplicates_webhook:
        problems.append(f"{duplicates_webhook:,} actions reached the endpoint more than once")
    if tail.duplicates:
        problems.append(f"{tail.duplicates:,} actions written to the file more than once")
    if final_endpoint["bad_signature"] or final_endpoint["mismatched"]:
        problems.append(
            f"{final_endpoint['bad_signature']} bad signatures, "
            f"{final_endpoint['mismatched']} Idempotency-Key mismatches"
        )
    if feeder.failed or feeder.unflushed:
        problems.append(f"producer: {len(feeder.failed)} failed, {feeder.unflushed} unflushed")
    if deliver_code not in (0, None):
        problems.append(f"the deliverer exited with {deliver_code} on SIGTERM")

    return {
        "benchmark": "webhook_outage",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.webhook_outage", *argv]),
        "method": "one run; lag from Consumer.committed (no group join) vs high watermarks, "
        "RSS from /proc/PID/status VmRSS, both every 1 s; arrival times recorded by the "
        "endpoint (first accept per action id) and, for the file, when this script first read "
        "the line (every 1 s)",
        "machine": info,
        "kafka": {"version": kafka_version(), "where": kafka.where, "java": java_version()},
        "config": {
            "rate_per_s": args.rate,
            "warmup_s": args.warmup_s,
            "outage_s": args.outage_s,
            "tail_s": args.tail_s,
            "customers": args.customers,
            "seed": args.seed,
            "partitions_per_topic": PARTITIONS,
            "deliver_command": " ".join(["crm-triggers", *cmd[cmd.index("deliver") :]]),
            "webhook": webhook,
            "webhook_set": ["url", "secret_env", *(["concurrency"] if args.concurrency else [])],
            "file": f"rotate_bytes {FILE_ROTATE_BYTES} (no rotation), other settings default "
            "(fsync on every flush)",
            "batch_size": batch_size,
            "batch_size_set": args.batch_size is not None,
            "actions": {
                "templates": len(TEMPLATES),
                "template_bytes": sizes,
                "weights": [w for w, _ in TEMPLATES],
                "mean_value_bytes": round(feeder.bytes / max(1, len(produced)), 1),
            },
            "producer": "confluent-kafka, acks=all, idempotent, no compression, key customer_id, "
            "murmur2_random",
            "outage": "the endpoint process closes its listening socket and every connection "
            "(aiohttp AppRunner.cleanup): connection refused until it listens again",
        },
        "actions": {
            "produced": n,
            "before_outage": marks.n_down,
            "during_outage": marks.n_up - marks.n_down,
            "after_outage": n - marks.n_up,
        },
        "backlog_at_end_of_outage": {
            "webhook_lag": backlog,
            "file_lag": at_up.get("lag", {}).get(FILE),
            "endpoint_missing": marks.n_up - at_up.get("endpoint", {}).get("unique", 0),
            "log_bytes_offers_alerts": log_b,
            "records_offers_alerts": highs,
            "disk_bytes_per_record": round(per_record, 1) if per_record else None,
            "backlog_disk_bytes": round(backlog * per_record) if backlog and per_record else None,
            "disk_bytes_per_hour_of_outage": round(args.rate * 3600 * per_record)
            if per_record
            else None,
            "deliverer_metrics": {
                k: v for k, v in at_up.get("metrics", {}).items() if WEBHOOK in k
            },
        },
        "rss_kb": rss,
        "in_flight_during_outage_max": max(
            (b for b in buffered_outage if b is not None), default=None
        ),
        "catchup": {
            "caught_up": marks.caught is not None,
            "seconds": round(catchup_s, 2) if catchup_s is not None else None,
            "first_delivery_after_up_s": round(first_after_up - marks.up, 2)
            if first_after_up
            else None,
            "delivering_seconds": round(busy_s, 2) if busy_s is not None else None,
            "actions_delivered": in_catchup,
            "rate_per_s": round(catchup_rate, 1) if catchup_rate else None,
            "rate_while_delivering_per_s": round(busy_rate, 1) if busy_rate else None,
            "net_drain_per_s": round(busy_rate - args.rate, 1) if busy_rate else None,
            "implied_ms_per_request": round(1000 * webhook["concurrency"] / busy_rate, 2)
            if busy_rate
            else None,
            "lag_back_to_warmup_level_s": round(marks.lag_normal - marks.up, 2)
            if marks.lag_normal
            else None,
            "warmup_lag_max": warmup_lag_max,
            "cpu_share_of_one_core": cpu_share("up", "caught") if marks.caught else None,
            "cpu_share_while_delivering": sampled_cpu(first_after_up, marks.caught),
            "arrivals": arrival_bursts(catchup_arrivals),
            "partition_caught_up_s": partition_caught,
        },
        "cpu_share_of_one_core": {
            "warmup": cpu_share("start", "down"),
            "outage": cpu_share("down", "up"),
        },
        "reference_sink_alone": reference,
        "warmup_arrivals": arrival_bursts(warm_arrivals),
        "delay_s": {
            "webhook_warmup": {
                "p50": percentile(d_warm, 0.5),
                "p99": percentile(d_warm, 0.99),
                "max": max(d_warm, default=None),
            },
            "webhook_outage_actions": {
                "p50": percentile(d_out, 0.5),
                "p99": percentile(d_out, 0.99),
                "max": max(d_out, default=None),
                "n": len(d_out),
            },
            "file_warmup_sampled_1s": {
                "p50": percentile(f_warm, 0.5),
                "max": max(f_warm, default=None),
            },
            "file_outage_actions_sampled_1s": {
                "p50": percentile(f_out, 0.5),
                "p99": percentile(f_out, 0.99),
                "max": max(f_out, default=None),
            },
        },
        "file_during_outage": {
            "lines_written": file_during,
            "lag": _phase_stats(samples, "outage", "file_lag"),
        },
        "webhook_lag_during_outage": _phase_stats(samples, "outage", "webhook_lag"),
        "checks": {
            "dead_letters": dead_letters,
            "webhook_missing": missing_webhook,
            "webhook_duplicate_actions": duplicates_webhook,
            "webhook_extra_copies": extra_copies,
            "file_missing": missing_file,
            "file_duplicates": tail.duplicates,
            "file_unreadable": tail.unreadable,
            "endpoint": final_endpoint,
            "producer_failed": len(feeder.failed),
            "deliverer_exit_code": deliver_code,
            "drained_after_producer_stopped_s": round(marks.drained - marks.tail_end, 2)
            if marks.drained
            else None,
        },
        "deliverer_metrics_end": {"webhook": webhook_m, "file": file_m},
        "deliverer_log_warnings": {"count": len(warnings), "first": warnings[:10]},
        "other_work_seen": sorted(busy),
        "timeline_unix_s": {k: v for k, v in asdict(marks).items() if k != "cpu"},
        "cpu_seconds_marks": marks.cpu,
        "samples": [asdict(x) for x in samples],
        "metrics_every_10s": metrics_series,
        "problems": problems,
    }


def section(r: dict[str, Any]) -> str:
    c, b, k, rss = r["config"], r["backlog_at_end_of_outage"], r["catchup"], r["rss_kb"]
    d, f, ch, w = r["delay_s"], r["file_during_outage"], r["checks"], r["config"]["webhook"]
    m = r["machine"]
    ref, arr, warm_arr = r["reference_sink_alone"], k.get("arrivals") or {}, r["warmup_arrivals"]
    parts: dict[str, float] = k.get("partition_caught_up_s") or {}
    rate = c["rate_per_s"]
    before = rss["warmup_last_20s"]["median"]
    during = rss["outage"]["max"]
    catch = rss["catchup"]["max"]
    after = rss["tail"]["median"]
    mb = lambda x: "n/a" if x is None else f"{x / 1e6:,.1f} MB"  # noqa: E731
    rows = [
        ("outage (endpoint refusing connections)", f"{c['outage_s']:,.0f} s"),
        ("actions produced during the outage", _n(r["actions"]["during_outage"])),
        (
            "backlog at the end of the outage: webhook consumer-group lag (actions in Kafka)",
            _n(b["webhook_lag"]),
        ),
        (
            "Kafka disk for that backlog (log bytes per action on disk x backlog)",
            f"{mb(b['backlog_disk_bytes'])} ({_n(b['disk_bytes_per_record'])} B per action; "
            f"{mb(b['disk_bytes_per_hour_of_outage'])} per hour of outage at {rate:g}/s)",
        ),
        (
            "deliverer RSS: before (warm-up median) / max during the outage",
            f"{_mib(before)} / {_mib(during)}",
        ),
        (
            f"deliverer RSS: max during catch-up / after (median of the last {c['tail_s']:.0f} s)",
            f"{_mib(catch)} / {_mib(after)}",
        ),
        (
            "actions held in the deliverer during the outage (in-flight batch, max)",
            _n(r["in_flight_during_outage_max"]),
        ),
        (
            "endpoint back to first delivery (circuit breaker reset)",
            f"{_n(k['first_delivery_after_up_s'], 1)} s",
        ),
        (
            "**catch-up time** (endpoint back until every action produced before it was accepted)",
            f"**{_n(k['seconds'], 1)} s**" if k["caught_up"] else "**not caught up**",
        ),
        (
            "catch-up delivery rate (from the first delivery after the outage; net of new actions)",
            f"{_n(k['rate_while_delivering_per_s'])} actions/s ({_n(k['net_drain_per_s'])} net)",
        ),
        (
            "reference: the same webhook sink fed directly, no Kafka (batches of "
            f"{c['batch_size']}, same endpoint)",
            f"{_n(ref['actions_per_s'])} actions/s",
        ),
        (
            "arrivals at the endpoint during catch-up: mean burst / one burst every / endpoint "
            "idle (gaps over 0.1 s)",
            f"{_n(arr.get('mean_burst'))} actions / {_n(arr.get('period_s'), 2)} s / "
            f"{_pct(arr.get('idle_share'))}",
        ),
        (
            "arrivals in the warm-up (endpoint up, steady state): mean burst / one burst every",
            f"{_n(warm_arr.get('mean_burst'))} actions / {_n(warm_arr.get('period_s'), 2)} s",
        ),
        (
            "partitions caught up (every action produced before the endpoint came back "
            "delivered): first / last of the 8, after the endpoint came back",
            f"{_n(min(parts.values(), default=None), 1)} s / "
            f"{_n(max(parts.values(), default=None), 1)} s",
        ),
        (
            "webhook lag back to its warm-up level (max "
            f"{_n(k['warmup_lag_max'])}) after the endpoint came back",
            f"{_n(k['lag_back_to_warmup_level_s'], 1)} s",
        ),
        (
            "max / median end-to-end delay of an action produced during the outage (webhook)",
            f"{_n(d['webhook_outage_actions']['max'], 1)} s / "
            f"{_n(d['webhook_outage_actions']['p50'], 1)} s",
        ),
        (
            "webhook delay in the warm-up (p50 / p99)",
            f"{_n(_ms(d['webhook_warmup']['p50']))} ms / {_n(_ms(d['webhook_warmup']['p99']))} ms",
        ),
        (
            "file connector during the outage: actions written / max lag / max delay "
            "(sampled every 1 s)",
            f"{_n(f['lines_written'])} / {_n(f['lag']['max'])} / "
            f"{_n(d['file_outage_actions_sampled_1s']['max'], 1)} s",
        ),
        ("dead letters", _n(ch["dead_letters"])),
        (
            "webhook: actions missing / accepted more than once",
            f"{_n(ch['webhook_missing'])} / {_n(ch['webhook_duplicate_actions'])}",
        ),
        (
            "file: actions missing / written more than once",
            f"{_n(ch['file_missing'])} / {_n(ch['file_duplicates'])}",
        ),
    ]
    webhook_text = ", ".join(f"{name} {value}" for name, value in w.items())
    table = "\n".join(
        ["| measurement | value |", "|---|--:|", *(f"| {a} | {v} |" for a, v in rows)]
    )
    cpu = k.get("cpu_share_while_delivering") or {}
    catch_rate = k["rate_while_delivering_per_s"]
    meaning = []
    growth = (during - before) if during and before else None
    if growth is not None:
        meaning.append(
            (
                f"Memory stays flat: the deliverer's RSS rose by {growth / 1024:,.1f} MiB while "
                f"{_n(b['webhook_lag'])} actions piled up, because the buffer is Kafka's log, "
                "not the process: the webhook connector holds one batch (at most "
                f"{c['batch_size']} actions) and pauses its consumer meanwhile"
                + (
                    f"; it rose a further {(after - during) / 1024:,.1f} MiB during catch-up "
                    "and stayed there."
                    if after and after - during >= 2 * 1024
                    else "."
                )
            )
            if growth < 20 * 1024
            else (
                f"**Memory grew with the backlog**: the deliverer's RSS rose by "
                f"{growth / 1024:,.1f} MiB while {_n(b['webhook_lag'])} actions piled up."
            )
        )
    if k["caught_up"]:
        meaning.append(
            f"Catch-up took {_n(k['seconds'])} s after a {_duration(c['outage_s'])} outage: "
            f"{_n(k['first_delivery_after_up_s'], 1)} s until the circuit breaker let a request "
            f"through (at most `breaker_reset_s`, {w['breaker_reset_s']:g} s), then "
            f"{_n(catch_rate)} actions/s, {_n((catch_rate or 0) / rate, 1)}x the rate of new "
            "actions."
        )
    else:
        meaning.append("**The webhook connector did not catch up.**")
    deliverer_bound = (
        catch_rate is not None
        and (arr.get("idle_share") or 0) >= 0.3
        and ref["actions_per_s"] >= 2 * catch_rate
    )
    if deliverer_bound:
        meaning.append(
            "**The deliverer, not the endpoint, sets that pace**: actions arrived in bursts of "
            f"about {_n(arr['mean_burst'])} (one batch) every {_n(arr['period_s'], 2)} s with the "
            f"endpoint idle {_pct(arr['idle_share'])} of the time and the deliverer at "
            f"{_pct(cpu.get('deliverer'))} of a core, while the same webhook sink fed directly "
            f"delivers {_n(ref['actions_per_s'])} actions/s to this endpoint. Every batch pauses "
            "the connector's consumer and resumes it afterwards (streams/deliver.py); "
            "librdkafka discards prefetched records on pause and fetches again only about "
            "0.9 s after resume, so one connector moves about one batch "
            f"({c['batch_size']}) per second. That caps both catch-up and the steady rate one "
            "connector can sustain, and is why actions wait "
            f"{_n(_ms(d['webhook_warmup']['p50']))} ms (median) with the endpoint up; until it "
            "changes, a larger `batch_size` raises the cap."
        )
    elif catch_rate:
        conc = w["concurrency"]
        meaning.append(
            f"That is {conc} requests in flight (`concurrency`) at "
            f"{_n(k['implied_ms_per_request'], 1)} ms each (deliverer "
            f"{_pct(cpu.get('deliverer'))} of a core, endpoint {_pct(cpu.get('endpoint'))}): "
            "the catch-up rate is concurrency / request latency, so an endpoint that takes "
            f"50 ms per request drains at about {conc / 0.05:,.0f} actions/s with these "
            "settings."
        )
    worst = d["webhook_outage_actions"]["max"]
    in_order = c["outage_s"] + (k["first_delivery_after_up_s"] or 0)
    if parts and k["seconds"] and worst and worst > in_order + 0.25 * k["seconds"]:
        meaning.append(
            "The backlog is not drained oldest first: the partitions caught up one after "
            f"another, the first {_n(min(parts.values()))} s and the last "
            f"{_n(max(parts.values()))} s after the endpoint came back, so the worst-placed "
            f"actions of the outage waited {_n(worst)} s, not the outage plus the breaker's "
            f"wait ({_n(in_order)} s)."
        )
    clean = not (ch["dead_letters"] or ch["webhook_missing"] or ch["webhook_duplicate_actions"])
    meaning.append(
        f"The other connector kept going: the file connector wrote {_n(f['lines_written'])} "
        f"actions during the outage, at most {_n(f['lag']['max'])} behind. "
        + (
            "Nothing was dead-lettered, lost or delivered twice."
            if clean
            else f"**Dead letters: {_n(ch['dead_letters'])}, actions lost: "
            f"{_n(ch['webhook_missing'])}, delivered twice: "
            f"{_n(ch['webhook_duplicate_actions'])}.**"
        )
    )
    meaning.append(
        "Retention of the offers and alerts topics must exceed the longest outage plus its "
        "catch-up (the broker default is 7 days), or undelivered actions are deleted; the disk "
        f"that takes is about {mb(b['disk_bytes_per_hour_of_outage'])} per hour of outage at "
        f"{rate:g} actions/s ({_n(b['disk_bytes_per_record'])} B per action in the log here)."
    )
    busy = r["other_work_seen"]
    load = (
        f"1-minute load average {m['loadavg_start']:.2f} at start, {m['loadavg_end']:.2f} at end"
        + (
            f"; **other work ran during the measurement** ({len(busy)} processes, listed in "
            "the JSON)."
            if busy
            else "; no other test, benchmark, broker or worker process ran."
        )
    )
    return "\n".join([
        START,
        "## Webhook outage",
        "",
        f"What a {_duration(c['outage_s'])} webhook outage costs `crm-triggers deliver`: one "
        "deliverer (`crm-triggers deliver --connectors FILE --brokers ... --app-id ...`) with "
        f"two connectors taking every action: `{WEBHOOK}`, a webhook ({webhook_text}; set in "
        f"the file: {', '.join(c['webhook_set'])}, the rest default), and `{FILE}`, a JSON "
        f"Lines file; batch size {c['batch_size']}"
        + ("" if c["batch_size_set"] else " (the default)")
        + ". Actions "
        "(real `crm-triggers "
        f"replay` actions with fresh ids, {c['customers']:,} customers, "
        f"{c['actions']['mean_value_bytes']:,.0f} B on average) are produced at {rate:g}/s to "
        f"the offers and alerts topics ({c['partitions_per_topic']} partitions each, "
        f"{c['producer']}) for the whole run: {c['warmup_s']:g} s with the endpoint up, "
        f"{c['outage_s']:g} s down ({c['outage']}), up again until every action produced "
        f"before it came back was accepted, then {c['tail_s']:g} s more. The endpoint is an "
        "aiohttp server in its own process that checks each request's signature "
        "(`connectors.webhook.verify`) and records when it first accepted each action id. "
        f"Apache Kafka {r['kafka']['version']} ({r['kafka']['where']}).",
        "",
        table,
        "",
        "Lag is the consumer group's committed offsets against the high watermarks, summed over "
        "the 8 partitions, and the deliverer's RSS is /proc VmRSS, both sampled every second; "
        "delays run from handing the action to the producer to its first acceptance by the "
        "endpoint (for the file: to when the script first read its line, read every second). "
        + load,
        "",
        " ".join(meaning),
        "",
        *kafka_footer(r),
        END,
    ])  # fmt: skip


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g}-minute" if seconds % 60 == 0 else f"{seconds:g}-second"


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


if __name__ == "__main__":
    sys.exit(main())
