"""Actions held for quiet hours until their `not_before`, in RocksDB on local disk.

Keys sort by due time, then by the order the caller gives (`<due ms, 15 digits>|<order>`:
the action's partition and offset, so a customer's actions due together come out in the
order they were made), so the due actions are a prefix scan; the same action held twice
(a batch read again) has the same key. Writes are synced to the write-ahead log before
`hold()` returns: the caller commits the action's input offset only after that, so a held
action survives a crash or restart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch, WriteOptions


class HoldStore:
    def __init__(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.path = Path(path)
        self._db: Any = Rdict(str(path), options)  # rocksdict's stubs miss raw mode
        write_options: Any = WriteOptions()
        write_options.sync = True
        self._write_options = write_options
        self._count = sum(1 for _ in self._db.keys())  # noqa: SIM118 (Rdict)
        self._lock = threading.Lock()  # hold() and release() may run on different threads

    def hold(self, items: Iterable[tuple[float, str, bytes]]) -> int:
        """Keeps each (due unix time, order, record); returns how many were new."""
        batch = WriteBatch(raw_mode=True)
        new = 0
        for due, order, record in items:
            key = _key(due, order)
            if self._db.get(key) is None:
                new += 1
            batch.put(key, record)
        with self._lock:
            if new or len(batch):
                self._db.write(batch, self._write_options)
            self._count += new
        return new

    def due(self, now: float, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, record) pairs due at `now`, the earliest first."""
        bound = _key(now, "\uffff")
        out: list[tuple[bytes, bytes]] = []
        for key, value in self._db.items():
            if key > bound or len(out) >= limit:
                break
            out.append((key, value))
        return out

    def release(self, keys: Iterable[bytes]) -> None:
        """Forgets actions that have been delivered."""
        batch = WriteBatch(raw_mode=True)
        gone = 0
        for key in keys:
            if self._db.get(key) is not None:
                gone += 1
            batch.delete(key)
        with self._lock:
            self._db.write(batch, self._write_options)
            self._count -= gone

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self._db.flush()
        self._db.close()


def _key(due: float, order: str) -> bytes:
    return f"{max(0, int(due * 1000)):015d}|{order}".encode()
