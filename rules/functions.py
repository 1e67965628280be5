"""The functions a rule expression may call.

Every function returns None when an argument it needs is None (a missing value), so a rule
that reads a missing value does not match instead of failing. Times are epoch seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

NUM: Final = "number"
STR: Final = "string"
BOOL: Final = "bool"
STRS: Final = "list of strings"
STATS: Final = "stats"
EVENT: Final = "event"
CONSENT: Final = "consent"
NULL: Final = "null"
LIST: Final = "list"

_EARTH_KM = 6371.0088


def hours_between(a: float | None, b: float | None) -> float | None:
    """Hours from time a to time b (absolute)."""
    if a is None or b is None:
        return None
    return abs(b - a) / 3600.0


def days_between(a: float | None, b: float | None) -> float | None:
    """Days from time a to time b (absolute)."""
    if a is None or b is None:
        return None
    return abs(b - a) / 86400.0


def days_since(now: float, ts: float | None) -> float | None:
    """Days from `ts` to the current event's time."""
    if ts is None:
        return None
    return (now - ts) / 86400.0


def distance_km(
    lat1: float | None, lon1: float | None, lat2: float | None, lon2: float | None
) -> float | None:
    """Great-circle distance in kilometres."""
    if lat1 is None or lon1 is None or lat2 is None or lon2 is None:
        return None
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def local_hour(now: float, tz: tzinfo) -> int:
    """The hour (0-23) of the current event in the customer's time zone."""
    return datetime.fromtimestamp(now, UTC).astimezone(tz).hour


def _none_safe(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        if any(a is None for a in args):
            return None
        return fn(*args)

    call.__name__ = fn.__name__
    return call


def safe_round(x: Any, ndigits: Any = None) -> Any:
    """round(x[, ndigits]), without its trap: for an integer x, round(x, -n) computes 10**n,
    which for n = 10**15 (a legal literal) never finishes. Such a round is 0 (once 10**n
    exceeds 2|x|), so it is answered directly."""
    if ndigits is None:
        return round(x)
    if isinstance(x, int) and isinstance(ndigits, int) and -ndigits > x.bit_length() // 3 + 2:
        return 0
    return round(x, ndigits)


def coalesce(*args: Any) -> Any:
    """The first argument that is not null."""
    for a in args:
        if a is not None:
            return a
    return None


@dataclass(frozen=True)
class Function:
    """A function callable from expressions: its arity, result type and implementation."""

    name: str
    min_args: int
    max_args: int
    result: str
    impl: Callable[..., Any]
    needs_now: bool = False
    needs_zone: bool = False
    arg_type: str | None = NUM


FUNCTIONS: Final[dict[str, Function]] = {
    f.name: f
    for f in (
        Function("abs", 1, 1, NUM, _none_safe(abs)),
        Function("min", 2, 8, NUM, _none_safe(min)),
        Function("max", 2, 8, NUM, _none_safe(max)),
        Function("round", 1, 2, NUM, _none_safe(safe_round)),
        Function("len", 1, 1, NUM, _none_safe(len), arg_type=None),
        Function("coalesce", 2, 8, NULL, coalesce, arg_type=None),
        Function("hours_between", 2, 2, NUM, hours_between),
        Function("days_between", 2, 2, NUM, days_between),
        Function("days_since", 1, 1, NUM, days_since, needs_now=True),
        Function("distance_km", 4, 4, NUM, distance_km),
        Function("local_hour", 0, 0, NUM, local_hour, needs_now=True, needs_zone=True),
    )
}
