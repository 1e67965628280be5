"""JSON Lines file and stdout sinks."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO


class JsonLinesSink:
    """Appends one record per line to a file, or to standard output for `-`.

    With `truncate=True` an existing file is replaced instead of appended to.
    """

    def __init__(self, target: str | Path, *, truncate: bool = True) -> None:
        self.target = str(target)
        self._owned = self.target != "-"
        if self._owned:
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out: BinaryIO = path.open("wb" if truncate else "ab")
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
