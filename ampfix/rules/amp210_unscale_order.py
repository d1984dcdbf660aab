"""AMP210: `scaler.unscale_(optimizer)` twice, or after `scaler.step(optimizer)`, in one step."""

from __future__ import annotations

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.prefilter import FileBytes, may_use_scaler
from ampfix.rules._loop import at
from ampfix.rules.base import FIX_NONE, Rule
from ampfix.training.model import BACKWARD, SCALER_STEP, UNSCALE
from ampfix.training.typestate import SECOND_UNSCALE, UNSCALE_AFTER_STEP, errors_of, seen_by_the_callee


class UnscaleOrder(Rule):
    code = "AMP210"
    name = "unscale-twice-or-after-step"
    summary = "`scaler.unscale_(optimizer)` runs twice, or after `scaler.step(optimizer)`, before `update()`"
    triggers = (b"unscale_",)
    fix_safety = FIX_NONE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return file.calls("unscale_") and may_use_scaler(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        if not any(fn.of(UNSCALE) for fn in model.functions):
            return  # an unscale_ of another module only: that module's finding
        for fn in model.functions:
            for error in errors_of(model, fn, SECOND_UNSCALE, UNSCALE_AFTER_STEP):
                if seen_by_the_callee(error):
                    continue  # every event is one call's: the callee's own finding says it
                unscale = error.event
                optimizer = ctx.segment(unscale.arg) if unscale.arg is not None and unscale.via is None else "optimizer"
                scaler = error.scaler or "scaler"
                if error.kind == SECOND_UNSCALE:
                    message = (
                        f"`{scaler}.unscale_({optimizer})` runs a second time since the last `update()`: it raises "
                        f"`RuntimeError: unscale_() has already been called on this optimizer since the last update()`; "
                        f"unscale once per step, before the first clip"
                    )
                else:
                    message = (
                        f"`{scaler}.unscale_({optimizer})` runs after `{scaler}.step({optimizer})`: it raises "
                        f"`RuntimeError: unscale_() is being called after step()`; unscale (and clip) before the step"
                    )
                evidence = [at(e, _note(e)) for e in error.path]
                evidence.append(at(unscale, "then unscaled again here" if error.kind == SECOND_UNSCALE
                                   else "then unscaled here, before any `update()`"))
                yield ctx.diagnostic(self, unscale.call, message, None, evidence)


def _note(event) -> str:
    if event.kind == BACKWARD:
        return "gradients scaled here"
    if event.kind == UNSCALE:
        return "unscaled here"
    if event.kind == SCALER_STEP:
        return "stepped here (the step unscales and records it)"
    return "on the path"

