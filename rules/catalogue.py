"""The typed catalogue of what an expression may read: event fields, profile fields.

Field paths in rules are checked against it at load time, so `event.amout` is an error
with a suggestion rather than a rule that silently never fires.
"""

from __future__ import annotations

from typing import Final

from rules.functions import BOOL, CONSENT, NUM, STR, STRS

_COMMON: Final = {"event_id": STR, "customer_id": STR, "ts": NUM, "type": STR}

PROFILE_FIELDS: Final[dict[str, str]] = {
    "home_country": STR,
    "segment": STR,
    "birth_date": STR,
    "timezone": STR,
    "products": STRS,
    "consent": CONSENT,
}
"""Profile fields every pack may read. A pack declares others under `profile_fields:`."""

EVENT_FIELDS: Final[dict[str, dict[str, str]]] = {
    "transaction": {
        **_COMMON,
        "amount": NUM,
        "currency": STR,
        "direction": STR,
        "channel": STR,
        "account_id": STR,
        "card_id": STR,
        "merchant_country": STR,
        "merchant_category": STR,
        "counterparty_id": STR,
        "counterparty_bank": STR,
        "device_id": STR,
        "lat": NUM,
        "lon": NUM,
        "balance_after": NUM,
        "tags": STRS,
    },
    "interaction": {
        **_COMMON,
        "channel": STR,
        "action": STR,
        "device_id": STR,
        "lat": NUM,
        "lon": NUM,
        "offer_id": STR,
        "page": STR,
    },
    "profile": {**_COMMON, **PROFILE_FIELDS},
}


LIST_DEFAULTS: Final = frozenset({"products"})
"""Profile lists that read as empty (not null) for a customer who has none recorded."""

DECLARED_TYPES: Final[dict[str, str]] = {
    "number": NUM,
    "string": STR,
    "bool": BOOL,
    "list": STRS,
}

POLICY_PROFILE_FIELDS: Final = frozenset({"consent", "timezone"})
"""Profile fields the contact policy reads, kept whatever the rules use."""


def event_field_type(event_types: tuple[str, ...], name: str) -> str | None:
    """The field's type if any of the event types has it, else None."""
    for t in event_types:
        typ = EVENT_FIELDS[t].get(name)
        if typ is not None:
            return typ
    return None


def event_field_names(event_types: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for t in event_types:
        names.extend(n for n in EVENT_FIELDS[t] if n not in names)
    return names
