"""AMP304: `zero_grad()` on the step's own iterations before the step: the window is wiped."""

from __future__ import annotations

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.prefilter import FileBytes, may_train_step
from ampfix.rules._loop import at
from ampfix.rules.base import Rule
from ampfix.training.accumulation import window_wipes


class ZeroGradInsideAccumulationWindow(Rule):
    code = "AMP304"
    name = "zero-grad-inside-accumulation-window"
    summary = "`zero_grad()` under the accumulation step's condition, before the step, wipes the window"
    triggers = (b"zero_grad",)

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return may_train_step(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for fn in model.functions:
            for acc in model.accumulations(fn):
                for zero, step in window_wipes(model, fn, acc):
                    when = f"when `{ctx.segment(acc.gate.test)}`" if acc.gate is not None else (
                        f"after the loop over `{ctx.segment(acc.factor)}` micro-batches"
                    )
                    after = [b for b in acc.backwards if fn.before(zero, b) and fn.before(b, step)]
                    what = (
                        "before this iteration's backward: the step sees only the last micro-batch's gradients"
                        if after else "right before the step: the step sees no gradients at all"
                    )
                    message = (
                        f"`{ctx.segment(zero.call)}` runs {when}, {what}, so accumulation does "
                        f"nothing; zero the gradients after the step instead"
                    )
                    evidence = [
                        at(zero, f"gradients zeroed {when}"),
                        *(at(b, "then this backward adds one micro-batch") for b in after[:1]),
                        at(step, "the step that should have used the whole window"),
                    ]
                    yield ctx.diagnostic(self, zero.call, message, None, evidence)
