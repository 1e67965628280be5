"""Sliding windows on event time, stored as plain lists so they encode compactly.

Resolution (the public promise, also in the README):
- Windows up to 24 h are exact: every (time, value) entry is kept until it leaves the window,
  and a value is computed over the entries with `now - window < t <= now`.
- Longer windows keep fixed buckets: 1 hour wide for windows up to 7 days, 1 day wide beyond.
  A bucket counts while any part of it overlaps `(now - window, now]`, so a bucketed window
  may include up to one bucket width of older events, never fewer.
- `distinct` keeps each value with the time it was last seen, exact at any window length,
  at most `DISTINCT_CAP` values (the least recently seen are dropped first).
- `last` keeps the latest matching event (its time and the fields rules read); with a
  window, an event older than the window reads as null.

`now` is always the current event's time (epoch seconds). Data is pruned relative to the
newest time seen, so an event that arrives late for its customer still sees its own window
(entries newer than it are not counted) but cannot see entries already pruned.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from typing import Any, Final

HOUR: Final = 3600.0
DAY: Final = 86400.0
EXACT_LIMIT: Final = DAY
DISTINCT_CAP: Final = 256

Stats = tuple[int, float, float | None, float | None, float | None, float | None]
EMPTY_STATS: Final[Stats] = (0, 0.0, None, None, None, None)
STATS_MEMBERS: Final = ("count", "sum", "mean", "std", "min", "max")

# Bucket layout: [start, count, sum, sumsq, min, max]
_START, _COUNT, _SUM, _SUMSQ, _MIN, _MAX = range(6)


def bucket_width(window: float) -> float:
    """The bucket width used for a window, or 0 for an exact window."""
    if window <= EXACT_LIMIT:
        return 0.0
    return HOUR if window <= 7 * DAY else DAY


class NumericWindow:
    """count, sum, avg, min, max or stats over a sliding window.

    Data for an exact window: `[times, values]` (sorted by time).
    Data for a bucketed window: a list of buckets `[start, count, sum, sumsq, min, max]`.
    """

    __slots__ = ("kind", "width", "window")

    def __init__(self, kind: str, window: float) -> None:
        self.kind = kind
        self.window = window
        self.width = bucket_width(window)

    def new(self) -> list[Any]:
        return [] if self.width else [[], []]

    def add(self, data: list[Any], now: float, value: float) -> None:
        if self.width:
            self._add_bucketed(data, now, value)
            return
        times: list[float] = data[0]
        values: list[float] = data[1]
        if not times or now >= times[-1]:
            cut = now - self.window
            if times and times[0] <= cut:
                drop = bisect_right(times, cut)
                del times[:drop]
                del values[:drop]
            times.append(now)
            values.append(value)
        else:
            i = bisect_right(times, now)
            times.insert(i, now)
            values.insert(i, value)

    def _add_bucketed(self, data: list[list[float]], now: float, value: float) -> None:
        start = now - now % self.width
        if data and data[-1][_START] == start:
            b = data[-1]
            b[_COUNT] += 1
            b[_SUM] += value
            b[_SUMSQ] += value * value
            if value < b[_MIN]:
                b[_MIN] = value
            if value > b[_MAX]:
                b[_MAX] = value
            return
        fresh = [start, 1, value, value * value, value, value]
        if not data or start > data[-1][_START]:
            cut = now - self.window - self.width
            drop = 0
            while drop < len(data) and data[drop][_START] <= cut:
                drop += 1
            if drop:
                del data[:drop]
            data.append(fresh)
            return
        for b in data:  # a late event: find or insert its bucket
            if b[_START] == start:
                b[_COUNT] += 1
                b[_SUM] += value
                b[_SUMSQ] += value * value
                b[_MIN] = min(b[_MIN], value)
                b[_MAX] = max(b[_MAX], value)
                return
        insort(data, fresh)

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
        i = bisect_right(data, lo - self.width, key=_start)
        j = len(data) if not data or data[-1][_START] <= now else bisect_right(data, now, key=_start)
        chosen = data if i == 0 and j == len(data) else data[i:j]
        if self.kind == "count":
            return int(sum([b[_COUNT] for b in chosen]))
        return self._reduce_buckets(chosen)

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
        var = sum([(v - mean) * (v - mean) for v in values]) / n  # two-pass: no cancellation
        return (n, total, mean, math.sqrt(var), min(values), max(values))

    def _reduce_buckets(self, buckets: list[list[float]]) -> Any:
        if not buckets:
            return self._empty()
        kind = self.kind
        if len(buckets) == 1:
            b = buckets[0]
            n, total, sumsq, lo, hi = int(b[_COUNT]), b[_SUM], b[_SUMSQ], b[_MIN], b[_MAX]
        else:
            _, counts, sums, sumsqs, mins, maxs = zip(*buckets, strict=True)
            if kind == "min":
                return min(mins)
            if kind == "max":
                return max(maxs)
            n, total = int(sum(counts)), sum(sums)
            if kind != "stats":
                return total if kind == "sum" else total / n
            return _stats(n, total, sum(sumsqs), min(mins), max(maxs))
        if kind == "sum":
            return total
        if kind == "min":
            return lo
        if kind == "max":
            return hi
        return total / n if kind == "avg" else _stats(n, total, sumsq, lo, hi)

    def oldest(self, data: list[Any]) -> float | None:
        """The time of the oldest entry kept, for expiry."""
        if self.width:
            return float(data[0][_START]) if data else None
        return float(data[0][0]) if data[0] else None


def _start(bucket: list[float]) -> float:
    return bucket[_START]


def _stats(n: int, total: float, sumsq: float, lo: float, hi: float) -> Stats:
    mean = total / n
    var = max(sumsq / n - mean * mean, 0.0) if lo != hi else 0.0
    return (n, total, mean, math.sqrt(var), lo, hi)


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

    def oldest(self, data: dict[str, float]) -> float | None:
        return min(data.values()) if data else None


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

    def oldest(self, data: dict[str, Any] | None) -> float | None:
        return float(data["ts"]) if data else None
