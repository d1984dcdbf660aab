"""AMP303: `zero_grad()` on every micro-batch of an accumulation loop: nothing accumulates."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.edits import delete_statement, moved_after, parent_body
from ampfix.prefilter import FileBytes, may_train_step
from ampfix.rules._loop import at
from ampfix.rules.amp301_accumulation_without_division import divided, division_fix, may_be_zero
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.accumulation import step_evidence, where_it_steps
from ampfix.training.model import OPT_STEP, SCALER_STEP, UPDATE, ZERO_GRAD


def _conditional_in(event, loop) -> bool:
    """Whether the event sits under an ``if`` inside ``loop``."""
    frames = [f.node for f in event.context]
    inner = frames[frames.index(loop) + 1:] if loop in frames else []
    return any(isinstance(node, ast.If) for node in inner)


class PerMicrobatchZeroGrad(Rule):
    code = "AMP303"
    name = "per-microbatch-zero-grad"
    summary = "`zero_grad()` runs on every micro-batch of an accumulation loop"
    triggers = (b"backward",)
    fix_safety = FIX_UNSAFE
    changes_training = "gradients now accumulate, the loss divided by the window"  # a bug fix: unsafe, as ruff defines it

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return file.has(b"zero_grad") and may_train_step(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        for training_step in ctx.steps:
            fn = training_step.function
            for acc in training_step.windows:
                for zero in fn.of(ZERO_GRAD):
                    if not any(f.node is acc.loop for f in zero.context) or any(f.node is acc.gate for f in zero.context):
                        continue
                    if _conditional_in(zero, acc.loop):
                        continue  # `if i % accum == 0: zero_grad()`: the start of a window, not every micro-batch
                    message = (
                        f"`{zero.receiver}.zero_grad()` runs on every micro-batch while the step runs "
                        f"{where_it_steps(ctx, acc)}: each step sees the last micro-batch's gradients only, so "
                        f"accumulation does nothing; zero the gradients after the step"
                    )
                    evidence = [at(zero, "gradients zeroed on every micro-batch"), step_evidence(ctx, acc)]
                    yield ctx.diagnostic(self, zero.call, message, self._fix(ctx, acc, fn, zero), evidence)

    def _fix(self, ctx, acc, fn, zero):
        body = parent_body(ctx, zero.stmt)
        if acc.gate is None or body is None or acc.gate not in body:
            return None  # a micro-batch loop's step is outside it: not a move within one block
        gate_body = acc.gate.body
        last = [e.stmt for e in fn.of(OPT_STEP, SCALER_STEP, UPDATE) if e.stmt in gate_body]
        if not last:
            return None
        anchor = max(last, key=lambda s: s.lineno)
        indent = ctx.locator.indentation(gate_body[0].lineno)
        delete = delete_statement(ctx, zero.stmt, body)
        insert = moved_after(ctx, zero.stmt, anchor, indent)
        if delete is None or insert is None:
            return None
        # once gradients accumulate, an undivided loss makes each step N× larger (AMP301): the
        # fix divides it too, or is not offered
        divisions = []
        for backward in acc.backwards:
            if divided(ctx, fn, backward):
                continue
            division = None if may_be_zero(acc.gate.test, acc.factor) else division_fix(ctx, backward, acc.factor)
            if division is None:
                return None
            divisions += division.edits
        message = "Move `zero_grad()` into the step branch, after the step"
        if divisions:
            message += f", and divide the loss by `{ctx.segment(acc.factor)}`"
        return Fix(message, (delete, insert, *divisions), Applicability.UNSAFE)
