"""A seeded synthetic bank event stream, for backtests, benchmarks and demos.

`simulate` yields JSON-ready event dicts (the contract of `state.events`) in non-decreasing `ts`
order, one day at a time, so memory does not grow with `days`. One `random.Random(seed)` drives
everything: the same (customers, days, seed, start) give byte-identical output.

Each customer is a small persona (home city, segment, products, balance, employer, payees,
devices). Normal traffic is kept clear of the catalogue's triggers: every debit stays within
~3.5x the customer's usual spend, card purchases under 5,000, balances well above transfers.
Injected anomalies and marketing moments (`streams.anomalies`) are `Label`s on the event that
should make the rule fire, and so is every natural M2.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cache
from operator import itemgetter
from typing import IO, Any, Final

import msgspec

from streams.anomalies import BANKS, DAY, HOME_BANK, INJECT, MCC, MULT, cash, inject_r5, quiet

__all__ = ["DAY", "DEFAULT_START", "HOME_BANK", "LABEL_KINDS", "Label", "simulate", "write_jsonl"]

DEFAULT_START: Final = datetime(2026, 10, 1, tzinfo=timezone(timedelta(hours=8)))
LABEL_KINDS: Final = ("M1", "M2", "M3", "M4", "M7", "M8", "R1", "R2", "R3", "R4", "R5", "R6", "R9")
_INJECTED: Final = tuple(INJECT)  # M1 M3 M4 M7 M8 R1 R2 R3 R4 R6 R9, in draw order
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
_PAGES: Final = ("home", "accounts", "cards", "transfer", "wealth", "loans", "travel", "offers")
_PRODUCTS: Final = (
    ("savings", 0.6),
    ("credit_card", 0.3),
    ("wealth", 0.1),
    ("mortgage", 0.15),
    ("travel_insurance", 0.05),
)
_PAYROLL: Final = {"mass": (5_000.0, 20_000.0), "affluent": (20_000.0, 60_000.0)}
# activity by local hour (tenths), from midnight
_HOUR_W: Final = (
    *(2, 1, 1, 1, 1, 1, 4, 10, 15, 15, 15, 18),  # 00:00 to 11:59
    *(22, 18, 14, 14, 14, 16, 22, 22, 20, 16, 10, 5),  # 12:00 to 23:59
)

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


def _inside(windows: list[tuple[int, int]], t: int) -> bool:
    return any(lo <= t <= hi for lo, hi in windows)


class Customer:
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


class Simulator:
    """The generator's state; the injected anomalies (`streams.anomalies`) drive it too."""

    def __init__(
        self,
        customers: int,
        days: int,
        seed: int,
        start: datetime,
        rate: float,
        labels: list[Label] | None,
    ) -> None:
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
        self.custs = [self._persona(i, customers) for i in range(customers)]

    def _persona(self, i: int, customers: int) -> Customer:
        rnd, c = self.rnd, Customer(i)
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
            (f"p{i:06d}{j}", BANKS[int(rnd() * 6)] if rnd() < 0.6 else HOME_BANK)
            for j in range(1, 1 + int(rnd() * 3))
        ]
        c.employer = f"emp{int(rnd() * max(1, customers // 20)):05d}"
        c.emp_bank = HOME_BANK if rnd() < 0.5 else BANKS[int(rnd() * 6)]
        c.next_pay = int(rnd() * 30)
        c.card_e, c.login_e = math.exp(-0.6 - 0.6 * rnd()), math.exp(-0.3 - 0.5 * rnd())
        birth = f"{1950 + int(rnd() * 55)}-{1 + int(rnd() * 12):02d}-{1 + int(rnd() * 28):02d}"
        c.full = {"home_country": country, "segment": segment, "birth_date": birth, "timezone": tz}
        if self.days and not rich and rnd() < min(self.rate, 0.1):  # dormant for 400 days
            c.dormant = int(rnd() * min(self.days, 28))
            t = -400 * DAY + c.pay_sec + int(rnd() * 3600)
            self._profile(c, t, c.full)
            c.bal, c.full = 0.0, None
            self.tx(c, t + 600, 10_000 + (70 + 50 * rnd()) * c.scale, True, "branch")  # < 200k
            self._settle(c)
        c.sbal = c.hi_cur = c.bal
        return c

    # ---- emitting and bookkeeping ----------------------------------------------------------
    def _emit(self, t: int, ev: Ev) -> Ev:
        self.evs.append(ev)
        self.ts.append(t)
        return ev

    def _profile(self, c: Customer, t: int, full: dict[str, Any] | None = None) -> None:
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

    def tx(
        self, c: Customer, t: int, amount: float, credit: bool, channel: str, **extra: Any
    ) -> Ev:
        amount = round(amount, 2)
        c.na, c.sa, c.qa = c.na + 1, c.sa + amount, c.qa + amount * amount
        if not credit:
            c.nd, c.sd, c.qd = c.nd + 1, c.sd + amount, c.qd + amount * amount
            if extra.get("counterparty_bank", HOME_BANK) != HOME_BANK:
                c.last_xbank = t // DAY
        c.bal = c.bal + amount if credit else c.bal - amount
        ev: Ev = {
            "event_id": "",
            "type": "transaction",
            "customer_id": c.cid,
            "ts": "",
            "amount": amount,
            "currency": "CNY",
            "direction": "credit" if credit else "debit",
            "channel": channel,
            "account_id": c.acct,
            **extra,
        }
        self.books.append((t, amount if credit else -amount, ev))
        return self._emit(t, ev)

    def pay(
        self,
        c: Customer,
        t: int,
        amount: float,
        payee: str,
        bank: str,
        credit: bool = False,
        channel: str = "transfer",
        **extra: Any,
    ) -> Ev:
        return self.tx(
            c, t, amount, credit, channel, counterparty_id=payee, counterparty_bank=bank, **extra
        )

    def card(self, c: Customer, t: int, amount: float, mcc: str, place: Place | None = None) -> Ev:
        return self.tx(
            c, t, amount, False, "card", card_id=c.card, merchant_category=mcc, **self.geo(c, place)
        )

    def act(self, c: Customer, t: int, channel: str, action: str, **extra: Any) -> Ev:
        return self._emit(
            t,
            {
                "event_id": "",
                "type": "interaction",
                "customer_id": c.cid,
                "ts": "",
                "channel": channel,
                "action": action,
                **extra,
            },
        )

    def geo(self, c: Customer, place: Place | None = None) -> dict[str, Any]:
        country, lat, lon = place or c.place
        r = self.rnd
        return {
            "merchant_country": country,
            "lat": round(lat + (r() - 0.5) * 0.1, 4),
            "lon": round(lon + (r() - 0.5) * 0.1, 4),
        }

    def _settle(self, c: Customer) -> None:
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

    def when(self, c: Customer, d0: int) -> int:
        u = self.rnd() * len(c.hours)
        h = int(u)
        return d0 + c.hours[h] * 3600 + int((u - h) * 3600)

    def label(self, kind: str, ev: Ev) -> None:
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
                    inject_r5(self, c, k, d0)
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
                    t = quiet(self, c, d0, 0)
                    self.label("M3", self.pay(c, t, c.bal - 0.08 * c.m3max, *c.payees[0]))
                else:
                    cash(self, c, d0, not c.plan)
            if c.anom_day == k:
                self._anomaly(c, k, d0)
            self._normal(c, k, d0)
            self._settle(c)
            if c.no_card:
                c.no_card = [w for w in c.no_card if w[1] >= d0 + DAY]
            if c.no_login:
                c.no_login = [w for w in c.no_login if w[1] >= d0 + DAY]

    def _normal(self, c: Customer, k: int, d0: int) -> None:
        rnd, (lo, hi) = self.rnd, (max(c.loc_lo, d0), c.loc_hi)  # located events: lo <= t < hi
        if k == c.next_pay:
            t = min(d0 + c.pay_sec + int(rnd() * 7200), d0 + DAY - 1)
            ev = self.pay(c, t, c.payroll, c.employer, c.emp_bank, True, tags=["payroll"])
            if "credit_card" not in c.products and 25 * DAY <= t - c.last_pay <= 35 * DAY:
                self.label("M2", ev)
            c.last_pay, c.next_pay = t, k + 28 + int(rnd() * 5)
        p = rnd()
        while p > c.card_e:  # a Poisson number of card purchases (Knuth)
            p *= rnd()
            t = self.when(c, d0)
            amount = min(c.scale * MULT[int(rnd() * 1024)], 4_800.0)
            if lo <= t < hi and amount <= c.bal and not (c.no_card and _inside(c.no_card, t)):
                self.card(c, t, amount, MCC[int(rnd() * 7)])
        r = rnd()
        if r < 0.288:
            t = self.when(c, d0)
            located = c.trip_end < 0 and lo <= t < hi
            if r < 0.15:
                amount = c.scale * MULT[int(rnd() * 1024)]
                if amount <= c.bal:
                    extra = {"merchant_country": c.country, "merchant_category": "online_retail"}
                    self.tx(
                        c,
                        t,
                        amount,
                        False,
                        "online",
                        card_id=c.card,
                        **extra,
                        device_id=c.devices[0],
                    )
            elif r < 0.2:
                amount = max(100.0, round(c.scale * (1 + 2 * rnd()), -2))
                if located and amount <= c.bal:
                    self.tx(
                        c, t, amount, False, "atm", card_id=c.card, tags=["cash"], **self.geo(c)
                    )
            elif r < 0.27:
                payee, bank = c.payees[int(rnd() * len(c.payees))]
                if bank != HOME_BANK and k <= c.no_xbank:
                    payee, bank = c.payees[0]
                amount = c.scale * (1 + 2.5 * rnd())
                if amount <= c.bal:
                    self.pay(c, t, amount, payee, bank)
            elif r < 0.28 and located:
                amount = max(100.0, round(c.scale * (1 + 2 * rnd()), -2))
                self.tx(c, t, amount, True, "branch", tags=["cash"], **self.geo(c))
            elif r < 0.283:
                self.act(c, t, "call_center", "complaint")
            elif r >= 0.283:
                action = "offer_accepted" if rnd() < 0.3 else "offer_declined"
                offer = ("wealth-01", "card-02", "travel-03")[int(rnd() * 3)]
                self.act(c, t, ("app", "email", "sms")[int(rnd() * 3)], action, offer_id=offer)
        p = rnd()
        while p > c.login_e:
            p *= rnd()
            t = self.when(c, d0)
            if c.no_login and _inside(c.no_login, t):
                continue
            channel = "web" if rnd() < 0.3 else "app"
            device = c.devices[int(rnd() * len(c.devices))]
            ev = self.act(c, t, channel, "login", device_id=device)
            if channel == "app" and lo <= t < hi:
                ev.update(lat=round(c.place[1], 3), lon=round(c.place[2], 3))
            for _ in range(int(rnd() * 3)):
                t = min(t + 5 + int(rnd() * 300), d0 + DAY - 1)
                self.act(c, t, channel, "page_view", device_id=device, page=_PAGES[int(rnd() * 8)])

    # ---- injected anomalies (streams.anomalies) --------------------------------------------
    def _anomaly(self, c: Customer, k: int, d0: int) -> None:
        first, step = _INJECTED.index(c.anom_kind), 1 + int(self.rnd() * 10)
        for j in range(len(_INJECTED)):  # the drawn kind, then the others in a drawn stride
            c.busy = k
            if INJECT[_INJECTED[(first + j * step) % len(_INJECTED)]](self, c, k, d0):
                c.anoms, c.last_anom = c.anoms + 1, k
                return


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


def _run(
    customers: int, days: int, seed: int, start: datetime, rate: float, labels: list[Label] | None
) -> Iterator[Ev]:
    yield from Simulator(customers, days, seed, start, rate, labels).run()


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
