"""Applying fixes: non-overlapping text edits, then import tidying.

Fixes whose edits overlap an already accepted fix wait for the next pass (the engine loops to a
fixed point); identical edits shared by several fixes (``import torch``) are applied once.
Within one fix, insertions at the same offset keep the order the rule gave them.
"""

from __future__ import annotations

from typing import Iterable

from ampfix.diagnostics import Diagnostic, Edit


def _conflicts(edit: Edit, accepted: list[Edit]) -> bool:
    for other in accepted:
        if edit == other:
            continue
        if edit.start < other.end and other.start < edit.end:
            return True
        if edit.start == other.start and (edit.start == edit.end or other.start == other.end):
            return True
    return False


def _self_overlapping(edits) -> bool:
    ordered = sorted(set(edits))
    return any(a.end > b.start for a, b in zip(ordered, ordered[1:]) if a.start != a.end or b.start != b.end)


def apply_fixes(text: str, diagnostics: Iterable[Diagnostic]) -> tuple[str, list[Diagnostic]]:
    """Apply as many fixes as can be applied together; returns (new text, applied)."""
    accepted: list[Edit] = []
    ordered: list[tuple[int, int, Edit]] = []  # (fix order, edit order, edit)
    applied: list[Diagnostic] = []
    candidates = sorted(
        (d for d in diagnostics if d.fix is not None), key=lambda d: (d.fix.span(), d.code)
    )
    for diag in candidates:
        edits = diag.fix.edits
        if _self_overlapping(edits) or any(_conflicts(edit, accepted) for edit in edits):
            continue  # a fix whose own edits overlap is a rule bug: never apply it
        for index, edit in enumerate(edits):
            if edit not in accepted:
                accepted.append(edit)
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
