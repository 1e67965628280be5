"""A set of compiled packs applied to one customer's state, one event at a time.

`RuleSet.apply` is the per-event core shared by replay, backtest, the demo and the Kafka
worker: merge a profile update, update the aggregates, evaluate the rules, apply the
contact policy, and return the actions and decisions. It mutates the state it is given
and never raises for a bad value in an expression (that rule just does not match).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Final

from rules.catalogue import POLICY_PROFILE_FIELDS
from rules.errors import RuleError, RuleProblem, SourcePos
from rules.explain import Frame, explain
from rules.outcomes import Action, Decision, action_id
from rules.pack import load_pack_file, pack_files
from rules.policy import Candidate, decide
from rules.program import CompiledPack, CompiledRule, Program, compile_pack
from state.events import Event, ProfileEvent
from state.model import CustomerState
from state.timezones import zone

OnRuleError = Callable[[str, str], None]


@dataclass(frozen=True)
class EventResult:
    """What one event triggered. Shared instances: read it, do not change it."""

    actions: tuple[Action, ...] = ()
    decisions: tuple[Decision, ...] = ()
    duplicate: bool = False


NOTHING: Final = EventResult()
DUPLICATE: Final = EventResult(duplicate=True)


class RuleSet:
    """Compiled packs with unique names, applied together to every event."""

    def __init__(self, packs: Iterable[CompiledPack]) -> None:
        self.packs = list(packs)
        seen: dict[str, str] = {}
        problems = []
        for p in self.packs:
            if p.name in seen:
                message = f"pack `{p.name}` is already loaded from {seen[p.name]}"
                problems.append(RuleProblem(SourcePos(p.file, 1, 1), message))
            seen.setdefault(p.name, p.file)
        if problems:
            raise RuleError(problems)
        keep = set(POLICY_PROFILE_FIELDS)
        for p in self.packs:
            keep |= p.profile_refs
        self.profile_fields = frozenset(keep)
        self.by_type: dict[str, list[tuple[CompiledPack, Program]]] = {
            t: [(p, prog) for p in self.packs if (prog := p.programs.get(t)) is not None]
            for t in ("transaction", "interaction", "profile")
        }

    def describe(self) -> list[str]:
        return [f"{p.name} v{p.version} ({len(p.rules)} rules)" for p in self.packs]

    def apply(
        self,
        state: CustomerState,
        event: Event,
        on_error: OnRuleError | None = None,
        now: float | None = None,
    ) -> EventResult:
        """Apply one event to `state` and return what it triggered.

        `now` is the event's time in epoch seconds (computed from `event.ts` if not given).
        """
        if not state.remember(_event_key(event.event_id)):
            return DUPLICATE
        if now is None:
            now = event.ts.timestamp()
        if now > state.last_ts:
            state.last_ts = now
        profile = state.profile
        if type(event) is ProfileEvent:
            keep = self.profile_fields
            for name, value in event.changes().items():
                if name in keep:
                    old = profile.get(name)
                    # consent and other maps merge: {"sms": true} keeps the marketing answer
                    if isinstance(old, dict) and isinstance(value, dict):
                        value = {**old, **value}
                    profile[name] = value
        tz_name = profile.get("timezone")
        customer_zone = zone(tz_name) if isinstance(tz_name, str) else None
        report = on_error if on_error is not None else _ignore
        candidates: list[tuple[CompiledPack, CompiledRule, Candidate, list[dict[str, Any]]]] = []
        stored = state.aggregates
        for pack, program in self.by_type[event.type]:
            pz = customer_zone or pack.zone
            data = stored.get(pack.name)
            if data is None or data.get("#") != pack.signature:
                data = pack.ensure_aggregates(stored, data)
            hit = program.fn(event, now, profile, pz, data, report)
            if hit is None:
                continue
            matched, priors = hit
            current = pack.current(data, now)
            prior = {**current, **dict(zip(program.prior_names, priors, strict=True))}
            frame = Frame(event, now, profile, pz, current, prior, pack.kinds)
            for index in matched:
                rule = pack.rules[index]
                why = explain(rule.condition, frame)
                candidates.append((pack, rule, _candidate(pack, rule, pz), why))
        if not candidates:
            return NOTHING
        consent = (profile.get("consent") or {}).get("marketing") is True
        decide([c for _, _, c, _ in candidates], state.ledger, event.customer_id, now, consent)
        return _outcomes(event, candidates)


def _outcomes(
    event: Event,
    candidates: list[tuple[CompiledPack, CompiledRule, Candidate, list[dict[str, Any]]]],
) -> EventResult:
    actions: list[Action] = []
    decisions: list[Decision] = []
    ts = event.ts.isoformat()
    ordered = sorted(candidates, key=lambda c: c[2].kind != "alert")
    for pack, rule, cand, why in ordered:
        spec = rule.spec
        aid = action_id(pack.name, pack.version, spec.id, event.event_id)
        emitted = cand.outcome == "emitted" and not cand.shadow
        decisions.append(
            Decision(
                event_id=event.event_id,
                customer_id=event.customer_id,
                pack=pack.name,
                pack_version=pack.version,
                rule_id=spec.id,
                kind=spec.kind,
                ts=ts,
                outcome="emitted" if emitted else "shadow" if cand.shadow else "suppressed",
                reason=cand.reason,
                action_id=aid if emitted else None,
                explanation=why,
            )
        )
        if not emitted:
            continue
        offer = spec.offer.model_dump() if spec.offer is not None else None
        actions.append(
            Action(
                action_id=aid,
                kind=spec.kind,
                pack=pack.name,
                pack_version=pack.version,
                rule_id=spec.id,
                customer_id=event.customer_id,
                event_id=event.event_id,
                ts=ts,
                emitted_at=ts,
                offer=offer,
                severity=spec.severity,
                channel=spec.offer.channel if spec.offer is not None else spec.channel,
                not_before=cand.not_before.isoformat() if cand.not_before else None,
                explanation=why,
            )
        )
    return EventResult(tuple(actions), tuple(decisions))


def _candidate(pack: CompiledPack, rule: CompiledRule, pz: tzinfo) -> Candidate:
    spec = rule.spec
    return Candidate(
        pack=pack.name,
        rule_id=spec.id,
        kind=spec.kind,
        policy=pack.policy,
        zone=pz,
        severity=spec.severity,
        dedup=spec.dedup,
        cooldown=spec.cooldown,
        priority=spec.priority,
        value=spec.value,
        shadow=(spec.mode or pack.spec.mode) == "shadow",
    )


def _ignore(pack: str, rule: str) -> None:
    pass


def _event_key(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=8).digest()


def load_rules(paths: Iterable[str | Path]) -> RuleSet:
    """Load, validate and compile packs from files or folders; raise RuleError on any problem.

    Every file is checked and every problem reported, not just the first.
    """
    problems: list[RuleProblem] = []
    packs: list[CompiledPack] = []
    for path in paths:
        files = pack_files(Path(path))
        if not files:
            problems.append(RuleProblem(SourcePos(str(path), 1, 1), "no rule packs (*.yaml) here"))
        for file in files:
            try:
                packs.append(compile_pack(load_pack_file(file)))
            except RuleError as err:
                problems.extend(err.problems)
    if problems:
        raise RuleError(problems)
    return RuleSet(packs)
