"""The scale benchmark's pure parts: Kafka's murmur2 partitioner, event shifting, log marks."""

from __future__ import annotations

from datetime import datetime, timedelta

from bench.scale import faust_marks, murmur2, partition_for, shift_event


def test_murmur2_matches_kafkas_own_test_vectors() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, want in cases.items():
        assert murmur2(data) == want, data


def test_partition_is_the_positive_hash_modulo_the_partitions() -> None:
    assert partition_for(b"21", 4) == (-973932308 & 0x7FFFFFFF) % 4
    assert {partition_for(f"c{i:06d}".encode(), 4) for i in range(100)} == {0, 1, 2, 3}


def test_shift_event_keeps_the_offset_and_renames_the_event() -> None:
    event = {"event_id": "e1-000000001", "ts": "2026-10-01T23:30:00+08:00", "amount": 5.0}
    moved = shift_event(event, timedelta(days=1), "-after")
    assert moved == {"event_id": "e1-000000001-after", "ts": "2026-10-02T23:30:00+08:00",
                     "amount": 5.0}  # fmt: skip
    assert event["ts"] == "2026-10-01T23:30:00+08:00"  # the original is left alone


def test_faust_marks_reads_the_first_line_of_each_mark() -> None:
    log = (
        b"[2026-11-25 10:00:01,250] [7] [INFO] [^---Recovery]: Restoring state from changelog "
        b"topics...\n"
        b"[2026-11-25 10:00:04,750] [7] [INFO] [^---Recovery]: Done reading from changelog "
        b"topics\n"
        b"[2026-11-25 10:00:05,000] [7] [INFO] [^---Recovery]: Worker ready\n"
        b"[2026-11-25 10:09:00,000] [7] [INFO] [^---Recovery]: Worker ready\n"
    )
    marks = faust_marks(log)
    assert set(marks) == {"restoring", "done_reading", "ready"}
    assert marks["done_reading"] - marks["restoring"] == 3.5
    assert marks["ready"] == datetime(2026, 11, 25, 10, 0, 5).timestamp()
