"""What the engine writes: actions (offers and alerts) and decisions (the audit record).

Both are part of the public output contract (README "Outputs"). Field order is fixed.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Literal

import msgspec


class Action(msgspec.Struct, kw_only=True):
    """An offer or alert to deliver. `action_id` is the same on every replay or retry."""

    action_id: str
    kind: Literal["offer", "alert"]
    pack: str
    pack_version: int
    rule_id: str
    customer_id: str
    event_id: str
    ts: str
    emitted_at: str
    offer: dict[str, Any] | None
    severity: str | None
    channel: str | None
    not_before: str | None
    explanation: list[dict[str, Any]]


class Decision(msgspec.Struct, kw_only=True):
    """One matched rule's fate: emitted, or suppressed for exactly one reason.

    A rule in shadow mode gets outcome `shadow` and no action; its `reason` is what would
    have happened had it been live: None (emitted) or the suppression reason.
    """

    event_id: str
    customer_id: str
    pack: str
    pack_version: int
    rule_id: str
    kind: Literal["offer", "alert"]
    ts: str
    outcome: Literal["emitted", "suppressed", "shadow"]
    reason: str | None
    action_id: str | None
    explanation: list[dict[str, Any]]


def action_id(pack: str, version: int, rule_id: str, event_id: str) -> str:
    """Deterministic id of the action a rule takes on an event."""
    key = f"{pack}\x00{version}\x00{rule_id}\x00{event_id}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


_encoder: Final = msgspec.json.Encoder()


def to_json(record: Action | Decision) -> bytes:
    return _encoder.encode(record)
