"""Rule tiers as ruff has them: the default selection is the stable rules; preview rules run only
with ``--preview``; an opportunity (AMP501) runs only when selected by its exact code."""

import json

from conftest import run_ampfix

from ampfix.rules import RULES
from ampfix.settings import CliOverrides, FileConfig, build_settings, default_settings

STABLE = {code for code, rule in RULES.items() if rule.stability == "stable"}
PREVIEW = set(RULES) - STABLE

CLIP_BUG = """\
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    scaler.scale(model(x).sum()).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
"""

FP32_TUTORIAL = """\
import torch
model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).cuda()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    x, y = x.cuda(), y.cuda()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def settings(**cli):
    return build_settings(FileConfig(), CliOverrides(**cli))


def test_the_default_selection_is_the_stable_rules():
    assert default_settings().select == STABLE
    assert settings(select=["ALL"]).select == STABLE
    assert PREVIEW and STABLE >= {"AMP001", "AMP101", "AMP102"}


def test_preview_adds_the_preview_rules_but_not_the_opportunities():
    chosen = settings(preview=True).select
    assert chosen == set(RULES) - {"AMP501"}
    assert "AMP501" not in settings(preview=True, select=["AMP5"]).select  # a prefix is not enough
    assert "AMP501" in settings(preview=True, select=["AMP501"]).select
    assert "AMP501" in settings(preview=True, extend_select=["AMP501"]).select


def test_a_preview_rule_named_without_preview_has_no_effect_and_says_how_to_enable_it():
    chosen = settings(select=["AMP201", "AMP102"])
    assert chosen.select == {"AMP102"}
    [warning] = chosen.warnings
    assert "`AMP201` has no effect because preview is not enabled" in warning and "--preview" in warning
    assert settings(select=["AMP2"]).warnings == ()  # a prefix names no rule in particular


def test_preview_in_the_configuration_file(tmp_path):
    (tmp_path / "train.py").write_text(CLIP_BUG)
    assert "AMP201" not in run_ampfix("check", "--no-cache", "train.py", cwd=tmp_path).stdout
    (tmp_path / "pyproject.toml").write_text("[tool.ampfix]\npreview = true\n")
    assert "AMP201" in run_ampfix("check", "--no-cache", "train.py", cwd=tmp_path).stdout
    # the command line wins
    assert "AMP201" not in run_ampfix("check", "--no-cache", "--no-preview", "train.py", cwd=tmp_path).stdout
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\npreview = "yes"\n')
    bad = run_ampfix("check", "--no-cache", "train.py", cwd=tmp_path)
    assert bad.returncode == 2 and "`tool.ampfix.preview`: expected true or false" in bad.stderr


def test_the_command_line_warns_once_and_still_checks(tmp_path):
    (tmp_path / "train.py").write_text(CLIP_BUG)
    result = run_ampfix("check", "--no-cache", "--select", "AMP201", "train.py", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr.count("warning: selection `AMP201` has no effect") == 1
    result = run_ampfix("check", "--no-cache", "--preview", "--select", "AMP201", "train.py", cwd=tmp_path)
    assert result.returncode == 1 and "AMP201" in result.stdout and "warning" not in result.stderr


def test_a_plain_fp32_tutorial_loop_reports_nothing_by_default(tmp_path):
    (tmp_path / "train.py").write_text(FP32_TUTORIAL)
    assert run_ampfix("check", "--no-cache", "train.py", cwd=tmp_path).returncode == 0
    assert run_ampfix("check", "--no-cache", "--preview", "train.py", cwd=tmp_path).returncode == 0
    opted_in = run_ampfix("check", "--no-cache", "--preview", "--select", "AMP501", "train.py", cwd=tmp_path)
    assert "AMP501" in opted_in.stdout
    # the opportunity named by its code is the opt-in: it needs no --preview, and no warning says so
    alone = run_ampfix("check", "--no-cache", "--select", "AMP501", "train.py", cwd=tmp_path)
    assert "AMP501" in alone.stdout and "no effect" not in alone.stderr
    extended = run_ampfix("check", "--no-cache", "--extend-select", "AMP501", "train.py", cwd=tmp_path)
    assert "AMP501" in extended.stdout


def test_the_opportunity_stays_silent_where_amp_does_not_pay(tmp_path):
    # AMP501 opted in: a CPU-only loop, a test, a linear regression, a model built in bfloat16 by its config
    cpu = FP32_TUTORIAL.replace(".cuda()", "")
    regression = FP32_TUTORIAL.replace(
        "torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))", "torch.nn.Linear(1, 1)")
    bfloat16 = FP32_TUTORIAL.replace("import torch\n", 'import torch\ncfg = {"dtype": torch.bfloat16}\n').replace(
        ".cuda()\n", '.to("cuda", dtype=cfg["dtype"])\n', 1)
    (tmp_path / "tests").mkdir()
    for name, source in (("cpu.py", cpu), ("tests/test_train.py", FP32_TUTORIAL), ("regression.py", regression),
                         ("bf16.py", bfloat16), ("bench/baseline.py", FP32_TUTORIAL)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(source)
        result = run_ampfix("check", "--no-cache", "--select", "AMP501", name, cwd=tmp_path)
        assert result.returncode == 0, (name, result.stdout)
    (tmp_path / "train.py").write_text(FP32_TUTORIAL)
    found = run_ampfix("check", "--no-cache", "--preview", "--select", "AMP501", "train.py", cwd=tmp_path).stdout
    assert "the model's `torch.nn.Linear` runs in float32" in found  # why it pays, as evidence


def test_rule_shows_the_tier(tmp_path):
    assert "This rule is in preview and is not stable" in run_ampfix("rule", "AMP301").stdout
    assert "This rule is stable." in run_ampfix("rule", "AMP102").stdout
    assert "runs only when selected by its code" in run_ampfix("rule", "AMP501").stdout
    rows = {r["code"]: r for r in json.loads(run_ampfix("rule", "--all", "--output-format", "json").stdout)}
    assert rows["AMP102"]["stability"] == "stable" and rows["AMP201"]["stability"] == "preview"
    assert rows["AMP501"]["opportunity"] is True and rows["AMP102"]["opportunity"] is False
