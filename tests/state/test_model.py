"""CustomerState: compact encoding, redelivery memory, size of a typical customer."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from state.model import SEEN_IDS, CustomerState, Ledger, decode_state, encode_state
from state.windows import DAY, HOUR, DistinctWindow, LastEvent, NumericWindow

T0 = 1_714_521_600.0  # 2024-05-01T00:00:00Z


def key(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=8).digest()


def typical_customer(days: int = 30, per_day: int = 2, seed: int = 7) -> CustomerState:
    """A customer with a month of about two transactions a day through six aggregates."""
    rng = random.Random(seed)
    windows: dict[str, Any] = {
        "card_10m": NumericWindow("count", 600.0),
        "spend_24h": NumericWindow("sum", DAY),
        "amount_90d": NumericWindow("stats", 90 * DAY),
        "balance_max_30d": NumericWindow("max", 30 * DAY),
        "devices_180d": DistinctWindow(180 * DAY),
    }
    last = LastEvent(None)
    data = {name: w.new() for name, w in windows.items()}
    state = CustomerState(
        profile={
            "timezone": "Asia/Shanghai",
            "home_country": "CN",
            "products": ["debit_card", "savings"],
            "consent": {"marketing": True},
        }
    )
    n = 0
    for day in range(days):
        for t in sorted(T0 + day * DAY + rng.uniform(8 * HOUR, 22 * HOUR) for _ in range(per_day)):
            n += 1
            amount = round(rng.uniform(5, 3000), 2)
            windows["card_10m"].add(data["card_10m"], t, 1)
            windows["spend_24h"].add(data["spend_24h"], t, amount)
            windows["amount_90d"].add(data["amount_90d"], t, amount)
            windows["balance_max_30d"].add(data["balance_max_30d"], t, rng.uniform(1e3, 5e4))
            windows["devices_180d"].add(data["devices_180d"], t, f"device-{rng.randint(1, 3)}")
            data["last_payroll"] = {"ts": t, "counterparty_id": "employer-1"}
            assert state.remember(key(f"evt-{n}"))
            state.last_ts = t
    assert last.value(data["last_payroll"], state.last_ts) is not None
    state.aggregates["retail"] = data
    state.ledger.fired["retail/card-instalment"] = T0 + 3 * DAY
    state.ledger.offers.append(T0 + 3 * DAY)
    return state


def test_encode_decode_round_trip() -> None:
    state = typical_customer()
    raw = encode_state(state)
    back = decode_state(raw)
    assert back == state
    assert encode_state(back) == raw
    assert back.remember(key("evt-60")) is False  # the redelivery memory survives too


def test_empty_state_round_trip_is_tiny() -> None:
    raw = encode_state(CustomerState())
    assert decode_state(raw) == CustomerState()
    assert len(raw) <= 8
    led = Ledger(fired={"p/r": T0}, offers=[T0], high_alert=T0 + 1)
    assert decode_state(encode_state(CustomerState(ledger=led))).ledger == led


def test_remember_drops_a_repeated_event_id() -> None:
    state = CustomerState()
    assert state.remember(key("a")) is True
    assert state.remember(key("b")) is True
    assert state.remember(key("a")) is False
    assert state.remember(key("b")) is False


def test_remember_forgets_after_seen_ids_newer_ones() -> None:
    state = CustomerState()
    assert state.remember(key("first"))
    for i in range(SEEN_IDS - 1):
        assert state.remember(key(f"newer-{i}"))
    assert state.remember(key("first")) is False  # still among the last SEEN_IDS
    state = CustomerState()
    state.remember(key("first"))
    for i in range(SEEN_IDS):
        state.remember(key(f"newer-{i}"))
    assert state.remember(key("first")) is True  # pushed out by SEEN_IDS newer ids
    assert len(state.seen) == SEEN_IDS * 8


def test_remember_matches_whole_ids_only() -> None:
    """An id whose bytes straddle two remembered ids is not mistaken for one of them."""
    state = CustomerState()
    a, b = bytes(range(8)), bytes(range(8, 16))
    state.remember(a)
    state.remember(b)
    straddle = a[4:] + b[:4]
    assert state.remember(straddle) is True
    assert state.remember(straddle) is False


def test_typical_customer_state_size() -> None:
    state = typical_customer()
    raw = encode_state(state)
    print(f"\ntypical customer state (month, ~2 txns/day, 6 aggregates): {len(raw)} bytes")
    # A long window keeps at most 25 buckets of 12-45 bytes, whatever the activity, and
    # the recent-event-id memory is 256 bytes: a month of daily activity stays under 1.5 KB.
    assert len(raw) < 1536
    data = state.aggregates["retail"]
    del data["amount_90d"], data["balance_max_30d"]
    assert len(encode_state(state)) < 1024


def test_a_long_window_stays_bounded_however_active_the_customer() -> None:
    state = typical_customer()
    before = len(encode_state(state))
    busier = typical_customer(per_day=20)
    assert len(encode_state(busier)) < before + 1024
