"""Code generation: a checked expression as Python source for one event type.

The fused pack functions (rules/program.py) are built from these strings. Only checked
expressions (rules/compiler.py) come here, so every node is one the whitelist allows.
"""

from __future__ import annotations

import ast

from rules.catalogue import LIST_DEFAULTS, event_field_type
from rules.compiler import ARITH, COMPARE, CONSTANT_NAMES, Checked, Scope, field_path, literal
from rules.functions import FUNCTIONS
from state.windows import STATS_MEMBERS


def to_python(
    checked: Checked,
    event_type: str,
    scope: Scope,
    values: dict[tuple[str, int], str] | None = None,
) -> str:
    """Python source for the expression, for one event type.

    Names in the generated code: `ev` (the event), `T` (its time), `C` (the profile dict),
    `Z` (the customer's time zone), `a<i>`/`p<i>` (aggregate values), `_E` (an empty dict),
    and `_f_<name>` for functions.
    """
    return _Gen(event_type, scope, values or {}).expr(checked.tree)


class _Gen:
    def __init__(self, event_type: str, scope: Scope, values: dict[tuple[str, int], str]) -> None:
        self.event_type, self.scope, self.values = event_type, scope, values

    def expr(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return repr(node.value)
        if isinstance(node, ast.Name):
            return repr(CONSTANT_NAMES[node.id])
        if isinstance(node, ast.List | ast.Tuple):
            items = ", ".join(repr(literal(e)) for e in node.elts)
            return f"({items},)" if items else "()"
        if isinstance(node, ast.BoolOp):
            op = " and " if isinstance(node.op, ast.And) else " or "
            return "(" + op.join(self.expr(v) for v in node.values) + ")"
        if isinstance(node, ast.UnaryOp):
            op = (
                "not "
                if isinstance(node.op, ast.Not)
                else ("-" if isinstance(node.op, ast.USub) else "+")
            )
            return f"({op}{self.expr(node.operand)})"
        if isinstance(node, ast.BinOp):
            return f"({self.expr(node.left)} {ARITH[type(node.op)]} {self.expr(node.right)})"
        if isinstance(node, ast.Compare):
            parts = [self.expr(node.left)]
            for cmp, right in zip(node.ops, node.comparators, strict=True):
                parts += [COMPARE[type(cmp)], self.expr(right)]
            return "(" + " ".join(parts) + ")"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            fn = FUNCTIONS[node.func.id]
            args = [self.expr(a) for a in node.args]
            if fn.needs_now:
                args.insert(0, "T")
            if fn.needs_zone:
                args.append("Z")
            return f"_f_{fn.name}({', '.join(args)})"
        if isinstance(node, ast.Attribute):
            path = field_path(node)
            assert path is not None
            return self.path(path)
        raise AssertionError(f"unchecked node {type(node).__name__}")

    def path(self, path: list[str]) -> str:
        root, rest = path[0], path[1:]
        if root == "event":
            return event_field(rest[0], self.event_type)
        if root == "customer":
            if len(rest) == 2:
                return f"(C.get({rest[0]!r}) or _E).get({rest[1]!r})"
            default = ", ()" if rest[0] in LIST_DEFAULTS else ""
            return f"C.get({rest[0]!r}{default})"
        ref = self.scope.aggregates[rest[0]]
        var = self.values.get((root, ref.index)) or f"{'a' if root == 'agg' else 'p'}{ref.index}"
        if len(rest) == 1:
            return var
        if ref.kind == "stats":
            return f"{var}[{STATS_MEMBERS.index(rest[1])}]"
        return f"({var} or _E).get({rest[1]!r})"


def event_field(name: str, event_type: str) -> str:
    """Python source reading field `name` of the current event `ev` of `event_type`
    (None when that type has no such field)."""
    if name == "ts":
        return "T"
    if name == "type":
        return repr(event_type)
    if not event_field_type((event_type,), name):
        return "None"
    if event_type == "profile" and name not in ("event_id", "customer_id"):
        # a field the update leaves out is unset (msgspec.UNSET): it reads as null
        return f"ev.changes().get({name!r})"
    return f"ev.{name}"
