"""Where encoded customer states live: a small Store protocol and its implementations.

A store maps a customer id to the encoded `CustomerState` bytes. It knows nothing of rules
or events, so the same engine runs on a dict (tests), RocksDB on local disk (replay,
backtest, demo) or a Faust table (the Kafka worker, in `streams/`).

`StateCache` sits between the engine and a store: it decodes each customer once, keeps
recently used customers in memory and writes changed ones back in one batch at `flush()`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from state.model import CustomerState, decode_state, encode_state


class Store(Protocol):
    """Encoded customer states by customer id."""

    def get(self, customer_id: str) -> bytes | None: ...

    def write(self, updates: Mapping[str, bytes | None]) -> None:
        """Apply puts (bytes) and deletes (None) as one batch."""

    def items(self) -> Iterator[tuple[str, bytes]]: ...

    def close(self) -> None: ...


class MemoryStore:
    """A store in a dict: for tests and short-lived runs."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, customer_id: str) -> bytes | None:
        return self.data.get(customer_id)

    def write(self, updates: Mapping[str, bytes | None]) -> None:
        for key, value in updates.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def items(self) -> Iterator[tuple[str, bytes]]:
        return iter(list(self.data.items()))

    def close(self) -> None:
        pass


class RocksStore:
    """A store in a RocksDB database on local disk, through rocksdict.

    Writes go in one WriteBatch. `durable=False` skips RocksDB's write-ahead log: right for
    replay and backtest (the input file is the source of truth), wrong where the store is the
    only copy.
    """

    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.path = Path(path)
        self._db = Rdict(str(path), options)
        # rocksdict's stubs declare disable_wal a method; at run time it is a property.
        write_options: Any = WriteOptions()
        write_options.disable_wal = not durable
        self._write_options = write_options

    def get(self, customer_id: str) -> bytes | None:
        value: bytes | None = self._db.get(customer_id.encode())
        return value

    def write(self, updates: Mapping[str, bytes | None]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in updates.items():
            if value is None:
                batch.delete(key.encode())
            else:
                batch.put(key.encode(), value)
        self._db.write(batch, self._write_options)

    def items(self) -> Iterator[tuple[str, bytes]]:
        for key, value in self._db.items():
            assert isinstance(key, bytes) and isinstance(value, bytes)
            yield key.decode(), value

    def close(self) -> None:
        self._db.flush()
        self._db.close()


class _LastSeen(msgspec.Struct):
    t: float = msgspec.field(default=0.0, name="t")


_last_seen = msgspec.msgpack.Decoder(_LastSeen)


def expire_idle(store: Store, before: float, batch: int = 10_000) -> int:
    """Delete every customer whose latest event is older than `before` (epoch seconds).

    Reads only each record's last-event time, and deletes in batches; returns how many.
    """
    doomed: dict[str, bytes | None] = {}
    removed = 0
    for customer_id, raw in store.items():
        if _last_seen.decode(raw).t < before:
            doomed[customer_id] = None
            if len(doomed) >= batch:
                store.write(doomed)
                removed += len(doomed)
                doomed = {}
    if doomed:
        store.write(doomed)
        removed += len(doomed)
    return removed


class StateCache:
    """Decoded customer states over a Store, written back in batches.

    `get` returns the live object: mutate it, then `mark(customer_id)`. `flush()` encodes
    and writes every marked state in one batch. At most `capacity` clean states stay cached.
    """

    def __init__(self, store: Store, capacity: int = 100_000) -> None:
        self.store = store
        self.capacity = capacity
        self._cache: OrderedDict[str, CustomerState] = OrderedDict()
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()

    def get(self, customer_id: str) -> CustomerState | None:
        state = self._cache.get(customer_id)
        if state is not None:
            self._cache.move_to_end(customer_id)
            return state
        if customer_id in self._deleted:
            return None
        raw = self.store.get(customer_id)
        if raw is None:
            return None
        state = decode_state(raw)
        self._remember(customer_id, state)
        return state

    def put(self, customer_id: str, state: CustomerState) -> None:
        """Cache a (new or replaced) state and mark it to be written."""
        self._deleted.discard(customer_id)
        self._remember(customer_id, state)
        self._dirty.add(customer_id)

    def mark(self, customer_id: str) -> None:
        self._dirty.add(customer_id)

    def delete(self, customer_id: str) -> None:
        self._cache.pop(customer_id, None)
        self._dirty.discard(customer_id)
        self._deleted.add(customer_id)

    def flush(self) -> int:
        """Write every changed state in one batch; return how many were written."""
        updates: dict[str, bytes | None] = {k: None for k in self._deleted}
        for key in self._dirty:
            updates[key] = encode_state(self._cache[key])
        if updates:
            self.store.write(updates)
        self._dirty.clear()
        self._deleted.clear()
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return len(updates)

    def _remember(self, customer_id: str, state: CustomerState) -> None:
        self._cache[customer_id] = state
        self._cache.move_to_end(customer_id)
