"""Very large sources parsed in parts, so that memory stays bounded.

CPython's ``ast`` holds about 150 bytes per character of source: a 12 MB generated file is a
1.8 GB tree (even ``compile`` peaks at 1.2 GB). A source above ``PART_THRESHOLD`` characters is
therefore cut into runs of whole top-level statements of about ``PART_SIZE`` characters, each
parsed (and analysed) alone, then dropped.

A cut is made only before a line that starts at column 0 with code (not a comment, a closing
bracket or a clause such as ``else:``), and the piece before it must parse: a piece that ends
inside a string, a bracket, a decorator or after a ``\\`` does not, so the cut moves on to a later
line. A piece that parses on its own and ends at such a line ends a top-level statement, so the
pieces are exactly the file's top-level statements, grouped; the whole parses when every piece does.

For analysis (``with_imports=True``) each piece is preceded by the top-level ``import`` statements
of the pieces before it (``head``), so the names they bind mean the same; everything else that
another piece defines is unknown to this one, and the rules are silent where they would need it.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass
from typing import Iterator

PART_THRESHOLD = 2_000_000  # characters: only generated code is larger
PART_SIZE = 250_000

# A line that may begin a top-level statement: code at column 0, not a clause of a compound one.
_CUT = re.compile(r"\n(?=[^\s#)\]}])(?!(?:else|elif|except|finally)\b)")


@dataclass
class Part:
    start: int  # offsets of the piece in the whole text
    end: int
    head: str  # import statements of earlier pieces, prepended to the piece ("" without imports)
    tree: ast.Module  # the tree of ``head + piece``
    first_row: int  # the whole text's row of the piece's first line

    @property
    def head_rows(self) -> int:
        return self.head.count("\n")

    def text(self, whole: str) -> str:
        return self.head + whole[self.start:self.end]

    def to_whole(self, offset: int) -> int:
        """The whole text's offset of an offset into ``head + piece`` (which must be past the head)."""
        return offset - len(self.head) + self.start


def is_large(text: str) -> bool:
    return len(text) > PART_THRESHOLD


def top_level_parts(text: str, path: str = "<unknown>", with_imports: bool = False, size: int = 0) -> Iterator[Part]:
    """The pieces of ``text`` in order, of about ``size`` characters (``PART_SIZE``). Raises
    SyntaxError (with the whole text's line number) where the text does not parse."""
    size = size or PART_SIZE
    start, row, imports = 0, 1, []
    while start < len(text):
        head = "".join(imports) if with_imports else ""
        end = _cut_after(text, start + size)
        tries = 0
        while True:
            try:
                tree = _parse(head + text[start:end], path)
                break
            except SyntaxError as exc:
                if end == len(text):
                    if exc.lineno is not None:
                        exc.lineno += row - 1 - head.count("\n")
                        if exc.end_lineno is not None:
                            exc.end_lineno += row - 1 - head.count("\n")
                    raise
                tries += 1
                # the next line that may cut, then twice as long each time: linear at worst
                end = _cut_after(text, end if tries < 4 else end + (end - start))
        part = Part(start, end, head, tree, row)
        if with_imports:
            imports.extend(_new_imports(part, seen=set(imports)))
        del tree
        yield part
        del part  # the consumer decides how long a piece's tree lives
        row += text.count("\n", start, end)
        start = end


def _cut_after(text: str, offset: int) -> int:
    if offset >= len(text):
        return len(text)
    match = _CUT.search(text, offset)
    return match.end() if match else len(text)


def _parse(text: str, path: str) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text, filename=path)


def _new_imports(part: Part, seen: set) -> list[str]:
    """The top-level import statements of the piece itself (not of its head), as text."""
    found = []
    for node in part.tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno > part.head_rows:
            statement = ast.unparse(node) + "\n"
            if statement not in seen:
                seen.add(statement)
                found.append(statement)
    return found
