"""Statement-level edits for the loop rules: insert, delete, move and dedent whole statements.

All of them refuse (return None) rather than guess when a statement shares its line with
another one or contains a multi-line string whose content indentation would change.
"""

from __future__ import annotations

import ast
from typing import Optional, Sequence

from ampfix.context import ModuleContext
from ampfix.diagnostics import Edit


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
    if not owns_lines(ctx, stmt):
        return None
    indent = indentation(ctx, stmt) if indent is None else indent
    return Edit.insert(ctx.locator.line_start(stmt.lineno), indent + code + ctx.locator.newline())


def insert_after(ctx: ModuleContext, stmt: ast.stmt, code: str, indent: Optional[str] = None) -> Optional[Edit]:
    if not owns_lines(ctx, stmt):
        return None
    indent = indentation(ctx, stmt) if indent is None else indent
    _, end = line_span(ctx, stmt)
    newline = ctx.locator.newline()
    prefix = "" if ctx.text[:end].endswith(("\n", "\r")) else newline
    return Edit.insert(end, prefix + indent + code + newline)


def delete_statement(ctx: ModuleContext, stmt: ast.stmt, siblings: Sequence[ast.stmt]) -> Optional[Edit]:
    """Delete stmt's lines; an only statement of its block becomes ``pass``."""
    if not owns_lines(ctx, stmt) or has_multiline_string(stmt):
        return None
    if len(siblings) == 1:
        start, end = ctx.locator.node_range(stmt)
        return Edit(start, end, "pass")
    start, end = line_span(ctx, stmt)
    return Edit.delete(start, end)


def statement_text(ctx: ModuleContext, stmt: ast.stmt, new_indent: str) -> Optional[str]:
    """stmt's lines re-indented from its own indentation to new_indent (no final newline)."""
    if not owns_lines(ctx, stmt) or has_multiline_string(stmt):
        return None
    start, end = line_span(ctx, stmt)
    return reindent(ctx.text[start:end], indentation(ctx, stmt), new_indent).rstrip("\r\n")


def reindent(block: str, old: str, new: str) -> str:
    out = []
    for line in block.splitlines(keepends=True):
        if line.startswith(old):
            out.append(new + line[len(old):])
        elif not line.strip():
            out.append(line)
        else:
            out.append(new + line.lstrip(" \t"))
    return "".join(out)


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
