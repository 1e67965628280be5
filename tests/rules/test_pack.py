"""Pack files: every YAML, schema and expression error at file:line:col with the line and a
caret; defaults; and a bad pack never replaces the rules that are running."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from rules.errors import RuleError, RuleProblem
from rules.pack import load_pack_file
from rules.ruleset import load_rules
from state.store import MemoryStore, StateCache
from streams.engine import Engine, Record

# --- factories --------------------------------------------------------------------------

RULE = """\
  - id: r1
    kind: alert
    severity: high
    on: transaction
    when: event.amount > 1
"""


def write(tmp_path: Path, text: str, name: str = "pack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(*paths: Path) -> list[RuleProblem]:
    with pytest.raises(RuleError) as info:
        load_rules(paths)
    return info.value.problems


def only_problem(path: Path) -> RuleProblem:
    (problem,) = problems(path)
    return problem


def assert_at(problem: RuleProblem, path: Path, line: int, col: int, message: str) -> None:
    """The problem is at `path`:line:col (1-based) and prints that line with a caret under col."""
    assert (problem.pos.file, problem.pos.line, problem.pos.col) == (str(path), line, col)
    assert message in problem.message
    head, source, caret = str(problem).split("\n")
    assert head == f"{path}:{line}:{col}: error: {problem.message}"
    assert source == "    " + path.read_text().splitlines()[line - 1]
    assert caret == "    " + " " * (col - 1) + "^"


def position_of(path: Path, token: str) -> tuple[int, int]:
    """The 1-based line and column of the only occurrence of `token` in the file."""
    text = path.read_text()
    assert text.count(token) == 1
    before = text[: text.index(token)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


# --- YAML and schema errors -------------------------------------------------------------


def test_error_format_is_file_line_col_then_the_line_and_a_caret(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\nrules:\n" + RULE + "    cooldwon: 10m\n")
    assert str(only_problem(path)) == (
        f"{path}:9:5: error: unknown key `cooldwon` (did you mean `cooldown`?)\n"
        "        cooldwon: 10m\n"
        "        ^"
    )


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\n  extra: x\nrules:\n" + RULE)
    assert_at(only_problem(path), path, 3, 8, "invalid YAML: mapping values are not allowed here")


def test_invalid_yaml_at_the_end_of_the_file_points_after_the_last_character(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\nrules: [a, b\n")
    assert_at(only_problem(path), path, 3, 13, "invalid YAML: expected ',' or ']'")


def test_yaml_tab_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion:\t1\nrules:\n" + RULE)
    assert_at(only_problem(path), path, 2, 9, "invalid YAML: found character '\\t'")


def test_top_level_list(tmp_path: Path) -> None:
    path = write(tmp_path, "# a list, not a pack\n- pack: p\n- version: 1\n")
    assert_at(only_problem(path), path, 2, 1, "a pack is a YAML mapping")


def test_empty_file(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ""))
    assert (problem.pos.line, problem.pos.col, problem.message) == (
        1,
        1,
        "a pack is a YAML mapping",
    )


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\nrules:\n" + RULE + "    cooldwon: 10m\n")
    assert_at(only_problem(path), path, 9, 5, "unknown key `cooldwon` (did you mean `cooldown`?)")


@pytest.mark.parametrize(
    ("extra", "line", "col", "message"),
    [
        ("agregates: {}\n", 3, 1, "unknown key `agregates` (did you mean `aggregates`?)"),
        (
            "policy:\n  consent_requird: false\n",
            4,
            3,
            "unknown key `consent_requird` (did you mean `consent_required`?)",
        ),
        (
            "aggregates:\n  a: {on: transaction, kind: count, windw: 1h}\n",
            4,
            37,
            "unknown key `windw` (did you mean `window`?)",
        ),
    ],
)
def test_unknown_keys_anywhere(
    tmp_path: Path, extra: str, line: int, col: int, message: str
) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\n" + extra + "rules:\n" + RULE)
    assert_at(problems(path)[0], path, line, col, message)


def test_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\nrules:\n" + RULE + "    when: event.amount > 2\n")
    assert_at(only_problem(path), path, 9, 5, "duplicate key `when`")


@pytest.mark.parametrize("missing", ["pack", "version", "rules"])
def test_missing_required_key(tmp_path: Path, missing: str) -> None:
    parts = {"pack": "pack: p\n", "version": "version: 1\n", "rules": "rules:\n" + RULE}
    path = write(tmp_path, "".join(v for k, v in parts.items() if k != missing))
    assert_at(only_problem(path), path, 1, 1, f"{missing}: Field required")


def test_alert_without_severity(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pack: p\nversion: 1\nrules:\n"
        "  - id: r1\n    kind: alert\n    on: transaction\n    when: event.amount > 1\n",
    )
    assert_at(only_problem(path), path, 4, 5, "an alert rule needs a `severity`")


def test_offer_without_offer(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pack: p\nversion: 1\nrules:\n"
        "  - id: o1\n    kind: offer\n    on: transaction\n    when: event.amount > 1\n",
    )
    assert_at(only_problem(path), path, 4, 5, "an offer rule needs `offer: {product: ..., channel:")


def test_bad_duration(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\nrules:\n" + RULE + "    dedup: 10x\n")
    assert_at(only_problem(path), path, 9, 12, "'10x' is not a duration")


def test_bad_window_in_a_flow_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pack: p\nversion: 1\naggregates:\n  a: {on: transaction, kind: count, window: 10x}\n"
        "rules:\n" + RULE,
    )
    assert_at(only_problem(path), path, 4, 45, "aggregates.a.window: '10x' is not a duration")


def test_bad_time_zone(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\ntimezone: Mars/Olympus\nrules:\n" + RULE)
    assert_at(only_problem(path), path, 3, 11, "unknown IANA time zone 'Mars/Olympus'")


def test_duplicate_rule_id_points_at_the_second_rule(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\nrules:\n" + RULE + RULE)
    assert_at(only_problem(path), path, 9, 9, "rule id 'r1' is used twice")


def test_several_problems_in_one_file_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        pack: p
        version: 1
        rules:
          - id: r1
            kind: alert
            severity: high
            on: transaction
            when: event.amout > 1
          - id: r2
            kind: alert
            severity: high
            on: transaction
            when: event.chanel == "card"
        """,
    )
    first, second = problems(path)
    assert_at(first, path, 8, 11, "unknown field `event.amout`")
    assert_at(second, path, 13, 11, "unknown field `event.chanel`")


def test_several_schema_problems_in_one_file_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pack: p\nversion: 1\nrules:\n" + RULE + "    cooldwon: 10m\n"
        "  - id: r2\n    kind: alert\n    on: transaction\n    when: event.amount > 1\n",
    )
    first, second = problems(path)
    assert_at(first, path, 9, 5, "unknown key `cooldwon`")
    assert_at(second, path, 10, 5, "rules.1: an alert rule needs a `severity`")


def test_every_file_of_a_folder_is_checked_and_reported(tmp_path: Path) -> None:
    folder = tmp_path / "packs"
    folder.mkdir()
    a = write(folder, "pack: a\nversion: 1\nrules:\n" + RULE + "    dedup: 10x\n", "a.yaml")
    b = write(folder, "pack: b\nversion: 1\nrules: []\n", "b.yml")
    write(folder, "pack: c\nversion: 1\nrules:\n" + RULE, "c.yaml")  # fine
    write(folder, "not a pack", "notes.txt")  # not read
    found = problems(folder)
    assert [(p.pos.file, p.pos.line) for p in found] == [(str(a), 9), (str(b), 3)]


# --- expression errors at their place in the file ---------------------------------------

HEAD = "pack: p\nversion: 1\nrules:\n  - id: r1\n    kind: alert\n    severity: high\n"
WHEN = {
    "plain": "    on: transaction\n    when: event.amount > 1 and event.amout > 2\n",
    "single-quoted": "    on: transaction\n    when: 'event.amount > 1 and event.amout > 2'\n",
    "double-quoted": '    on: transaction\n    when: "event.amount > 1 and event.amout > 2"\n',
    "double-quoted with escapes": (
        '    on: transaction\n    when: "event.channel == \\"card\\" and event.amout > 2"\n'
    ),
    "single-quoted with escapes": (
        "    on: transaction\n    when: 'event.channel == ''card'' and event.amout > 2'\n"
    ),
    "plain, several lines": (
        "    on: transaction\n    when: event.amount > 1\n      and event.amout > 2\n"
    ),
    "single-quoted, several lines": (
        "    on: transaction\n    when: 'event.amount > 1\n\n      and event.amout > 2'\n"
    ),
    "double-quoted, several lines": (
        '    on: transaction\n    when: "event.channel == \\"card\\"\n'
        '      and event.amount > 1 \\\n      and event.amout > 2"\n'
    ),
    "folded (>-)": (
        "    on: transaction\n    when: >-\n      event.amount > 1\n"
        "      and event.amout > 2\n    dedup: 1h\n"
    ),
    "literal (|)": (
        "    when: |\n      event.amount > 1\n        and event.amout > 2\n\n"
        "    # the trigger\n    on: transaction\n"
    ),
    "folded, last in the file": (
        "    on: transaction\n    when: >\n      event.amount > 1\n      and event.amout > 2"
    ),
    "flow mapping, plain, several lines": (
        "    on: transaction\n    when: event.amount > 0\n"
        "  - {id: r2, kind: alert, severity: low, on: transaction,\n"
        "     when: event.amount > 1\n       and event.amout > 2, dedup: 1h}\n"
    ),
}


@pytest.mark.parametrize("style", list(WHEN))
def test_expression_error_points_at_the_token_in_the_file(tmp_path: Path, style: str) -> None:
    path = write(tmp_path, HEAD + WHEN[style])
    line, col = position_of(path, "event.amout")
    problem = problems(path)[-1]
    assert_at(problem, path, line, col, "unknown field `event.amout` for transaction events")
    assert "(did you mean `event.amount`?)" in problem.message


def test_syntax_error_at_the_end_of_a_block_points_after_its_last_character(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        HEAD + "    on: transaction\n    when: >-\n      event.amount > 1 and\n"
        "      event.amount >\n    dedup: 1h\n",
    )
    assert_at(only_problem(path), path, 10, 21, "syntax error: invalid syntax")


def test_aggregate_filter_error_is_reported_in_place(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        pack: p
        version: 1
        aggregates:
          a: {on: transaction, kind: count, window: 1h}
          b: {on: transaction, kind: count, window: 1h, where: 'agg.a > 1'}
          c: {on: transaction, kind: stats, window: 1h, field: event.channel}
        rules:
          - {id: r1, kind: alert, severity: low, on: transaction, when: 'agg.b > 1'}
        """,
    )
    first, second = problems(path)
    assert_at(first, path, 5, 57, "aggregate filters and fields may read `prior.*`, not `agg.*`")
    assert_at(second, path, 6, 56, "a stats aggregate needs a number field")


def test_multiline_plain_expression_inside_a_flow_mapping_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        pack: p
        version: 1
        aggregates:
          a: {on: transaction, kind: count, window: 1h, where: event.amount > 1
               and event.amount < 5}
        rules:
          - {id: r1, kind: alert, severity: low, on: transaction, when: event.amount > 1
              and agg.a >= 1, dedup: 1h}
        """,
    )
    (pack,) = load_rules([path]).packs
    assert pack.aggregates[0].spec.where == "event.amount > 1 and event.amount < 5"
    assert pack.rules[0].spec.dedup == 3600.0


# --- hostile files are rejected, not crashes --------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pack: p\nversion: 1\x0c\nrules: []\n", "invalid YAML: character #x000c is not allowed"),
        ("pack: !!python/object/apply:os.system ls\n", "invalid YAML: could not determine"),
        ("pack: !custom p\n", "invalid YAML: could not determine a constructor for the tag"),
        ("pack: p\n---\npack: q\n", "invalid YAML: but found another document"),
        ("pack: &a [*a]\n", "nested too deeply or too large"),
        ("pack: " + "[" * 2000 + "]" * 2000 + "\n", "nested too deeply"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "nested too deeply or too large (check aliases)",
        ),
        ("? [a, b]\n: 1\n", "a key must be a name"),
    ],
    ids=[
        "control-char",
        "python-tag",
        "unknown-tag",
        "two-docs",
        "recursive-alias",
        "deep",
        "alias-bomb",
        "list-key",
    ],
)
def test_hostile_yaml_is_a_rule_error(tmp_path: Path, text: str, message: str) -> None:
    assert message in only_problem(write(tmp_path, text)).message


# --- reading and defaults ---------------------------------------------------------------


def test_on_key_is_a_name_not_yaml_1_1_true(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        pack: p
        version: 1
        aggregates:
          logins: {on: interaction, kind: count, window: 1h}
        rules:
          - id: r1
            kind: alert
            severity: low
            on: [transaction, interaction]
            when: agg.logins >= 0
        """,
    )
    spec = load_pack_file(path).spec
    assert spec.aggregates["logins"].on == ["interaction"]
    assert spec.rules[0].on == ["transaction", "interaction"]


def test_only_pack_version_and_rules_are_required_and_defaults_apply(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\nrules:\n" + RULE)
    spec = load_pack_file(path).spec
    assert spec.aggregates == {}
    assert spec.profile_fields == {}
    assert spec.timezone is None
    policy = spec.policy
    assert policy.consent_required is True
    assert policy.max_offers_per_day is None
    assert policy.max_offers_per_week is None
    assert policy.quiet_hours is None
    assert policy.risk_block is None
    assert policy.holdout_percent == 0
    rule = spec.rules[0]
    assert (rule.dedup, rule.cooldown, rule.priority, rule.value) == (None, None, 0, 0.0)
    (pack,) = load_rules([path]).packs
    assert [r.spec.id for r in pack.rules] == ["r1"]


def test_an_empty_policy_keeps_consent_required(tmp_path: Path) -> None:
    path = write(tmp_path, "pack: p\nversion: 1\npolicy: {max_offers_per_day: 2}\nrules:\n" + RULE)
    policy = load_pack_file(path).spec.policy
    assert policy.consent_required is True
    assert policy.max_offers_per_day == 2
    assert policy.max_offers_per_week is None


def test_consent_can_be_turned_off(tmp_path: Path) -> None:
    path = write(
        tmp_path, "pack: p\nversion: 1\npolicy: {consent_required: false}\nrules:\n" + RULE
    )
    assert load_pack_file(path).spec.policy.consent_required is False


def test_shipped_packs_load() -> None:
    root = Path(__file__).resolve().parents[2] / "rules" / "packs"
    names = sorted(p.name for p in load_rules([root]).packs)
    assert names == ["retail-marketing", "retail-risk"]


# --- a bad pack never replaces the running rules -----------------------------------------

GOOD = """\
pack: t
version: 1
rules:
  - {id: big, kind: alert, severity: low, on: transaction, when: 'event.amount >= 100'}
"""


def txn(n: int, amount: float) -> Record:
    body = {
        "type": "transaction",
        "event_id": f"e{n}",
        "customer_id": f"c{n}",
        "ts": "2026-11-02T10:00:00+08:00",
        "amount": amount,
        "direction": "debit",
        "channel": "card",
    }
    return Record(json.dumps(body).encode(), f"test:{n}")


def test_previous_rules_keep_running_after_a_bad_pack_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, "t.yaml")
    engine = Engine(load_rules([path]), StateCache(MemoryStore()))
    before = engine.process([txn(1, 150.0), txn(2, 5.0)])
    assert [json.loads(a)["rule_id"] for a in before.actions] == ["big"]

    path.write_text(GOOD.replace("version: 1", "version: 2").replace(">= 100", ">= 1OO"))
    with pytest.raises(RuleError) as info:
        engine.rules = load_rules([path])  # the swap happens only if the load succeeds
    assert info.value.problems[0].pos.line == 4

    after = engine.process([txn(3, 150.0), txn(4, 5.0)])
    actions = [json.loads(a) for a in after.actions]
    assert [(a["rule_id"], a["pack_version"], a["event_id"]) for a in actions] == [("big", 1, "e3")]
