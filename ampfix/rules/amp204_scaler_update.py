"""AMP204: `scaler.step` without `scaler.update()`, or `update()` twice in one step."""

from __future__ import annotations

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.edits import delete_statement, insert_after, parent_body
from ampfix.prefilter import FileBytes, may_step_scaler
from ampfix.rules._loop import at, created
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.model import BACKWARD, SCALER_STEP, UNKNOWN, UPDATE, sets_scale


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
            reported = set()
            for update in fn.of(UPDATE):
                if id(update) not in reported and not sets_scale(update):
                    found = self._repeated_update(ctx, fn, update)
                    if found is not None:
                        reported.add(id(update))
                        yield found

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

    def _repeated_update(self, ctx, fn, update):
        """An ``update()`` that runs again, or is followed by a ``scaler.step`` of gradients scaled
        before it, in one iteration of the training loop (the loop around the backward pass)."""
        scaler = update.receiver
        model = ctx.training

        def mine(e) -> bool:
            same = model.same_object
            return same(e.obj, e.receiver, update.obj, scaler) or same(e.scaler_obj, e.scaler, update.obj, scaler)

        backwards = [b for b in fn.of(BACKWARD, calls=True) if b.scaled and mine(b) and fn.before(b, update)]
        anchor = backwards[-1] if backwards else None
        calls = fn.of(SCALER_STEP, BACKWARD, calls=True)
        unknown = [e for e in calls if e.kind == UNKNOWN]
        steps = [s for s in calls if s.kind == SCALER_STEP and mine(s)]
        backwards_anywhere = [b for b in calls if b.kind == BACKWARD]
        # the next step after this update, with no backward in between, steps stale gradients
        stale = [
            s for s in steps
            if anchor is not None
            and fn.reaches(update, s, avoiding=backwards_anywhere + unknown, within=anchor)
        ]
        again = [
            u for u in fn.of(UPDATE) if mine(u) and u is not update and not sets_scale(u)
            and fn.reaches(update, u, avoiding=steps + backwards_anywhere + unknown, within=anchor)
        ]
        if stale:
            step = stale[0]
            where = f" (in `{ctx.segment(step.call.func)}`)" if step.via is not None else ""
            message = (
                f"`{scaler}.update()` runs before `{scaler}.step(...)`{where} steps gradients scaled before "
                f"it: the scale changes between scaling and unscaling; call `{scaler}.update()` once, after every "
                f"optimizer has stepped"
            )
            evidence = [
                at(anchor, f"gradients scaled by `{scaler}` here"),
                at(update, "the scale is updated here"),
                at(step, "then these gradients are unscaled and stepped"),
            ]
            return ctx.diagnostic(self, update.call, message, None, evidence)
        if again:
            extra = again[0]
            message = f"`{scaler}.update()` is called twice for one `{scaler}.step(...)`"
            edit = delete_statement(ctx, extra.stmt, parent_body(ctx, extra.stmt) or [])
            fix = Fix("Remove the second `update()`", (edit,), Applicability.UNSAFE) if edit else None
            evidence = [at(update, "first update"), at(extra, "updated again, with no step in between")]
            return ctx.diagnostic(self, extra.call, message, fix, evidence)
        return None
