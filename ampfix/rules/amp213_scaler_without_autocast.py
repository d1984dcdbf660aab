"""AMP213: a GradScaler in a step that nothing runs in low precision: scaling fp32 gradients."""

from __future__ import annotations

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.prefilter import FileBytes, may_backward_scaled
from ampfix.rules._loop import at, created
from ampfix.rules.base import Rule
from ampfix.training.frameworks import autocast_may_be_entered, disabled
from ampfix.training.model import BACKWARD


class ScalerWithoutAutocast(Rule):
    code = "AMP213"
    name = "scaler-without-autocast"
    summary = "A GradScaler scales a loss that no autocast (or low-precision weight) produced"
    triggers = (b"GradScaler",)

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return may_backward_scaled(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for fn in model.functions:
            for backward in fn.of(BACKWARD):
                if not backward.scaled:
                    continue
                create = model.created_at(fn, backward.scaler, backward.scaler_obj)
                if create is None or disabled(create.call):
                    continue  # a scaler of unknown origin, or one switched off
                if autocast_may_be_entered(ctx, fn.node):
                    continue  # some code around the step may run it in low precision: unsure
                message = (
                    f"`{backward.scaler}` scales a loss computed with no autocast anywhere in the step (nor "
                    f"float16 weights): its gradients are float32, which do not underflow, so loss scaling "
                    f"only costs an inf check per step; wrap the forward pass and the loss in "
                    f"`torch.autocast`, or drop the scaler"
                )
                evidence = [
                    at(backward, f"scaled by `{backward.scaler}` here"),
                    created(ctx, fn, backward.scaler, backward.scaler_obj),
                ]
                yield ctx.diagnostic(self, backward.call, message, None, evidence)
