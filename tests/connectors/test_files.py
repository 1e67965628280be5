"""The rotating JSON Lines sink, on disk."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from connectors.base import SinkError
from connectors.files import RotatingJsonLinesSink


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def test_rotates_by_size_keeps_batches_whole_and_deletes_beyond_keep(tmp_path: Path) -> None:
    path = tmp_path / "out" / "actions.jsonl"
    sink = RotatingJsonLinesSink(path, rotate_bytes=1024, keep=2)
    record = b"x" * 299  # 300 bytes a line: three per file
    written = [record[:-3] + f"{n:03d}".encode() for n in range(12)]
    for n in range(0, 12, 3):
        sink.write_batch(written[n : n + 3])
        sink.flush()
    sink.close()
    assert lines(path) == written[9:]
    assert lines(path.with_name("actions.jsonl.1")) == written[6:9]
    assert lines(path.with_name("actions.jsonl.2")) == written[3:6]
    assert not path.with_name("actions.jsonl.3").exists()  # keep=2: the oldest is gone


def test_rotates_by_age_and_appends_after_a_restart(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "a.jsonl"
    sink = RotatingJsonLinesSink(path, rotate_bytes=None, rotate_every_s=60, clock=lambda: now[0])
    sink.write_batch([b"1"])
    now[0] += 59
    sink.write_batch([b"2"])
    now[0] += 1
    sink.write_batch([b"3"])
    sink.close()
    assert lines(path.with_name("a.jsonl.1")) == [b"1", b"2"]
    again = RotatingJsonLinesSink(path, rotate_bytes=None, clock=lambda: now[0])
    again.write_batch([b"4"])
    again.close()
    assert lines(path) == [b"3", b"4"]


class FullDisk:
    """A file that takes half of what is written, then fails as a full disk does."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_full_disk_raises_sink_error_and_leaves_no_partial_batch(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    sink = RotatingJsonLinesSink(path)
    sink.write_batch([b'{"n":1}'])
    real = sink._out
    sink._out = FullDisk(real)  # type: ignore[assignment]
    with pytest.raises(SinkError, match="No space left on device"):
        sink.write_batch([b'{"n":2}', b'{"n":3}'])
    sink._out = real
    sink.write_batch([b'{"n":2}', b'{"n":3}'])  # the caller sends the batch again
    sink.close()
    assert lines(path) == [b'{"n":1}', b'{"n":2}', b'{"n":3}']


def test_a_torn_last_line_from_a_crash_is_cut_off_on_open(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"n":1}\n{"n":2')
    sink = RotatingJsonLinesSink(path)
    sink.write_batch([b'{"n":3}'])
    sink.close()
    assert lines(path) == [b'{"n":1}', b'{"n":3}']
