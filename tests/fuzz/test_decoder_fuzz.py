"""Hostile input against `decode_event`: the only outcomes are a valid event or InvalidEvent.

Random bytes, near-valid events with one field made hostile (wrong types, 1 MB strings,
10,000 levels of nesting, NaN/Infinity/1e400, negative amounts, timestamps in year 1 or 9999,
without an offset or out of range, a missing customer_id, invalid UTF-8, a BOM, duplicate
keys), and valid events built field by field, which must decode and round-trip through
`encode_event`. An InvalidEvent's reason is short and never echoes the hostile value.
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.events import (
    MAX_NESTING,
    PROFILE_FIELDS,
    Event,
    InteractionEvent,
    InvalidEvent,
    ProfileEvent,
    TransactionEvent,
    decode_event,
    encode_event,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MARKER: Final = "Zq7Hostile"  # the hostile value is built of this: a reason must not echo it
MB: Final = 1 << 20
COMMON: Final = ("type", "event_id", "customer_id", "ts")
ZONES: Final = sorted(zoneinfo.available_timezones() - {"Factory", "localtime"})[:400]


# --- outcomes -----------------------------------------------------------------------------


def outcome(raw: bytes | str) -> Event | InvalidEvent:
    """decode_event's answer; any exception but InvalidEvent fails the test right here."""
    try:
        return decode_event(raw)
    except InvalidEvent as exc:
        return exc


def check_invalid(exc: InvalidEvent, raw: bytes | str) -> None:
    """A short reason, naming no hostile value; a customer id only if the input has it."""
    assert exc.reason, "an InvalidEvent needs a reason"
    assert len(exc.reason) < 1000
    assert exc.reason.startswith(("malformed JSON", "invalid event")), exc.reason
    assert MARKER not in exc.reason and MARKER not in str(exc)
    if exc.customer_id is not None:
        assert 0 < len(exc.customer_id) <= 128
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        assert json.dumps(exc.customer_id)[1:-1] in text or exc.customer_id in text


def check_round_trip(event: Event) -> None:
    """A decoded event encodes to the wire form and decodes to the same event, stably."""
    wire = encode_event(event)
    again = decode_event(wire)
    assert type(again) is type(event)
    assert again == event
    assert encode_event(again) == wire


def check(raw: bytes | str) -> Event | InvalidEvent:
    result = outcome(raw)
    if isinstance(result, InvalidEvent):
        check_invalid(result, raw)
    else:
        check_round_trip(result)
    return result


def must_be_invalid(raw: bytes | str) -> InvalidEvent:
    result = check(raw)
    assert isinstance(result, InvalidEvent), f"accepted: {result!r}"[:500]
    return result


# --- valid events, field by field ----------------------------------------------------------

# Text without lone surrogates (JSON text is UTF-8, which cannot carry them).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=128)
short = st.text(st.characters(exclude_categories=("Cs",)), max_size=256)
finite = st.floats(allow_nan=False, allow_infinity=False)
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(  # the contract's range, 1970..2199 in UTC, with a day's margin
    min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30, 23, 59, 59), timezones=offsets
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """RFC 3339 with an offset, any time the contract accepts (Z for UTC, sometimes)."""
    ts = draw(times).isoformat()
    if ts.endswith("+00:00") and draw(st.booleans()):
        ts = ts[:-6] + "Z"
    return ts


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | finite
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def common(kind: str) -> dict[str, Any]:
    return {"type": st.just(kind), "event_id": ids, "customer_id": ids, "ts": timestamps()}


transactions = st.fixed_dictionaries(
    {
        **common("transaction"),
        "amount": st.floats(min_value=0, allow_nan=False, allow_infinity=False),
        "direction": st.sampled_from(["credit", "debit"]),
        "channel": st.sampled_from(["card", "online", "mobile", "branch", "atm", "transfer"]),
    },
    optional={
        "currency": st.from_regex(r"\A[A-Z]{3}\Z"),
        "account_id": short | st.none(),
        "card_id": short | st.none(),
        "merchant_country": st.from_regex(r"\A[A-Z]{2}\Z") | st.none(),
        "merchant_category": short | st.none(),
        "counterparty_id": short | st.none(),
        "counterparty_bank": short | st.none(),
        "device_id": short | st.none(),
        "lat": st.floats(-90, 90) | st.none(),
        "lon": st.floats(-180, 180) | st.none(),
        "balance_after": finite | st.none(),
        "tags": st.lists(short, max_size=32),
        "unknown_field": json_values,
    },
)
interactions = st.fixed_dictionaries(
    {
        **common("interaction"),
        "channel": st.sampled_from(["app", "web", "call_center", "branch", "email", "sms"]),
        "action": st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=64),
    },
    optional={
        "device_id": short | st.none(),
        "lat": st.floats(-90, 90) | st.none(),
        "lon": st.floats(-180, 180) | st.none(),
        "offer_id": short | st.none(),
        "page": short | st.none(),
        "unknown_field": json_values,
    },
)
profiles = st.fixed_dictionaries(
    common("profile"),
    optional={
        "home_country": st.from_regex(r"\A[A-Z]{2}\Z") | st.none(),
        "segment": short | st.none(),
        "birth_date": short | st.none(),
        "timezone": st.sampled_from(ZONES) | st.none(),
        "products": st.lists(short, max_size=64),
        "consent": st.dictionaries(short, st.booleans(), max_size=4),
        "delinquent": json_values,  # extra keys are kept, whatever their JSON value
        "score": json_values,
    },
)
valid_docs = transactions | interactions | profiles
TYPES: Final = {"transaction": TransactionEvent, "interaction": InteractionEvent}


def field_order(doc: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """The same document with its keys in another order (the tag need not come first)."""
    return {k: doc[k] for k in order}


@FUZZ
@given(doc=valid_docs, data=st.data())
def test_valid_events_decode_as_sent_and_round_trip(doc: dict[str, Any], data: Any) -> None:
    doc = field_order(doc, data.draw(st.permutations(list(doc))))
    raw = msgspec.json.encode(doc)
    result = check(raw)
    assert not isinstance(result, InvalidEvent), (result.reason, doc)
    assert result.type == doc["type"]
    assert TYPES.get(doc["type"], ProfileEvent) is type(result)
    assert (result.event_id, result.customer_id) == (doc["event_id"], doc["customer_id"])
    assert result.ts == datetime.fromisoformat(doc["ts"].replace("Z", "+00:00"))
    assert result.ts.utcoffset() == datetime.fromisoformat(doc["ts"]).utcoffset()
    if isinstance(result, TransactionEvent):
        assert result.amount == doc["amount"] and result.tags == doc.get("tags", [])
    if isinstance(result, ProfileEvent):
        extras = {k: v for k, v in doc.items() if k in ("delinquent", "score")}
        assert result.extra == extras
        assert result.changes() == {k: v for k, v in doc.items() if k not in COMMON}
    # the same event as text (str input) decodes the same
    assert decode_event(raw.decode()) == result


# --- hostile: one field of a valid event made hostile ---------------------------------------


def huge(n: int) -> str:
    return (MARKER * (n // len(MARKER) + 1))[:n]


def nested(depth: int, leaf: str = "1", kind: str = "[") -> str:
    if kind == "[":
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + "}" * depth


HOSTILE_VALUES: Final[list[str]] = [
    # JSON text for a field value; not all are valid JSON on purpose
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1" + "0" * 5000,
    str(2**64),
    str(-(2**63) - 1),
    str(2**64 - 1),
    "-1",
    "-0.0001",
    "-1e308",
    "null",
    "true",
    "[]",
    "{}",
    '""',
    "0",
    '"-5"',
    '"1e3"',
    json.dumps(huge(MB - 200)),
    json.dumps(huge(257)),
    json.dumps(huge(129)),
    nested(10_000),
    nested(10_000, kind="{"),
    nested(MAX_NESTING + 1),
    nested(200),
    '"0001-01-01T00:00:00+08:00"',
    '"0001-01-01T00:00:00-14:00"',
    '"9999-12-31T23:59:59-12:00"',
    '"9999-12-31T23:59:59+14:00"',
    '"2026-11-02T10:00:00"',
    '"2026-11-02"',
    '"10000-01-01T00:00:00Z"',
    '"0000-01-01T00:00:00Z"',
    '"2026-13-01T00:00:00Z"',
    '"2026-02-30T00:00:00Z"',
    '"2026-11-02T24:00:00Z"',
    '"2026-11-02T10:00:60Z"',
    '"2026-11-02T10:00:00+24:00"',
    '"2026-11-02T10:00:00+08"',
    '"Mars/Olympus_Mons"',
    '"Asia/Shanghai"',
    '"transaction"',
    '"profile"',
    '"\\ud800"',  # a lone surrogate, escaped
    '"\\u0000"',
    '"CN\\n"',
]
FIELDS: Final = [
    "type",
    "event_id",
    "customer_id",
    "ts",
    "amount",
    "direction",
    "channel",
    "currency",
    "lat",
    "lon",
    "balance_after",
    "tags",
    "merchant_country",
    "action",
    "timezone",
    "consent",
    "products",
    "segment",
    "delinquent",
    "unknown_field",
]


def splice(doc: dict[str, Any], key: str, value_json: str, *, drop: bool = False) -> str:
    """The document as JSON text with `key` set to the raw JSON `value_json` (or removed)."""
    parts = [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in doc.items() if k != key]
    if not drop:
        parts.append(f"{json.dumps(key)}:{value_json}")
    return "{" + ",".join(parts) + "}"


NOT_JSON: Final = ("NaN", "Infinity", "-Infinity")
TYPED_PROFILE_KEYS: Final = (*COMMON, *PROFILE_FIELDS)


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def surely_invalid(doc: dict[str, Any], key: str, value_json: str) -> bool:
    """Whether setting `key` to `value_json` must make the event invalid (False: either)."""
    if value_json in NOT_JSON:
        return True  # not JSON at all, wherever it stands
    try:
        value = json.loads(value_json)
    except RecursionError:
        return True  # deeper than any decoder should follow
    except ValueError:
        return False  # an integer of 5,000 digits: a number out of range, where it is read
    if key == "type":
        return value not in (doc["type"], "profile")  # any event reads as a profile update
    if key in ("event_id", "customer_id"):
        return not (isinstance(value, str) and 0 < len(value) <= 128)
    if key == "ts":
        return True  # every hostile ts is malformed or outside 1970..2199
    if key == "amount" and doc["type"] == "transaction":
        return not (isinstance(value, float | int) and not isinstance(value, bool) and value >= 0)
    if doc["type"] == "profile" and key not in TYPED_PROFILE_KEYS:  # an extra it keeps
        too_big = isinstance(value, int) and not -(2**63) <= value <= 2**64 - 1
        return too_big or depth_of(value) > MAX_NESTING
    return False


@FUZZ
@given(
    doc=valid_docs,
    key=st.sampled_from(FIELDS),
    value_json=st.sampled_from(HOSTILE_VALUES),
)
def test_one_hostile_field_gives_a_valid_event_or_invalid_event(
    doc: dict[str, Any], key: str, value_json: str
) -> None:
    raw = splice(doc, key, value_json)
    result = check(raw.encode("utf-8", "surrogatepass"))
    if surely_invalid(doc, key, value_json):
        assert isinstance(result, InvalidEvent), (key, value_json[:80])
    elif key == "unknown_field" and doc["type"] != "profile":  # unknown fields are ignored
        assert not isinstance(result, InvalidEvent), (value_json[:80], result.reason)


@FUZZ
@given(doc=valid_docs, key=st.sampled_from(COMMON))
def test_a_missing_common_field_is_invalid_with_the_customer_id_when_readable(
    doc: dict[str, Any], key: str
) -> None:
    raw = splice(doc, key, "", drop=True)
    exc = must_be_invalid(raw)
    assert f"missing required field `{key}`" in exc.reason
    assert exc.customer_id == (None if key == "customer_id" else doc["customer_id"])


@FUZZ
@given(
    doc=transactions,
    amount=st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False)
    | st.integers(max_value=-1),
)
def test_negative_amounts_are_invalid(doc: dict[str, Any], amount: float) -> None:
    exc = must_be_invalid(splice(doc, "amount", json.dumps(amount)))
    assert "amount" in exc.reason


Mutation = Callable[[bytes], bytes]
TEXT_MUTATIONS: Final[dict[str, tuple[Mutation, bool]]] = {
    # name: (mutation of the wire bytes, whether the result must be invalid)
    "bom": (lambda b: b"\xef\xbb\xbf" + b, False),
    "utf16": (lambda b: b.decode().encode("utf-16"), True),
    "latin1_byte_in_id": (lambda b: b.replace(b'"customer_id":"', b'"customer_id":"\xe9', 1), True),
    "overlong_utf8": (lambda b: b.replace(b'"event_id":"', b'"event_id":"\xc0\xaf', 1), True),
    "nul_byte": (lambda b: b.replace(b'"ts"', b'"t\x00s"', 1), True),
    "truncated": (lambda b: b[: len(b) // 2], True),
    "trailing_brace": (lambda b: b + b"}", True),
    "trailing_second_doc": (lambda b: b + b + b"\n", True),
    "wrapped_in_array": (lambda b: b"[" + b + b"]", True),
    "wrapped_deep": (lambda b: b"[" * 10_000 + b + b"]" * 10_000, True),
    "as_json_string": (lambda b: json.dumps(b.decode()).encode(), True),
    "single_quotes": (lambda b: b.replace(b'"', b"'"), True),
    "comment": (lambda b: b"/* x */" + b, True),
    "trailing_comma": (lambda b: b[:-1] + b",}", True),
    "duplicate_type_key_first": (lambda b: b'{"type":"nonsense",' + b[1:], False),
    "duplicate_id_key_last": (lambda b: b[:-1] + b',"event_id":""}', True),
    "duplicate_customer_key_last": (lambda b: b[:-1] + b',"customer_id":null}', True),
    "duplicate_keys_same_value": (lambda b: b[:-1] + b"," + b[1:], False),
    "whitespace_around": (lambda b: b" \n\t" + b + b"\r\n ", False),
    "empty": (lambda b: b"", True),
    "only_whitespace": (lambda b: b"   \n", True),
}


@FUZZ
@given(doc=valid_docs, name=st.sampled_from(sorted(TEXT_MUTATIONS)))
def test_text_level_tricks_give_a_valid_event_or_invalid_event(
    doc: dict[str, Any], name: str
) -> None:
    mutate, invalid = TEXT_MUTATIONS[name]
    raw = mutate(json.dumps(doc, separators=(",", ":")).encode())
    result = check(raw)
    if invalid:
        assert isinstance(result, InvalidEvent), name


@FUZZ
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(
    text_=st.text(max_size=500)
    | st.from_regex(r'\A\{"type": ?"(transaction|profile|interaction)".{0,200}\Z')
)
def test_arbitrary_text_including_lone_surrogates(text_: str) -> None:
    check(text_)


@FUZZ
@given(value=json_values | st.lists(json_values) | st.dictionaries(text, json_values))
def test_any_json_that_is_not_an_event_object_is_invalid(value: Any) -> None:
    if isinstance(value, dict) and "type" in value:
        return
    must_be_invalid(msgspec.json.encode(value))


# --- the hardest inputs, one by one ----------------------------------------------------------

VALID_PROFILE: Final = {
    "type": "profile",
    "event_id": "p1",
    "customer_id": "c1",
    "ts": "2026-11-02T10:00:00+08:00",
}
VALID_TXN: Final = {
    **VALID_PROFILE,
    "type": "transaction",
    "amount": 10.0,
    "direction": "debit",
    "channel": "card",
}


@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000, 1_000_000])
@pytest.mark.parametrize(
    "where", ["top_array", "top_object", "unknown_field", "profile_extra", "tags", "event_id"]
)
def test_deep_nesting_is_invalid_never_a_recursion_error(depth: int, where: str) -> None:
    if where == "top_array":
        raw = nested(depth)  # not an object: refused at its first character
    elif where == "top_object":
        raw = nested(depth, kind="{")  # {"a":{"a":...}}: followed down to find `type`
    elif where == "profile_extra":
        raw = splice(VALID_PROFILE, "delinquent", nested(depth))
    else:
        raw = splice(VALID_TXN, where, nested(depth))
    exc = must_be_invalid(raw.encode())
    if where in ("top_object", "unknown_field", "profile_extra"):
        assert exc.reason == "invalid event: JSON nested too deeply"


@pytest.mark.parametrize("depth", [1, 10, MAX_NESTING])
def test_profile_extras_nested_up_to_the_limit_are_kept(depth: int) -> None:
    for kind in ("[", "{"):
        event = check(splice(VALID_PROFILE, "note", nested(depth, kind=kind)).encode())
        assert isinstance(event, ProfileEvent)
        assert msgspec.json.encode(event.extra["note"]).decode() == nested(depth, kind=kind)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 500, 900])
def test_profile_extras_nested_past_the_limit_are_invalid_with_the_customer(depth: int) -> None:
    exc = must_be_invalid(splice(VALID_PROFILE, "note", nested(depth)).encode())
    assert exc.reason == "invalid event: JSON nested too deeply"
    assert exc.customer_id == "c1"


@pytest.mark.parametrize(
    ("number", "ok"),
    [(2**64 - 1, True), (-(2**63), True), (2**64, False), (-(2**63) - 1, False), (10**300, False)],
)
def test_profile_extras_hold_only_integers_the_state_can_store(number: int, ok: bool) -> None:
    """A kept extra goes into the customer's state (MessagePack: 64-bit integers at most);
    a bigger one crashed the engine when it wrote the state back."""
    for value in (number, [number], {"a": number}):
        result = check(json.dumps({**VALID_PROFILE, "delinquent": value}))
        assert (not isinstance(result, InvalidEvent)) is ok, result
        if isinstance(result, InvalidEvent):
            assert result.reason == "invalid event: Integer value out of range"
            assert result.customer_id == "c1"
        else:
            assert result.extra == {"delinquent": value}


@pytest.mark.parametrize("field", ["event_id", "customer_id", "merchant_category", "device_id"])
def test_a_1mb_string_in_a_bounded_field_is_invalid_and_not_echoed(field: str) -> None:
    value = huge(MB - 500)
    raw = json.dumps({**VALID_TXN, field: value}).encode()
    assert len(raw) < MB
    exc = must_be_invalid(raw)
    assert field in exc.reason
    assert len(exc.reason) < 200


def test_a_1mb_string_in_an_unknown_field_or_profile_extra_is_accepted_intact() -> None:
    value = huge(MB - 500)
    txn = check(json.dumps({**VALID_TXN, "memo": value}).encode())
    assert isinstance(txn, TransactionEvent) and txn.event_id == "p1"
    profile = check(json.dumps({**VALID_PROFILE, "memo": value}).encode())
    assert isinstance(profile, ProfileEvent) and profile.extra["memo"] == value


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "nan", "inf", "1e400"])
@pytest.mark.parametrize("field", ["amount", "lat", "balance_after", "memo"])
def test_nan_infinity_and_overflowing_numbers(literal: str, field: str) -> None:
    raw = splice(VALID_TXN, field, literal).encode()
    result = check(raw)
    if literal != "1e400" or field != "memo":  # an unknown field's value is skipped unread
        assert isinstance(result, InvalidEvent)
    profile = check(splice(VALID_PROFILE, field, literal).encode())
    assert isinstance(profile, InvalidEvent)  # a profile keeps its extras: it reads them
    if literal == "1e400":
        assert profile.reason.startswith("invalid event: Number out of range")
        assert profile.customer_id == "c1"
    else:
        assert profile.reason.startswith("malformed JSON: JSON is malformed")


@pytest.mark.parametrize(
    ("ts", "ok"),
    [
        ("0001-01-01T00:00:00Z", False),  # outside the contract's 1970..2199
        ("0001-01-01T00:00:00+14:00", False),  # UTC is in year 0
        ("9999-12-31T23:59:59-12:00", False),  # UTC is in year 10000
        ("1969-12-31T23:59:59.999999Z", False),
        ("1970-01-01T00:00:00Z", True),
        ("1970-01-01T08:00:00+08:00", True),
        ("2199-12-31T23:59:59.999999Z", True),
        ("2200-01-01T00:00:00Z", False),
        ("2026-11-02T10:00:00.123456789+08:00", True),
        ("2026-11-02T10:00:00", False),
        ("2026-11-02T10:00:00 +08:00", False),
        ("0000-12-31T00:00:00Z", False),
        ("10000-01-01T00:00:00Z", False),
        ("2026-00-10T00:00:00Z", False),
        ("2026-11-31T00:00:00Z", False),
        ("2026-11-02T10:00:00+25:00", False),
        ("-2026-11-02T10:00:00Z", False),
        ("1762048800", False),
        ("", False),
    ],
)
def test_timestamps_far_in_the_past_or_future_or_malformed(ts: str, ok: bool) -> None:
    result = check(json.dumps({**VALID_TXN, "ts": ts}))
    assert (not isinstance(result, InvalidEvent)) is ok, result
    if isinstance(result, InvalidEvent):
        assert "ts" in result.reason and result.customer_id == "c1"
    else:
        result.ts.timestamp()  # the engine's first use of it


def test_json_number_ts_and_boolean_amount_are_wrong_types() -> None:
    for key, value in [("ts", 1762048800), ("amount", True), ("event_id", 7), ("tags", "x")]:
        exc = must_be_invalid(json.dumps({**VALID_TXN, key: value}))
        assert exc.reason.startswith("invalid event: Expected"), exc.reason
        assert f"$.{key}" in exc.reason
