"""The probes of the model review (../shared/reference/model-review.md §2.1, §2.2, §2.5): short
programs that isolate one mechanism each (aliases, scalers named `gs`/`amp`, a reassigned
`use_amp`, protocol errors only a typestate sees). Each file in tests/review_probes/ is checked
with every rule; the codes it must produce are listed here."""

from __future__ import annotations

import os

import pytest

import ampfix
from ampfix.rules import RULES
from ampfix.settings import Settings

HERE = os.path.join(os.path.dirname(__file__), "review_probes")

EXPECTED = {
    # §2.1: `use_amp = i > 100` between the two tests: both mixed paths are possible
    "use_amp_reassigned.py": ["AMP202", "AMP203"],
    "use_amp_same_test.py": [],
    # §2.2: identity and roles from values
    "alias_unscale.py": [],
    "gs_created.py": ["AMP201"],
    "gs_parameter_same_name.py": ["AMP201"],
    "gs_parameter_from_caller.py": ["AMP201"],
    "amp_alias.py": ["AMP201"],
    "gs_field.py": ["AMP201"],
    "correct_protocol.py": [],
    "update_twice.py": ["AMP204"],
    # program-shapes §7: a step split across a class's methods (backward, clip, step)
    "step_split_across_methods.py": ["AMP201"],
    # §2.5: protocol errors a typestate reports by construction (both raise at run time)
    "second_unscale.py": ["AMP210"],
    "unscale_after_step.py": ["AMP210"],
    # §3.3 #10, #17: facts come from the code, not its comments or docstrings
    "todo_comment_fp16.py": ["AMP501"],
    "reduction_sum_comment.py": ["AMP301"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_probe(name):
    with open(os.path.join(HERE, name)) as handle:
        source = handle.read()
    found = [d.code for d in ampfix.check_source(source, name, Settings(select=frozenset(RULES)))]
    assert sorted(found) == EXPECTED[name]
