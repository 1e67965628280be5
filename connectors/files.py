"""JSON Lines file and stdout sinks."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO


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
