"""Stores: MemoryStore and RocksStore behave alike; StateCache reads once, writes in batches."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rules.ruleset import load_rules
from state.model import CustomerState, decode_state, encode_state
from state.store import MemoryStore, RocksStore, StateCache, Store, expire_idle
from streams.engine import Engine, Record

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "rocks"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[Store] = []

    def make() -> Store:
        store: Store = MemoryStore() if request.param == "memory" else RocksStore(tmp_path / "db")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def state_with(profile_segment: str) -> CustomerState:
    return CustomerState(profile={"segment": profile_segment}, last_ts=1_714_521_600.0)


def test_get_missing_is_none(make_store: StoreFactory) -> None:
    assert make_store().get("nobody") is None


def test_write_puts_and_deletes_in_one_batch(make_store: StoreFactory) -> None:
    store = make_store()
    store.write({"c1": b"one", "c2": b"two", "c3": b"three"})
    store.write({"c1": None, "c2": b"two again", "c4": b"four", "never-stored": None})
    assert store.get("c1") is None
    assert store.get("c2") == b"two again"
    assert dict(store.items()) == {"c2": b"two again", "c3": b"three", "c4": b"four"}


def test_items_round_trips_ids_and_binary_values(make_store: StoreFactory) -> None:
    store = make_store()
    raw = encode_state(state_with("mass"))
    store.write({"客户-1": raw, "c\x00zero": b"\x00\xff"})
    assert dict(store.items()) == {"客户-1": raw, "c\x00zero": b"\x00\xff"}
    assert decode_state(store.get("客户-1") or b"") == state_with("mass")
    store.write({})  # an empty batch is fine
    assert len(dict(store.items())) == 2


@pytest.mark.parametrize("durable", [True, False])
def test_rocks_store_persists_across_close_and_reopen(tmp_path: Path, durable: bool) -> None:
    store = RocksStore(tmp_path / "db", durable=durable)
    store.write({"c1": b"kept", "c2": b"dropped"})
    store.write({"c2": None})
    store.close()
    reopened = RocksStore(tmp_path / "db", durable=durable)
    try:
        assert reopened.get("c1") == b"kept"
        assert reopened.get("c2") is None
        assert dict(reopened.items()) == {"c1": b"kept"}
    finally:
        reopened.close()


class CountingStore:
    """A store that counts reads and remembers every batch written."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.reads: list[str] = []
        self.batches: list[dict[str, bytes | None]] = []

    def get(self, customer_id: str) -> bytes | None:
        self.reads.append(customer_id)
        return self.inner.get(customer_id)

    def write(self, updates: Mapping[str, bytes | None]) -> None:
        self.batches.append(dict(updates))
        self.inner.write(updates)

    def items(self) -> Iterator[tuple[str, bytes]]:
        return self.inner.items()

    def close(self) -> None:
        self.inner.close()


def seeded(make_store: StoreFactory, *ids: str) -> CountingStore:
    store = CountingStore(make_store())
    store.write({cid: encode_state(state_with(cid)) for cid in ids})
    store.batches.clear()
    return store


def test_cache_reads_each_customer_once(make_store: StoreFactory) -> None:
    store = seeded(make_store, "c1")
    cache = StateCache(store)
    first = cache.get("c1")
    assert first is not None and first.profile == {"segment": "c1"}
    assert cache.get("c1") is first  # the live object, not a fresh decode
    assert cache.get("missing") is None
    assert store.reads == ["c1", "missing"]


def test_cache_writes_back_only_marked_states_in_one_batch(make_store: StoreFactory) -> None:
    store = seeded(make_store, "c1", "c2", "c3")
    cache = StateCache(store)
    for cid in ("c1", "c2", "c3"):
        assert cache.get(cid) is not None
    changed = cache.get("c2")
    assert changed is not None
    changed.profile["segment"] = "wealth"
    cache.mark("c2")
    cache.put("new", state_with("new"))
    assert store.batches == []  # nothing is written before flush
    assert cache.flush() == 2
    assert len(store.batches) == 1 and set(store.batches[0]) == {"c2", "new"}
    assert decode_state(store.get("c2") or b"").profile == {"segment": "wealth"}
    assert decode_state(store.get("c1") or b"") == state_with("c1")
    assert cache.flush() == 0  # nothing changed since
    assert len(store.batches) == 1


def test_cache_unmarked_changes_are_not_written(make_store: StoreFactory) -> None:
    store = seeded(make_store, "c1")
    cache = StateCache(store)
    state = cache.get("c1")
    assert state is not None
    state.profile["segment"] = "forgotten"
    cache.flush()
    assert decode_state(store.get("c1") or b"") == state_with("c1")


def test_cache_evicts_least_recently_used_beyond_capacity(make_store: StoreFactory) -> None:
    store = seeded(make_store, "a", "b", "c")
    cache = StateCache(store, capacity=2)
    for cid in ("a", "b", "c"):
        cache.get(cid)
    cache.get("a")  # a is now the most recently used; b the least
    cache.put("d", state_with("d"))
    cache.flush()
    store.reads.clear()
    assert cache.get("a") is not None and cache.get("d") is not None
    assert store.reads == []  # still cached
    assert cache.get("b") is not None and cache.get("c") is not None
    assert store.reads == ["b", "c"]  # evicted, so read again (and still correct)
    assert cache.get("b") == state_with("b")


def test_cache_keeps_changes_of_evicted_states(make_store: StoreFactory) -> None:
    store = seeded(make_store)
    cache = StateCache(store, capacity=1)
    for i in range(5):
        cache.put(f"c{i}", state_with(f"v{i}"))
    assert cache.flush() == 5
    for i in range(5):
        assert cache.get(f"c{i}") == state_with(f"v{i}")


def test_cache_delete(make_store: StoreFactory) -> None:
    store = seeded(make_store, "c1", "c2")
    cache = StateCache(store)
    assert cache.get("c1") is not None
    cache.mark("c1")
    cache.delete("c1")
    cache.delete("c2")  # never read: deleted all the same
    assert cache.get("c1") is None and cache.get("c2") is None
    assert cache.flush() == 2
    assert store.batches[-1] == {"c1": None, "c2": None}
    assert store.get("c1") is None and store.get("c2") is None
    assert StateCache(store).get("c1") is None


def test_cache_put_after_delete_revives_the_customer(make_store: StoreFactory) -> None:
    store = seeded(make_store, "c1")
    cache = StateCache(store)
    cache.delete("c1")
    fresh = state_with("fresh")
    cache.put("c1", fresh)
    assert cache.get("c1") is fresh
    cache.flush()
    assert decode_state(store.get("c1") or b"") == fresh


# --- idle customers expire (Engine state_ttl, in event time) --------------------------------------

TTL_PACK = """
pack: ttl-test
version: 1
aggregates:
  txns_90d: {on: transaction, kind: count, window: 90d}
rules:
  - id: repeat-customer
    kind: alert
    on: transaction
    when: 'agg.txns_90d >= 2'
    severity: low
    channel: queue
"""

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def txn_record(event_id: str, ts: datetime, customer_id: str = "c-1") -> Record:
    doc = {
        "type": "transaction",
        "event_id": event_id,
        "customer_id": customer_id,
        "ts": ts.isoformat(),
        "amount": 10.0,
        "direction": "debit",
        "channel": "card",
    }
    return Record(json.dumps(doc).encode())


@pytest.fixture
def ttl_engine(tmp_path: Path) -> Engine:
    (tmp_path / "pack.yaml").write_text(TTL_PACK)
    return Engine(load_rules([tmp_path]), StateCache(MemoryStore()), state_ttl=7 * 86400.0)


@pytest.mark.parametrize(
    ("idle", "remembered"),
    [
        (timedelta(days=7, seconds=1), False),
        (timedelta(days=30), False),
        (timedelta(days=7), True),  # idle exactly the TTL: not longer, so kept
        (timedelta(days=6, hours=23), True),
    ],
)
def test_engine_forgets_a_customer_idle_longer_than_the_ttl(
    ttl_engine: Engine, idle: timedelta, remembered: bool
) -> None:
    first = ttl_engine.process([txn_record("e-1", T0)])
    assert first.decisions == []
    out = ttl_engine.process([txn_record("e-2", T0 + idle)])  # a later batch: via the store
    fired = [json.loads(d)["rule_id"] for d in out.decisions]
    assert fired == (["repeat-customer"] if remembered else [])  # the count restarted, or not


def test_ttl_is_event_time_and_per_customer(ttl_engine: Engine) -> None:
    out = ttl_engine.process(
        [
            txn_record("a-1", T0, "c-a"),
            txn_record("b-1", T0 + timedelta(days=5), "c-b"),
            txn_record("b-2", T0 + timedelta(days=10), "c-b"),  # b idle 5 days: kept
            txn_record("a-2", T0 + timedelta(days=10), "c-a"),  # a idle 10 days: forgotten
        ]
    )
    assert [json.loads(d)["customer_id"] for d in out.decisions] == ["c-b"]


def test_without_ttl_a_customer_is_kept_however_long_idle(tmp_path: Path) -> None:
    (tmp_path / "pack.yaml").write_text(TTL_PACK)
    engine = Engine(load_rules([tmp_path]), StateCache(MemoryStore()))
    engine.process([txn_record("e-1", T0)])
    out = engine.process([txn_record("e-2", T0 + timedelta(days=60))])
    assert len(out.decisions) == 1


def test_expire_idle_removes_only_customers_idle_before_the_cutoff(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    store.write(
        {
            "old": encode_state(CustomerState(last_ts=1_000.0)),
            "edge": encode_state(CustomerState(last_ts=2_000.0)),
            "new": encode_state(CustomerState(last_ts=3_000.0)),
        }
    )
    assert expire_idle(store, 2_000.0, batch=1) == 1
    assert store.get("old") is None
    assert store.get("edge") is not None and store.get("new") is not None
