"""ruff's conventions where users trip on them (issue 24), each run as a user runs it: the CLI
in a subprocess, the server through a real LSP client (tests/test_server.py)."""

import json
import os

import pytest

from conftest import run_ampfix

GRAD_SCALER = "import torch\nscaler = torch.cuda.amp.GradScaler()\n"
CUSTOM_FWD = "import torch\n@torch.cuda.amp.custom_fwd\ndef f(x):\n    return x\n"


# -- configuration -------------------------------------------------------------------------------


def test_extend_keeps_the_parents_ignore_beside_the_childs(tmp_path):
    (tmp_path / "m" / "child").mkdir(parents=True)
    (tmp_path / "m" / "base.toml").write_text('select = ["ALL"]\nignore = ["AMP103"]\n')
    (tmp_path / "m" / "child" / ".ampfix.toml").write_text('extend = "../base.toml"\nignore = ["AMP102"]\n')
    (tmp_path / "m" / "child" / "t.py").write_text(GRAD_SCALER + CUSTOM_FWD)
    result = run_ampfix("check", "--no-cache", "m/child", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "All checks passed!"
    # a child's `select` starts over, as in ruff: the parent's ignore no longer applies to it
    (tmp_path / "m" / "child" / ".ampfix.toml").write_text('extend = "../base.toml"\nselect = ["AMP103"]\n')
    result = run_ampfix("check", "--no-cache", "--output-format", "concise", "m/child", cwd=tmp_path)
    assert [line.split()[1] for line in result.stdout.splitlines()[:-1]] == ["AMP103"]


def test_extend_appends_extend_exclude(tmp_path):
    (tmp_path / "base.toml").write_text('extend-exclude = ["gen_*.py"]\n')
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / ".ampfix.toml").write_text('extend = "../base.toml"\nextend-exclude = ["old_*.py"]\n')
    for name in ("gen_a.py", "old_b.py", "c.py"):
        (tmp_path / "pkg" / name).write_text(GRAD_SCALER)
    result = run_ampfix("check", "--no-cache", "--output-format", "concise", ".", cwd=tmp_path / "pkg")
    assert [line.split(":")[0] for line in result.stdout.splitlines()[:-1]] == ["c.py"]


def test_a_float_target_torch_is_an_error_naming_the_file(tmp_path):
    (tmp_path / ".ampfix.toml").write_text("target-torch = 2.10\n")
    (tmp_path / "t.py").write_text(GRAD_SCALER)
    result = run_ampfix("check", "t.py", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"ampfix: error: {tmp_path / '.ampfix.toml'}: `target-torch`: ") and '"2.10"' in line
    (tmp_path / ".ampfix.toml").write_text('target-torch = "2.10"\n')
    shown = run_ampfix("check", "--show-settings", "t.py", cwd=tmp_path)
    assert "target-torch         = 2.10 " in shown.stdout
    fixed = run_ampfix("check", "--no-cache", "--diff", "t.py", cwd=tmp_path)
    assert fixed.returncode == 1 and 'torch.amp.GradScaler("cuda")' in fixed.stdout  # 2.10 >= 2.3


# -- syntax errors are reported whatever is selected ---------------------------------------------

BROKEN = "import torch\ndef broken(:\n    pass\nx = torch.cuda.amp.autocast()\n"


@pytest.mark.parametrize("options", [["--select", "AMP1"], ["--ignore", "AMP001"], ["--select", "AMP101", "--ignore", "AMP0"]])
def test_a_syntax_error_is_reported_whatever_is_selected(tmp_path, options):
    (tmp_path / "bad.py").write_text(BROKEN)
    result = run_ampfix("check", "--no-cache", *options, "bad.py", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("bad.py:2:12: AMP001 SyntaxError:") and "All checks passed" not in result.stdout


def test_per_file_ignores_do_not_hide_a_syntax_error(tmp_path):
    (tmp_path / ".ampfix.toml").write_text('[per-file-ignores]\n"bad.py" = ["AMP001"]\n')
    (tmp_path / "bad.py").write_text(BROKEN)
    result = run_ampfix("check", "--no-cache", "--ignore", "AMP001", "bad.py", cwd=tmp_path)
    assert result.returncode == 1 and "AMP001 SyntaxError" in result.stdout


def test_a_file_with_nothing_amp_related_is_still_not_parsed(tmp_path):
    # the byte prefilter's design: other linters own the syntax of files ampfix has no rule for
    (tmp_path / "other.py").write_text("def broken(:\n    pass\n")
    result = run_ampfix("check", "--no-cache", "other.py", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "All checks passed!"
