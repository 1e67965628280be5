"""Contact policy: each suppression reason, what counts toward it, quiet hours and arbitration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rules.pack import PolicySpec
from rules.policy import Candidate, decide, in_holdout
from rules.ruleset import RuleSet, load_rules
from state.events import decode_event
from state.model import CustomerState, Ledger

T0 = datetime(2024, 5, 1, 4, 0, tzinfo=UTC).timestamp()  # 12:00 in Shanghai, 06:00 in Berlin
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
SHANGHAI: tzinfo = ZoneInfo("Asia/Shanghai")
BERLIN: tzinfo = ZoneInfo("Europe/Berlin")


def policy(**fields: Any) -> PolicySpec:
    return PolicySpec.model_validate({"consent_required": True, **fields})


def offer(
    rule_id: str = "offer-a",
    *,
    pack: str = "marketing",
    pol: PolicySpec | None = None,
    cooldown: float | None = None,
    priority: int = 0,
    value: float = 0.0,
    tz: tzinfo = SHANGHAI,
) -> Candidate:
    return Candidate(
        pack=pack,
        rule_id=rule_id,
        kind="offer",
        policy=pol or policy(),
        zone=tz,
        cooldown=cooldown,
        priority=priority,
        value=value,
    )


def alert(
    rule_id: str = "alert-a", *, severity: str = "high", dedup: float | None = None
) -> Candidate:
    return Candidate(
        pack="risk",
        rule_id=rule_id,
        kind="alert",
        policy=policy(),
        zone=UTC,
        severity=severity,
        dedup=dedup,
    )


def run(
    ledger: Ledger,
    now: float,
    *candidates: Candidate,
    consent: bool = True,
    customer_id: str = "c-1",
) -> list[tuple[str, str | None]]:
    cands = list(candidates)
    decide(cands, ledger, customer_id, now, consent)
    return [(c.outcome, c.reason) for c in cands]


EMITTED = ("emitted", None)


def suppressed(reason: str) -> tuple[str, str]:
    return ("suppressed", reason)


def customer_not_in_holdout(pack: str, rule_id: str, percent: float) -> str:
    return next(f"c-{i}" for i in range(1000) if not in_holdout(pack, rule_id, f"c-{i}", percent))


# --- dedup (alerts) -----------------------------------------------------------------------------


def test_dedup_suppresses_the_same_alert_within_its_window() -> None:
    ledger = Ledger()
    assert run(ledger, T0, alert(dedup=30 * MINUTE)) == [EMITTED]
    assert run(ledger, T0 + 29 * MINUTE, alert(dedup=30 * MINUTE)) == [suppressed("dedup")]
    assert run(ledger, T0 + 30 * MINUTE, alert(dedup=30 * MINUTE)) == [EMITTED]


def test_dedup_counts_only_emitted_alerts() -> None:
    ledger = Ledger()
    assert run(ledger, T0, alert(dedup=30 * MINUTE)) == [EMITTED]
    assert run(ledger, T0 + 20 * MINUTE, alert(dedup=30 * MINUTE)) == [suppressed("dedup")]
    # 30 minutes after the emitted one (only 10 after the suppressed one): emitted again
    assert run(ledger, T0 + 30 * MINUTE, alert(dedup=30 * MINUTE)) == [EMITTED]


def test_dedup_is_per_rule_and_absent_dedup_never_suppresses() -> None:
    ledger = Ledger()
    assert run(ledger, T0, alert("a", dedup=HOUR), alert("b", dedup=HOUR)) == [EMITTED] * 2
    assert run(ledger, T0 + 1, alert("a", dedup=HOUR), alert("c")) == [suppressed("dedup"), EMITTED]
    assert run(ledger, T0 + 2, alert("c")) == [EMITTED]


def test_alerts_ignore_consent_caps_and_quiet_hours() -> None:
    ledger = Ledger(offers=[T0 - 60] * 5)
    cand = alert(severity="low")
    cand.policy = policy(max_offers_per_day=0, quiet_hours={"start": "00:00", "end": "23:59"})
    assert run(ledger, T0, cand, consent=False) == [EMITTED]
    assert cand.not_before is None


# --- cooldown -------------------------------------------------------------------------------------


def test_cooldown_suppresses_the_same_offer_within_its_window() -> None:
    ledger = Ledger()
    assert run(ledger, T0, offer(cooldown=7 * DAY)) == [EMITTED]
    assert run(ledger, T0 + 7 * DAY - 1, offer(cooldown=7 * DAY)) == [suppressed("cooldown")]
    assert run(ledger, T0 + 7 * DAY - 1, offer("offer-b", cooldown=7 * DAY)) == [EMITTED]
    assert run(ledger, T0 + 7 * DAY, offer(cooldown=7 * DAY)) == [EMITTED]


def test_cooldown_is_checked_before_consent() -> None:
    ledger = Ledger()
    run(ledger, T0, offer(cooldown=DAY))
    assert run(ledger, T0 + HOUR, offer(cooldown=DAY), consent=False) == [suppressed("cooldown")]


def test_suppressed_offers_do_not_start_a_cooldown() -> None:
    ledger = Ledger()
    cd = 7 * DAY
    # no_consent, arbitration and frequency_cap suppressions leave no trace in the ledger
    assert run(ledger, T0, offer(cooldown=cd), consent=False) == [suppressed("no_consent")]
    assert run(ledger, T0 + 1, offer(cooldown=cd), offer("z-winner", cooldown=cd, priority=9)) == [
        suppressed("arbitration"),
        EMITTED,
    ]
    capped = offer(cooldown=cd, pol=policy(max_offers_per_day=1))
    assert run(ledger, T0 + 2, capped) == [suppressed("frequency_cap")]
    assert ledger.fired == {"marketing/z-winner": T0 + 1}
    assert ledger.offers == [T0 + 1]
    assert run(ledger, T0 + DAY + 1, offer(cooldown=cd)) == [EMITTED]


# --- consent --------------------------------------------------------------------------------------


def test_no_consent_suppresses_offers_when_the_pack_requires_it() -> None:
    assert run(Ledger(), T0, offer(), consent=False) == [suppressed("no_consent")]
    assert run(Ledger(), T0, offer(pol=policy(consent_required=False)), consent=False) == [EMITTED]
    assert run(Ledger(), T0, offer(), consent=True) == [EMITTED]


# --- holdout -------------------------------------------------------------------------------------


def test_holdout_is_stable_and_about_percent_of_customers() -> None:
    ids = [f"cust-{i:06d}" for i in range(10_000)]
    held = [c for c in ids if in_holdout("marketing", "offer-a", c, 5)]
    assert 400 <= len(held) <= 600  # 5% of 10,000, give or take sampling noise
    assert held == [c for c in ids if in_holdout("marketing", "offer-a", c, 5)]
    other_rule = {c for c in ids if in_holdout("marketing", "offer-b", c, 5)}
    assert other_rule != set(held)  # each rule has its own holdout group
    assert sum(in_holdout("marketing", "offer-a", c, 0) for c in ids) == 0
    assert sum(in_holdout("marketing", "offer-a", c, 100) for c in ids) == 10_000
    assert 2_300 <= sum(in_holdout("marketing", "offer-a", c, 25) for c in ids) <= 2_700
    assert 20 <= sum(in_holdout("marketing", "offer-a", c, 0.5) for c in ids) <= 90


def test_holdout_group_is_pinned_and_grows_without_reshuffling() -> None:
    """The hash is part of the audit record: the same customers stay held out across runs,
    processes and releases, and raising the share only adds customers."""
    ids = [f"cust-{i:06d}" for i in range(100)]
    held = [c for c in ids if in_holdout("marketing", "offer-a", c, 5)]
    assert held == ["cust-000010", "cust-000034", "cust-000041", "cust-000055", "cust-000058",
                    "cust-000086"]  # fmt: skip
    many = [f"cust-{i:06d}" for i in range(5000)]
    for low, high in ((1, 5), (5, 5.5), (5, 20)):
        small = {c for c in many if in_holdout("marketing", "offer-a", c, low)}
        large = {c for c in many if in_holdout("marketing", "offer-a", c, high)}
        assert small <= large


def test_holdout_suppresses_customers_in_the_group_and_every_time() -> None:
    pol = policy(holdout_percent=5)
    held = next(f"c-{i}" for i in range(1000) if in_holdout("marketing", "offer-a", f"c-{i}", 5))
    free = customer_not_in_holdout("marketing", "offer-a", 5)
    for t in (T0, T0 + DAY, T0 + 30 * DAY):
        assert run(Ledger(), t, offer(pol=pol), customer_id=held) == [suppressed("holdout")]
        assert run(Ledger(), t, offer(pol=pol), customer_id=free) == [EMITTED]


def test_no_consent_is_reported_before_holdout() -> None:
    held = next(f"c-{i}" for i in range(1000) if in_holdout("marketing", "offer-a", f"c-{i}", 50))
    pol = policy(holdout_percent=50)
    assert run(Ledger(), T0, offer(pol=pol), consent=False, customer_id=held) == [
        suppressed("no_consent")
    ]


# --- risk block -----------------------------------------------------------------------------------


def test_risk_block_after_an_emitted_high_alert() -> None:
    ledger = Ledger()
    pol = policy(risk_block="24h")
    assert run(ledger, T0, alert(severity="critical")) == [EMITTED]
    assert run(ledger, T0 + 23 * HOUR, offer(pol=pol)) == [suppressed("risk_block")]
    assert run(ledger, T0 + 24 * HOUR, offer(pol=pol)) == [EMITTED]


def test_risk_block_includes_an_alert_on_this_very_event() -> None:
    ledger = Ledger()
    got = run(ledger, T0, offer(pol=policy(risk_block="1h")), alert(severity="high"))
    assert got == [suppressed("risk_block"), EMITTED]


def test_risk_block_ignores_medium_alerts_and_packs_without_a_block() -> None:
    ledger = Ledger()
    assert run(ledger, T0, offer(pol=policy(risk_block="24h")), alert(severity="medium")) == [
        EMITTED,
        EMITTED,
    ]
    ledger = Ledger()
    assert run(ledger, T0, offer(pol=policy()), alert(severity="high")) == [EMITTED, EMITTED]


def test_risk_block_counts_only_emitted_alerts() -> None:
    ledger = Ledger()
    pol = policy(risk_block="30m")
    assert run(ledger, T0, alert(dedup=HOUR)) == [EMITTED]
    # 40 minutes later the same alert is deduplicated: it does not renew the block
    got = run(ledger, T0 + 40 * MINUTE, alert(dedup=HOUR), offer(pol=pol))
    assert got == [suppressed("dedup"), EMITTED]


# --- arbitration ----------------------------------------------------------------------------------


def test_arbitration_highest_priority_wins() -> None:
    got = run(
        Ledger(),
        T0,
        offer("a", priority=10, value=9999),
        offer("b", priority=80, value=1),
        offer("c", priority=50, value=5000),
    )
    assert got == [suppressed("arbitration"), EMITTED, suppressed("arbitration")]


def test_arbitration_then_highest_value() -> None:
    got = run(Ledger(), T0, offer("a", priority=50, value=100), offer("b", priority=50, value=300))
    assert got == [suppressed("arbitration"), EMITTED]


def test_arbitration_then_smallest_rule_id_then_pack() -> None:
    got = run(Ledger(), T0, offer("zeta", priority=5, value=1), offer("alpha", priority=5, value=1))
    assert got == [suppressed("arbitration"), EMITTED]
    got = run(
        Ledger(),
        T0,
        offer("same", pack="pack-b", priority=5),
        offer("same", pack="pack-a", priority=5),
    )
    assert got == [suppressed("arbitration"), EMITTED]


def test_arbitration_only_among_offers_left_after_the_checks() -> None:
    ledger = Ledger()
    run(ledger, T0, offer("top", priority=99, cooldown=DAY))
    got = run(ledger, T0 + HOUR, offer("top", priority=99, cooldown=DAY), offer("low", priority=1))
    assert got == [suppressed("cooldown"), EMITTED]


# --- frequency caps -------------------------------------------------------------------------------


def test_frequency_cap_per_day() -> None:
    ledger = Ledger()
    pol = policy(max_offers_per_day=2)
    assert run(ledger, T0, offer("a", pol=pol)) == [EMITTED]
    assert run(ledger, T0 + HOUR, offer("b", pol=pol)) == [EMITTED]
    assert run(ledger, T0 + 2 * HOUR, offer("c", pol=pol)) == [suppressed("frequency_cap")]
    assert run(ledger, T0 + DAY - 1, offer("c", pol=pol)) == [suppressed("frequency_cap")]
    assert run(ledger, T0 + DAY, offer("c", pol=pol)) == [EMITTED]  # the first left the day


def test_frequency_cap_per_week() -> None:
    ledger = Ledger()
    pol = policy(max_offers_per_week=3)
    for day in range(3):
        assert run(ledger, T0 + day * DAY, offer(f"o{day}", pol=pol)) == [EMITTED]
    assert run(ledger, T0 + 6 * DAY, offer("x", pol=pol)) == [suppressed("frequency_cap")]
    assert run(ledger, T0 + 7 * DAY, offer("x", pol=pol)) == [EMITTED]


def test_frequency_cap_counts_offers_from_all_packs_and_applies_to_the_winner_only() -> None:
    ledger = Ledger()
    assert run(ledger, T0, offer("a", pack="cards")) == [EMITTED]
    capped = policy(max_offers_per_day=1)
    got = run(ledger, T0 + HOUR, offer("b", pol=capped, priority=9), offer("c", priority=1))
    # the winner is capped; the loser is still an arbitration loss, not promoted
    assert got == [suppressed("frequency_cap"), suppressed("arbitration")]
    assert ledger.offers == [T0]


def test_capped_offers_do_not_count_toward_the_cap() -> None:
    ledger = Ledger()
    pol = policy(max_offers_per_week=2)
    run(ledger, T0, offer("a", pol=pol))
    run(ledger, T0 + DAY, offer("b", pol=pol))
    for day in range(2, 7):
        assert run(ledger, T0 + day * DAY, offer("c", pol=pol)) == [suppressed("frequency_cap")]
    assert run(ledger, T0 + 7 * DAY, offer("c", pol=pol)) == [EMITTED]  # only "a" has left


def test_a_cap_of_zero_blocks_every_offer() -> None:
    assert run(Ledger(), T0, offer(pol=policy(max_offers_per_day=0))) == [
        suppressed("frequency_cap")
    ]


# --- quiet hours ----------------------------------------------------------------------------------


def at(local: str, tz: tzinfo) -> float:
    """Epoch seconds of a local wall time such as '2024-05-01 23:30'."""
    return datetime.fromisoformat(local).replace(tzinfo=tz).timestamp()


def emitted_not_before(now: float, quiet: dict[str, str], tz: tzinfo) -> datetime | None:
    cand = offer(pol=policy(quiet_hours=quiet), tz=tz)
    assert run(Ledger(), now, cand) == [EMITTED]  # quiet hours delay, they never suppress
    return cand.not_before


NIGHT = {"start": "22:00", "end": "08:00"}


@pytest.mark.parametrize(
    ("local", "until"),
    [
        ("2024-05-01 23:30", "2024-05-02 08:00"),
        ("2024-05-01 22:00", "2024-05-02 08:00"),
        ("2024-05-02 00:00", "2024-05-02 08:00"),
        ("2024-05-02 07:59", "2024-05-02 08:00"),
        ("2024-05-02 08:00", None),
        ("2024-05-01 21:59", None),
        ("2024-05-01 12:00", None),
    ],
)
def test_quiet_hours_crossing_midnight(local: str, until: str | None) -> None:
    got = emitted_not_before(at(local, SHANGHAI), NIGHT, SHANGHAI)
    if until is None:
        assert got is None
    else:
        assert got is not None and got.timestamp() == at(until, SHANGHAI)
        assert got.utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize(
    ("local", "until"),
    [
        ("2024-05-01 12:00", "2024-05-01 14:00"),
        ("2024-05-01 13:59", "2024-05-01 14:00"),
        ("2024-05-01 14:00", None),
        ("2024-05-01 11:59", None),
        ("2024-05-01 23:00", None),
    ],
)
def test_quiet_hours_not_crossing_midnight(local: str, until: str | None) -> None:
    got = emitted_not_before(at(local, SHANGHAI), {"start": "12:00", "end": "14:00"}, SHANGHAI)
    assert (got.timestamp() if got else None) == (at(until, SHANGHAI) if until else None)


def test_quiet_hours_follow_the_customers_time_zone() -> None:
    now = datetime(2024, 5, 1, 15, 0, tzinfo=UTC).timestamp()  # 23:00 Shanghai, 17:00 Berlin
    assert emitted_not_before(now, NIGHT, BERLIN) is None
    got = emitted_not_before(now, NIGHT, SHANGHAI)
    assert got is not None and got == datetime(2024, 5, 2, 0, 0, tzinfo=UTC)


def test_quiet_hours_end_in_a_dst_gap_moves_to_the_first_valid_time() -> None:
    # Berlin, 2024-03-31: clocks jump from 02:00 CET to 03:00 CEST.
    now = at("2024-03-31 01:30", BERLIN)
    got = emitted_not_before(now, {"start": "22:00", "end": "02:30"}, BERLIN)
    assert got is not None
    assert got.astimezone(UTC) == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert got.astimezone(BERLIN).strftime("%H:%M %z") == "03:00 +0200"


def test_quiet_hours_on_the_dst_night_in_summer_time() -> None:
    now = at("2024-03-30 23:00", BERLIN)  # before the jump, CET
    got = emitted_not_before(now, {"start": "22:00", "end": "07:00"}, BERLIN)
    assert got is not None and got.astimezone(UTC) == datetime(2024, 3, 31, 5, 0, tzinfo=UTC)


def test_quiet_hours_end_in_a_repeated_hour_is_not_in_the_past() -> None:
    # Berlin, 2024-10-27: 02:00-03:00 happens twice (CEST, then CET).
    first = datetime(2024, 10, 27, 0, 15, tzinfo=UTC).timestamp()  # 02:15 CEST
    second = datetime(2024, 10, 27, 1, 15, tzinfo=UTC).timestamp()  # 02:15 CET
    quiet = {"start": "22:00", "end": "02:30"}
    got = emitted_not_before(first, quiet, BERLIN)
    assert got is not None and got.timestamp() == first + 15 * MINUTE
    got = emitted_not_before(second, quiet, BERLIN)
    assert got is not None and got.timestamp() == second + 15 * MINUTE


def test_quiet_hours_offer_counts_toward_caps_and_cooldown() -> None:
    ledger = Ledger()
    pol = policy(quiet_hours=NIGHT, max_offers_per_day=1)
    night = at("2024-05-01 23:00", SHANGHAI)
    cand = offer(pol=pol, cooldown=DAY)
    assert run(ledger, night, cand) == [EMITTED] and cand.not_before is not None
    assert run(ledger, night + HOUR, offer(pol=pol, cooldown=DAY)) == [suppressed("cooldown")]
    assert run(ledger, night + HOUR, offer("other", pol=pol)) == [suppressed("frequency_cap")]


# --- through RuleSet.apply, with packs on disk ---------------------------------------------------

OFFERS_PACK = """
pack: test-offers
version: 3
timezone: Asia/Shanghai
policy:
  consent_required: true
  max_offers_per_day: 1
  quiet_hours: {start: "22:00", end: "08:00"}
  risk_block: 24h
rules:
  - id: big-credit
    kind: offer
    on: transaction
    when: 'event.direction == "credit" and event.amount >= 1000'
    offer: {product: wealth, channel: push}
    priority: 50
    value: 100
    cooldown: 7d
  - id: any-credit
    kind: offer
    on: transaction
    when: 'event.direction == "credit"'
    offer: {product: savings, channel: sms}
    priority: 10
    value: 5000
"""

RISK_PACK = """
pack: test-risk
version: 1
rules:
  - id: huge-credit
    kind: alert
    on: transaction
    when: 'event.amount >= 100000'
    severity: high
    channel: fraud_queue
    dedup: 1h
"""


@pytest.fixture
def ruleset(tmp_path: Path) -> RuleSet:
    (tmp_path / "offers.yaml").write_text(OFFERS_PACK)
    (tmp_path / "risk.yaml").write_text(RISK_PACK)
    return load_rules([tmp_path])


class Customer:
    """One customer's state and a running event counter, fed through RuleSet.apply."""

    def __init__(self, rules: RuleSet, customer_id: str = "c-1") -> None:
        self.rules = rules
        self.state = CustomerState()
        self.id = customer_id
        self.n = 0

    def send(self, ts: datetime, **fields: Any) -> list[tuple[str, str, str | None, str | None]]:
        self.n += 1
        doc = {"event_id": f"e-{self.n}", "customer_id": self.id, "ts": ts.isoformat(), **fields}
        result = self.rules.apply(self.state, decode_event(json.dumps(doc)))
        not_before = {a.rule_id: a.not_before for a in result.actions}
        return [
            (d.rule_id, d.outcome, d.reason, not_before.get(d.rule_id)) for d in result.decisions
        ]

    def credit(self, ts: datetime, amount: float) -> list[tuple[str, str, str | None, str | None]]:
        return self.send(
            ts, type="transaction", amount=amount, direction="credit", channel="online"
        )

    def profile(self, ts: datetime, **fields: Any) -> None:
        assert self.send(ts, type="profile", **fields) == []


NOON = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


def test_ruleset_customer_with_no_recorded_consent_gets_no_offer(ruleset: RuleSet) -> None:
    c = Customer(ruleset)
    assert c.credit(NOON, 50) == [("any-credit", "suppressed", "no_consent", None)]
    c.profile(NOON + timedelta(minutes=1), consent={"sms": True})  # no marketing consent
    assert c.credit(NOON + timedelta(minutes=2), 50)[0][2] == "no_consent"
    c.profile(NOON + timedelta(minutes=3), consent={"marketing": True})
    assert c.credit(NOON + timedelta(minutes=4), 50) == [("any-credit", "emitted", None, None)]
    c.profile(NOON + timedelta(days=2), consent={"marketing": False})  # a revoke is immediate
    assert c.credit(NOON + timedelta(days=2, minutes=1), 50)[0][2] == "no_consent"


def test_ruleset_suppressed_offers_leave_no_cooldown(ruleset: RuleSet) -> None:
    c = Customer(ruleset)
    got = c.credit(NOON, 2000)
    assert sorted(got) == [
        ("any-credit", "suppressed", "no_consent", None),
        ("big-credit", "suppressed", "no_consent", None),
    ]
    c.profile(NOON + timedelta(minutes=1), consent={"marketing": True})
    got = c.credit(NOON + timedelta(minutes=2), 2000)
    assert sorted(got) == [
        ("any-credit", "suppressed", "arbitration", None),
        ("big-credit", "emitted", None, None),
    ]
    got = c.credit(NOON + timedelta(minutes=3), 2000)  # cooldown first, then the daily cap
    assert sorted(got) == [
        ("any-credit", "suppressed", "frequency_cap", None),
        ("big-credit", "suppressed", "cooldown", None),
    ]


def test_ruleset_alert_on_this_event_blocks_offers_and_ignores_consent(ruleset: RuleSet) -> None:
    c = Customer(ruleset)
    got = c.credit(NOON, 150_000)  # no consent recorded: the alert goes out all the same
    assert got[0] == ("huge-credit", "emitted", None, None)
    c.profile(NOON + timedelta(minutes=1), consent={"marketing": True})
    c2 = Customer(ruleset, "c-2")
    c2.profile(NOON, consent={"marketing": True})
    got = c2.credit(NOON + timedelta(minutes=1), 150_000)
    assert got[0] == ("huge-credit", "emitted", None, None)
    assert sorted(got[1:]) == [
        ("any-credit", "suppressed", "risk_block", None),
        ("big-credit", "suppressed", "risk_block", None),
    ]
    got = c2.credit(NOON + timedelta(hours=23), 50)
    assert got == [("any-credit", "suppressed", "risk_block", None)]
    got = c2.credit(NOON + timedelta(hours=24, minutes=1), 50)
    assert got == [("any-credit", "emitted", None, None)]


def test_ruleset_quiet_hours_use_the_customers_time_zone(ruleset: RuleSet) -> None:
    late = datetime(2024, 5, 1, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai, 17:00 in Berlin
    shanghai = Customer(ruleset, "c-sh")
    shanghai.profile(NOON, consent={"marketing": True})  # no zone: the pack's Asia/Shanghai
    assert shanghai.credit(late, 50) == [
        ("any-credit", "emitted", None, "2024-05-02T08:00:00+08:00")
    ]
    berlin = Customer(ruleset, "c-de")
    berlin.profile(NOON, consent={"marketing": True}, timezone="Europe/Berlin")
    assert berlin.credit(late, 50) == [("any-credit", "emitted", None, None)]
    got = berlin.credit(datetime(2024, 5, 2, 21, 30, tzinfo=UTC), 50)  # 23:30 in Berlin
    assert got == [("any-credit", "emitted", None, "2024-05-03T08:00:00+02:00")]


def test_ruleset_redelivered_event_decides_nothing(ruleset: RuleSet) -> None:
    c = Customer(ruleset)
    c.profile(NOON, consent={"marketing": True})
    doc = {
        "type": "transaction",
        "event_id": "dup",
        "customer_id": c.id,
        "ts": (NOON + timedelta(minutes=1)).isoformat(),
        "amount": 50,
        "direction": "credit",
        "channel": "online",
    }
    first = ruleset.apply(c.state, decode_event(json.dumps(doc)))
    assert [d.outcome for d in first.decisions] == ["emitted"]
    again = ruleset.apply(c.state, decode_event(json.dumps(doc)))
    assert again.duplicate and not again.decisions and not again.actions
