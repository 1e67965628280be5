"""Sliding windows: exact edges, values against a brute-force reference, buckets, late events."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.windows import (
    DAY,
    DISTINCT_CAP,
    EMPTY_STATS,
    HOUR,
    DistinctWindow,
    LastEvent,
    NumericWindow,
    bucket_width,
)

T0 = 1_714_521_600.0  # 2024-05-01T00:00:00Z
MINUTE = 60.0
NUMERIC_KINDS = ("count", "sum", "avg", "min", "max", "stats")
EXACT_WINDOWS = (1.5, 10 * MINUTE, HOUR, 6 * HOUR, DAY)
BUCKETED_WINDOWS = (DAY + 1, 3 * DAY, 7 * DAY, 7 * DAY + 1, 30 * DAY, 90 * DAY)


def reference(kind: str, values: list[float]) -> Any:
    """The aggregate computed the slow, obvious way."""
    if kind == "count":
        return len(values)
    if kind == "sum":
        return math.fsum(values)
    if not values:
        return EMPTY_STATS if kind == "stats" else None
    if kind == "avg":
        return statistics.fmean(values)
    if kind == "min":
        return min(values)
    if kind == "max":
        return max(values)
    return (
        len(values),
        math.fsum(values),
        statistics.fmean(values),
        statistics.pstdev(values),
        min(values),
        max(values),
    )


def in_window(entries: Iterable[tuple[float, float]], lo: float, hi: float) -> list[float]:
    return [v for t, v in entries if lo < t <= hi]


def assert_close(kind: str, got: Any, want: Any, scale: float) -> None:
    """Equal up to float rounding; `scale` is the largest magnitude among the values."""
    if kind == "count":
        assert got == want
        return
    if kind == "stats":
        assert (got is EMPTY_STATS or got == EMPTY_STATS) == (want == EMPTY_STATS)
        if want == EMPTY_STATS:
            assert got == EMPTY_STATS
            return
        n, total, mean, std, lo, hi = got
        assert n == want[0]
        assert lo == want[4] and hi == want[5]
        assert math.isclose(total, want[1], rel_tol=1e-9, abs_tol=1e-9 * scale * n)
        assert math.isclose(mean, want[2], rel_tol=1e-9, abs_tol=1e-9 * scale)
        assert math.isclose(std, want[3], rel_tol=1e-7, abs_tol=1e-9 * scale)
        return
    if want is None:
        assert got is None
        return
    assert got is not None
    assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9 * scale * 100)


amounts = st.one_of(
    st.integers(0, 10**9).map(lambda c: c / 100),  # money: whole cents up to 10 million
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda v: round(v, 6)),
)


@st.composite
def in_order_events(draw: st.DrawFn, window: float) -> list[tuple[float, float]]:
    """Non-decreasing event times, with gaps on the scale of the window (ties included)."""
    gaps = draw(
        st.lists(
            st.one_of(
                st.just(0.0),
                st.floats(0, window * 0.6, allow_nan=False),
                st.sampled_from([window, window / 2]),
            ),
            min_size=1,
            max_size=40,
        )
    )
    values = draw(st.lists(amounts, min_size=len(gaps), max_size=len(gaps)))
    times: list[float] = []
    t = T0
    for gap in gaps:
        t += gap
        times.append(t)
    return list(zip(times, values, strict=True))


# --- exact windows -----------------------------------------------------------------------


def test_windows_up_to_24h_are_exact_and_longer_ones_bucketed() -> None:
    assert bucket_width(10 * MINUTE) == 0
    assert bucket_width(DAY) == 0
    assert bucket_width(DAY + 1) == HOUR + MINUTE  # 1/24 of the window, whole minutes up
    assert bucket_width(7 * DAY) == 7 * HOUR
    assert bucket_width(30 * DAY) == 30 * HOUR
    assert bucket_width(90 * DAY) == 90 * HOUR


def test_a_bucketed_window_keeps_at_most_25_buckets() -> None:
    w = NumericWindow("stats", 90 * DAY)
    data = w.new()
    for i in range(400):
        w.add(data, T0 + i * 6 * HOUR, float(i))
    assert len(data) <= 25


@pytest.mark.parametrize("kind", NUMERIC_KINDS)
def test_exact_window_edge_entry_exactly_window_old_is_out(kind: str) -> None:
    w = NumericWindow(kind, 10 * MINUTE)
    data = w.new()
    w.add(data, T0, 5.0)
    # 9 min 59.999 s later the entry is still in; exactly 10 min later it is out.
    assert w.value(data, T0 + 599.999) == reference(kind, [5.0])
    assert w.value(data, T0 + 600.0) == reference(kind, [])


def test_exact_window_edge_when_the_newer_event_is_added() -> None:
    w = NumericWindow("count", 10 * MINUTE)
    data = w.new()
    w.add(data, T0, 1)
    w.add(data, T0 + 599.999, 1)
    assert w.value(data, T0 + 599.999) == 2
    w.add(data, T0 + 600.0, 1)
    assert w.value(data, T0 + 600.0) == 2  # the first one, exactly 10 minutes old, is out


@pytest.mark.parametrize(
    ("kind", "empty"),
    [
        ("count", 0),
        ("sum", 0.0),
        ("stats", EMPTY_STATS),
        ("avg", None),
        ("min", None),
        ("max", None),
    ],
)
@pytest.mark.parametrize("window", [10 * MINUTE, 30 * DAY])
def test_empty_window_values(kind: str, empty: Any, window: float) -> None:
    w = NumericWindow(kind, window)
    data = w.new()
    got = w.value(data, T0)
    assert got == empty and type(got) is type(empty)
    w.add(data, T0, 7.0)
    got = w.value(data, T0 + 400 * DAY)  # everything has left the window
    assert got == empty and type(got) is type(empty)


def test_stats_members_on_a_small_example() -> None:
    w = NumericWindow("stats", HOUR)
    data = w.new()
    for i, v in enumerate([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]):
        w.add(data, T0 + i, v)
    assert w.value(data, T0 + 10) == (8, 40.0, 5.0, 2.0, 2.0, 9.0)


@pytest.mark.parametrize("window", [DAY, 7 * DAY, 90 * DAY])
@pytest.mark.parametrize("amount", [0.1, 1234.56, 999_999.99, 12_345_678.9])
def test_stats_of_identical_amounts_has_zero_spread(window: float, amount: float) -> None:
    """A customer paying the same large amount again and again has a standard deviation of 0."""
    w = NumericWindow("stats", window)
    data = w.new()
    for i in range(25):
        w.add(data, T0 + i * 5 * HOUR, amount)  # spread over several buckets
    n, _total, mean, std, lo, hi = w.value(data, T0 + 5 * DAY)
    assert (n, lo, hi) == (25 if window > DAY else 5, amount, amount)
    assert math.isclose(mean, amount, rel_tol=1e-12)
    assert std == 0.0


@settings(max_examples=100, deadline=None)
@given(
    window=st.sampled_from([HOUR, DAY, 7 * DAY, 90 * DAY]),
    base=st.integers(10**4, 10**9),
    cents=st.lists(st.integers(-300, 300), min_size=2, max_size=40),
)
def test_stats_spread_of_large_close_amounts_is_precise(
    window: float, base: int, cents: list[int]
) -> None:
    """Amounts of up to 10 million that differ by cents: the spread is not lost to rounding."""
    values = [(base + c) / 100 for c in cents]
    w = NumericWindow("stats", window)
    data = w.new()
    for i, v in enumerate(values):
        w.add(data, T0 + i * 10 * MINUTE * (window / HOUR) / 50, v)
    std = w.value(data, T0 + window / 2)[3]
    want = statistics.pstdev(values)
    assert math.isclose(std, want, rel_tol=1e-6, abs_tol=1e-9), (std, want)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(NUMERIC_KINDS),
    window=st.sampled_from(EXACT_WINDOWS),
    data=st.data(),
)
def test_exact_windows_match_brute_force(kind: str, window: float, data: st.DataObject) -> None:
    events = data.draw(in_order_events(window))
    w = NumericWindow(kind, window)
    state = w.new()
    scale = max(abs(v) for _, v in events) or 1.0
    for i, (t, v) in enumerate(events):
        w.add(state, t, v)
        want = reference(kind, in_window(events[: i + 1], t - window, t))
        assert_close(kind, w.value(state, t), want, scale)
    # and at a later time, with no new event
    later = events[-1][0] + data.draw(st.floats(0, window * 1.5, allow_nan=False))
    assert_close(
        kind,
        w.value(state, later),
        reference(kind, in_window(events, later - window, later)),
        scale,
    )


# --- bucketed windows ----------------------------------------------------------------------


def bucket_rule(entries: list[tuple[float, float]], window: float, now: float) -> list[float]:
    """What the docstring promises: every bucket overlapping (now - window, now] counts."""
    width = bucket_width(window)
    return [v for t, v in entries if (t - t % width) + width > now - window and t <= now]


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(NUMERIC_KINDS),
    window=st.sampled_from(BUCKETED_WINDOWS),
    data=st.data(),
)
def test_bucketed_windows_over_include_by_at_most_one_bucket(
    kind: str, window: float, data: st.DataObject
) -> None:
    events = data.draw(in_order_events(window))
    width = bucket_width(window)
    w = NumericWindow(kind, window)
    count = NumericWindow("count", window)
    state, count_state = w.new(), count.new()
    scale = max(abs(v) for _, v in events) or 1.0
    for i, (t, v) in enumerate(events):
        w.add(state, t, v)
        count.add(count_state, t, 1)
        seen = events[: i + 1]
        exact = len(in_window(seen, t - window, t))
        widest = len(in_window(seen, t - window - width, t))
        got = count.value(count_state, t)
        assert exact <= got <= widest  # never fewer, never more than window + one bucket
        assert_close(kind, w.value(state, t), reference(kind, bucket_rule(seen, window, t)), scale)


def test_bucketed_window_counts_the_whole_oldest_bucket() -> None:
    w = NumericWindow("count", 7 * DAY)  # 7-hour buckets
    start = T0 - T0 % w.width  # a bucket boundary
    data = w.new()
    w.add(data, start + 10 * MINUTE, 1)  # in the bucket [start, start + 7h)
    edge = start + 7 * DAY
    assert w.value(data, edge) == 1  # exactly 7 days minus 10 minutes old: in
    assert w.value(data, edge + w.width - 1) == 1  # older than 7 days, same bucket: still in
    assert w.value(data, edge + w.width) == 0  # the bucket no longer overlaps the window


# --- late (out-of-order) events ----------------------------------------------------------------


def test_late_event_sees_its_own_window_without_newer_entries() -> None:
    w = NumericWindow("sum", 10 * MINUTE)
    data = w.new()
    for t, v in [(T0, 1.0), (T0 + 100, 2.0), (T0 + 200, 4.0)]:
        w.add(data, t, v)
    w.add(data, T0 + 150, 8.0)  # late
    assert w.value(data, T0 + 150) == 11.0  # 1 + 2 + 8: not the newer 4
    assert w.value(data, T0 + 200) == 15.0  # the newest event now sees the late one too
    assert w.value(data, T0 + 650) == 14.0  # the entry at T0 has left


def test_late_event_cannot_see_entries_already_pruned() -> None:
    w = NumericWindow("count", 10 * MINUTE)
    data = w.new()
    w.add(data, T0, 1)
    w.add(data, T0 + 700, 1)  # prunes the entry at T0
    w.add(data, T0 + 500, 1)  # late: T0 would be in its window, but it is gone
    assert w.value(data, T0 + 500) == 1
    assert w.value(data, T0 + 700) == 2


def test_late_event_in_an_older_bucket_does_not_count_newer_buckets() -> None:
    w = NumericWindow("sum", 30 * DAY)  # 1-day buckets
    data = w.new()
    w.add(data, T0 + 5 * DAY, 100.0)
    w.add(data, T0 + 1 * DAY, 1.0)  # late, in an older bucket
    w.add(data, T0 + 1 * DAY + 60, 2.0)  # late, same older bucket
    assert w.value(data, T0 + 1 * DAY + 60) == 3.0
    assert w.value(data, T0 + 5 * DAY) == 103.0
    assert [b[0] for b in data] == sorted(b[0] for b in data)


@settings(max_examples=100, deadline=None)
@given(
    window=st.sampled_from(EXACT_WINDOWS[1:]),
    offsets=st.lists(st.floats(0, 2 * DAY, allow_nan=False), min_size=1, max_size=40),
    values=st.lists(st.integers(0, 10**6), min_size=40, max_size=40),
)
def test_late_events_in_exact_windows_stay_within_their_own_window(
    window: float, offsets: list[float], values: list[int]
) -> None:
    """Arrival order is random. An event counts only entries at or before its own time,
    never one that left its window, and misses only entries pruned by a newer event."""
    w = NumericWindow("count", window)
    s = NumericWindow("sum", window)
    cdata, sdata = w.new(), s.new()
    seen: list[tuple[float, float]] = []
    newest = -math.inf
    for off, v in zip(offsets, values, strict=False):
        t = T0 + off
        w.add(cdata, t, 1)
        s.add(sdata, t, float(v))
        seen.append((t, float(v)))
        newest = max(newest, t)
        full = in_window(seen, t - window, t)
        surely_kept = in_window(seen, max(t, newest) - window, t)
        assert len(surely_kept) <= w.value(cdata, t) <= len(full)
        assert math.fsum(surely_kept) <= s.value(sdata, t) <= math.fsum(full)
        if t == newest:
            assert w.value(cdata, t) == len(full)
            assert s.value(sdata, t) == math.fsum(full)


# --- distinct -----------------------------------------------------------------------------------


def test_distinct_membership_and_expiry_at_the_edge() -> None:
    w = DistinctWindow(10 * MINUTE)
    data = w.new()
    w.add(data, T0, "dev-a")
    w.add(data, T0 + 60, "dev-b")
    w.add(data, T0 + 120, "dev-a")  # seen again: its time moves on
    seen = w.value(data, T0 + 120)
    assert "dev-a" in seen and "dev-b" in seen and "dev-c" not in seen
    assert len(seen) == 2
    assert set(w.value(data, T0 + 60 + 599.999)) == {"dev-a", "dev-b"}
    assert set(w.value(data, T0 + 660)) == {"dev-a"}  # dev-b exactly 10 minutes old: out
    assert set(w.value(data, T0 + 720)) == set()
    assert len(w.value(w.new(), T0)) == 0


def test_distinct_long_window_is_exact() -> None:
    w = DistinctWindow(180 * DAY)
    data = w.new()
    w.add(data, T0, "payee-1")
    assert "payee-1" in w.value(data, T0 + 180 * DAY - 0.001)
    assert "payee-1" not in w.value(data, T0 + 180 * DAY)


def test_distinct_late_event_does_not_see_values_first_seen_after_it() -> None:
    w = DistinctWindow(HOUR)
    data = w.new()
    w.add(data, T0, "a")
    w.add(data, T0 + 600, "b")
    w.add(data, T0 + 300, "a")  # late re-sighting of an older value keeps the newer time
    assert set(w.value(data, T0 + 300)) == {"a"}
    assert set(w.value(data, T0 + 600)) == {"a", "b"}


def test_distinct_cap_drops_the_least_recently_seen() -> None:
    w = DistinctWindow(DAY)
    data = w.new()
    for i in range(DISTINCT_CAP):
        w.add(data, T0 + i, f"v{i}")
    w.add(data, T0 + DISTINCT_CAP, "v0")  # v0 is now the most recently seen
    w.add(data, T0 + DISTINCT_CAP + 1, "new")
    seen = w.value(data, T0 + DISTINCT_CAP + 1)
    assert len(seen) == DISTINCT_CAP
    assert "v0" in seen and "new" in seen
    assert "v1" not in seen  # the least recently seen went first
    w.add(data, T0 + DISTINCT_CAP + 2, "newer")
    assert "v2" not in w.value(data, T0 + DISTINCT_CAP + 2)


def test_distinct_cap_with_a_late_event_still_drops_the_least_recently_seen() -> None:
    w = DistinctWindow(DAY)
    data = w.new()
    for i in range(DISTINCT_CAP):
        w.add(data, T0 + 1000 + i, f"v{i}")
    w.add(data, T0, "late")  # arrives late: seen before every other value
    seen = w.value(data, T0 + 1000 + DISTINCT_CAP)
    assert len(seen) == DISTINCT_CAP
    assert "v0" in seen and "late" not in seen


@settings(max_examples=60, deadline=None)
@given(
    sightings=st.lists(
        st.tuples(st.floats(0, 3 * HOUR, allow_nan=False), st.sampled_from("abcdefgh")),
        min_size=1,
        max_size=40,
    ),
)
def test_distinct_matches_brute_force_in_order(sightings: list[tuple[float, str]]) -> None:
    window = HOUR
    w = DistinctWindow(window)
    data = w.new()
    events = sorted(sightings)
    for i, (off, value) in enumerate(events):
        now = T0 + off
        w.add(data, now, value)
        want = {v for o, v in events[: i + 1] if now - window < T0 + o <= now}
        assert set(w.value(data, now)) == want


# --- last ---------------------------------------------------------------------------------------


def test_last_without_window_is_the_latest_event_whatever_its_age() -> None:
    w = LastEvent(None)
    assert w.value(None, T0) is None
    latest = {"ts": T0, "amount": 12.5}
    assert w.value(latest, T0 + 400 * DAY) == latest


def test_last_with_window_reads_null_once_older_than_the_window() -> None:
    w = LastEvent(HOUR)
    latest = {"ts": T0, "amount": 60000.0}
    assert w.value(latest, T0 + HOUR - 0.001) == latest
    assert w.value(latest, T0 + HOUR) is None
    assert w.value(None, T0) is None
