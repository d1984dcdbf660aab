"""Adding the GradScaler protocol to a step that has none (AMP208 now, the loop conversions later).

    scaler = torch.amp.GradScaler(device)      once, before the training loop
    scaler.scale(loss).backward()               instead of loss.backward()
    scaler.unscale_(optimizer)                  before any gradient clipping
    scaler.step(optimizer); scaler.update()     instead of optimizer.step()

Only for one optimizer stepped without a closure; anything else is left to a person.
"""

from __future__ import annotations

import ast
from typing import Optional, Sequence

from ampfix.context import ModuleContext
from ampfix.diagnostics import Edit
from ampfix.edits import insert_after, insert_before
from ampfix.rules._loop import has_own_protocol, loops_of, trains_through_opacus
from ampfix.training.model import CLIP, OPT_STEP, Event, StepFunction

SCALER_NAMES = ("scaler", "grad_scaler", "amp_scaler")


def free_name(ctx: ModuleContext, candidates: Sequence[str]) -> Optional[str]:
    used = {n.id for n in ctx.semantic.nodes(ast.Name)} | {
        name for scope in ctx.semantic.scopes.values() for name in scope.bindings
    }
    return next((name for name in candidates if name not in used), None)


def protocol_anchor(fn: StepFunction, backward: Event, fallback: ast.stmt) -> ast.stmt:
    """Where the scaler is created: before the outermost loop around the backward pass."""
    loops = loops_of(backward)
    return loops[0] if loops else fallback


def add_scaler_protocol(
    ctx: ModuleContext,
    fn: StepFunction,
    backwards: list[Event],
    anchor: ast.stmt,
    device: str,
    enabled: Optional[str] = None,
    lazy: bool = False,
    name: Optional[str] = None,
) -> Optional[tuple[list[Edit], str]]:
    """The edits that put the whole protocol around ``backwards``; None when it cannot be done safely.

    ``lazy`` creates the scaler only when a parameter of that name is None (a scaler passed in by
    the caller survives across calls; see AMP501).
    """
    if not backwards or any(b.receiver is not None or b.scaled for b in backwards):
        return None  # wrappers (accelerator.backward) manage scaling themselves
    steps = [
        s for s in fn.of(OPT_STEP)
        if any(fn.before(b, s) for b in backwards)
    ]
    if not steps or len({s.receiver for s in steps}) != 1:
        return None
    if any(s.call.args or s.call.keywords for s in steps):
        return None  # step(closure) is not supported by an enabled GradScaler
    if not all(fn.always_preceded(s, backwards) for s in steps):
        return None  # a path steps without the backward (`if not inference_only: backward()`): the scaler would raise
    if any(_step_has_alternative(s, backwards) for s in steps):
        return None  # `if use_optimizer: step() else: <manual update>`: the else would see scaled grads
    optimizer = steps[0].receiver
    if isinstance(steps[0].call.func, ast.Attribute) and has_own_protocol(ctx, steps[0].call.func.value):
        return None  # Horovod's DistributedOptimizer: synchronize() / skip_synchronize() needed too
    if trains_through_opacus(ctx):
        return None  # Opacus clips per-sample gradients in its optimizer: they would stay scaled
    name = name or free_name(ctx, SCALER_NAMES)
    torch = ctx.torch_module(anchor)
    if name is None or torch is None:
        return None
    torch_name, import_edits = torch
    arguments = device + (f", enabled={enabled}" if enabled else "")
    creation = f"{name} = {torch_name}.amp.GradScaler({arguments})"
    if lazy:
        creation = f"if {name} is None:{ctx.locator.newline()}{_unit(ctx)}{creation}"
    create = insert_before(ctx, anchor, creation)
    if create is None:
        return None
    edits = [create, *import_edits]
    for backward in backwards:
        start, end = ctx.locator.node_range(backward.arg)
        edits += [Edit.insert(start, f"{name}.scale("), Edit.insert(end, ")")]
    for clip in fn.of(CLIP):
        if any(fn.before(b, clip) for b in backwards) and any(
            fn.before(clip, s) for s in steps
        ):
            if not fn.always_preceded(clip, backwards):
                return None  # an unscale_ where nothing was scaled raises
            unscale = insert_before(ctx, clip.stmt, f"{name}.unscale_({optimizer})")
            if unscale is None:
                return None
            edits.append(unscale)
    for step in steps:
        start, end = ctx.locator.node_range(step.call)
        update = insert_after(ctx, step.stmt, f"{name}.update()")
        if update is None:
            return None
        edits += [Edit(start, end, f"{name}.step({optimizer})"), update]
    return edits, name


def _unit(ctx: ModuleContext) -> str:
    from ampfix.rules._conversion import indent_unit

    return indent_unit(ctx)


def _step_has_alternative(step: Event, backwards: list[Event]) -> bool:
    """Whether the step sits in an if (not around the backward) that has an else branch."""
    around_backward = {id(f.node) for b in backwards for f in b.context}
    return any(
        isinstance(f.node, ast.If) and id(f.node) not in around_backward and f.node.orelse
        for f in step.context
    )
