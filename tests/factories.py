"""Small factories shared by the tests: real, validated events built from a few fields."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from state.events import Event, decode_event

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
_ids = itertools.count()

REQUIRED: dict[str, dict[str, Any]] = {
    "transaction": {"amount": 10.0, "direction": "debit", "channel": "card"},
    "interaction": {"channel": "app", "action": "login"},
    "profile": {},
}


def make_event(kind: str = "transaction", seconds: float = 0.0, **fields: Any) -> Event:
    """A decoded event of `kind`, `seconds` after T0 for customer c1, with the fields its
    type requires (overridable) and a fresh event id."""
    body = {
        "type": kind,
        "event_id": f"e{next(_ids)}",
        "customer_id": "c1",
        "ts": (T0 + timedelta(seconds=seconds)).isoformat(),
        **REQUIRED[kind],
        **fields,
    }
    return decode_event(json.dumps(body))
