"""Structured logs: masking of personal data, JSON and text output, the correlation
context, and configure_logging."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.logs import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    current_log_context,
    is_personal_key,
    log_context,
    mask_pii,
)

CARD = "4111111111111111"  # Luhn-valid test Visa


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # card numbers: plain, grouped, Amex, embedded, glued to letters
        (f"card {CARD} declined", "card ****1111 declined"),
        ("4111 1111 1111 1111", "****1111"),
        ("4111-1111-1111-1111", "****1111"),
        ("amex 3782 822463 10005.", "amex ****0005."),
        ("pan:5555555555554444,", "pan:***,"),  # a personal key: the whole value
        ("ref 5555555555554444,", "ref ****4444,"),
        (f"x{CARD}y", "x****1111y"),
        ("4111 1111 1111 1111 2024", "****1111 2024"),
        (f"offset={CARD}", "offset=****1111"),  # cards win over operational keys
        # account numbers and IBANs
        ("acct 12345678 closed", "acct ****5678 closed"),
        ("account no. 0012345678901", "account no. ****8901"),
        ("/accounts/1234567890/limits", "/accounts/****7890/limits"),
        ("IBAN DE89 3704 0044 0532 0130 00 ok", "IBAN ****3000 ok"),
        ("to GB82WEST12345698765432.", "to ****5432."),
        ("20-00-00-12345678", "20-00-00-****5678"),
        # phone numbers
        ("+14155550123", "***"),
        ("call +86 138 0013 8000 now", "call *** now"),
        ("+1 (555) 123-4567", "***"),
        ("tel (555) 123-4567.", "tel ***."),
        ("555-123-4567", "***"),
        ("138 0013 8000", "***"),
        ("+86 138 0013 8000 1000 events", "*** 1000 events"),
        ("+49 (0)30 1234567", "***"),
        ("+7 495 1234567 ok", "*** ok"),
        ("13800138000", "****8000"),
        # e-mail addresses
        ("mail john.doe+crm@example.co.uk!", "mail ***!"),
        ("12345678@bank.example", "***"),
        # personal keys in messages
        ("name=John Smith rule=r1", "name=*** rule=r1"),
        ("first_name=Ann, last_name=Lee", "first_name=***, last_name=***"),
        ("firstName: Ann; x=1", "firstName: ***; x=1"),
        ('customer_name="Ann Lee" ok', 'customer_name="***" ok'),
        ('{"name": "John", "rule": "x"}', '{"name": "***", "rule": "x"}'),
        ("{'email': 'a@b.example', 'n': 2}", "{'email': '***', 'n': 2}"),
        ('{"phone": 8613800138000}', '{"phone": ***}'),
        ('{"customer": {"name": "x"}, "rule": "r"}', '{"customer": ***, "rule": "r"}'),
        ("address=1 Main St, Springfield rule=r1", "address=*** rule=r1"),
        ("Address: 5 Rue de Rivoli, Paris; next", "Address: ***; next"),
        ("birth_date=1990-01-02", "birth_date=***"),
        ("customer_id=c-123 rule=r1", "customer_id=*** rule=r1"),
        ("?name=Ann&x=1", "?name=***&x=1"),
    ],
)
def test_masks(text: str, masked: str) -> None:
    assert mask_pii(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T12:34:56.789Z",
        "2024-05-01T12:34:56+02:00 and 2024-05-01 12:34:56",
        "read crm.transactions/3@1234567890",
        "input crm.transactions/3: offsets 1234567890..1234567899 never reached the agent",
        "123e4567-e89b-12d3-a456-426614174000",
        "12345678-1234-1234-1234-123456789012",
        "abcdef12-1234-1234-1234-123456789012",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 sha a94a8fe5ccb19ba61c4c0873d391e98798",
        "event e42-000001234 dead-lettered",
        "consumer-12345678 joined generation 12",
        "took 12345678ms, 12345678 ms, 12345678 bytes",
        "offset=1234567890 lag: 12345678 ts=1714567890123",
        "read 33 records in 0.25s, 1,234 events",
        "version 0.11.3, python 3.11.9",
        "amount 12345678.90 EUR, balance -1234567.5",
        "score 0.4111111111111111",  # a float's fraction, even if Luhn-valid
        "counts: 100 200 300 400 500",
        "metrics on http://0.0.0.0:9108/metrics",
        "broker address=kafka:9092, bind address: 10.0.0.1",
        "filename=report.csv rule.name=offers",
        "partitions revoked: 7 buffered records left to the new owner",
        "+1234567.89 EUR",
        "",
    ],
)
def test_keeps(text: str) -> None:
    assert mask_pii(text) == text


def _luhn_complete(body: str) -> str:
    """body plus the check digit that makes it Luhn-valid."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


@st.composite
def cards(draw: st.DrawFn) -> tuple[str, str]:
    """(digits, as printed): a Luhn-valid 13-19 digit number, plain or grouped."""
    length = draw(st.integers(13, 19))
    body = draw(st.text("0123456789", min_size=length - 1, max_size=length - 1))
    digits = _luhn_complete(body)
    style = draw(st.sampled_from(["plain", " ", "-"]))
    if style == "plain" or length not in (15, 16, 19):
        return digits, digits
    sizes = [4, 6, 5] if length == 15 else [4, 4, 4, 4] + ([3] if length == 19 else [])
    parts, i = [], 0
    for n in sizes:
        parts.append(digits[i : i + n])
        i += n
    return digits, style.join(parts)


@settings(max_examples=300, deadline=None)
@given(card=cards(), before=st.text(max_size=40), after=st.text(max_size=40))
def test_a_card_number_never_survives(card: tuple[str, str], before: str, after: str) -> None:
    # Spaces around it: a card number glued to other digits is just a longer number.
    digits, printed = card
    out = mask_pii(f"{before} {printed} {after}")
    assert printed not in out
    assert digits not in out


def _luhn(digits: str) -> bool:
    return _luhn_complete(digits[:-1]) == digits


def test_the_luhn_helper() -> None:
    assert _luhn(CARD)
    assert not _luhn("4111111111111112")


@pytest.mark.parametrize(
    ("key", "personal"),
    [
        ("name", True),
        ("first_name", True),
        ("firstName", True),
        ("Last-Name", True),
        ("emails", True),
        ("customer_id", True),
        ("phone", True),
        ("iban", True),
        ("event_id", False),
        ("rule_id", False),
        ("topic", False),
        ("reason", False),
        ("filename", False),
    ],
)
def test_personal_keys(key: str, personal: bool) -> None:
    assert is_personal_key(key) is personal


# --- formatters --------------------------------------------------------------------------


def _record(
    msg: str = "hello",
    *args: object,
    extra: dict[str, Any] | None = None,
    exc: bool = False,
    level: int = logging.WARNING,
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"bad card {CARD} for name=Ann Lee")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.getLogger("tests.logs").makeRecord(
        "tests.logs", level, __file__, 1, msg, args, exc_info, extra=extra
    )


class Unserialisable:
    def __str__(self) -> str:
        return f"<thing {CARD}>"


def test_json_has_the_core_fields_and_extras() -> None:
    rec = _record(
        "input %s/%d: %d records",
        "crm.transactions",
        3,
        12,
        extra={
            "event_id": "e42-000001234",
            "rule_id": "salary-credit-card",
            "pack": "marketing",
            "topic": "crm.transactions",
            "partition": 3,
            "offset": 1234567890,
            "connector": "webhook",
            "attempts": 5,
            "ratio": 0.5,
            "tags": ("a", "b"),
            "when": Unserialisable(),
            "nan": float("nan"),
        },
    )
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "WARNING"
    assert out["logger"] == "tests.logs"
    assert out["msg"] == "input crm.transactions/3: 12 records"
    assert out["ts"].endswith("Z") and out["ts"][10] == "T" and len(out["ts"]) == 24
    assert out["event_id"] == "e42-000001234"
    assert out["rule_id"] == "salary-credit-card"
    assert out["partition"] == 3 and out["offset"] == 1234567890
    assert out["attempts"] == 5 and out["ratio"] == 0.5
    assert out["tags"] == ["a", "b"]
    assert out["when"] == "<thing ****1111>"
    assert out["nan"] == "nan"
    assert "exc" not in out


def test_json_masks_personal_extras_whatever_their_value() -> None:
    rec = _record(
        "customer %s, paid",
        "name=Ann",
        extra={
            "customer_id": "c-123",
            "name_": "x",
            "first_name": None,
            "phone": 8613800138000,
            "email": "a@b.example",
            "note": f"card {CARD}",
            "payload": {"customer": {"id": 1}, "amount": "12.50", "iban": "DE89..."},
        },
    )
    line = JsonFormatter().format(rec)
    out = json.loads(line)
    assert out["msg"] == "customer name=***, paid"
    for key in ("customer_id", "first_name", "phone", "email"):
        assert out[key] == "***"
    assert out["note"] == "card ****1111"
    assert out["payload"] == {"customer": "***", "amount": "12.50", "iban": "***"}
    for secret in ("c-123", "Ann", "8613800138000", "a@b.example", CARD):
        assert secret not in line


def test_an_extra_named_like_a_core_field_does_not_replace_it() -> None:
    out = json.loads(JsonFormatter().format(_record(extra={"ts": 1, "level": "x"})))
    assert out["ts_"] == 1 and out["level_"] == "x"
    assert out["level"] == "WARNING"


def test_exception_text_is_masked_in_both_formats() -> None:
    rec = _record("failed", exc=True)
    out = json.loads(JsonFormatter().format(rec))
    assert "Traceback" in out["exc"] and "ValueError: bad card ****1111" in out["exc"]
    text = TextFormatter().format(rec)
    assert "ValueError: bad card ****1111 for name=***" in text
    for rendered in (out["exc"], text):
        assert CARD not in rendered and "Ann Lee" not in rendered


def test_text_format_masks_and_lists_extras() -> None:
    rec = _record(
        "card %s to %s",
        CARD,
        "+44 20 7946 0958",
        extra={"event_id": "e1", "email": "a@b.example", "reason": "http 503"},
    )
    line = TextFormatter().format(rec)
    assert line.endswith(
        'WARNING tests.logs: card ****1111 to *** event_id=e1 email=*** reason="http 503"'
    )
    assert line[:24].endswith("Z")


def test_masking_can_be_turned_off() -> None:
    rec = _record("card %s", CARD, extra={"email": "a@b.example"})
    out = json.loads(JsonFormatter(mask=False).format(rec))
    assert out["msg"] == f"card {CARD}" and out["email"] == "a@b.example"


class Exploding:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_a_record_that_cannot_be_formatted_does_not_raise(formatter: logging.Formatter) -> None:
    bad_args = _record(f"card {CARD} %d %d", 1)  # one argument missing
    line = formatter.format(bad_args)
    assert "****1111" in line and CARD not in line and "log_error" in line
    assert formatter.format(_record("x", extra={"thing": Exploding()}))
    assert formatter.format(_record(Exploding()))  # type: ignore[arg-type]


def test_json_output_is_ascii() -> None:
    line = JsonFormatter().format(_record("客户 \udcff ok"))
    assert line.isascii()
    assert json.loads(line)["msg"] == "客户 \udcff ok"


# --- context -----------------------------------------------------------------------------


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """configure_logging into a buffer; the root logger restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    noisy = {name: logging.getLogger(name).level for name in ("aiokafka", "faust", "mode")}
    buffer = io.StringIO()
    configure_logging("json", "DEBUG", stream=buffer)
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_context_fields_are_added_to_records(logs: io.StringIO) -> None:
    log = logging.getLogger("tests.logs")
    with log_context(event_id="e1", rule_id="r1"):
        log.info("outer")
        with log_context(rule_id="r2", customer_id="c-9"):
            assert current_log_context() == {
                "event_id": "e1",
                "rule_id": "r2",
                "customer_id": "c-9",
            }
            log.info("inner", extra={"event_id": "e-explicit"})
        log.info("outer again")
    log.info("outside")
    outer, inner, again, outside = _lines(logs)
    assert (outer["event_id"], outer["rule_id"]) == ("e1", "r1")
    assert inner["event_id"] == "e-explicit" and inner["rule_id"] == "r2"
    assert inner["customer_id"] == "***"
    assert again["rule_id"] == "r1" and "customer_id" not in again
    assert "event_id" not in outside and current_log_context() == {}


def test_context_reaches_asyncio_tasks_and_threads(logs: io.StringIO) -> None:
    log = logging.getLogger("tests.logs")

    async def handle(event_id: str) -> None:
        with log_context(event_id=event_id):
            await asyncio.sleep(0)
            log.info("task")
            await asyncio.to_thread(log.info, "thread")

    async def main() -> None:
        with log_context(pack="marketing"):
            await asyncio.gather(handle("e1"), handle("e2"))
        log.info("done")

    asyncio.run(main())
    lines = [line for line in _lines(logs) if line["logger"] == "tests.logs"]
    seen = sorted((line["msg"], line.get("event_id"), line.get("pack")) for line in lines)
    assert seen == [
        ("done", None, None),
        ("task", "e1", "marketing"),
        ("task", "e2", "marketing"),
        ("thread", "e1", "marketing"),
        ("thread", "e2", "marketing"),
    ]


def test_context_may_not_overwrite_record_attributes() -> None:
    with pytest.raises(ValueError, match="msg, name"), log_context(name="x", msg="y"):
        pass


# --- configure_logging -------------------------------------------------------------------


def _ours(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if type(h).__module__ == "monitoring.logs"]


def test_configure_logging_is_idempotent(logs: io.StringIO) -> None:
    root = logging.getLogger()
    second = io.StringIO()
    configure_logging("json", "INFO", stream=second)
    configure_logging("json", "INFO", stream=second)
    assert len(_ours(root)) == 1
    logging.getLogger("tests.logs").warning("once")
    assert [line["msg"] for line in _lines(second)] == ["once"]
    assert logs.getvalue() == ""


def test_configure_logging_replaces_basic_config(logs: io.StringIO) -> None:
    root = logging.getLogger()
    plain = logging.StreamHandler(io.StringIO())
    kept = logging.NullHandler()
    root.addHandler(plain)
    root.addHandler(kept)
    configure_logging("text", "INFO", stream=logs)
    assert plain not in root.handlers and kept in root.handlers
    root.removeHandler(kept)


def test_configure_logging_text_format(logs: io.StringIO) -> None:
    buffer = io.StringIO()
    configure_logging("text", "info", stream=buffer)
    log = logging.getLogger("tests.logs")
    log.debug("hidden")
    with log_context(event_id="e7"):
        log.warning("phone %s", "+14155550123")
    (line,) = buffer.getvalue().splitlines()
    assert line.endswith("WARNING tests.logs: phone *** event_id=e7")


def test_configure_logging_levels(logs: io.StringIO) -> None:
    configure_logging("json", "INFO", stream=logs)
    assert logging.getLogger().level == logging.INFO
    for name in ("aiokafka", "faust", "mode"):
        assert logging.getLogger(name).level == logging.WARNING
    configure_logging("json", logging.ERROR, stream=logs)
    assert logging.getLogger("faust").level == logging.ERROR
    configure_logging("json", "DEBUG", stream=logs)
    assert logging.getLogger("aiokafka").getEffectiveLevel() == logging.DEBUG
    logging.getLogger("faust.worker").info("chatty")
    assert _lines(logs)[-1]["msg"] == "chatty"
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("json", "LOUD")
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("xml", "INFO")  # type: ignore[arg-type]


def test_configure_logging_quiets_third_party_loggers(logs: io.StringIO) -> None:
    configure_logging("json", "INFO", stream=logs)
    logging.getLogger("aiokafka.consumer").info("fetching")
    logging.getLogger("mode.worker").warning("slow")
    logging.getLogger("crm_triggers.worker").info("ours")
    assert [line["msg"] for line in _lines(logs)] == ["slow", "ours"]
