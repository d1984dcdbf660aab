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


# -- command-line options ------------------------------------------------------------------------


def concise(result) -> list[str]:
    """`path:row:col: CODE` of each finding of a concise report."""
    return [" ".join(line.split()[:2]) for line in result.stdout.splitlines() if ": AMP" in line]


def test_config_takes_inline_toml_over_every_configuration_file(tmp_path):
    (tmp_path / ".ampfix.toml").write_text('ignore = ["AMP101"]\n')
    (tmp_path / "t.py").write_text(GRAD_SCALER + "with torch.cuda.amp.autocast():\n    pass\n")
    both = ["t.py:2:10: AMP102", "t.py:3:6: AMP101"]
    plain = run_ampfix("check", "--no-cache", "--output-format", "concise", "t.py", cwd=tmp_path)
    assert concise(plain) == both[:1]
    inline = run_ampfix("check", "--no-cache", "--output-format", "concise", "--config", 'ignore = ["AMP102"]', "t.py", cwd=tmp_path)
    assert concise(inline) == []  # a layer over the file's: both ignores hold
    over = run_ampfix("check", "--no-cache", "--output-format", "concise", "--config", "select = ['ALL']", "t.py", cwd=tmp_path)
    assert concise(over) == both
    # the command line's own options come last, as in ruff
    cli = run_ampfix("check", "--no-cache", "--output-format", "concise", "--config", "select = ['AMP101']",
                     "--extend-select", "AMP102", "t.py", cwd=tmp_path)
    assert concise(cli) == both
    bad = run_ampfix("check", "--config", "bogus = 1", "t.py", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("ampfix: error: --config: unknown key `bogus`")
    typo = run_ampfix("check", "--config", "select = ['AMP9']", "t.py", cwd=tmp_path)
    assert typo.returncode == 2 and "--config: `select`: unknown rule selector `AMP9`" in typo.stderr


def test_config_file_with_isolated_is_a_usage_error(tmp_path):
    (tmp_path / "other.toml").write_text('ignore = ["AMP1"]\n')
    (tmp_path / "t.py").write_text(GRAD_SCALER)
    result = run_ampfix("check", "--config", "other.toml", "--isolated", "t.py", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "ampfix: error: --config other.toml cannot be used with --isolated, which ignores every configuration file"]


def test_exclude_extend_exclude_and_per_file_ignores_on_the_command_line(tmp_path):
    (tmp_path / ".ampfix.toml").write_text('exclude = ["gen_*.py"]\n[per-file-ignores]\n"a.py" = ["AMP102"]\n')
    for name in ("a.py", "b.py", "gen_c.py"):
        (tmp_path / name).write_text(GRAD_SCALER)
    run = lambda *options: concise(run_ampfix("check", "--no-cache", "--output-format", "concise", *options, ".", cwd=tmp_path))
    assert run() == ["b.py:2:10: AMP102"]
    assert run("--extend-exclude", "b.py") == []  # added to the configured patterns
    assert run("--exclude", "b.py") == ["gen_c.py:2:10: AMP102"]  # replaces them (and the defaults), as ruff's
    assert run("--per-file-ignores", "b.py:AMP1") == ["a.py:2:10: AMP102"]  # replaces the table
    assert run("--per-file-ignores", "a.py:AMP102,b.py:AMP102") == []  # ruff's comma-separated pairs
    bad = run_ampfix("check", "--per-file-ignores", "AMP102", ".", cwd=tmp_path)
    assert bad.returncode == 2 and "--per-file-ignores: expected PATTERN:CODES" in bad.stderr


def test_show_settings_names_the_source_of_every_setting(tmp_path):
    (tmp_path / "base.toml").write_text('ignore = ["AMP103"]\ntarget-torch = "2.3"\nextend-exclude = ["q"]\n')
    (tmp_path / "pkg").mkdir()
    child = tmp_path / "pkg" / ".ampfix.toml"
    child.write_text('extend = "../base.toml"\nignore = ["AMP102"]\nextend-exclude = ["r"]\n')
    (tmp_path / "pkg" / "t.py").write_text(GRAD_SCALER)
    result = run_ampfix("check", "--show-settings", "--extend-exclude", "z", "--config", 'default-device = "cpu"',
                        "--config", 'extend-exclude = ["w"]', "pkg/t.py", cwd=tmp_path)
    origin = {line.split("=", 1)[0].strip(): line.rsplit("    # ", 1)[1] for line in result.stdout.splitlines()}
    base = str(tmp_path / "base.toml")
    assert origin["config"] == "the nearest .ampfix.toml, ampfix.toml or pyproject.toml with [tool.ampfix]"
    assert origin["select"] == f"{base} + {child}"
    assert origin["target-torch"] == base  # inherited: the file that says it
    assert origin["extend-exclude"] == f"{base} + {child} + --config + command line"
    assert "extend-exclude       = q, r, w, z    #" in result.stdout  # each layer appends
    assert origin["default-device"] == "--config"
    assert origin["unsafe-fixes"] == "default"
    isolated = run_ampfix("check", "--show-settings", "--isolated", "pkg/t.py", cwd=tmp_path)
    assert isolated.stdout.splitlines()[0].endswith("(none)    # --isolated: no configuration file")
    given = run_ampfix("check", "--show-settings", "--config", "base.toml", "pkg/t.py", cwd=tmp_path)
    assert given.stdout.splitlines()[0].endswith("base.toml    # --config")


# -- CI formats, unreadable files, baselines ------------------------------------------------------


def test_github_paths_are_relative_to_the_repository_from_a_subfolder(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "t.py").write_text(GRAD_SCALER)
    env = {"GITHUB_WORKSPACE": "", "CI_PROJECT_DIR": ""}
    github = run_ampfix("check", "--output-format", "github", "pkg", cwd=tmp_path / "src", env=env)
    assert ",file=src/pkg/t.py,line=2," in github.stdout
    gitlab = json.loads(run_ampfix("check", "--output-format", "gitlab", "pkg", cwd=tmp_path / "src", env=env).stdout)
    assert gitlab[0]["location"]["path"] == "src/pkg/t.py"
    # on GitHub the checkout is $GITHUB_WORKSPACE, whatever the folder holding .git
    env = {"GITHUB_WORKSPACE": str(tmp_path / "src")}
    github = run_ampfix("check", "--output-format", "github", "t.py", cwd=tmp_path / "src" / "pkg", env=env)
    assert ",file=pkg/t.py,line=2," in github.stdout


def _as_unprivileged(command: list[str]) -> list[str]:
    """``command`` run by a user who cannot read a mode-000 file (root can)."""
    if os.geteuid() != 0:
        return command
    import shutil
    import subprocess

    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--user", "--map-user=1000", "true"], capture_output=True).returncode:
        pytest.skip("running as root without user namespaces: every file is readable")
    return [unshare, "--user", "--map-user=1000", *command]


def test_an_unreadable_file_is_one_error_and_the_others_are_checked(tmp_path):
    import subprocess
    import sys

    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(GRAD_SCALER)
    (tmp_path / "b.py").chmod(0)
    os.chmod(tmp_path, 0o777)
    command = _as_unprivileged([sys.executable, "-m", "ampfix", "check", "--no-cache", "--output-format", "concise", "a.py", "b.py"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["ampfix: error: b.py: cannot read file: Permission denied"]
    assert result.stdout.splitlines() == ["a.py:2:10: AMP102 [*] `torch.cuda.amp.GradScaler` is deprecated; use `torch.amp.GradScaler(\"cuda\", ...)`",
                                          "Found 1 problem (1 fixable with --apply). 1 file with an error (see above)."]


def test_the_add_noqa_baseline_leaves_no_finding_behind(tmp_path):
    import shutil

    from conftest import FIXTURES

    shutil.copytree(FIXTURES, tmp_path / "fixtures")
    before = run_ampfix("check", "--no-cache", "fixtures", cwd=tmp_path)
    assert before.returncode == 1 and "AMP002" in before.stdout  # a typo'd code in a noqa comment, among others
    added = run_ampfix("check", "--no-cache", "--add-noqa", "fixtures", cwd=tmp_path)
    assert added.returncode == 0 and added.stdout.startswith("Added ")
    after = run_ampfix("check", "--no-cache", "fixtures", cwd=tmp_path)
    assert after.returncode == 0 and after.stdout.strip() == "All checks passed!"
    again = run_ampfix("check", "--no-cache", "--add-noqa", "fixtures", cwd=tmp_path)
    assert again.stdout.strip() == "Added 0 noqa directives."


def test_output_is_utf8_where_the_locale_says_ascii(tmp_path):
    (tmp_path / "t.py").write_text(GRAD_SCALER)
    result = run_ampfix("check", "--no-cache", "--apply", "--show-fixes", "t.py", cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0 and "1 × AMP102 (deprecated-grad-scaler)" in result.stdout


# -- notebooks: evidence in another cell ------------------------------------------------------------

NOTEBOOK_CELLS = [
    "import torch\n",
    "scaler = torch.amp.GradScaler('cuda')\n",
    "x = 1\n",
    "for x in loader:\n    scaler.scale(model(x)).backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
    "    scaler.step(optimizer)\n    scaler.update()\n",
]


@pytest.fixture
def notebook(tmp_path):
    cells = [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [], "execution_count": None} for c in NOTEBOOK_CELLS]
    (tmp_path / "nb.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return tmp_path


def test_notebook_evidence_in_another_cell_names_that_cell(notebook):
    text = run_ampfix("check", "--preview", "--select", "AMP201", "nb.ipynb", cwd=notebook).stdout
    assert "nb.ipynb:cell 4:3:5: AMP201" in text
    assert [line.strip() for line in text.splitlines() if "= evidence" in line] == [
        "= evidence: cell 2:1:10: `scaler` created here",
        "= evidence: cell 4:2:5: gradients scaled by `scaler` here",
        "= evidence: cell 4:3:5: clipped here on a path with no `unscale_`",
    ]
    again = run_ampfix("check", "--preview", "--select", "AMP201", "nb.ipynb", cwd=notebook).stdout  # from the cache: the same
    assert again == text
    [finding] = json.loads(run_ampfix("check", "--preview", "--select", "AMP201", "--output-format", "json", "nb.ipynb", cwd=notebook).stdout)
    assert [(e["cell"], e["location"]["row"], e["location"]["column"]) for e in finding["evidence"]] == [
        (2, 1, 10), (4, 2, 5), (4, 3, 5)]
    sarif = json.loads(run_ampfix("check", "--preview", "--select", "AMP201", "--output-format", "sarif", "nb.ipynb", cwd=notebook).stdout)
    related = sarif["runs"][0]["results"][0]["relatedLocations"]
    assert [(r["properties"]["cell"], r["physicalLocation"]["region"]["startLine"]) for r in related] == [(2, 1), (4, 2), (4, 3)]
    assert related[0]["message"]["text"] == "cell 2: `scaler` created here"


# -- AMP208: the precision of the region the loss was computed in -----------------------------------

STEP = "        loss.backward()\n        optimizer.step()\n"


@pytest.mark.parametrize("body, reported", [
    # a float16 warm-up, then the step under bfloat16: not a float16 backward
    ('    with torch.autocast("cuda", dtype=torch.float16):\n        warm = model(x0)\n'
     '    for x in loader:\n        with torch.autocast("cuda", dtype=torch.bfloat16):\n            loss = model(x).sum()\n' + STEP, False),
    # float16 features, then the loss under bfloat16 in the same iteration
    ('    for x in loader:\n        with torch.autocast("cuda", dtype=torch.float16):\n            feats = model.encoder(x)\n'
     '        with torch.autocast("cuda", dtype=torch.bfloat16):\n            loss = model(feats).sum()\n' + STEP, False),
    # a bfloat16 warm-up, the step under float16: reported
    ('    with torch.autocast("cuda", dtype=torch.bfloat16):\n        warm = model(x0)\n'
     '    for x in loader:\n        with torch.autocast("cuda", dtype=torch.float16):\n            loss = model(x).sum()\n' + STEP, True),
])
def test_a_bfloat16_backward_after_a_float16_region_is_not_amp208(tmp_path, body, reported):
    (tmp_path / "train.py").write_text("import torch\n\ndef train(model, loader, optimizer, x0):\n" + body)
    result = run_ampfix("check", "--preview", "--no-cache", "--output-format", "concise", "train.py", cwd=tmp_path)
    assert ("AMP208" in result.stdout) is reported, result.stdout
    if reported:
        evidence = run_ampfix("check", "--preview", "--no-cache", "train.py", cwd=tmp_path).stdout
        assert "dtype torch.float16" in evidence and "dtype torch.bfloat16" not in evidence


# -- a single fix owns the import it orphans --------------------------------------------------------


def _apply_edits(text: str, edits: list[tuple[int, int, int, int, str]]) -> str:
    """Apply (row, column, end row, end column, content) edits, 1-based, as an editor applies them."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    offset = lambda row, column: starts[row - 1] + column - 1
    for row, column, end_row, end_column, content in sorted(edits, reverse=True):
        text = text[:offset(row, column)] + content + text[offset(end_row, end_column):]
    return text


ONE_NAME = "from torch.cuda.amp import GradScaler\n\nscaler = GradScaler()\n"
TWO_NAMES = "from torch.cuda.amp import GradScaler, autocast  # old API\n\nscaler = GradScaler()\nwith autocast():\n    pass\n"


@pytest.mark.parametrize("source, expected", [
    (ONE_NAME, 'import torch\n\nscaler = torch.amp.GradScaler("cuda")\n'),
    (TWO_NAMES, 'from torch.cuda.amp import autocast  # old API\nimport torch\n\nscaler = torch.amp.GradScaler("cuda")\n'
                "with autocast():\n    pass\n"),
])
def test_one_json_or_sarif_fix_applied_alone_leaves_no_unused_import(tmp_path, source, expected):
    (tmp_path / "t.py").write_text(source)
    findings = json.loads(run_ampfix("check", "--no-cache", "--output-format", "json", "t.py", cwd=tmp_path).stdout)
    [scaler] = [f for f in findings if f["code"] == "AMP102"]
    edits = [(e["location"]["row"], e["location"]["column"], e["end_location"]["row"], e["end_location"]["column"], e["content"])
             for e in scaler["fix"]["edits"]]
    assert _apply_edits(source, edits) == expected
    sarif = json.loads(run_ampfix("check", "--no-cache", "--output-format", "sarif", "t.py", cwd=tmp_path).stdout)
    [result] = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "AMP102"]
    replacements = result["fixes"][0]["artifactChanges"][0]["replacements"]
    region = lambda r: (r["startLine"], r["startColumn"], r["endLine"], r["endColumn"])
    assert _apply_edits(source, [(*region(r["deletedRegion"]), r["insertedContent"]["text"]) for r in replacements]) == expected
    # --apply is unchanged: every fix, the import gone
    run_ampfix("check", "--no-cache", "--apply", "t.py", cwd=tmp_path)
    assert "torch.cuda.amp" not in (tmp_path / "t.py").read_text()


def test_a_name_still_used_elsewhere_keeps_its_import(tmp_path):
    source = "from torch.cuda.amp import GradScaler\n\nscaler = GradScaler()\nkind = GradScaler\n"
    (tmp_path / "t.py").write_text(source)
    [finding, *_] = json.loads(run_ampfix("check", "--no-cache", "--output-format", "json", "t.py", cwd=tmp_path).stdout)
    assert not any(e["location"]["row"] == 1 and e["content"] == "" for e in finding["fix"]["edits"])


# -- colour and fix previews ------------------------------------------------------------------------

ESC = "\x1b["


def _on_a_terminal(args: list[str], cwd, env: dict) -> str:
    """What ampfix prints when its stdout is a terminal (a pseudo-terminal)."""
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE")}
    with subprocess.Popen([sys.executable, "-m", "ampfix", *args], cwd=cwd, stdout=follower, stderr=subprocess.DEVNULL,
                          env={**full_env, **env}) as process:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode()


def test_colour_on_a_terminal_only_and_as_no_color_and_force_color_say(tmp_path):
    (tmp_path / "t.py").write_text(GRAD_SCALER)
    args = ["check", "--no-cache", "t.py"]
    assert ESC in _on_a_terminal(args, tmp_path, {})
    assert ESC not in _on_a_terminal(args, tmp_path, {"NO_COLOR": "1"})
    plain = {"NO_COLOR": "", "FORCE_COLOR": "", "CLICOLOR_FORCE": ""}
    assert ESC not in run_ampfix(*args, cwd=tmp_path, env=plain).stdout  # a pipe
    forced = run_ampfix(*args, cwd=tmp_path, env={**plain, "FORCE_COLOR": "1"}).stdout
    assert f"{ESC}31m{ESC}1mAMP102{ESC}0m" in forced
    assert ESC not in run_ampfix(*args, cwd=tmp_path, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert ESC not in run_ampfix(*args, "-o", "report.txt", cwd=tmp_path, env=plain).stdout
    assert ESC not in (tmp_path / "report.txt").read_text()


def test_show_fixes_prints_each_fixs_diff_under_its_finding(tmp_path):
    (tmp_path / "t.py").write_text(ONE_NAME)
    result = run_ampfix("check", "--no-cache", "--show-fixes", "t.py", cwd=tmp_path)
    assert result.returncode == 1 and (tmp_path / "t.py").read_text() == ONE_NAME  # a preview: nothing written
    preview = result.stdout.split("= help: ", 1)[1].split("\n\n")[1]
    assert preview.splitlines() == [
        "ℹ Safe fix",
        "1   |-from torch.cuda.amp import GradScaler",
        "  1 |+import torch",
        "2 2 | ",
        "3   |-scaler = GradScaler()",
        '  3 |+scaler = torch.amp.GradScaler("cuda")',
    ]
    without = run_ampfix("check", "--no-cache", "t.py", cwd=tmp_path)
    assert "Safe fix" not in without.stdout


# -- the README says what the program does ----------------------------------------------------------

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_the_readme_rule_table_agrees_with_ampfix_rule_all():
    import re

    listed = {r["code"]: r for r in json.loads(run_ampfix("rule", "--all", "--output-format", "json").stdout)}
    text = open(README, encoding="utf-8").read()
    table = text.split("## Rules", 1)[1].split("\n\n", 2)[1]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert [row[0] for row in rows] == list(listed)  # every rule, in order
    for code, name, fix, tier, _measured in rows:
        assert re.split(r"[:\s]", name, maxsplit=1)[0] == listed[code]["name"], code
        assert fix.split()[0] == listed[code]["fix"], code  # AMP401: "sometimes", not "safe"
        assert tier == listed[code]["stability"] + (" opportunity" if listed[code]["opportunity"] else ""), code


def test_the_readmes_first_run_reports_what_the_readme_says(tmp_path):
    import re
    import shlex
    import shutil

    from conftest import FIXTURES

    text = open(README, encoding="utf-8").read()
    command = re.search(r"pip install \. && (ampfix check [^\n]*fixtures/)", text).group(1)
    shutil.copytree(FIXTURES, tmp_path / "fixtures")
    result = run_ampfix(*shlex.split(command)[1:], cwd=tmp_path)
    total, scripts = map(int, re.search(r"It reports (\d+) problems in the (\d+) scripts", text).groups())
    safe, unsafe = map(int, re.search(r"`\[\*\]` marks the (\d+) findings\s+`--apply` fixes; (\d+) more", text).groups())
    assert result.stdout.splitlines()[-1] == f"Found {total} problems ({safe} fixable with --apply, {unsafe} with --unsafe-fixes)."
    assert len({line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("fixtures/")}) == scripts
    report_only = int(re.search(r"the other (\d+) are report-only", text).group(1))
    assert report_only == total - safe - unsafe
    without_exclude = [a for a in shlex.split(command)[1:] if a not in ("--extend-exclude", "*.fixed.py")]
    everything = run_ampfix(*without_exclude, cwd=tmp_path).stdout.splitlines()[-1]
    with_expected = int(re.search(r"checked too [(](\d+) problems[)]", text).group(1))
    assert everything.startswith(f"Found {with_expected} problems")


def test_notebook_fix_edits_in_another_cell_name_that_cell(tmp_path):
    cells = ["from torch.cuda.amp import GradScaler\n", "x = 1\n", "scaler = GradScaler()\n"]
    notebook = {"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [], "execution_count": None} for c in cells],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "nb.ipynb").write_text(json.dumps(notebook))
    [finding] = json.loads(run_ampfix("check", "--no-cache", "--output-format", "json", "nb.ipynb", cwd=tmp_path).stdout)
    by_cell: dict = {}
    for e in finding["fix"]["edits"]:
        by_cell.setdefault(e["cell"], []).append(
            (e["location"]["row"], e["location"]["column"], e["end_location"]["row"], e["end_location"]["column"], e["content"]))
    fixed = [_apply_edits(text, by_cell.get(number, [])) for number, text in enumerate(cells, start=1)]
    assert fixed == ["import torch\n", "x = 1\n", 'scaler = torch.amp.GradScaler("cuda")\n']
    sarif = json.loads(run_ampfix("check", "--no-cache", "--output-format", "sarif", "nb.ipynb", cwd=tmp_path).stdout)
    replacements = sarif["runs"][0]["results"][0]["fixes"][0]["artifactChanges"][0]["replacements"]
    assert [r["properties"]["cell"] for r in replacements] == [e["cell"] for e in finding["fix"]["edits"]]
