"""Checking and fixing one source text: the core the CLI, the runner and the verifier share.

The pipeline for one file:

1. prefilter (ampfix/prefilter.py): a file on which no selected rule can fire is not parsed;
2. parse with CPython's ``ast`` (a syntax error becomes an AMP001 diagnostic);
3. every selected rule that may fire runs against one shared ``ModuleContext``;
4. suppressions (``# noqa``, ``# ampfix: ignore[...]``) filter the result; unknown AMP codes in
   them are AMP002;
5. fixing applies the allowed fixes, tidies imports, re-parses, and repeats to a fixed point.
   Output that does not parse is never returned: the file is left as it was.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass, field
from typing import Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.fixer import apply_fixes
from ampfix.imports import remove_unused_imports
from ampfix.rules import ENGINE_CODES, RULES, prefilter_for
from ampfix.settings import Settings
from ampfix.source import Locator
from ampfix.suppression import parse_suppressions

MAX_FIX_PASSES = 10
_AMP_CODE = re.compile(r"AMP\d")


class FixError(Exception):
    """A fix produced code that does not parse, or fixes did not converge. File left unchanged."""


@dataclass
class FixResult:
    source: str
    fixed: list[Diagnostic] = field(default_factory=list)
    remaining: list[Diagnostic] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.fixed)


def may_fire(data: bytes, codes: frozenset) -> bool:
    """The byte prefilter (ampfix/prefilter.py): False when no selected rule can fire on this file."""
    return prefilter_for(codes).any_may_fire(data)


def parse_quietly(text: str, path: str = "<unknown>") -> ast.Module:
    """ast.parse without printing the code's own SyntaxWarnings (invalid escapes, `1(...)`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text, filename=path)


def check_source(
    source: str, path: str = "<stdin>", settings: Optional[Settings] = None, prefilter: bool = True
) -> list[Diagnostic]:
    """Diagnostics for one source text, sorted by position. ``prefilter=False`` runs every
    selected rule whatever the file contains (the soundness tests of the triggers use it)."""
    settings = settings or Settings()
    return _analyse(source, path, settings, settings.enabled(path), prefilter)


def fix_source(
    source: str,
    path: str = "<stdin>",
    settings: Optional[Settings] = None,
    unsafe_fixes: Optional[bool] = None,
) -> FixResult:
    """Apply fixes to a fixed point. Raises FixError if a fix would break the code."""
    settings = settings or Settings()
    codes = settings.enabled(path)
    allow_unsafe = settings.unsafe_fixes if unsafe_fixes is None else unsafe_fixes
    text = source
    fixed: list[Diagnostic] = []
    for _ in range(MAX_FIX_PASSES):
        diagnostics = _analyse(text, path, settings, codes)
        fixable = [d for d in diagnostics if d.fix_applies(allow_unsafe)]
        new_text, applied = apply_fixes(text, fixable)
        if not applied:
            return FixResult(text, fixed, diagnostics)
        orphans = set().union(*(d.fix.orphaned_imports for d in applied))
        try:
            parse_quietly(new_text)
            new_text = remove_unused_imports(new_text, orphans)
            parse_quietly(new_text)
        except (SyntaxError, ValueError, RecursionError) as exc:
            codes_used = ", ".join(sorted({d.code for d in applied}))
            raise FixError(f"fix for {codes_used} produced invalid code ({exc}); file left unchanged") from None
        text = new_text
        fixed.extend(applied)
    raise FixError(f"fixes did not converge after {MAX_FIX_PASSES} passes; file left unchanged")


def _analyse(text: str, path: str, settings: Settings, codes: frozenset, prefilter: bool = True) -> list[Diagnostic]:
    if prefilter:
        candidates = prefilter_for(codes).candidates(text.encode("utf-8", "surrogatepass"))
        if not candidates:
            return []
    else:
        candidates = codes
    locator = Locator(text)
    diagnostics: list[Diagnostic] = []
    try:
        tree = parse_quietly(text, path)
    except SyntaxError as exc:
        if "AMP001" in codes:
            diagnostics.append(_syntax_error(exc, locator))
        tree = None
    except (RecursionError, MemoryError):
        if "AMP001" in codes:
            diagnostics.append(_syntax_error(SyntaxError("too deeply nested to parse", (path, 1, 1, "")), locator))
        tree = None
    if tree is not None:
        ctx = ModuleContext(path, text, tree, settings)
        for code in sorted(candidates - ENGINE_CODES):
            diagnostics.extend(RULES[code].check(ctx))
    if not diagnostics and ("AMP002" not in codes or not _AMP_CODE.search(text)):
        return []  # nothing to suppress and no AMP code in a comment: skip the comment scan
    suppressions = parse_suppressions(text, locator, set(RULES), tree)
    kept = []
    for diag in diagnostics:
        start, end = locator.position(diag.start), locator.position(diag.end)
        diag.filename = path
        diag.location, diag.end_location = start, end
        if diag.fix is not None:
            diag.edit_locations = tuple(
                (locator.position(e.start), locator.position(e.end)) for e in diag.fix.edits
            )
        diag.evidence_locations = tuple((locator.position(n.start), locator.position(n.end)) for n in diag.evidence)
        if diag.code != "AMP001" and suppressions.suppresses(diag.code, (start.row, end.row)):
            continue
        kept.append(diag)
    if "AMP002" in codes:
        rule = RULES["AMP002"]
        for invalid in suppressions.invalid:
            diag = Diagnostic(rule.code, rule.name, f"unknown rule code `{invalid.code}` in suppression comment", invalid.start, invalid.end)
            diag.filename = path
            diag.location, diag.end_location = locator.position(invalid.start), locator.position(invalid.end)
            kept.append(diag)
    kept.sort(key=Diagnostic.sort_key)
    return kept


def _syntax_error(exc: SyntaxError, locator: Locator) -> Diagnostic:
    rule = RULES["AMP001"]
    row = max(1, min(exc.lineno or 1, len(locator.line_starts)))
    line = locator.line_text(row)
    column = max(0, min((exc.offset or 1) - 1, len(line)))
    start = locator.line_start(row) + column
    return Diagnostic(rule.code, rule.name, f"SyntaxError: {exc.msg}", start, start)
