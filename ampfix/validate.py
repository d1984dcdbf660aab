"""Fix validation: every fix is tried before it is offered, and a fix whose result is worse than
the original file is refused, with the reason, wherever fixes are shown or applied (check's
``[*]`` and counts, ``--diff``, JSON, SARIF, the editor's code actions, the codemod, ``--apply``).

A fixed text is worse when:

- it uses a name that pyflakes finds undefined where the original had no undefined use of that
  name (a fix that copies ``device`` from another scope, or a callee's local, into this one; a
  name the original already uses unbound, a snippet's free variable, is not the fix's doing);
- it has a finding the original did not have, compared by (code, line) through a line diff of
  the two texts, so that a fix which rewrites code is not mistaken for new work, and by (code,
  the line's text), so that a statement a fix moved keeps its findings. The
  bug rules (AMP2xx, AMP3xx) are asked whatever the selection, since a fix that breaks the
  scaler protocol (a second ``unscale_``, an ``update`` per optimizer) shows up as one of theirs.

The validator is handed the analysis (``analyse(text, codes)``) so that it does not depend on
the engine that runs it.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from ampfix.diagnostics import Diagnostic
from ampfix.parts import is_large
from ampfix.rules import RULES

# Findings a fix must never create, whether or not they are selected: training bugs.
BUG_CODES = frozenset(code for code in RULES if code.startswith(("AMP2", "AMP3")))

Analyse = Callable[[str, frozenset], list]


def undefined_names(text: str, path: str) -> set[str]:
    """The names ``text`` uses where they are not bound (pyflakes)."""
    import ast

    from pyflakes import checker, messages

    try:
        tree = ast.parse(text, filename=path)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    undefined = (messages.UndefinedName, messages.UndefinedLocal)
    found = checker.Checker(tree, filename=path).messages
    return {m.message_args[0] for m in found if isinstance(m, undefined)}


@dataclass
class _Findings:
    """The findings of one text, by (code, first row), and the text's lines."""

    lines: list[str]
    at: Counter = field(default_factory=Counter)  # (code, row)
    on_text: Counter = field(default_factory=Counter)  # (code, the stripped text of its first row)


class FixValidator:
    """Judges fixed versions of one original text against it."""

    def __init__(self, text: str, path: str, codes: frozenset, analyse: Analyse, diagnostics: Optional[list] = None):
        """``diagnostics``: the original's findings under ``codes``, when already computed; they
        are its findings here too when ``codes`` holds every bug rule (no second analysis)."""
        self.text, self.path, self.analyse = text, path, analyse
        self.codes = codes | BUG_CODES
        self._original: Optional[_Findings] = None
        if diagnostics is not None and codes >= BUG_CODES:
            self._original = self._tally(text, diagnostics)
        self._names: Optional[set[str]] = None

    def problem(self, fixed: str) -> Optional[str]:
        """Why ``fixed`` may not replace the original text (None: it may)."""
        if fixed == self.text:
            return None
        created = self._created_findings(fixed)
        if created:
            return f"its result would have a new finding ({', '.join(created)})"
        if not is_large(self.text):  # a generated multi-megabyte file: the name check would cost more than the file
            names = self._created_names(fixed)
            if names:
                return f"its result would use {', '.join(f'`{n}`' for n in names)} where no such name is defined"
        return None

    def _created_names(self, fixed: str) -> list[str]:
        if self._names is None:
            self._names = undefined_names(self.text, self.path)
        return sorted(undefined_names(fixed, self.path) - self._names)

    def _findings(self, text: str) -> _Findings:
        return self._tally(text, self.analyse(text, self.codes))

    @staticmethod
    def _tally(text: str, diagnostics: list) -> _Findings:
        found = _Findings(text.splitlines())
        for diag in diagnostics:
            if diag.code != "AMP001":
                row = diag.location.row
                found.at[(diag.code, row)] += 1
                found.on_text[(diag.code, _stripped(found.lines, row))] += 1
        return found

    def _created_findings(self, fixed: str) -> list[str]:
        """Codes of the findings of ``fixed`` that stand where the original had none of that
        code: rows are mapped back through a line diff; a finding in changed lines matches one
        of the same code anywhere in the lines they replaced."""
        if self._original is None:
            self._original = self._findings(self.text)
        before, after = self._original, self._findings(fixed)
        matcher = difflib.SequenceMatcher(None, before.lines, after.lines, autojunk=False)
        created = set()
        for (code, row), count in after.at.items():
            first, last = _rows_before(matcher, row)
            had = sum(before.at[(code, r)] for r in range(first, last + 1))
            if count > had and count > before.on_text[(code, _stripped(after.lines, row))]:
                created.add(code)
        return sorted(created)


def _stripped(lines: list[str], row: int) -> str:
    return lines[row - 1].strip() if 0 < row <= len(lines) else ""


def _rows_before(matcher: difflib.SequenceMatcher, row: int) -> tuple[int, int]:
    """The rows (1-based, inclusive) of the original that row ``row`` of the fixed text stands for."""
    index = row - 1
    for tag, a1, a2, b1, b2 in matcher.get_opcodes():
        if b1 <= index < b2 or (b1 == b2 == index):
            if tag == "equal":
                return a1 + index - b1 + 1, a1 + index - b1 + 1
            return a1 + 1, max(a1 + 1, a2)  # replaced or inserted lines: what they replaced (or follow)
    return row, row


def refuse(diag: Diagnostic, reason: str) -> None:
    """Withdraw a finding's fix, saying why (the finding stays)."""
    if diag.fix is not None:
        diag.fix_refused = f"{diag.fix.message}: not offered, {reason}"
        diag.fix = None
        diag.edit_locations = ()
