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
import contextlib
import dataclasses
import gc
import re
import warnings
from dataclasses import dataclass, field
from typing import Optional

from ampfix.cache import content_hash
from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic
from ampfix.fixer import apply_fixes
from ampfix.imports import carry_orphaned_imports, remove_unused_imports
from ampfix.program.project import ProjectIndex
from ampfix.rules import ENGINE_CODES, RULES, prefilter_for
from ampfix.settings import Settings
from ampfix.source import Locator, SourceError, SourceText
from ampfix.parts import Part, is_large, top_level_parts
from ampfix.suppression import may_hold_directive, parse_suppressions, strings_on_rows, suppression_rows
from ampfix.validate import FixValidator, refuse

MAX_FIX_PASSES = 10
_AMP_CODE = re.compile(r"AMP\d")


class FixError(Exception):
    """A fix produced code that does not parse, or fixes did not converge. File left unchanged."""


class RuleCrash(Exception):
    """A rule raised on this file: the message names the rule(s); ``diagnostics`` are the other
    rules' findings, which still count (and print). The run exits 2, as for any error."""

    def __init__(self, message: str, diagnostics: list[Diagnostic]):
        super().__init__(message)
        self.diagnostics = diagnostics


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


def _must_parse(text: str) -> None:
    """Raise SyntaxError unless ``text`` parses (in parts when very large: bounded memory)."""
    with _collector_paused():
        if is_large(text):
            for _ in top_level_parts(text):
                pass
        else:
            parse_quietly(text)


def check_source(
    source: str, path: str = "<stdin>", settings: Optional[Settings] = None, prefilter: bool = True,
    candidates: Optional[frozenset] = None,
) -> list[Diagnostic]:
    """Diagnostics for one source text, sorted by position. ``prefilter=False`` runs every
    selected rule whatever the file contains (the soundness tests of the triggers use it).
    ``candidates``: the prefilter's answer on exactly these bytes (``source`` in UTF-8), when the
    caller has it already (the runner asks it before decoding), so that it is not asked twice."""
    settings = settings or Settings()
    return validate_fixes(source, path, settings, analyse_source(source, path, settings, prefilter, candidates))


def analyse_source(
    source: str, path: str = "<stdin>", settings: Optional[Settings] = None, prefilter: bool = True,
    candidates: Optional[frozenset] = None,
) -> list[Diagnostic]:
    """``check_source``'s findings before their fixes are judged (``validate_fixes``): the same
    findings, at a third of the cost in a file with fixes, for an editor to show at once."""
    settings = settings or Settings()
    return _analyse(source, path, settings, settings.enabled(path), prefilter, candidates)


def validate_fixes(source: str, path: str, settings: Optional[Settings], diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """``diagnostics`` (``analyse_source``'s of ``source``) with every fix that would make the file
    worse withdrawn, with the reason (ampfix/validate.py); the findings themselves stay."""
    settings = settings or Settings()
    return _validated(source, path, settings, settings.enabled(path), diagnostics)


# One project index per settings object (a run has one; each worker process builds its own).
_PROJECTS: dict[int, tuple[Settings, ProjectIndex]] = {}


def project_index(settings: Settings) -> ProjectIndex:
    """The index of the project's other modules that analyses under ``settings`` share."""
    entry = _PROJECTS.get(id(settings))
    if entry is None or entry[0] is not settings:
        if len(_PROJECTS) >= 4:
            _PROJECTS.clear()
        index = ProjectIndex(
            lambda path, index, prefiltered: _load_module(path, settings, index, prefiltered), settings.project_root
        )
        entry = _PROJECTS[id(settings)] = (settings, index)
    return entry[1]


def dependencies(path: str, settings: Settings) -> list[list]:
    """The other files whose facts the last analysis of ``path`` used (for the result cache)."""
    entry = _PROJECTS.get(id(settings))
    return entry[1].dependencies(path) if entry is not None and entry[0] is settings else []


def _load_module(path: str, settings: Settings, index: ProjectIndex, prefiltered: bool = True):
    """Another module of the project, for the facts of calls into it: only a Python file that
    passes the prefilter (anything else cannot hold a training event) and parses; with
    ``prefiltered=False`` any module that parses (a caller, read for its setup)."""
    if not path.endswith(".py"):
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    digest = content_hash(data)  # what the file held, whether or not it holds facts
    try:
        if prefiltered and not may_fire(data, settings.enabled(path)):
            return None, digest
        text = SourceText.decode(data).text
        if is_large(text):
            return None, digest  # generated code: its facts stay unknown rather than cost 2 GB
        tree = parse_quietly(text, path)
    except (SourceError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None, digest
    return ModuleContext(path, text, tree, settings, project=index), digest


def fix_source(
    source: str,
    path: str = "<stdin>",
    settings: Optional[Settings] = None,
    unsafe_fixes: Optional[bool] = None,
    candidates: Optional[frozenset] = None,
) -> FixResult:
    """Apply fixes to a fixed point. Raises FixError if a fix would break the code.

    Fix closure: only validated fixes are tried (ampfix/validate.py), and after each pass the
    result of the fixes applied together is validated too; where together they are worse than
    the text they were applied to, each rule's fixes are tried alone, and the rules whose fixes
    still make it worse are refused for that pass, their findings reported with the reason.
    ``candidates``: as for ``check_source`` (the first analysis only: the fixed texts differ)."""
    settings = settings or Settings()
    codes = settings.enabled(path)
    allow_unsafe = settings.unsafe_fixes if unsafe_fixes is None else unsafe_fixes
    text = source
    fixed: list[Diagnostic] = []
    diagnostics = _validated(text, path, settings, codes, _analyse(text, path, settings, codes, candidates=candidates))
    for _ in range(MAX_FIX_PASSES):
        fixable = [d for d in diagnostics if d.fix_applies(allow_unsafe)]
        new_text, applied = _apply(text, fixable)
        if not applied:
            return FixResult(text, fixed, diagnostics)
        validator = _validator(text, path, settings, codes, diagnostics)
        if validator.problem(new_text) is not None:
            new_text, applied = _without_rules_that_make_it_worse(text, fixable, validator)
            if not applied:
                return FixResult(text, fixed, diagnostics)
        text = new_text
        diagnostics = _validated(text, path, settings, codes, _analyse(text, path, settings, codes))
        fixed.extend(applied)
    raise FixError(f"fixes did not converge after {MAX_FIX_PASSES} passes; file left unchanged")


_LOOP_CODES = ("AMP2", "AMP3", "AMP4", "AMP5")
_CYCLES_WORTH_COLLECTING = 500_000  # objects: about one piece's tree


def _validator(text: str, path: str, settings: Settings, codes: frozenset, diagnostics: list) -> FixValidator:
    analyse = lambda fixed, asked: _analyse(fixed, path, settings, asked)  # noqa: E731
    return FixValidator(text, path, codes, analyse, diagnostics)


def _validated(text: str, path: str, settings: Settings, codes: frozenset, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics with every fix that would make the file worse withdrawn, with the reason
    (ampfix/validate.py). Where several rules offer fixes, what ``--apply`` writes (the safe
    fixes together) and what ``--apply --unsafe-fixes`` writes (all of them) are tried first:
    when neither is worse, every fix stands. Otherwise a rule's fixes are tried together (in a
    file of twenty deprecations that is one trial), and one at a time only when together they fail."""
    offered = [d for d in diagnostics if d.fix is not None]
    if not offered:
        return diagnostics
    validator = _validator(text, path, settings, codes, diagnostics)
    rules = sorted({d.code for d in offered})
    if len(rules) > 1 and all(_trial_problem(text, group, validator) is None for group in _what_apply_writes(offered)):
        return diagnostics
    for code in rules:
        group = [d for d in offered if d.code == code]
        if len(group) > 1 and _trial_problem(text, group, validator) is None:
            continue
        for diag in group:
            reason = _trial_problem(text, [diag], validator)
            if reason is not None:
                refuse(diag, reason)
    return diagnostics


def _what_apply_writes(offered: list[Diagnostic]) -> list[list[Diagnostic]]:
    """The sets of fixes that ``--apply`` and ``--apply --unsafe-fixes`` apply together."""
    safe = [d for d in offered if d.fix_applies(False)]
    return [safe, offered] if safe and len(safe) < len(offered) else [offered]


def _trial_problem(text: str, group: list[Diagnostic], validator: FixValidator, every: bool = True) -> Optional[str]:
    """Why applying ``group``'s fixes to ``text`` is refused; None when it is not. With
    ``every``, each of them must apply (a fix that overlaps another waits for a later pass otherwise)."""
    try:
        fixed, applied, tidied = _apply_and_tidy(text, group)
    except FixError:
        return "its result would not parse"
    if not applied or (every and len(applied) < len(group)):
        return "it could not be built, or it overlaps another fix of the same rule"
    edits = None if tidied else [edit for diag in applied for edit in diag.fix.edits]
    return validator.problem(fixed, edits)


def _apply(text: str, fixable: list[Diagnostic]) -> tuple[str, list[Diagnostic]]:
    """Apply the fixes that fit together, tidy imports; raise FixError if the result does not parse."""
    new_text, applied, _ = _apply_and_tidy(text, fixable)
    return new_text, applied


def _apply_and_tidy(text: str, fixable: list[Diagnostic]) -> tuple[str, list[Diagnostic], bool]:
    """``_apply``, and whether imports the fixes left unused were removed too."""
    new_text, applied = apply_fixes(text, fixable)
    if not applied:
        return text, [], False
    orphans = set().union(*(d.fix.orphaned_imports for d in applied))
    try:
        _must_parse(new_text)
        with _collector_paused():
            tidied = remove_unused_imports(new_text, orphans)
        if tidied != new_text:
            _must_parse(tidied)
    except (SyntaxError, ValueError, RecursionError) as exc:
        codes_used = ", ".join(sorted({d.code for d in applied}))
        raise FixError(f"fix for {codes_used} produced invalid code ({exc}); file left unchanged") from None
    return tidied, applied, tidied != new_text


def _without_rules_that_make_it_worse(text, fixable, validator):
    """Try each rule's fixes of this pass alone; refuse a rule's fixes whose result is worse,
    then apply the others together (and refuse them all if together they still are)."""
    accepted = []
    for code in sorted({d.code for d in fixable}):
        group = [d for d in fixable if d.code == code]
        reason = _trial_problem(text, group, validator, every=False)
        if reason is not None:
            for diag in group:
                refuse(diag, reason)
        else:
            accepted += group
    new_text, applied = _apply(text, accepted)
    reason = validator.problem(new_text) if applied else None
    if reason is not None:
        for diag in accepted:
            refuse(diag, f"together with the other fixes, {reason}")
        return text, []
    return new_text, applied


def _analyse(
    text: str, path: str, settings: Settings, codes: frozenset, prefilter: bool = True,
    candidates: Optional[frozenset] = None,
) -> list[Diagnostic]:
    with _collector_paused():
        return _analyse_file(text, path, settings, codes, prefilter, candidates)


@contextlib.contextmanager
def _collector_paused():
    """The analysis of one file allocates a tree and its model and keeps them all alive to the
    end: the cyclic collector only re-scans them (on a 1.6 MB file it is 60% of the time).
    Paused for the file, resumed after, so what the file leaves behind is still collected."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _analyse_file(
    text: str, path: str, settings: Settings, codes: frozenset, prefilter: bool, candidates: Optional[frozenset]
) -> list[Diagnostic]:
    if not prefilter:
        candidates = codes
    elif candidates is None:
        candidates = prefilter_for(codes).candidates(text.encode("utf-8", "surrogatepass"))
    if not candidates:
        return []
    locator = Locator(text)
    if is_large(text):
        diagnostics, crashes, string_rows = _run_rules_in_parts(text, path, settings, codes, candidates, locator)
        tree = None
    else:
        diagnostics, crashes, tree = _run_rules(text, path, settings, codes, candidates, locator)
        string_rows = None
    if not diagnostics and ("AMP002" not in codes or not _AMP_CODE.search(text)):
        if crashes:
            raise RuleCrash("; ".join(crashes), [])
        return []  # nothing to suppress and no AMP code in a comment: skip the comment scan
    for diag in diagnostics:
        _apply_fix_settings(diag, settings)
    if tree is not None:
        carry_orphaned_imports(diagnostics, text, tree, locator)  # each fix, applied alone, leaves no unused import
    suppressions = parse_suppressions(text, locator, set(RULES), tree, string_rows)
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
        if diag.code != "AMP001" and not settings.ignore_noqa and suppressions.suppresses(diag.code, (start.row, end.row)):
            continue
        kept.append(diag)
    if "AMP002" in codes:
        rule = RULES["AMP002"]
        for invalid in suppressions.invalid:
            row = locator.position(invalid.start).row
            if not settings.ignore_noqa and suppressions.suppresses("AMP002", (row, row)):
                continue  # `# noqa: AMP012, AMP002`: the typo baselined, as `--add-noqa` writes it
            diag = Diagnostic(rule.code, rule.name, f"unknown rule code `{invalid.code}` in suppression comment", invalid.start, invalid.end)
            diag.filename = path
            diag.location, diag.end_location = locator.position(invalid.start), locator.position(invalid.end)
            kept.append(diag)
    kept.sort(key=Diagnostic.sort_key)
    if crashes:
        raise RuleCrash("; ".join(crashes), kept)
    return kept


def _run_rules(text, path, settings, codes, candidates, locator):
    """The candidate rules' findings on one parsed text (AMP001 where it does not parse),
    the rules that crashed, and the tree."""
    try:
        tree = parse_quietly(text, path)
    except SyntaxError as exc:
        return ([_syntax_error(exc, locator)] if "AMP001" in codes else []), [], None
    except (RecursionError, MemoryError):
        return ([_syntax_error(_too_deep(path), locator)] if "AMP001" in codes else []), [], None
    project = project_index(settings) if not path.startswith("<") else None
    ctx = ModuleContext(path, text, tree, settings, project=project)
    diagnostics, crashes = _findings(ctx, candidates)
    ctx.release()  # its models go now, by reference counting, not in a later collection
    return diagnostics, crashes, tree


def _findings(ctx: ModuleContext, candidates: frozenset) -> tuple[list[Diagnostic], list[str]]:
    diagnostics, crashes = [], []
    for code in sorted(candidates - ENGINE_CODES):
        try:
            diagnostics.extend(RULES[code].check(ctx))
        except Exception as exc:  # a bug in one rule must not take the file's other findings
            crashes.append(f"rule {code} crashed ({type(exc).__name__}: {exc}); its findings are missing")
    return diagnostics, crashes


def _run_rules_in_parts(text, path, settings, codes, candidates, locator):
    """`_run_rules` for a very large text (ampfix/parts.py), one piece at a time: findings in the
    whole text's offsets, and the rows of strings on lines with a suppression-like comment (what
    the suppression scan would have read from the whole tree).

    The loop rules run on each piece too, but they ask about the whole module (an ``update()``
    in another function, the callers of a step function, a scaler made at the top level), which
    a piece may not hold: a loop finding is kept only where its top-level statement is closed
    over its piece (``_ClosedStatements``): it reads no top-level name that another piece binds,
    and no other piece names what it binds (no caller, no subclass elsewhere)."""
    project = project_index(settings) if not path.startswith("<") else None
    closed = _ClosedStatements() if any(code.startswith(_LOOP_CODES) for code in candidates) else None
    diagnostics, crashes, string_rows = [], [], set()
    try:
        for index, part in enumerate(top_level_parts(text, path, with_imports=True)):
            if not candidates - ENGINE_CODES:
                continue  # parsed for AMP001 alone
            part_text = part.text(text)
            if closed is not None:
                closed.add_piece(index, part, part_text)
            ctx = ModuleContext(path, part_text, part.tree, settings, project=project)
            found, failed = _findings(ctx, candidates)
            for diag in found:
                if closed is not None and diag.code.startswith(_LOOP_CODES):
                    closed.hold(diag, index, part, ctx.locator)
            ctx.release()
            crashes.extend(failed)
            diagnostics.extend(d for d in (_in_whole_text(diag, part) for diag in found) if d is not None)
            if may_hold_directive(part_text):
                # every piece's strings count: a directive-like text in any of them (`"# ampfix: noqa"`)
                # must not be read as a comment for the whole file
                rows = suppression_rows(part_text, Locator(part_text))
                shift = part.first_row - 1 - part.head_rows
                string_rows |= {row + shift for row in strings_on_rows(part.tree, rows) if row > part.head_rows}
            del part, found, part_text, ctx
            # The analysis pauses the collector and the released model goes by reference
            # counting; should a rule have left cycles (many more objects alive than before),
            # they are collected, and what survives is set aside for later collections.
            if gc.get_count()[0] > _CYCLES_WORTH_COLLECTING:
                gc.collect()
                gc.freeze()
    except SyntaxError as exc:
        if "AMP001" in codes:
            diagnostics.append(_syntax_error(exc, locator))
    except (RecursionError, MemoryError):
        if "AMP001" in codes:
            diagnostics.append(_syntax_error(_too_deep(path), locator))
    finally:
        gc.unfreeze()
    return (closed.kept(diagnostics) if closed is not None else diagnostics), crashes, string_rows


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _ClosedStatements:
    """Which loop findings of a file analysed in parts stand as they would in the whole file.

    A finding lies in one top-level statement of its piece. The piece's analysis saw all of the
    module that this statement can reach when every top-level name the statement reads is bound
    only in its own piece, or only by one top-level import of it or of an earlier piece (the
    imports every later piece is given as its head), and every name the statement
    binds is mentioned in no other piece (identifiers of the text, strings and comments included:
    more than the references, so never fewer): then no ``update()`` of a shared scaler, caller
    or subclass lies elsewhere. Other loop findings are withdrawn (silent rather than guessed)."""

    def __init__(self):
        self._bound: dict[str, int] = {}  # top-level name -> the piece binding it, -1 when several do
        self._imported: dict[str, tuple[int, str]] = {}  # name -> (piece, the import), (-1, "") when several
        self._mentioned: dict[str, int] = {}  # identifier -> the piece naming it, -1 when several do
        self._held: dict[int, tuple] = {}  # id(diag) -> (diag, piece, reads, binds)

    def add_piece(self, index: int, part: Part, part_text: str) -> None:
        for name in _IDENTIFIER.findall(part_text, len(part.head)):
            _note(self._mentioned, name, index)
        for stmt in _own_statements(part):
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                statement = ast.unparse(stmt)
                for name in _top_level_bindings(stmt):
                    if self._imported.setdefault(name, (index, statement))[1] != statement:
                        self._imported[name] = (-1, "")
                continue
            for name in _top_level_bindings(stmt):
                _note(self._bound, name, index)
        if "global" in part_text:
            for node in ast.walk(part.tree):
                if isinstance(node, ast.Global):  # a function binding a top-level name
                    for name in node.names:
                        _note(self._bound, name, index)

    def hold(self, diag: Diagnostic, index: int, part: Part, locator: Locator) -> None:
        """Note the top-level statement of ``diag`` (in the piece's offsets, not yet moved)."""
        row = locator.position(diag.start).row
        stmt = next((s for s in _own_statements(part) if _first_row(s) <= row <= s.end_lineno), None)
        if stmt is None:
            self._held[id(diag)] = (diag, index, None, None)  # never closed
            return
        reads = frozenset(n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
        self._held[id(diag)] = (diag, index, reads, frozenset(_top_level_bindings(stmt)))

    def kept(self, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
        return [d for d in diagnostics if not self._is_held(d) or self._closed(*self._held[id(d)][1:])]

    def _is_held(self, diag: Diagnostic) -> bool:
        entry = self._held.get(id(diag))
        return entry is not None and entry[0] is diag

    def _closed(self, index: int, reads: Optional[frozenset], binds: Optional[frozenset]) -> bool:
        if reads is None or binds is None:
            return False
        return all(self._reads_own(name, index) for name in reads) and all(
            self._mentioned.get(name, index) == index for name in binds
        )

    def _reads_own(self, name: str, index: int) -> bool:
        imported = self._imported.get(name)
        if imported is None:
            return self._bound.get(name, index) == index
        return name not in self._bound and 0 <= imported[0] <= index


def _note(seen: dict[str, int], name: str, index: int) -> None:
    if seen.setdefault(name, index) != index:
        seen[name] = -1


def _own_statements(part: Part) -> list[ast.stmt]:
    """The piece's own top-level statements (not the imports of its head)."""
    return [s for s in part.tree.body if s.lineno > part.head_rows]


def _first_row(stmt: ast.stmt) -> int:
    return min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", ()))])


def _top_level_bindings(stmt: ast.stmt) -> set[str]:
    """The names a top-level statement binds at the top level: a def or class, imports, and the
    targets of its assignments, loops and ``with``s (nested functions and classes not entered)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".", 1)[0] for a in stmt.names}
    found, todo = set(), [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= {(a.asname or a.name).split(".", 1)[0] for a in node.names}
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            found.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _in_whole_text(diag: Diagnostic, part: Part) -> Optional[Diagnostic]:
    """A piece's finding in the whole text's offsets; None for one in the head (the piece that
    holds that import reports it). A fix that would edit the head is not offered."""
    head = len(part.head)
    if diag.start < head:
        return None
    diag.start, diag.end = part.to_whole(diag.start), part.to_whole(diag.end)
    diag.evidence = tuple(
        dataclasses.replace(note, start=part.to_whole(note.start), end=part.to_whole(note.end))
        for note in diag.evidence if note.start >= head
    )
    if diag.fix is not None:
        # an insertion where the head ends is an import added "after the leading imports": in a
        # later piece that is not the top of the file
        if any(e.start < head or (part.start > 0 and e.start == e.end == head) for e in diag.fix.edits):
            diag.fix, diag.no_fix_reason = None, "the file is analysed in parts (it is very large) and the fix would edit the imports at its top"
        else:
            edits = tuple(dataclasses.replace(e, start=part.to_whole(e.start), end=part.to_whole(e.end)) for e in diag.fix.edits)
            diag.fix = dataclasses.replace(diag.fix, edits=edits)
    return diag


def _apply_fix_settings(diag: Diagnostic, settings: Settings) -> None:
    """What the settings say of a rule's fixes: ``unfixable`` drops them (with the reason),
    ``extend-safe-fixes`` / ``extend-unsafe-fixes`` promote or demote them."""
    if diag.fix is None:
        return
    if diag.code not in settings.fixable:
        diag.fix, diag.no_fix_reason = None, f"fixes of {diag.code} are turned off (`unfixable`)"
    elif diag.code in settings.safe_fix_codes:
        diag.fix = dataclasses.replace(diag.fix, applicability=Applicability.SAFE)
    elif diag.code in settings.unsafe_fix_codes:
        diag.fix = dataclasses.replace(diag.fix, applicability=Applicability.UNSAFE)


def _too_deep(path: str) -> SyntaxError:
    """What a parser that ran out of stack or memory reports, as AMP001 reads it."""
    return SyntaxError("too deeply nested to parse", (path, 1, 1, ""))


def _syntax_error(exc: SyntaxError, locator: Locator) -> Diagnostic:
    rule = RULES["AMP001"]
    row = max(1, min(exc.lineno or 1, len(locator.line_starts)))
    line = locator.line_text(row)
    column = max(0, min((exc.offset or 1) - 1, len(line)))
    start = locator.line_start(row) + column
    return Diagnostic(rule.code, rule.name, f"SyntaxError: {exc.msg}", start, start)
