"""Applying fixes: non-overlapping text edits, then import tidying.

Fixes whose edits overlap an already accepted fix wait for the next pass (the engine loops to a
fixed point); identical edits shared by several fixes (``import torch``) are applied once.
Within one fix, insertions at the same offset keep the order the rule gave them.
"""

from __future__ import annotations

import bisect
from typing import Iterable

from ampfix.diagnostics import Diagnostic, Edit
from ampfix.rewrite import RewriteError, resolve_fix


class _Accepted:
    """The edits accepted so far, sorted by (start, end): a conflict is found among the
    neighbours of an edit (accepted edits never overlap, so their ends are sorted too), in
    O(log n) and not by comparing with every edit (20,000 fixes in one file apply in one sweep)."""

    def __init__(self):
        self.keys: list[tuple[int, int]] = []  # (start, end): an insertion before a replacement at one offset
        self.edits: list[Edit] = []
        self.members: set[Edit] = set()

    def conflicts(self, edit: Edit) -> bool:
        # the last accepted edit that starts before ``edit`` ends (or at its start), then leftwards
        bound = edit.start + 1 if edit.end == edit.start else edit.end
        index = bisect.bisect_left(self.keys, (bound, -1)) - 1
        while index >= 0:
            other = self.edits[index]
            index -= 1
            if other == edit:
                continue  # the same edit, shared by several fixes (``import torch``)
            if other.end <= edit.start and other.start != edit.start:
                return False  # this one and every edit before it end before ``edit`` starts
            if edit.start < other.end and other.start < edit.end:
                return True
            if edit.start == other.start and (edit.start == edit.end or other.start == other.end):
                return True
        return False

    def add(self, edit: Edit) -> bool:
        """Add ``edit``; False if it was there already."""
        if edit in self.members:
            return False
        index = bisect.bisect_right(self.keys, (edit.start, edit.end))
        self.keys.insert(index, (edit.start, edit.end))
        self.edits.insert(index, edit)
        self.members.add(edit)
        return True


def _self_overlapping(edits) -> bool:
    ordered = sorted(set(edits))
    return any(a.end > b.start for a, b in zip(ordered, ordered[1:]) if a.start != a.end or b.start != b.end)


def apply_fixes(text: str, diagnostics: Iterable[Diagnostic]) -> tuple[str, list[Diagnostic]]:
    """Apply as many fixes as can be applied together; returns (new text, applied)."""
    accepted = _Accepted()
    ordered: list[tuple[int, int, Edit]] = []  # (fix order, edit order, edit)
    applied: list[Diagnostic] = []
    candidates = sorted(
        (d for d in diagnostics if d.fix is not None), key=lambda d: (d.fix.span(), d.code)
    )
    for diag in candidates:
        try:
            edits = resolve_fix(diag.fix).edits
        except RewriteError:
            continue  # LibCST could not build it: the finding stays, unfixed
        if _self_overlapping(edits) or any(accepted.conflicts(edit) for edit in edits):
            continue  # a fix whose own edits overlap is a rule bug: never apply it
        for index, edit in enumerate(edits):
            if accepted.add(edit):
                ordered.append((len(applied), index, edit))
        applied.append(diag)
    if not applied:
        return text, []
    ordered.sort(key=lambda item: (item[2].start, item[2].end != item[2].start, item[0], item[1]))
    out = []
    cursor = 0
    for _, _, edit in ordered:
        out.append(text[cursor:edit.start])
        out.append(edit.content)
        cursor = max(cursor, edit.end)
    out.append(text[cursor:])
    return "".join(out), applied
