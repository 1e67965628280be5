"""The simulator's injected anomalies and marketing moments, one plain function per rule.

Each `inject_*` takes the running `Simulator` and a customer on day `k` (stream second `d0`),
emits its events through the simulator and labels the one that should make the rule fire; it
returns False, emitting nothing, when it does not apply.
`INJECT` is the table the simulator draws from, in draw order: part of the seeded output, like
every `rnd()` call here. Not labelled, by the catalogue's own design: a big injected amount is
also an R2 outlier (a payroll credit too, if R2 counts credits); R1 still holds on the 6th and
7th card of a burst; after an M3 drain the balance stays below 20% of the 30-day maximum. The
foreign transaction of R3 is labelled M4 too when it is the first one abroad.

This module imports nothing from `streams.simulate` at run time: the few constants both need
live here, and `streams.simulate` imports them (and re-exports `DAY` and `HOME_BANK`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from streams.simulate import Customer, Place, Simulator

# shared with streams.simulate
DAY: Final = 86_400
HOME_BANK: Final = "HOMEBANK"
BANKS: Final = ("ICBC", "CCB", "BOC", "ABC", "CMB", "BOCOM")
MCC: Final = ("grocery", "restaurant", "transport", "retail", "fuel", "pharmacy", "cafe")
_mult = random.Random(20261001)
# spending multipliers, lognormal but clipped: no normal debit is an R2 outlier
MULT: Final = tuple(min(3.0, max(0.25, _mult.lognormvariate(0, 0.45))) for _ in range(1024))

_BIG_MCC: Final = ("electronics", "jewelry", "furniture", "travel_agency")
_ABROAD: Final = (
    ("JP", 35.6762, 139.6503),
    ("FR", 48.8566, 2.3522),
    ("TH", 13.7563, 100.5018),
    ("KR", 37.5665, 126.9780),
    ("GB", 51.5074, -0.1278),
    ("US", 40.7128, -74.0060),
    ("AU", -33.8688, 151.2093),
    ("SG", 1.3521, 103.8198),
)


# ---- small helpers ---------------------------------------------------------------------------
def _km(a: Place, b: Place) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (a[1], a[2], b[1], b[2]))
    x = math.sin((la2 - la1) / 2) ** 2
    x += math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 12_742.0 * math.asin(math.sqrt(x))


def _safe_out(c: Customer, amount: float) -> bool:
    """The balance covers it, and it cannot look like an M3 drain."""
    hi = max(c.hi_cur, c.hi_prev, c.bal)
    return amount <= c.bal - 100 and (hi < 500_000 or c.bal - amount >= 0.25 * hi)


def quiet(sim: Simulator, c: Customer, d0: int, span: int) -> int:
    """A start time; no normal login from 30 min before it to `span` after (keeps R4 clean)."""
    t = d0 + 1800 + int(sim.rnd() * (DAY - 1800 - span))
    c.no_login.append((t - 1800, t + span))
    return t


def _new(c: Customer, tag: str) -> str:
    c.seq += 1
    return f"{tag}{c.i:06d}-{c.seq}"


def _bank(sim: Simulator) -> str:
    return BANKS[int(sim.rnd() * len(BANKS))]


def _dest(sim: Simulator, c: Customer, low_km: float, high_km: float) -> Place | None:
    far = [d for d in _ABROAD if d[0] != c.country and low_km <= _km(c.home, d) <= high_km]
    return far[int(sim.rnd() * len(far))] if far else None


def _spend(sim: Simulator, c: Customer) -> float:
    return min(c.scale * MULT[int(sim.rnd() * 1024)], 4_800.0)


# ---- the anomalies and moments ---------------------------------------------------------------
def inject_m1(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    if "wealth" in c.products:
        return False
    amount = 200_000 + 600_000 * sim.rnd()
    t = sim.when(c, d0)
    sim.label("M1", sim.pay(c, t, amount, _new(c, "x"), _bank(sim), True))
    return True


def inject_m3(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    need = 520_000 + 300_000 * sim.rnd() - c.bal
    if need > 0:  # credits under 200,000 each unless wealth is held, so M1 stays quiet
        n = 1 if "wealth" in c.products else math.ceil(need / 190_000)
        t = d0 + int(sim.rnd() * (DAY - n * 3900))
        for j in range(n):
            sim.pay(c, t + j * 3900, need / n, _new(c, "x"), _bank(sim), True)
    c.m3max, c.busy = c.bal, k + 1 + int(sim.rnd() * 5)
    c.plan.append((c.busy, "M3"))  # the drain itself is in the simulator's day loop
    return True


def inject_m4(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    dest = _dest(sim, c, 1_000, 11_000)
    if c.loc_lo > d0 or k - c.foreign_day <= 365 or dest is None:
        return False
    c.gap = int(_km(c.home, dest) / 700 * 3600) + 3600  # the flight, and then some
    t = d0 + c.gap + int(sim.rnd() * 3 * 3600)
    c.place, c.loc_lo, c.foreign_day = dest, t, k
    c.busy = c.trip_end = k + 2 + int(sim.rnd() * 4)
    sim.label("M4", sim.card(c, t, _spend(sim, c), "hotel"))
    return True


def inject_m7(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    hi = max(c.hi_cur, c.hi_prev)
    if c.bal < 0.9 * hi or c.bal < 5_000 or c.next_pay == k or k - c.last_xbank <= 7:
        return False
    amount, payee, bank = 0.2 * c.bal, _new(c, "x"), _bank(sim)  # to their own elsewhere
    t = quiet(sim, c, d0, 4 * 3600)
    for _ in range(3):
        ev = sim.pay(c, t, amount, payee, bank)
        t += 3600 + int(sim.rnd() * 3600)
    sim.label("M7", ev)
    c.no_xbank = k + 8
    return True


def inject_m8(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    amount = 5_000 + 25_000 * sim.rnd()
    if c.delinquent or c.loc_lo > d0 or not _safe_out(c, amount):
        return False
    t = sim.when(c, d0)
    sim.label("M8", sim.card(c, t, amount, _BIG_MCC[int(sim.rnd() * 4)]))
    return True


def inject_r1(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    amounts = [c.scale * (0.3 + 0.7 * sim.rnd()) for _ in range(5 + int(sim.rnd() * 3))]
    if c.loc_lo > d0 or not _safe_out(c, sum(amounts)):
        return False
    start = t = d0 + int(sim.rnd() * (DAY - 900))
    for j, amount in enumerate(amounts):
        ev = sim.card(c, t, amount, MCC[j % 7])
        if j == 4:
            sim.label("R1", ev)
        t += 20 + int(sim.rnd() * 80)
    c.no_card.append((start - 600, t + 600))
    return True


def inject_r2(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    if c.nd < 20 or c.na < 25 or c.next_pay == k or 90 <= k <= c.last_anom + 90:  # skewed stats
        return False
    amount = 0.0  # 6x the mean and 6 sd above it, over all transactions and over debits
    for n, s, q in ((c.na, c.sa, c.qa), (c.nd, c.sd, c.qd)):
        mean = s / n
        amount = max(amount, 6 * mean, mean + 6 * math.sqrt(max(q / n - mean * mean, 0.0)))
    amount = math.ceil(amount / 100) * 100.0
    if not _safe_out(c, amount):
        return False
    sim.label("R2", sim.pay(c, quiet(sim, c, d0, 0), amount, *c.payees[0]))
    return True


def inject_r3(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    dest = _dest(sim, c, 2_000, 20_000)
    if c.loc_lo > d0 or dest is None:
        return False
    t0 = d0 + int(sim.rnd() * (DAY - 7200))
    t1 = t0 + 3300 + int(sim.rnd() * 600)
    sim.card(c, t0, _spend(sim, c), "cafe")
    ev = sim.card(c, t1, _spend(sim, c), "retail", dest)
    sim.label("R3", ev)
    if k - c.foreign_day > 365:
        sim.label("M4", ev)
    c.foreign_day, c.loc_hi, c.loc_lo, c.busy = k, t0, t1 + 16 * 3600, k + 1
    return True


def inject_r4(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    amount = 50_000 + sim.rnd() * min(150_000.0, max(0.0, 0.5 * c.bal - 50_000))
    if not _safe_out(c, amount):
        return False
    t, device = quiet(sim, c, d0, 1800), _new(c, "d")
    sim.act(c, t, "app", "login", device_id=device)
    t += 300 + int(sim.rnd() * 1200)
    ev = sim.pay(c, t, amount, _new(c, "n"), HOME_BANK, False, "mobile", device_id=device)
    sim.label("R4", ev)
    return True


def inject_r5(sim: Simulator, c: Customer, k: int, d0: int) -> None:
    """A dormant customer wakes up (on `c.dormant`, from the day loop; not in `INJECT`)."""
    t = d0 + 1800 + int(sim.rnd() * (DAY - 3600))
    amount = 10_000 + sim.rnd() * (c.bal - 10_000 - 65 * c.scale)  # leaves 1.3 months' pay
    sim.label("R5", sim.pay(c, t, amount, *c.payees[0]))
    c.dormant, c.anoms, c.busy, c.next_pay = -1, 1, k + 6, k + 1 + int(sim.rnd() * 30)


def inject_r6(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    if c.loc_lo > d0 or k - c.last_anom <= 14:  # an earlier R6's deposits must be out of window
        return False
    a = 1 + int(sim.rnd() * 2)
    c.busy = a + 1 + int(sim.rnd() * (6 - a)) + k
    c.plan += [(k + a, "R6"), (c.busy, "R6")]  # the later deposits come from the day loop
    cash(sim, c, d0, False)
    return True


def cash(sim: Simulator, c: Customer, d0: int, last: bool) -> None:
    """One of R6's cash deposits; the last one is labelled."""
    channel, t = "branch" if sim.rnd() < 0.5 else "atm", sim.when(c, d0)
    amount = 45_000 + 4_999.99 * sim.rnd()
    ev = sim.tx(c, t, amount, True, channel, tags=["cash"], **sim.geo(c))
    if last:
        sim.label("R6", ev)


def inject_r9(sim: Simulator, c: Customer, k: int, d0: int) -> bool:
    credit = 50_000 + 140_000 * sim.rnd()
    hi = max(c.hi_cur, c.hi_prev, c.bal + credit)
    if hi >= 500_000 and c.bal < 0.3 * hi:
        return False
    t = quiet(sim, c, d0, 3600)
    sim.pay(c, t, credit, _new(c, "x"), _bank(sim), True)
    total = round(credit, 2) * (0.93 + 0.06 * sim.rnd())  # to two new payees within the hour
    first = round(total * (0.4 + 0.2 * sim.rnd()), 2)
    t += 300 + int(sim.rnd() * 900)
    sim.pay(c, t, first, _new(c, "n"), HOME_BANK)
    t += 300 + int(sim.rnd() * 1200)
    sim.label("R9", sim.pay(c, t, total - first, _new(c, "n"), HOME_BANK))
    return True


# the injectable kinds, in draw order
INJECT: Final[dict[str, Callable[[Simulator, Customer, int, int], bool]]] = {
    "M1": inject_m1,
    "M3": inject_m3,
    "M4": inject_m4,
    "M7": inject_m7,
    "M8": inject_m8,
    "R1": inject_r1,
    "R2": inject_r2,
    "R3": inject_r3,
    "R4": inject_r4,
    "R6": inject_r6,
    "R9": inject_r9,
}
