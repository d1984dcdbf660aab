"""What a rule reports: a diagnostic, optionally with a fix made of text edits.

Edits are character offsets into the decoded source (ruff's model): a fix replaces exactly the
bytes it must and leaves every other byte, comment and blank line alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional


class Applicability(enum.Enum):
    """How safe a fix is. Ordered: a run that allows UNSAFE also applies SAFE."""

    SAFE = "safe"  # keeps behaviour: applied by --apply
    UNSAFE = "unsafe"  # changes numerics or semantics: needs --unsafe-fixes
    # needs a person (a conversion that adds a parameter its callers must pass): shown as a
    # suggested diff, never applied, not even with --unsafe-fixes (ruff's DisplayOnly)
    DISPLAY_ONLY = "display-only"

    @property
    def rank(self) -> int:
        return {Applicability.SAFE: 0, Applicability.UNSAFE: 1, Applicability.DISPLAY_ONLY: 2}[self]


@dataclass(frozen=True, order=True)
class Edit:
    """Replace source[start:end] with content (character offsets).

    A statement-level rewrite leaves ``content`` empty and describes itself in ``rewrite``
    (kind and arguments, ampfix/rewrite.py): LibCST builds the content when the fix is applied
    or shown, so that checking never needs it."""

    start: int
    end: int
    content: str
    rewrite: tuple = ()

    @classmethod
    def insert(cls, at: int, content: str) -> "Edit":
        return cls(at, at, content)

    @classmethod
    def delete(cls, start: int, end: int) -> "Edit":
        return cls(start, end, "")


@dataclass(frozen=True)
class Fix:
    message: str
    edits: tuple[Edit, ...]
    applicability: Applicability
    # Local names bound by an import that this fix may leave unused; the fixer removes them
    # after the pass if nothing else uses them.
    orphaned_imports: frozenset[str] = frozenset()

    def span(self) -> tuple[int, int]:
        return min(e.start for e in self.edits), max(e.end for e in self.edits)


@dataclass(frozen=True)
class Note:
    """One piece of a finding's evidence: an event on the path that makes it true (the Clang
    static analyzer's path notes): ``scaled here``, ``unscale_ only under `if log_norms` ``."""

    start: int  # character offsets into the source
    end: int
    message: str


@dataclass(frozen=True)
class Position:
    row: int  # 1-based
    column: int  # 1-based, in characters


@dataclass
class Diagnostic:
    code: str
    name: str
    message: str
    start: int  # character offsets into the source
    end: int
    fix: Optional[Fix] = None
    # Filled in by the engine once per file (rows and columns are 1-based).
    filename: str = ""
    location: Position = field(default_factory=lambda: Position(1, 1))
    end_location: Position = field(default_factory=lambda: Position(1, 1))
    # (start, end) positions of each fix edit, for JSON and SARIF output
    edit_locations: tuple[tuple[Position, Position], ...] = ()
    cell: Optional[int] = None
    edit_cells: tuple[Optional[int], ...] = ()  # a notebook: the cell of each fix edit (an import goes to cell 1)
    evidence: tuple[Note, ...] = ()  # the events that make the finding true, in path order
    evidence_locations: tuple[tuple[Position, Position], ...] = ()  # filled in by the engine
    evidence_cells: tuple[Optional[int], ...] = ()  # a notebook: the cell of each piece of evidence
    fix_refused: Optional[str] = None  # a fix the engine did not apply, and why (fix closure)
    no_fix_reason: Optional[str] = None  # why the rule offers no fix for this finding

    @property
    def fixable(self) -> bool:
        return self.fix is not None

    def fix_applies(self, unsafe_fixes: bool) -> bool:
        """Whether a run with (or without) --unsafe-fixes applies this diagnostic's fix."""
        if self.fix is None or self.fix.applicability is Applicability.DISPLAY_ONLY:
            return False
        return unsafe_fixes or self.fix.applicability is Applicability.SAFE

    def sort_key(self) -> tuple:
        return (self.filename, self.cell or 0, self.location.row, self.location.column, self.code)
