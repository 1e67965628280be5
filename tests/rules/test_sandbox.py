# ruff: noqa: RUF001, RUF003
"""The rule sandbox: escape attempts are rejected when the pack loads, at file:line:col, and
nothing in them ever runs.

Each attempt is written into a real pack file and loaded with `load_rules`, as `rules check`,
`replay` and the worker do. The payloads would create a file or set an environment variable
if any part of them were evaluated (`test_the_sentinel_payloads_are_live` shows they would);
the sentinel checks that neither happened. Attempts that are valid expressions after all
(a string that merely contains code, a comment) are loaded, run on events and checked to be
inert: they compare text, and the generated code names only the engine's own variables.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.catalogue import EVENT_FIELDS, PROFILE_FIELDS
from rules.codegen import to_python
from rules.compiler import AggregateRef, ExprError, Scope, check
from rules.errors import RuleError, RuleProblem
from rules.ruleset import RuleSet, load_rules
from state.model import CustomerState
from tests.factories import make_event

ROOT = Path(__file__).resolve().parents[2]
HEAD: Final = (
    "pack: sandbox\nversion: 1\nrules:\n"
    "  - id: r\n    kind: alert\n    severity: low\n    on: transaction\n"
)
WHEN_LINE: Final = 8  # the line of `when:` after HEAD
WHEN_COL: Final = len('    when: "') + 1  # the first character of a double-quoted `when`


# --- the sentinel ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sentinel:
    """A file and an environment variable that only an executed payload would create."""

    file: Path
    env: str

    def fill(self, template: str) -> str:
        return template.replace("FILE", str(self.file)).replace("ENV", self.env)

    def assert_untouched(self) -> None:
        assert not self.file.exists(), "a payload ran: it created the sentinel file"
        assert self.env not in os.environ, "a payload ran: it set the sentinel variable"


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Sentinel]:
    s = Sentinel(tmp_path / "PWNED", f"CRM_SANDBOX_PWNED_{uuid.uuid4().hex[:8]}")
    yield s
    s.assert_untouched()
    os.environ.pop(s.env, None)


def write_pack(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sandbox.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def when(expr: str) -> str:
    """A pack whose one rule's condition is `expr`, as a YAML double-quoted scalar."""
    return HEAD + "    when: " + json.dumps(expr, ensure_ascii=False) + "\n"


def problems(path: Path) -> list[RuleProblem]:
    """The problems of loading `path`, after checking that each points into it."""
    with pytest.raises(RuleError) as info:
        load_rules([path])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert info.value.problems
    for problem in info.value.problems:
        pos = problem.pos
        assert pos.file == str(path)
        assert 1 <= pos.line <= max(len(lines), 1)
        assert 1 <= pos.col <= len(lines[pos.line - 1]) + 1 if lines else pos.col == 1
        head = str(problem).split("\n")[0]
        assert head.startswith(f"{path}:{pos.line}:{pos.col}: error: ")
    return info.value.problems


def rejected(path: Path) -> RuleProblem:
    return problems(path)[0]


# --- expressions: rejected at load ----------------------------------------------------------

# (expression, part of the message, where the caret is: the start of the expression (None),
# the first occurrence of a text in the file's line, or an offset into the expression)
Case = tuple[str, str, str | int | None]

INTROSPECTION: Final[list[Case]] = [
    ("__class__", "unknown name `__class__`", None),
    ("__builtins__", "unknown name `__builtins__`", None),
    ("__import__('os').system('touch FILE') == 0", "only the listed functions", None),
    ("__import__('os').environ.setdefault('ENV', '1') == '1'", "only the listed functions", None),
    ("__import__('os') == null", "unknown function `__import__`", None),
    ("event.__class__ == 1", "names starting with `_` are not allowed (`__class__`)", None),
    ("event.__class__.__bases__[0].__subclasses__() == []", "only the listed functions", None),
    ("event.__dict__ == null", "(`__dict__`)", None),
    ("event.ts.__class__ == 1", "(`__class__`)", None),
    ("customer.__init__.__globals__ == null", "(`__init__`)", None),
    ("agg.__class__ == 1", "(`__class__`)", None),
    ("prior.__subclasses__ == 1", "(`__subclasses__`)", None),
    ("event._private == 1", "(`_private`)", None),
    ("event.amount.__class__ == 1", "(`__class__`)", None),
    ("true.__class__ == 1", "(`__class__`)", None),
    ("abs.__self__ == null", "(`__self__`)", None),
    ("abs.__globals__ == null", "(`__globals__`)", None),
    ("len.__call__(event.tags) > 0", "only the listed functions", None),
    ("max.__self__.__import__('os') == null", "only the listed functions", None),
    ("object.__subclasses__() == []", "only the listed functions", None),
]
BUILTINS: Final[list[Case]] = [
    (f"{name}{args} == null", f"unknown function `{name}`", None)
    for name, args in [
        ("getattr", "(event, '__class__')"),
        ("setattr", "(event, 'amount', 1)"),
        ("delattr", "(event, 'amount')"),
        ("eval", "(\"open('FILE', 'w')\")"),
        ("exec", "(\"open('FILE', 'w')\")"),
        ("compile", "('1', 'f', 'eval')"),
        ("open", "('FILE', 'w')"),
        ("globals", "()"),
        ("locals", "()"),
        ("vars", "()"),
        ("dir", "()"),
        ("type", "(event)"),
        ("object", "()"),
        ("breakpoint", "()"),
        ("input", "()"),
        ("print", "(1)"),
        ("exit", "()"),
        ("pow", "(10, 10, 10)"),
        ("format", "(event, '')"),
        ("isinstance", "(event, object)"),
        ("memoryview", "(b'x')"),
    ]
] + [(f"{name} == null", f"unknown name `{name}`", None) for name in ("help", "object", "type")]
FORMAT_STRINGS: Final[list[Case]] = [
    ("'{0.__class__}'.format(event) == ''", "only the listed functions", None),
    ("'{0.__init__.__globals__}'.format(event) == ''", "only the listed functions", None),
    ("'{}'.format.__globals__ == null", "attributes may only follow event", None),
    ("f'{event.__class__}' == ''", "f-strings are not allowed", None),
    ("f\"{open('FILE', 'w')}\" == ''", "f-strings are not allowed", None),
    ("event.channel == f'{event.amount!r:>{10**9}}'", "f-strings are not allowed", "f'"),
    ("'%(a)s' % {'a': event.amount} == '1'", "arithmetic `%` needs numbers, not a string", None),
    ("'%s' % event.channel == 'card'", "arithmetic `%` needs numbers, not a string", None),
    ("'%c' % 95 == '_'", "arithmetic `%` needs numbers, not a string", None),
    ("'%*d' % (10**9, 1) == ''", "arithmetic `%` needs numbers, not a string", None),
]
LITERAL_ATTRIBUTES: Final[list[Case]] = [
    ("().__class__ == 1", "attributes may only follow event, customer, agg or prior", None),
    ("().__class__.__base__.__subclasses__() == []", "only the listed functions", None),
    ("''.join(event.tags) == ''", "only the listed functions", None),
    ("[].append(1) == null", "only the listed functions", None),
    ("(1).__class__ == 1", "attributes may only follow event, customer, agg or prior", None),
    ("'abc'.upper() == 'ABC'", "only the listed functions", None),
    ("event.channel.upper() == 'CARD'", "only the listed functions", None),
]
SYNTAX: Final[list[Case]] = [
    ("event.tags[0] == 'a'", "indexing with [] is not allowed", None),
    ("'abc'[0] == 'a'", "indexing with [] is not allowed", None),
    ("event.tags[0:1] == []", "indexing with [] is not allowed", None),
    ("(lambda: open('FILE', 'w'))() == null", "only the listed functions", None),
    ("event.amount > 1 and (lambda: true)", "lambdas are not allowed", "lambda"),
    ("[open('FILE', 'w') for x in [1]] == []", "comprehensions are not allowed", None),
    ("{x for x in event.tags} == []", "comprehensions are not allowed", None),
    ("{x: 1 for x in event.tags} == []", "comprehensions are not allowed", None),
    ("len(open('FILE', 'w') for x in [1]) > 0", "comprehensions are not allowed", "(open"),
    ("(x := event.amount) > 1", "assignment (:=) is not allowed", "x :="),
    ("max(*[1, 2], 3) > 1", "* unpacking is not allowed", "*["),
    ("[*event.tags] == []", "list items must be literal numbers or strings", "*event"),
    ("abs(**{'x': 1}) > 1", "keyword arguments are not allowed", None),
    ("event.amount if true else 0", "`x if c else y` is not allowed", None),
    ("(yield) == 1", "Yield is not allowed", "yield"),
    ("await event == 1", "await is not allowed", None),
    ("not event.amount is None", "`Is` comparison is not allowed", "event"),
    ("{'a': 1} == event.channel", "dict literals are not allowed", None),
    ("{'a'} == event.channel", "set literals are not allowed", None),
    ("event.amount > 1; import os", "syntax error", "; import"),
    ("import os", "syntax error", None),
    ("event.amount > 1\nimport os", "syntax error", "import os"),
    ("true) or (open('FILE', 'w')", "unknown function `open`", "open("),
    ("true\n)\n(open('FILE', 'w')", "syntax error", "(open"),
]
HUGE: Final[list[Case]] = [
    ("10**10**10 > event.amount", "operator ** (power) is not allowed", None),
    ("event.amount ** 0.5 > 1", "operator ** (power) is not allowed", None),
    ("9e999 > event.amount", "number literal is larger than 1e+15", None),
    ("-9e999 < event.amount", "number literal is larger than 1e+15", "9e999"),
    ("event.amount < 1e16", "number literal is larger than 1e+15", "1e16"),
    ("event.amount > 123456789012345678901234567890", "larger than 1e+15", "1234"),
    ("event.amount > 0x7fffffffffffffffffff", "larger than 1e+15", "0x7f"),
    ("event.amount > 1_000_000_000_000_000_000", "larger than 1e+15", "1_000"),
    ("event.amount > " + "9" * 1900, "larger than 1e+15", "999"),
    ("'a' * 10**9 == event.channel", "arithmetic `*` needs numbers, not a string", None),
    ("'a' * 1000000000000000 == event.channel", "needs numbers, not a string", None),
    ("[1] * 10**9 == []", "arithmetic `*` needs numbers, not a list", None),
    ("[1] * 1000000000000000 == []", "arithmetic `*` needs numbers, not a list", None),
    ("event.tags == ['a'] + ['b']", "arithmetic `+` needs numbers, not a list", "['a'] +"),
    ("event.channel + event.channel == ''", "needs numbers, not a string", None),
    ("event.amount << 100 > 1", "operator LShift is not allowed", None),
    ("~event.amount > 1", "bitwise operators are not allowed", None),
    ("1j == event.amount", "complex literals are not allowed", None),
    ("... == event.amount", "ellipsis literals are not allowed", None),
    ("b'x' == event.channel", "bytes literals are not allowed", None),
    ("event.channel == '" + "x" * 257 + "'", "string literal is longer than 256", "'x"),
    ("event.amount in [" + ",".join(["1"] * 257) + "]", "list literal has more than 256", "["),
]
DEEP: Final[list[Case]] = [
    ("(" * 1000 + "true" + ")" * 1000, "expression is longer than 2000 characters", None),
    # CPython's parser stops at 200 open brackets: the caret is on the 200th
    ("(" * 990 + "true" + ")" * 990, "too many nested parentheses", 199),
    ("[" * 990 + "]" * 990 + " == []", "too many nested parentheses", 199),
    ("abs(" * 300 + "1" + ")" * 300 + " > 0", "too many nested parentheses", 4 * 199 + 3),
    ("not " * 495 + "true", "more than 400 parts", None),
    ("not " * 40 + "true", "nested more than 32 levels deep", 4 * 32),  # the 33rd `not`
    ("-" * 1990 + "1 > 0", "more than 400 parts", None),
    ("- " * 40 + "1 > 0", "nested more than 32 levels deep", 2 * 31),
    ("event.amount" + " + 1" * 40 + " > 0", "nested more than 32 levels deep", None),
    ("event.amount" + " + 1" * 300 + " > 0", "more than 400 parts", None),
    ("event.amount > 1" + " and event.amount > 1" * 90, "more than 400 parts", None),
    (" or ".join(["event.amount > 1"] * 200), "longer than 2000 characters", None),
    ("x" * 1999, "unknown name", None),
    ("9" * 4500 + " > 1", "longer than 2000 characters", None),
]
LOOKALIKES: Final[list[Case]] = [
    ("ｅvent.amount > 1", "names must be ASCII (`ｅvent.amount` reads as `event.amount`)", None),
    ("event.ａmount > 1", "reads as `event.amount`", None),
    ("__ｃlass__ == 1", "names must be ASCII (`__ｃlass__` reads as `__class__`)", None),
    ("event.__ｃlass__ == 1", "reads as `event.__class__`", None),
    ("ｇetattr(event, 'amount') > 1", "reads as `getattr`", None),
    ("ｅｖａｌ('1') == 1", "reads as `eval`", None),
    ("ｔrue", "reads as `true`", None),
    ("𝐞vent.amount > 1", "reads as `event.amount`", None),
    ("event.amount > 1 and ﬁeld == 1", "reads as `field`", "ﬁeld"),
    ("еvent.amount > 1", "names must be ASCII (`еvent.amount`)", None),  # Cyrillic е
    ("_\u200b_class__ == 1", "invalid non-printable character", "\u200b"),
    ("event.amount > 1 ａnd true", "syntax error", None),
]
ESCAPES: Final[list[Case]] = [
    ("event.channel == 'x\\\\' or __import__('os')", "unknown function `__import__`", "__imp"),
    ("event.amount > 1 \\\n or __import__('os')", "unknown function `__import__`", "__imp"),
    ("event.channel == 'card\x00' or open('FILE')", "cannot contain null bytes", None),
    ("event.channel == '\\N{LOW LINE}' and __import__('os')", "`__import__`", "__imp"),
    ("'\\u005f\\u005fclass__' == event.channel and open('FILE')", "`open`", "open("),
    ("event.channel == '\\' or true", "unterminated string literal", 17),
    ("event.channel == '''x''' or open('FILE')", "unknown function `open`", "open("),
    ("event.channel == r'\\' or true", "unterminated string literal", 17),
]
EXPRESSIONS: Final = (
    (INTROSPECTION + BUILTINS + FORMAT_STRINGS + LITERAL_ATTRIBUTES + SYNTAX + HUGE + DEEP)
    + LOOKALIKES
    + ESCAPES
)


@pytest.mark.parametrize(("expr", "message", "at"), EXPRESSIONS)
def test_escape_attempt_is_rejected_at_load_at_file_line_col(
    tmp_path: Path, sentinel: Sentinel, expr: str, message: str, at: str | int | None
) -> None:
    expr = sentinel.fill(expr)
    path = write_pack(tmp_path, when(expr))
    problem = rejected(path)
    assert message in problem.message
    line = path.read_text(encoding="utf-8").splitlines()[WHEN_LINE - 1]
    if at is None:
        col = WHEN_COL
    elif isinstance(at, int):
        col = WHEN_COL + at
    else:
        col = line.index(at, WHEN_COL - 1) + 1
    assert (problem.pos.line, problem.pos.col) == (WHEN_LINE, col), problem
    assert problem.source_line == line


@pytest.mark.parametrize(("expr", "message", "at"), EXPRESSIONS[:: len(EXPRESSIONS) // 12])
@pytest.mark.parametrize("where", ["aggregate_where", "aggregate_field", "block_scalar"])
def test_escape_attempts_elsewhere_are_rejected_too(
    tmp_path: Path, sentinel: Sentinel, expr: str, message: str, at: object, where: str
) -> None:
    """In an aggregate's filter or field, and in a multi-line `when` (`>-`)."""
    expr = sentinel.fill(expr)
    quoted = json.dumps(expr, ensure_ascii=False)
    rule = "  - {id: r, kind: alert, severity: low, on: transaction, when: 'true'}\n"
    if where.startswith("aggregate"):
        key, kind = ("where", "count") if where == "aggregate_where" else ("field", "sum")
        aggregate = f"  a: {{on: transaction, kind: {kind}, window: 1h, {key}: {quoted}}}\n"
        text = f"pack: s\nversion: 1\naggregates:\n{aggregate}rules:\n{rule}"
    else:
        body = "\n".join("      " + row for row in expr.split("\n"))
        text = HEAD + "    when: >-\n" + body + "\n"
    path = write_pack(tmp_path, text)
    if where == "block_scalar" and "\x00" in expr:
        assert "not allowed" in rejected(path).message  # YAML refuses the character itself
        return
    problem = rejected(path)
    assert message in problem.message
    assert problem.pos.line == (4 if where.startswith("aggregate") else WHEN_LINE + 1)


# --- YAML tricks ----------------------------------------------------------------------------

BINARY: Final = base64.b64encode(b"event.amount > 1").decode()
LAUGHS: Final = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 12)
)

YAML_TRICKS: Final[list[tuple[str, str, str, tuple[int, int]]]] = [
    # (name, pack text, part of the message, (line, col))
    ("when_mapping", HEAD + "    when: {a: 1}\n", "valid string", (8, 11)),
    ("when_list", HEAD + "    when: [event.amount > 1]\n", "valid string", (8, 11)),
    ("when_number", HEAD + "    when: 5\n", "valid string", (8, 11)),
    ("when_bool", HEAD + "    when: true\n", "valid string", (8, 11)),
    ("when_null", HEAD + "    when: null\n", "valid string", (8, 11)),
    ("when_empty", HEAD + "    when:\n", "valid string", (8, 10)),
    ("when_date", HEAD + "    when: 2026-01-01\n", "valid string", (8, 11)),
    ("when_inf", HEAD + "    when: .inf\n", "valid string", (8, 11)),
    ("when_str_tag", HEAD + "    when: !!str 5\n", "a condition must be true or false", (8, 11)),
    (
        "python_object_apply",
        HEAD + "    when: !!python/object/apply:os.system ['touch FILE']\n",
        "YAML tag `tag:yaml.org,2002:python/object/apply:os.system` is not allowed",
        (8, 11),
    ),
    (
        "python_object_new",
        HEAD + "    when: !!python/object/new:os.system {args: ['touch FILE']}\n",
        "YAML tag",
        (8, 11),
    ),
    (
        "python_object",
        HEAD + "    when: !!python/object:os._wrap_close {}\n",
        "YAML tag",
        (8, 11),
    ),
    (
        "python_name",
        HEAD + "    when: !!python/name:os.system\n",
        "could not determine a constructor",
        (8, 11),
    ),
    (
        "python_module",
        HEAD + "    when: !!python/module:os\n",
        "could not determine a constructor",
        (8, 11),
    ),
    ("python_tuple", HEAD + "    when: !!python/tuple [1]\n", "YAML tag", (8, 11)),
    ("local_tag", HEAD + "    when: !custom event.amount > 1\n", "constructor", (8, 11)),
    ("binary", HEAD + f"    when: !!binary {BINARY}\n", "!!binary", (8, 11)),
    ("set", HEAD + "    when: !!set {a, b}\n", "YAML tag `tag:yaml.org,2002:set`", (8, 11)),
    ("omap", HEAD + "    when: !!omap [a: 1]\n", "YAML tag", (8, 11)),
    (
        "tag_on_the_document",
        "--- !!python/object/apply:os.system\npack: p\nversion: 1\nrules: []\n",
        "YAML tag",
        (1, 5),
    ),
    (
        "tag_on_rules",
        "pack: p\nversion: 1\nrules: !!python/object/apply:os.system\n"
        "  - {id: r, kind: alert, severity: low, on: transaction, when: 'true'}\n",
        "YAML tag",
        (3, 8),
    ),
    (
        "tag_on_an_offer",
        "pack: p\nversion: 1\nrules:\n  - id: r\n    kind: offer\n    on: transaction\n"
        "    when: 'true'\n"
        "    offer: !!python/object:os._wrap_close {product: x, channel: push}\n",
        "YAML tag",
        (8, 12),
    ),
    (
        "alias_to_a_list",
        HEAD.replace("on: transaction", "on: &m [transaction]") + "    when: *m\n",
        "valid string",
        (7, 9),  # an alias is the anchored node: the error points at the anchor
    ),
    ("undefined_alias", HEAD + "    when: *nope\n", "undefined alias", (8, 11)),
    ("recursive_alias", HEAD + "    when: &a [*a]\n", "nested too deeply or too large", (8, 11)),
    ("billion_laughs", "pack: p\nversion: 1\n" + LAUGHS + "rules: *a11\n", "too large", (3, 5)),
    (
        "merge_key",
        "pack: p\nversion: 1\nrules:\n"
        "  - &b {id: r, kind: alert, severity: low, on: transaction, when: 'true'}\n"
        "  - <<: *b\n    id: r2\n",
        "unknown key `<<`",
        (5, 5),
    ),
    ("deep_flow", HEAD + "    when: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested", (1, 1)),
    (
        "deep_block",
        "pack: p\nversion: 1\n" + "".join("  " * i + f"k{i}:\n" for i in range(40)) + "rules: []\n",
        "nested too deeply",
        (20, 35),  # k17: the 17th level
    ),
    (
        "second_document",
        HEAD + "    when: 'true'\n---\n!!python/object/apply:os.system ['touch FILE']\n",
        "another document",
        (9, 1),
    ),
    (
        "yaml_escapes_decode_to_a_call",
        HEAD + "    when: \"\\u006fpen('FILE', 'w') == null\"\n",
        "unknown function `open`",
        (8, 12),
    ),
    (
        "block_scalar_payload",
        HEAD + "    when: |\n      event.amount > 1 and\n      open('FILE', 'w') == null\n",
        "unknown function `open`",
        (10, 7),
    ),
    ("nul_in_file", HEAD + "    when: 'true'\x00\n", "character #x0000 is not allowed", (8, 17)),
]


@pytest.mark.parametrize(
    ("text", "message", "pos"),
    [pytest.param(t, m, p, id=n) for n, t, m, p in YAML_TRICKS],
)
def test_yaml_tricks_are_rejected_at_file_line_col(
    tmp_path: Path, sentinel: Sentinel, text: str, message: str, pos: tuple[int, int]
) -> None:
    path = write_pack(tmp_path, sentinel.fill(text))
    found = [p for p in problems(path) if message in p.message]
    assert found, problems(path)
    assert (found[0].pos.line, found[0].pos.col) == pos, found[0]


# --- names that end up in generated code ------------------------------------------------

INJECTED_NAMES: Final = [
    ("rule_id", HEAD.replace("id: r", "id: \"r'); open('FILE', 'w'); ('\"") + "    when: 'true'\n"),
    (
        "pack_name",
        HEAD.replace("pack: sandbox", "pack: \"x'); open('FILE')#\"") + "    when: 'true'\n",
    ),
    (
        "aggregate_name",
        "pack: p\nversion: 1\naggregates:\n  \"a'] or open('FILE', 'w') or S['\": "
        "{on: transaction, kind: count, window: 1h}\nrules:\n"
        "  - {id: r, kind: alert, severity: low, on: transaction, when: 'true'}\n",
    ),
    (
        "profile_field",
        "pack: p\nversion: 1\nprofile_fields:\n  \"x') or open('FILE', 'w') or C.get('\": bool\n"
        "rules:\n  - {id: r, kind: alert, severity: low, on: transaction, when: 'true'}\n",
    ),
]


@pytest.mark.parametrize(("name", "text"), INJECTED_NAMES, ids=[n for n, _ in INJECTED_NAMES])
def test_names_that_reach_generated_code_must_be_plain(
    tmp_path: Path, sentinel: Sentinel, name: str, text: str
) -> None:
    path = write_pack(tmp_path, sentinel.fill(text))
    problem = rejected(path)
    assert "should match pattern" in problem.message, problem


# --- accepted, and inert ----------------------------------------------------------------

INERT: Final[list[tuple[str, dict[str, Any], dict[str, Any]]]] = [
    # (expression, fields of an event it matches, fields of one it does not)
    (
        "event.merchant_category == \"') or open('FILE', 'w') or ('\"",
        {"merchant_category": "') or open('FILE', 'w') or ('"},
        {"merchant_category": "x"},
    ),
    (
        "event.merchant_category == "
        "'\\x27) or __import__(\\x27os\\x27).system(\\x27touch FILE\\x27)'",
        {"merchant_category": "') or __import__('os').system('touch FILE')"},
        {"merchant_category": "x"},
    ),
    (
        "event.merchant_category == '{0.__class__.__init__.__globals__}'",
        {"merchant_category": "{0.__class__.__init__.__globals__}"},
        {"merchant_category": "<class>"},
    ),
    (
        "event.merchant_category == '%(ENV)s' and event.device_id == '\\\\'",
        {"merchant_category": "%(ENV)s", "device_id": "\\"},
        {"merchant_category": "%(ENV)s", "device_id": "\\\\"},
    ),
    (
        'event.merchant_category in [\'\\u005f\\u005fimport\\u005f\\u005f\', "\\""]',
        {"merchant_category": '"'},
        {"merchant_category": "\\u005f"},
    ),
    ("event.amount > 1 # ) or open('FILE', 'w') or (", {"amount": 5.0}, {"amount": 1.0}),
    ("event.amount > 1\\", {"amount": 5.0}, {"amount": 1.0}),
    ("event.amount > 1e-400 and event.amount < 1e15", {"amount": 5.0}, {"amount": 0.0}),
]
EVENT_FIELD_NAMES: Final = {name for fields in EVENT_FIELDS.values() for name in fields}
ALLOWED_NAMES: Final = {"ev", "T", "C", "Z", "S", "X", "_E", "_ERRORS", "_U", "m", "r", "v", "dict"}


def generated_names(rules: RuleSet) -> set[str]:
    """Every name the generated code of the rule set reads or writes."""
    names: set[str] = set()
    for pack in rules.packs:
        for program in pack.programs.values():
            if program is not None:
                for node in ast.walk(ast.parse(program.source)):
                    if isinstance(node, ast.Name):
                        names.add(node.id)
                    elif isinstance(node, ast.Attribute):
                        names.add("." + node.attr)
    return names


def assert_only_engine_names(names: set[str]) -> None:
    for name in names:
        plain = name.lstrip(".").rstrip("0123456789")
        assert (
            name in ALLOWED_NAMES
            or name.startswith("_f_")
            or plain in ("W", "a", "p", "d")
            or name in (".get", ".changes", ".append", ".value", ".add")
            or name.lstrip(".") in EVENT_FIELD_NAMES  # ev.amount, ...
        ), name
        assert "__" not in name, name


@pytest.mark.parametrize(("expr", "hit", "miss"), INERT)
def test_code_inside_a_string_or_comment_is_inert_text(
    tmp_path: Path, sentinel: Sentinel, expr: str, hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    expr = sentinel.fill(expr)
    hit = {k: sentinel.fill(v) if isinstance(v, str) else v for k, v in hit.items()}
    miss = {k: sentinel.fill(v) if isinstance(v, str) else v for k, v in miss.items()}
    rules = load_rules([write_pack(tmp_path, when(expr))])
    state = CustomerState()
    assert [d.rule_id for d in rules.apply(state, make_event(**hit)).decisions] == ["r"]
    assert rules.apply(state, make_event(**miss)).decisions == ()
    assert_only_engine_names(generated_names(rules))


def test_a_yaml_escaped_condition_is_the_condition_it_spells(
    tmp_path: Path, sentinel: Sentinel
) -> None:
    """`"\\u0065vent.amount > 1"` in YAML is the text `event.amount > 1`: no trick."""
    rules = load_rules([write_pack(tmp_path, HEAD + '    when: "\\u0065vent.amount > 1"\n')])
    assert [d.rule_id for d in rules.apply(CustomerState(), make_event(amount=5.0)).decisions]


def test_payloads_in_descriptions_and_offers_are_data(tmp_path: Path, sentinel: Sentinel) -> None:
    text = sentinel.fill(
        "pack: p\nversion: 1\ndescription: \"__import__('os').system('touch FILE')\"\n"
        "policy: {consent_required: false}\nrules:\n"
        "  - id: r\n    kind: offer\n    on: transaction\n    when: 'true'\n"
        '    description: "{0.__class__}"\n'
        "    offer: {product: \"__import__('os')\", channel: push, note: \"open('FILE')\"}\n"
    )
    rules = load_rules([write_pack(tmp_path, text)])
    (action,) = rules.apply(CustomerState(), make_event()).actions
    assert action.offer == {
        "product": "__import__('os')",
        "channel": "push",
        "note": sentinel.fill("open('FILE')"),
    }


def test_the_shipped_packs_generate_only_engine_names() -> None:
    assert_only_engine_names(generated_names(load_rules([ROOT / "rules" / "packs"])))


# --- the run-time trap that needs no forbidden syntax ------------------------------------


def test_round_with_a_huge_negative_digits_argument_answers_at_once(tmp_path: Path) -> None:
    """`round(n, -10**15)` is a legal expression (both numbers are within 1e15); for an
    integer n Python would compute 10**(10**15) and never finish, stalling the engine on
    every event. It must answer (0) at once. Run in a child process to bound it in time."""
    path = write_pack(
        tmp_path,
        HEAD.replace("kind: alert", "kind: alert\n    description: dos")
        + "    when: 'round(len(event.tags), -1000000000000000) == 0 and "
        "round(1000000000000000, -1000000000000000) == 0 and "
        "round(len(event.tags) * 1000000000000000 * 1000000000000000, -1000000000000000) == 0'\n",
    )
    code = (
        "import sys\n"
        "from rules.ruleset import load_rules\n"
        "from state.model import CustomerState\n"
        "from tests.factories import make_event\n"
        f"rules = load_rules([{str(path)!r}])\n"
        "d = rules.apply(CustomerState(), make_event(tags=['a', 'b']), "
        "lambda p, r: sys.exit('eval error'))\n"
        "print([x.rule_id for x in d.decisions])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['r']"


# --- the sentinel works -------------------------------------------------------------------


def test_the_sentinel_payloads_are_live(tmp_path: Path) -> None:
    """Evaluated as plain Python, the payloads do what the sentinel looks for: so a
    payload that slipped through and ran would be noticed."""
    s = Sentinel(tmp_path / "PWNED", f"CRM_SANDBOX_LIVE_{uuid.uuid4().hex[:8]}")
    try:
        eval(s.fill("__import__('os').environ.setdefault('ENV', '1') == '1'"))
        assert s.env in os.environ
        eval(s.fill("(lambda: open('FILE', 'w').close())() == None"))
        assert s.file.exists()
    finally:
        os.environ.pop(s.env, None)


# --- fuzz: token soup never crashes the checker, never yields foreign names ---------------

TOKENS: Final = [
    "event", "customer", "agg", "prior", ".", "amount", "channel", "tags", "consent",
    "marketing", "txn_10m", "amount_90d", "mean", "__class__", "__import__", "_x", "(", ")",
    "[", "]", "{", "}", ",", ":", "'a'", '"b"', "'{0.__class__}'", "1", "1e15", "9e999",
    "-", "+", "*", "/", "//", "%", "**", "~", "<<", "==", "!=", "<", ">=", "in", "not",
    "and", "or", "if", "else", "lambda", "for", "x", ":=", "true", "null", "None", "abs",
    "len", "round", "max", "eval", "open", "getattr", "f'{x}'", "\\", "\n", "#", ";", "ｅ",
    "yield", "await", "*", "**",
]  # fmt: skip


def soup_scope() -> Scope:
    refs = {
        "txn_10m": AggregateRef("txn_10m", 0, "count", ("transaction",)),
        "amount_90d": AggregateRef("amount_90d", 1, "stats", ("transaction",)),
    }
    return Scope(("transaction",), refs, dict(PROFILE_FIELDS))


@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # "invalid decimal literal" (`1and`)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=30), spaces=st.booleans())
def test_token_soup_is_checked_or_rejected_never_a_crash(parts: list[str], spaces: bool) -> None:
    source = (" " if spaces else "").join(parts)
    scope = soup_scope()
    try:
        checked = check(source, scope)
    except ExprError as err:
        assert err.message and err.line >= 1 and err.col >= 0
        return
    code = to_python(checked, "transaction", scope)
    tree = ast.parse(code, mode="eval")
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert names <= {"ev", "T", "C", "_E", "a0", "a1", "p0", "p1"} | {
        n for n in names if n.startswith("_f_")
    }, (source, code)
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not any(a.startswith("_") for a in attributes), code  # text in strings is inert
