"""The Python API and the fix engine: fixed point, safety, never writing broken code."""

import pytest

import ampfix
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.fixer import apply_fixes
from ampfix.runner import CHECK, FIX, Job, process_file
from ampfix.settings import Settings
from ampfix.source import Locator

OLD = "import torch\nscaler = torch.cuda.amp.GradScaler()\n"


def test_check_source_returns_positioned_diagnostics():
    diag, = ampfix.check_source(OLD, path="train.py")
    assert (diag.code, diag.filename, diag.location.row, diag.location.column) == ("AMP102", "train.py", 2, 10)
    assert diag.end_location.column == 35
    assert diag.fix.applicability is Applicability.SAFE


def test_fix_source_returns_fixed_source_and_applied_fixes():
    result = ampfix.fix_source(OLD, path="train.py")
    assert result.source == 'import torch\nscaler = torch.amp.GradScaler("cuda")\n'
    assert [d.code for d in result.fixed] == ["AMP102"] and result.remaining == []


def test_a_file_with_no_amp_tokens_is_returned_unchanged():
    source = "import os\n\n\ndef f():\n    return 1\n"
    assert ampfix.fix_source(source).source == source


def _diag(start, end, content, code="AMP101", safety=Applicability.SAFE):
    return Diagnostic(code, "x", "m", start, end, Fix("f", (Edit(start, end, content),), safety))


def test_overlapping_fixes_wait_for_the_next_pass():
    text, applied = apply_fixes("abcdef", [_diag(0, 3, "X"), _diag(2, 4, "Y")])
    assert text == "Xdef" and len(applied) == 1


def test_identical_edits_of_several_fixes_apply_once():
    shared = Edit.insert(0, "import torch\n")
    a = Diagnostic("AMP101", "x", "m", 5, 6, Fix("f", (Edit(5, 6, "A"), shared), Applicability.SAFE))
    b = Diagnostic("AMP101", "x", "m", 7, 8, Fix("f", (Edit(7, 8, "B"), shared), Applicability.SAFE))
    text, applied = apply_fixes("01234567890", [a, b])
    assert text == "import torch\n01234A6B890" and len(applied) == 2


def test_unsafe_fixes_need_opt_in(monkeypatch):
    from ampfix.rules import RULES

    rule = RULES["AMP102"]
    original = rule.check

    def unsafe_check(ctx):
        for diag in original(ctx):
            diag.fix = Fix(diag.fix.message, diag.fix.edits, Applicability.UNSAFE)
            yield diag

    monkeypatch.setattr(rule, "check", unsafe_check)
    assert ampfix.fix_source(OLD).source == OLD
    assert ampfix.fix_source(OLD, unsafe_fixes=True).source != OLD
    assert ampfix.fix_source(OLD, settings=Settings(unsafe_fixes=True)).source != OLD


def test_a_fix_that_breaks_the_code_is_never_applied(monkeypatch, tmp_path):
    from ampfix.rules import RULES

    rule = RULES["AMP102"]
    original = rule.check

    def broken_check(ctx):
        for diag in original(ctx):
            diag.fix = Fix("break", (Edit(diag.start, diag.end, "torch.amp.GradScaler(("),), Applicability.SAFE)
            yield diag

    monkeypatch.setattr(rule, "check", broken_check)
    # the validator tries every fix before offering it: this one is withdrawn, with the reason
    result = ampfix.fix_source(OLD)
    assert result.source == OLD and not result.fixed
    [diag] = [d for d in result.remaining if d.code == "AMP102"]
    assert diag.fix is None and diag.fix_refused == "break: not offered, its result would not parse"
    [shown] = [d for d in ampfix.check_source(OLD) if d.code == "AMP102"]
    assert shown.fix is None and "would not parse" in shown.fix_refused  # check offers no [*] either
    path = tmp_path / "t.py"
    path.write_text(OLD)
    result = process_file(str(path), Job(FIX, Settings(), False))
    assert result.error is None and path.read_text() == OLD


@pytest.fixture
def amp101_crashes(monkeypatch, tmp_path):
    """AMP101 raises; the file also has an AMP102 finding. Returns the file's path."""
    from ampfix.rules import RULES

    def crash(ctx):
        raise ValueError("boom")
        yield

    monkeypatch.setattr(RULES["AMP101"], "check", crash)
    path = tmp_path / "t.py"
    path.write_text(OLD + "with torch.cuda.amp.autocast():\n    pass\n")
    return path


def test_a_crashing_rule_is_an_error_naming_the_rule_and_the_other_findings_stay(amp101_crashes):
    path = amp101_crashes
    result = process_file(str(path), Job(CHECK, Settings(), False))
    assert result.error == "rule AMP101 crashed (ValueError: boom); its findings are missing"
    assert [d.code for d in result.diagnostics] == ["AMP102"]  # the other rule's finding is kept
    fixed = process_file(str(path), Job(FIX, Settings(), False))
    assert fixed.error and not fixed.fixed and "torch.cuda.amp.GradScaler" in path.read_text()  # nothing written


def test_a_crashing_rule_exits_2_and_prints_the_other_findings(amp101_crashes):
    from click.testing import CliRunner

    from ampfix.cli import cli

    path = amp101_crashes
    result = CliRunner().invoke(cli, ["check", "--no-cache", "--jobs", "1", "--output-format", "concise", str(path)])
    assert result.exit_code == 2
    assert "AMP102" in result.output and f"{path}: rule AMP101 crashed" in result.output
    assert "All checks passed" not in result.output


def test_unreadable_file_is_an_error(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open

    def deny(path, *args, **kwargs):
        if str(path).endswith("secret.py"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    result = process_file(str(tmp_path / "secret.py"), Job(CHECK, Settings(), False))
    assert result.error == "cannot read file: Permission denied"


def test_locator_agrees_with_python_on_line_breaks():
    text = "a = 1\r\nb = 2\rc = 3\x0c\nd = '\u2028'\n"
    loc = Locator(text)
    assert [loc.line_text(r) for r in (1, 2, 3, 4)] == ["a = 1", "b = 2", "c = 3\x0c", "d = '\u2028'"]
    import ast

    tree = ast.parse(text)
    assert [n.lineno for n in tree.body] == [1, 2, 3, 4]


def test_deeply_nested_code_does_not_crash():
    source = "import torch\nx = " + "(" * 300 + "1" + ")" * 300 + "\n"
    codes = [d.code for d in ampfix.check_source(source)]
    assert codes in ([], ["AMP001"])


def test_syntax_error_diagnostic_names_the_parser_message():
    source = "import torch\nwith torch.autocast('cuda'):\n    loss = model(x\nloss.backward()\noptimizer.step()\n"
    diag, = ampfix.check_source(source, "broken.py")
    assert diag.code == "AMP001" and diag.message.startswith("SyntaxError:")
    assert diag.location.row >= 2


def test_syntax_errors_in_files_without_amp_code_are_left_to_other_linters():
    assert ampfix.check_source("x = (\n", "broken.py") == []


def _conflicts_by_comparing_with_every_edit(edit, accepted):
    """The definition the fixer's indexed search must agree with."""
    for other in accepted:
        if edit == other:
            continue
        if edit.start < other.end and other.start < edit.end:
            return True
        if edit.start == other.start and (edit.start == edit.end or other.start == other.end):
            return True
    return False


def test_the_indexed_conflict_search_agrees_with_comparing_every_edit():
    import random

    from ampfix.fixer import _Accepted, _self_overlapping

    rng = random.Random(0)
    for _ in range(300):
        accepted, plain = _Accepted(), []
        for _ in range(rng.randint(1, 6)):  # fixes of 1-3 edits, accepted as apply_fixes does
            edits = []
            for _ in range(rng.randint(1, 3)):
                start = rng.randint(0, 30)
                edits.append(Edit(start, start + rng.choice([0, 0, 1, 2, 5]), rng.choice(["", "x"])))
            expected = any(_conflicts_by_comparing_with_every_edit(e, plain) for e in edits)
            assert any(accepted.conflicts(e) for e in edits) == expected
            if not expected and not _self_overlapping(edits):
                for e in edits:
                    if accepted.add(e):
                        plain.append(e)


def test_fixes_apply_in_one_sweep_however_many():
    source = "import torch\n" + "".join(f"s{i} = torch.cuda.amp.GradScaler()\n" for i in range(3000))
    result = ampfix.fix_source(source, "big.py", Settings())
    assert len(result.fixed) == 3000 and "torch.cuda.amp" not in result.source
