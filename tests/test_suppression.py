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
