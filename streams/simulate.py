"""A seeded synthetic bank event stream, for backtests, benchmarks and demos.

`simulate` yields JSON-ready event dicts (the contract of `state.events`) in non-decreasing `ts`
order, one day at a time, so memory does not grow with `days`. One `random.Random(seed)` drives
everything: the same (customers, days, seed, start) give byte-identical output.

Each customer is a small persona (home city, segment, products, balance, employer, payees,
devices). Normal traffic is kept clear of the catalogue's triggers: every debit stays within
~3.5x the customer's usual spend, card purchases under 5,000, balances well above transfers.
Injected anomalies and marketing moments are `Label`s on the event that should make the rule
fire, and so is every natural M2. Not labelled, by the catalogue's own design: a big injected
amount is also an R2 outlier (a payroll credit too, if R2 counts credits); R1 still holds on
the 6th and 7th card of a burst; after an M3 drain the balance stays below 20% of the 30-day
maximum. The foreign transaction of R3 is labelled M4 too when it is the first one abroad.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cache
from operator import itemgetter
from typing import IO, Any, Final

import msgspec

DAY: Final = 86_400
HOME_BANK: Final = "HOMEBANK"
DEFAULT_START: Final = datetime(2026, 10, 1, tzinfo=timezone(timedelta(hours=8)))
LABEL_KINDS: Final = ("M1", "M2", "M3", "M4", "M7", "M8", "R1", "R2", "R3", "R4", "R5", "R6", "R9")
_INJECTED: Final = ("M1", "M3", "M4", "M7", "M8", "R1", "R2", "R3", "R4", "R6", "R9")
# home country, IANA zone, standard UTC offset (h), lat, lon, share in percent
_HOMES: Final = (
    ("CN", "Asia/Shanghai", 8, 31.2304, 121.4737, 40),  # Shanghai
    ("CN", "Asia/Shanghai", 8, 39.9042, 116.4074, 20),  # Beijing
    ("CN", "Asia/Shanghai", 8, 22.5431, 114.0579, 12),  # Shenzhen
    ("CN", "Asia/Shanghai", 8, 23.1291, 113.2644, 10),  # Guangzhou
    ("CN", "Asia/Shanghai", 8, 30.2741, 120.1551, 6),  # Hangzhou
    ("CN", "Asia/Shanghai", 8, 30.5728, 104.0668, 4),  # Chengdu
    ("HK", "Asia/Hong_Kong", 8, 22.3193, 114.1694, 3),
    ("SG", "Asia/Singapore", 8, 1.3521, 103.8198, 2),
    ("JP", "Asia/Tokyo", 9, 35.6762, 139.6503, 1),
    ("GB", "Europe/London", 0, 51.5074, -0.1278, 1),
    ("US", "America/New_York", -5, 40.7128, -74.0060, 1),
)
_HOME_PICK: Final = tuple(i for i, home in enumerate(_HOMES) for _ in range(home[5]))
_ABROAD: Final = (
    ("JP", 35.6762, 139.6503), ("FR", 48.8566, 2.3522), ("TH", 13.7563, 100.5018),
    ("KR", 37.5665, 126.9780), ("GB", 51.5074, -0.1278), ("US", 40.7128, -74.0060),
    ("AU", -33.8688, 151.2093), ("SG", 1.3521, 103.8198),
)  # fmt: skip
_BANKS: Final = ("ICBC", "CCB", "BOC", "ABC", "CMB", "BOCOM")
_MCC: Final = ("grocery", "restaurant", "transport", "retail", "fuel", "pharmacy", "cafe")
_BIG_MCC: Final = ("electronics", "jewelry", "furniture", "travel_agency")
_PAGES: Final = ("home", "accounts", "cards", "transfer", "wealth", "loans", "travel", "offers")
_PRODUCTS: Final = (
    ("savings", 0.6), ("credit_card", 0.3), ("wealth", 0.1), ("mortgage", 0.15),
    ("travel_insurance", 0.05),
)  # fmt: skip
_PAYROLL: Final = {"mass": (5_000.0, 20_000.0), "affluent": (20_000.0, 60_000.0)}
# activity by local hour (tenths), from midnight
_HOUR_W: Final = (
    2, 1, 1, 1, 1, 1, 4, 10, 15, 15, 15, 18, 22, 18, 14, 14, 14, 16, 22, 22, 20, 16, 10, 5,
)  # fmt: skip
_mult = random.Random(20261001)
# spending multipliers, lognormal but clipped: no normal debit is an R2 outlier
_MULT: Final = tuple(min(3.0, max(0.25, _mult.lognormvariate(0, 0.45))) for _ in range(1024))

Ev = dict[str, Any]
Place = tuple[str, float, float]


@dataclass(frozen=True)
class Label:
    """An injected anomaly or marketing moment: the catalogue rule that should fire, and where."""

    kind: str
    customer_id: str
    event_id: str
    ts: str


@cache
def _hms() -> tuple[str, ...]:
    return tuple(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(DAY))


@cache
def _hours(shift: int) -> tuple[int, ...]:
    """Stream hours, each repeated by the activity weight of the matching local hour."""
    return tuple(h for h in range(24) for _ in range(_HOUR_W[(h + shift) % 24]))


def _km(a: Place, b: Place) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (a[1], a[2], b[1], b[2]))
    x = math.sin((la2 - la1) / 2) ** 2
    x += math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 12_742.0 * math.asin(math.sqrt(x))


def _inside(windows: list[tuple[int, int]], t: int) -> bool:
    return any(lo <= t <= hi for lo, hi in windows)


class _Cust:
    """A persona and its running state: `bal` in generation order, `sbal` settled in time order."""

    def __init__(self, i: int) -> None:
        self.i, self.cid, self.acct, self.card = i, f"c{i:06d}", f"a{i:06d}", f"k{i:06d}"
        self.anom_day = self.busy = self.trip_end = self.dormant = self.next_pay = -1
        self.last_xbank = self.no_xbank = self.foreign_day = self.last_anom = -(10**6)
        self.anoms = self.seq = self.na = self.nd = self.gap = self.loc_lo = self.loc_hi = 0
        self.pay_sec, self.last_pay, self.anom_kind = 0, -(10**9), ""
        self.bal = self.sbal = self.hi_cur = self.hi_prev = self.m3max = self.scale = 0.0
        self.sa = self.qa = self.sd = self.qd = self.payroll = self.card_e = self.login_e = 0.0
        self.consent = self.delinquent = False
        self.country, self.employer, self.emp_bank = "CN", "", ""
        self.home: Place = ("CN", 0.0, 0.0)
        self.place = self.home
        self.hours: tuple[int, ...] = ()
        self.full: dict[str, Any] | None = None
        self.products: list[str] = []
        self.devices: list[str] = []
        self.payees: list[tuple[str, str]] = []
        self.plan: list[tuple[int, str]] = []
        self.no_card: list[tuple[int, int]] = []
        self.no_login: list[tuple[int, int]] = []


class _Sim:
    def __init__(self, customers: int, days: int, seed: int, start: datetime, rate: float,
                 labels: list[Label] | None) -> None:  # fmt: skip
        self.rnd = random.Random(seed).random
        self.days, self.rate, self.labels, self.prefix = days, rate, labels, f"e{seed}-"
        minutes = int((start.utcoffset() or timedelta(0)).total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        self.off = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        local = start.replace(tzinfo=None, microsecond=0)
        self.base_ord, self.stream_h = local.toordinal(), minutes // 60
        self.base_sec = local.hour * 3600 + local.minute * 60 + local.second
        self.hms, self.dates, self.n = _hms(), dict[int, str](), 0
        self.evs: list[Ev] = []
        self.ts: list[int] = []
        self.books: list[tuple[int, float, Ev]] = []  # the current customer-day's transactions
        self.pending: list[tuple[str, Ev]] = []
        self.inject: dict[str, Callable[[_Cust, int, int], bool]] = {
            "M1": self._m1, "M3": self._m3, "M4": self._m4, "M7": self._m7, "M8": self._m8,
            "R1": self._r1, "R2": self._r2, "R3": self._r3, "R4": self._r4, "R6": self._r6,
            "R9": self._r9,
        }  # fmt: skip
        self.custs = [self._persona(i, customers) for i in range(customers)]

    def _persona(self, i: int, customers: int) -> _Cust:
        rnd, c = self.rnd, _Cust(i)
        country, tz, utc_h, lat, lon, _ = _HOMES[_HOME_PICK[int(rnd() * len(_HOME_PICK))]]
        c.country = country
        c.home = c.place = (country, lat, lon)
        c.hours = _hours(utc_h - self.stream_h)
        c.pay_sec = (10 - utc_h + self.stream_h) % 24 * 3600  # 10:00 local
        r = rnd()
        segment = "mass" if r < 0.75 else "affluent" if r < 0.95 else "private"
        low, high = _PAYROLL.get(segment, (60_000.0, 150_000.0))
        c.payroll = round(low + (high - low) * rnd(), -2)
        c.scale = c.payroll / 50  # normal spending is ~41 of these a month
        rich = segment == "private"
        c.bal = round(c.payroll * ((5 + 15 * rnd()) if rich else (1.2 + 4 * rnd())), 2)
        c.products = ["current_account"] + [p for p, share in _PRODUCTS if rnd() < share]
        c.consent, c.delinquent = rnd() < 0.85, rnd() < 0.05
        c.devices = [f"d{i:06d}a"] + ([f"d{i:06d}b"] if rnd() < 0.4 else [])
        c.payees = [(f"p{i:06d}0", HOME_BANK)] + [
            (f"p{i:06d}{j}", _BANKS[int(rnd() * 6)] if rnd() < 0.6 else HOME_BANK)
            for j in range(1, 1 + int(rnd() * 3))
        ]
        c.employer = f"emp{int(rnd() * max(1, customers // 20)):05d}"
        c.emp_bank = HOME_BANK if rnd() < 0.5 else _BANKS[int(rnd() * 6)]
        c.next_pay = int(rnd() * 30)
        c.card_e, c.login_e = math.exp(-0.6 - 0.6 * rnd()), math.exp(-0.3 - 0.5 * rnd())
        birth = f"{1950 + int(rnd() * 55)}-{1 + int(rnd() * 12):02d}-{1 + int(rnd() * 28):02d}"
        c.full = {"home_country": country, "segment": segment, "birth_date": birth, "timezone": tz}
        if self.days and not rich and rnd() < min(self.rate, 0.1):  # dormant for 400 days
            c.dormant = int(rnd() * min(self.days, 28))
            t = -400 * DAY + c.pay_sec + int(rnd() * 3600)
            self._profile(c, t, c.full)
            c.bal, c.full = 0.0, None
            self._tx(c, t + 600, 10_000 + (70 + 50 * rnd()) * c.scale, True, "branch")  # < 200k
            self._settle(c)
        c.sbal = c.hi_cur = c.bal
        return c

    # ---- emitting and bookkeeping ----------------------------------------------------------
    def _emit(self, t: int, ev: Ev) -> Ev:
        self.evs.append(ev)
        self.ts.append(t)
        return ev

    def _profile(self, c: _Cust, t: int, full: dict[str, Any] | None = None) -> None:
        ev: Ev = {"event_id": "", "type": "profile", "customer_id": c.cid, "ts": ""}
        if full:
            ev.update(full, products=list(c.products), consent={"marketing": c.consent})
            ev["delinquent"] = c.delinquent
        elif self.rnd() < 0.5 or len(c.products) == 1 + len(_PRODUCTS):
            c.consent = not c.consent
            ev["consent"] = {"marketing": c.consent}
        else:
            missing = [p for p, _ in _PRODUCTS if p not in c.products]
            c.products.append(missing[int(self.rnd() * len(missing))])
            ev["products"] = list(c.products)
        self._emit(t, ev)

    def _tx(self, c: _Cust, t: int, amount: float, credit: bool, channel: str, **extra: Any) -> Ev:
        amount = round(amount, 2)
        c.na, c.sa, c.qa = c.na + 1, c.sa + amount, c.qa + amount * amount
        if not credit:
            c.nd, c.sd, c.qd = c.nd + 1, c.sd + amount, c.qd + amount * amount
            if extra.get("counterparty_bank", HOME_BANK) != HOME_BANK:
                c.last_xbank = t // DAY
        c.bal = c.bal + amount if credit else c.bal - amount
        self.books.append((t, amount if credit else -amount, ev := {
            "event_id": "", "type": "transaction", "customer_id": c.cid, "ts": "", "amount": amount,
            "currency": "CNY", "direction": "credit" if credit else "debit", "channel": channel,
            "account_id": c.acct, **extra,
        }))  # fmt: skip
        return self._emit(t, ev)

    def _pay(self, c: _Cust, t: int, amount: float, payee: str, bank: str, credit: bool = False,
             channel: str = "transfer", **extra: Any) -> Ev:  # fmt: skip
        return self._tx(c, t, amount, credit, channel, counterparty_id=payee,
                        counterparty_bank=bank, **extra)  # fmt: skip

    def _card(self, c: _Cust, t: int, amount: float, mcc: str, place: Place | None = None) -> Ev:
        return self._tx(c, t, amount, False, "card", card_id=c.card, merchant_category=mcc,
                        **self._geo(c, place))  # fmt: skip

    def _act(self, c: _Cust, t: int, channel: str, action: str, **extra: Any) -> Ev:
        return self._emit(t, {"event_id": "", "type": "interaction", "customer_id": c.cid,
                              "ts": "", "channel": channel, "action": action, **extra})  # fmt: skip

    def _geo(self, c: _Cust, place: Place | None = None) -> dict[str, Any]:
        country, lat, lon = place or c.place
        r = self.rnd
        return {"merchant_country": country, "lat": round(lat + (r() - 0.5) * 0.1, 4),
                "lon": round(lon + (r() - 0.5) * 0.1, 4)}  # fmt: skip

    def _settle(self, c: _Cust) -> None:
        """Book the customer-day in time order: `balance_after` and the running maximum."""
        books, bal, hi = self.books, c.sbal, c.hi_cur
        if len(books) > 1:
            books.sort(key=itemgetter(0))
        for _, delta, ev in books:
            bal = ev["balance_after"] = round(bal + delta, 2)
            hi = max(hi, bal)
        c.sbal = c.bal = bal
        c.hi_cur = hi
        books.clear()

    def _when(self, c: _Cust, d0: int) -> int:
        u = self.rnd() * len(c.hours)
        h = int(u)
        return d0 + c.hours[h] * 3600 + int((u - h) * 3600)

    def _label(self, kind: str, ev: Ev) -> None:
        if self.labels is not None:
            self.pending.append((kind, ev))

    def _flush(self) -> list[Ev]:
        evs, ts, hms, off, dates, base = (
            self.evs,
            self.ts,
            self.hms,
            self.off,
            self.dates,
            self.base_sec,
        )
        out, n, prefix = [], self.n, self.prefix
        for j in sorted(range(len(ts)), key=ts.__getitem__):
            ev, n = evs[j], n + 1
            ev["event_id"] = f"{prefix}{n:09d}"
            d, s = divmod(base + ts[j], DAY)
            if d not in dates:
                dates[d] = date.fromordinal(self.base_ord + d).isoformat() + "T"
            ev["ts"] = dates[d] + hms[s] + off
            out.append(ev)
        if self.labels is not None:
            self.pending.sort(key=lambda p: (len(p[1]["event_id"]), p[1]["event_id"]))
            self.labels.extend(
                Label(k, e["customer_id"], e["event_id"], e["ts"]) for k, e in self.pending
            )
        self.n, self.evs, self.ts, self.pending = n, [], [], []
        dates.clear()
        return out

    # ---- the day loop and normal behaviour -------------------------------------------------
    def run(self) -> Iterator[Ev]:
        yield from self._flush()  # dormant customers' history, 400 days back
        for k in range(self.days):
            self._day(k)
            yield from self._flush()

    def _day(self, k: int) -> None:
        rnd, d0, rate = self.rnd, k * DAY, self.rate
        if k % 7 == 0 and rate > 0:
            for c in self.custs:
                if c.dormant < 0 and c.busy < k and c.anom_day < k and rnd() < rate:
                    c.anom_day, c.anom_kind = k + int(rnd() * 7), _INJECTED[int(rnd() * 11)]
        if k % 90 == 0:  # max(hi_prev, hi_cur) covers at least the last 90 days
            for c in self.custs:
                c.hi_prev, c.hi_cur = c.hi_cur, c.sbal
        for c in self.custs:
            if c.dormant >= 0:
                if c.dormant == k:
                    self._r5(c, k, d0)
                    self._settle(c)
                continue
            c.loc_hi = d0 + DAY
            if c.full is not None or rnd() < 0.002:  # profile changes land at 00:00 (nightly sync)
                self._profile(c, d0, c.full)
                c.full = None
            if c.trip_end == k:  # home again: nothing located until the flight could have landed
                c.place, c.loc_lo, c.trip_end, c.foreign_day = c.home, d0 + c.gap, -1, k - 1
            while c.plan and c.plan[0][0] == k:
                if c.plan.pop(0)[1] == "M3":  # the drain: below 20% of the maximum
                    t = self._quiet(c, d0, 0)
                    self._label("M3", self._pay(c, t, c.bal - 0.08 * c.m3max, *c.payees[0]))
                else:
                    self._cash(c, d0, not c.plan)
            if c.anom_day == k:
                self._anomaly(c, k, d0)
            self._normal(c, k, d0)
            self._settle(c)
            if c.no_card:
                c.no_card = [w for w in c.no_card if w[1] >= d0 + DAY]
            if c.no_login:
                c.no_login = [w for w in c.no_login if w[1] >= d0 + DAY]

    def _normal(self, c: _Cust, k: int, d0: int) -> None:
        rnd, (lo, hi) = self.rnd, (max(c.loc_lo, d0), c.loc_hi)  # located events: lo <= t < hi
        if k == c.next_pay:
            t = min(d0 + c.pay_sec + int(rnd() * 7200), d0 + DAY - 1)
            ev = self._pay(c, t, c.payroll, c.employer, c.emp_bank, True, tags=["payroll"])
            if "credit_card" not in c.products and 25 * DAY <= t - c.last_pay <= 35 * DAY:
                self._label("M2", ev)
            c.last_pay, c.next_pay = t, k + 28 + int(rnd() * 5)
        p = rnd()
        while p > c.card_e:  # a Poisson number of card purchases (Knuth)
            p *= rnd()
            t = self._when(c, d0)
            amount = min(c.scale * _MULT[int(rnd() * 1024)], 4_800.0)
            if lo <= t < hi and amount <= c.bal and not (c.no_card and _inside(c.no_card, t)):
                self._card(c, t, amount, _MCC[int(rnd() * 7)])
        r = rnd()
        if r < 0.288:
            t = self._when(c, d0)
            located = c.trip_end < 0 and lo <= t < hi
            if r < 0.15:
                amount = c.scale * _MULT[int(rnd() * 1024)]
                if amount <= c.bal:
                    extra = {"merchant_country": c.country, "merchant_category": "online_retail"}
                    self._tx(c, t, amount, False, "online", card_id=c.card, **extra,
                             device_id=c.devices[0])  # fmt: skip
            elif r < 0.2:
                amount = max(100.0, round(c.scale * (1 + 2 * rnd()), -2))
                if located and amount <= c.bal:
                    self._tx(
                        c, t, amount, False, "atm", card_id=c.card, tags=["cash"], **self._geo(c)
                    )
            elif r < 0.27:
                payee, bank = c.payees[int(rnd() * len(c.payees))]
                if bank != HOME_BANK and k <= c.no_xbank:
                    payee, bank = c.payees[0]
                amount = c.scale * (1 + 2.5 * rnd())
                if amount <= c.bal:
                    self._pay(c, t, amount, payee, bank)
            elif r < 0.28 and located:
                amount = max(100.0, round(c.scale * (1 + 2 * rnd()), -2))
                self._tx(c, t, amount, True, "branch", tags=["cash"], **self._geo(c))
            elif r < 0.283:
                self._act(c, t, "call_center", "complaint")
            elif r >= 0.283:
                action = "offer_accepted" if rnd() < 0.3 else "offer_declined"
                offer = ("wealth-01", "card-02", "travel-03")[int(rnd() * 3)]
                self._act(c, t, ("app", "email", "sms")[int(rnd() * 3)], action, offer_id=offer)
        p = rnd()
        while p > c.login_e:
            p *= rnd()
            t = self._when(c, d0)
            if c.no_login and _inside(c.no_login, t):
                continue
            channel = "web" if rnd() < 0.3 else "app"
            device = c.devices[int(rnd() * len(c.devices))]
            ev = self._act(c, t, channel, "login", device_id=device)
            if channel == "app" and lo <= t < hi:
                ev.update(lat=round(c.place[1], 3), lon=round(c.place[2], 3))
            for _ in range(int(rnd() * 3)):
                t = min(t + 5 + int(rnd() * 300), d0 + DAY - 1)
                self._act(c, t, channel, "page_view", device_id=device, page=_PAGES[int(rnd() * 8)])

    # ---- injected anomalies: each returns False, emitting nothing, when it does not apply ----
    def _anomaly(self, c: _Cust, k: int, d0: int) -> None:
        first, step = _INJECTED.index(c.anom_kind), 1 + int(self.rnd() * 10)
        for j in range(len(_INJECTED)):  # the drawn kind, then the others in a drawn stride
            c.busy = k
            if self.inject[_INJECTED[(first + j * step) % len(_INJECTED)]](c, k, d0):
                c.anoms, c.last_anom = c.anoms + 1, k
                return

    def _safe_out(self, c: _Cust, amount: float) -> bool:
        """The balance covers it, and it cannot look like an M3 drain."""
        hi = max(c.hi_cur, c.hi_prev, c.bal)
        return amount <= c.bal - 100 and (hi < 500_000 or c.bal - amount >= 0.25 * hi)

    def _quiet(self, c: _Cust, d0: int, span: int) -> int:
        """A start time; no normal login from 30 min before it to `span` after (keeps R4 clean)."""
        t = d0 + 1800 + int(self.rnd() * (DAY - 1800 - span))
        c.no_login.append((t - 1800, t + span))
        return t

    def _new(self, c: _Cust, tag: str) -> str:
        c.seq += 1
        return f"{tag}{c.i:06d}-{c.seq}"

    def _bank(self) -> str:
        return _BANKS[int(self.rnd() * len(_BANKS))]

    def _dest(self, c: _Cust, low_km: float, high_km: float) -> Place | None:
        far = [d for d in _ABROAD if d[0] != c.country and low_km <= _km(c.home, d) <= high_km]
        return far[int(self.rnd() * len(far))] if far else None

    def _spend(self, c: _Cust) -> float:
        return min(c.scale * _MULT[int(self.rnd() * 1024)], 4_800.0)

    def _m1(self, c: _Cust, k: int, d0: int) -> bool:
        if "wealth" in c.products:
            return False
        amount = 200_000 + 600_000 * self.rnd()
        t = self._when(c, d0)
        self._label("M1", self._pay(c, t, amount, self._new(c, "x"), self._bank(), True))
        return True

    def _m3(self, c: _Cust, k: int, d0: int) -> bool:
        need = 520_000 + 300_000 * self.rnd() - c.bal
        if need > 0:  # credits under 200,000 each unless wealth is held, so M1 stays quiet
            n = 1 if "wealth" in c.products else math.ceil(need / 190_000)
            t = d0 + int(self.rnd() * (DAY - n * 3900))
            for j in range(n):
                self._pay(c, t + j * 3900, need / n, self._new(c, "x"), self._bank(), True)
        c.m3max, c.busy = c.bal, k + 1 + int(self.rnd() * 5)
        c.plan.append((c.busy, "M3"))
        return True

    def _m4(self, c: _Cust, k: int, d0: int) -> bool:
        dest = self._dest(c, 1_000, 11_000)
        if c.loc_lo > d0 or k - c.foreign_day <= 365 or dest is None:
            return False
        c.gap = int(_km(c.home, dest) / 700 * 3600) + 3600  # the flight, and then some
        t = d0 + c.gap + int(self.rnd() * 3 * 3600)
        c.place, c.loc_lo, c.foreign_day = dest, t, k
        c.busy = c.trip_end = k + 2 + int(self.rnd() * 4)
        self._label("M4", self._card(c, t, self._spend(c), "hotel"))
        return True

    def _m7(self, c: _Cust, k: int, d0: int) -> bool:
        hi = max(c.hi_cur, c.hi_prev)
        if c.bal < 0.9 * hi or c.bal < 5_000 or c.next_pay == k or k - c.last_xbank <= 7:
            return False
        amount, payee, bank = 0.2 * c.bal, self._new(c, "x"), self._bank()  # to their own elsewhere
        t = self._quiet(c, d0, 4 * 3600)
        for _ in range(3):
            ev = self._pay(c, t, amount, payee, bank)
            t += 3600 + int(self.rnd() * 3600)
        self._label("M7", ev)
        c.no_xbank = k + 8
        return True

    def _m8(self, c: _Cust, k: int, d0: int) -> bool:
        amount = 5_000 + 25_000 * self.rnd()
        if c.delinquent or c.loc_lo > d0 or not self._safe_out(c, amount):
            return False
        t = self._when(c, d0)
        self._label("M8", self._card(c, t, amount, _BIG_MCC[int(self.rnd() * 4)]))
        return True

    def _r1(self, c: _Cust, k: int, d0: int) -> bool:
        amounts = [c.scale * (0.3 + 0.7 * self.rnd()) for _ in range(5 + int(self.rnd() * 3))]
        if c.loc_lo > d0 or not self._safe_out(c, sum(amounts)):
            return False
        start = t = d0 + int(self.rnd() * (DAY - 900))
        for j, amount in enumerate(amounts):
            ev = self._card(c, t, amount, _MCC[j % 7])
            if j == 4:
                self._label("R1", ev)
            t += 20 + int(self.rnd() * 80)
        c.no_card.append((start - 600, t + 600))
        return True

    def _r2(self, c: _Cust, k: int, d0: int) -> bool:
        if c.nd < 20 or c.na < 25 or c.next_pay == k or 90 <= k <= c.last_anom + 90:  # skewed stats
            return False
        amount = 0.0  # 6x the mean and 6 sd above it, over all transactions and over debits
        for n, s, q in ((c.na, c.sa, c.qa), (c.nd, c.sd, c.qd)):
            mean = s / n
            amount = max(amount, 6 * mean, mean + 6 * math.sqrt(max(q / n - mean * mean, 0.0)))
        amount = math.ceil(amount / 100) * 100.0
        if not self._safe_out(c, amount):
            return False
        self._label("R2", self._pay(c, self._quiet(c, d0, 0), amount, *c.payees[0]))
        return True

    def _r3(self, c: _Cust, k: int, d0: int) -> bool:
        dest = self._dest(c, 2_000, 20_000)
        if c.loc_lo > d0 or dest is None:
            return False
        t0 = d0 + int(self.rnd() * (DAY - 7200))
        t1 = t0 + 3300 + int(self.rnd() * 600)
        self._card(c, t0, self._spend(c), "cafe")
        ev = self._card(c, t1, self._spend(c), "retail", dest)
        self._label("R3", ev)
        if k - c.foreign_day > 365:
            self._label("M4", ev)
        c.foreign_day, c.loc_hi, c.loc_lo, c.busy = k, t0, t1 + 16 * 3600, k + 1
        return True

    def _r4(self, c: _Cust, k: int, d0: int) -> bool:
        amount = 50_000 + self.rnd() * min(150_000.0, max(0.0, 0.5 * c.bal - 50_000))
        if not self._safe_out(c, amount):
            return False
        t, device = self._quiet(c, d0, 1800), self._new(c, "d")
        self._act(c, t, "app", "login", device_id=device)
        t += 300 + int(self.rnd() * 1200)
        ev = self._pay(
            c, t, amount, self._new(c, "n"), HOME_BANK, False, "mobile", device_id=device
        )
        self._label("R4", ev)
        return True

    def _r5(self, c: _Cust, k: int, d0: int) -> None:
        t = d0 + 1800 + int(self.rnd() * (DAY - 3600))
        amount = 10_000 + self.rnd() * (c.bal - 10_000 - 65 * c.scale)  # leaves 1.3 months' pay
        self._label("R5", self._pay(c, t, amount, *c.payees[0]))
        c.dormant, c.anoms, c.busy, c.next_pay = -1, 1, k + 6, k + 1 + int(self.rnd() * 30)

    def _r6(self, c: _Cust, k: int, d0: int) -> bool:
        if c.loc_lo > d0 or k - c.last_anom <= 14:  # an earlier R6's deposits must be out of window
            return False
        a = 1 + int(self.rnd() * 2)
        c.busy = a + 1 + int(self.rnd() * (6 - a)) + k
        c.plan += [(k + a, "R6"), (c.busy, "R6")]
        self._cash(c, d0, False)
        return True

    def _cash(self, c: _Cust, d0: int, last: bool) -> None:
        channel, t = "branch" if self.rnd() < 0.5 else "atm", self._when(c, d0)
        amount = 45_000 + 4_999.99 * self.rnd()
        ev = self._tx(c, t, amount, True, channel, tags=["cash"], **self._geo(c))
        if last:
            self._label("R6", ev)

    def _r9(self, c: _Cust, k: int, d0: int) -> bool:
        credit = 50_000 + 140_000 * self.rnd()
        hi = max(c.hi_cur, c.hi_prev, c.bal + credit)
        if hi >= 500_000 and c.bal < 0.3 * hi:
            return False
        t = self._quiet(c, d0, 3600)
        self._pay(c, t, credit, self._new(c, "x"), self._bank(), True)
        total = round(credit, 2) * (0.93 + 0.06 * self.rnd())  # to two new payees within the hour
        first = round(total * (0.4 + 0.2 * self.rnd()), 2)
        t += 300 + int(self.rnd() * 900)
        self._pay(c, t, first, self._new(c, "n"), HOME_BANK)
        t += 300 + int(self.rnd() * 1200)
        self._label("R9", self._pay(c, t, total - first, self._new(c, "n"), HOME_BANK))
        return True


def simulate(
    customers: int,
    days: int,
    seed: int,
    start: datetime | None = None,
    anomaly_rate: float = 0.02,
    labels: list[Label] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield JSON-ready event dicts in non-decreasing `ts` order, deterministic for
    (customers, days, seed, start).

    Built one day at a time: memory is bounded by `customers`, not `days`. A day's labels are
    appended to `labels` just before its first event is yielded. A naive `start` is read as
    +08:00; every `ts` carries the offset of `start`. Dormant customers' history comes first.
    """
    if customers < 0 or days < 0:
        raise ValueError("customers and days must be >= 0")
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ValueError("anomaly_rate must be in [0, 1]")
    start = start or DEFAULT_START
    if start.tzinfo is None:
        start = start.replace(tzinfo=DEFAULT_START.tzinfo)
    return _run(customers, days, seed, start, anomaly_rate, labels)


def _run(customers: int, days: int, seed: int, start: datetime, rate: float,
         labels: list[Label] | None) -> Iterator[Ev]:  # fmt: skip
    yield from _Sim(customers, days, seed, start, rate, labels).run()


def write_jsonl(events: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Write events as JSON Lines (msgspec, in batches); return how many were written."""
    encode_lines = msgspec.json.Encoder().encode_lines
    count, batch = 0, []
    for ev in events:
        batch.append(ev)
        if len(batch) == 2048:
            out.write(encode_lines(batch).decode())
            count, batch = count + len(batch), []
    if batch:
        out.write(encode_lines(batch).decode())
    return count + len(batch)
