"""The rotating JSON Lines sink, on disk."""

from __future__ import annotations

from pathlib import Path

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
