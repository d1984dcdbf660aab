"""Very large files are parsed and analysed in pieces of whole top-level statements
(ampfix/parts.py): the pieces are the file's own statements, and the findings are the same as
the whole file's, except where a piece would need what another defines (then: silent, or no fix);
the loop rules' findings stand where their top-level statement is closed over its piece."""

import ast
import textwrap

import pytest

import ampfix
from ampfix import parts
from ampfix.parts import top_level_parts

TRICKY = textwrap.dedent('''\
    """Module docstring.
    def not_a_function():
        pass
    """
    import torch
    items = [
    1,
    2,
    ]
    total = 1 + \\
    2


    @staticmethod
    def decorated():
        text = """
    class NotAClass:
    """
        return text
    if total:
        pass
    else:
        pass
    try:
        pass
    except Exception:
        pass
    finally:
        pass
    # a comment at column 0
    def last():
        return items
    ''')


def _statement_starts(text):
    """The offsets where the whole file's top-level statements begin (decorators included)."""
    lines = text.splitlines(keepends=True)
    offsets = [sum(len(line) for line in lines[:row]) for row in range(len(lines))]
    starts = set()
    for node in ast.parse(text).body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        starts.add(offsets[first - 1])
    return starts


def test_pieces_are_runs_of_whole_top_level_statements():
    pieces = list(top_level_parts(TRICKY, size=1))  # cut wherever a cut may be made
    assert "".join(TRICKY[p.start:p.end] for p in pieces) == TRICKY
    assert len(pieces) > 5
    assert {p.start for p in pieces} <= _statement_starts(TRICKY)
    for piece in pieces:
        ast.parse(TRICKY[piece.start:piece.end])  # each parses alone
    rows = [p.first_row for p in pieces]
    assert rows == [TRICKY.count("\n", 0, p.start) + 1 for p in pieces]


def test_a_syntax_error_is_reported_at_the_whole_files_line():
    text = "x = 1\n" * 300 + "def broken(:\n    pass\n" + "y = 2\n" * 50
    with pytest.raises(SyntaxError) as whole:
        ast.parse(text)
    with pytest.raises(SyntaxError) as in_parts:
        list(top_level_parts(text, size=40))
    assert in_parts.value.lineno == whole.value.lineno == 301
    assert in_parts.value.msg == whole.value.msg


def test_each_piece_sees_the_imports_before_it():
    text = "import torch\nfrom torch import nn as tnn\n" + "x = 1\n" * 100 + "import os\n" + "y = 2\n" * 100
    pieces = list(top_level_parts(text, with_imports=True, size=100))
    assert pieces[0].head == ""
    assert pieces[-1].head == "import torch\nfrom torch import nn as tnn\nimport os\n"
    last = pieces[-1]
    assert last.text(text).startswith(last.head) and last.text(text)[len(last.head):] == text[last.start:]


STEP = textwrap.dedent('''\
    def train_{n}(model, loader, optimizer):
        scaler = torch.cuda.amp.GradScaler(){noqa}
        for x, y in loader:
            with autocast():
                loss = model(x).sum()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
        note = "# noqa: AMP102 in a string, not a directive"


''')


def _program(count=12):
    steps = "".join(STEP.format(n=n, noqa="  # noqa: AMP102" if n % 3 == 0 else "") for n in range(count))
    return "import torch\nfrom torch.cuda.amp import autocast\n\n\n" + steps


def _shape(diagnostics):
    return [
        (d.code, d.location.row, d.location.column, d.end_location.row, d.message,
         d.fix and [(e.start, e.end, e.content) for e in d.fix.edits], [(n.start, n.message) for n in d.evidence])
        for d in diagnostics
    ]


@pytest.fixture
def in_parts(monkeypatch):
    """Any file counts as very large, cut into pieces of about 300 characters."""
    monkeypatch.setattr(parts, "PART_THRESHOLD", 0)
    monkeypatch.setattr(parts, "PART_SIZE", 300)


def test_findings_in_parts_equal_the_whole_files_loop_rules_included(monkeypatch):
    text = _program()
    whole = ampfix.check_source(text, "train.py")
    assert sum(d.code == "AMP102" for d in whole) == 8  # 4 of 12 suppressed, none by the string
    assert {d.code for d in whole} >= {"AMP101", "AMP204"}
    monkeypatch.setattr(parts, "PART_THRESHOLD", 0)
    monkeypatch.setattr(parts, "PART_SIZE", 300)
    assert len(list(top_level_parts(text))) > 5
    found = ampfix.check_source(text, "train.py")
    # each step function is closed over its piece: its loop findings are the whole file's
    assert _shape(found) == _shape(whole)
    assert all(d.fix is not None for d in found if d.code == "AMP101")


SHARED_SCALER = textwrap.dedent('''\
    import torch

    scaler = torch.amp.GradScaler("cuda")


    def update_scale():
        scaler.update()


    def train(model, loader, optimizer):
        for x, y in loader:
            with torch.autocast("cuda"):
                loss = model(x).sum()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            update_scale()
    ''') + "x = 1\n" * 60


@pytest.mark.parametrize("moved", ["the update", "the scaler"])
def test_a_loop_finding_that_needs_another_piece_is_withdrawn(monkeypatch, moved):
    """`scaler.step` whose `update()` is in a helper of another piece (or whose scaler is made
    in another piece): the whole file has no loop finding and the pieces guess none (each piece
    alone would report AMP204)."""
    text = SHARED_SCALER
    if moved == "the scaler":  # the step function's own update, the scaler in an earlier piece
        text = text.replace("            update_scale()\n", "            scaler.update()\n")
    assert not [d for d in ampfix.check_source(text, "train.py") if d.code.startswith(("AMP2", "AMP3", "AMP4", "AMP5"))]
    monkeypatch.setattr(parts, "PART_THRESHOLD", 0)
    monkeypatch.setattr(parts, "PART_SIZE", 60)
    pieces = list(top_level_parts(text))
    where = {needle: next(i for i, p in enumerate(pieces) if p.start <= text.index(needle) < p.end)
             for needle in ("scaler = torch", "def update_scale", "def train")}
    assert where["def train"] != where["def update_scale" if moved == "the update" else "scaler = torch"]
    assert not [d for d in ampfix.check_source(text, "train.py") if d.code.startswith(("AMP2", "AMP3", "AMP4", "AMP5"))]


def test_fixes_in_parts_equal_the_whole_files_where_offered(monkeypatch):
    text = _program(6).replace("from torch.cuda.amp import autocast\n", "").replace("with autocast():", "with torch.autocast('cuda'):")
    whole = ampfix.fix_source(text, "train.py")
    assert [d.code for d in whole.fixed] == ["AMP102"] * 4
    monkeypatch.setattr(parts, "PART_THRESHOLD", 0)
    monkeypatch.setattr(parts, "PART_SIZE", 300)
    result = ampfix.fix_source(text, "train.py")
    assert result.source == whole.source and len(result.fixed) == 4


def test_a_fix_that_would_edit_another_pieces_import_is_not_offered(in_parts):
    text = "from torch.cuda.amp import autocast\n" + "x = 1\n" * 80 + "def f(model, x):\n    with autocast():\n        return model(x)\n"
    diag, = [d for d in ampfix.check_source(text, "train.py") if d.code == "AMP101"]
    assert diag.location.row == 83 and diag.fix is None
    assert "analysed in parts" in diag.no_fix_reason


def test_unused_imports_left_by_fixes_are_removed_in_parts(in_parts):
    from ampfix.imports import remove_unused_imports

    text = "import os\nfrom torch.cuda.amp import GradScaler\n" + "x = 1\n" * 100 + "y = os.sep\n"
    assert remove_unused_imports(text, {"GradScaler", "os"}) == "import os\n" + "x = 1\n" * 100 + "y = os.sep\n"


def test_a_directive_inside_a_string_of_another_piece_suppresses_nothing(in_parts):
    text = ("import torch\n" + "x = 1\n" * 40 + "note = '# ampfix: noqa'\n" + "y = 2\n" * 40
            + "scaler = torch.cuda.amp.GradScaler()\n")
    piece_of = {text.index(needle): next(i for i, p in enumerate(top_level_parts(text)) if p.start <= text.index(needle) < p.end)
                for needle in ("'# ampfix: noqa'", "GradScaler")}
    assert len(set(piece_of.values())) == 2  # the string's piece has no finding of its own
    assert [d.code for d in ampfix.check_source(text, "train.py")] == ["AMP102"]
