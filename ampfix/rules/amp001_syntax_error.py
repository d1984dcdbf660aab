"""AMP001 (syntax-error) and AMP002 (invalid-suppression): the engine's own findings.

They are rules so that selection, suppression and `ampfix rule` treat them like any other;
the engine, not ``check``, produces them.
"""

import re
from typing import TYPE_CHECKING

from ampfix.rules.base import FIX_NONE, STABLE, Rule

if TYPE_CHECKING:
    from ampfix.prefilter import FileBytes

_AMP_CODE = re.compile(rb"AMP\d")


class SyntaxErrorRule(Rule):
    code = "AMP001"
    stability = STABLE
    name = "syntax-error"
    summary = "The file cannot be parsed, so it is not checked"
    triggers = ()
    fix_safety = FIX_NONE

    def check(self, ctx):
        return iter(())


class InvalidSuppression(Rule):
    code = "AMP002"
    stability = STABLE
    name = "invalid-suppression"
    summary = "A suppression comment names an AMP code that does not exist"
    triggers = (b"AMP",)

    fix_safety = FIX_NONE

    @classmethod
    def may_fire(cls, file: "FileBytes") -> bool:
        return file.has(b"AMP") and file.matches(_AMP_CODE)

    def check(self, ctx):
        return iter(())
