"""Explanations: for a matched rule, each condition with its operand values.

Only matched rules are explained, off the hot path: the checked expression is walked again
with the same values the fused function saw, recording every comparison and every
true/false leaf as `{"condition": text, "values": {operand: value}, "result": bool|None}`.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

import msgspec

from rules.catalogue import LIST_DEFAULTS
from rules.compiler import ARITH, COMPARE, CONSTANT_NAMES, Checked, field_path, literal
from rules.functions import FUNCTIONS
from state.windows import STATS_MEMBERS

Condition = dict[str, Any]

_OPS: dict[str, Any] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}


class Frame:
    """The values one evaluation saw."""

    def __init__(
        self,
        event: Any,
        now: float,
        profile: Mapping[str, Any],
        zone: tzinfo,
        agg: Mapping[str, Any],
        prior: Mapping[str, Any],
        kinds: Mapping[str, str],
    ) -> None:
        self.event, self.now, self.profile, self.zone = event, now, profile, zone
        self.agg, self.prior, self.kinds = agg, prior, kinds


def explain(checked: Checked, frame: Frame) -> list[Condition]:
    """The conditions of `checked` as evaluated on `frame`."""
    out: list[Condition] = []
    _Explainer(checked.segments, frame, out).leaf(checked.tree)  # a bare `x` is a condition too
    return out


class _Explainer:
    def __init__(self, segments: dict[int, str], frame: Frame, out: list[Condition]) -> None:
        self.segments, self.frame, self.out = segments, frame, out

    def text(self, node: ast.expr) -> str:
        return self.segments.get(id(node)) or ast.unparse(node)

    def value(self, node: ast.expr, top: bool = False) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return CONSTANT_NAMES[node.id]
        if isinstance(node, ast.List | ast.Tuple):
            return [literal(e) for e in node.elts]
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            result: Any = None
            for v in node.values:
                result = self.leaf(v)
                if bool(result) is not is_and:
                    break
            return result
        if isinstance(node, ast.UnaryOp):
            operand = (
                self.leaf(node.operand)
                if isinstance(node.op, ast.Not)
                else self.value(node.operand)
            )
            if isinstance(node.op, ast.Not):
                return None if operand is None else not operand
            return (
                None
                if operand is None
                else (-operand if isinstance(node.op, ast.USub) else operand)
            )
        if isinstance(node, ast.BinOp):
            a, b = self.value(node.left), self.value(node.right)
            return _apply(ARITH[type(node.op)], a, b)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            fn = FUNCTIONS[node.func.id]
            args = [self.value(a) for a in node.args]
            if fn.needs_now:
                args.insert(0, self.frame.now)
            if fn.needs_zone:
                args.append(self.frame.zone)
            try:
                return fn.impl(*args)
            except (TypeError, ArithmeticError, ValueError):
                return None
        if isinstance(node, ast.Attribute):
            path = field_path(node)
            assert path is not None
            return self.path(path)
        return None

    def leaf(self, node: ast.expr) -> Any:
        """A boolean operand: record it unless it is itself a comparison or boolean op."""
        result = self.value(node)
        if not isinstance(node, ast.Compare | ast.BoolOp | ast.UnaryOp):
            self.out.append({"condition": self.text(node), "values": {}, "result": _truth(result)})
        return result

    def compare(self, node: ast.Compare) -> Any:
        values: dict[str, Any] = {}
        left_node, left = node.left, self.value(node.left)
        result: bool | None = True
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.value(right_node)
            for n, v in ((left_node, left), (right_node, right)):
                if not isinstance(n, ast.Constant | ast.List | ast.Tuple | ast.Name):
                    values[self.text(n)] = _render(self.text(n), v, self.kind(n))
            step = _apply(COMPARE[type(op)], left, right)
            if step is None or not step:
                result = None if step is None else False
                break
            left_node, left = right_node, right
        self.out.append({"condition": self.text(node), "values": values, "result": result})
        return result

    def kind(self, node: ast.expr) -> str | None:
        """The kind of the aggregate `node` reads whole (`agg.x`, `prior.x`), else None."""
        path = field_path(node) if isinstance(node, ast.Attribute) else None
        if path is None or len(path) != 2 or path[0] not in ("agg", "prior"):
            return None
        return self.frame.kinds.get(path[1])

    def path(self, path: list[str]) -> Any:
        root, rest = path[0], path[1:]
        frame = self.frame
        if root == "event":
            if rest[0] == "ts":
                return frame.now
            value = getattr(frame.event, rest[0], None)
            return None if value is msgspec.UNSET else value  # not in a profile update
        if root == "customer":
            value = frame.profile.get(rest[0], () if rest[0] in LIST_DEFAULTS else None)
            return (value or {}).get(rest[1]) if len(rest) == 2 else value
        value = (frame.agg if root == "agg" else frame.prior).get(rest[0])
        if len(rest) == 1:
            return value
        if frame.kinds.get(rest[0]) == "stats":
            return None if value is None else value[STATS_MEMBERS.index(rest[1])]
        return (value or {}).get(rest[1])


def _apply(op: str, a: Any, b: Any) -> Any:
    try:
        return _OPS[op](a, b)
    except (TypeError, ArithmeticError, ValueError):
        return None


def _truth(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _render(text: str, value: Any, kind: str | None = None) -> Any:
    """A JSON-ready, compact view of an operand value (`kind`: of the aggregate it is)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and (text.endswith(".ts") or text == "event.ts"):
        return datetime.fromtimestamp(value, UTC).isoformat()
    if isinstance(value, dict):
        if kind == "distinct" or (kind is None and "ts" not in value):
            return {"distinct": len(value)}
        return {k: _render(f".{k}", v) for k, v in value.items()}  # a last-event snapshot
    if isinstance(value, tuple) and len(value) == len(STATS_MEMBERS):
        return dict(zip(STATS_MEMBERS, value, strict=True))
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str)[:20]
        return items
    return value
