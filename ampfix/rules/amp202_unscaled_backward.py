"""AMP202: a backward pass that bypasses the scaler in a step that uses it."""

from __future__ import annotations

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import delete_statement, parent_body
from ampfix.prefilter import FileBytes, may_backward, may_scale_loss, may_step_scaler
from ampfix.rules._loop import at
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.loss import may_be_scaled
from ampfix.training.model import BACKWARD, SCALE, SCALER_STEP
from ampfix.training.typestate import PLAIN_THEN_STEP, errors_of


class UnscaledBackward(Rule):
    code = "AMP202"
    name = "unscaled-backward"
    summary = "`scaler.scale(loss)` is discarded, or `loss.backward()` runs unscaled before `scaler.step`"
    triggers = (b"caler", b"CALER", b"unscale_")  # GradScaler, scaler, loss_scaler, x.unscale_()
    fix_safety = FIX_UNSAFE
    changes_training = "the backward now goes through the scaler"  # a bug fix: unsafe, as ruff defines it

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        """A discarded ``scaler.scale(loss)``, or a plain backward before ``scaler.step``."""
        return may_scale_loss(file) or (may_backward(file) and may_step_scaler(file))

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for fn in model.functions:
            handled = set()
            plain = [b for b in fn.of(BACKWARD) if not b.scaled and b.receiver is None]
            for scale in fn.of(SCALE):
                loss = ctx.segment(scale.arg)
                later = [b for b in plain if fn.before(scale, b)
                         and ctx.segment(b.arg) == loss]
                message = (
                    f"the result of `{scale.receiver}.scale({loss})` is discarded: backward runs on the unscaled "
                    f"loss, so fp16 gradients underflow and `{scale.receiver}.step` divides them by the scale again"
                )
                fix = None
                if later:
                    backward = later[0]
                    handled.add(id(backward))
                    delete = delete_statement(ctx, scale.stmt, parent_body(ctx, scale.stmt) or [])
                    if delete is not None:
                        fix = Fix(
                            f"Use `{scale.receiver}.scale({loss}).backward()`",
                            (delete, *self._scale_edits(ctx, backward, scale.receiver)),
                            Applicability.UNSAFE,
                        )
                yield ctx.diagnostic(self, scale.call, message, fix)
            # a query over the scaler typestate: an unscaled backward whose gradients a
            # `scaler.step` of this iteration then steps
            own_steps = fn.of(SCALER_STEP)  # the rule reports own backwards stepped by own steps only
            for error in errors_of(model, fn, PLAIN_THEN_STEP) if plain and own_steps else ():
                backward, step = error.event, error.path[-1] if error.path else None
                if id(backward) in handled or backward.via is not None or step is None or step.via is not None:
                    continue
                if may_be_scaled(ctx, backward.arg):
                    continue  # the tensor may be the scaler's result already (through a name or a caller)
                handled.add(id(backward))
                scaler = step.receiver
                loss = ctx.segment(backward.arg)
                message = (
                    f"`{loss}.backward()` bypasses `{scaler}` although the step uses `{scaler}.step(...)`: "
                    f"gradients are unscaled and then divided by the scale; use `{scaler}.scale({loss}).backward()`"
                )
                fix = Fix(f"Use `{scaler}.scale({loss}).backward()`", tuple(self._scale_edits(ctx, backward, scaler)),
                          Applicability.UNSAFE)
                evidence = [at(backward, "unscaled backward here"), at(step, "its gradients are stepped (and unscaled) here")]
                yield ctx.diagnostic(self, backward.call, message, fix, evidence)

    @staticmethod
    def _scale_edits(ctx, backward, scaler):
        start, end = ctx.locator.node_range(backward.arg)
        return [Edit.insert(start, f"{scaler}.scale("), Edit.insert(end, ")")]
