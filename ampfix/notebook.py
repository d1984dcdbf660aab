"""Jupyter notebooks: checked cell by cell as one program (imports in cell 1 resolve in cell 5),
reported as ``nb.ipynb:cell 3:2:5``, fixed in code cells only, written back with the notebook's
JSON layout, metadata and outputs as they were.

IPython syntax is masked, never a parse error: ``%time f()``, ``!pip install x``, ``x = !ls``,
``obj?`` become ``pass`` placeholders for the analysis and are restored on write; cells that start
with a cell magic (``%%bash``) are left out altogether.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Optional

from ampfix.diagnostics import Diagnostic, Position
from ampfix.source import SourceError

_BOUNDARY = "# ampfix-cell-boundary {index}"
_BOUNDARY_LINE = re.compile(r"^# ampfix-cell-boundary (\d+)\n", re.M)
_LINE_MAGIC = re.compile(r"^\s*[%!?]")  # %time f(), !pip install x, ?obj
_ASSIGNED_MAGIC = re.compile(r"^[\w\s,.\[\]]*=\s*[!%]")  # files = !ls, t = %timeit -o f()
_PLACEHOLDER = "pass  # ampfix-magic-{index}"
_PLACEHOLDER_LINE = re.compile(r"^(\s*)pass  # ampfix-magic-(\d+)$")


@dataclass
class Notebook:
    data: dict
    text: str  # the original JSON text
    cells: list[int] = field(default_factory=list)  # indexes of the code cells in the program
    magics: dict[int, str] = field(default_factory=dict)
    program: str = ""
    cell_starts: list[int] = field(default_factory=list)  # first program row of each included cell

    @classmethod
    def parse(cls, text: str) -> "Notebook":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SourceError(f"not a valid notebook (JSON error: {exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
            raise SourceError("not a valid notebook (no cells)")
        notebook = cls(data, text)
        notebook._build_program()
        return notebook

    @classmethod
    def from_cells(cls, cells: list[tuple[str, str]]) -> "Notebook":
        """A notebook of (cell type, source) pairs: an editor's open notebook, which has no JSON."""
        notebook = cls({"cells": [{"cell_type": kind, "source": text} for kind, text in cells]}, "")
        notebook._build_program()
        return notebook

    def _build_program(self) -> None:
        parts, row = [], 1
        for index, cell in enumerate(self.data["cells"]):
            if cell.get("cell_type") != "code":
                continue
            source = _cell_text(cell)
            if source.lstrip().startswith("%%"):
                continue  # a cell magic: the whole cell is another language
            masked = self._mask(source)
            if not masked.endswith("\n"):
                masked += "\n"
            self.cells.append(index)
            parts.append(_BOUNDARY.format(index=index) + "\n")
            row += 1
            self.cell_starts.append(row)
            parts.append(masked)
            row += masked.count("\n")
        self.program = "".join(parts)

    def _mask(self, source: str) -> str:
        lines = source.split("\n")
        for i, line in enumerate(lines):
            if _is_ipython(line):
                key = len(self.magics)
                self.magics[key] = line
                indent = line[: len(line) - len(line.lstrip())]
                lines[i] = indent + _PLACEHOLDER.format(index=key)
        return "\n".join(lines)

    def locate(self, diag: Diagnostic) -> None:
        """Program rows -> (cell number as Jupyter shows it, row within the cell)."""
        cell, start = self.cell_of(diag.location.row)
        if cell is None:
            return
        diag.cell = cell
        diag.location = Position(diag.location.row - start + 1, diag.location.column)
        diag.end_location = Position(max(1, diag.end_location.row - start + 1), diag.end_location.column)
        # evidence and edits may lie in another cell (the scaler created in cell 2, clipped in
        # cell 4; an import edited in cell 1): each is placed in its own cell
        placed = [self._in_own_cell(a, b) for a, b in diag.edit_locations]
        diag.edit_cells = tuple(number for number, _ in placed)
        diag.edit_locations = tuple(span for _, span in placed)
        placed = [self._in_own_cell(a, b) for a, b in diag.evidence_locations]
        diag.evidence_cells = tuple(number for number, _ in placed)
        diag.evidence_locations = tuple(span for _, span in placed)

    def _in_own_cell(self, a: Position, b: Position):
        number, first = self.cell_of(a.row)
        if number is None:
            return None, (a, b)
        return number, (Position(a.row - first + 1, a.column), Position(max(1, b.row - first + 1), b.column))

    def cell_of(self, row: int):
        """(cell number as Jupyter shows it, the program row of its first line) of a program row."""
        for position, start in reversed(list(enumerate(self.cell_starts))):
            if row >= start:
                return self.cells[position] + 1, start
        return None, 1

    def cell_sources(self, program: str) -> dict[int, str]:
        """The code cells' sources (by index in the notebook) in a program made from this one
        (after fixes), magics restored."""
        pieces = _BOUNDARY_LINE.split(program)
        # pieces: ["", index, text, index, text, ...]
        sources = {}
        for index, text in zip(map(int, pieces[1::2]), pieces[2::2]):
            text = self._unmask(text)
            if not _cell_text(self.data["cells"][index]).endswith("\n") and text.endswith("\n"):
                text = text[:-1]
            sources[index] = text
        return sources

    def render(self, program: str) -> str:
        """The notebook JSON with the fixed program's cells put back, layout preserved."""
        for index, text in self.cell_sources(program).items():
            cell = self.data["cells"][index]
            if text != _cell_text(cell):
                cell["source"] = _as_source(text, cell.get("source"))
        return _dump_like(self.data, self.text)

    def _unmask(self, text: str) -> str:
        out = []
        for line in text.split("\n"):
            match = _PLACEHOLDER_LINE.match(line)
            out.append(self.magics[int(match.group(2))] if match else line)
        return "\n".join(out)


def _is_ipython(line: str) -> bool:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return False
    if _LINE_MAGIC.match(line) or _ASSIGNED_MAGIC.match(line):
        return True
    return stripped.endswith("?") and "#" not in stripped and not stripped.endswith(("'?", '"?'))  # obj?


def _cell_text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _as_source(text: str, like) -> object:
    if isinstance(like, str):
        return text
    lines = text.splitlines(keepends=True)
    return lines


def _dump_like(data: dict, original: str) -> str:
    """json.dumps with the original's indentation, key order and trailing newline."""
    indent: Optional[int] = None
    match = re.search(r"\n( +)\"", original)
    if match:
        indent = len(match.group(1))
    ascii_only = "\\u" in original and not re.search(r"[^\x00-\x7f]", original)
    text = json.dumps(data, indent=indent, ensure_ascii=ascii_only)
    if original.endswith("\n"):
        text += "\n"
    return text


def cell_diff(path: str, before: str, after: str) -> str:
    """A unified diff per changed code cell (``a/nb.ipynb:cell 3``), as ruff shows a notebook's
    fixes: the cells' code, not the JSON around it."""
    import difflib

    old_cells = json.loads(before).get("cells", [])
    new_cells = json.loads(after).get("cells", [])
    out = []
    for index, (old, new) in enumerate(zip(old_cells, new_cells)):
        if old.get("cell_type") != "code":
            continue
        a, b = _cell_text(old), _cell_text(new)
        if a == b:
            continue
        lines = difflib.unified_diff(
            a.splitlines(keepends=True), b.splitlines(keepends=True),
            fromfile=f"a/{path}:cell {index + 1}", tofile=f"b/{path}:cell {index + 1}",
        )
        out.append("".join(line if line.endswith("\n") else line + "\n" for line in lines))
    return "".join(out)
