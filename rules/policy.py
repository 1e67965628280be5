"""Contact policy: which matched rules become actions, in a fixed, documented order.

For one event, after its rules matched:
1. Alerts, in pack and rule order: emitted unless the same rule was emitted for the customer
   within its `dedup`. An emitted high or critical alert opens the customer's risk block.
2. Offers, each checked in this order, the first failing check being the reason:
   `cooldown` (the rule was emitted within its cooldown), `no_consent` (the pack requires
   consent and the customer has not given marketing consent), `holdout` (a stable hash of
   pack, rule and customer falls in the pack's holdout share), `risk_block` (a high or
   critical alert was emitted within the pack's `risk_block`, this event's included).
3. Arbitration across all packs: of the offers left, the highest `priority` wins, then the
   highest `value`, then the smallest rule id, then pack name; the others are `arbitration`.
4. The winner is `frequency_cap` if the customer already had that pack's
   `max_offers_per_day` offers in the last 24 hours or `max_offers_per_week` in the last
   7 days (offers from all packs count); otherwise it is emitted, with `not_before` set to
   the end of quiet hours when the event falls inside them (customer's time zone).

All times are event time. Cooldown, dedup, caps and the risk block count only emitted
actions, recorded in the customer's ledger.

Shadow mode: a rule in shadow mode goes through the same checks, against the same ledger, as
if it alone were live, and its outcome is `shadow`, its reason the one it would have got (None
if it would have been emitted). It never changes what live rules get: it takes no part in the
live arbitration (it loses to a better live offer but displaces none), it never counts towards
caps or opens a risk block, and its would-be emissions go to the ledger's separate `shadow`
map, which only its own cooldown and dedup read (with its live emissions, if it was live before).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any, Final

from rules.pack import MAX_WINDOW, PolicySpec, QuietHours
from state.model import Ledger

DAY: Final = 86400.0
WEEK: Final = 7 * DAY
HIGH_SEVERITIES: Final = frozenset({"high", "critical"})


@dataclass
class Candidate:
    """A matched rule waiting for the policy's verdict."""

    pack: str
    rule_id: str
    kind: str
    policy: PolicySpec
    zone: tzinfo
    severity: str | None = None
    dedup: float | None = None
    cooldown: float | None = None
    priority: int = 0
    value: float = 0.0
    payload: Any = None
    shadow: bool = False
    outcome: str = "emitted"
    reason: str | None = None
    not_before: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.pack}/{self.rule_id}"

    def suppress(self, reason: str) -> None:
        self.outcome, self.reason = "shadow" if self.shadow else "suppressed", reason


def _rank(c: Candidate) -> tuple[int, float, str, str]:
    return (-c.priority, -c.value, c.rule_id, c.pack)


def _last(c: Candidate, ledger: Ledger) -> float | None:
    """When the rule was last emitted (for a shadow rule: or would have been)."""
    last = ledger.fired.get(c.key)
    if c.shadow and ledger.shadow:
        would = ledger.shadow.get(c.key)
        if would is not None and (last is None or would > last):
            return would
    return last


def _shadow_emit(c: Candidate, ledger: Ledger, now: float) -> None:
    """A shadow rule that would have been emitted: record it apart from live emissions.

    Entries older than the longest cooldown or dedup can never matter and are dropped.
    """
    c.outcome, c.reason = "shadow", None
    ledger.shadow = {k: t for k, t in ledger.shadow.items() if now - t < MAX_WINDOW}
    ledger.shadow[c.key] = now


def decide(
    candidates: list[Candidate],
    ledger: Ledger,
    customer_id: str,
    now: float,
    consent: bool,
) -> None:
    """Set each candidate's outcome, reason and not_before, and record emissions in `ledger`."""
    fired = ledger.fired
    for c in candidates:
        if c.kind != "alert":
            continue
        last = _last(c, ledger)
        if c.dedup is not None and last is not None and now - last < c.dedup:
            c.suppress("dedup")
            continue
        if c.shadow:
            _shadow_emit(c, ledger, now)
            continue
        fired[c.key] = now
        if c.severity in HIGH_SEVERITIES and (ledger.high_alert is None or now > ledger.high_alert):
            ledger.high_alert = now

    offers = [c for c in candidates if c.kind == "offer"]
    if not offers:
        return
    left: list[Candidate] = []
    for c in offers:
        reason = _offer_block(c, _last(c, ledger), ledger, customer_id, now, consent)
        if reason is None:
            left.append(c)
        else:
            c.suppress(reason)
    if not left:
        return
    left.sort(key=_rank)
    live = [c for c in left if not c.shadow]
    winner = live[0] if live else None
    for c in left:
        if not c.shadow:
            if c is not winner:
                c.suppress("arbitration")
        # as if it alone were live: checked before the live winner is recorded
        elif winner is not None and _rank(winner) < _rank(c):
            c.suppress("arbitration")
        elif _over_cap(c.policy, ledger, now):
            c.suppress("frequency_cap")
        else:
            _shadow_emit(c, ledger, now)
    if winner is None:
        return
    if _over_cap(winner.policy, ledger, now):
        winner.suppress("frequency_cap")
        return
    fired[winner.key] = now
    ledger.offers = [t for t in ledger.offers if now - t < WEEK]
    ledger.offers.append(now)
    if winner.policy.quiet_hours is not None:
        winner.not_before = quiet_until(now, winner.policy.quiet_hours, winner.zone)


def _offer_block(
    c: Candidate, last: float | None, ledger: Ledger, customer_id: str, now: float, consent: bool
) -> str | None:
    if c.cooldown is not None and last is not None and now - last < c.cooldown:
        return "cooldown"
    policy = c.policy
    if policy.consent_required and not consent:
        return "no_consent"
    if policy.holdout_percent and in_holdout(
        c.pack, c.rule_id, customer_id, policy.holdout_percent
    ):
        return "holdout"
    high = ledger.high_alert
    if policy.risk_block is not None and high is not None and now - high < policy.risk_block:
        return "risk_block"
    return None


def _over_cap(policy: PolicySpec, ledger: Ledger, now: float) -> bool:
    day_cap, week_cap = policy.max_offers_per_day, policy.max_offers_per_week
    if day_cap is None and week_cap is None:
        return False
    in_day = sum(1 for t in ledger.offers if now - t < DAY)
    in_week = sum(1 for t in ledger.offers if now - t < WEEK)
    return (day_cap is not None and in_day >= day_cap) or (
        week_cap is not None and in_week >= week_cap
    )


def in_holdout(pack: str, rule_id: str, customer_id: str, percent: float) -> bool:
    """True for a stable `percent` share of customers, per pack and rule."""
    digest = hashlib.blake2b(f"{pack}\x00{rule_id}\x00{customer_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % 10_000 < percent * 100


def quiet_until(now: float, quiet: QuietHours, zone: tzinfo) -> datetime | None:
    """The end of quiet hours if `now` falls inside them (in `zone`), else None."""
    start, end = _minutes(quiet.start), _minutes(quiet.end)
    if start == end:
        return None
    local = datetime.fromtimestamp(now, UTC).astimezone(zone)
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    day = local.date()
    if minute >= end:
        day += timedelta(days=1)
    naive = datetime.combine(day, time(end // 60, end % 60))
    until = _resolve_local(naive, zone)
    if until.timestamp() <= now:  # the end's wall time comes twice (DST fold): the later one
        until = until.replace(fold=1)
    return until


def _resolve_local(naive: datetime, zone: tzinfo) -> datetime:
    """Attach `zone`; a wall time that does not exist (a DST gap) moves to the gap's end."""
    aware = naive.replace(tzinfo=zone)
    round_trip = aware.astimezone(UTC).astimezone(zone)
    if round_trip.replace(tzinfo=None) == naive:
        return aware
    # In a gap, the two readings of the wall time (offsets before and after) bracket the
    # transition instant, the first valid time: find it to the second.
    lo, hi = sorted(int(naive.replace(tzinfo=zone, fold=f).timestamp()) for f in (0, 1))
    hi += 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) > naive:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, zone)


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)
