"""The shape of a rule.

A rule is a small class: its code, a kebab-case name, a one-line summary, the byte strings that
must appear in a file for it to possibly fire (the prefilter: a file containing none of any
selected rule's triggers is never parsed), its fix safety, and ``check(ctx)``, which yields
diagnostics. Each rule's document lives in ``rules/<CODE>.md`` and is what ``ampfix rule CODE``
prints; the tests run the examples in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Iterator

if TYPE_CHECKING:
    from ampfix.context import ModuleContext
    from ampfix.diagnostics import Diagnostic

# What `ampfix rule --all` shows in its fix column.
FIX_SAFE = "safe"
FIX_UNSAFE = "unsafe"
FIX_SOMETIMES = "sometimes"  # safe where the rewrite is local, report-only otherwise
FIX_NONE = "none"


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    triggers: ClassVar[tuple[bytes, ...]]
    fix_safety: ClassVar[str] = FIX_NONE

    def check(self, ctx: "ModuleContext") -> Iterator["Diagnostic"]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.code} {self.name}>"
