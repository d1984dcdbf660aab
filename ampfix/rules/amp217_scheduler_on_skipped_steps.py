"""AMP217: an LR scheduler stepped on every iteration, also when the GradScaler skipped the step."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.prefilter import FileBytes, may_step_scaler
from ampfix.rules._loop import at, loops_of
from ampfix.rules.base import Rule
from ampfix.training.config import scaler_always_off
from ampfix.training.model import SCALER_STEP, Event
from ampfix.training.wrappers import scheduler_steps


class SchedulerOnSkippedSteps(Rule):
    code = "AMP217"
    name = "scheduler-on-skipped-steps"
    summary = "LR scheduler stepped per iteration whatever `scaler.step` did (it skips steps with inf/nan gradients)"
    triggers = (b"lr_scheduler", b"schedule")

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return super().may_fire(file) and may_step_scaler(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for fn in model.functions:
            steps = [s for s in fn.of(SCALER_STEP) if loops_of(s) and not self._never_skips(ctx, fn, s)]
            if not steps or self._checks_the_scale(ctx, fn):
                continue
            for schedule in scheduler_steps(model, fn):
                step = next((s for s in steps if _same_iteration(s, schedule)), None)
                if step is None:
                    continue
                message = (
                    "the LR scheduler steps on every iteration, also when `scaler.step` skipped the optimizer step "
                    "(inf/nan gradients, common in the first iterations): the schedule runs ahead of the optimizer "
                    "and torch warns \"Detected call of `lr_scheduler.step()` before `optimizer.step()`\"; step "
                    "the scheduler only when the scale did not decrease (read `scaler.get_scale()` before and "
                    "after `scaler.update()`)"
                )
                evidence = [at(step, "may skip the optimizer step")]
                yield ctx.diagnostic(self, schedule.call, message, None, evidence)

    @staticmethod
    def _never_skips(ctx: ModuleContext, fn, step: Event) -> bool:
        create = ctx.training.created_at(fn, step.receiver, step.obj)
        return create is not None and scaler_always_off(create)

    @staticmethod
    def _checks_the_scale(ctx: ModuleContext, fn) -> bool:
        """The usual remedy is there: the step reads the scale (``scaler.get_scale()``)."""
        return any(isinstance(c.func, ast.Attribute) and c.func.attr == "get_scale" for c in ctx.training.calls_in(fn))


def _same_iteration(step: Event, schedule: Event) -> bool:
    """Whether ``schedule`` runs on every iteration of the innermost loop of ``step`` on which
    ``step`` runs: the same innermost loop, and no condition of its own in that loop."""
    loop = loops_of(step)[-1]
    if not loops_of(schedule) or loops_of(schedule)[-1] is not loop:
        return False
    return set(_conditions_in(schedule, loop)) <= set(_conditions_in(step, loop))


def _conditions_in(event: Event, loop: ast.AST) -> list:
    inside = False
    found = []
    for frame in event.context:
        if frame.node is loop:
            inside = True
        elif inside and not isinstance(frame.node, (ast.With, ast.AsyncWith)):
            found.append((id(frame.node), frame.branch))
    return found
