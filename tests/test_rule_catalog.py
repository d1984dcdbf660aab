"""The rule catalog (ampfix/rules/catalog.py): generated from the rule classes, kept current, and
what lets a check of files that name no AMP API start without importing any rule or the analysis."""

from __future__ import annotations

import subprocess
import sys

from ampfix.rules import RULES, prefilter_for
from ampfix.rules.catalog import CATALOG
from ampfix.rules.write_catalog import CATALOG_PATH, generated_rows


def test_the_catalog_is_current():
    with open(CATALOG_PATH, encoding="utf-8") as handle:
        text = handle.read()
    assert generated_rows() in text, "stale: run `python -m ampfix.rules.write_catalog`"


def test_every_entry_loads_the_rule_it_describes():
    assert list(RULES) == sorted(CATALOG)
    for code, entry in CATALOG.items():
        rule = RULES[code]
        assert rule.code == code and type(rule).__name__ == entry.cls
        assert (tuple(rule.triggers), rule.stability, rule.opportunity) == entry[2:]


def test_the_prefilter_of_catalog_rules_asks_each_rules_own_condition():
    # AMP206's trigger (`caler`) is in both files; its own condition also needs a `state_dict`
    codes = frozenset({"AMP206"})
    assert prefilter_for(codes).candidates(b"scaler = GradScaler()\n") == frozenset()
    saving = b"scaler = GradScaler()\ntorch.save({'model': m.state_dict()}, path)\n"
    assert prefilter_for(codes).candidates(saving) == codes


_PROBE = """
import sys
from ampfix.cli import main
try:
    main(["check", "--no-cache", "--isolated", "--quiet", sys.argv[1]])
except SystemExit as exit:
    assert exit.code == int(sys.argv[2]), exit.code
loaded = sorted(m for m in sys.modules if m.startswith(("ampfix.rules.amp", "ampfix.engine", "ampfix.training", "ampfix.program", "libcst")))
print(" ".join(loaded))
"""


def _modules_loaded_checking(path, exit_code):
    done = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(exit_code)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()  # the probe's last line: the findings come before it


def test_a_file_without_amp_imports_no_rule_and_no_analysis(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text("import os\n\nprint(os.getcwd())\n")
    assert _modules_loaded_checking(plain, 0) == []


def test_a_file_the_prefilter_passes_imports_the_rules_it_may_fire(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import torch\n\nwith torch.cuda.amp.autocast():\n    pass\n")
    loaded = _modules_loaded_checking(script, 1)
    assert "ampfix.rules.amp101_deprecated_autocast" in loaded and "ampfix.engine" in loaded
    assert "ampfix.rules.amp206_checkpoint_without_scaler" not in loaded  # no trigger of it here
