"""AMP204: `scaler.step` without `scaler.update()`, or `update()` twice in one step."""

from __future__ import annotations

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.edits import delete_statement, insert_after, parent_body
from ampfix.model import SCALER_STEP, UPDATE
from ampfix.prefilter import FileBytes, may_step_scaler
from ampfix.rules.base import FIX_SAFE, Rule


class ScalerUpdate(Rule):
    code = "AMP204"
    name = "scaler-update-missing-or-repeated"
    summary = "`scaler.step()` without `scaler.update()`, or `scaler.update()` called twice per step"
    triggers = (b"caler", b"CALER", b"unscale_")  # GradScaler, scaler, loss_scaler, x.unscale_()
    fix_safety = FIX_SAFE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return may_step_scaler(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        updated_anywhere = {e.receiver for fn in model.functions for e in fn.of(UPDATE)}
        for fn in model.functions:
            steps = fn.of(SCALER_STEP)
            for index, step in enumerate(steps):
                following = steps[index + 1] if index + 1 < len(steps) else None
                updates = [
                    u for u in fn.of(UPDATE)
                    if u.receiver == step.receiver and fn.before(step, u)
                    and (following is None or fn.before(u, following) or fn.exclusive(u, following))
                ]
                if not updates and step.receiver not in updated_anywhere:
                    message = (
                        f"`{step.receiver}.step(...)` without `{step.receiver}.update()`: the loss scale never "
                        f"adapts, and a skipped (inf) step is never backed off"
                    )
                    edit = insert_after(ctx, step.stmt, f"{step.receiver}.update()")
                    fix = Fix(f"Add `{step.receiver}.update()` after the step", (edit,), Applicability.SAFE) if edit else None
                    yield ctx.diagnostic(self, step.call, message, fix)
                for extra in updates[1:]:
                    if any(fn.exclusive(extra, other) for other in updates if other is not extra):
                        continue
                    message = f"`{extra.receiver}.update()` is called twice for one `{step.receiver}.step(...)`"
                    edit = delete_statement(ctx, extra.stmt, parent_body(ctx, extra.stmt) or [])
                    fix = Fix("Remove the second `update()`", (edit,), Applicability.SAFE) if edit else None
                    yield ctx.diagnostic(self, extra.call, message, fix)
