"""AMP203: `optimizer.step()` after a scaled backward, bypassing `scaler.step(optimizer)`."""

from __future__ import annotations

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import insert_after, owns_lines
from ampfix.prefilter import FileBytes, may_backward_scaled, may_step
from ampfix.rules._loop import at
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.model import BACKWARD, OPT_STEP, UPDATE
from ampfix.training.typestate import STEP_WHILE_SCALED, errors_of


class StepBypassesScaler(Rule):
    code = "AMP203"
    name = "step-bypasses-scaler"
    summary = "`optimizer.step()` is called directly after a scaled backward"
    triggers = (b"caler", b"CALER", b"unscale_")  # GradScaler, scaler, loss_scaler, x.unscale_()
    fix_safety = FIX_UNSAFE
    changes_training = "the step now goes through the scaler"  # a bug fix: unsafe, as ruff defines it

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return may_backward_scaled(file) and may_step(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        """A query over the scaler typestate: ``optimizer.step()`` reached while that
        optimizer's gradients are scaled (a scaled backward, no ``scaler.step`` of it since)."""
        model = ctx.training
        for fn in model.functions:
            if not fn.of(OPT_STEP) or not any(b.scaled for b in fn.of(BACKWARD)):
                continue  # the rule reports its own steps after its own scaled backwards only
            for error in errors_of(model, fn, STEP_WHILE_SCALED):
                step = error.event
                if step.via is not None or not error.path:
                    continue  # a helper's own step: reported in the helper, where it can be fixed
                backward = error.path[0]
                if backward.via is not None:
                    continue  # the scaled backward of a helper: the prefilter reads this file's own text
                scaler = backward.scaler
                optimizer = step.receiver
                message = (
                    f"`{optimizer}.step()` after `{scaler}.scale(...).backward()` steps on scaled gradients and "
                    f"ignores inf/NaN checks; use `{scaler}.step({optimizer})`"
                )
                evidence = [at(backward, f"gradients scaled by `{scaler}` here"),
                            at(step, "stepped here on a path with no `scaler.step` of this optimizer")]
                fix = self._fix(ctx, fn, step, backward, optimizer)
                yield ctx.diagnostic(self, step.call, message, fix, evidence)

    def _fix(self, ctx, fn, step, backward, optimizer):
        scaler = backward.scaler
        start, end = ctx.locator.node_range(step.call)
        edits = [Edit(start, end, f"{scaler}.step({optimizer})")]
        has_update = any(
            ctx.training.same_object(u.obj, u.receiver, backward.scaler_obj, scaler) and fn.before(step, u)
            for u in fn.of(UPDATE)
        )
        if not has_update:
            if not owns_lines(ctx, step.stmt):
                return None
            edits.append(insert_after(ctx, step.stmt, f"{scaler}.update()"))
        message = f"Use `{scaler}.step({optimizer})`" + ("" if has_update else f" and `{scaler}.update()`")
        return Fix(message, tuple(edits), Applicability.UNSAFE)
