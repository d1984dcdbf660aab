"""AMP106: a torch-version shim around the AMP API that is dead at the target torch (ruff's UP036).

``if torch.__version__ >= "1.10": <torch.autocast> else: <torch.cuda.amp.autocast>``, its
``hasattr``/``packaging``/module-flag forms, the conditional expression
``torch.amp.autocast if ... else torch.cuda.amp.autocast`` and
``try: from torch.amp import GradScaler except ImportError: from torch.cuda.amp import GradScaler``
are reported when the test has one value on every torch from the target on
(ampfix/rules/_torch_version.py says which tests are understood). The fix keeps the live branch:
its statements are moved to the block level of the shim by LibCST (ampfix/rewrite.py), so
nested blocks, comments and strings are kept; the dead branch and the test go.

Only shims that touch the AMP API are reported: other dead torch-version blocks are not this
checker's business.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import line_span, parent_body
from ampfix.prefilter import FileBytes, names_amp_module
from ampfix.rewrite import reblock_edit
from ampfix.rules._migration import MIGRATIONS
from ampfix.rules._torch_version import (
    ACCELERATE_HELPERS,
    FLAG_NAMES,
    LOOSE_VERSIONS,
    METADATA_VERSIONS,
    MODERN_FLOORS,
    TRANSFORMERS_HELPERS,
    VERSION_PARSERS,
    VersionTestEvaluator,
    release_text,
)
from ampfix.rules.base import FIX_SAFE, Rule
from ampfix.semantic import dotted_parts

_AMP_PREFIXES = ("torch.amp.", "torch.cuda.amp.", "torch.cpu.amp.")
_AMP_MODULES = frozenset({"torch.amp", "torch.cuda.amp", "torch.cpu.amp"})
_AMP_WORDS = frozenset({"amp", "autocast", "GradScaler", "custom_fwd", "custom_bwd"}) | {
    name.rsplit(".", 1)[-1] for name in MIGRATIONS
}
# Imports the test alone may have needed: removed when the collapse leaves them unused.
_HELPER_MODULES = ("packaging", "pkg_resources", "distutils", "looseversion", "importlib_metadata",
                   "importlib.metadata", "setuptools._distutils")
_HELPERS = VERSION_PARSERS | LOOSE_VERSIONS | METADATA_VERSIONS | ACCELERATE_HELPERS | TRANSFORMERS_HELPERS
_ELSE = re.compile(r"else\s*:")
_LAST = 1 << 62  # no next clause: a block's footer may run to the end of the file


def is_amp_name(qualified: Optional[str]) -> bool:
    if not qualified:
        return False
    return (
        qualified in _AMP_MODULES or qualified.startswith(_AMP_PREFIXES)
        or qualified in MIGRATIONS or qualified in MODERN_FLOORS
    )


class DeadVersionShim(Rule):
    code = "AMP106"
    name = "dead-version-shim"
    summary = "A torch-version shim around the AMP API is dead at the target torch"
    triggers = (b"version", b"hasattr", b"Error", b"_TORCH_GREATER_EQUAL_", b"is_torch_greater_or_equal")
    fix_safety = FIX_SAFE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        if not super().may_fire(file):
            return False
        return names_amp_module(file) or file.has(b"autocast", b"GradScaler", b"custom_fwd", b"custom_bwd")

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        if not getattr(ctx.settings, "target_torch_declared", False):
            # ampfix's own default floor is a guess about the project: removing the branch for an
            # older torch breaks every user still on it (accelerate declares torch>=2.0 in setup.py)
            return
        evaluator = VersionTestEvaluator(ctx)
        target = release_text(ctx.settings.target_torch)
        shims = [n for n in ctx.semantic.nodes(ast.If, ast.IfExp, ast.Try) if not _is_elif(ctx, n)]
        for node in shims:
            if isinstance(node, ast.Try):
                yield from self._check_try(ctx, node, target)
                continue
            evaluator.reasons.clear()
            truth = evaluator.truth(node.test)
            if truth is None or not _mentions_amp(ctx, node):
                continue
            dead = node.orelse if truth else node.body
            kept = "the `if` branch" if truth else ("the `else` branch" if node.orelse else "nothing")
            why = f"; {evaluator.reasons[0]}" if evaluator.reasons else ""
            message = (
                f"Version shim is dead for torch >= {target}: `{_short(ctx, node.test)}` is always "
                f"{str(truth).lower()}{why}"
            )
            build = _if_fix if isinstance(node, ast.If) else _ifexp_fix
            edits = build(ctx, node, truth)
            fix = None
            if edits is not None:
                removed = [node.test, *(dead if isinstance(dead, list) else [dead])]
                action = f"Keep {kept}" if kept != "nothing" else "Remove the dead block"
                fix = Fix(action, tuple(edits), Applicability.SAFE, orphaned_imports=_orphans(ctx, evaluator, removed))
            diag = ctx.diagnostic(self, node.test, message, fix)
            if fix is None:
                diag.no_fix_reason = "the live branch shares a line with its header"
            yield diag

    def _check_try(self, ctx: ModuleContext, node: ast.Try, target: str) -> Iterator[Diagnostic]:
        names = _modern_imports(ctx, node.body)
        if not names or not node.handlers:
            return
        handler = node.handlers[0]
        newest = max(names, key=lambda n: MODERN_FLOORS[n])
        floor = release_text(MODERN_FLOORS[newest])
        caught = ctx.segment(handler.type) if handler.type is not None else ""
        message = (
            f"`except {caught}`".replace(" `", "`") + f" is dead for torch >= {target}: "
            f"`{newest}` exists from torch {floor}"
        )
        edits = None if node.finalbody else _try_fix(ctx, node)
        fix = None
        if edits is not None:
            fix = Fix("Keep the `try` body", tuple(edits), Applicability.SAFE)
        diag = ctx.diagnostic(self, handler.type if handler.type is not None else handler, message, fix)
        if fix is None:
            diag.no_fix_reason = "a `finally` clause or a body on the `try` line"
        yield diag


# -- what is a shim ----------------------------------------------------------------------------

def _is_elif(ctx: ModuleContext, node: ast.AST) -> bool:
    """An ``elif`` (an If that is its parent's whole ``orelse``): only a chain's first test is judged."""
    parent = ctx.semantic.parent(node)
    if not (isinstance(node, ast.If) and isinstance(parent, ast.If) and parent.orelse == [node]):
        return False
    start, _ = ctx.locator.node_range(node)
    return ctx.text.startswith("elif", start)


def _mentions_amp(ctx: ModuleContext, node: ast.AST) -> bool:
    """Whether the shim names the AMP API (a name, an import, or a ``hasattr`` probe of it)."""
    semantic = ctx.semantic
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Name, ast.Attribute)):
            parts = dotted_parts(sub)
            if parts and _AMP_WORDS.intersection(parts) and is_amp_name(semantic.qualified_name(sub)):
                return True
        elif isinstance(sub, ast.ImportFrom) and not sub.level and sub.module:
            if is_amp_name(sub.module) or any(is_amp_name(f"{sub.module}.{a.name}") for a in sub.names):
                return True
        elif isinstance(sub, ast.Import):
            if any(is_amp_name(a.name) for a in sub.names):
                return True
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "hasattr":
            if len(sub.args) == 2 and isinstance(sub.args[1], ast.Constant):
                base = semantic.qualified_name(sub.args[0])
                if base and is_amp_name(f"{base}.{sub.args[1].value}"):
                    return True
    return False


def _modern_imports(ctx: ModuleContext, body: list) -> list[str]:
    """The modern AMP names a ``try`` body imports, when that is all it does and every one exists
    at the target torch (the body cannot raise, so its handlers are dead); else []."""
    target = tuple(ctx.settings.target_torch)
    names = []
    for stmt in body:
        if isinstance(stmt, ast.ImportFrom) and not stmt.level and stmt.module:
            found = [f"{stmt.module}.{a.name}" for a in stmt.names]
        elif isinstance(stmt, ast.Import):
            found = [a.name for a in stmt.names]
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            found = [ctx.semantic.qualified_name(stmt.value) or ""]
        else:
            return []
        if not all(n in MODERN_FLOORS and MODERN_FLOORS[n] <= target for n in found):
            return []
        names += found
    return names


def _short(ctx: ModuleContext, node: ast.AST) -> str:
    text = " ".join(ctx.segment(node).split())
    return text if len(text) <= 70 else text[:67] + "..."


def _orphans(ctx: ModuleContext, evaluator: VersionTestEvaluator, removed: list) -> frozenset:
    """Names bound by imports of version helpers that only the removed code may have used (none
    in an ``__init__.py``, whose imports are the package's exports)."""
    if os.path.basename(ctx.path) == "__init__.py":
        return frozenset()
    names = set()
    for root in removed:
        for sub in ast.walk(root):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                qualified = evaluator.qualified(sub) or ""
                is_import = any(b.kind == "import" for b in _bindings(ctx, sub))
                if is_import and (
                    qualified.startswith(_HELPER_MODULES) or qualified in _HELPERS
                    or any(p.match(qualified) for p in FLAG_NAMES)
                ):
                    names.add(sub.id)
    return frozenset(names)


def _bindings(ctx: ModuleContext, name: ast.Name) -> list:
    scope = ctx.semantic.scope_of(name)
    while scope is not None:
        if name.id in scope.bindings:
            return scope.bindings[name.id]
        scope = scope.parent
    return []


# -- the fixes ---------------------------------------------------------------------------------

def _header_row(ctx: ModuleContext, test: ast.AST) -> Optional[int]:
    """The row of the ``:`` that ends a header whose last part is ``test``."""
    text = ctx.text
    index = ctx.locator.node_range(test)[1]
    while index < len(text):
        char = text[index]
        if char == ":":
            return ctx.locator.position(index).row
        if char == "#":
            index = text.find("\n", index)
            if index < 0:
                return None
        elif char not in " \t\r\n\\)":
            return None
        index += 1
    return None


def _row_end(ctx: ModuleContext, row: int) -> int:
    """The offset just after row's line break."""
    starts = ctx.locator.line_starts
    return starts[row] if row < len(starts) else len(ctx.text)


def _block_lines(ctx: ModuleContext, header_row: int, block: list, stop_row: int, indent: str) -> Optional[tuple]:
    """(statements, footer start, footer end): the whole lines of ``block`` (the statements after
    the header on ``header_row``, with the comments above its first statement), and the span of
    the comment lines indented under it after its last statement, up to ``stop_row`` (the next
    clause's row, exclusive). LibCST moves the statements; the footer, which LibCST does not
    print with them, moves as text."""
    if block[0].lineno <= header_row:
        return None  # `if x: y` on one line
    last = block[-1].end_lineno
    footer_end = last
    row = last + 1
    stop_row = min(stop_row, len(ctx.locator.line_starts) + 1)
    while row < stop_row:
        stripped = ctx.locator.line_text(row).strip()
        if stripped and not (stripped.startswith("#") and len(ctx.locator.indentation(row)) > len(indent)):
            break
        if stripped:
            footer_end = row
        row += 1
    statements = ctx.text[ctx.locator.line_start(header_row + 1):_row_end(ctx, last)]
    return statements, _row_end(ctx, last), _row_end(ctx, footer_end)


def _keyword_row(ctx: ModuleContext, after: int, before: int, indent: str) -> Optional[int]:
    """The row of the ``else:`` between rows ``after`` and ``before`` (inclusive) at ``indent``."""
    for row in range(after + 1, before + 1):
        line = ctx.locator.line_text(row)
        if ctx.locator.indentation(row) == indent and _ELSE.match(line[len(indent):]):
            return row
    return None


def _moved(ctx: ModuleContext, stmt: ast.stmt, lines: Optional[tuple], block: list) -> Optional[list[Edit]]:
    """Replace the lines of ``stmt`` with ``lines`` (the live block and its footer comments),
    re-blocked at stmt's level."""
    if lines is None:
        return None
    statements, footer_start, footer_end = lines
    start, end = line_span(ctx, stmt)
    indent = ctx.locator.indentation(stmt.lineno)
    old = ctx.locator.indentation(block[0].lineno)
    edits = [reblock_edit(start, end, statements, old, indent, newline=ctx.locator.newline())]
    if footer_end > footer_start:
        footer = _dedented(ctx.text[footer_start:footer_end], old, indent)
        if footer_start >= end:  # after the statement (its last clause's footer): moved in place
            edits.append(Edit(footer_start, footer_end, footer))
        else:  # before a clause the fix removes: after the moved statements
            edits.append(Edit.insert(end, footer))
    return edits


def _dedented(comments: str, old: str, new: str) -> str:
    """Comment lines moved from indentation ``old`` to ``new`` (deeper ones keep their extra)."""
    lines = comments.splitlines(keepends=True)
    return "".join(new + line[len(old):] if line.startswith(old) else line for line in lines)


def _if_fix(ctx: ModuleContext, node: ast.If, truth: bool) -> Optional[list[Edit]]:
    indent = ctx.locator.indentation(node.lineno)
    header = _header_row(ctx, node.test)
    if header is None:
        return None
    if truth and not node.orelse and node.body[0].lineno == header:  # `if x: y` keeps `y`
        body_start = ctx.locator.node_range(node.body[0])[0]
        return [Edit(ctx.locator.line_start(node.lineno), body_start, indent)]
    if truth:
        stop = node.orelse[0].lineno if node.orelse else _LAST
        if node.orelse and _is_elif(ctx, node.orelse[0]):
            stop = node.orelse[0].lineno
        elif node.orelse:
            stop = _keyword_row(ctx, node.body[-1].end_lineno, node.orelse[0].lineno, indent) or stop
        return _moved(ctx, node, _block_lines(ctx, header, node.body, stop, indent), node.body)
    if not node.orelse:
        return _removed(ctx, node, indent)
    if _is_elif(ctx, node.orelse[0]):  # `elif c:` becomes `if c:`, at the same level
        elif_start = ctx.locator.node_range(node.orelse[0])[0]
        return [Edit(ctx.locator.line_start(node.lineno), elif_start + len("elif"), indent + "if")]
    else_row = _keyword_row(ctx, node.body[-1].end_lineno, node.orelse[0].lineno, indent)
    if else_row is None:
        return None
    lines = _block_lines(ctx, else_row, node.orelse, _LAST, indent)
    return _moved(ctx, node, lines, node.orelse)


def _removed(ctx: ModuleContext, node: ast.stmt, indent: str) -> list[Edit]:
    start, end = line_span(ctx, node)
    siblings = parent_body(ctx, node)
    if siblings is not None and len(siblings) == 1 and not isinstance(ctx.semantic.parent(node), ast.Module):
        return [Edit(start, end, f"{indent}pass{ctx.locator.newline()}")]
    return [Edit.delete(start, end)]


def _ifexp_fix(ctx: ModuleContext, node: ast.IfExp, truth: bool) -> list[Edit]:
    outer_start, outer_end = ctx.locator.node_range(node)
    start, end = ctx.locator.node_range(node.body if truth else node.orelse)
    text = ctx.text
    while start > outer_start and end < outer_end and text[start - 1] == "(" and text[end] == ")":
        start, end = start - 1, end + 1  # the branch's own parentheses
    return [Edit(outer_start, outer_end, text[start:end])]


def _try_fix(ctx: ModuleContext, node: ast.Try) -> Optional[list[Edit]]:
    indent = ctx.locator.indentation(node.lineno)
    stop = node.handlers[0].lineno
    lines = _block_lines(ctx, node.lineno, node.body, stop, indent)
    if lines is None:
        return None
    if node.orelse:
        else_row = _keyword_row(ctx, node.handlers[-1].end_lineno, node.orelse[0].lineno, indent)
        body_indent = ctx.locator.indentation(node.body[0].lineno)
        if else_row is None or ctx.locator.indentation(node.orelse[0].lineno) != body_indent:
            return None
        rest = _block_lines(ctx, else_row, node.orelse, _LAST, indent)
        if rest is None or lines[2] > lines[1]:
            return None  # comments between the body and `else` would land between two statements
        lines = (lines[0] + rest[0], rest[1], rest[2])
    return _moved(ctx, node, lines, node.body)
