"""Hostile streams through the embedded engine with the shipped packs.

A simulated bank's events (plus valid but extreme events: years 1970 and 2199, 1 MB unknown
fields, amounts of 0 and 1e308, odd time zones) are mixed with garbage (random bytes,
missing or mistyped fields, NaN, 1e400, 10,000 levels of nesting, invalid UTF-8, negative
amounts, ...) and with duplicates (the same event sent again, a retry with the same
event_id and another payload, a Kafka redelivery), and run in random batches.

What must hold, whatever the mix:
- nothing raises;
- the engine's own counts add up: events = processed + duplicates + dead letters
  (`BatchOutput.events`, `.processed`, `.duplicates`, `len(.dead_letters)`: a dropped
  duplicate is counted as a duplicate, not as processed); every garbage record is one dead
  letter with its origin and its original bytes, every duplicate one duplicate;
- the actions and decisions are exactly those of the same stream with the garbage and the
  duplicates taken out, in the same order, and the customers' states end the same: garbage
  and duplicates leave no trace;
- no action_id appears twice, and no rule fires twice for one event.
"""

from __future__ import annotations

import base64
import json
import random
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.ruleset import RuleSet, load_rules
from state.model import decode_state, encode_state
from state.store import MemoryStore, StateCache
from streams.engine import BatchOutput, Engine, Record
from streams.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "rules" / "packs"
KB: Final = 1 << 10
MB: Final = 1 << 20
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def rules() -> RuleSet:
    return load_rules([PACKS])


@cache
def bank(seed: int) -> tuple[dict[str, Any], ...]:
    """A small simulated bank, every kind of anomaly switched on so that rules fire."""
    return tuple(simulate(customers=5, days=20, seed=seed, anomaly_rate=1.0))


def encode(doc: dict[str, Any]) -> bytes:
    return msgspec.json.encode(doc)


# --- valid events that are extreme, for both streams --------------------------------------

EXTREME_TS: Final = [  # the edges of the contract's 1970..2199 (UTC)
    "1970-01-01T00:00:00Z",
    "1970-01-01T14:00:00+14:00",
    "2199-12-31T23:59:59.999999Z",
    "2199-12-31T11:59:59-12:00",
    "1970-01-01T00:00:00.000001-00:30",
]
ZONES: Final = ["Pacific/Kiritimati", "Pacific/Pago_Pago", "America/St_Johns", "Asia/Kathmandu"]


@st.composite
def extreme_event(draw: st.DrawFn, n: int, customers: list[str]) -> bytes:
    """A valid event that is odd in one way or another: a fresh event_id, a new customer
    or one of the bank's."""
    cid = draw(st.sampled_from([*customers, f"odd-{n}", "x" * 128]))
    ts = draw(st.sampled_from([*EXTREME_TS, "2026-10-05T12:00:00+08:00"]))
    base = {"event_id": f"odd-{n}", "customer_id": cid, "ts": ts}
    kind = draw(st.sampled_from(["transaction", "interaction", "profile"]))
    if kind == "transaction":
        doc = {
            **base,
            "type": kind,
            "amount": draw(st.sampled_from([0.0, -0.0, 1e308, 5e-324, 49_999.99, 250_000.0])),
            "direction": draw(st.sampled_from(["credit", "debit"])),
            "channel": draw(st.sampled_from(["card", "transfer", "atm"])),
            "lat": draw(st.sampled_from([90.0, -90.0, 0.0])),
            "lon": draw(st.sampled_from([180.0, -180.0, 0.0])),
            "merchant_country": draw(st.sampled_from(["CN", "ZZ", "US"])),
            "device_id": draw(st.sampled_from(["d" * 256, "dev-1", ""])),
            "counterparty_id": draw(st.sampled_from(["p" * 256, "p1"])),
            "tags": draw(st.sampled_from([["payroll"], ["cash"] * 32, ["x" * 256]])),
        }
    elif kind == "interaction":
        doc = {
            **base,
            "type": kind,
            "channel": "app",
            "action": draw(st.sampled_from(["login", "a" * 64, "offer_accepted"])),
            "device_id": draw(st.sampled_from(["d" * 256, "new-device"])),
        }
    else:
        doc = {
            **base,
            "type": kind,
            "timezone": draw(st.sampled_from(ZONES)),
            "consent": {"marketing": draw(st.booleans())},
            "products": ["p" * 256] * 64,
            # `delinquent` is a declared profile field of the marketing pack: it is stored
            # and read (`customer.delinquent != true`) whatever JSON it holds
            "delinquent": draw(
                st.sampled_from([True, None, [[[[[]]]]], json.loads("[" * 64 + "]" * 64)])
            ),
        }
    unknown = draw(st.sampled_from([None, "big", "deep"]))
    if unknown == "big":
        doc["memo"] = "m" * draw(st.sampled_from([KB, 256 * KB, MB - 2 * KB]))
    elif unknown == "deep":
        doc["memo"] = json.loads("[" * 60 + "]" * 60)
    return encode(doc)


# --- garbage: records that are not valid events, by construction ------------------------

NOT_EVENTS: Final = [b"", b" ", b"\n", b"null", b"42", b'"event"', b"[]", b"{}", b"[{}]"]


def nested(depth: int, kind: str = "[") -> bytes:
    if kind == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def with_field(doc: dict[str, Any], key: str, raw_value: bytes) -> bytes:
    """`doc` as JSON with `key` set to the raw JSON text `raw_value` (added last)."""
    rest = encode({k: v for k, v in doc.items() if k != key})
    head = rest[:-1] + (b"," if len(rest) > 2 else b"")
    return head + encode(key) + b":" + raw_value + b"}"


@st.composite
def garbage(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """A record that must be dead-lettered. Many are a valid event of the stream (same
    event_id and customer) made invalid in one way: they must not use up its event_id."""
    kind = base["type"]
    how = draw(
        st.sampled_from(
            [
                "bytes",
                "not_event",
                "drop",
                "wrong_type",
                "bad_ts",
                "nan",
                "overflow",
                "negative",
                "deep",
                "huge_id",
                "bad_utf8",
                "bom",
                "truncated",
                "bad_enum",
                "unknown_type",
            ]
        )
    )
    if how == "bytes":
        data = draw(st.binary(min_size=1, max_size=300))
        return data if not data.lstrip().startswith(b"{") else b"\x00" + data
    if how == "not_event":
        return draw(st.sampled_from(NOT_EVENTS))
    if how == "drop":
        key = draw(st.sampled_from(["customer_id", "event_id", "ts", "type"]))
        return encode({k: v for k, v in base.items() if k != key})
    if how == "wrong_type":
        key = draw(st.sampled_from(["customer_id", "event_id", "ts"]))
        value = draw(st.sampled_from([b"7", b"null", b"true", b"[]", b'{"x":1}', b'""', b"1.5"]))
        return with_field(base, key, value)
    if how == "bad_ts":
        ts = draw(
            st.sampled_from(
                [
                    base["ts"][:19],  # no offset
                    "10000-01-01T00:00:00Z",
                    "2026-13-01T00:00:00Z",
                    "2026-10-05T25:00:00+08:00",
                    "2026-10-05T10:00:00+24:00",
                    "yesterday",
                    "",
                ]
            )
        )
        return encode({**base, "ts": ts})
    if how == "nan":
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))
        key = draw(st.sampled_from(["amount", "lat", "memo"]))
        return with_field(base, key, literal)
    if how == "overflow":
        key = {"transaction": "amount", "interaction": "lat", "profile": "score"}[kind]
        return with_field(base, key, draw(st.sampled_from([b"1e400", b"-1e400", b"1" * 400])))
    if how == "negative":
        if kind == "interaction":
            return encode({**base, "lat": -90.5})
        if kind == "profile":
            return encode({**base, "consent": {"marketing": -1}})
        amount = draw(st.sampled_from([-0.01, -1.0, -1e308, -250_000.0]))
        return encode({**base, "amount": amount})
    if how == "deep":
        if draw(st.booleans()):
            depth = draw(st.sampled_from([10_000, 100_000]))
            return nested(depth, draw(st.sampled_from(["[", "{"])))
        # A profile keeps an unknown field such as `memo`: 64 levels at most. Other events
        # skip it, unread, unless it is too deep to follow at all.
        depths = [65, 900, 10_000] if kind == "profile" else [10_000, 100_000]
        return with_field(base, "memo", nested(draw(st.sampled_from(depths))))
    if how == "huge_id":
        key = draw(st.sampled_from(["event_id", "customer_id"]))
        size = draw(st.sampled_from([129, 4 * KB, MB - 4 * KB]))
        return encode({**base, key: "h" * size})
    if how == "bad_utf8":
        junk = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe9t\xe9"]))
        return encode({**base, "customer_id": "@@"}).replace(b"@@", junk)
    if how == "bom":
        return b"\xef\xbb\xbf" + encode(base)
    if how == "truncated":
        raw = encode(base)
        return raw[: draw(st.integers(1, len(raw) - 1))]
    if how == "bad_enum":
        key, value = {
            "transaction": ("direction", "sideways"),
            "interaction": ("channel", "fax"),
            "profile": ("timezone", "Mars/Olympus_Mons"),
        }[kind]
        return encode({**base, key: value})
    return encode({**base, "type": draw(st.sampled_from(["transfer", "", "PROFILE"]))})


# --- duplicates -----------------------------------------------------------------------------


def retry(raw: bytes, variant: str) -> bytes:
    """The same event (event_id, customer, type) sent again with another payload."""
    doc = json.loads(raw)
    if variant == "reordered":
        return json.dumps(dict(reversed(list(doc.items()))), indent=1).encode()
    if variant == "changed" and doc["type"] == "transaction":
        doc["amount"] = doc["amount"] / 2 + 1
    elif variant == "changed" and doc["type"] == "profile":
        doc["consent"] = {"marketing": not (doc.get("consent") or {}).get("marketing")}
    else:
        doc["device_id"] = "another-device"
    return encode(doc)


# --- streams --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One input record of a stream: its label (the same in both runs), bytes, what it is,
    and its Kafka position when the run is a Kafka-like one."""

    label: str
    value: bytes
    kind: str  # valid | garbage | duplicate | redelivery
    source: str | None = None
    offset: int = -1

    def record(self, kafka: bool) -> Record:
        if kafka:
            return Record(self.value, self.label, self.source, self.offset)
        return Record(self.value, self.label)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Item], list[Item], bool]:
    """(the clean stream, the hostile one, whether records carry Kafka positions)."""
    events = bank(draw(st.integers(0, 5)))
    customers = sorted({e["customer_id"] for e in events})
    valid = [encode(e) for e in events]
    for n in range(draw(st.integers(0, 12))):  # extreme but valid events, in both streams
        at = draw(st.integers(0, len(valid)))
        valid.insert(at, draw(extreme_event(n, customers)))
    kafka = draw(st.booleans())
    # What goes just before valid[i]: ("garbage", bytes), or (variant, j) for a duplicate of
    # valid[j] (j < i, at most 31 valid events after it)
    before: dict[int, list[tuple[str, Any]]] = {}
    for _ in range(draw(st.integers(0, 40))):
        i = draw(st.integers(0, len(valid)))
        base = json.loads(valid[min(i, len(valid) - 1)])
        before.setdefault(i, []).append(("garbage", draw(garbage(base))))
    kinds = ["exact", "reordered", "changed", "other_device"] + (["redelivery"] if kafka else [])
    for _ in range(draw(st.integers(0, 30))):
        i = draw(st.integers(0, len(valid) - 1))
        lag = draw(st.integers(1, 31))  # the state remembers a customer's last 32 event ids
        before.setdefault(i + lag, []).append((draw(st.sampled_from(kinds)), i))
    positions: dict[str, tuple[str, int]] = {}
    offsets: Counter[str] = Counter()

    def place(raw: bytes) -> tuple[str, int]:
        try:
            doc = json.loads(raw)
            topic, key = doc["type"], str(doc["customer_id"])
        except (ValueError, KeyError, TypeError, RecursionError):
            topic, key = "transaction", repr(raw[:20])
        source = f"crm.{topic}/{zlib.crc32(key.encode(errors='surrogatepass')) % 4}"
        offsets[source] += 1
        return source, offsets[source]

    clean: list[Item] = []
    hostile: list[Item] = []
    for i in range(len(valid) + 1):
        for n, (what, arg) in enumerate(before.get(i, [])):
            label = f"before-{i}-{n}"
            if what == "garbage":
                hostile.append(Item(label, arg, "garbage", *place(arg)))
            elif what == "redelivery":  # the very record again: same partition and offset
                source, offset = positions[f"v{arg}"]
                hostile.append(Item(label, valid[arg], "redelivery", source, offset))
            else:
                value = valid[arg] if what == "exact" else retry(valid[arg], what)
                hostile.append(Item(label, value, "duplicate", *place(value)))
        if i < len(valid):
            item = Item(f"v{i}", valid[i], "valid", *place(valid[i]))
            positions[item.label] = (item.source or "", item.offset)
            clean.append(item)
            hostile.append(item)
    return clean, hostile, kafka


@dataclass
class Run:
    outputs: list[BatchOutput]
    engine: Engine

    def total(self, name: str) -> int:
        return sum(getattr(o, name) for o in self.outputs)

    def listed(self, name: str) -> list[Any]:
        return [msgspec.json.decode(x) for o in self.outputs for x in getattr(o, name)]

    def states(self) -> dict[str, Any]:
        """Every customer's state as stored, without the Kafka offsets it remembers (the
        runs number their records differently)."""
        self.engine.states.flush()
        store = self.engine.states.store
        assert isinstance(store, MemoryStore)
        out = {}
        for cid, raw in store.data.items():
            state = decode_state(raw)
            state.offsets = {}
            out[cid] = encode_state(state)
        return out


def run(items: list[Item], kafka: bool, batches: list[int]) -> Run:
    engine = Engine(rules(), StateCache(MemoryStore()))
    records = [item.record(kafka) for item in items]
    outputs, at = [], 0
    sizes = iter(batches)
    while at < len(records):
        size = next(sizes, len(records))
        outputs.append(engine.process(records[at : at + size], flush=size % 2 == 0))
        at += size
    return Run(outputs, engine)


@FUZZ
@given(data=streams(), batching=st.lists(st.integers(1, 400), max_size=6))
def test_garbage_and_duplicates_change_nothing_and_every_record_is_accounted_for(
    data: tuple[list[Item], list[Item], bool], batching: list[int]
) -> None:
    clean, hostile, kafka = data
    expected = run(clean, kafka, [])
    got = run(hostile, kafka, batching)
    kinds = Counter(item.kind for item in hostile)
    by_label = {item.label: item for item in hostile}

    # the clean stream is what it should be: every record decodes (extreme events included)
    clean_letters = expected.listed("dead_letters")
    assert {d["reason"] for d in clean_letters} <= {"processing_error"}, clean_letters[:3]
    assert expected.total("duplicates") == 0

    # every record is processed, dropped as a duplicate or dead-lettered, and only once
    events = got.total("events")
    processed, duplicates = got.total("processed"), got.total("duplicates")
    letters = got.listed("dead_letters")
    assert events == len(hostile)
    assert events == processed + duplicates + len(letters)
    assert processed == expected.total("processed") == kinds["valid"] - len(clean_letters)
    assert duplicates == kinds["duplicate"] + kinds["redelivery"]
    garbage = sorted(i.label for i in hostile if i.kind == "garbage")
    failed = sorted(d["origin"] for d in clean_letters)
    assert sorted(d["origin"] for d in letters) == sorted(garbage + failed)
    for letter in letters:
        item = by_label[letter["origin"]]
        original = letter["raw"].encode() if letter["raw"] is not None else None
        if original is None:
            original = base64.b64decode(letter["raw_base64"])
        assert original == item.value
        if item.kind == "garbage":
            assert letter["reason"] in ("malformed_json", "invalid_event")
            assert 0 < len(letter["error"]) < 1000
        if kafka:
            assert item.source is not None
            topic, _, partition = item.source.rpartition("/")
            where = (letter["topic"], letter["partition"], letter["offset"])
            assert where == (topic, int(partition), item.offset)

    # the same actions and decisions as without the garbage and the duplicates
    actions, decisions = got.listed("actions"), got.listed("decisions")
    assert decisions == expected.listed("decisions")
    assert actions == expected.listed("actions")
    ids = [a["action_id"] for a in actions]
    assert len(ids) == len(set(ids)), "an action_id twice"
    fired = [(d["event_id"], d["pack"], d["rule_id"]) for d in decisions]
    assert len(fired) == len(set(fired)), "a rule fired twice for one event"
    assert got.states() == expected.states(), "garbage or a duplicate changed a state"


def test_the_fuzzed_streams_are_hostile_enough() -> None:
    """The strategy really produces every kind of record, and the bank makes rules fire."""
    seen: Counter[str] = Counter()
    decisions = 0

    @settings(max_examples=40, deadline=None, database=None)
    @given(data=streams())
    def sample(data: tuple[list[Item], list[Item], bool]) -> None:
        nonlocal decisions
        clean, hostile, _kafka = data
        seen.update(item.kind for item in hostile)
        seen[f"kafka={data[2]}"] += 1
        decisions += sum(len(o.decisions) for o in run(clean, False, []).outputs)

    sample()
    for kind in ("valid", "garbage", "duplicate", "redelivery", "kafka=True", "kafka=False"):
        assert seen[kind] > 0, (kind, seen)
    assert decisions > 40


def test_a_garbage_copy_sent_before_an_event_does_not_use_up_its_event_id() -> None:
    """Targeted: the invalid copy comes first, the valid one must still fire."""
    events = [encode(e) for e in bank(0)]
    clean = [Item(f"v{i}", raw, "valid") for i, raw in enumerate(events)]
    rng = random.Random(4)
    hostile: list[Item] = []
    for item in clean:
        doc = json.loads(item.value)
        hostile.append(Item("g-" + item.label, encode({**doc, "ts": doc["ts"][:19]}), "garbage"))
        if rng.random() < 0.5:
            hostile.append(Item("t-" + item.label, item.value[:-1], "garbage"))
        hostile.append(item)
    expected, got = run(clean, False, []), run(hostile, False, [7, 100])
    assert expected.listed("decisions")
    assert got.listed("decisions") == expected.listed("decisions")
    assert got.total("processed") == len(clean)
    assert len(got.listed("dead_letters")) == len(hostile) - len(clean)


def test_poison_values_in_a_kept_profile_field_are_dead_letters_not_a_crash() -> None:
    """`delinquent` is a profile field the marketing pack reads, so the state keeps it:
    a value the state cannot store (an integer past 64 bits, deep nesting) used to make
    `Engine.process` raise when it wrote the state back, for that batch and every later one."""
    head = b'{"type":"profile","event_id":"p%d","customer_id":"c1","ts":"2026-10-01T00:00:00Z",'
    poison = [
        b'"delinquent":' + str(2**64).encode() + b"}",
        b'"delinquent":[' + str(-(2**63) - 1).encode() + b"]}",
        b'"delinquent":' + nested(900) + b"}",
        b'"delinquent":' + nested(MB // 4, "{") + b"}",
    ]
    fine = b'"delinquent":[' + str(2**64 - 1).encode() + b"]}"
    records = [Record(head % n + tail, f"r{n}") for n, tail in enumerate([*poison, fine])]
    engine = Engine(rules(), StateCache(MemoryStore()))
    for _ in range(2):  # and the next batch too
        out = engine.process(records)
        assert len(out.dead_letters) + out.processed + out.duplicates == len(records)
        letters = [msgspec.json.decode(d) for d in out.dead_letters]
        assert [d["origin"] for d in letters] == [f"r{n}" for n in range(len(poison))]
        assert {d["reason"] for d in letters} == {"invalid_event"}
    stored = decode_state(engine.states.store.get("c1") or b"")
    assert stored.profile["delinquent"] == [2**64 - 1]
