"""Structured logs without personal data.

`configure_logging()` installs one handler on the root logger: JSON Lines by default (one
object per record: ``ts``, ``level``, ``logger``, ``msg``, the caller's ``extra=`` fields,
the `log_context` fields, ``exc``) or plain text. Both formats mask personal data, so
nothing else has to remember to:

* card numbers (13-19 digits passing the Luhn check, in one run or grouped as printed:
  4-4-4-4, 4-6-5, by spaces or dashes) keep their last 4 digits: ``****1234``; so do
  IBANs and other account numbers (runs of 8 or more digits that stand on their own);
* phone numbers (``+`` and 7-15 digits, ``+86 138 0013 8000``, ``(555) 123-4567``,
  ``555-123-4567``, ``138 0013 8000``) and e-mail addresses become ``***``;
* the value of any personal key (`PERSONAL_KEYS`: names, e-mail, phone, address, birth
  date, national ids, card and account numbers, and ``customer_id``) becomes ``***``,
  whatever it is: as an ``extra=``/`log_context` field (nested dicts too) and as
  ``key=value``, ``key: value``, ``"key": "value"`` or ``'key': 'value'`` in a message.
  An unquoted value in a message runs to the next ``,;&|`` or bracket, the end of the line
  or the next ``key=``: ``name=Ann Lee rule=r1`` masks ``Ann Lee``.

Customer ids count as personal data: the project's policy is that logs and metrics carry
none, so ``customer_id`` (and ``customer``) are personal keys. Log the event id instead:
it leads to the customer for those allowed to look.

What operators need is left alone: ISO timestamps, ``topic/partition@offset``, offset
ranges (``12345678..12345699``), UUIDs, hex ids and other ids that glue digits to letters
(``e42-000001234``), durations and sizes (``12345678ms``, ``12345678 bytes``), numbers
after an operational key (``offset=``, ``lag``, ``ts=``, ...), small counts, versions and
amounts with a decimal point. The values of the correlation keys (`TRUSTED_KEYS`: event
id, rule id, pack, action id, origin, topic, partition, offset, connector) are never
masked. Names in free text cannot be recognised: pass them, if at all, under a personal
key. Numbers passed as ``int`` extras are not inspected (offsets, counts, timestamps):
put a personal number under a personal key, or better, leave it out.

Card numbers are masked even where a long digit run would be kept (glued to letters,
after ``offset=``), except in the fraction or integer part of a decimal number: a
13-digit epoch-millisecond timestamp that happens to pass the Luhn check is masked, which
is the price of never printing a card number. A card number glued to other digits
(``x41111111111111112``) cannot be told apart from any other long number.

`log_context(event_id=..., rule_id=...)` adds fields to every record logged inside it,
asyncio tasks started inside it included (context variables are copied into tasks and
into `asyncio.to_thread`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import IO, Any, Final, Literal

__all__ = [
    "PERSONAL_KEYS",
    "TRUSTED_KEYS",
    "ContextFilter",
    "JsonFormatter",
    "LogFormat",
    "RateLimited",
    "TextFormatter",
    "configure_logging",
    "current_log_context",
    "is_personal_key",
    "log_context",
    "mask_pii",
]

LogFormat = Literal["json", "text"]

MASK: Final = "***"

# Third-party loggers that are chatty at INFO, and the level they get unless the
# configured level is DEBUG (then they inherit it).
_NOISY: Final[Mapping[str, int]] = MappingProxyType(
    {
        "aiokafka": logging.WARNING,
        "faust": logging.WARNING,
        "mode": logging.WARNING,
    }
)

# Personal keys, in snake case: compared without case, "_" or "-" (firstName, first-name)
# and with or without a plural "s".
PERSONAL_KEYS: Final = frozenset(
    {
        # names
        "name",
        "first_name",
        "last_name",
        "middle_name",
        "full_name",
        "given_name",
        "family_name",
        "maiden_name",
        "surname",
        "customer_name",
        "user_name",
        "holder_name",
        "card_holder",
        "card_holder_name",
        "account_holder",
        "beneficiary",
        "beneficiary_name",
        "payee_name",
        "payer_name",
        # contact
        "email",
        "email_address",
        "e_mail",
        "phone",
        "phone_number",
        "mobile",
        "mobile_number",
        "msisdn",
        "telephone",
        "tel",
        "fax",
        "address",
        "street",
        "street_address",
        "home_address",
        "postal_address",
        "postcode",
        "post_code",
        "zip_code",
        # identity
        "birth_date",
        "date_of_birth",
        "dob",
        "birthday",
        "ssn",
        "national_id",
        "tax_id",
        "passport",
        "passport_number",
        # cards and accounts
        "card",
        "card_number",
        "pan",
        "cvv",
        "cvc",
        "iban",
        "bban",
        "account",
        "account_id",
        "account_number",
        "account_no",
        # customer ids: no personal data in logs or metrics (see the module docstring)
        "customer",
        "customer_id",
    }
)

# Correlation keys: their string values are ids operators search for, never masked.
TRUSTED_KEYS: Final = frozenset(
    {
        "event_id",
        "rule_id",
        "pack",
        "action_id",
        "origin",
        "topic",
        "partition",
        "offset",
        "connector",
    }
)


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


_PERSONAL_NORM: Final = frozenset(_norm(k) for k in PERSONAL_KEYS)


def is_personal_key(key: str) -> bool:
    """Whether a field of this name holds personal data (`PERSONAL_KEYS`)."""
    k = _norm(key)
    return k in _PERSONAL_NORM or (k.endswith("s") and k[:-1] in _PERSONAL_NORM)


# --- masking -----------------------------------------------------------------------------
#
# Four passes, each skipped when a quick test says it has nothing to find:
# personal key=value pairs (at each = or :), e-mail addresses (when there is an @), then
# IBANs (when there are two capitals and two digits), then numbers (when there is a
# digit). `re` tries a pattern at every position unless it starts with one character
# class or a choice of single characters: keys are looked up in a set rather than
# matched by an alternation, and the number pattern starts with [\d+(].

_IBAN_COUNTRIES: Final = (
    "AD|AE|AL|AT|AZ|BA|BE|BG|BH|BI|BR|BY|CH|CR|CY|CZ|DE|DJ|DK|DO|EE|EG|ES|FI|FK|FO|FR|GB|GE|"
    "GI|GL|GR|GT|HR|HU|IE|IL|IQ|IS|IT|JO|KW|KZ|LB|LC|LI|LT|LU|LV|LY|MC|MD|ME|MK|MN|MR|MT|MU|"
    "NI|NL|NO|OM|PK|PL|PS|PT|QA|RO|RS|RU|SA|SC|SD|SE|SI|SK|SM|SO|ST|SV|TL|TN|TR|UA|VA|VG|XK|YE"
)
# Postal addresses hold commas: their unquoted values run to ; & | the line's end or key=.
_ADDRESS_KEYS: Final = frozenset(
    _norm(k) for k in ("address", "home_address", "postal_address", "street_address")
)

_KV_SEP: Final = re.compile(r"[=:]")
_QUOTED: Final = r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"""
_STOP: Final = r"\s,;&|)\]}>"
# An unquoted value: its first word, then more words until a delimiter or the next key=.
_BARE_VALUE: Final = re.compile(
    rf"{_QUOTED}|[^{_STOP}]+(?:[ \t]+(?![\w.\-]+[ \t]*[=:])[^{_STOP}=]+)*"
)
# After a quoted key ("phone": ...): a quoted string or one JSON token.
_JSON_VALUE: Final = re.compile(rf"{_QUOTED}|[^\s,}}\]]+")
_ADDRESS_VALUE: Final = re.compile(
    rf"{_QUOTED}|[^;&|\n\r]+?(?=[ \t]+[\w.\-]+[ \t]*=|[ \t]*[;&|\n\r]|[ \t]*$)"
)
# address=kafka:9092, "address": "10.0.0.1": host:port or an IP address, quoted or not.
_NETWORK_ADDRESS: Final = re.compile(
    r"""(["']?)(?:[\w.\-]+:\d{1,5}|\[[0-9a-fA-F:.]+\]:\d{1,5}|\d{1,3}(?:\.\d{1,3}){3}"""
    r"""|[0-9a-fA-F]*:[0-9a-fA-F]*:[0-9a-fA-F:.]*)\1(?=[\s,;&|)\]}>]|$)"""
)

_EMAIL: Final = re.compile(
    r"(?<![\w.+\-])[\w.+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?![\w\-])"
)
# Starts with its country codes (a choice of literals) so that `re` only tries it there.
_IBAN: Final = re.compile(
    rf"""(?:{_IBAN_COUNTRIES})(?<![A-Za-z0-9]..)\d\d
    (?:\ ?[A-Z0-9]{{4}}){{2,7}}(?:\ ?[A-Z0-9]{{1,3}})?(?![A-Za-z0-9])""",
    re.VERBOSE,
)
_UUID: Final = re.compile(
    r"(?<![\w\-])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![\w\-])"
)
# Every alternative starts with the same character class, so that `re` skips to the
# next digit, + or ( at C speed; each then checks that first character (look-behind).
_NUMBERS: Final = re.compile(
    r"""
    [\d+(]
    (?:
      # a digit that starts a token
      (?<=\d)(?<!\w\d)
      (?:
        # kept as they are: ISO date-times, UUIDs that start with a digit
        (?P<keep>
          \d{3}-\d\d-\d\d(?:[T\ ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?(?:Z|[+\-]\d\d:?\d\d)?)?
          | (?<!-\d)[0-9a-fA-F]{7}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![\w\-])
        )
        # 555-123-4567, 138 0013 8000
        | (?P<phone>
            \d\d(?P<sep1>[ \-])\d{3}(?P=sep1)\d{4}
            | \d\d(?P<sep2>[ \-])\d{4}(?P=sep2)\d{4}
          )(?!\w|[\-.]\d)
      )
      # digit groups with 8 digits or more, even glued to letters (x4111111111111111):
      # cards, accounts, everything else (_mask_groups decides)
      | (?<=\d)(?<!\d\d)(?P<num>(?=[\d \-]{7})\d\d+(?:[ \-]\d{3,})*)
      # +14155550123, +86 138 0013 8000, +1 (555) 123-4567, +49 (0)30 1234567 (every
      # group after the first starts with a separator or a parenthesis: no backtracking
      # over the ways to split a run of digits)
      | (?<=\+)(?<![\w+]\+)
        (?P<phone_plus>
          \d{7,15}
          | (?:\d{1,4}|\(\d{1,4}\))(?:[ \-]?\(\d{1,5}\)\d{0,8}|[ \-]\d{1,8}){1,6}
        )(?!\w|\.\d)
      # (555) 123-4567
      | (?<=\()(?<!\w\()(?P<phone_paren>\d{3}\)[ \-]?\d{3}[ \-]\d{4})(?!\w|[\-.]\d)
    )
    """,
    re.VERBOSE,
)
_IBAN_HINT: Final = re.compile(r"[A-Z][A-Z]\d\d")
_DIGIT: Final = re.compile(r"\d")
_GROUP: Final = re.compile(r"\d+")
_PHONE_GROUP: Final = re.compile(r"[ \-]?\(?(\d+)\)?")
# A number after one of these is not personal data (also "lag: ", "ts=", "offsets ").
_OPERATIONAL_BEFORE: Final = re.compile(
    r"(?<![\w.\-])(?:offsets?|lag|hwm|high[_ ]?watermark|watermark|ts|timestamp|epoch|"
    r"elapsed|duration|took|bytes|size|seq|sequence|generation|port|pid|count|total)"
    r"""["']?[ \t]*[=:]?[ \t]*$""",
    re.IGNORECASE,
)
_UNIT_AFTER: Final = re.compile(
    r"[ \t]?(?:ms|us|µs|ns|s|sec|seconds|bytes|B|KiB|MiB|GiB|KB|MB|GB|records|events|"
    r"messages|msgs|rows|items)\b"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _last4(digits: str) -> str:
    return "****" + digits[-4:]


def _decimal_before(s: str, i: int) -> bool:
    """s[i:] starts right after the point of a decimal number (0.1234) or a range (1..9)."""
    return i >= 2 and s[i - 1] == "." and (s[i - 2].isdigit() or s[i - 2] == ".")


def _decimal_after(s: str, j: int) -> bool:
    """s[:j] ends with the integer part of a decimal number (1234.5) or a range (1..9)."""
    return s[j : j + 1] == "." and (s[j + 1 : j + 2].isdigit() or s[j + 1 : j + 2] == ".")


def _keep_run(s: str, i: int, j: int) -> bool:
    """Whether the digit run s[i:j] (8 digits or more, not a card) is not personal."""
    before = s[i - 1] if i else ""
    if before.isalnum() or before == "_" or before == "@" or _decimal_before(s, i):
        return True
    if before == "-":
        # the tail of an id with letters in it: e42-000001234, consumer-12345678
        k = i - 1
        while k > 0 and (s[k - 1].isalnum() or s[k - 1] in "_-"):
            k -= 1
        if any(c.isalpha() for c in s[k : i - 1]):
            return True
    after = s[j : j + 1]
    if after.isalnum() or after == "_" or _decimal_after(s, j):
        return True
    if _OPERATIONAL_BEFORE.search(s, max(0, i - 24), i):
        return True
    return bool(_UNIT_AFTER.match(s, j))


def _card_shaped(groups: list[tuple[int, int]]) -> bool:
    """One run of digits, or grouped as cards are printed: 4 4 4 4 (the last group 1-4
    digits, 4 or 5 groups), 4 6 5 or 4 6 4."""
    sizes = [j - i for i, j in groups]
    if len(sizes) == 1:
        return True
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return len(sizes) in (4, 5) and all(n == 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _mask_groups(s: str, start: int, end: int) -> str:
    """Mask the digit groups of s[start:end] (separated by single spaces or dashes): card
    numbers (13-19 digits, card-shaped, passing the Luhn check) and other runs of 8 or
    more digits."""
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(s, start, end)]
    out: list[str] = []
    pos = start
    n = len(groups)
    a = 0
    while a < n:
        card = 0
        count = 0
        for b in range(a, n):
            count += groups[b][1] - groups[b][0]
            if count > 19:
                break
            if count >= 13 and _card_shaped(groups[a : b + 1]):
                i, j = groups[a][0], groups[b][1]
                if not (_decimal_before(s, i) or _decimal_after(s, j)):
                    digits = "".join(s[x:y] for x, y in groups[a : b + 1])
                    if _luhn(digits):
                        card = b + 1
        if card:
            i, j = groups[a][0], groups[card - 1][1]
            digits = "".join(s[x:y] for x, y in groups[a:card])
            out.append(s[pos:i])
            out.append(_last4(digits))
            pos = j
            a = card
            continue
        i, j = groups[a]
        if j - i >= 8 and not _keep_run(s, i, j):
            out.append(s[pos:i])
            out.append(_last4(s[i:j]))
            pos = j
        a += 1
    out.append(s[pos:end])
    return "".join(out)


def _mask_phone_plus(m: re.Match[str]) -> str:
    s = m.string
    start, end = m.span()
    digits = 0
    cut = start
    for g in _PHONE_GROUP.finditer(s, start + 1, end):
        size = len(g.group(1))
        if digits + size > 15:
            break
        digits += size
        cut = g.end()
    if digits >= 7:
        return MASK + _mask_numbers(s[cut:end])
    return "+" + _mask_numbers(s[start + 1 : end])


def _replace_number(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "num":
        s = m.string
        start, end = m.span()
        if (s[start - 1 : start] == "-" or s[end : end + 1] == "-" or "-" in m.group()) and any(
            u.start() <= start and end <= u.end()
            for u in _UUID.finditer(s, max(0, start - 36), end + 36)
        ):
            return m.group()  # in a UUID that starts with a letter
        return _mask_groups(s, start, end)
    if kind in ("phone", "phone_paren"):
        return MASK
    if kind == "phone_plus":
        return _mask_phone_plus(m)
    return m.group()  # keep


def _mask_iban(m: re.Match[str]) -> str:
    return _last4(m.group().replace(" ", ""))


def _mask_numbers(text: str) -> str:
    return _NUMBERS.sub(_replace_number, text) if _DIGIT.search(text) else text


def _bracketed_end(text: str, start: int) -> int:
    """Where the {...} or [...] that opens at text[start] closes (quotes respected); the
    end of the text if it does not."""
    depth = 0
    quote = ""
    i = start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def _mask_key_values(text: str) -> str:
    """Mask the values of personal keys: key=value, key: value, "key": "value"."""
    out: list[str] = []
    pos = 0
    for sep in _KV_SEP.finditer(text):
        p = sep.start()
        if p < pos:
            continue  # inside a value masked already
        k = p
        while k > pos and text[k - 1] in " \t":
            k -= 1
        quote = ""
        if k > pos and text[k - 1] in "\"'":
            quote = text[k - 1]
            k -= 1
        key_end = k
        while k > pos and (text[k - 1].isalnum() or text[k - 1] in "_-"):
            k -= 1
        key = text[k:key_end]
        if not key or not is_personal_key(key):
            continue
        if quote:
            if k == 0 or text[k - 1] != quote:
                continue
        elif k and (text[k - 1].isalnum() or text[k - 1] in "_.-"):
            continue  # rule.name=, the tail of a longer word
        v = p + 1
        while v < len(text) and text[v] in " \t":
            v += 1
        if text[v : v + 1] in ("{", "["):
            out.append(text[pos:v])
            out.append(MASK)
            pos = _bracketed_end(text, v)
            continue
        if _norm(key) == "address" and _NETWORK_ADDRESS.match(text, v):
            continue  # a network address, not a postal one
        if quote:
            value = _JSON_VALUE.match(text, v)
        elif _norm(key) in _ADDRESS_KEYS:
            value = _ADDRESS_VALUE.match(text, v)
        else:
            value = _BARE_VALUE.match(text, v)
        if value is None:
            continue
        raw = value.group()
        q = raw[0] if raw[0] in "\"'" else ""
        out.append(text[pos:v])
        out.append(f"{q}{MASK}{q}")
        pos = value.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


_MAYBE_PII: Final = re.compile(r"[\d@=:]")


def mask_pii(text: str) -> str:
    """`text` with card and account numbers, IBANs, phone numbers, e-mail addresses and the
    values of personal keys masked (see the module docstring for what is kept)."""
    if not _MAYBE_PII.search(text):
        return text
    if "=" in text or ":" in text:
        text = _mask_key_values(text)
    if "@" in text:
        text = _EMAIL.sub(MASK, text)
    if _IBAN_HINT.search(text):
        text = _IBAN.sub(_mask_iban, text)
    return _mask_numbers(text)


# --- context -----------------------------------------------------------------------------

_EMPTY: Final[Mapping[str, object]] = MappingProxyType({})
_CONTEXT: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "crm_triggers_log_context", default=_EMPTY
)

# Attributes every LogRecord has: neither extras nor allowed as context fields.
_RECORD_ATTRS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add `fields` to every record logged inside the block (by any logger), on top of
    those of an enclosing block; an `extra=` field of the same name wins. Tasks and
    threads (`asyncio.to_thread`) started inside carry the fields on."""
    clash = sorted(fields.keys() & _RECORD_ATTRS)
    if clash:
        raise ValueError(f"log_context: {', '.join(clash)} would overwrite LogRecord attributes")
    token = _CONTEXT.set(MappingProxyType({**_CONTEXT.get(), **fields}))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_log_context() -> Mapping[str, object]:
    """The fields `log_context` adds here (read-only)."""
    return _CONTEXT.get()


class ContextFilter(logging.Filter):
    """Copies the `log_context` fields onto each record (put it on handlers: a logger's
    filters do not see records propagated from its children)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _CONTEXT.get()
        if fields:
            attrs = record.__dict__
            for key, value in fields.items():
                if key not in attrs:
                    attrs[key] = value
        return True


# --- formatters --------------------------------------------------------------------------

_CORE: Final = ("ts", "level", "logger", "msg", "exc", "stack")
# ASCII-only (the default): a line can be written whatever the stream's encoding, lone
# surrogates included.
_JSON: Final = json.JSONEncoder(separators=(",", ":"), default=str)


_last_second: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    """RFC 3339, UTC, milliseconds."""
    global _last_second
    second = int(record.created)
    cached, text = _last_second
    if second != cached:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = (second, text)
    return f"{text}.{int(record.msecs):03d}Z"


def _clean(value: object, mask: bool, depth: int = 0) -> object:
    """A JSON-ready copy of value, masked: containers recursively (4 levels), strings
    masked, other objects str()'d and masked."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return mask_pii(value) if mask else value
    if depth < 4:
        if isinstance(value, Mapping):
            return {
                str(k): MASK if mask and is_personal_key(str(k)) else _clean(v, mask, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [_clean(v, mask, depth + 1) for v in value]
    try:
        text = str(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return mask_pii(text) if mask else text


def _field(key: str, value: object, mask: bool) -> object:
    if mask and is_personal_key(key):
        return MASK
    if key in TRUSTED_KEYS and isinstance(value, str | int):
        return value
    return _clean(value, mask)


def _extras(record: logging.LogRecord) -> Iterator[tuple[str, object]]:
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRS and not key.startswith("_"):
            yield key, value


class _MaskingFormatter(logging.Formatter):
    def __init__(self, *, mask: bool = True) -> None:
        super().__init__()
        self.mask = mask

    def _text(self, text: str) -> str:
        return mask_pii(text) if self.mask else text

    def _parts(self, record: logging.LogRecord) -> tuple[str, str | None, str | None]:
        """The message, exception and stack text, masked."""
        msg = self._text(record.getMessage())
        exc = None
        if record.exc_info:
            exc = self._text(record.exc_text or self.formatException(record.exc_info))
        elif record.exc_text:
            exc = self._text(record.exc_text)
        stack = self._text(self.formatStack(record.stack_info)) if record.stack_info else None
        return msg, exc, stack

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as error:  # a log line must never break the caller
            try:
                try:
                    raw = str(record.msg)
                except Exception:
                    raw = "<unprintable message>"
                return self._fallback(record, mask_pii(raw), type(error).__name__)
            except Exception:
                return self._fallback(record, "<unprintable message>", "Exception")

    def _format(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    def _fallback(self, record: logging.LogRecord, msg: str, error: str) -> str:
        """The message template (unformatted) and the name of the error formatting hit."""
        raise NotImplementedError


class JsonFormatter(_MaskingFormatter):
    """One JSON object per line: ts, level, logger, msg, the extra and context fields,
    exc (the traceback) and stack; masked unless mask=False. ASCII-only output, so a
    line can always be written whatever the stream's encoding."""

    def _format(self, record: logging.LogRecord) -> str:
        msg, exc, stack = self._parts(record)
        out: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": msg,
        }
        for key, value in _extras(record):
            out[f"{key}_" if key in _CORE else key] = _field(key, value, self.mask)
        if exc is not None:
            out["exc"] = exc
        if stack is not None:
            out["stack"] = stack
        return _JSON.encode(out)

    def _fallback(self, record: logging.LogRecord, msg: str, error: str) -> str:
        return _JSON.encode(
            {
                "ts": _timestamp(record),
                "level": str(record.levelname),
                "logger": str(record.name),
                "msg": msg,
                "log_error": error,
            }
        )


class TextFormatter(_MaskingFormatter):
    """``ts LEVEL logger: msg key=value ...``, then the traceback; masked unless
    mask=False."""

    def _format(self, record: logging.LogRecord) -> str:
        msg, exc, stack = self._parts(record)
        parts = [f"{_timestamp(record)} {record.levelname} {record.name}: {msg}"]
        for key, value in _extras(record):
            parts.append(f"{key}={_text_value(_field(key, value, self.mask))}")
        line = " ".join(parts)
        if exc is not None:
            line = f"{line}\n{exc}"
        if stack is not None:
            line = f"{line}\n{stack}"
        return line

    def _fallback(self, record: logging.LogRecord, msg: str, error: str) -> str:
        return f"{_timestamp(record)} {record.levelname} {record.name}: {msg} log_error={error}"


_PLAIN: Final = re.compile(r"[^\s\"'=]+")


def _text_value(value: object) -> str:
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


# --- set-up ------------------------------------------------------------------------------


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    text = level.strip().upper()
    if text.isdigit():
        return int(text)
    levels = logging.getLevelNamesMapping()
    if text not in levels:
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    return levels[text]


class _Handler(logging.StreamHandler[IO[str]]):
    """The handler configure_logging installs (so that a second call replaces it)."""


def configure_logging(
    fmt: LogFormat = "json",
    level: str | int = "INFO",
    stream: IO[str] | None = None,
    *,
    mask: bool = True,
) -> None:
    """Log records of every logger at `level` and above to `stream` (default: sys.stderr
    at call time) as JSON Lines (fmt="json") or text, with the `log_context` fields and
    personal data masked (mask=False turns masking off: local debugging only).

    Calling it again replaces the handler it installed, and any plain StreamHandler such
    as logging.basicConfig's; other handlers on the root logger (files, pytest's capture)
    are left alone. aiokafka, faust and mode log at WARNING and above unless level is
    DEBUG. Raises ValueError for an unknown level name.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}: use json or text")
    number = _level(level)
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _Handler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
            old.close()
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.addFilter(ContextFilter())
    formatter: logging.Formatter = (
        JsonFormatter(mask=mask) if fmt == "json" else TextFormatter(mask=mask)
    )
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(number)
    for name, quiet in _NOISY.items():
        logging.getLogger(name).setLevel(
            logging.NOTSET if number <= logging.DEBUG else max(quiet, number)
        )


class RateLimited:
    """Logs through `logger` at most `per_second` records a second (bursts up to that many):
    a flood of bad input must not flood the logs. Records left out are counted, and the
    next record logged carries the count as ``suppressed``. For one thread."""

    def __init__(
        self,
        logger: logging.Logger,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.per_second = per_second
        self.clock = clock
        self._tokens = per_second
        self._at = clock()
        self.suppressed = 0

    def log(self, level: int, msg: str, *args: object, **kwargs: Any) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = self.clock()
        self._tokens = min(self.per_second, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens < 1:
            self.suppressed += 1
            return
        self._tokens -= 1
        if self.suppressed:
            kwargs["extra"] = {**kwargs.get("extra", {}), "suppressed": self.suppressed}
            self.suppressed = 0
        self.logger.log(level, msg, *args, **kwargs)
