"""Inline suppressions and AMP002 for unknown codes in them."""

import pytest

from conftest import codes

LINE = "import torch\nscaler = torch.cuda.amp.GradScaler(){}\n"


@pytest.mark.parametrize(
    "comment",
    ["  # noqa", "  # noqa: AMP102", "  # NOQA:AMP102,E501", "  # noqa: E501, AMP102", "  # ampfix: ignore[AMP102]",
     "  # ampfix: ignore[AMP101, AMP102]"],
)
def test_line_suppressions(comment):
    assert codes(LINE.format(comment)) == []


@pytest.mark.parametrize("comment", ["  # noqa: AMP101", "  # noqa: E501", "  # ampfix: ignore[AMP101]"])
def test_other_codes_do_not_suppress(comment):
    assert codes(LINE.format(comment)) == ["AMP102"]


def test_file_level_suppressions():
    assert codes("# ampfix: noqa\n" + LINE.format("")) == []
    assert codes("# ampfix: noqa: AMP102\n" + LINE.format("")) == []
    assert codes("# ampfix: noqa: AMP101\n" + LINE.format("")) == ["AMP102"]


def test_unknown_code_in_suppression_is_reported():
    assert codes(LINE.format("  # noqa: AMP120")) == ["AMP102", "AMP002"]
    assert codes(LINE.format("  # ampfix: ignore[AMP999]")) == ["AMP102", "AMP002"]


def test_noqa_inside_a_string_is_not_a_suppression():
    assert codes('import torch\ns = torch.cuda.amp.GradScaler("# noqa")\n') == ["AMP102"]


def test_suppression_on_the_last_line_of_a_multiline_call():
    source = "import torch\nscaler = torch.cuda.amp.GradScaler(\n    enabled=True,\n)  # noqa: AMP102\n"
    assert codes(source) == ["AMP102"]  # the reported line is where the name is


def test_suppressed_findings_are_not_fixed():
    from conftest import fixed

    source = LINE.format("  # noqa: AMP102")
    assert fixed(source) == source


def test_add_noqa_baselines_every_finding_idempotently(tmp_path):
    from conftest import run_ampfix

    path = tmp_path / "legacy.py"
    path.write_text(
        "import torch\n"
        "scaler = torch.cuda.amp.GradScaler()  # noqa: E501\n"
        "with torch.cuda.amp.autocast():\n"
        "    doc = '''torch.cuda.amp.autocast()'''\n"
    )
    result = run_ampfix("check", "--add-noqa", "--no-cache", ".", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "Added 2 noqa directives."
    assert path.read_text().splitlines()[1:3] == [
        "scaler = torch.cuda.amp.GradScaler()  # noqa: E501, AMP102",
        "with torch.cuda.amp.autocast():  # noqa: AMP101",
    ]
    assert run_ampfix("check", "--no-cache", ".", cwd=tmp_path).returncode == 0  # baselined
    again = run_ampfix("check", "--add-noqa", "--no-cache", ".", cwd=tmp_path)
    assert again.stdout.strip() == "Added 0 noqa directives."
    shown = run_ampfix("check", "--ignore-noqa", "--no-cache", "--output-format", "concise", ".", cwd=tmp_path)
    assert shown.returncode == 1 and "AMP101" in shown.stdout and "AMP102" in shown.stdout


def test_add_noqa_leaves_lines_a_comment_cannot_end(tmp_path):
    from ampfix.diagnostics import Diagnostic, Position
    from ampfix.noqa import add_noqa

    text = 'x = """\nscaler = torch.cuda.amp.GradScaler()\n"""\ny = torch.cuda.amp.autocast() \\\n    or 1\n'
    diags = []
    for row in (2, 4):
        d = Diagnostic("AMP102", "deprecated-grad-scaler", "m", 0, 1)
        d.location = Position(row, 1)
        diags.append(d)
    new, added, skipped = add_noqa(text, diags)
    assert (new, added, skipped) == (text, 0, 2)  # inside a string; before a backslash continuation
