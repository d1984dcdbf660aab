"""The edges users hit first: notebooks, odd files, concurrent and interrupted --apply, and code
that must never run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import ampfix
from conftest import run_ampfix

OLD = "import torch\nscaler = torch.cuda.amp.GradScaler()\n"


# -- notebooks ------------------------------------------------------------------------------------

def notebook(cells, indent=1):
    return json.dumps({
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }, indent=indent) + "\n"


def code(source, outputs=None, count=1):
    return {"cell_type": "code", "execution_count": count, "metadata": {}, "outputs": outputs or [],
            "source": source.splitlines(keepends=True)}


NB_CELLS = [
    {"cell_type": "markdown", "metadata": {}, "source": ["# torch.cuda.amp.autocast in markdown is prose\n"]},
    code("!pip install torch\nimport torch\n%load_ext autoreload"),
    code("scaler = torch.cuda.amp.GradScaler()\nfiles = !ls\ntorch.cuda.amp.autocast?",
         outputs=[{"output_type": "stream", "name": "stdout", "text": ["ok\n"]}]),
    code("%%bash\necho torch.cuda.amp.autocast()\n"),
]


def test_notebook_cells_are_checked_with_cell_positions(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook(NB_CELLS))
    result = run_ampfix("check", "--output-format", "concise", str(path))
    assert result.stdout.splitlines()[0].endswith(
        "nb.ipynb:cell 3:1:10: AMP102 [*] `torch.cuda.amp.GradScaler` is deprecated; use `torch.amp.GradScaler(\"cuda\", ...)`"
    )
    records = json.loads(run_ampfix("check", "--output-format", "json", "--no-cache", str(path)).stdout)
    assert [(r["code"], r["cell"], r["location"]["row"]) for r in records] == [("AMP102", 3, 1)]


def test_notebook_apply_rewrites_only_code_and_keeps_layout(tmp_path):
    path = tmp_path / "nb.ipynb"
    original = notebook(NB_CELLS)
    path.write_text(original)
    assert run_ampfix("check", "--apply", str(path)).returncode == 0
    after = path.read_text()
    expected = original.replace('"scaler = torch.cuda.amp.GradScaler()\\n"', '"scaler = torch.amp.GradScaler(\\"cuda\\")\\n"')
    assert after == expected  # magics, markdown, %%bash cell, outputs and metadata untouched


def test_notebook_imports_in_an_earlier_cell_resolve(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook([code("from torch.cuda.amp import autocast"), code("with autocast():\n    pass")]))
    result = run_ampfix("check", "--output-format", "concise", str(path))
    assert "cell 2:1:6: AMP101" in result.stdout


def test_broken_notebook_json_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.ipynb"
    path.write_text('{"cells": ["with torch.cuda.amp.autocast():"')
    result = run_ampfix("check", str(path))
    assert result.returncode == 2 and "not a valid notebook" in result.stderr


# -- odd files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "",
    "\n\n\n",
    "import torch\r\nx = 1\nwith torch.cuda.amp.autocast():\r\n\tpass\r\n",  # mixed endings, tabs
    "import torch\n\x0cwith torch.cuda.amp.autocast():\n    pass\n",  # form feed
    "import torch\nx = '" + "a" * 200_000 + "'\nwith torch.cuda.amp.autocast():\n    pass\n",  # a long line
], ids=["empty", "blank-lines", "mixed-endings-tabs", "form-feed", "long-line"])
def test_odd_sources_check_and_fix_cleanly(source):
    result = ampfix.fix_source(source, "t.py")
    if "autocast" in source:
        assert "torch.autocast(\"cuda\")" in result.source or "torch.autocast('cuda')" in result.source
        assert ampfix.fix_source(result.source, "t.py").source == result.source
    else:
        assert result.source == source


def test_mixed_line_endings_are_kept_line_by_line(tmp_path):
    path = tmp_path / "mixed.py"
    path.write_bytes(b"import torch\r\nx = 1\nwith torch.cuda.amp.autocast():\r\n    pass\n")
    run_ampfix("check", "--apply", str(path))
    assert path.read_bytes() == b'import torch\r\nx = 1\nwith torch.autocast("cuda"):\r\n    pass\n'


def test_a_file_with_thousands_of_findings_reports_each_once():
    # how the time grows with the file's size is measured in bench/speed.py
    block = "def f{i}(model, x):\n    with torch.cuda.amp.autocast():\n        return model(x)\n\n"
    source = "import torch\n" + "".join(block.format(i=i) for i in range(2_000))
    diagnostics = ampfix.check_source(source, "big.py")
    assert [d.location.row for d in diagnostics] == [3 + 4 * i for i in range(2_000)]


def test_ten_megabytes_of_plain_code_are_skipped_by_the_prefilter():
    text = "x = 1\n" * 1_700_000
    assert len(text) > 10_000_000
    assert ampfix.check_source(text, "big.py") == []


def test_python_312_syntax_is_a_syntax_error_only_on_older_pythons():
    source = "import torch\ntype Vec = list[float]\ndef f[T](x: T) -> T:\n    with torch.cuda.amp.autocast():\n        return x\n"
    codes = [d.code for d in ampfix.check_source(source, "t.py")]
    assert codes == (["AMP101"] if sys.version_info >= (3, 12) else ["AMP001"])


def test_stub_files_are_checked(tmp_path):
    (tmp_path / "api.pyi").write_text("import torch\ndef scaler() -> torch.cuda.amp.GradScaler: ...\n")
    assert "AMP102" in run_ampfix("check", "--output-format", "concise", ".", cwd=tmp_path).stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_is_an_error_and_unchanged(tmp_path):
    path = tmp_path / "ro.py"
    path.write_text(OLD)
    os.chmod(path, 0o444)
    result = run_ampfix("check", "--apply", str(path))
    assert result.returncode == 2 and "read-only" in result.stderr and path.read_text() == OLD


def test_read_only_file_refused_by_the_writer(tmp_path, monkeypatch):
    from ampfix.source import SourceError, write_atomic

    path = tmp_path / "ro.py"
    path.write_text(OLD)
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(SourceError, match="read-only"):
        write_atomic(str(path), b"new")
    assert path.read_text() == OLD


# -- concurrency and interruption ---------------------------------------------------------------

def _tree(tmp_path, n=60):
    for i in range(n):
        (tmp_path / f"m{i:03d}.py").write_text(OLD + "with torch.cuda.amp.autocast():\n    pass\n" * 50)
    return sorted(tmp_path.glob("*.py"))


def test_two_concurrent_applies_never_corrupt_a_file(tmp_path):
    files = _tree(tmp_path)
    command = [sys.executable, "-m", "ampfix", "check", "--apply", "--no-cache", "-q", str(tmp_path)]
    first, second = subprocess.Popen(command), subprocess.Popen(command)
    first.wait(timeout=300), second.wait(timeout=300)
    for path in files:
        text = path.read_text()
        compile(text, str(path), "exec")
        assert "torch.cuda.amp" not in text
    assert not list(tmp_path.glob(".ampfix-*"))


def test_sigint_leaves_every_file_old_or_new(tmp_path):
    files = _tree(tmp_path, 200)
    old = files[0].read_text()
    process = subprocess.Popen([sys.executable, "-m", "ampfix", "check", "--apply", "--no-cache", "--jobs", "1",
                                "-q", str(tmp_path)])
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    states = set()
    for path in files:
        text = path.read_text()
        compile(text, str(path), "exec")
        states.add("old" if text == old else "new")
        assert text == old or "torch.cuda.amp" not in text
    assert not list(tmp_path.glob(".ampfix-*"))


def test_an_interrupt_while_the_temporary_file_is_created_leaves_no_file_behind(tmp_path, monkeypatch):
    # Ctrl-C right after the temporary file exists, before its name reached the writer (what the
    # test above hit now and then): the file is removed, the target keeps its old content
    from ampfix import source

    target = tmp_path / "train.py"
    target.write_text(OLD)
    real_open = os.open

    def open_then_interrupt(path, flags, mode=0o777, **kwargs):
        real_open(path, flags, mode, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        source.write_atomic(str(target), b"new")
    monkeypatch.undo()
    assert target.read_text() == OLD
    assert not list(tmp_path.glob(".ampfix-*"))


# -- check never executes what it reads ---------------------------------------------------------

def test_check_and_apply_never_execute_the_code(tmp_path):
    marker = tmp_path / "executed"
    payload = (
        f"import os\nopen({str(marker)!r}, 'w').close()\n"
        "import torch\nwith torch.cuda.amp.autocast():\n    pass\n"
        f"if __name__ == '__main__':\n    open({str(marker)!r}, 'w').close()\n"
    )
    (tmp_path / "payload.py").write_text(payload)
    (tmp_path / "conftest.py").write_text(payload)
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nselect = ["ALL"]\n')
    for args in (["check", "."], ["check", "--apply", "--unsafe-fixes", "."], ["check", "--diff", "."]):
        run_ampfix(*args, cwd=tmp_path)
    assert not marker.exists()


# -- writes that keep the file's identity ------------------------------------------------------

def test_a_file_with_no_write_bit_is_never_written_even_by_root(tmp_path):
    path = tmp_path / "ro.py"
    path.write_text(OLD)
    os.chmod(path, 0o444)
    result = run_ampfix("check", "--apply", "--no-cache", str(path))
    assert result.returncode == 2 and "read-only; nothing written" in result.stderr
    assert path.read_text() == OLD
    assert result.stdout.strip().endswith("Found 1 problem (0 fixed, 1 remaining). 1 file with an error (see above).")


def test_an_unwritable_folder_is_an_error_not_a_crash(tmp_path, monkeypatch):
    from ampfix.runner import FIX, Job, process_file
    from ampfix.settings import Settings

    path = tmp_path / "t.py"
    path.write_text(OLD)

    real_open = os.open

    def no_temp_file(name, *args, **kwargs):
        if os.path.basename(name).startswith(".ampfix-"):  # the temporary file beside the target
            raise PermissionError(13, "Permission denied")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_temp_file)
    result = process_file(str(path), Job(FIX, Settings(), False))
    assert result.error.startswith("cannot write in ") and "nothing written" in result.error
    assert not result.fixed and [d.code for d in result.diagnostics] and path.read_text() == OLD


def test_hard_links_all_see_the_fix(tmp_path):
    path, link = tmp_path / "a.py", tmp_path / "b.py"
    path.write_text(OLD)
    os.link(path, link)
    run_ampfix("check", "--apply", "--no-cache", str(path))
    assert "torch.cuda.amp" not in path.read_text() and link.read_text() == path.read_text()
    assert os.stat(path).st_ino == os.stat(link).st_ino


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_apply_as_root_keeps_the_owner(tmp_path):
    path = tmp_path / "a.py"
    path.write_text(OLD)
    os.chown(path, 1234, 5678)
    run_ampfix("check", "--apply", "--no-cache", str(path))
    st = os.stat(path)
    assert "torch.cuda.amp" not in path.read_text() and (st.st_uid, st.st_gid) == (1234, 5678)


def test_notebook_findings_after_apply_are_positioned_in_the_fixed_cells(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook([
        code("import torch\nfrom torch.cuda.amp import GradScaler\nscaler = GradScaler()"),
        code("for x in loader:\n"
             "    scaler.scale(model(x)).backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
             "    scaler.step(optimizer)\n    scaler.update()"),
    ]))
    result = run_ampfix("check", "--preview", "--apply", "--no-cache", "--output-format", "json", str(path))
    [record] = [r for r in json.loads(result.stdout) if r["code"] == "AMP201"]
    cells = json.loads(path.read_text())["cells"]
    assert "from torch.cuda.amp import GradScaler\n" not in cells[0]["source"]  # a line of cell 1 went
    cell = cells[1]["source"]
    assert record["cell"] == 2 and cell[record["location"]["row"] - 1].lstrip().startswith("torch.nn.utils.clip_grad_norm_")


def test_a_notebook_on_stdin_is_checked_and_fixed_as_a_notebook(tmp_path):
    text = notebook(NB_CELLS)
    result = run_ampfix("check", "--output-format", "concise", "--stdin-filename", "nb.ipynb", "-", input=text, cwd=tmp_path)
    assert result.returncode == 1 and "nb.ipynb:cell 3:1:10: AMP102" in result.stdout
    fixed = run_ampfix("check", "--apply", "--stdin-filename", "nb.ipynb", "-", input=text, cwd=tmp_path)
    document = json.loads(fixed.stdout)  # stdout is the fixed notebook, the report went to stderr
    assert document["cells"][2]["source"][0] == 'scaler = torch.amp.GradScaler("cuda")\n'
    assert document["cells"][0] == NB_CELLS[0] and "Found 1 problem (1 fixed, 0 remaining)." in fixed.stderr


def test_ci_formats_keep_the_notebook_cell(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook(NB_CELLS))
    github = run_ampfix("check", "--no-cache", "--output-format", "github", str(path)).stdout.splitlines()[0]
    assert github.startswith("::warning title=ampfix (AMP102),file=") and ",line=" not in github
    assert github.split("::", 2)[2].startswith("cell 3:1:10: AMP102")
    sarif = json.loads(run_ampfix("check", "--no-cache", "--output-format", "sarif", str(path)).stdout)
    [result] = sarif["runs"][0]["results"]
    assert result["properties"] == {"cell": 3} and result["message"]["text"].startswith("cell 3: ")


def test_a_broken_notebook_on_stdin_is_an_error(tmp_path):
    result = run_ampfix("check", "--stdin-filename", "nb.ipynb", "-", input='{"cells": [', cwd=tmp_path)
    assert result.returncode == 2 and "nb.ipynb: not a valid notebook" in result.stderr


def test_diff_of_a_notebook_is_per_cell(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook(NB_CELLS))
    result = run_ampfix("check", "--diff", "--no-cache", str(path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"--- a/{path}:cell 3" and lines[1] == f"+++ b/{path}:cell 3"
    assert "-scaler = torch.cuda.amp.GradScaler()" in lines and '+scaler = torch.amp.GradScaler("cuda")' in lines
    assert not any('"cell_type"' in line for line in lines)  # the code, not the JSON
    stdin = run_ampfix("check", "--diff", "--stdin-filename", "nb.ipynb", "-", input=notebook(NB_CELLS), cwd=tmp_path)
    assert stdin.stdout.splitlines()[0] == "--- a/nb.ipynb:cell 3"
