"""The input contract: valid events decode; anything else is InvalidEvent with a reason."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.events import (
    InteractionEvent,
    InvalidEvent,
    ProfileEvent,
    TransactionEvent,
    decode_event,
    encode_event,
)

TS = "2024-05-01T10:00:00+08:00"


def txn(**fields: Any) -> dict[str, Any]:
    base = {
        "type": "transaction",
        "event_id": "e-1",
        "customer_id": "c-1",
        "ts": TS,
        "amount": 120.5,
        "direction": "debit",
        "channel": "card",
    }
    base.update(fields)
    return base


def interaction(**fields: Any) -> dict[str, Any]:
    base = {
        "type": "interaction",
        "event_id": "e-2",
        "customer_id": "c-1",
        "ts": TS,
        "channel": "app",
        "action": "login",
    }
    base.update(fields)
    return base


def profile(**fields: Any) -> dict[str, Any]:
    base = {"type": "profile", "event_id": "e-3", "customer_id": "c-1", "ts": TS}
    base.update(fields)
    return base


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def rejected(data: bytes | str) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        decode_event(data)
    return info.value


# --- valid events ---------------------------------------------------------------------------


def test_minimal_transaction() -> None:
    event = decode_event(raw(txn()))
    assert isinstance(event, TransactionEvent)
    assert event.type == "transaction"
    assert event.ts == datetime(2024, 5, 1, 2, 0, tzinfo=UTC)
    assert event.ts.utcoffset() == timedelta(hours=8)
    assert event.currency == "CNY" and event.tags == [] and event.card_id is None


def test_transaction_with_every_optional_field() -> None:
    doc = txn(
        currency="USD",
        account_id="acc-1",
        card_id="card-1",
        merchant_country="JP",
        merchant_category="5411",
        counterparty_id="p-1",
        counterparty_bank="OTHERBANK",
        device_id="d-1",
        lat=-33.9,
        lon=151.2,
        balance_after=-20.0,
        tags=["payroll", "cash"],
    )
    event = decode_event(json.dumps(doc))  # str input works as well as bytes
    assert isinstance(event, TransactionEvent)
    assert (event.currency, event.merchant_country, event.lat, event.lon) == (
        "USD",
        "JP",
        -33.9,
        151.2,
    )
    assert event.balance_after == -20.0  # an overdrawn balance is fine
    assert event.tags == ["payroll", "cash"]
    assert decode_event(encode_event(event)) == event


def test_interaction_with_optional_fields() -> None:
    event = decode_event(raw(interaction(device_id="d-9", offer_id="credit_card", page="/cards")))
    assert isinstance(event, InteractionEvent)
    assert (event.type, event.action, event.device_id, event.offer_id) == (
        "interaction",
        "login",
        "d-9",
        "credit_card",
    )
    assert event.lat is None


def test_profile_changes_only_fields_present_and_keeps_extras() -> None:
    event = decode_event(
        raw(
            profile(
                timezone="Europe/Berlin",
                consent={"marketing": False},
                segment=None,
                delinquent=True,
                risk_score=0.7,
            )
        )
    )
    assert isinstance(event, ProfileEvent)
    assert event.type == "profile"
    assert event.changes() == {
        "timezone": "Europe/Berlin",
        "consent": {"marketing": False},
        "segment": None,  # an explicit null clears the field
        "delinquent": True,
        "risk_score": 0.7,
    }
    assert decode_event(encode_event(event)) == event


def test_profile_with_all_named_fields() -> None:
    event = decode_event(
        raw(
            profile(
                home_country="CN",
                segment="mass",
                birth_date="1990-02-03",
                timezone="Asia/Shanghai",
                products=["debit_card"],
                consent={"marketing": True, "sms": False},
            )
        )
    )
    assert isinstance(event, ProfileEvent)
    assert set(event.changes()) == {
        "home_country",
        "segment",
        "birth_date",
        "timezone",
        "products",
        "consent",
    }


def test_offsets_other_than_utc_are_kept_as_the_same_instant() -> None:
    a = decode_event(raw(txn(ts="2024-05-01T02:00:00Z")))
    b = decode_event(raw(txn(ts="2024-04-30T21:00:00-05:00")))
    assert a.ts == b.ts
    assert b.ts.tzinfo is not None and b.ts.utcoffset() == timezone(timedelta(hours=-5)).utcoffset(
        None
    )


# --- invalid events -------------------------------------------------------------------------

HUGE = "x" * 100_000

INVALID: dict[str, bytes | str] = {
    "malformed JSON": b'{"type": "transaction", "event_id": ',
    "empty input": b"",
    "not UTF-8": b'{"type": "\xff\xfe"}',
    "array": raw([txn()]),
    "number": b"42",
    "string": b'"transaction"',
    "null": b"null",
    "unknown type": raw(txn(type="transfer")),
    "missing type": raw({k: v for k, v in txn().items() if k != "type"}),
    "missing customer_id": raw({k: v for k, v in txn().items() if k != "customer_id"}),
    "missing event_id": raw({k: v for k, v in txn().items() if k != "event_id"}),
    "missing ts": raw({k: v for k, v in txn().items() if k != "ts"}),
    "empty customer_id": raw(txn(customer_id="")),
    "naive ts": raw(txn(ts="2024-05-01T10:00:00")),
    "date only ts": raw(txn(ts="2024-05-01")),
    "not a time": raw(txn(ts="yesterday")),
    "epoch number ts": raw(txn(ts=1714521600)),
    "negative amount": raw(txn(amount=-0.01)),
    "NaN amount": raw(txn()).replace(b"120.5", b"NaN"),
    "Infinity amount": raw(txn()).replace(b"120.5", b"Infinity"),
    "overflowing amount": raw(txn()).replace(b"120.5", b"1e999"),
    "overflowing balance": raw(txn(balance_after=1)).replace(
        b'"balance_after": 1', b'"balance_after": -1e999'
    ),
    "amount as string": raw(txn(amount="120.5")),
    "amount as bool": raw(txn(amount=True)),
    "customer_id as number": raw(txn(customer_id=42)),
    "tags not a list": raw(txn(tags="payroll")),
    "unknown direction": raw(txn(direction="sideways")),
    "unknown channel": raw(txn(channel="pigeon")),
    "lowercase currency": raw(txn(currency="usd")),
    "4-letter currency": raw(txn(currency="USDT")),
    "3-letter country": raw(txn(merchant_country="USA")),
    "lowercase country": raw(txn(merchant_country="us")),
    "latitude out of range": raw(txn(lat=91.0)),
    "huge customer_id": raw(txn(customer_id=HUGE)),
    "huge merchant_category": raw(txn(merchant_category=HUGE)),
    "huge action": raw(interaction(action=HUGE)),
    "too many tags": raw(txn(tags=["t"] * 33)),
    "unknown interaction channel": raw(interaction(channel="fax")),
    "empty action": raw(interaction(action="")),
    "unknown time zone": raw(profile(timezone="Mars/Olympus_Mons")),
    "time zone folder": raw(profile(timezone="America")),
    "time zone path": raw(profile(timezone="../../etc/passwd")),
    "consent not bool": raw(profile(consent={"marketing": "yes"})),
    "products not a list": raw(profile(products="wealth")),
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "lone surrogate in str": '{"type": "profile", "event_id": "\ud800", "customer_id": "c", "ts": "'
    + TS
    + '"}',
}


@pytest.mark.parametrize("data", INVALID.values(), ids=INVALID.keys())
def test_invalid_events_are_rejected_with_a_short_readable_reason(data: bytes | str) -> None:
    exc = rejected(data)
    assert exc.reason and exc.reason == str(exc)
    assert exc.reason.startswith(("malformed JSON", "invalid event"))
    assert len(exc.reason) <= 200
    assert exc.reason.isprintable()


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (txn(amount=-5), "$.amount"),
        (txn(merchant_country="USA"), "$.merchant_country"),
        (txn(currency="usd"), "$.currency"),
        (txn(ts="2024-05-01T10:00:00"), "$.ts"),
        (txn(direction="sideways"), "$.direction"),
        (profile(timezone="Mars/Olympus_Mons"), "$.timezone"),
    ],
)
def test_reason_names_the_field(doc: dict[str, Any], where: str) -> None:
    exc = rejected(raw(doc))
    assert where in exc.reason
    assert exc.customer_id == "c-1"  # so the dead letter can be traced to the customer


def test_reason_does_not_echo_field_values() -> None:
    for doc in (txn(type="SECRET-4111111111111111"), txn(direction="SECRET-4111111111111111")):
        exc = rejected(raw(doc))
        assert "SECRET" not in exc.reason and "4111" not in exc.reason
    exc = rejected(raw(txn(type="x" * 10_000)))
    assert len(exc.reason) <= 200 and "xxxx" not in exc.reason


def test_unknown_type_says_which_types_exist() -> None:
    reason = rejected(raw(txn(type="transfer"))).reason
    assert "$.type" in reason
    assert "transaction" in reason and "profile" in reason


def test_malformed_json_is_told_apart_from_an_invalid_event() -> None:
    assert rejected(b'{"type": ').reason.startswith("malformed JSON")
    assert rejected(raw(txn(amount=-1))).reason.startswith("invalid event")
    assert rejected(b'{"type": ').customer_id is None


def test_invalid_event_is_a_value_error_with_the_customer_id_when_known() -> None:
    exc = rejected(raw(txn(amount="lots")))
    assert isinstance(exc, ValueError)
    assert exc.customer_id == "c-1"
    assert rejected(raw(txn(customer_id="x" * 200))).customer_id is None


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_invalid_event(data: bytes) -> None:
    with contextlib.suppress(InvalidEvent):
        decode_event(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([txn(), interaction(), profile()]),
    changes=st.dictionaries(
        st.sampled_from(
            [
                "type",
                "event_id",
                "customer_id",
                "ts",
                "amount",
                "direction",
                "channel",
                "currency",
                "tags",
                "lat",
                "timezone",
                "consent",
                "products",
                "action",
                "extra_key",
            ]
        ),
        json_values,
        max_size=4,
    ),
)
def test_mutated_events_never_raise_anything_but_invalid_event(
    base: dict[str, Any], changes: dict[str, Any]
) -> None:
    doc = {**base, **changes}
    try:
        text = msgspec.json.encode(doc)
    except (OverflowError, TypeError, ValueError):
        return
    try:
        event = decode_event(text)
    except InvalidEvent as exc:
        assert exc.reason and len(exc.reason) <= 200
        return
    assert event.customer_id and event.ts.tzinfo is not None


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_never_raises_anything_but_invalid_event(text: str) -> None:
    with contextlib.suppress(InvalidEvent):
        decode_event(text)


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([txn(), interaction(), profile(timezone="Asia/Shanghai")]),
    junk=st.binary(min_size=1, max_size=8),
    where=st.integers(0, 10_000),
)
def test_bytes_spliced_into_a_valid_event_never_raise_anything_but_invalid_event(
    base: dict[str, Any], junk: bytes, where: int
) -> None:
    """Invalid UTF-8 inside a string value, say, is a bad record, not a crash."""
    data = raw(base)
    at = where % len(data)
    with contextlib.suppress(InvalidEvent):
        decode_event(data[:at] + junk + data[at:])


def test_invalid_utf8_in_an_unknown_profile_key_is_rejected() -> None:
    data = raw(profile(segment="mass", note="x")).replace(b'"note"', b'"no\xffte"')
    exc = rejected(data)
    assert exc.reason.startswith("malformed JSON")
    data = raw(txn()).replace(b'"event_id"', b'"\x80event_id"')
    assert rejected(data).reason.startswith("invalid event")
