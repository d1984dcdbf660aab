"""Inline suppressions.

- ``# noqa`` (all codes) or ``# noqa: AMP201, AMP301`` on the reported line;
- ``# ampfix: ignore[AMP201]`` on the reported line;
- ``# ampfix: noqa`` (all codes) or ``# ampfix: noqa: AMP101`` anywhere: the whole file.

Codes of other tools (``# noqa: E501``) are not ours and are left alone; an ``AMP`` code that does
not exist is reported as AMP002, because a typo there silently suppresses nothing.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from typing import Optional

from ampfix.source import Locator

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?", re.I)
_IGNORE = re.compile(r"#\s*ampfix:\s*ignore\[(?P<codes>[^\]]*)\]", re.I)
_FILE = re.compile(r"#\s*ampfix:\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?", re.I)
_CODE = re.compile(r"[A-Za-z]+[0-9]+")
_ANY_DIRECTIVE = re.compile(r"noqa|ampfix", re.I)


@dataclass
class InvalidCode:
    code: str
    start: int
    end: int


@dataclass
class Suppressions:
    file_all: bool = False
    file_codes: set[str] = field(default_factory=set)
    lines: dict[int, Optional[set[str]]] = field(default_factory=dict)  # None = every code
    invalid: list[InvalidCode] = field(default_factory=list)

    def suppresses(self, code: str, rows: tuple[int, ...]) -> bool:
        if self.file_all or code in self.file_codes:
            return True
        for row in rows:
            if row in self.lines:
                codes = self.lines[row]
                if codes is None or code in codes:
                    return True
        return False


def parse_suppressions(text: str, locator: Locator, known: set[str], tree=None, string_rows=None) -> Suppressions:
    result = Suppressions()
    if not _ANY_DIRECTIVE.search(text):
        return result
    for row, col, comment in _comments(text, locator, tree, string_rows):
        offset = locator.line_start(row) + col
        file_match = _FILE.search(comment)
        if file_match:
            codes = _codes(file_match, comment, offset, known, result)
            if codes is None:
                result.file_all = True
            else:
                result.file_codes |= codes
            continue
        for pattern in (_NOQA, _IGNORE):
            for match in pattern.finditer(comment):
                codes = _codes(match, comment, offset, known, result)
                if codes is None:
                    result.lines[row] = None
                elif result.lines.get(row, set()) is not None:
                    result.lines[row] = result.lines.get(row, set()) | codes
    return result


def _codes(match, comment: str, offset: int, known: set[str], result: Suppressions):
    raw = match.group("codes")
    if raw is None:
        return None
    codes = set()
    base = match.start("codes")
    for code_match in _CODE.finditer(raw):
        code = code_match.group(0).upper()
        if not code.startswith("AMP"):
            continue  # another tool's code
        if code not in known:
            start = offset + base + code_match.start()
            result.invalid.append(InvalidCode(code, start, start + len(code)))
            continue
        codes.add(code)
    return codes


def may_hold_directive(text: str) -> bool:
    """Whether ``text`` mentions ``noqa`` or ``ampfix`` at all (cheaper than the pattern)."""
    lowered = text.lower()
    return "noqa" in lowered or "ampfix" in lowered


def suppression_rows(text: str, locator: Locator) -> set[int]:
    """The rows that mention ``noqa`` or ``ampfix``: the only ones that may hold a directive."""
    return {locator.position(m.start()).row for m in _ANY_DIRECTIVE.finditer(text)}


def strings_on_rows(tree, rows: set[int]) -> set[int]:
    """The rows of the string literals of ``tree`` that touch one of ``rows``."""
    found: set[int] = set()
    if not rows:
        return found
    first = min(rows)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Constant, ast.JoinedStr)) and isinstance(getattr(node, "value", ""), (str, bytes)):
            if node.lineno in rows or node.end_lineno in rows or (node.lineno < first <= node.end_lineno):
                found.update(range(node.lineno, node.end_lineno + 1))
    return found


def _comments(text: str, locator: Locator, tree=None, string_rows=None):
    """(row, column, text) of the comments that may hold a directive.

    With a syntax tree (or the rows of its strings, from a file parsed in parts), only lines
    mentioning ``noqa``/``ampfix`` are looked at, and a ``#`` on a line that no string literal
    touches is a comment (cheap). Otherwise the file is tokenized.
    """
    if tree is not None or string_rows is not None:
        rows = suppression_rows(text, locator)
        if string_rows is None:
            string_rows = strings_on_rows(tree, rows)
        if not rows & string_rows:
            found = []
            for row in sorted(rows):
                line = locator.line_text(row)
                index = line.find("#")
                if index >= 0:
                    found.append((row, index, line[index:]))
            return found
    return _tokenized_comments(text)


def _tokenized_comments(text: str):
    """(row, column, text) of every comment; falls back to a line scan if tokenizing fails."""
    try:
        return [
            (tok.start[0], tok.start[1], tok.string)
            for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type == tokenize.COMMENT
        ]
    except (tokenize.TokenError, SyntaxError):
        locator = Locator(text)
        found = []
        for row in range(1, len(locator.line_starts) + 1):
            line = locator.line_text(row)
            index = line.find("#")
            if index >= 0:
                found.append((row, index, line[index:]))
        return found
