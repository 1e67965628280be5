"""A hostile mix on the worker's input topics, on a real broker.

About 200 valid simulated events, some sent twice (a resend of the same event), among
garbage: random bytes, empty messages, tombstones (no value), messages without a key,
values of 700 KB to 900 KB, NaN and 1e400, wrong types, missing fields, 100,000 levels of
nesting, invalid UTF-8, a BOM. The worker must stay up; every garbage message must reach
`crm.dlq` once, saying where it was (topic/partition@offset, with the original bytes unless
the letter itself would be too large for Kafka); the decisions and actions must be exactly
those `replay` gives for the valid events without the resends; no action_id may come twice;
and the worker's own counters must add up: events in = processed + duplicates + dead letters.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import socket
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgspec
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from rules.ruleset import load_rules
from state.store import MemoryStore, StateCache
from streams.engine import Engine, Record
from streams.settings import Settings
from streams.simulate import simulate
from tests.integration import test_worker
from tests.integration.test_worker import PACKS, _decision_key, collect

# the fixtures of the worker tests: a fresh app id and topics, and a worker process
settings = test_worker.settings
start_worker = test_worker.start_worker

KB = 1 << 10


@dataclass
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    kind: str  # valid | resend | garbage
    where: tuple[str, int, int] | None = None  # (topic, partition, offset) once delivered


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def garbage(rng: random.Random, s: Settings, base: dict[str, Any]) -> list[Message]:
    """Every kind of bad input, some keyed like `base` (a valid event of the stream, whose
    event_id they reuse), some with no key or a random one."""
    topics = {v: k for k, v in s.topics.inputs().items()}  # type -> topic
    topic = topics[base["type"]]
    key = base["customer_id"].encode()
    ts = base["ts"]
    enc = msgspec.json.encode

    def doc(**change: Any) -> bytes:
        return enc({k: v for k, v in {**base, **change}.items() if v is not None})

    def with_raw(field: str, raw: bytes) -> bytes:
        return doc()[:-1] + b',"' + field.encode() + b'":' + raw + b"}"

    bad = [
        (rng.randbytes(rng.randint(1, 200)), key),
        (b"", key),
        (None, key),  # a tombstone: no value at all
        (b"   ", None),  # no key
        (b"null", None),
        (b"[1, 2, 3]", b"?"),
        (b'{"type": "transaction"}', key),
        (doc(customer_id=None), key),  # missing customer_id
        (doc(event_id=None), key),
        (doc(ts=ts[:19]), key),  # no offset
        (doc(ts="10000-01-01T00:00:00Z"), key),
        (doc(customer_id=12345), key),
        (doc(event_id=["x"]), key),
        (doc(type="wire_transfer"), key),
        (doc(lat=95.0) if base["type"] != "profile" else doc(consent={"marketing": "yes"}), key),
        (with_raw("amount" if base["type"] == "transaction" else "x", b"NaN"), key),
        (with_raw("amount" if base["type"] == "transaction" else "lat", b"1e400"), key),
        (with_raw("memo", b"[" * 100_000 + b"]" * 100_000), key),
        (doc(customer_id="@@").replace(b"@@", b"\xff\xfe"), key),  # invalid UTF-8
        (b"\xef\xbb\xbf" + doc(), key),  # a BOM
        (doc()[: len(doc()) // 2], None),  # cut in half
        (doc(event_id="e" * 700_000), key),  # a 700 KB event id
        (doc(customer_id=None, memo="m" * 900_000), key),  # 900 KB, no customer
        (rng.randbytes(700_000), None),  # 700 KB of binary: 933 KB of base64 in its letter
        # too large for Kafka once in a dead letter: 1.07 MB of base64; 1.8 MB of JSON
        (rng.randbytes(800_000), key),
        (doc(customer_id=None)[:-1] + b',"memo":"' + b'\\"' * 450_000 + b'"}', key),
    ]
    if base["type"] == "transaction":
        bad.append((doc(amount=-(base["amount"] + 1)), key))  # a negative amount
    messages = []
    for value, k in bad:
        where = topic if k is not None else rng.choice(list(topics.values()))
        messages.append(Message(where, k, value, "garbage"))
    return messages


def plan(s: Settings, seed: int = 7) -> tuple[list[Message], list[bytes]]:
    """The messages in the order they are produced, and the valid events, in order."""
    rng = random.Random(seed)
    events = list(simulate(customers=8, days=10, seed=seed, anomaly_rate=1.0))
    valid = [msgspec.json.encode(e) for e in events]
    topics = {v: k for k, v in s.topics.inputs().items()}  # type -> topic
    # garbage in a few clumps (each clump a full set) and single pieces between the events
    clumps = {rng.randrange(len(events)) for _ in range(2)}
    resend: dict[int, list[int]] = {}
    for i in rng.sample(range(len(events)), 20):
        resend.setdefault(i + rng.randint(1, 15), []).append(i)
    out: list[Message] = []
    for i, (event, raw) in enumerate(zip(events, valid, strict=True)):
        if i in clumps:
            out += garbage(rng, s, event)
        elif rng.random() < 0.08:
            out.append(rng.choice(garbage(rng, s, event)[:21]))  # the small ones
        for j in resend.get(i, []):
            e = events[j]
            out.append(Message(topics[e["type"]], e["customer_id"].encode(), valid[j], "resend"))
        out.append(Message(topics[event["type"]], event["customer_id"].encode(), raw, "valid"))
    return out, valid


def produce_all(s: Settings, messages: list[Message]) -> None:
    """Produce in order (one producer, idempotent, murmur2 as the worker's partitioner) and
    record where each message went."""
    producer = Producer(
        {
            "bootstrap.servers": s.brokers,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": 1_000_000,
        }
    )

    def delivered(message: Message) -> Any:
        def report(err: Any, msg: Any) -> None:
            assert err is None, err
            message.where = (msg.topic(), msg.partition(), msg.offset())

        return report

    for message in messages:
        producer.produce(
            message.topic, key=message.key, value=message.value, on_delivery=delivered(message)
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert all(m.where is not None for m in messages)


def replay_outputs(valid: list[bytes]) -> tuple[set[tuple[Any, ...]], set[str]]:
    engine = Engine(load_rules([PACKS]), StateCache(MemoryStore()))
    out = engine.process([Record(raw) for raw in valid])
    assert out.processed == len(valid) and not out.dead_letters
    actions = {json.loads(a)["action_id"] for a in out.actions}
    return {_decision_key(json.loads(d)) for d in out.decisions}, actions


def event_counts(port: int) -> Counter[str]:
    """The worker's crm_events_total by outcome."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "crm_events":
            for sample in family.samples:
                if sample.name == "crm_events_total":
                    counts[sample.labels["outcome"]] += int(sample.value)
    return counts


def test_a_hostile_mix_is_dead_lettered_one_by_one_and_changes_no_decision(
    settings: Settings, start_worker: Any
) -> None:
    messages, valid = plan(settings)
    kinds = Counter(m.kind for m in messages)
    assert 180 <= kinds["valid"] <= 260 and kinds["resend"] == 20 and kinds["garbage"] >= 50
    want, actions = replay_outputs(valid)
    assert len(want) > 10

    produce_all(settings, messages)
    settings.web_port = free_port()
    worker = start_worker()
    got = collect(settings, want, timeout=90)
    deadline = time.monotonic() + 30
    counts: Counter[str] = Counter()
    while time.monotonic() < deadline:  # the counters are updated before outputs are sent
        with contextlib.suppress(OSError):  # not serving yet
            counts = event_counts(settings.web_port)
        if counts.total() >= len(messages):
            break
        time.sleep(0.5)

    # still up, and every input accounted for by the worker's own counters
    assert worker.poll() is None, "the worker died"
    assert counts == Counter(
        processed=kinds["valid"], duplicate=kinds["resend"], dead_letter=kinds["garbage"]
    ), counts

    # decisions and actions: replay's for the valid events, each once
    decisions = [_decision_key(d) for d in got["decisions"]]
    assert set(decisions) == want, (sorted(want - set(decisions)), sorted(set(decisions) - want))
    assert len(decisions) == len(set(decisions)), "a decision twice"
    ids = [a["action_id"] for a in got["offers"] + got["alerts"]]
    assert sorted(ids) == sorted(actions), "an action missing, extra or twice"

    # every garbage message once in the dead-letter topic, with its origin and its bytes
    letters = {}
    for letter in got["dlq"]:
        where = (letter["topic"], letter["partition"], letter["offset"])
        assert where not in letters, f"two dead letters for {where}"
        assert letter["origin"] == "{}/{}@{}".format(*where)
        letters[where] = letter
    bad = {m.where: m for m in messages if m.kind == "garbage"}
    assert set(letters) == set(bad), set(letters) ^ set(bad)
    for where, letter in letters.items():
        original = bad[where].value or b""
        if letter["reason"] == "output_too_large":  # a letter with the bytes would not fit
            assert len(original) > 600 * KB and letter["size"] > letter["limit"]
            continue
        assert letter["reason"] in ("malformed_json", "invalid_event"), letter["reason"]
        if letter.get("raw_base64"):
            assert base64.b64decode(letter["raw_base64"]) == original
        else:
            assert letter["raw"].encode() == original
    too_large = [w for w, d in letters.items() if d["reason"] == "output_too_large"]
    assert len(too_large) == 2 * len([m for m in messages if len(m.value or b"") == 800_000])
