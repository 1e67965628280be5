"""CustomerState: everything the engine remembers about one customer, encoded compactly.

The record holds only what rules and policy read: the profile fields some loaded rule or the
contact policy uses (never names, phone numbers or addresses), each aggregate's window data,
and the policy ledger. It is encoded with MessagePack. Its size is bounded whatever the
activity: exact windows (up to 24 h) hold what happened in them, longer windows at most 25
buckets, distinct sets at most 256 values; a customer active every day under six aggregates
takes about 1.4 KB (tests/state/test_model.py), the shipped packs' figure is in BENCHMARKS.md.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

SEEN_IDS: Final = 32
"""How many recent event ids per customer are remembered to drop redelivered events."""
_KEY: Final = 8


class Ledger(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Contact-policy memory. Only emitted actions are recorded here.

    `fired`: last emission time per `pack/rule`; `offers`: times of emitted offers within the
    longest cap period; `high_alert`: time of the latest emitted high or critical alert.
    `shadow`: last would-be emission time per `pack/rule` of rules in shadow mode, so that
    their cooldown and dedup mirror what live would do; never read for live rules.
    """

    fired: dict[str, float] = msgspec.field(default_factory=dict, name="f")
    offers: list[float] = msgspec.field(default_factory=list, name="o")
    high_alert: float | None = msgspec.field(default=None, name="h")
    shadow: dict[str, float] = msgspec.field(default_factory=dict, name="x")


class CustomerState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One customer's state. `aggregates` maps an aggregate key to its window data."""

    profile: dict[str, Any] = msgspec.field(default_factory=dict, name="p")
    aggregates: dict[str, Any] = msgspec.field(default_factory=dict, name="a")
    ledger: Ledger = msgspec.field(default_factory=Ledger, name="l")
    seen: bytes = msgspec.field(default=b"", name="s")
    last_ts: float = msgspec.field(default=0.0, name="t")
    offsets: dict[str, int] = msgspec.field(default_factory=dict, name="k")

    def advance(self, source: str, offset: int) -> bool:
        """Record that the input at `offset` of `source` (a topic partition) is applied;
        False if it, or a later one of the same source, already was (a redelivery)."""
        if offset <= self.offsets.get(source, -1):
            return False
        self.offsets[source] = offset
        return True

    def remember(self, event_key: bytes) -> bool:
        """Record an 8-byte event id hash; False if it was already seen (a redelivery)."""
        seen = self.seen
        at = seen.find(event_key)
        while at >= 0:
            if at % _KEY == 0:
                return False
            at = seen.find(event_key, at + 1)
        seen += event_key
        self.seen = seen[-SEEN_IDS * _KEY :]
        return True


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(CustomerState)


def encode_state(state: CustomerState) -> bytes:
    return _encoder.encode(state)


def decode_state(raw: bytes) -> CustomerState:
    return _decoder.decode(raw)
