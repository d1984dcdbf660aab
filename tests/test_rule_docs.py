"""Every rule has a document, and the document's examples are true: the Example fires the rule,
the fix turns it into exactly the "Use instead" code, and that code is clean."""

import os
import re

import pytest

import ampfix
from ampfix.rules import RULES
from ampfix.rules.base import FIX_NONE
from ampfix.settings import Settings
from conftest import RULE_DOCS, run_ampfix

SECTIONS = (
    "## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix safety", "## Known problems",
)


def blocks(doc, heading):
    part = doc.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, re.S)


def doc(code):
    with open(os.path.join(RULE_DOCS, f"{code}.md"), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.parametrize("code", sorted(RULES))
def test_document_has_every_section(code):
    text = doc(code)
    assert text.startswith(f"# {RULES[code].name} ({code})")
    for section in SECTIONS:
        assert section in text, f"{code}.md lacks {section}"
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions), f"{code}.md has its sections out of order"


@pytest.mark.parametrize("code", sorted(RULES))
def test_example_fires_and_use_instead_is_clean(code):
    text = doc(code)
    example, = blocks(text, "## Example")
    use_instead, = blocks(text, "## Use instead")
    settings = Settings(target_torch_declared=True)  # AMP106 asks for a declared torch floor
    found = [d.code for d in ampfix.check_source(example, "example.py", settings)]
    assert code in found
    assert code not in [d.code for d in ampfix.check_source(use_instead, "example.py", settings)]


@pytest.mark.parametrize("code", sorted(c for c, r in RULES.items() if r.fix_safety != FIX_NONE))
def test_fix_turns_example_into_use_instead(code):
    text = doc(code)
    example, = blocks(text, "## Example")
    use_instead, = blocks(text, "## Use instead")
    settings = Settings(select=frozenset({code}), target_torch_declared=True)
    result = ampfix.fix_source(example, "example.py", settings, unsafe_fixes=True)
    assert result.source == use_instead


def test_rule_command_prints_document():
    result = run_ampfix("rule", "amp102")
    assert result.returncode == 0
    assert result.stdout.startswith("# deprecated-grad-scaler (AMP102)")


def test_rule_all_lists_every_rule_with_fix_safety():
    result = run_ampfix("rule", "--all")
    assert result.returncode == 0
    for code, rule in RULES.items():
        tier = rule.stability + (" opportunity" if rule.opportunity else "")
        assert re.search(rf"^{code}\s+{rule.name}\s+{tier}\s+{rule.fix_safety}\s", result.stdout, re.M)


def test_rule_unknown_code_is_a_usage_error():
    result = run_ampfix("rule", "AMP999")
    assert result.returncode == 2
    assert "unknown rule code `AMP999`" in result.stderr
