"""The expression language: what is rejected at load (with the reason and the position), what
is accepted, and what a rule does at run time with missing values and bad arithmetic."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from rules.catalogue import PROFILE_FIELDS
from rules.compiler import AggregateRef, ExprError, Scope, check
from rules.errors import RuleError
from rules.ruleset import EventResult, RuleSet, load_rules
from state.events import Event
from state.model import CustomerState
from tests.factories import make_event

# --- factories --------------------------------------------------------------------------


def scope(on: tuple[str, ...] = ("transaction",), *, allow_agg: bool = True) -> Scope:
    """A scope with one aggregate of each shape and one declared profile field."""
    refs = {
        "txn_10m": AggregateRef("txn_10m", 0, "count", ("transaction",)),
        "amount_90d": AggregateRef("amount_90d", 1, "stats", ("transaction",)),
        "devices": AggregateRef("devices", 2, "distinct", ("transaction", "interaction")),
        "last_card": AggregateRef("last_card", 3, "last", ("transaction",)),
    }
    profile = {**PROFILE_FIELDS, "delinquent": "bool", "score": "number"}
    return Scope(on, refs, profile, allow_agg=allow_agg)


def rejected(source: str, **kw: Any) -> ExprError:
    with pytest.raises(ExprError) as info:
        check(source, scope(**kw))
    return info.value


def event(kind: str = "transaction", at: float = 0.0, **fields: Any) -> Event:
    """A decoded event `at` seconds after T0, with the fields its type requires."""
    return make_event(kind, at, **fields)


def pack_file(tmp_path: Path, rules: str, aggregates: str = "", name: str = "p") -> Path:
    path = tmp_path / f"{name}.yaml"
    text = f"pack: {name}\nversion: 1\n"
    if aggregates:
        text += "aggregates:\n" + aggregates
    path.write_text(text + "rules:\n" + rules)
    return path


def alert(rule_id: str, when: str, on: str = "transaction") -> str:
    """One alert rule in flow style (no dedup, so every match is emitted)."""
    when = json.dumps(when, ensure_ascii=False)  # a JSON string is a YAML double-quoted one
    return f"  - {{id: {rule_id}, kind: alert, severity: low, on: {on}, when: {when}}}\n"


class Run:
    """A rule set applied to one customer, recording rule errors as (pack, rule)."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules, self.state = rules, CustomerState()
        self.errors: list[tuple[str, str]] = []

    def apply(self, ev: Event) -> EventResult:
        return self.rules.apply(self.state, ev, lambda p, r: self.errors.append((p, r)))

    def fired(self, ev: Event) -> list[str]:
        return [d.rule_id for d in self.apply(ev).decisions]


def run(tmp_path: Path, rules: str, aggregates: str = "") -> Run:
    return Run(load_rules([pack_file(tmp_path, rules, aggregates)]))


# --- rejected at load time ----------------------------------------------------------------

LONG_STRING = '"' + "x" * 257 + '"'
BIG_LIST = "[" + ", ".join(['"a"'] * 257) + "]"

REJECTED = [
    # (expression, part of the message, line, column (0-based))
    ("__class__", "unknown name `__class__`", 1, 0),
    ('__import__("os")', "unknown function `__import__`", 1, 0),
    ('getattr(event, "amount") > 1', "unknown function `getattr`", 1, 0),
    ("().__class__.__bases__", "attributes may only follow event, customer, agg or prior", 1, 0),
    ('"{0.__class__}".format(event)', "only the listed functions may be called", 1, 0),
    ('event.channel.upper() == "CARD"', "only the listed functions may be called", 1, 0),
    ("event.__class__ == 1", "names starting with `_` are not allowed (`__class__`)", 1, 0),
    ("(lambda: true)()", "only the listed functions may be called", 1, 0),
    ("event.amount > 1 and (lambda: true)", "lambdas are not allowed", 1, 22),
    ("[x for x in event.tags] == []", "comprehensions are not allowed", 1, 0),
    ("{x for x in event.tags} == []", "comprehensions are not allowed", 1, 0),
    ("{x: 1 for x in event.tags} == []", "comprehensions are not allowed", 1, 0),
    ("len(x for x in event.tags) > 0", "comprehensions are not allowed", 1, 3),
    ('event.channel == f"{event.amount}"', "f-strings are not allowed", 1, 17),
    ('event.tags[0] == "a"', "indexing with [] is not allowed", 1, 0),
    ("(y := event.amount) > 1", "assignment (:=) is not allowed", 1, 1),
    ("(1 if event.amount > 1 else 2) > 1", "`x if c else y` is not allowed", 1, 1),
    ("event.amount ** 2 > 1", "operator ** (power) is not allowed", 1, 0),
    ("9**9**9 > 1", "operator ** (power) is not allowed", 1, 0),
    ("event.amount | 1 > 0", "operator BitOr is not allowed", 1, 0),
    ("event.amount > 1 and event.amount & 1 == 0", "operator BitAnd is not allowed", 1, 21),
    ("~event.amount > 1", "bitwise operators are not allowed", 1, 0),
    ('"a" * 10**9 == event.channel', "arithmetic `*` needs numbers, not a string", 1, 0),
    ('event.channel == "a" * 3', "arithmetic `*` needs numbers, not a string", 1, 17),
    ('event.tags == ["a"] * 1000', "arithmetic `*` needs numbers, not a list", 1, 14),
    ('event.channel + "x" == "cardx"', "arithmetic `+` needs numbers, not a string", 1, 0),
    ("event.amount > 10000000000000000", "number literal is larger than 1e+15", 1, 15),
    ("event.amount < 1e16", "number literal is larger than 1e+15", 1, 15),
    ("event.amount < 1e999", "number literal is larger than 1e+15", 1, 15),
    (f"event.channel == {LONG_STRING}", "string literal is longer than 256 characters", 1, 17),
    (f"event.channel in {BIG_LIST}", "list literal has more than 256 items", 1, 17),
    ("event.amount in [1, event.amount]", "list items must be literal numbers or strings", 1, 20),
    ('event.channel in {"a", "b"}', "set literals are not allowed; use a list", 1, 17),
    ('{"a": 1} == event.channel', "dict literals are not allowed", 1, 0),
    ('b"card" == event.channel', "bytes literals are not allowed", 1, 0),
    ("round(event.amount, ndigits=2) > 1", "keyword arguments are not allowed", 1, 0),
    ("abss(event.amount) > 1", "unknown function `abss` (did you mean `abs`?)", 1, 0),
    ("abs(event.amount, 2) > 1", "abs() takes 1 arguments, not 2", 1, 0),
    ("distance_km(1, 2, 3) > 1", "distance_km() takes 4 arguments, not 3", 1, 0),
    ("max(1, 2, 3, 4, 5, 6, 7, 8, 9) > 1", "max() takes 2-8 arguments, not 9", 1, 0),
    ("local_hour(1) > 1", "local_hour() takes 0 arguments, not 1", 1, 0),
    ("abs(event.channel) > 1", "abs() needs a number, not a string", 1, 4),
    ("len(event.amount) > 1", "len() needs a list, set or string, not a number", 1, 0),
    ("evnt.amount > 1", "unknown root `evnt` (did you mean `event`?)", 1, 0),
    ("x.y.z > 1", "unknown root `x`", 1, 0),
    ("event", "`event` alone is not a value; write event.FIELD", 1, 0),
    ("event.amount > 1 and customer", "`customer` alone is not a value", 1, 21),
    ("abs > 1", "`abs` is a function; call it: abs(...)", 1, 0),
    (
        "event.amout > 100",
        "unknown field `event.amout` for transaction events (did you mean `event.amount`?)",
        1,
        0,
    ),
    ("event.amount.value > 1", "`event.amount` has no fields", 1, 0),
    (
        'customer.segmnt == "vip"',
        "unknown profile field `customer.segmnt` (did you mean `customer.segment`?)",
        1,
        0,
    ),
    ("customer.consent", "read consent by purpose, e.g. customer.consent.marketing", 1, 0),
    ("agg.txn_1m > 1", "unknown aggregate `agg.txn_1m` (did you mean `agg.txn_10m`?)", 1, 0),
    ("prior.nothing_like_it > 1", "unknown aggregate `prior.nothing_like_it`", 1, 0),
    ("agg.amount_90d > 1", "read a stats aggregate by member: count, sum, mean, std", 1, 0),
    ("agg.amount_90d.median > 1", "read a stats aggregate by member", 1, 0),
    ("agg.txn_10m.value > 1", "`agg.txn_10m` (count) has no fields", 1, 0),
    ("agg.last_card.amout > 1", "unknown field `amout` of the last event", 1, 0),
    ('event.amount == "5"', "a number is never equal to a string", 1, 0),
    ('event.amount > "5"', "cannot order a number and a string with `>`", 1, 0),
    ("event.amount < event.channel", "cannot order a number and a string with `<`", 1, 0),
    ("event.amount in event.channel", "`in` a string needs a string, not a number", 1, 0),
    ("event.channel in event.amount", "`in` needs a list or set, not a number", 1, 17),
    ("event.amount is None", "`Is` comparison is not allowed; use ==", 1, 0),
    ("event.amount + 1", "a condition must be true or false, but this is a number", 1, 0),
    ("event.channel", "a condition must be true or false, but this is a string", 1, 0),
    ("", "expression is empty", 1, 0),
    ("event.amount >", "syntax error: invalid syntax", 1, 14),
    ("event.amount > > 1", "syntax error: invalid syntax", 1, 15),
]


@pytest.mark.parametrize(("source", "message", "line", "col"), REJECTED)
def test_rejected_with_reason_and_position(source: str, message: str, line: int, col: int) -> None:
    err = rejected(source)
    assert message in err.message
    assert (err.line, err.col) == (line, col)


def test_unknown_function_lists_the_allowed_ones() -> None:
    err = rejected("eval('1') == 1")
    assert err.message.startswith("unknown function `eval`")
    assert "allowed: abs, min, max, round, len" in err.message
    assert "distance_km" in err.message and "local_hour" in err.message


def test_nesting_deeper_than_32_is_rejected() -> None:
    source = "not (" * 40 + "event.amount > 1" + ")" * 40
    err = rejected(source)
    assert err.message == "expression is nested more than 32 levels deep"
    assert (err.line, err.col) == (1, 5 * 32)  # the first `not` past the limit


def test_nesting_of_32_is_accepted() -> None:
    assert check("not (" * 30 + "event.amount > 1" + ")" * 30, scope()).type == "bool"


def test_too_many_parentheses_is_a_syntax_error_not_a_crash() -> None:
    err = rejected("(" * 300 + "true" + ")" * 300)
    assert err.message.startswith("syntax error: too many nested parentheses")


def test_more_than_400_nodes_is_rejected() -> None:
    numbers = "[" + ",".join(["1"] * 250) + "]"
    source = f"event.amount in {numbers} and event.amount in {numbers}"
    assert len(source) < 2000
    err = rejected(source)
    assert err.message == "expression has more than 400 parts; split the rule"
    assert (err.line, err.col) == (1, 0)


def test_expression_over_2000_characters_is_rejected() -> None:
    source = " or ".join(["event.amount > 1"] * 101)
    assert len(source) > 2000
    err = rejected(source)
    assert err.message == "expression is longer than 2000 characters"
    assert (err.line, err.col) == (1, 0)


def test_position_on_a_later_line_of_a_multiline_expression() -> None:
    err = rejected('event.channel == "é" and\n    event.amout > 1')
    assert err.message.startswith("unknown field `event.amout`")
    assert (err.line, err.col) == (2, 4)


def test_column_counts_characters_not_bytes() -> None:
    err = rejected('event.channel == "日本" and event.amout > 1')
    assert (err.line, err.col) == (1, 26)


def test_syntax_error_at_the_end_points_after_the_last_character() -> None:
    err = rejected("event.amount > 1 and\n  event.amount <\n")
    assert err.message == "syntax error: invalid syntax"
    assert (err.line, err.col) == (2, 16)


def test_aggregate_filter_may_read_prior_but_not_agg() -> None:
    err = rejected("agg.devices != null", allow_agg=False)
    assert err.message == "aggregate filters and fields may read `prior.*`, not `agg.*`"
    assert (err.line, err.col) == (1, 0)
    assert check("event.device_id not in prior.devices", scope(allow_agg=False)).prior_refs == {2}


def test_interaction_scope_does_not_know_transaction_fields() -> None:
    err = rejected("event.amount > 1", on=("interaction",))
    assert err.message.startswith("unknown field `event.amount` for interaction events")


# --- accepted ---------------------------------------------------------------------------

ACCEPTED = [
    "1 < event.amount <= 500",
    "0 <= event.amount < prior.amount_90d.mean * 5",
    'event.channel in ["card", "atm"]',
    "event.amount in [1, 2.5, 3]",
    'event.channel not in ["branch"]',
    "event.device_id not in prior.devices",
    "event.device_id in agg.devices and len(agg.devices) >= 2",
    '"contactless" in event.tags',
    'event.channel in "card atm"',
    "abs(event.amount - 100) < 5",
    "min(event.amount, 10) == 10 and max(event.amount, 10, 20) > 0",
    "round(event.amount) == 10 and round(event.amount, 2) > 0",
    "hours_between(agg.last_card.ts, event.ts) < 1",
    "days_since(agg.last_card.ts) > 365",
    "distance_km(agg.last_card.lat, agg.last_card.lon, event.lat, event.lon) > 500",
    "local_hour() >= 22 or local_hour() < 6",
    "coalesce(event.lat, 0) > 10",
    "event.lat == null",
    "event.lat != None",
    "null == event.lat",
    "agg.last_card != null and agg.last_card.amount >= 100",
    "customer.consent.marketing",
    "customer.consent.marketing == true and not customer.delinquent",
    "customer.score > 700",
    "customer.delinquent != true",
    '"wealth" not in customer.products',
    "agg.amount_90d.count >= 20 and agg.amount_90d.std > 0",
    "(event.amount - agg.amount_90d.mean) / agg.amount_90d.std > 4",
    "event.amount % 2 == 0 and event.amount // 3 >= 1 and -event.amount < 0",
    'event.type == "transaction" and event.ts > 0',
    "true",
    "False or event.amount > 1",
    "event.amount > 1 and\n  event.amount < 5",
]


@pytest.mark.parametrize("source", ACCEPTED)
def test_accepted(source: str) -> None:
    assert check(source, scope()).type in ("bool", "null")


def test_checked_expression_records_what_it_reads() -> None:
    checked = check(
        "agg.txn_10m > 1 and prior.devices != null and customer.segment == 'vip' and "
        "local_hour() > 1",
        scope(),
    )
    assert checked.agg_refs == {0}
    assert checked.prior_refs == {2}
    assert checked.profile_refs == {"segment"}
    assert checked.uses_zone


# --- run time ---------------------------------------------------------------------------


def test_missing_value_in_an_ordering_comparison_does_not_match_and_is_counted(
    tmp_path: Path,
) -> None:
    r = run(
        tmp_path,
        alert("far_north", "event.lat > 60")
        + alert("big", "event.amount > 5")
        + alert("after_balance", "event.balance_after + 100 > 0"),
    )
    assert r.fired(event(amount=10.0)) == ["big"]
    assert r.errors == [("p", "far_north"), ("p", "after_balance")]
    r.errors.clear()
    assert r.fired(event(amount=10.0, lat=61.0, balance_after=5.0)) == [
        "far_north",
        "big",
        "after_balance",
    ]
    assert r.errors == []


def test_missing_value_inside_or_still_means_no_match(tmp_path: Path) -> None:
    r = run(tmp_path, alert("r", "event.lat > 60 or event.amount > 5"))
    assert r.fired(event(amount=10.0)) == []
    assert r.errors == [("p", "r")]


def test_function_of_a_missing_value_is_null_then_no_match(tmp_path: Path) -> None:
    r = run(tmp_path, alert("r", "abs(event.lat) > 1"))
    assert r.fired(event()) == []
    assert r.errors == [("p", "r")]


def test_division_by_zero_does_not_match_and_is_counted(tmp_path: Path) -> None:
    r = run(tmp_path, alert("ratio", "event.amount / (event.amount - 5) > 1"))
    assert r.fired(event(amount=5.0)) == []
    assert r.errors == [("p", "ratio")]
    assert r.fired(event(amount=8.0)) == ["ratio"]  # 8 / 3 > 1
    assert r.fired(event(amount=4.0)) == []  # 4 / -1 > 1 is false, and no error
    assert r.errors == [("p", "ratio")]


def test_modulo_by_zero_does_not_match_and_is_counted(tmp_path: Path) -> None:
    r = run(tmp_path, alert("mod", "event.amount % (event.amount - 5) == 0"))
    assert r.fired(event(amount=5.0)) == []
    assert r.errors == [("p", "mod")]


def test_equality_with_null_is_true_when_missing_and_never_an_error(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        alert("no_lat", "event.lat == null")
        + alert("has_lat", "event.lat != null")
        + alert("lat_5", "event.lat == 5"),
    )
    assert r.fired(event()) == ["no_lat"]
    assert r.fired(event(lat=5.0)) == ["has_lat", "lat_5"]
    assert r.errors == []


def test_field_another_event_type_lacks_reads_null(tmp_path: Path) -> None:
    on = "[transaction, interaction]"
    r = run(
        tmp_path,
        alert("no_amount", "event.amount == null", on)
        + alert("large", "event.amount > 5", on)
        + alert("login", 'event.channel == "app"', on),
    )
    assert r.fired(event("interaction")) == ["no_amount", "login"]
    assert r.errors == [("p", "large")]  # an ordering on the missing amount
    assert r.fired(event("transaction", amount=10.0)) == ["large"]


def test_profile_field_left_out_of_an_update_reads_null(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        alert("no_country", "event.home_country == null", "profile")
        + alert("not_cn", 'event.home_country != "CN"', "profile")
        + alert("vip", 'event.segment == "vip"', "profile"),
    )
    assert r.fired(event("profile", segment="vip")) == ["no_country", "not_cn", "vip"]
    assert r.fired(event("profile", home_country="CN")) == []
    assert r.errors == []


def test_declared_profile_field_is_readable_and_an_undeclared_one_is_not(tmp_path: Path) -> None:
    rules = alert("ok", "customer.delinquent != true and customer.score >= 700")
    path = tmp_path / "p.yaml"
    path.write_text(
        "pack: p\nversion: 1\nprofile_fields: {delinquent: bool, score: number}\nrules:\n" + rules
    )
    r = Run(load_rules([path]))
    assert r.fired(event()) == []
    assert r.errors == [("p", "ok")]  # no score yet: an ordering on a missing value
    r.apply(event("profile", score=720, delinquent=False))
    assert r.fired(event()) == ["ok"]
    r.apply(event("profile", delinquent=True))
    assert r.fired(event()) == []

    with pytest.raises(RuleError) as info:
        load_rules([pack_file(tmp_path, rules, name="undeclared")])
    (problem,) = info.value.problems
    assert problem.message == (
        "unknown profile field `customer.delinquent`; "
        "declare other profile fields under `profile_fields:`"
    )


def test_on_any_rule_runs_for_every_event_type(tmp_path: Path) -> None:
    r = run(tmp_path, alert("any", "event.device_id == null", "any"))
    assert r.fired(event("transaction")) == ["any"]
    assert r.fired(event("interaction")) == ["any"]
    assert r.fired(event("profile")) == ["any"]


def test_rule_only_runs_for_its_event_types(tmp_path: Path) -> None:
    r = run(tmp_path, alert("t", "true", "transaction"))
    assert r.fired(event("interaction")) == []
    assert r.fired(event("transaction")) == ["t"]


def test_string_constants_with_quotes_and_unicode_compile_as_written(tmp_path: Path) -> None:
    r = run(tmp_path, alert("r", 'event.merchant_category == "café \\"x\\""'))
    assert r.fired(event(merchant_category='café "x"')) == ["r"]
    assert r.fired(event(merchant_category="café x")) == []


FUSED_AGGREGATES = """\
  cnt: {on: transaction, kind: count, window: 10m}
  card_cnt: {on: transaction, where: 'event.channel == "card"', kind: count, window: 1h}
  st: {on: transaction, kind: stats, field: event.amount, window: 1d}
  big_sum: {on: transaction, where: 'event.amount > 50', kind: sum, field: event.amount, window: 2h}
  devs: {on: [transaction, interaction], kind: distinct, field: event.device_id, window: 1d}
  last_card: {on: transaction, where: 'event.lat != null', kind: last}
  logins: {on: interaction, where: 'event.device_id not in prior.devs', kind: count, window: 1h}
"""

FUSED_TEMPLATES = [
    ("transaction", "event.amount > {k}0"),
    ("transaction", "agg.cnt >= {m}"),
    ("transaction", "prior.cnt >= {m} and event.channel == 'card'"),
    ("transaction", "agg.card_cnt >= {m} or event.amount < {k}"),
    ("transaction", "agg.st.count >= {m} and event.amount > agg.st.mean"),
    ("transaction", "prior.st.count >= 2 and event.amount > prior.st.mean + {k}"),
    ("transaction", "agg.big_sum >= {k}00"),
    ("transaction", "event.device_id not in prior.devs"),
    ("[transaction, interaction]", "len(agg.devs) >= {m}"),
    ("transaction", "prior.last_card != null and hours_between(prior.last_card.ts, event.ts) < 1"),
    (
        "transaction",
        "distance_km(prior.last_card.lat, prior.last_card.lon, event.lat, event.lon) > {k}00",
    ),
    ("transaction", "event.lat == null or event.lat > {k}"),
    ("interaction", "agg.logins >= {m}"),
    ("interaction", "event.action == 'login' and event.device_id in prior.devs"),
    ("any", "local_hour() >= {m}"),
    ("transaction", "abs(event.amount - {k}0) < 25 and event.channel in ['card', 'atm']"),
    ("transaction", "event.amount / (event.amount - {k}0) > 1"),
]


def fused_rules() -> list[str]:
    rules = []
    for n in range(50):
        on, when = FUSED_TEMPLATES[n % len(FUSED_TEMPLATES)]
        rules.append(alert(f"r{n:02d}", when.format(k=n % 9 + 1, m=n % 4 + 1), on))
    return rules


def fused_events() -> list[dict[str, Any]]:
    rnd = random.Random(7)
    out = []
    for i in range(80):
        at = i * rnd.choice([20.0, 60.0, 400.0])
        if rnd.random() < 0.25:
            out.append({"kind": "interaction", "at": at, "device_id": rnd.choice("abcd")})
            continue
        fields: dict[str, Any] = {
            "amount": rnd.choice([5.0, 10.0, 30.0, 60.0, 95.0, 250.0]),
            "channel": rnd.choice(["card", "card", "atm", "online"]),
            "device_id": rnd.choice("abcde"),
        }
        if rnd.random() < 0.5:
            fields["lat"], fields["lon"] = rnd.uniform(-60, 60), rnd.uniform(-170, 170)
        out.append({"kind": "transaction", "at": at, **fields})
    return out


def test_fused_pack_of_50_rules_matches_each_rule_alone(tmp_path: Path) -> None:
    rules = fused_rules()
    fused = Run(load_rules([pack_file(tmp_path, "".join(rules), FUSED_AGGREGATES)]))
    alone = []
    for n, rule in enumerate(rules):
        folder = tmp_path / f"alone{n}"
        folder.mkdir()
        alone.append(Run(load_rules([pack_file(folder, rule, FUSED_AGGREGATES)])))
    assert len(fused.rules.packs[0].rules) == 50
    total = 0
    for spec in fused_events():
        fired = fused.fired(event(**spec))
        # each rule alone sees the same event (fresh ids do not matter to the rules)
        expected = [rid for single in alone for rid in single.fired(event(**spec))]
        assert fired == expected, spec
        total += len(fired)
    assert sorted(fused.errors) == sorted(e for single in alone for e in single.errors)
    assert 50 < total < 50 * 80  # some rules fire, not all of them all the time
    assert fused.errors  # and some hit missing values


def test_bad_expression_in_a_pack_is_a_rule_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as info:
        run(tmp_path, alert("r", "event.amount ** 2 > 1"))
    (problem,) = info.value.problems
    assert problem.message == "operator ** (power) is not allowed"


def test_lists_may_hold_negative_numbers(tmp_path: Path) -> None:
    r = run(tmp_path, alert("neg", "event.amount - 20 in [-10, -5]"))
    assert r.fired(event(amount=10.0)) == ["neg"]
    assert r.fired(event(amount=12.0)) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('event.amount in ["a", "b"]', "a number is never in a list of strings"),
        ("event.channel in [1, 2]", "a string is never in a list of numbers"),
        ("event.amount in customer.products", "a number is never in a list of strings"),
        ('event.channel in ["card", 2]', "a list holds either numbers or strings, not both"),
        ("event.channel in [true]", "list items must be literal numbers or strings"),
    ],
)
def test_list_membership_is_type_checked(source: str, message: str) -> None:
    assert rejected(source).message == message


def test_unquoted_clock_time_gets_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(
        "pack: q\nversion: 1\npolicy:\n  quiet_hours: {start: 22:00, end: '08:00'}\nrules:\n"
        + alert("r", "event.amount > 1")
    )
    with pytest.raises(RuleError) as info:
        load_rules([path])
    assert 'write clock times in quotes, e.g. "22:00"' in str(info.value)
    assert f"{path}:4:24:" in str(info.value)
