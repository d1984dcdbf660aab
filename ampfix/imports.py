"""Removing the imports a fix left unused, and nothing else.

Only names that a fix declared as possibly orphaned are candidates, and a candidate is removed
only when no ``Name`` anywhere in the module (nor ``__all__``) still uses it: an import that is
still used is never removed. Statements are rewritten with LibCST on the statement's own source,
so comments, parentheses and layout of the remaining names survive.
"""

from __future__ import annotations

import ast
import warnings
from typing import Iterable, Optional

from ampfix.diagnostics import Edit
from ampfix.parts import is_large, top_level_parts
from ampfix.source import Locator


def used_names(tree: ast.Module) -> set[str]:
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store)}
    return names | _all_names(tree)


def _all_names(tree: ast.Module) -> set[str]:
    """The names ``__all__`` lists (exported: an import they name is used)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AugAssign)) and isinstance(node.value, (ast.List, ast.Tuple)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                names.update(
                    elt.value for elt in node.value.elts if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
                )
    return names


def remove_unused_imports(text: str, candidates: Iterable[str]) -> str:
    candidates = set(candidates)
    if not candidates:
        return text
    if is_large(text):
        return _remove_unused_in_parts(text, candidates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the code's own SyntaxWarnings are not ours to print
        tree = ast.parse(text)
    unused = candidates - used_names(tree)
    return _apply_edits(text, _removal_edits(text, tree, unused)) if unused else text


def _remove_unused_in_parts(text: str, candidates: set[str]) -> str:
    """The same for a file parsed in parts (ampfix/parts.py): one pass for the names used, one
    for the statements to edit, one piece's tree alive at a time."""
    used: set[str] = set()
    for part in top_level_parts(text):
        used |= used_names(part.tree)
    unused = candidates - used
    if not unused:
        return text
    edits = []
    for part in top_level_parts(text):
        piece = text[part.start:part.end]
        edits += [Edit(e.start + part.start, e.end + part.start, e.content) for e in _removal_edits(piece, part.tree, unused)]
    return _apply_edits(text, edits)


def _removal_edits(text: str, tree: ast.Module, unused: set[str], locator: Optional[Locator] = None, lazy: bool = False) -> list[Edit]:
    locator = locator or Locator(text)
    edits = []
    for stmt, parent_body in _import_statements(tree):
        drop = {_bound_name(alias) for alias in stmt.names} & unused
        if drop:
            edit = _removal_edit(text, locator, stmt, drop, parent_body, lazy)
            if edit is not None:
                edits.append(edit)
    return edits


DROP_IMPORTS = "drop-imports"  # an Edit.rewrite kind: names dropped from an import statement


def carry_orphaned_imports(diagnostics, text: str, tree: ast.Module, locator: Locator) -> None:
    """Give each fix that alone leaves an import unused (every use of the name is in what the
    fix replaces) the edit that removes it: a fix applied on its own (an editor's quick fix, a
    JSON or SARIF edit) leaves no orphaned import behind, as ``--apply`` leaves none."""
    owners = [d for d in diagnostics if d.fix is not None and d.fix.orphaned_imports]
    if not owners:
        return
    import dataclasses

    names = set().union(*(d.fix.orphaned_imports for d in owners))
    uses: dict[str, list[tuple[int, int]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in names and not isinstance(node.ctx, ast.Store):
            uses.setdefault(node.id, []).append(locator.node_range(node))
    exported = _all_names(tree)
    for diag in owners:
        replaced = [(e.start, e.end) for e in diag.fix.edits if e.end > e.start]
        alone = {
            name for name in diag.fix.orphaned_imports
            if name in uses and name not in exported
            and all(any(a <= start and end <= b for a, b in replaced) for start, end in uses[name])
        }
        edits = _removal_edits(text, tree, alone, locator, lazy=True) if alone else []
        if edits and not any(e.start < b and a < e.end for e in edits for a, b in replaced):
            diag.fix = dataclasses.replace(diag.fix, edits=(*diag.fix.edits, *edits))


def drop_imports(statement: str, names: str) -> str:
    """The import ``statement`` without the comma-separated ``names`` (LibCST: comments and
    layout of the other names kept)."""
    edit = _rewrite_statement(statement, 0, len(statement), set(names.split(",")))
    if edit is None:
        raise ValueError("LibCST cannot parse the import statement")
    return edit.content


def _apply_edits(text: str, edits: list[Edit]) -> str:
    pieces, last = [], 0
    for edit in sorted(edits, key=lambda e: e.start):
        pieces += [text[last:edit.start], edit.content]
        last = edit.end
    return "".join(pieces) + text[last:]


def _bound_name(alias: ast.alias) -> str:
    return alias.asname or alias.name.split(".", 1)[0]


def _import_statements(tree: ast.AST):
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody", "handlers"):
            body = getattr(node, field, None)
            if isinstance(body, list):
                for stmt in body:
                    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                        yield stmt, body


def _removal_edit(
    text: str, locator: Locator, stmt: ast.stmt, drop: set[str], parent_body: list, lazy: bool = False
) -> Optional[Edit]:
    start, end = locator.node_range(stmt)
    if all(_bound_name(alias) in drop for alias in stmt.names):
        if len(parent_body) == 1:
            return Edit(start, end, "pass")  # keep the block syntactically non-empty
        line_start = locator.line_start(stmt.lineno)
        line_end = locator.line_end(stmt.end_lineno)
        alone = not text[line_start:start].strip() and _only_comment(text[end:line_end])
        if alone:
            next_line = locator.line_starts[stmt.end_lineno] if stmt.end_lineno < len(locator.line_starts) else len(text)
            return Edit.delete(line_start, next_line)
        return Edit(start, end, "pass")
    if lazy:  # LibCST builds it when the fix is applied or shown (ampfix/rewrite.py)
        return Edit(start, end, "", (DROP_IMPORTS, text[start:end], ",".join(sorted(drop))))
    return _rewrite_statement(text[start:end], start, end, drop)


def _only_comment(rest: str) -> bool:
    rest = rest.strip()
    return not rest or rest.startswith("#")


def _drop_names_transformer(drop: set[str]):
    import libcst as cst  # imported on first use: only fixing runs need it (~0.2 s of start-up)

    class _DropNames(cst.CSTTransformer):
        def __init__(self):
            self.drop = drop
            self._parenthesized = False

        def _keep(self, names):
            kept = [a for a in names if _cst_bound_name(a) not in self.drop]
            if kept and kept[-1].comma is not cst.MaybeSentinel.DEFAULT:
                last = kept[-1]
                comma = last.comma
                # A trailing comma is only legal inside parentheses; keep its whitespace there.
                kept[-1] = last.with_changes(comma=cst.MaybeSentinel.DEFAULT if not self._parenthesized else comma)
            return kept

        def leave_Import(self, original, updated):
            self._parenthesized = False
            return updated.with_changes(names=self._keep(updated.names))

        def leave_ImportFrom(self, original, updated):
            self._parenthesized = updated.lpar is not None
            if isinstance(updated.names, cst.ImportStar):
                return updated
            return updated.with_changes(names=self._keep(updated.names))

    return _DropNames()


def _cst_bound_name(alias) -> str:
    import libcst as cst

    if alias.asname is not None:
        return alias.asname.name.value  # type: ignore[union-attr]
    node = alias.name
    while isinstance(node, cst.Attribute):
        node = node.value
    return node.value  # type: ignore[union-attr]


def _rewrite_statement(source: str, start: int, end: int, drop: set[str]) -> Optional[Edit]:
    import libcst as cst

    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return None
    new = module.visit(_drop_names_transformer(drop)).code
    return Edit(start, end, new)
