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
  scaler protocol (a second ``unscale_``, an ``update`` per optimizer) shows up as one of theirs
  (except in a very large file analysed in parts: there, the rules selected only).

The validator is handed the analysis (``analyse(text, codes)``) so that it does not depend on
the engine that runs it.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from ampfix.diagnostics import Diagnostic, Edit
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
    flakes = checker.Checker(tree, filename=path)
    names = {m.message_args[0] for m in flakes.messages if isinstance(m, undefined)}
    # its deferred functions close over it and its scopes' bindings point back at their scopes:
    # cycles that would hold the whole tree until a collection
    for scope in getattr(flakes, "deadScopes", ()):
        scope.clear()
    flakes.__dict__.clear()
    return names


# -- edits that cannot leave a name undefined ----------------------------------------------------
#
# pyflakes reads the whole fixed text (a third of a trial's cost). Most fixes only respell a
# call within a line (`torch.cuda.amp.autocast(` -> `torch.autocast("cuda", `): such an edit
# reads no name its span did not already read and binds nothing, so it cannot leave a name
# undefined, and pyflakes is not asked. Anything less plain (another line, a string that is not
# a simple literal, a comment, a continuation, a binding or a keyword that makes a scope, two
# edits that touch) is left to pyflakes.

_IDENTIFIER = re.compile(r"(?<!\w)[^\W\d]\w*")
_SIMPLE_STRING = re.compile(r"(?<!\w)[rRbBuU]{0,2}(?:\"[^\"\\\n]*\"|'[^'\\\n]*')")
_ASSIGNS = re.compile(r"(?<![=!<>:])=(?!=)|:=")
# names that bind or unbind (or open a scope whose names bind there)
_BINDING_WORDS = frozenset({
    "import", "from", "as", "def", "class", "lambda", "for", "with", "except", "global", "nonlocal", "del",
})


def leaves_names_alone(text: str, edits: Sequence[Edit]) -> bool:
    """True when applying ``edits`` to ``text`` provably reads no name that was not read at the
    same place before and binds or unbinds none (so no name can become undefined)."""
    ordered = sorted(edits, key=lambda e: (e.start, e.end))
    for earlier, later in zip(ordered, ordered[1:]):
        if later.start <= earlier.end:
            return False  # touching edits: the context of one is the other's new text
    for edit in ordered:
        if edit.rewrite:
            return False  # a statement-level rewrite (its content is built later, over lines)
        old, new = text[edit.start:edit.end], edit.content
        if "\n" in old or "\r" in old or "\n" in new or "\r" in new:
            return False
        before, after = text[edit.start - 1:edit.start] if edit.start else "", text[edit.end:edit.end + 1]
        if _word_char(before) and (_word_char(old[:1]) or _word_char((new or after)[:1])):
            return False  # the span starts inside a word, or the result would join the word before it
        if _word_char(after) and (_word_char(old[-1:]) or _word_char((new or before)[-1:])):
            return False
        if old.rstrip().endswith(".") != new.rstrip().endswith("."):
            return False  # the name after the span would turn into an attribute, or out of one
        attribute_first = text[max(0, edit.start - 64):edit.start].rstrip(" \t").endswith(".")
        old_heads, new_heads = _heads(old, attribute_first), _heads(new, attribute_first)
        if old_heads is None or new_heads is None or not new_heads <= old_heads:
            return False
    return True


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _heads(fragment: str, attribute_first: bool) -> Optional[set[str]]:
    """The identifiers of a one-line fragment that are not attributes (the names it reads), or
    None when the fragment binds, or holds what this reading does not follow."""
    code = _SIMPLE_STRING.sub('""', fragment).replace('""', " ")
    if any(c in code for c in "\"'#\\") or _ASSIGNS.search(code):
        return None
    heads = set()
    for match in _IDENTIFIER.finditer(code):
        word = match.group()
        if word in _BINDING_WORDS:
            return None
        preceding = code[:match.start()].rstrip()
        is_attribute = preceding.endswith(".") if preceding else attribute_first
        if not is_attribute:
            heads.add(word)
    return heads


@dataclass
class _Findings:
    """The findings of one text, by (code, first row), and the text's lines."""

    lines: list[str]
    at: Counter = field(default_factory=Counter)  # (code, row)
    on_text: Counter = field(default_factory=Counter)  # (code, the stripped text of its first row)


class FixValidator:
    """Judges fixed versions of one original text against it."""

    def __init__(self, text: str, path: str, codes: frozenset, analyse: Analyse, diagnostics: Optional[list] = None):
        """``diagnostics``: the original's findings under ``codes``, when already computed; the
        original is then analysed only for the bug rules not among ``codes`` (rules run
        independently of each other, so the two sets together are its findings under all)."""
        self.text, self.path, self.analyse = text, path, analyse
        # a very large file (analysed in parts) is judged by the rules selected only: the loop
        # rules on every piece of each fixed version of a generated multi-megabyte file would
        # cost minutes, where none of them was asked for
        self.codes = codes if is_large(text) else codes | BUG_CODES
        self._known = (codes, list(diagnostics)) if diagnostics is not None else None
        self._original: Optional[_Findings] = None
        self._names: Optional[set[str]] = None

    def problem(self, fixed: str, edits: Optional[Sequence[Edit]] = None) -> Optional[str]:
        """Why ``fixed`` may not replace the original text (None: it may). ``edits``: the edits
        that made ``fixed`` from it, when they alone did (no import was tidied away)."""
        if fixed == self.text:
            return None
        created = self._created_findings(fixed, edits)
        if created:
            return f"its result would have a new finding ({', '.join(created)})"
        # a generated multi-megabyte file: the name check would cost more than the file
        if not is_large(self.text) and not (edits is not None and leaves_names_alone(self.text, edits)):
            names = self._created_names(fixed)
            if names:
                return f"its result would use {', '.join(f'`{n}`' for n in names)} where no such name is defined"
        return None

    def _created_names(self, fixed: str) -> list[str]:
        undefined = undefined_names(fixed, self.path)
        if not undefined:
            return []  # the common case: the original's names need not be asked at all
        if self._names is None:
            self._names = undefined_names(self.text, self.path)
        return sorted(undefined - self._names)

    def _original_findings(self) -> _Findings:
        if self._known is None:
            return self._findings(self.text)
        codes, diagnostics = self._known
        missing = self.codes - codes
        if missing:  # in most files the prefilter finds none of them a candidate: no analysis
            diagnostics = diagnostics + self.analyse(self.text, missing)
        return self._tally(self.text, diagnostics)

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

    def _created_findings(self, fixed: str, edits: Optional[Sequence[Edit]] = None) -> list[str]:
        """Codes of the findings of ``fixed`` that stand where the original had none of that
        code: rows are mapped back through the edits that made it (when they alone did), else
        through a line diff; a finding in changed lines matches one of the same code anywhere in
        the lines they replaced."""
        if self._original is None:
            self._original = self._original_findings()
        before, after = self._original, self._findings(fixed)
        opcodes = edit_opcodes(self.text, edits, len(after.lines)) if edits is not None else None
        rows_before = _RowMap(opcodes if opcodes is not None else line_opcodes(before.lines, after.lines))
        created = set()
        for (code, row), count in after.at.items():
            first, last = rows_before(row)
            had = sum(before.at[(code, r)] for r in range(first, last + 1))
            if count > had and count > before.on_text[(code, _stripped(after.lines, row))]:
                created.add(code)
        return sorted(created)


def _stripped(lines: list[str], row: int) -> str:
    return lines[row - 1].strip() if 0 < row <= len(lines) else ""


# Lines (both texts together) up to which difflib is used alone: its longest-match search is
# quadratic in lines that repeat (a file of many similar functions), linear enough below this.
_PLAIN_DIFF_LINES = 4000


def edit_opcodes(text: str, edits: Sequence[Edit], fixed_rows: int) -> Optional[list[tuple[str, int, int, int, int]]]:
    """The line opcodes (as ``line_opcodes`` gives them) of applying ``edits`` to ``text``, read
    off the edits: each run of lines the edits touch (runs that touch joined into one, as a diff
    reports them) is replaced by the lines its result holds there, the lines between are equal.
    A diff would have to find that out (difflib is quadratic in a re-indented block). None when
    the edits overlap, or the rows do not come to ``fixed_rows`` (the fixed text's line count):
    the diff decides then."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    groups: list[list] = []  # [first row, end row (exclusive), its edits...]
    position = 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if edit.start < position:
            return None
        position = edit.end
        first = bisect.bisect_right(starts, edit.start) - 1
        if edit.end == edit.start and edit.start == starts[first] and edit.content.endswith(("\n", "\r")):
            end = first  # whole lines inserted before a line
        else:
            # the row after the one holding the edit's last character (its first, for an insertion)
            end = min(max(bisect.bisect_right(starts, max(edit.end - 1, edit.start)), first + 1), len(lines))
        if groups and first <= groups[-1][1]:
            # touching or sharing lines: one run of changed lines, as a diff reports it (a finding
            # on it matches one of its code anywhere in the lines the run replaced)
            groups[-1][1] = max(groups[-1][1], end)
            groups[-1].append(edit)
        else:
            groups.append([first, end, edit])
    opcodes = []
    a = b = 0
    for first, end, *in_group in groups:
        if first > a:
            opcodes.append(("equal", a, first, b, b + first - a))
            b += first - a
        region_end = starts[end] if end < len(starts) else len(text)
        region, cursor = [], starts[first]
        for edit in in_group:
            region += [text[cursor:edit.start], edit.content]
            cursor = edit.end
        region.append(text[cursor:region_end])
        rows = len("".join(region).splitlines())
        tag = "replace" if rows and end > first else ("insert" if rows else "delete")
        if rows or end > first:
            opcodes.append((tag, first, end, b, b + rows))
        a, b = end, b + rows
    if a < len(lines):
        opcodes.append(("equal", a, len(lines), b, b + len(lines) - a))
        b += len(lines) - a
    return opcodes if b == fixed_rows else None


def line_opcodes(before: list[str], after: list[str]) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes of the line diff from ``before`` to ``after``. Long texts are first cut at
    anchors (their common first and last lines, then lines that occur once in each, in the same
    order: patience diff) and difflib runs between anchors, so that a fix of a few lines in a file
    of thousands costs a few lines' diff."""
    if len(before) + len(after) <= _PLAIN_DIFF_LINES:
        return _difflib_opcodes(before, after, 0, 0)
    matched = _anchors(before, after)
    opcodes: list[tuple[str, int, int, int, int]] = []
    a = b = 0
    for a_anchor, b_anchor in [*matched, (len(before), len(after))]:
        opcodes += _difflib_opcodes(before[a:a_anchor], after[b:b_anchor], a, b)
        if a_anchor < len(before):
            opcodes.append(("equal", a_anchor, a_anchor + 1, b_anchor, b_anchor + 1))
        a, b = a_anchor + 1, b_anchor + 1
    return _merged(opcodes)


def _difflib_opcodes(before: list[str], after: list[str], a: int, b: int) -> list[tuple[str, int, int, int, int]]:
    if not before and not after:
        return []
    import difflib  # a file with no fix to judge never needs it

    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    return [(tag, a1 + a, a2 + a, b1 + b, b2 + b) for tag, a1, a2, b1, b2 in matcher.get_opcodes()]


def _anchors(before: list[str], after: list[str]) -> list[tuple[int, int]]:
    """Pairs of equal lines, increasing in both texts: the common first and last lines, and
    between them the longest increasing run of lines unique to each text."""
    head = 0
    while head < min(len(before), len(after)) and before[head] == after[head]:
        head += 1
    tail = 0
    while tail < min(len(before), len(after)) - head and before[-1 - tail] == after[-1 - tail]:
        tail += 1
    middle_a, middle_b = range(head, len(before) - tail), range(head, len(after) - tail)
    counts_a = Counter(before[i] for i in middle_a)
    counts_b = Counter(after[i] for i in middle_b)
    where_b = {after[j]: j for j in middle_b if counts_b[after[j]] == 1}
    unique = [(i, where_b[before[i]]) for i in middle_a if counts_a[before[i]] == 1 and before[i] in where_b]
    return [
        *((i, i) for i in range(head)),
        *_increasing(unique),
        *((len(before) - tail + k, len(after) - tail + k) for k in range(tail)),
    ]


def _increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest run of ``pairs`` (increasing in the first) increasing in the second too."""
    ends: list[int] = []  # ends[k]: the smallest second value ending a run of length k + 1
    last: list[int] = []  # the index in pairs of that run's last pair
    previous = [-1] * len(pairs)
    for index, (_, b) in enumerate(pairs):
        k = bisect.bisect_left(ends, b)
        if k > 0:
            previous[index] = last[k - 1]
        if k == len(ends):
            ends.append(b)
            last.append(index)
        else:
            ends[k], last[k] = b, index
    run, index = [], last[-1] if last else -1
    while index >= 0:
        run.append(pairs[index])
        index = previous[index]
    return run[::-1]


def _merged(opcodes: list[tuple[str, int, int, int, int]]) -> list[tuple[str, int, int, int, int]]:
    """Adjacent equal runs joined, as difflib reports them."""
    merged: list[tuple[str, int, int, int, int]] = []
    for op in opcodes:
        if merged and op[0] == "equal" == merged[-1][0]:
            tag, a1, _, b1, _ = merged[-1]
            merged[-1] = (tag, a1, op[2], b1, op[4])
        else:
            merged.append(op)
    return merged


class _RowMap:
    """The rows (1-based, inclusive) of the original that a row of the fixed text stands for."""

    def __init__(self, opcodes: list[tuple[str, int, int, int, int]]):
        self.opcodes = opcodes
        self.starts = [op[3] for op in opcodes]

    def __call__(self, row: int) -> tuple[int, int]:
        index = row - 1
        # the first opcode (in order) whose rows of the fixed text hold ``index``, or an empty
        # range (deleted lines) at ``index``: the one before the first starting at or past it,
        # then those starting at it
        at = bisect.bisect_left(self.starts, index)
        for position in range(max(at - 1, 0), len(self.opcodes)):
            tag, a1, a2, b1, b2 = self.opcodes[position]
            if b1 > index:
                break
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
