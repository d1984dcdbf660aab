"""Facts about gradient-accumulation windows (``TrainingModel.accumulations``): what wipes one,
what normalises one on the gradient side."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Iterator, Optional

from ampfix.program.calls import resolve as resolve_call
from ampfix.program.calls import resolve_in_project
from ampfix.program.flow import branch_key, dotted_key, read_keys
from ampfix.program.values import enclosing_function
from ampfix.training.model import ZERO_GRAD, Accumulation, Event, StepFunction

if TYPE_CHECKING:
    from ampfix.program.module import ModuleSource
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


def gradients_rescaled(ctx: "ModuleSource", fn: StepFunction, acc: Accumulation) -> Optional[ast.AST]:
    """The statement or call that rescales the window's gradients in place between its backwards
    and its step, if one runs there: ``p.grad /= n``, ``p.grad.mul_(1 / n)``,
    ``torch._foreach_div_(grads, n)``, or a call of a function of the module or the project that
    does so (torchtune's ``training.scale_grads(model, 1 / num_tokens)`` after backpropagating
    ``loss * num_tokens``): the window is then normalised on the gradient side, not at the loss."""
    model = ctx.training
    first = min(b.call.lineno for b in acc.backwards)
    last = max(s.call.lineno for s in acc.steps)
    # the lines between are only a cheap first cut: the paths decide
    for node in _grad_rescales(ctx, fn, first, last):
        event = model.event_at(node, "rescale")
        if event is None:
            continue
        if any(fn.before(b, event) for b in acc.backwards) and any(fn.before(event, s) for s in acc.steps):
            return node
    return None


def _grad_rescales(ctx: "ModuleSource", fn: StepFunction, first: int, last: int) -> Iterator[ast.AST]:
    semantic = ctx.semantic
    for node in semantic.nodes(ast.AugAssign):
        if first < node.lineno < last and _rescales_in_place(semantic, node) \
                and (enclosing_function(semantic, node) or ctx.tree) is fn.node:
            yield node
    for call in ctx.training.calls_in(fn):
        if not first < call.lineno < last:
            continue
        if _rescales_in_place(semantic, call):
            yield call
            continue
        callee = _callee_of(ctx, call)
        if callee is not None and _rescales_through(*callee):
            yield call


def _rescales_in_place(semantic, node: ast.AST) -> bool:
    """``x.grad *= f`` / ``x.grad /= f`` (``.grad.data`` too), ``x.grad.mul_(f)`` / ``div_``,
    ``torch._foreach_mul_`` / ``_foreach_div_``."""
    if isinstance(node, ast.AugAssign):
        return isinstance(node.op, (ast.Mult, ast.Div)) and is_gradient(node.target)
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr in ("mul_", "div_") and is_gradient(func.value):
        return True
    return (semantic.qualified_name(func) or "") in ("torch._foreach_mul_", "torch._foreach_div_")


def is_gradient(expr: ast.AST) -> bool:
    """``x.grad`` or ``x.grad.data``."""
    if isinstance(expr, ast.Attribute) and expr.attr == "data":
        expr = expr.value
    return isinstance(expr, ast.Attribute) and expr.attr == "grad"


def _rescales_through(semantic, function: ast.AST, depth: int = 3) -> bool:
    """Whether ``function`` rescales gradients in place, itself or through the functions of its
    module it calls (torchtune's ``scale_grads_`` -> ``_scale_grad_`` -> ``torch._foreach_mul_``)."""
    for node in ast.walk(function):
        if _rescales_in_place(semantic, node):
            return True
        if depth > 1 and isinstance(node, ast.Call):
            target = resolve_call(semantic, node)
            if target is not None and target.function is not function and _rescales_through(semantic, target.function, depth - 1):
                return True
    return False


def _callee_of(ctx: "ModuleSource", call: ast.Call):
    """(semantic model, function node) of the function ``call`` runs, in this module or another
    of the project (wherever it is defined), or None."""
    target = resolve_call(ctx.semantic, call)
    if target is not None:
        return ctx.semantic, target.function
    project = getattr(ctx, "project", None)
    found = resolve_in_project(ctx, call, project, prefiltered=False) if project is not None else None
    return (found.module.semantic, found.target.function) if found is not None else None
