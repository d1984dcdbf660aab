"""AMP203: `optimizer.step()` after a scaled backward, bypassing `scaler.step(optimizer)`."""

from __future__ import annotations

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import insert_after, owns_lines
from ampfix.prefilter import FileBytes, may_backward_scaled, may_step
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.model import BACKWARD, OPT_STEP, SCALER_STEP, UPDATE


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
        model = ctx.training
        for fn in model.functions:
            for step in fn.of(OPT_STEP):
                if step.call.args or step.call.keywords:
                    continue  # step(closure): not a plain step the scaler could take over
                scaled = [b for b in fn.of(BACKWARD) if b.scaled and fn.before(b, step)]
                if not scaled:
                    continue
                backward = scaled[-1]
                scaler = backward.scaler
                optimizer = step.receiver
                already = [
                    s for s in fn.between(SCALER_STEP, backward, step)
                    if s.arg is not None and model.same_object(s.arg_obj, ctx.segment(s.arg), step.obj, optimizer)
                ]
                if already:
                    continue  # stepping twice is a different bug; leave it to a person
                message = (
                    f"`{optimizer}.step()` after `{scaler}.scale(...).backward()` steps on scaled gradients and "
                    f"ignores inf/NaN checks; use `{scaler}.step({optimizer})`"
                )
                yield ctx.diagnostic(self, step.call, message, self._fix(ctx, fn, step, backward, optimizer))

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
