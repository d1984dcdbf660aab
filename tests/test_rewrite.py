"""Statement-level rewrites are LibCST's (ampfix/rewrite.py): re-blocking statements keeps nested
blocks, comments, blank lines, continued lines and the content of strings; checking never
imports LibCST; the fixes also run as a LibCST codemod command."""

import ast
import json
import subprocess
import sys
import textwrap

import pytest

import ampfix
from ampfix.rewrite import RewriteError, reblock

from conftest import run_ampfix


def _strings(code):
    return sorted(n.value for n in ast.walk(ast.parse(textwrap.dedent(code))) if isinstance(n, ast.Constant) and isinstance(n.value, str))


def test_wrapping_keeps_nested_blocks_comments_and_continued_lines():
    block = (
        "        out = model(x)  # forward\n"
        "\n"
        "        # the loss, over two lines\n"
        "        loss = criterion(out,\n"
        "                         y)\n"
        "        if log:\n"
        "            total = total + \\\n"
        "                loss\n"
    )
    assert reblock(block, "        ", "        ", "torch.autocast('cuda')") == (
        "        with torch.autocast('cuda'):\n"
        "            out = model(x)  # forward\n"
        "\n"
        "            # the loss, over two lines\n"
        "            loss = criterion(out,\n"
        "                             y)\n"
        "            if log:\n"
        "                total = total + \\\n"
        "                    loss\n"
    )


def test_moving_out_of_a_block_keeps_the_relative_indentation():
    block = "        loss.backward()\n        for group in opt.param_groups:\n            group['lr'] *= 0.5\n"
    assert reblock(block, "        ", "    ") == "    loss.backward()\n    for group in opt.param_groups:\n        group['lr'] *= 0.5\n"
    assert reblock(block, "        ", "") == "loss.backward()\nfor group in opt.param_groups:\n    group['lr'] *= 0.5\n"


def test_the_content_of_a_multiline_string_is_never_touched():
    block = '    log("""step\n  done""")\n    x = 1\n'
    out = reblock(block, "    ", "    ", "ctx()")
    assert out == '    with ctx():\n        log("""step\n  done""")\n        x = 1\n'
    assert _strings("if 1:\n" + out) == _strings("if 1:\n" + block)  # same string constants


def test_tabs_and_crlf_are_kept():
    block = "\tx = 1\r\n\tif x:\r\n\t\ty = 2\r\n"
    assert reblock(block, "\t", "\t", "w()", unit="\t", newline="\r\n") == "\twith w():\r\n\t\tx = 1\r\n\t\tif x:\r\n\t\t\ty = 2\r\n"


def test_statements_that_are_not_one_block_are_refused():
    with pytest.raises(RewriteError):
        reblock("    x = (\n", "    ", "")


AMP401_STRING = '''\
import torch
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
        loss.backward()
        log("""backward
  done""")
    opt.step()
'''


def test_a_fix_moves_a_statement_that_holds_a_multiline_string():
    result = ampfix.fix_source(AMP401_STRING, "train.py")
    assert [d.code for d in result.fixed] == ["AMP401"]
    assert '    loss.backward()\n    log("""backward\n  done""")\n    opt.step()\n' in result.source
    assert _strings(result.source) == _strings(AMP401_STRING)


CONVERSION = '''\
import torch

def train(model, loader, optimizer, criterion):
    model.cuda()
    for x, y in loader:
        x, y = x.cuda(), y.cuda()
        optimizer.zero_grad()
        out = model(x)
        loss = criterion(out, y)
        loss.backward()
        optimizer.step()


for epoch in range(3):  # the function is called once per epoch: the scaler is passed in
    train(model, loader, optimizer, criterion)
'''


def test_checking_never_imports_libcst_where_the_lines_decide_a_move_and_json_shows_the_built_fix(tmp_path):
    """A statement rewrite is built when it is validated or shown; where its lines alone say how
    (``rewrite._reblocked_lines``: the conversion's block, a block holding a string that spans
    lines), a check neither imports LibCST (~0.15 s of every such run) nor needs it."""
    (tmp_path / "train.py").write_text(CONVERSION)
    (tmp_path / "amp401.py").write_text(AMP401_STRING)
    (tmp_path / "old.py").write_text("import torch\nscaler = torch.cuda.amp.GradScaler()\n")
    only_text = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom ampfix.cli import main\ntry:\n    main(['check', '--no-cache', 'old.py'])\n"
         "except SystemExit:\n    pass\nprint('libcst' in sys.modules)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert only_text.stdout.split()[-1] == "False", only_text.stderr
    probe = (
        "import sys, io, contextlib\n"
        "from ampfix.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['check', '--preview', '--extend-select', 'AMP501', '--no-cache', '--unsafe-fixes', 'train.py', 'amp401.py'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('libcst' in sys.modules, 'AMP401' in out.getvalue(), 'AMP501' in out.getvalue())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True", "True"], done.stderr  # validated, without LibCST
    shown = run_ampfix("check", "--preview", "--no-cache", "--output-format", "json", "amp401.py", cwd=tmp_path)
    [record] = [r for r in json.loads(shown.stdout) if r["code"] == "AMP401"]
    [edit] = record["fix"]["edits"]
    assert edit["content"].startswith("    loss.backward()\n")
    again = run_ampfix("check", "--preview", "--output-format", "json", "amp401.py", cwd=tmp_path)
    cached = run_ampfix("check", "--preview", "--output-format", "json", "amp401.py", cwd=tmp_path)  # from the cache
    assert json.loads(again.stdout) == json.loads(cached.stdout) == json.loads(shown.stdout)


def test_the_fixes_run_as_a_libcst_codemod(tmp_path):
    (tmp_path / "train.py").write_text(CONVERSION)
    (tmp_path / "amp401.py").write_text(AMP401_STRING)
    (tmp_path / "old.py").write_text("import torch\nscaler = torch.cuda.amp.GradScaler()\n")
    expected = {
        name: ampfix.fix_source((tmp_path / name).read_text(), str(tmp_path / name), unsafe_fixes=True).source
        for name in ("train.py", "amp401.py", "old.py")
    }
    done = subprocess.run(
        [sys.executable, "-m", "libcst.tool", "codemod", "--no-format", "-x", "ampfix.codemod.AmpfixFix",
         "--unsafe-fixes", "--preview", "--select", "ALL,AMP501", "."],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for name, source in expected.items():
        assert (tmp_path / name).read_text() == source
    assert "torch.autocast(" in expected["train.py"] and "torch.amp.GradScaler" in expected["old.py"]


@pytest.mark.parametrize("text", ["def f(x):\n    g(x)\n", "def f(x):\n    g(x)"])  # with and without a last line break
def test_inserted_statements_take_the_anchors_indentation(text):
    from ampfix.context import ModuleContext
    from ampfix.edits import insert_after, insert_before
    from ampfix.fixer import apply_fixes
    from ampfix.diagnostics import Applicability, Diagnostic, Fix
    from ampfix.settings import Settings

    ctx = ModuleContext("t.py", text, ast.parse(text), Settings())
    call = ctx.tree.body[0].body[0]
    edits = (insert_before(ctx, call, "h()"), insert_after(ctx, call, "if x:\n    k(x)"))
    fixed, _ = apply_fixes(text, [Diagnostic("AMP204", "n", "m", 0, 1, Fix("f", edits, Applicability.SAFE))])
    assert fixed.rstrip("\n") == "def f(x):\n    h()\n    g(x)\n    if x:\n        k(x)"


REBLOCK_SHAPES = [
    # (statements, old indent, new indent, header)
    ("    loss = model(x)\n    loss.backward()\n", "    ", "        ", ""),
    ("    loss = model(x)\n    loss.backward()\n", "    ", "    ", 'torch.autocast("cuda")'),
    ("loss = model(x)\nloss.backward()\n", "", "    ", ""),
    ("loss = model(x)\n\nloss.backward()\n", "", "    ", 'torch.autocast("cuda")'),
    ("    # the forward\n    out = model(x)  # logits\n\n    loss = crit(out,\n                y)\n", "    ", "        ", "ctx()"),
    ('    log("""two\n  lines""")\n    x = f"""{a}\n    b"""\n', "    ", "", ""),
    ("    total = a + \\\n        b\n    if total:\n        step()\n    else:\n      other()\n", "    ", "  ", "ctx()"),
    ("\tloss = f(x)\n\tif loss:\n\t\tloss.backward()\n", "\t", "\t\t", ""),
    ("    x = 1\n        \n    y = 2\n  \n    z = 3\n", "    ", "        ", ""),
    ("    x = 1\n    # a comment after the last statement\n", "    ", "        ", ""),
    ("    x = 1\r\n    y = [\r\n        2,\r\n    ]\r\n", "    ", "        ", "ctx()"),
    ("    for p in params:\n        p.grad = None  # clear\n    # then\n    step()\n", "    ", "", ""),
]


@pytest.mark.parametrize("statements, old, new, header", REBLOCK_SHAPES)
def test_a_move_decided_by_its_lines_is_what_libcst_prints(statements, old, new, header):
    from ampfix.rewrite import _reblock_with_libcst, _reblocked_lines

    newline = "\r\n" if "\r\n" in statements else "\n"
    unit = "\t" if old.startswith("\t") else "    "
    by_lines = _reblocked_lines(statements, old, new, header, unit, newline)
    if "after the last statement" in statements:
        assert by_lines is None  # LibCST keeps such a comment in the block's footer: it decides
        return
    assert by_lines is not None
    assert by_lines == _reblock_with_libcst(statements, old, new, header, unit, newline)
