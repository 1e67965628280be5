"""Rule errors that point at the file, line and column, with the line and a caret."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourcePos:
    """A 1-based line and column in a file."""

    file: str
    line: int
    col: int


@dataclass(frozen=True)
class RuleProblem:
    """One problem in a rule pack."""

    pos: SourcePos
    message: str
    source_line: str = ""

    def __str__(self) -> str:
        head = f"{self.pos.file}:{self.pos.line}:{self.pos.col}: error: {self.message}"
        if not self.source_line:
            return head
        caret = " " * (self.pos.col - 1) + "^"
        return f"{head}\n    {self.source_line}\n    {caret}"


class RuleError(Exception):
    """A pack (or several) could not be loaded. `problems` lists every problem found."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
