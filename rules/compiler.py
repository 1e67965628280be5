"""The rule expression language: parse, check against a whitelist and the catalogue, compile.

An expression is a small, safe subset of Python: `and or not`, comparisons (chained too),
`in` / `not in`, `+ - * / // %`, numbers, strings, lists of constants, `null`/`None`,
`true`/`false`, the functions in `rules.functions`, and field paths under four roots:
`event`, `customer`, `agg` and `prior`. Everything else is rejected at load time with the
position and the reason. A checked expression is turned into Python source for one event
type (fields the type lacks become None), to be fused with the pack's other rules.

At run time a missing value in an ordering comparison or arithmetic raises TypeError; the
fused function catches it per rule, so the rule does not match and the miss is counted.
"""

from __future__ import annotations

import ast
import difflib
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Final

from rules.catalogue import event_field_names, event_field_type
from rules.functions import (
    BOOL,
    CONSENT,
    EVENT,
    FUNCTIONS,
    LIST,
    NULL,
    NUM,
    STATS,
    STR,
    STRS,
)
from state.windows import STATS_MEMBERS

MAX_SOURCE: Final = 2000
MAX_DEPTH: Final = 32
MAX_NODES: Final = 400
MAX_STRING: Final = 256
MAX_LIST: Final = 256
MAX_NUMBER: Final = 1e15
ROOTS: Final = ("event", "customer", "agg", "prior")
CONSTANT_NAMES: Final = {"true": True, "false": False, "null": None, "True": True,
                         "False": False, "None": None}  # fmt: skip

ARITH: Final = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
                 ast.Mod: "%"}  # fmt: skip
COMPARE: Final = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
               ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in"}  # fmt: skip
_FORBIDDEN_HINTS: Final = {
    ast.Subscript: "indexing with [] is not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.IfExp: "`x if c else y` is not allowed; use `and`/`or`",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed; use a list",
    ast.Starred: "* unpacking is not allowed",
    ast.Await: "await is not allowed",
}


class ExprError(Exception):
    """An expression problem at a 1-based line and 0-based column of the expression text."""

    def __init__(self, message: str, line: int = 1, col: int = 0) -> None:
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


@dataclass
class AggregateRef:
    """What the compiler knows of a declared aggregate."""

    name: str
    index: int
    kind: str
    on: tuple[str, ...]
    last_fields: set[str] = field(default_factory=set)

    @property
    def type(self) -> str:
        if self.kind == "distinct":
            return STRS
        return {"stats": STATS, "last": EVENT}.get(self.kind, NUM)


@dataclass
class Scope:
    """What an expression may read."""

    event_types: tuple[str, ...]
    aggregates: dict[str, AggregateRef]
    profile: dict[str, str]
    allow_agg: bool = True


@dataclass
class Checked:
    """A checked expression and what it reads."""

    source: str  # the parsed text (the expression inside parentheses)
    tree: ast.expr
    type: str
    segments: dict[int, str] = field(default_factory=dict)  # node id -> its text, one line
    agg_refs: set[int] = field(default_factory=set)
    prior_refs: set[int] = field(default_factory=set)
    profile_refs: set[str] = field(default_factory=set)
    uses_zone: bool = False


def check(source: str, scope: Scope, *, want_bool: bool = True) -> Checked:
    """Parse and check an expression; raise ExprError at the first problem.

    The expression may span lines (as in a YAML block scalar); positions in errors are
    1-based lines and 0-based columns of `source` itself.
    """
    if len(source) > MAX_SOURCE:
        raise ExprError(f"expression is longer than {MAX_SOURCE} characters")
    if not source.strip():
        raise ExprError("expression is empty")
    wrapped = f"(\n{source}\n)"  # parentheses let an expression span lines
    try:
        tree = ast.parse(wrapped, mode="eval")
    except SyntaxError as exc:
        line, col = _syntax_pos(source, exc)
        raise ExprError(f"syntax error: {exc.msg}", line, col) from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError("expression is too deeply nested or too large") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ExprError(f"expression has more than {MAX_NODES} parts; split the rule")
    checked = Checked(wrapped, tree.body, NULL)
    checker = _Checker(scope, checked, wrapped)
    if not wrapped.isascii():  # Python reads fullwidth `event` as `event` (NFKC): text would lie
        for node in ast.walk(tree.body):
            if not isinstance(node, ast.Name | ast.Attribute):
                continue
            text = ast.get_source_segment(wrapped, node) or ""
            if not text.isascii():
                plain = unicodedata.normalize("NFKC", text)
                reads = f" reads as `{plain}`" if plain != text else ""
                raise checker.fail(node, f"names must be ASCII (`{text}`{reads})")
    checked.type = checker.visit(tree.body, 1)
    for node in ast.walk(tree.body):  # the text of every part, for explanations
        segment = ast.get_source_segment(wrapped, node) or ast.unparse(node)
        checked.segments[id(node)] = " ".join(segment.split())
    if want_bool and checked.type not in (BOOL, NULL):
        raise checker.fail(
            tree.body,
            f"a condition must be true or false, but this is a {checked.type}; compare it, "
            "e.g. `... > 0`",
        )
    return checked


def _syntax_pos(source: str, exc: SyntaxError) -> tuple[int, int]:
    """The (line, column) in `source` of a syntax error in its wrapped form `(\\n...\\n)`.

    An error found only at the closing wrapper (say, `a >` with nothing after) is placed
    just after the last character of the expression.
    """
    line, col = (exc.lineno or 2) - 1, max((exc.offset or 1) - 1, 0)
    rows = source.split("\n")
    while len(rows) > 1 and not rows[-1].strip():
        rows.pop()
    if line < 1:
        return 1, 0
    if line > len(rows):
        return len(rows), len(rows[-1].rstrip())
    return line, col


class _Checker:
    def __init__(self, scope: Scope, out: Checked, source: str) -> None:
        self.scope, self.out = scope, out
        self.lines = source.splitlines()
        self.list_items: dict[int, str] = {}  # list literal -> the type of its items

    def fail(self, node: ast.AST, message: str) -> ExprError:
        line = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        text = self.lines[line - 1] if line - 1 < len(self.lines) else ""
        col = len(text.encode()[:offset].decode(errors="ignore"))
        return ExprError(message, max(line - 1, 1), col)

    def visit(self, node: ast.expr, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"expression is nested more than {MAX_DEPTH} levels deep")
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            hint = _FORBIDDEN_HINTS.get(type(node), f"{type(node).__name__} is not allowed")
            raise self.fail(node, hint)
        result: str = method(node, depth + 1)
        return result

    def visit_Constant(self, node: ast.Constant, depth: int) -> str:
        value = node.value
        if isinstance(value, bool):
            return BOOL
        if isinstance(value, int | float):
            if not abs(value) <= MAX_NUMBER:
                raise self.fail(node, f"number literal is larger than {MAX_NUMBER:g}")
            return NUM
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise self.fail(node, f"string literal is longer than {MAX_STRING} characters")
            return STR
        if value is None:
            return NULL
        raise self.fail(node, f"{type(value).__name__} literals are not allowed")

    def visit_List(self, node: ast.List | ast.Tuple, depth: int) -> str:
        if len(node.elts) > MAX_LIST:
            raise self.fail(node, f"list literal has more than {MAX_LIST} items")
        kinds = set()
        for elt in node.elts:
            value = literal(elt)
            if value is None or isinstance(value, bool):
                raise self.fail(elt, "list items must be literal numbers or strings")
            kinds.add(self.visit(elt, depth))
        if len(kinds) > 1:
            raise self.fail(node, "a list holds either numbers or strings, not both")
        self.list_items[id(node)] = kinds.pop() if kinds else NULL
        return LIST

    visit_Tuple = visit_List

    def visit_Name(self, node: ast.Name, depth: int) -> str:
        if node.id in CONSTANT_NAMES:
            value = CONSTANT_NAMES[node.id]
            return NULL if value is None else BOOL
        if node.id in ROOTS:
            raise self.fail(node, f"`{node.id}` alone is not a value; write {node.id}.FIELD")
        if node.id in FUNCTIONS:
            raise self.fail(node, f"`{node.id}` is a function; call it: {node.id}(...)")
        raise self.fail(
            node, f"unknown name `{node.id}`{_hint(node.id, [*ROOTS, *CONSTANT_NAMES])}"
        )

    def visit_Attribute(self, node: ast.Attribute, depth: int) -> str:
        path = field_path(node)
        if path is None:
            raise self.fail(node, "attributes may only follow event, customer, agg or prior")
        for part in path:
            if part.startswith("_"):
                raise self.fail(node, f"names starting with `_` are not allowed (`{part}`)")
        root, rest = path[0], path[1:]
        if root == "event":
            return self._event_path(node, rest)
        if root == "customer":
            return self._customer_path(node, rest)
        if root in ("agg", "prior"):
            return self._agg_path(node, root, rest)
        raise self.fail(node, f"unknown root `{root}`{_hint(root, list(ROOTS))}")

    def _event_path(self, node: ast.Attribute, rest: list[str]) -> str:
        types = self.scope.event_types
        typ = event_field_type(types, rest[0])
        if typ is None:
            names = event_field_names(types)
            kinds = " or ".join(types)
            hint = _hint(rest[0], names, "event.")
            raise self.fail(node, f"unknown field `event.{rest[0]}` for {kinds} events{hint}")
        if len(rest) > 1:
            raise self.fail(node, f"`event.{rest[0]}` has no fields")
        return typ

    def _customer_path(self, node: ast.Attribute, rest: list[str]) -> str:
        name = rest[0]
        typ = self.scope.profile.get(name)
        if typ is None:
            hint = _hint(name, list(self.scope.profile), "customer.")
            raise self.fail(
                node,
                f"unknown profile field `customer.{name}`{hint}"
                "; declare other profile fields under `profile_fields:`",
            )
        self.out.profile_refs.add(name)
        if typ == CONSENT:
            if len(rest) != 2:
                raise self.fail(node, "read consent by purpose, e.g. customer.consent.marketing")
            return BOOL
        if len(rest) > 1:
            raise self.fail(node, f"`customer.{name}` has no fields")
        return typ

    def _agg_path(self, node: ast.Attribute, root: str, rest: list[str]) -> str:
        if root == "agg" and not self.scope.allow_agg:
            raise self.fail(node, "aggregate filters and fields may read `prior.*`, not `agg.*`")
        ref = self.scope.aggregates.get(rest[0])
        if ref is None:
            names = list(self.scope.aggregates)
            raise self.fail(
                node, f"unknown aggregate `{root}.{rest[0]}`{_hint(rest[0], names, root + '.')}"
            )
        (self.out.agg_refs if root == "agg" else self.out.prior_refs).add(ref.index)
        if ref.kind == "stats":
            if len(rest) != 2 or rest[1] not in STATS_MEMBERS:
                raise self.fail(
                    node, f"read a stats aggregate by member: {', '.join(STATS_MEMBERS)}"
                )
            return NUM
        if ref.kind == "last":
            if len(rest) == 1:
                return EVENT
            typ = event_field_type(ref.on, rest[1])
            if typ is None or len(rest) > 2:
                names = event_field_names(ref.on)
                raise self.fail(
                    node, f"unknown field `{rest[1]}` of the last event{_hint(rest[1], names)}"
                )
            if rest[1] != "ts":
                ref.last_fields.add(rest[1])
            return typ
        if len(rest) > 1:
            raise self.fail(node, f"`{root}.{rest[0]}` ({ref.kind}) has no fields")
        return ref.type

    def visit_Call(self, node: ast.Call, depth: int) -> str:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "only the listed functions may be called, e.g. abs(x)")
        fn = FUNCTIONS.get(node.func.id)
        if fn is None:
            raise self.fail(
                node,
                f"unknown function `{node.func.id}`{_hint(node.func.id, list(FUNCTIONS))}; "
                f"allowed: {', '.join(FUNCTIONS)}",
            )
        if node.keywords:
            raise self.fail(node, "keyword arguments are not allowed")
        n = len(node.args)
        if not fn.min_args <= n <= fn.max_args:
            want = (
                str(fn.min_args) if fn.min_args == fn.max_args else f"{fn.min_args}-{fn.max_args}"
            )
            raise self.fail(node, f"{fn.name}() takes {want} arguments, not {n}")
        types = [self.visit(a, depth) for a in node.args]
        if fn.arg_type is not None:
            for arg, typ in zip(node.args, types, strict=True):
                if typ not in (fn.arg_type, NULL):
                    raise self.fail(arg, f"{fn.name}() needs a {fn.arg_type}, not a {typ}")
        if fn.name == "len" and types[0] not in (STRS, LIST, STR, NULL):
            raise self.fail(node, f"len() needs a list, set or string, not a {types[0]}")
        if fn.needs_zone:
            self.out.uses_zone = True
        if fn.name == "coalesce":
            kinds = {t for t in types if t != NULL}
            if len(kinds) > 1:
                raise self.fail(node, "coalesce() arguments must have one type")
            return kinds.pop() if kinds else NULL
        return fn.result

    def visit_BoolOp(self, node: ast.BoolOp, depth: int) -> str:
        for value in node.values:
            self.visit(value, depth)
        return BOOL

    def visit_UnaryOp(self, node: ast.UnaryOp, depth: int) -> str:
        typ = self.visit(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return BOOL
        if isinstance(node.op, ast.USub | ast.UAdd):
            if typ not in (NUM, NULL):
                raise self.fail(node, f"unary minus needs a number, not a {typ}")
            return NUM
        raise self.fail(node, "bitwise operators are not allowed")

    def visit_BinOp(self, node: ast.BinOp, depth: int) -> str:
        op = ARITH.get(type(node.op))
        if op is None:
            what = "** (power)" if isinstance(node.op, ast.Pow) else type(node.op).__name__
            raise self.fail(node, f"operator {what} is not allowed")
        for side in (node.left, node.right):
            typ = self.visit(side, depth)
            if typ != NUM:
                raise self.fail(side, f"arithmetic `{op}` needs numbers, not a {typ}")
        return NUM

    def visit_Compare(self, node: ast.Compare, depth: int) -> str:
        left_node, left = node.left, self.visit(node.left, depth)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            symbol = COMPARE.get(type(op))
            if symbol is None:
                raise self.fail(node, f"`{type(op).__name__}` comparison is not allowed; use ==")
            right = self.visit(right_node, depth)
            if symbol in ("in", "not in"):
                if right not in (STRS, LIST, STR, NULL):
                    raise self.fail(right_node, f"`{symbol}` needs a list or set, not a {right}")
                if right == STR and left not in (STR, NULL):
                    raise self.fail(left_node, f"`{symbol}` a string needs a string, not a {left}")
                items = self.list_items.get(id(right_node), STR if right == STRS else NULL)
                if NULL not in (left, items) and left != items:
                    raise self.fail(node, f"a {left} is never in a list of {items}s")
            elif symbol in ("<", "<=", ">", ">="):
                ok = {left, right} <= {NUM, NULL} or {left, right} <= {STR, NULL}
                if not ok:
                    raise self.fail(node, f"cannot order a {left} and a {right} with `{symbol}`")
            elif NULL not in (left, right) and left != right and {left, right} != {STRS, LIST}:
                raise self.fail(node, f"a {left} is never equal to a {right}")
            left_node, left = right_node, right
        return BOOL


def literal(node: ast.expr) -> Any:
    """The value of a literal list item (a number, a negative number or a string), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, int | float)
        and not isinstance(node.operand.value, bool)
    ):
        return -node.operand.value
    return None


def field_path(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _hint(name: str, options: list[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean `{prefix}{match[0]}`?)" if match else ""
