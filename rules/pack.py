"""Rule pack files: YAML -> validated `PackSpec`, with every error at file:line:col.

The pack format is the public rule contract (README "Rule packs"). Unknown keys are
errors, so a typo such as `cooldwon:` is caught instead of silently ignored.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rules.errors import RuleError, RuleProblem, SourcePos
from state.timezones import zone

EventType = Literal["transaction", "interaction", "profile"]
OnSpec = Literal["transaction", "interaction", "profile", "any"]
AggregateKind = Literal["count", "sum", "avg", "min", "max", "stats", "distinct", "last"]
Severity = Literal["low", "medium", "high", "critical"]
Mode = Literal["live", "shadow"]
"""`shadow`: evaluated and decided (outcome `shadow`) but never sends an action."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
MAX_WINDOW = 400 * 86400.0


def parse_duration(value: Any, limit: float = MAX_WINDOW) -> float:
    """'10m' -> 600.0 seconds. Units: s, m, h, d, w. At most `limit` seconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("a duration is a number with a unit, such as 30s, 10m, 24h, 7d or 2w")
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a duration: write a number with a unit, such as 10m, 24h or 7d"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    if seconds > limit:
        raise ValueError(f"durations are limited to {limit / 86400:g}d")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
RuleId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _clock_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError('write clock times in quotes, e.g. "22:00" (YAML reads 22:00 as a number)')
    return value


ClockTime = Annotated[
    str, BeforeValidator(_clock_text), Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


OnList = Annotated[list[OnSpec], BeforeValidator(_as_list), Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AggregateSpec(_Model):
    on: OnList
    kind: AggregateKind
    where: str | None = None
    field: str | None = None
    window: Duration | None = None

    @model_validator(mode="after")
    def _check(self) -> AggregateSpec:
        if self.kind in ("count", "last"):
            if self.field is not None:
                raise ValueError(f"a {self.kind} aggregate takes no `field`")
        elif self.field is None:
            raise ValueError(f"a {self.kind} aggregate needs a `field`, such as event.amount")
        if self.window is None and self.kind != "last":
            raise ValueError(f"a {self.kind} aggregate needs a `window`, such as 10m or 90d")
        return self


class QuietHours(_Model):
    start: ClockTime
    end: ClockTime


class PolicySpec(_Model):
    consent_required: bool = True
    max_offers_per_day: Annotated[int, Field(ge=0)] | None = None
    max_offers_per_week: Annotated[int, Field(ge=0)] | None = None
    quiet_hours: QuietHours | None = None
    holdout_percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    risk_block: Duration | None = None


class OfferSpec(BaseModel):
    """What is offered. `product` and `channel` are required; other keys pass through."""

    model_config = ConfigDict(extra="allow", frozen=True)
    product: Annotated[str, Field(min_length=1, max_length=64)]
    channel: Annotated[str, Field(min_length=1, max_length=32)]


class RuleSpec(_Model):
    id: RuleId
    kind: Literal["alert", "offer"]
    on: OnList
    when: Annotated[str, Field(min_length=1)]
    description: str | None = None
    severity: Severity | None = None
    dedup: Duration | None = None
    offer: OfferSpec | None = None
    channel: Annotated[str, Field(max_length=32)] | None = None
    priority: int = 0
    value: float = 0.0
    cooldown: Duration | None = None
    mode: Mode | None = None  # None: the pack's mode

    @model_validator(mode="after")
    def _check(self) -> RuleSpec:
        if self.kind == "alert":
            if self.severity is None:
                raise ValueError("an alert rule needs a `severity`: low, medium, high or critical")
            for key in ("offer", "cooldown"):
                if getattr(self, key) is not None:
                    raise ValueError(f"`{key}` is for offer rules; alerts use `dedup`")
        else:
            if self.offer is None:
                raise ValueError("an offer rule needs `offer: {product: ..., channel: ...}`")
            for key in ("severity", "dedup"):
                if getattr(self, key) is not None:
                    raise ValueError(f"`{key}` is for alert rules; offers use `cooldown`")
        return self


ProfileFieldType = Literal["number", "string", "bool", "list"]


class PackSpec(_Model):
    pack: RuleId
    version: Annotated[int, Field(ge=0)]
    description: str | None = None
    timezone: str | None = None
    profile_fields: dict[Name, ProfileFieldType] = Field(default_factory=dict)
    aggregates: dict[Name, AggregateSpec] = Field(default_factory=dict)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    mode: Mode = "live"
    rules: Annotated[list[RuleSpec], Field(min_length=1)]
    # Embedded scenarios for `crm-triggers rules test`; checked when they run (rules/testing.py).
    tests: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and zone(value) is None:
            raise ValueError(f"unknown IANA time zone {value!r}, e.g. Asia/Shanghai")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> PackSpec:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.id in seen:
                raise _DuplicateRuleId(rule.id, i)
            seen.add(rule.id)
        return self


class _DuplicateRuleId(ValueError):
    """A rule id used twice; `index` is the later rule, where the error is reported."""

    def __init__(self, rule_id: str, index: int) -> None:
        super().__init__(f"rule id {rule_id!r} is used twice")
        self.index = index


Path_ = tuple[str | int, ...]


class LoadedPack:
    """A validated pack with the positions of its YAML nodes, for later error messages."""

    _recent: tuple[int, _Located] | None = None

    def __init__(self, spec: PackSpec, file: str, text: str, marks: dict[Path_, _Mark]) -> None:
        self.spec = spec
        self.file = file
        self.lines = text.splitlines()
        self.marks = marks

    def problem(self, path: Path_, message: str) -> RuleProblem:
        """A problem at the YAML node at `path`."""
        return _problem_at(self.file, self.lines, _nearest(self.marks, path), message)

    def expression(self, path: Path_, value: str) -> tuple[str, int, int]:
        """The text of the expression at `path` as it stands in the file, for parsing.

        Returns (text, file line of its first line (0-based), column shift of its first
        line), so that a (line, column) in the text maps straight to the file. Multi-line
        scalars are taken from the file as written, with their indentation (only
        whitespace differs from the YAML value, which is all the same to an expression).
        A quoted scalar that spans lines or holds escapes (`\\"`, `''`) is parsed as its
        value; `problem_in` then maps a position in the value back to the file.
        """
        self._recent = None
        mark = self.marks.get(path)
        if mark is None:
            return value, 0, 0
        if mark.style in ("|", ">"):
            return "\n".join(self.lines[mark.line + 1 : mark.end_line + 1]), mark.line + 1, 0
        if mark.end_line > mark.line and mark.style is None:
            raw = self.lines[mark.line : mark.end_line + 1]
            if mark.end_col is not None:  # in a flow mapping, the line goes on after it
                raw[-1] = raw[-1][: mark.end_col]
            raw[0] = " " * mark.col + raw[0][mark.col :]
            return "\n".join(raw), mark.line, 0
        if mark.style in ("'", '"'):
            located = _locate_quoted(self.lines, mark, value)
            if located is not None and not located.in_place(mark):
                self._recent = (mark.line, located)
                return value, mark.line, 0
        return value, mark.line, mark.col + (1 if mark.style in ("'", '"') else 0)

    def problem_in(self, first_line: int, line: int, col: int, message: str) -> RuleProblem:
        """A problem at a 0-based (line, col) of the file, for the expression just returned
        by `expression` (which started on `first_line`)."""
        recent = self._recent
        if recent is not None and recent[0] == first_line:
            line, col = recent[1].file_pos(line - first_line + 1, col)
        source = self.lines[line] if 0 <= line < len(self.lines) else ""
        return RuleProblem(SourcePos(self.file, line + 1, col + 1), message, source)


_ESCAPES: Final = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n",
                   "v": "\v", "f": "\f", "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/",
                   "\\": "\\", "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029"}  # fmt: skip
_ESCAPE_CODES: Final = {"x": 2, "u": 4, "U": 8}


class _Located:
    """A quoted scalar's value with the file position (0-based) of each of its characters."""

    def __init__(self, value: str, where: list[tuple[int, int]], end: tuple[int, int]) -> None:
        self.value, self.where, self.end = value, where, end

    def in_place(self, mark: _Mark) -> bool:
        """True if the value stands in the file as is, on the line of its opening quote."""
        start = mark.col + 1
        return self.where == [(mark.line, start + i) for i in range(len(self.value))]

    def file_pos(self, line: int, col: int) -> tuple[int, int]:
        """The file position of the 1-based line and 0-based column of the value."""
        rows = self.value.split("\n")
        offset = sum(len(r) + 1 for r in rows[: max(line - 1, 0)]) + col
        return self.where[offset] if 0 <= offset < len(self.where) else self.end


def _locate_quoted(lines: list[str], mark: _Mark, value: str) -> _Located | None:
    """Decode a quoted scalar from the file as YAML does (escapes, line folding), keeping
    where each character came from; None if the result is not `value` after all."""
    double = mark.style == '"'
    quote = '"' if double else "'"
    chars: list[str] = []
    where: list[tuple[int, int]] = []

    def at(ln: int, c: int) -> str:
        if ln >= len(lines):
            return ""
        return lines[ln][c] if c < len(lines[ln]) else "\n"

    ln, c = mark.line, mark.col + 1
    while True:
        ch = at(ln, c)
        if not ch:
            return None
        if ch == quote and not (not double and at(ln, c + 1) == "'"):
            break
        if ch == "'" and not double:  # '' is one quote
            chars.append("'")
            where.append((ln, c))
            c += 2
        elif ch == "\\" and double:
            code = at(ln, c + 1)
            if code == "\n":  # an escaped line break joins the lines
                ln, c = _skip_breaks(lines, ln + 1, chars, where)
                continue
            if code in _ESCAPES:
                text, c2 = _ESCAPES[code], c + 2
            elif code in _ESCAPE_CODES:
                c2 = c + 2 + _ESCAPE_CODES[code]
                try:
                    text = chr(int(lines[ln][c + 2 : c2], 16))
                except ValueError:
                    return None
            else:
                return None
            chars.append(text)
            where.append((ln, c))
            c = c2
        elif ch in " \t\n":
            start = c
            while at(ln, c) in (" ", "\t"):
                c += 1
            if at(ln, c) != "\n":
                chars.append(lines[ln][start:c])
                where.extend((ln, i) for i in range(start, c))
                continue
            n = len(chars)
            ln, c = _skip_breaks(lines, ln + 1, chars, where)
            if len(chars) == n:  # a single line break folds into a space
                chars.append(" ")
                where.append((ln - 1, start))
        else:
            chars.append(ch)
            where.append((ln, c))
            c += 1
    text = "".join(chars)
    return _Located(text, where, (ln, c)) if text == value else None


def _skip_breaks(
    lines: list[str], ln: int, chars: list[str], where: list[tuple[int, int]]
) -> tuple[int, int]:
    """Skip leading blanks from line `ln` on; each blank line reads as a line break."""
    while ln < len(lines):
        c = len(lines[ln]) - len(lines[ln].lstrip(" \t"))
        if c < len(lines[ln]):
            return ln, c
        chars.append("\n")
        where.append((ln, 0))
        ln += 1
    return ln, 0


class _Mark:
    __slots__ = ("col", "end_col", "end_line", "line", "style")

    def __init__(
        self, line: int, col: int, style: str | None, end_line: int | None = None, end_col: int = 0
    ) -> None:
        self.line, self.col, self.style = line, col, style
        # the last line the node occupies (a node ending at column 0 ends on the line before),
        # and where it ends on that line (None: at the end of the line)
        end = line if end_line is None else end_line
        self.end_line = end - 1 if end > line and end_col == 0 else end
        self.end_col: int | None = (
            end_col if self.end_line == end and end_line is not None else None
        )


def _nearest(marks: dict[Path_, _Mark], path: Path_) -> _Mark:
    while path not in marks and path:
        path = path[:-1]
    return marks.get(path, _Mark(0, 0, None))


def _problem_at(file: str, lines: list[str], mark: _Mark, message: str) -> RuleProblem:
    line, col = mark.line, mark.col
    if line >= len(lines) and lines:  # at the end of the file: after its last character
        line, col = len(lines) - 1, len(lines[-1])
    source = lines[line] if 0 <= line < len(lines) else ""
    return RuleProblem(SourcePos(file, line + 1, col + 1), message, source)


MAX_YAML_DEPTH: Final = 16
MAX_YAML_NODES: Final = 100_000


_PLAIN_TAGS: Final = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _NodeProblem(Exception):
    def __init__(self, message: str, mark: _Mark) -> None:
        self.message, self.mark = message, mark


def _to_python(
    node: yaml.Node, path: Path_, marks: dict[Path_, _Mark], budget: list[int] | None = None
) -> Any:
    mark = _Mark(
        node.start_mark.line, node.start_mark.column, getattr(node, "style", None),
        node.end_mark.line, node.end_mark.column,
    )  # fmt: skip
    # Aliases can make a small file expand into a huge (or endless) value: bound it.
    budget = [MAX_YAML_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or len(path) > MAX_YAML_DEPTH:
        raise _NodeProblem("the pack is nested too deeply or too large (check aliases)", mark)
    marks[path] = mark
    # Safe YAML still lets a tag such as !!python/object sit on a mapping or a list: the tag
    # would be ignored here, so it is an error, as it is on a scalar.
    if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_TAGS:
        raise _NodeProblem(f"YAML tag `{node.tag}` is not allowed", mark)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key_mark = _Mark(key_node.start_mark.line, key_node.start_mark.column, None)
            if not isinstance(key_node, yaml.ScalarNode):
                raise _NodeProblem("a key must be a name", key_mark)
            # Keys are always names: YAML 1.1 would read the key `on` as true.
            key = key_node.value
            if key in out:
                raise _NodeProblem(f"duplicate key `{key}`", key_mark)
            marks[(*path, f"{key}:key")] = key_mark
            out[key] = _to_python(value_node, (*path, key), marks, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), marks, budget) for i, item in enumerate(node.value)]
    value = _scalar(node)
    if isinstance(value, bytes):  # !!binary: pydantic would read the decoded bytes as text
        raise _NodeProblem("binary values (!!binary) are not allowed", mark)
    return value


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return None
    return yaml.constructor.SafeConstructor().construct_object(node)


def _known_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _pydantic_problem(loaded: LoadedPack, data: Any, err: Any) -> RuleProblem:
    loc: Path_ = tuple(err["loc"])
    msg: str = err["msg"].removeprefix("Value error, ")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _DuplicateRuleId):
        return loaded.problem(("rules", cause.index, "id"), msg)
    if err["type"] == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        model = _model_at(parent)
        known = _known_keys(model) if model else []
        hint = difflib.get_close_matches(key, known, n=1)
        msg = f"unknown key `{key}`" + (f" (did you mean `{hint[0]}`?)" if hint else "")
        return loaded.problem((*parent, f"{key}:key"), msg)
    if loc:
        where = ".".join(str(p) for p in loc)
        msg = f"{where}: {msg}"
    return loaded.problem(loc, msg)


def _model_at(loc: Path_) -> type[BaseModel] | None:
    model: type[BaseModel] | None = PackSpec
    i = 0
    while model is not None and i < len(loc):
        part = loc[i]
        if model is PackSpec and part in ("aggregates", "rules"):
            model = AggregateSpec if part == "aggregates" else RuleSpec
            i += 2
            continue
        if model is PackSpec and part == "policy":
            model = PolicySpec
        elif model is PolicySpec and part == "quiet_hours":
            model = QuietHours
        elif model is RuleSpec and part == "offer":
            model = OfferSpec
        else:
            return None
        i += 1
    return model


def load_pack_text(text: str, file: str = "<pack>") -> LoadedPack:
    """Parse and validate one pack; raise RuleError listing every problem found."""
    lines = text.splitlines()
    marks: dict[Path_, _Mark] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if not isinstance(node, yaml.MappingNode):
            at = _Mark(node.start_mark.line, node.start_mark.column, None) if node else None
            raise _NodeProblem("a pack is a YAML mapping", at or _Mark(0, 0, None))
        data = _to_python(node, (), marks)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = _Mark(mark.line, mark.column, None) if mark else _Mark(0, 0, None)
        raise RuleError(
            [_problem_at(file, lines, pos, f"invalid YAML: {exc.problem or exc.context}")]
        ) from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        pos = _Mark(before.count("\n"), exc.position - (before.rfind("\n") + 1), None)
        message = f"invalid YAML: character #x{exc.character:04x} is not allowed"
        raise RuleError([_problem_at(file, lines, pos, message)]) from None
    except RecursionError:
        message = "invalid YAML: nested too deeply"
        raise RuleError([_problem_at(file, lines, _Mark(0, 0, None), message)]) from None
    except _NodeProblem as bad:
        raise RuleError([_problem_at(file, lines, bad.mark, bad.message)]) from None
    probe = LoadedPack.__new__(LoadedPack)
    probe.file, probe.lines, probe.marks = file, lines, marks
    try:
        spec = PackSpec.model_validate(data)
    except ValidationError as exc:
        raise RuleError([_pydantic_problem(probe, data, e) for e in exc.errors()]) from None
    return LoadedPack(spec, file, text, marks)


def load_pack_file(path: Path) -> LoadedPack:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError([RuleProblem(SourcePos(str(path), 1, 1), f"cannot read: {exc}")]) from None
    return load_pack_text(text, str(path))


def pack_files(path: Path, *, recursive: bool = False) -> list[Path]:
    """A pack file, or every *.yaml / *.yml file in a folder (directly in it, or with
    `recursive` in its subfolders too), sorted by path."""
    if path.is_dir():
        found = path.rglob("*") if recursive else path.iterdir()
        return sorted(p for p in found if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]
