"""JSON Lines file sinks: a plain file (or standard output), and a rotating file."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from connectors.base import SinkError


class JsonLinesSink:
    """Writes one record per line to a file, to standard output for `-`, or to an open
    binary stream (which it does not close).

    With `truncate=True` an existing file is replaced instead of appended to.
    """

    def __init__(self, target: str | Path | BinaryIO, *, truncate: bool = True) -> None:
        self._owned = not isinstance(target, BinaryIO | io.IOBase) and str(target) != "-"
        if isinstance(target, BinaryIO | io.IOBase):
            self._out: BinaryIO = target
        elif self._owned:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = path.open("wb" if truncate else "ab")
        else:
            self._out = sys.stdout.buffer

    def write_batch(self, records: Sequence[bytes]) -> None:
        if records:
            self._out.write(b"\n".join(records) + b"\n")

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._out.close()


class RotatingJsonLinesSink:
    """Appends one record per line to `path`; rotates it to `path.1` (older files shift to
    `.2`, `.3`, ...; beyond `keep` they are deleted) before a batch would take it past
    `rotate_bytes`, or once it is `rotate_every_s` old. A batch is never split across two
    files. With `fsync`, `flush()` also forces the data to disk. A failing disk (full, gone)
    raises `SinkError` and leaves no partial batch behind; a torn last line left by a crash
    is cut off when the file is opened again."""

    def __init__(
        self,
        path: str | Path,
        *,
        rotate_bytes: int | None = 100 * 1024 * 1024,
        rotate_every_s: float | None = None,
        keep: int = 10,
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rotate_bytes = rotate_bytes
        self._rotate_every_s = rotate_every_s
        self._keep = keep
        self._fsync = fsync
        self._clock = clock
        self._open()

    def _open(self) -> None:
        self._out = self.path.open("ab")
        self._size = self._out.tell()
        if self._size:  # a crash may have left half a line: it would glue onto the next
            with self.path.open("rb") as f:
                f.seek(max(0, self._size - 65536))
                tail = f.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                self._size = self._size - len(tail) + cut + 1 if cut >= 0 else 0
                self._out.truncate(self._size)
        self._opened = self._clock()

    def write_batch(self, records: Sequence[bytes]) -> None:
        if not records:
            return
        data = b"\n".join(records) + b"\n"
        try:
            if self._size and self._due(len(data)):
                self.rotate()
            self._out.write(data)
            self._out.flush()
        except OSError as exc:
            self._undo()
            raise SinkError(f"file {self.path}: {exc.strerror or exc}") from None
        self._size += len(data)

    def _undo(self) -> None:
        """Cuts the file back to its last complete batch."""
        with contextlib.suppress(OSError, ValueError):
            self._out.truncate(self._size)
            self._out.seek(self._size)

    def _due(self, incoming: int) -> bool:
        too_big = self._rotate_bytes is not None and self._size + incoming > self._rotate_bytes
        too_old = (
            self._rotate_every_s is not None
            and self._clock() - self._opened >= self._rotate_every_s
        )
        return too_big or too_old

    def rotate(self) -> None:
        """Closes the live file and starts a new one (a no-op on an empty file)."""
        self.flush()
        self._out.close()
        if self._size:
            for n in range(self._keep, 0, -1):
                older = self._numbered(n)
                if n == self._keep:
                    older.unlink(missing_ok=True)
                elif older.exists():
                    older.rename(self._numbered(n + 1))
            self.path.rename(self._numbered(1))
        self._open()

    def _numbered(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def flush(self) -> None:
        try:
            self._out.flush()
            if self._fsync:
                os.fsync(self._out.fileno())
        except OSError as exc:
            raise SinkError(f"file {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if not self._out.closed:
            self.flush()
            self._out.close()
