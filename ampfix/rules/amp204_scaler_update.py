"""AMP204: `scaler.step` without `scaler.update()`, or `update()` twice in one step."""

from __future__ import annotations

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.edits import delete_statement, insert_after, parent_body
from ampfix.prefilter import FileBytes, may_step_scaler
from ampfix.rules._loop import at, created
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.model import BACKWARD, SCALER_STEP, UNKNOWN, UPDATE
from ampfix.training.typestate import STEP_AFTER_UPDATE, UPDATE_TWICE, errors_of, seen_by_the_callee


class ScalerUpdate(Rule):
    code = "AMP204"
    name = "scaler-update-missing-or-repeated"
    summary = "`scaler.step()` without `scaler.update()`, or `scaler.update()` called twice per step"
    triggers = (b"caler", b"CALER", b"unscale_")  # GradScaler, scaler, loss_scaler, x.unscale_()
    fix_safety = FIX_UNSAFE
    changes_training = "the scale now updates"  # a bug fix: unsafe, as ruff defines it

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return may_step_scaler(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        # by identity and, where a call's event has no object (another module's), by text
        updated_anywhere = {
            key for fn in model.functions for e in fn.of(UPDATE, calls=True)
            for key in (model.object_key(fn, e.receiver, e.obj), model.object_key(fn, e.receiver))
        }
        for fn in model.functions:
            for step in fn.of(SCALER_STEP):
                yield from self._missing_update(ctx, fn, step, updated_anywhere)
            yield from self._repeated_updates(ctx, fn)

    def _missing_update(self, ctx, fn, step, updated_anywhere):
        """``scaler.step`` with no ``update()`` of that scaler after it in the iteration, here, in a
        call, or in any other function of the module (the caller of a per-step helper)."""
        model = ctx.training
        later = [
            u for u in fn.of(UPDATE, calls=True)
            if (u.kind == UNKNOWN or model.same_object(u.obj, u.receiver, step.obj, step.receiver))
            and fn.reaches(step, u) is not False
        ]
        if later or model.object_key(fn, step.receiver, step.obj) in updated_anywhere:
            return
        message = (
            f"`{step.receiver}.step(...)` without `{step.receiver}.update()`: the loss scale never "
            f"adapts, and a skipped (inf) step is never backed off"
        )
        edit = insert_after(ctx, step.stmt, f"{step.receiver}.update()")
        fix = Fix(f"Add `{step.receiver}.update()` after the step", (edit,), Applicability.UNSAFE) if edit else None
        evidence = [at(step, "stepped here; no `update()` of this scaler follows"), created(ctx, fn, step.receiver, step.obj)]
        yield ctx.diagnostic(self, step.call, message, fix, evidence)

    def _repeated_updates(self, ctx, fn):
        """The protocol's update errors (training/typestate.py) in one iteration of the step: an
        ``update()`` again with no step since the last one, and a ``scaler.step`` after
        ``update()`` with no backward in between (it steps gradients scaled before the update)."""
        for error in errors_of(ctx.training, fn, UPDATE_TWICE, STEP_AFTER_UPDATE):
            if seen_by_the_callee(error):
                continue  # every event is one call's: the callee's own finding says it
            scaler = error.scaler or "scaler"
            if error.kind == STEP_AFTER_UPDATE:
                step, update = error.event, error.path[0]
                scaled = _last_scaled_backward(ctx, fn, update)
                where = f" (in `{ctx.segment(step.call.func)}`)" if step.via is not None else ""
                message = (
                    f"`{scaler}.update()` runs before `{scaler}.step(...)`{where} steps gradients scaled before "
                    f"it: the scale changes between scaling and unscaling; call `{scaler}.update()` once, after every "
                    f"optimizer has stepped"
                )
                evidence = [at(scaled, f"gradients scaled by `{scaler}` here")] if scaled is not None else []
                evidence += [at(update, "the scale is updated here"), at(step, "then these gradients are unscaled and stepped")]
                yield ctx.diagnostic(self, update.call, message, None, evidence)
                continue
            extra, first = error.event, error.path[0]
            message = f"`{scaler}.update()` is called twice for one `{scaler}.step(...)`"
            edit = delete_statement(ctx, extra.stmt, parent_body(ctx, extra.stmt) or []) if extra.via is None else None
            fix = Fix("Remove the second `update()`", (edit,), Applicability.UNSAFE) if edit else None
            evidence = [at(first, "first update"), at(extra, "updated again, with no step in between")]
            yield ctx.diagnostic(self, extra.call, message, fix, evidence)


def _last_scaled_backward(ctx, fn, update):
    model = ctx.training
    backwards = [
        b for b in fn.of(BACKWARD, calls=True)
        if b.scaled and model.same_object(b.scaler_obj, b.scaler, update.obj, update.receiver) and fn.before(b, update)
    ]
    return backwards[-1] if backwards else None
