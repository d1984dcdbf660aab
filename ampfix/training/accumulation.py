"""Facts about gradient-accumulation windows (``TrainingModel.accumulations``): what wipes one."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from ampfix.program.flow import branch_key, dotted_key, read_keys
from ampfix.training.model import ZERO_GRAD, Accumulation, Event, StepFunction

if TYPE_CHECKING:
    from ampfix.training.model import TrainingModel


def where_it_steps(ctx, acc: Accumulation) -> str:
    """When the window's step runs, for messages: ``only when `(i + 1) % n == 0` `` or once after
    the micro-batch loop."""
    if acc.gate is not None:
        return f"only when `{ctx.segment(acc.gate.test)}`"
    return f"once, after the loop over `{ctx.segment(acc.factor)}` micro-batches"


def step_evidence(ctx, acc: Accumulation) -> tuple:
    """One evidence note for ``ctx.diagnostic``: the gate's test, or the micro-batch loop's range."""
    node = acc.gate.test if acc.gate is not None else acc.loop.iter
    return node, f"the optimizer steps {where_it_steps(ctx, acc)}"


def rebound_in_window(acc: Accumulation) -> bool:
    """Whether the micro-batch loop's body rebinds its count (or what the count reads): then the
    value at the backward is not the number of micro-batches, and may be anything."""
    keys = read_keys(acc.factor)  # `cfg.accum` reads `cfg` too: a new `cfg` is a new count
    return any(
        isinstance(sub, (ast.Name, ast.Attribute)) and isinstance(sub.ctx, (ast.Store, ast.Del))
        and dotted_key(sub) in keys
        for stmt in acc.loop.body for sub in ast.walk(stmt)
    )


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
        if acc.gate is None:
            # a micro-batch loop: every iteration around it steps; a zeroing after a backward of
            # the loop (outside it: one inside is AMP303's) wipes what the loop accumulated
            if any(f.node is acc.loop for f in zero.context) or not any(fn.before(b, zero) for b in acc.backwards):
                continue
        elif not any(f.node is acc.loop for f in zero.context) or not under_step_condition(zero, acc):
            continue
        for step in acc.steps:
            if step.via is None and zero.optimizer_key != step.optimizer_key \
                    and model.is_optimizer(zero.receiver, zero.call.func.value, fn.node):
                continue  # another optimizer's gradients (a GAN's other network)
            if fn.before(zero, step):
                found.append((zero, step))
                break
    return found
