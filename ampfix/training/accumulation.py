"""Facts about gradient-accumulation windows (``TrainingModel.accumulations``): what wipes one."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from ampfix.program.flow import branch_key
from ampfix.training.model import ZERO_GRAD, Accumulation, Event, StepFunction

if TYPE_CHECKING:
    from ampfix.training.model import TrainingModel


def under_step_condition(event: Event, acc: Accumulation) -> bool:
    """Whether ``event`` runs only on the iterations that step: inside the accumulation gate, in
    the steps' branch, or under another ``if`` of the loop on the gate's own test (``if (i + 1)
    % n == 0: opt.zero_grad()`` before the backward, then the gated step)."""
    frames = list(event.context)
    inside = [f for f in frames[next((i for i, f in enumerate(frames) if f.node is acc.loop), len(frames)) + 1:]]
    branches = {next(f.branch for f in s.context if f.node is acc.gate) for s in acc.steps}
    gate = branch_key(acc.gate.test)
    rebound = _bound_in(acc.loop)
    return any(
        isinstance(f.node, ast.If) and f.branch in branches and (
            f.node is acc.gate
            # the same test, reading nothing the iteration rebinds (`if step % n == 0:` before and
            # after `step += 1` are the start and the end of a window, not one condition)
            or (branch_key(f.node.test) == gate and not _names_read(f.node.test) & rebound)
        )
        for f in inside
    )


def _names_read(test: ast.AST) -> set:
    return {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}


def _bound_in(loop: ast.AST) -> set:
    """Names the loop's body binds (not its own target, which is bound before the body runs)."""
    return {
        n.id for stmt in loop.body for n in ast.walk(stmt)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }


def window_wipes(model: "TrainingModel", fn: StepFunction, acc: Accumulation) -> list[tuple[Event, Event]]:
    """(``zero_grad``, step) pairs where the zeroing runs on the step's iterations before that step:
    the window's accumulated gradients are wiped, so the step sees one micro-batch (or none). A
    ``zero_grad`` of another optimizer than the one stepped is not counted."""
    found = []
    for zero in fn.of(ZERO_GRAD):
        if not any(f.node is acc.loop for f in zero.context) or not under_step_condition(zero, acc):
            continue
        for step in acc.steps:
            if step.via is None and zero.optimizer_key != step.optimizer_key \
                    and model.is_optimizer(zero.receiver, zero.call.func.value, fn.node):
                continue  # another optimizer's gradients (a GAN's other network)
            if fn.before(zero, step):
                found.append((zero, step))
                break
    return found
