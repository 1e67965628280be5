"""A pack compiled for speed: one fused Python function per event type.

For each event type a pack listens to, all of its aggregates and rules become one generated
function: read the prior aggregate values the rules need, update the aggregates this event
feeds, read the current values, then test every rule of that type and return the indices
of the rules that matched (with the values they saw, for explanations). Rules whose `on:`
does not include the type are not in that function at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any, Final

from rules.catalogue import DECLARED_TYPES, PROFILE_FIELDS
from rules.codegen import event_field, to_python
from rules.compiler import AggregateRef, Checked, ExprError, Scope, check
from rules.errors import RuleError, RuleProblem
from rules.functions import FUNCTIONS
from rules.pack import AggregateSpec, LoadedPack, PackSpec, RuleSpec
from state.timezones import zone
from state.windows import DistinctWindow, LastEvent, NumericWindow

EVENT_TYPES: Final = ("transaction", "interaction", "profile")
EVAL_ERRORS: Final = (TypeError, ArithmeticError, ValueError)

_UNREAD: Final = object()
Window = NumericWindow | DistinctWindow | LastEvent
# fn(event, time, profile, zone, aggregate data, on_error(pack, rule)) -> (matched, priors) | None
FusedFn = Callable[
    [Any, float, dict[str, Any], tzinfo, dict[str, Any], Callable[[str, str], None]],
    tuple[list[int], tuple[Any, ...]] | None,
]


def expand_on(on: list[str]) -> tuple[str, ...]:
    return EVENT_TYPES if "any" in on else tuple(t for t in EVENT_TYPES if t in on)


@dataclass
class CompiledAggregate:
    name: str
    spec: AggregateSpec
    key: str
    window: Window
    ref: AggregateRef
    where: Checked | None
    field: Checked | None

    def new(self) -> Any:
        return self.window.new() if not isinstance(self.window, LastEvent) else None


@dataclass
class CompiledRule:
    index: int
    spec: RuleSpec
    on: tuple[str, ...]
    condition: Checked


@dataclass
class Program:
    """The fused function of one pack for one event type."""

    fn: FusedFn
    rules: list[CompiledRule]
    prior_names: list[str]  # the aggregates whose prior values `fn` returns, in order
    source: str


class CompiledPack:
    """A validated, compiled pack, ready to evaluate."""

    def __init__(self, loaded: LoadedPack) -> None:
        spec = loaded.spec
        self.spec: PackSpec = spec
        self.name = spec.pack
        self.version = spec.version
        self.file = loaded.file
        self.policy = spec.policy
        self.zone: tzinfo = (zone(spec.timezone) if spec.timezone else None) or UTC
        self.profile = dict(PROFILE_FIELDS)
        self.profile.update({k: DECLARED_TYPES[v] for k, v in spec.profile_fields.items()})
        problems: list[RuleProblem] = []
        self.aggregates = self._aggregates(loaded, problems)
        self.rules = self._rules(loaded, problems)
        if problems:
            raise RuleError(problems)
        self.signature = hashlib.blake2b(
            "".join(sorted(a.key for a in self.aggregates)).encode(), digest_size=4
        ).hexdigest()
        self.kinds = {a.name: a.spec.kind for a in self.aggregates}
        self.profile_refs: set[str] = set()
        for item in [*(r.condition for r in self.rules), *self._agg_exprs()]:
            self.profile_refs |= item.profile_refs
        self.programs = {t: self._program(t) for t in EVENT_TYPES}

    def _agg_exprs(self) -> list[Checked]:
        return [c for a in self.aggregates for c in (a.where, a.field) if c is not None]

    def _aggregates(
        self, loaded: LoadedPack, problems: list[RuleProblem]
    ) -> list[CompiledAggregate]:
        refs = {
            name: AggregateRef(name, i, spec.kind, expand_on(list(spec.on)))
            for i, (name, spec) in enumerate(self.spec.aggregates.items())
        }
        out: list[CompiledAggregate] = []
        for name, spec in self.spec.aggregates.items():
            ref = refs[name]
            scope = Scope(ref.on, refs, self.profile, allow_agg=False)
            where = _check(loaded, ("aggregates", name, "where"), spec.where, scope, True, problems)
            fld = _check(loaded, ("aggregates", name, "field"), spec.field, scope, False, problems)
            if fld is not None and spec.kind == "distinct" and fld.type != "string":
                problems.append(
                    loaded.problem(
                        ("aggregates", name, "field"),
                        "a distinct aggregate counts strings, such as event.device_id",
                    )
                )
            elif fld is not None and spec.kind != "distinct" and fld.type != "number":
                problems.append(
                    loaded.problem(
                        ("aggregates", name, "field"),
                        f"a {spec.kind} aggregate needs a number field",
                    )
                )
            out.append(
                CompiledAggregate(name, spec, _fingerprint(spec), _window(spec), ref, where, fld)
            )
        return out

    def _rules(self, loaded: LoadedPack, problems: list[RuleProblem]) -> list[CompiledRule]:
        refs = {a.name: a.ref for a in self.aggregates}
        out: list[CompiledRule] = []
        for i, spec in enumerate(self.spec.rules):
            on = expand_on(list(spec.on))
            scope = Scope(on, refs, self.profile)
            cond = _check(loaded, ("rules", i, "when"), spec.when, scope, True, problems)
            if cond is not None:
                out.append(CompiledRule(i, spec, on, cond))
        return out

    def _program(self, event_type: str) -> Program | None:
        """Generate the fused function for one event type.

        Order inside it: read the priors that must be read before any update (those of
        aggregates this event feeds that a filter reads, or that a rule reads both as prior
        and current); update the aggregates whose current value a rule reads; test the
        rules; on a match, take the remaining priors for the explanation; update the other
        aggregates. Every other value is read where a condition reaches it, at most once.
        """
        rules = [r for r in self.rules if event_type in r.on]
        fed = [a for a in self.aggregates if event_type in a.ref.on]
        if not rules and not fed:
            return None
        agg_refs: set[int] = set()
        rule_priors: set[int] = set()
        for r in rules:
            agg_refs |= r.condition.agg_refs
            rule_priors |= r.condition.prior_refs
        filter_priors: set[int] = set()
        for a in fed:
            for c in (a.where, a.field):
                if c is not None:
                    filter_priors |= c.prior_refs
        fed_ids = {a.ref.index for a in fed}
        early = [a for a in fed if a.ref.index in agg_refs]
        late = [a for a in fed if a.ref.index not in agg_refs]
        eager = sorted(fed_ids & (filter_priors | (rule_priors & agg_refs)))
        lazy_priors = sorted(fed_ids & rule_priors - set(eager))
        scope = Scope((event_type,), {a.name: a.ref for a in self.aggregates}, self.profile)
        values: dict[tuple[str, int], str] = {}
        memo: list[str] = []
        for i in sorted(agg_refs | rule_priors | filter_priors):
            read = f"W{i}.value(d{i}, T)"
            if i not in fed_ids:  # not fed by this event: prior and current are the same
                values["agg", i] = values["prior", i] = (
                    f"(a{i} if a{i} is not _U else (a{i} := {read}))"
                )
                memo.append(f"a{i}")
                continue
            if i in agg_refs:
                values["agg", i] = f"(a{i} if a{i} is not _U else (a{i} := {read}))"
                memo.append(f"a{i}")
            if i in lazy_priors:
                values["prior", i] = f"(p{i} if p{i} is not _U else (p{i} := {read}))"
                memo.append(f"p{i}")
            elif i in eager:
                values["prior", i] = f"p{i}"
        lines = ["def _eval(ev, T, C, Z, S, X):"]
        for i in sorted(agg_refs | rule_priors | filter_priors | fed_ids):
            lines.append(f"    d{i} = S[{self.aggregates[i].key!r}]")
        if memo:
            lines.append(f"    {' = '.join(memo)} = _U")
        for i in eager:
            copy = "dict" if self.aggregates[i].spec.kind == "distinct" else ""
            lines.append(f"    p{i} = {copy}(W{i}.value(d{i}, T))")
        for a in early:
            lines += _update_lines(a, event_type, scope, values)
        lines.append("    m = []")
        for r in rules:
            lines.append("    try:")
            lines.append(f"        if {to_python(r.condition, event_type, scope, values)}:")
            lines.append(f"            m.append({r.index})")
            lines.append("    except _ERRORS:")
            lines.append(f"        X({self.name!r}, {r.spec.id!r})")
        names = [self.aggregates[i].name for i in [*eager, *lazy_priors]]
        # A distinct set is updated in place: take a copy before the late updates run.
        taken = [f"p{i}" for i in eager] + [
            f"dict({values['prior', i]})"
            if self.aggregates[i].spec.kind == "distinct"
            else values["prior", i]
            for i in lazy_priors
        ]
        lines.append("    if m:")
        lines.append(f"        r = ({''.join(t + ', ' for t in taken)})")
        for a in late:
            lines += _update_lines(a, event_type, scope, values)
        lines.append("    if m:")
        lines.append("        return m, r")
        lines.append("    return None")
        source = "\n".join(lines) + "\n"
        namespace: dict[str, Any] = {"_E": {}, "_ERRORS": EVAL_ERRORS, "_U": _UNREAD}
        namespace.update({f"_f_{f.name}": f.impl for f in FUNCTIONS.values()})
        namespace.update({f"W{a.ref.index}": a.window for a in self.aggregates})
        exec(compile(source, f"<pack {self.name} {event_type}>", "exec"), namespace)
        return Program(namespace["_eval"], rules, names, source)

    def current(self, data: dict[str, Any], now: float) -> dict[str, Any]:
        """Every aggregate's value for a customer at `now` (for explanations)."""
        return {a.name: a.window.value(data[a.key], now) for a in self.aggregates}

    def ensure_aggregates(self, stored: dict[str, Any], pack_data: Any) -> dict[str, Any]:
        """This pack's aggregate data for a customer, created or re-keyed as needed.

        The data carries the signature of the aggregate definitions it was made for (key
        `#`); data of an aggregate whose definition changed is dropped, the rest kept.
        """
        if pack_data is not None and pack_data.get("#") == self.signature:
            return pack_data  # type: ignore[no-any-return]
        old = pack_data or {}
        fresh = {a.key: old[a.key] if a.key in old else a.new() for a in self.aggregates}
        fresh["#"] = self.signature
        stored[self.name] = fresh
        return fresh


def _update_lines(
    a: CompiledAggregate, event_type: str, scope: Scope, values: dict[tuple[str, int], str]
) -> list[str]:
    i = a.ref.index
    cond = to_python(a.where, event_type, scope, values) if a.where is not None else "True"
    out = ["    try:", f"        if {cond}:"]
    if a.spec.kind == "last":
        fields = "".join(
            f", {f!r}: {event_field(f, event_type)}" for f in sorted(a.ref.last_fields)
        )
        out.append(f"            d{i} = S[{a.key!r}] = {{'ts': T{fields}}}")
    elif a.spec.kind == "count":
        out.append(f"            W{i}.add(d{i}, T, 1)")
    else:
        assert a.field is not None
        out.append(f"            v = {to_python(a.field, event_type, scope, values)}")
        out.append("            if v is not None:")
        out.append(f"                W{i}.add(d{i}, T, v)")
    out += ["    except _ERRORS:", "        pass"]
    return out


def _check(
    loaded: LoadedPack,
    path: tuple[str | int, ...],
    source: str | None,
    scope: Scope,
    want_bool: bool,
    problems: list[RuleProblem],
) -> Checked | None:
    if source is None:
        return None
    text, first, shift = loaded.expression(path, source)
    try:
        return check(text, scope, want_bool=want_bool)
    except ExprError as err:
        line = first + err.line - 1
        col = err.col + (shift if err.line == 1 else 0)
        problems.append(loaded.problem_in(first, line, col, err.message))
        return None


def _window(spec: AggregateSpec) -> Window:
    if spec.kind == "last":
        return LastEvent(spec.window)
    assert spec.window is not None
    if spec.kind == "distinct":
        return DistinctWindow(spec.window)
    return NumericWindow(spec.kind, spec.window)


def _fingerprint(spec: AggregateSpec) -> str:
    """A short key that changes whenever the aggregate's meaning changes."""
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


def compile_pack(loaded: LoadedPack) -> CompiledPack:
    """Compile a loaded pack; raise RuleError listing every expression problem."""
    return CompiledPack(loaded)
