"""Statement-level edits for the loop rules: insert, delete, move and re-block whole statements.

Inserting a new line and deleting one are exact text edits; moving statements to another
block level (into a gate, out of a ``with``, under a new ``with``) is a LibCST rewrite built
when the fix is applied (ampfix/rewrite.py), so nested blocks, comments and the content of
strings are kept. All of them refuse (return None) rather than guess when a statement shares
its line with another one.
"""

from __future__ import annotations

import ast
import textwrap
from typing import Optional, Sequence

from ampfix.context import ModuleContext
from ampfix.diagnostics import Edit
from ampfix.rewrite import reblock_edit


def owns_lines(ctx: ModuleContext, stmt: ast.stmt) -> bool:
    """Whether stmt starts its first line and ends its last one (ignoring a trailing comment)."""
    loc = ctx.locator
    start, end = loc.node_range(stmt)
    before = ctx.text[loc.line_start(stmt.lineno):start]
    after = ctx.text[end:loc.line_end(stmt.end_lineno)].strip()
    return not before.strip() and (not after or after.startswith("#"))


def line_span(ctx: ModuleContext, first: ast.stmt, last: Optional[ast.stmt] = None) -> tuple[int, int]:
    """Offsets from the start of first's line to just after last's line break."""
    last = last or first
    loc = ctx.locator
    end_row = last.end_lineno
    end = loc.line_starts[end_row] if end_row < len(loc.line_starts) else len(ctx.text)
    return loc.line_start(first.lineno), end


def indentation(ctx: ModuleContext, stmt: ast.stmt) -> str:
    return ctx.locator.indentation(stmt.lineno)


def insert_before(ctx: ModuleContext, stmt: ast.stmt, code: str, indent: Optional[str] = None) -> Optional[Edit]:
    """New statements (``code``, written at column 0) on the lines before stmt, at its
    indentation (or ``indent``), placed by LibCST when the fix is applied."""
    if not owns_lines(ctx, stmt):
        return None
    indent = indentation(ctx, stmt) if indent is None else indent
    return _inserted(ctx, ctx.locator.line_start(stmt.lineno), code, indent)


def insert_after(ctx: ModuleContext, stmt: ast.stmt, code: str, indent: Optional[str] = None) -> Optional[Edit]:
    """The same, on the lines after stmt."""
    if not owns_lines(ctx, stmt):
        return None
    indent = indentation(ctx, stmt) if indent is None else indent
    _, end = line_span(ctx, stmt)
    if not ctx.text[:end].endswith(("\n", "\r")):  # the file's last line, without a line break
        newline = ctx.locator.newline()
        return Edit.insert(end, newline + textwrap.indent(code, indent) + newline)
    return _inserted(ctx, end, code, indent)


def _inserted(ctx: ModuleContext, at: int, code: str, indent: str) -> Edit:
    newline = ctx.locator.newline()
    return reblock_edit(at, at, code + newline, "", indent, newline=newline)


def delete_statement(ctx: ModuleContext, stmt: ast.stmt, siblings: Sequence[ast.stmt]) -> Optional[Edit]:
    """Delete stmt's lines; an only statement of its block becomes ``pass``."""
    if not owns_lines(ctx, stmt) or has_multiline_string(stmt):
        return None
    if len(siblings) == 1:
        start, end = ctx.locator.node_range(stmt)
        return Edit(start, end, "pass")
    start, end = line_span(ctx, stmt)
    return Edit.delete(start, end)


def moved_before(ctx: ModuleContext, stmt: ast.stmt, anchor: ast.stmt, indent: Optional[str] = None) -> Optional[Edit]:
    """An insertion of stmt's lines before anchor's, at anchor's indentation (or ``indent``),
    re-blocked by LibCST when the fix is applied (ampfix/rewrite.py). Delete stmt separately."""
    if not owns_lines(ctx, stmt) or not owns_lines(ctx, anchor):
        return None
    at = ctx.locator.line_start(anchor.lineno)
    return _moved(ctx, stmt, at, indentation(ctx, anchor) if indent is None else indent)


def moved_after(ctx: ModuleContext, stmt: ast.stmt, anchor: ast.stmt, indent: Optional[str] = None) -> Optional[Edit]:
    """The same, after anchor's lines."""
    if not owns_lines(ctx, stmt) or not owns_lines(ctx, anchor):
        return None
    _, at = line_span(ctx, anchor)
    if not ctx.text[:at].endswith(("\n", "\r")):
        return None  # anchor ends the file without a line break
    return _moved(ctx, stmt, at, indentation(ctx, anchor) if indent is None else indent)


def _moved(ctx: ModuleContext, stmt: ast.stmt, at: int, indent: str) -> Edit:
    start, end = line_span(ctx, stmt)
    return reblock_edit(at, at, ctx.text[start:end], indentation(ctx, stmt), indent, newline=ctx.locator.newline())


def reblocked(ctx: ModuleContext, statements: Sequence[ast.stmt], indent: str, header: str = "", unit: str = "    ") -> Optional[Edit]:
    """Replace the lines of ``statements`` (contiguous siblings) with themselves at ``indent``,
    under ``with <header>:`` if given: LibCST moves them, nested blocks, comments and strings
    intact, when the fix is applied."""
    if any(not owns_lines(ctx, s) for s in statements):
        return None
    start, end = line_span(ctx, statements[0], statements[-1])
    old = indentation(ctx, statements[0])
    return reblock_edit(start, end, ctx.text[start:end], old, indent, header, unit, ctx.locator.newline())


def has_multiline_string(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Constant, ast.JoinedStr)) and getattr(sub, "end_lineno", sub.lineno) != sub.lineno:
            if isinstance(sub, ast.JoinedStr) or isinstance(sub.value, (str, bytes)):
                return True
    return False


def receiver_range(ctx: ModuleContext, call: ast.Call) -> tuple[int, int]:
    """The source range of ``x`` in ``x.method(...)``, with its parentheses when it has them
    (``(loss * s).backward()``), so that a replacement can drop or keep them."""
    start, end = ctx.locator.node_range(call.func.value)
    if ctx.text[start - 1 : start] == "(" and ctx.text[end : end + 1] == ")":
        return start - 1, end + 1
    return start, end


def parent_body(ctx: ModuleContext, stmt: ast.stmt) -> Optional[list]:
    """The statement list that holds stmt."""
    parent = ctx.semantic.parent(stmt)
    if parent is None:
        return None
    for field in ("body", "orelse", "finalbody"):
        body = getattr(parent, field, None)
        if isinstance(body, list) and stmt in body:
            return body
    return None
