"""Helpers shared by the loop rules: source text of events and the scaler/optimizer they use."""

from __future__ import annotations

import ast
import os
from typing import Optional

from ampfix.context import ModuleContext
from ampfix.program.values import assignments
from ampfix.semantic import dotted_name
from ampfix.training.model import SCALER_STEP, Event, StepFunction


def text(ctx: ModuleContext, node: Optional[ast.AST]) -> Optional[str]:
    return ctx.segment(node) if node is not None else None


def optimizer_for(ctx: ModuleContext, function: StepFunction, near: Event) -> Optional[str]:
    """The optimizer that ``scaler.step(...)`` steps after ``near``, when the code says so with a
    name a fix can repeat (``scaler.step(make_optimizer())`` names none: a second call is another object)."""
    for step in function.of(SCALER_STEP):
        if function.before(near, step) and step.arg is not None:
            plain = dotted_name(step.arg) is not None and not has_own_protocol(ctx, step.arg)
            return ctx.segment(step.arg) if plain else None
    return None


# Optimizer wrappers whose step needs more than the plain scaler protocol: Horovod's needs
# `optimizer.synchronize()` before `unscale_` and `with optimizer.skip_synchronize():` around the step.
_OWN_PROTOCOL = frozenset({"horovod.torch.DistributedOptimizer", "horovod.DistributedOptimizer"})


def has_own_protocol(ctx: ModuleContext, optimizer: ast.AST) -> bool:
    """Whether ``optimizer`` is (on some assignment) an optimizer wrapper with a protocol of its own:
    a fix that writes the plain protocol around it would be wrong there."""
    for stmt in assignments(ctx.semantic, optimizer):
        value = getattr(stmt, "value", None)
        if isinstance(value, ast.Call) and ctx.semantic.qualified_name(value.func) in _OWN_PROTOCOL:
            return True
    return False


def call_name(ctx: ModuleContext, call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else ctx.segment(func)


def loops_of(event: Event) -> list[ast.AST]:
    return [f.node for f in event.context if isinstance(f.node, (ast.For, ast.AsyncFor, ast.While))]


def at(event: Optional[Event], note: str):
    """One evidence note for ``ctx.diagnostic``: the event (its call) and what it shows. An event
    of a call says where the callee does it."""
    if event is None:
        return None, note
    if event.via is not None:
        origin, path = event.origin, event.origin_path
        where = f"{shown_path(path)}:{origin.line}" if path else f"line {origin.line}"
        note += f" (in the call; the callee does it at {where})"
    return event.call, note


def shown_path(path: str) -> str:
    """A path as ruff shows it: relative to the working directory when below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def created(ctx: ModuleContext, function: StepFunction, scaler: Optional[str], obj=None):
    """Evidence: where the scaler was created, when the module shows it (``obj``: its identity)."""
    create = ctx.training.created_at(function, scaler, obj)
    return at(create, f"`{scaler}` created here") if create is not None else (None, "")


def trains_through_opacus(ctx: ModuleContext) -> bool:
    """Whether the module trains through Opacus (a name resolved to the ``opacus`` package): its
    optimizer clips and noises per-sample gradients, which a GradScaler would leave scaled."""
    if "opacus" not in ctx.text:
        return False
    return any((ctx.semantic.qualified_name(n) or "").startswith("opacus")
               for n in ctx.semantic.nodes(ast.Name, ast.Attribute))
