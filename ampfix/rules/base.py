"""The shape of a rule.

A rule is a small class: its code, a kebab-case name, a one-line summary, what must appear in a
file's bytes for it to possibly fire (the prefilter, ampfix/prefilter.py: ``triggers``, rare
tokens one of which must occur, and ``may_fire``, the rule's whole necessary condition, by
default ``requires``, tokens all of which must occur; a file that no selected rule may fire on is
never parsed), its fix safety, and ``check(ctx)``, which yields diagnostics. The conditions must
be sound: tests run every rule without the prefilter on the fixtures, the rule examples and the
corpus sites. Each rule's document lives in ``rules/<CODE>.md`` and is what ``ampfix rule CODE``
prints; the tests run the examples in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Iterator, Optional

if TYPE_CHECKING:
    from ampfix.context import ModuleContext
    from ampfix.diagnostics import Diagnostic
    from ampfix.prefilter import FileBytes

# What `ampfix rule --all` shows in its fix column.
FIX_SAFE = "safe"
FIX_UNSAFE = "unsafe"
FIX_SOMETIMES = "sometimes"  # safe where the rewrite is local, report-only otherwise
FIX_NONE = "none"

# Stability tiers, as ruff has them: a rule is ``preview`` until its findings on code nobody tuned
# it on (the ecosystem check's scoring half) have earned ``stable``; preview rules run only with
# ``--preview``. The figure that promoted a rule is in README's rule table.
STABLE = "stable"
PREVIEW = "preview"


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    triggers: ClassVar[tuple[bytes, ...]]  # at least one must occur ...
    requires: ClassVar[tuple[bytes, ...]] = ()  # ... and all of these
    fix_safety: ClassVar[str] = FIX_NONE
    stability: ClassVar[str] = PREVIEW  # a new rule starts in preview
    # A suggestion to speed training up (convert an fp32 loop), not a bug: never in the default
    # selection nor in `ALL` or a prefix; it runs only when selected by its exact code.
    opportunity: ClassVar[bool] = False
    # What its fix changes in training, for a rule whose fix mends a bug. Fix safety as ruff
    # defines it: a safe fix computes the same thing; one that changes numerics or control flow,
    # even to mend a bug, is unsafe. This is the one definition: the report, --apply, the
    # pre-commit hook and the verifier (which expects these runs to differ) all read it.
    changes_training: ClassVar[Optional[str]] = None

    @classmethod
    def may_fire(cls, file: "FileBytes") -> bool:
        """The prefilter: False only when this rule cannot fire on a file with these bytes."""
        return file.has(*cls.triggers) and all(file.has(r) for r in cls.requires)

    # Triggers are the rare tokens (the prefilter scans every file for them); common ones
    # (`state_dict`, `zero_grad`) belong in ``requires``, which only files with a trigger pay for.

    def check(self, ctx: "ModuleContext") -> Iterator["Diagnostic"]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.code} {self.name}>"
