"""Sliding windows on event time, stored as plain lists so they encode compactly.

Resolution (the public promise, also in the README):
- Windows up to 24 h are exact: every (time, value) entry is kept until it leaves the window,
  and a value is computed over the entries with `now - window < t <= now`.
- Longer windows keep fixed buckets, each 1/24 of the window (rounded up to whole minutes:
  7 h for 7 days, 30 h for 30 days, 90 h for 90 days), so at most 25 buckets. A bucket
  counts while any part of it overlaps `(now - window, now]`, so a bucketed window may
  include up to one bucket width (1/24 of the window) of older events, never fewer.
- `distinct` keeps each value with the time it was last seen, exact at any window length,
  at most `DISTINCT_CAP` values (the least recently seen are dropped first).
- `last` keeps the latest matching event (its time and the fields rules read); with a
  window, an event older than the window reads as null.

`now` is always the current event's time (epoch seconds). Data is pruned relative to the
newest time seen, so an event that arrives late for its customer cannot see entries already
pruned. In an exact window a late event does not count entries newer than itself; in a
bucketed one it counts its own bucket whole; `distinct` and `last` answer as of the newest
event seen (a value seen again after the late event's time counts as seen).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from typing import Any, Final

HOUR: Final = 3600.0
DAY: Final = 86400.0
EXACT_LIMIT: Final = DAY
DISTINCT_CAP: Final = 256

BUCKETS: Final = 24
"""A window longer than 24 h is kept in buckets 1/24 of its length (whole minutes)."""

Stats = tuple[int, float, float | None, float | None, float | None, float | None]
EMPTY_STATS: Final[Stats] = (0, 0.0, None, None, None, None)
STATS_MEMBERS: Final = ("count", "sum", "mean", "std", "min", "max")

# Bucket layouts, each `[index, ...]` where index = floor(time / width): only what the kind
# needs, so a bucket costs 12-45 bytes encoded. For stats, m2 is the sum of squared
# deviations from the bucket's mean (Welford), so a standard deviation keeps its precision
# for large amounts.
_FRESH: Final[dict[str, Callable[[float], list[Any]]]] = {
    "count": lambda v: [1],
    "sum": lambda v: [v],
    "avg": lambda v: [1, v],
    "min": lambda v: [v],
    "max": lambda v: [v],
    "stats": lambda v: [1, v, 0.0, v, v],
}


def bucket_width(window: float) -> float:
    """The bucket width used for a window, or 0 for an exact window."""
    if window <= EXACT_LIMIT:
        return 0.0
    return max(60.0, math.ceil(window / BUCKETS / 60.0) * 60.0)


class NumericWindow:
    """count, sum, avg, min, max or stats over a sliding window.

    Data for an exact window: `[times, values]` (sorted by time; no values for count).
    Data for a bucketed window: a list of buckets (see `_FRESH`), sorted by index.
    """

    __slots__ = ("_fresh", "kind", "width", "window")

    def __init__(self, kind: str, window: float) -> None:
        self.kind = kind
        self.window = window
        self.width = bucket_width(window)
        self._fresh = _FRESH[kind]

    def new(self) -> list[Any]:
        return [] if self.width else [[], []]

    def add(self, data: list[Any], now: float, value: float) -> None:
        if self.width:
            self._add_bucketed(data, now, value)
            return
        times: list[float] = data[0]
        values: list[float] = data[1]  # stays empty for count: times are enough
        keep = self.kind != "count"
        if not times or now >= times[-1]:
            cut = now - self.window
            if times and times[0] <= cut:
                drop = bisect_right(times, cut)
                del times[:drop]
                del values[:drop]
            times.append(now)
            if keep:
                values.append(value)
        else:
            i = bisect_right(times, now)
            times.insert(i, now)
            if keep:
                values.insert(i, value)

    def _add_bucketed(self, data: list[list[Any]], now: float, value: float) -> None:
        index = int(now // self.width)
        if data and data[-1][0] == index:
            self._push(data[-1], value)
            return
        fresh = [index, *self._fresh(value)]
        if not data or index > data[-1][0]:
            first = int((now - self.window) // self.width)
            drop = 0
            while drop < len(data) and data[drop][0] < first:
                drop += 1
            if drop:
                del data[:drop]
            data.append(fresh)
            return
        for b in data:  # a late event: find or insert its bucket
            if b[0] == index:
                self._push(b, value)
                return
        insort(data, fresh)

    def _push(self, b: list[Any], value: float) -> None:
        kind = self.kind
        if kind == "count":
            b[1] += 1
        elif kind == "sum":
            b[1] += value
        elif kind == "avg":
            b[1] += 1
            b[2] += value
        elif kind == "min":
            if value < b[1]:
                b[1] = value
        elif kind == "max":
            if value > b[1]:
                b[1] = value
        else:
            _push_stats(b, value)

    def value(self, data: list[Any], now: float) -> Any:
        """The aggregate over `(now - window, now]`: a number, None, or a Stats tuple."""
        lo = now - self.window
        if not self.width:
            times: list[float] = data[0]
            if not times:
                return self._empty()
            i = bisect_right(times, lo)
            j = len(times) if times[-1] <= now else bisect_right(times, now)
            if self.kind == "count":
                return j - i
            return self._reduce(data[1][i:j])
        if not data:
            return self._empty()
        first, last = math.floor(lo / self.width), math.floor(now / self.width)
        i = 0 if data[0][0] >= first else bisect_left(data, first, key=_index)
        j = len(data) if data[-1][0] <= last else bisect_right(data, last, key=_index)
        return self._reduce_buckets(data if i == 0 and j == len(data) else data[i:j])

    def _empty(self) -> Any:
        if self.kind in ("count", "sum"):
            return 0 if self.kind == "count" else 0.0
        return EMPTY_STATS if self.kind == "stats" else None

    def _reduce(self, values: list[float]) -> Any:
        if not values:
            return self._empty()
        kind = self.kind
        if kind == "sum":
            return sum(values)
        if kind == "min":
            return min(values)
        if kind == "max":
            return max(values)
        total = sum(values)
        n = len(values)
        if kind == "avg":
            return total / n
        mean = total / n
        m2 = sum([(v - mean) * (v - mean) for v in values])  # two passes: no cancellation
        return _stats(n, total, m2, min(values), max(values))

    def _reduce_buckets(self, buckets: list[list[Any]]) -> Any:
        if not buckets:
            return self._empty()
        kind = self.kind
        if kind == "count":
            return sum([b[1] for b in buckets])
        if kind == "sum":
            return sum([b[1] for b in buckets])
        if kind == "min":
            return min([b[1] for b in buckets])
        if kind == "max":
            return max([b[1] for b in buckets])
        if kind == "avg":
            return sum([b[2] for b in buckets]) / sum([b[1] for b in buckets])
        if len(buckets) == 1:
            _, n, total, m2, lo, hi = buckets[0]
            return _stats(n, total, m2, lo, hi)
        _, counts, sums, m2s, mins, maxs = zip(*buckets, strict=True)
        n, total = sum(counts), sum(sums)
        mean = total / n
        m2 = sum(m2s) + sum([c * (s / c - mean) ** 2 for c, s in zip(counts, sums, strict=True)])
        return _stats(n, total, m2, min(mins), max(maxs))


def _index(bucket: list[Any]) -> int:
    index: int = bucket[0]
    return index


def _push_stats(b: list[Any], value: float) -> None:
    """Add a value to a stats bucket `[index, n, sum, m2, min, max]` (Welford's update)."""
    n = b[1]
    delta = value - b[2] / n
    b[1] = n + 1
    b[2] += value
    b[3] += delta * (value - b[2] / (n + 1))
    if value < b[4]:
        b[4] = value
    if value > b[5]:
        b[5] = value


def _stats(n: int, total: float, m2: float, lo: float, hi: float) -> Stats:
    """`m2` is the sum of squared deviations from the mean; equal values have std exactly 0."""
    std = math.sqrt(max(m2, 0.0) / n) if lo != hi else 0.0
    return (n, total, total / n, std, lo, hi)


class DistinctWindow:
    """The distinct values seen in a sliding window. Data: `{value: last_seen}`."""

    __slots__ = ("window",)

    def __init__(self, window: float) -> None:
        self.window = window

    def new(self) -> dict[str, float]:
        return {}

    def add(self, data: dict[str, float], now: float, value: str) -> None:
        seen = data.get(value)
        if seen is None or now > seen:
            data.pop(value, None)  # re-insert so dict order is least recently seen first
            late = bool(data) and data[next(reversed(data))] > now
            data[value] = now
            if late:  # an out-of-order event: restore the order by time
                ordered = sorted(data.items(), key=lambda item: item[1])
                data.clear()
                data.update(ordered)
        if len(data) > DISTINCT_CAP:
            del data[next(iter(data))]

    def value(self, data: dict[str, float], now: float) -> dict[str, float]:
        """The values seen in `(now - window, now]`, as a mapping (supports `in` and len()).

        Values are kept least recently seen first, so expiry looks only at the front.
        """
        lo = now - self.window
        while data:
            first = next(iter(data))
            if data[first] > lo:
                break
            del data[first]
        if not data or data[next(reversed(data))] <= now:
            return data
        return {v: t for v, t in data.items() if t <= now}


class LastEvent:
    """The latest matching event: a dict with `ts` and the fields rules read, or None."""

    __slots__ = ("window",)

    def __init__(self, window: float | None) -> None:
        self.window = window

    def value(self, data: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
        if data is None:
            return None
        if self.window is not None and data["ts"] <= now - self.window:
            return None
        return data
