"""[tool.ampfix] configuration: discovery, every key, and errors that name the file and key."""

import json

import pytest

from ampfix.settings import CliOverrides, ConfigError, build_settings, find_config, load_config
from conftest import run_ampfix

OLD = "import torch\nscaler = torch.cuda.amp.GradScaler()\nwith torch.cuda.amp.autocast():\n    pass\n"


def settings_for(tmp_path, toml, **cli):
    (tmp_path / "pyproject.toml").write_text(toml)
    return build_settings(find_config(str(tmp_path)), CliOverrides(**cli))


def test_select_ignore_extend_select(tmp_path):
    s = settings_for(tmp_path, '[tool.ampfix]\nselect = ["AMP1"]\nignore = ["AMP102"]\nextend-select = ["AMP001"]\n')
    assert "AMP101" in s.select and "AMP102" not in s.select and "AMP001" in s.select and "AMP002" not in s.select


def test_cli_select_replaces_config_select(tmp_path):
    s = settings_for(tmp_path, '[tool.ampfix]\nselect = ["AMP101"]\n', select=["AMP102"])
    assert s.select == frozenset({"AMP102"})


@pytest.mark.parametrize(
    "toml, cli, selected, not_selected",
    [
        # ruff's order: the command line is applied after the configuration
        ('ignore = ["AMP1"]', {"select": ["AMP101"]}, {"AMP101"}, {"AMP102"}),
        ('ignore = ["AMP101"]', {"extend_select": ["AMP101"]}, {"AMP101", "AMP201"}, set()),
        ('select = ["AMP2"]', {"ignore": ["AMP201"]}, {"AMP202"}, {"AMP201", "AMP101"}),
        ('select = ["AMP2"]\nignore = ["AMP201"]', {"extend_select": ["AMP1"]}, {"AMP101", "AMP202"}, {"AMP201"}),
        # within one layer the most specific selector decides
        ('extend-select = ["AMP101"]\nignore = ["AMP1"]', {}, {"AMP101", "AMP201"}, {"AMP102"}),
    ],
)
def test_command_line_selectors_apply_after_the_configuration(tmp_path, toml, cli, selected, not_selected):
    s = settings_for(tmp_path, f"[tool.ampfix]\n{toml}\npreview = true\n", **cli)
    assert selected <= s.select and not (not_selected & s.select)


def test_a_bad_command_line_value_is_reported_as_the_command_line_s(tmp_path):
    with pytest.raises(ConfigError, match=r"^--default-device: expected one of"):
        settings_for(tmp_path, "[tool.ampfix]\n", default_device="tpu")
    with pytest.raises(ConfigError, match=r"pyproject.toml: `tool.ampfix.default-device`: expected one of"):
        settings_for(tmp_path, '[tool.ampfix]\ndefault-device = "tpu"\n')


def test_target_torch_from_config_and_cli(tmp_path):
    assert settings_for(tmp_path, '[tool.ampfix]\ntarget-torch = "2.1"\n').target_torch == (2, 1)
    assert settings_for(tmp_path, '[tool.ampfix]\ntarget-torch = "2.1"\n', target_torch="2.5").target_torch == (2, 5)


def test_target_torch_inferred_from_the_project_requirement(tmp_path):
    s = settings_for(tmp_path, '[project]\nname = "x"\ndependencies = ["numpy", "torch>=2.2,<3"]\n')
    assert s.target_torch == (2, 2)
    s = settings_for(tmp_path, '[project]\nname = "x"\ndependencies = ["torchvision>=0.9", "torch"]\n')
    assert s.target_torch == (2, 4)  # unpinned: the default


def test_requirement_in_a_pyproject_without_the_table_is_still_used(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["torch~=2.1.0"]\n')
    assert build_settings(find_config(str(tmp_path)), CliOverrides()).target_torch == (2, 1)


def test_nearest_config_wins(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nselect = ["AMP101"]\n')
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[tool.ampfix]\nselect = ["AMP102"]\n')
    assert build_settings(find_config(str(sub)), CliOverrides()).select == frozenset({"AMP102"})


def test_per_file_ignores(tmp_path):
    s = settings_for(tmp_path, '[tool.ampfix]\n[tool.ampfix.per-file-ignores]\n"tests/*" = ["AMP1"]\n"legacy.py" = ["AMP102"]\n')
    assert "AMP101" not in s.enabled(str(tmp_path / "tests" / "t.py"))
    assert "AMP102" not in s.enabled(str(tmp_path / "pkg" / "legacy.py"))
    assert "AMP101" in s.enabled(str(tmp_path / "pkg" / "legacy.py"))


@pytest.mark.parametrize("path, test_module", [
    ("tests/train.py", True), ("test/common/optimization.py", True), ("pkg/test_ema.py", True),
    ("pkg/ema_test.py", True), ("conftest.py", True), ("train.py", False), ("latest_model.py", False),
    ("attestation/train.py", False), ("contest.py", False),
])
def test_the_training_rules_do_not_run_in_test_modules_unless_asked(tmp_path, path, test_module):
    # a test exercises a training step, it does not train: the migrations still run there
    s = settings_for(tmp_path, "[tool.ampfix]\npreview = true\n")
    enabled = s.enabled(str(tmp_path / path))
    assert "AMP101" in enabled and ("AMP301" not in enabled) == test_module and ("AMP501" in enabled) == (
        "AMP501" in s.select and not test_module)
    checked = settings_for(tmp_path, "[tool.ampfix]\npreview = true\ncheck-tests = true\n")
    assert "AMP301" in checked.enabled(str(tmp_path / path)) and checked.cache_key() != s.cache_key()


def test_unsafe_fixes_key(tmp_path):
    assert settings_for(tmp_path, "[tool.ampfix]\nunsafe-fixes = true\n").unsafe_fixes is True
    assert settings_for(tmp_path, "[tool.ampfix]\nunsafe-fixes = true\n", unsafe_fixes=False).unsafe_fixes is False


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[tool.ampfix]\nselct = []\n", "unknown key `tool.ampfix.selct`"),
        ('[tool.ampfix]\nselect = ["AMP999"]\n', "`tool.ampfix.select`: unknown rule selector `AMP999`"),
        ('[tool.ampfix]\nselect = "AMP1"\n', "`tool.ampfix.select`: expected a list of strings"),
        ('[tool.ampfix]\ntarget-torch = "two"\n', "invalid torch version `two`"),
        ('[tool.ampfix]\nunsafe-fixes = "yes"\n', "`tool.ampfix.unsafe-fixes`: expected true or false"),
        ('[tool.ampfix]\nper-file-ignores = ["x"]\n', "expected a table"),
        ('[tool.ampfix]\namp-dtype = "float8"\n', "`tool.ampfix.amp-dtype`: expected float16 or bfloat16"),
        ("[tool.ampfix\nselect = []\n", "invalid TOML"),
    ],
)
def test_bad_config_names_file_and_key_and_exits_2(tmp_path, toml, message):
    (tmp_path / "pyproject.toml").write_text(toml)
    (tmp_path / "t.py").write_text(OLD)
    result = run_ampfix("check", ".", cwd=tmp_path)
    assert result.returncode == 2
    assert str(tmp_path / "pyproject.toml") in result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_option_and_isolated(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nselect = ["AMP101"]\n')
    other = tmp_path / "other.toml"
    other.write_text('[tool.ampfix]\nselect = ["AMP102"]\n')
    (tmp_path / "t.py").write_text(OLD)

    def codes(*args):
        result = run_ampfix("check", "--output-format", "json", *args, "t.py", cwd=tmp_path)
        return [r["code"] for r in json.loads(result.stdout)]

    assert codes() == ["AMP101"]
    assert codes("--config", str(other)) == ["AMP102"]
    assert codes("--isolated") == ["AMP102", "AMP101"]


def test_config_file_without_table_is_an_error(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match="no \\[tool.ampfix\\] table"):
        load_config(str(path))


def test_exclude_and_extend_exclude(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nextend-exclude = ["generated/", "skip_*.py"]\n')
    for name in ("a.py", "generated/b.py", "skip_c.py", "build/d.py"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(OLD)
    result = run_ampfix("check", "--output-format", "json", ".", cwd=tmp_path)
    assert {r["filename"].rsplit("/", 1)[-1] for r in json.loads(result.stdout)} == {"a.py"}


# -- fix safety as ruff defines it, and the overrides ---------------------------------------------

CLIP_BUG = """import torch
for x, y in loader:
    scaler.scale(loss_fn(model(x), y)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
"""


def test_extend_safe_and_unsafe_fixes_follow_ruffs_precedence(tmp_path):
    s = settings_for(tmp_path, '[tool.ampfix]\nextend-safe-fixes = ["AMP2"]\nextend-unsafe-fixes = ["AMP204"]\n')
    assert "AMP201" in s.safe_fix_codes and "AMP204" in s.unsafe_fix_codes and "AMP204" not in s.safe_fix_codes
    tie = settings_for(tmp_path, '[tool.ampfix]\nextend-safe-fixes = ["AMP101"]\n', extend_unsafe_fixes=["AMP101"])
    assert "AMP101" in tie.unsafe_fix_codes  # unsafe wins a tie
    with pytest.raises(ConfigError, match="extend-safe-fixes"):
        settings_for(tmp_path, '[tool.ampfix]\nextend-safe-fixes = ["AMP9"]\n')


def test_a_bug_fix_is_unsafe_until_a_team_promotes_it(tmp_path):
    (tmp_path / "train.py").write_text(CLIP_BUG)
    assert run_ampfix("--apply", "--preview", "train.py", cwd=tmp_path).returncode == 1
    assert (tmp_path / "train.py").read_text() == CLIP_BUG  # unsafe: not applied by --apply
    result = run_ampfix("--apply", "--preview", "--extend-safe-fixes", "AMP201", "train.py", cwd=tmp_path)
    assert result.returncode == 0 and "scaler.unscale_(optimizer)" in (tmp_path / "train.py").read_text()
    (tmp_path / "train.py").write_text(CLIP_BUG)
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nextend-safe-fixes = ["AMP201"]\n')
    assert run_ampfix("--apply", "--preview", "train.py", cwd=tmp_path).returncode == 0


def test_one_definition_of_a_fix_that_changes_training():
    """Every rule whose fix mends a bug says what it changes (the verifier reads it) and offers
    only unsafe fixes; the others' fixes keep behaviour."""
    from ampfix.rules import RULES
    from ampfix.rules.base import FIX_UNSAFE
    from ampfix.verify.checks import BEHAVIOUR_CHANGING

    changing = {code for code, rule in RULES.items() if rule.changes_training}
    assert changing == set(BEHAVIOUR_CHANGING) >= {"AMP201", "AMP202", "AMP203", "AMP204", "AMP301", "AMP302", "AMP303"}
    assert all(RULES[code].fix_safety == FIX_UNSAFE for code in changing)


def test_each_file_is_checked_with_its_nearest_configuration_whatever_the_order(tmp_path):
    # a monorepo: package a ignores the deprecations, package b does not
    for name, table in (("a", 'ignore = ["AMP1"]'), ("b", "")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "pyproject.toml").write_text(f"[tool.ampfix]\n{table}\n")
        (tmp_path / name / "train.py").write_text(OLD)
    outputs = [
        run_ampfix("check", "--no-cache", "--output-format", "concise", *order, cwd=tmp_path).stdout
        for order in (("a", "b"), ("b", "a"))
    ]
    assert outputs[0] == outputs[1]
    assert "b/train.py" in outputs[0] and "a/train.py" not in outputs[0]


def test_show_settings_says_where_each_setting_comes_from(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nignore = ["AMP1"]\ndefault-device = "cpu"\n')
    (tmp_path / "train.py").write_text(OLD)
    result = run_ampfix("check", "--preview", "--show-settings", "--amp-dtype", "bfloat16", "train.py", cwd=tmp_path)
    assert result.returncode == 0
    lines = {line.split("=", 1)[0].strip(): line for line in result.stdout.splitlines()}
    assert lines["config"].endswith("pyproject.toml    # the nearest .ampfix.toml, ampfix.toml or pyproject.toml with [tool.ampfix]")
    assert "AMP101" not in lines["select"] and "AMP201" in lines["select"] and lines["select"].endswith("pyproject.toml")
    assert lines["default-device"].split("=", 1)[1].strip().startswith("cpu") and lines["default-device"].endswith("pyproject.toml")
    assert "bfloat16" in lines["amp-dtype"] and lines["amp-dtype"].endswith("# command line")
    assert lines["target-torch"].endswith("# default")


def test_an_ampfix_toml_is_a_configuration_and_wins_over_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nselect = ["AMP2"]\n')
    (tmp_path / "ampfix.toml").write_text('select = ["AMP1"]\nignore = ["AMP101"]\n')
    s = build_settings(find_config(str(tmp_path)), CliOverrides())
    assert "AMP102" in s.select and "AMP101" not in s.select and "AMP201" not in s.select
    (tmp_path / "ampfix.toml").write_text('bogus = 1\n')
    with pytest.raises(ConfigError, match=r"ampfix.toml: unknown key `bogus`"):
        find_config(str(tmp_path))


def test_extend_inherits_and_overrides(tmp_path):
    (tmp_path / "base.toml").write_text('select = ["AMP1", "AMP2"]\ndefault-device = "cpu"\npreview = true\n')
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "pyproject.toml").write_text('[tool.ampfix]\nextend = "../base.toml"\nignore = ["AMP201"]\n')
    s = build_settings(find_config(str(tmp_path / "pkg")), CliOverrides())
    assert s.default_device == "cpu" and "AMP202" in s.select and "AMP201" not in s.select and "AMP501" not in s.select
    (tmp_path / "base.toml").write_text('extend = "pkg/pyproject.toml"\n')
    with pytest.raises(ConfigError, match="makes a cycle"):
        find_config(str(tmp_path / "pkg"))


def test_unfixable_codes_are_reported_without_their_fix(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nunfixable = ["AMP102"]\n')
    (tmp_path / "train.py").write_text(OLD)
    result = run_ampfix("check", "--apply", "--no-cache", "train.py", cwd=tmp_path)
    text = (tmp_path / "train.py").read_text()
    assert "torch.cuda.amp.GradScaler" in text and "torch.cuda.amp.autocast" not in text  # AMP101 fixed only
    assert result.returncode == 1 and "no fix offered: fixes of AMP102 are turned off (`unfixable`)" in result.stdout
    again = run_ampfix("check", "--apply", "--no-cache", "--fixable", "ALL", "train.py", cwd=tmp_path)
    assert again.returncode == 0 and "torch.cuda.amp" not in (tmp_path / "train.py").read_text()
