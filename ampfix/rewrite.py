"""Statement-level rewrites: wrapping statements in ``with``, moving them to another block
level (out of a ``with``, into or out of a gate).

A rule describes such a rewrite when it checks a file (``Edit.rewrite``: the kind and its
arguments, the statements' source among them), and the new text is built only when the fix is
validated, applied or shown in full (``resolve``).

The new text is what LibCST prints for the statements parsed as a block and printed in their
new place, so the indentation of nested blocks, comments and blank lines are kept by
construction; what LibCST keeps verbatim inside a statement (a line continued after ``\\``) is
moved by the same indentation, and the content of a string is never touched. Where the lines
alone say what that is (nearly always: every move ``check`` built on the 302 repositories of the
ecosystem), it is computed from them with ``tokenize`` and LibCST is not imported (its import
is ~0.15 s, more than the analysis of most files); tests hold the two to the same output.
"""

from __future__ import annotations

from typing import Optional

from ampfix.diagnostics import Diagnostic, Edit, Fix
from ampfix.imports import DROP_IMPORTS, drop_imports

REBLOCK = "reblock"


class RewriteError(Exception):
    """LibCST could not rewrite the statements: the fix is not applied."""


def reblock_edit(start: int, end: int, statements: str, old_indent: str, new_indent: str,
                 header: str = "", unit: str = "    ", newline: str = "\n") -> Edit:
    """An edit replacing [start, end) (or inserting at start, when start == end) with
    ``statements`` (whole lines at ``old_indent``) re-blocked at ``new_indent``, under
    ``with <header>:`` when a header is given (its body one ``unit`` deeper)."""
    return Edit(start, end, "", (REBLOCK, statements, old_indent, new_indent, header, unit, newline))


def resolve(edit: Edit) -> Edit:
    """The edit with its content built (an edit without a rewrite is returned as it is)."""
    if not edit.rewrite:
        return edit
    kind, *args = edit.rewrite
    if kind == DROP_IMPORTS:
        try:
            return Edit(edit.start, edit.end, drop_imports(*args))
        except ValueError as exc:
            raise RewriteError(str(exc)) from None
    if kind != REBLOCK:
        raise RewriteError(f"unknown rewrite {kind!r}")
    return Edit(edit.start, edit.end, reblock(*args))


def resolve_fix(fix: Fix) -> Fix:
    if not any(e.rewrite for e in fix.edits):
        return fix
    return Fix(fix.message, tuple(resolve(e) for e in fix.edits), fix.applicability, fix.orphaned_imports)


def resolve_diagnostics(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Build the content of every fix (for output that shows it: JSON, SARIF, an editor); a fix
    that cannot be built is dropped, with the reason."""
    for diag in diagnostics:
        if diag.fix is not None:
            try:
                diag.fix = resolve_fix(diag.fix)
            except RewriteError as exc:
                diag.fix, diag.no_fix_reason, diag.edit_locations = None, f"the fix could not be built ({exc})", ()
    return diagnostics


def reblock(statements: str, old_indent: str, new_indent: str, header: str = "", unit: str = "    ",
            newline: str = "\n") -> str:
    """``statements`` moved from ``old_indent`` to ``new_indent`` (under ``with header:``). Where
    the lines alone say how (``_reblocked_lines``), without LibCST, whose import alone is ~0.15 s
    of every ``check`` that validates such a fix; else, or where in doubt, by LibCST."""
    moved = _reblocked_lines(statements, old_indent, new_indent, header, unit, newline)
    return moved if moved is not None else _reblock_with_libcst(statements, old_indent, new_indent, header, unit, newline)


def _reblocked_lines(statements: str, old_indent: str, new_indent: str, header: str, unit: str,
                     newline: str) -> Optional[str]:
    """What LibCST prints for the same move, computed line by line: each line that begins with
    ``old_indent`` begins with the new indentation instead (a statement, a nested block, a comment,
    a line continued in brackets or after a backslash), other lines stay as they are, and so do
    the lines inside a string that spans lines. Under a ``with``, the comments and blank lines
    above the first statement stay above it, at the ``with``'s level. None where the text is not
    plainly one block of statements (it does not tokenize, a line is less indented than the
    block, a comment follows the last statement): LibCST decides those."""
    import io
    import tokenize

    if not statements.endswith(("\n", "\r")):
        statements += newline
    lines = statements.splitlines(keepends=True)
    prefix = f"if True:{newline}" if old_indent else ""
    in_string: set[int] = set()  # 0-based rows of lines that continue a string begun above
    code_rows: list[int] = []
    fstrings: list[int] = []  # the rows where the f-strings open (Python 3.12 tokenizes their parts)
    try:
        for token in tokenize.generate_tokens(io.StringIO(prefix + statements).readline):
            start, end = token.start[0] - 1 - bool(prefix), token.end[0] - 1 - bool(prefix)
            if token.type == tokenize.STRING:
                in_string.update(range(start + 1, end + 1))
            elif token.type == getattr(tokenize, "FSTRING_START", -1):
                fstrings.append(start)
            elif token.type == getattr(tokenize, "FSTRING_END", -1) and fstrings:
                in_string.update(range(fstrings.pop() + 1, end + 1))
            if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                  tokenize.DEDENT, tokenize.ENDMARKER) and start >= 0:
                code_rows.append(start)
    except (tokenize.TokenError, SyntaxError):
        return None
    if not code_rows:
        return None
    first, last = min(code_rows), max(code_rows)
    for row, line in enumerate(lines):
        if row in in_string or not line.strip():
            continue
        if not line.startswith(old_indent) or (row < first and not line.lstrip().startswith("#")):
            return None
        if row > last and line.lstrip().startswith("#"):
            return None  # a comment after the last statement: LibCST keeps it in the block's footer
    if old_indent and lines[first][len(old_indent):len(old_indent) + 1] in (" ", "\t"):
        return None  # the first statement is indented deeper than the block
    inner = new_indent + unit if header else new_indent
    out = []
    for row, line in enumerate(lines):
        indent = new_indent if header and row < first else inner
        if row == first and header:
            out.append(f"{new_indent}with {header}:{newline}")
        # a line at the block's level, blanks only included; at the top level every line is,
        # an empty one too (LibCST prints it at the new level)
        if row not in in_string and line.startswith(old_indent) and (line.rstrip("\r\n") or not old_indent):
            line = indent + line[len(old_indent):]
        out.append(line)
    return "".join(out)


def _reblock_with_libcst(statements: str, old_indent: str, new_indent: str, header: str = "", unit: str = "    ",
                         newline: str = "\n") -> str:
    import libcst as cst  # only fixing needs it (~0.2 s to import)

    try:
        module, body = _parse_block(statements, old_indent, newline)
        inner = new_indent + unit if header else new_indent
        body = [stmt.visit(_ShiftContinuations(old_indent, inner)) for stmt in body]
        if header:
            with_node = cst.parse_statement(f"with {header}:{newline}{unit}pass{newline}", config=module.config_for_parsing)
            leading = body[0].leading_lines  # comments above the first statement stay above the with
            body[0] = body[0].with_changes(leading_lines=())
            body = [with_node.with_changes(body=with_node.body.with_changes(body=body, indent=unit), leading_lines=leading)]
        return _print_block(module, body, new_indent, newline)
    except cst.ParserSyntaxError as exc:
        raise RewriteError(f"LibCST cannot parse the statements: {exc.message}") from None


def _parse_block(statements: str, indent: str, newline: str):
    """(module, statements) of whole lines of statements at ``indent``, parsed as a block."""
    import libcst as cst

    if not statements.endswith(("\n", "\r")):
        statements += newline
    if not indent:
        module = cst.parse_module(statements)
        return module, list(module.body)
    module = cst.parse_module(f"if True:{newline}{statements}")
    block = module.body[0].body
    if not isinstance(block, cst.IndentedBlock) or (block.indent or module.default_indent) != indent:
        raise cst.ParserSyntaxError("the statements are not one block", lines=[], raw_line=1, raw_column=0)
    return module, list(block.body)


def _print_block(module, body: list, indent: str, newline: str) -> str:
    import libcst as cst

    if not indent:
        return module.with_changes(body=body, header=(), footer=()).code
    shim = cst.If(test=cst.Name("True"), body=cst.IndentedBlock(body=body, indent=indent))
    code = module.with_changes(body=[shim], header=(), footer=()).code
    return code[code.index(newline) + len(newline):]  # without the `if True:` line


def _shifted(whitespace: str, old: str, new: str) -> str:
    """The indentation of a continued line moved from ``old`` to ``new`` (a line indented less
    than the block, which only brackets allow, stays where it is)."""
    head, sep, line = whitespace.rpartition("\n")
    if not sep or not line.startswith(old):
        return whitespace
    return head + sep + new + line[len(old):]


def _ShiftContinuations(old: str, new: str):
    import libcst as cst

    class Shift(cst.CSTTransformer):
        """Lines continued after a ``\\`` move with the statement: LibCST keeps their whitespace
        verbatim (a line continued inside brackets it already prints relative to the block)."""

        def leave_SimpleWhitespace(self, original, updated):
            if "\\" in updated.value and "\n" in updated.value:  # a `\` continuation
                return updated.with_changes(value=_shifted(updated.value, old, new))
            return updated

    return Shift()
