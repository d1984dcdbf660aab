"""AMP212: under apex `amp.initialize`, a backward outside `with amp.scale_loss(...)` in a step that
scales another one."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.prefilter import FileBytes, may_backward
from ampfix.rules.base import Rule
from ampfix.semantic import dotted_name
from ampfix.training.frameworks import ScaleLossRegion, apex_initialized, scale_loss_regions
from ampfix.training.model import BACKWARD, OPT_STEP, ZERO_GRAD, Event, StepFunction


class ApexBackwardOutsideScaleLoss(Rule):
    code = "AMP212"
    name = "apex-backward-outside-scale-loss"
    summary = "A backward outside `with amp.scale_loss(...)` in an apex step that scales another loss"
    triggers = (b"scale_loss",)

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return may_backward(file)  # `amp.initialize` may be in the script that imports this module

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        regions = scale_loss_regions(ctx) + _stored_amp_regions(ctx)
        initialize = apex_initialized(ctx) if regions else None
        if initialize is None:
            return  # `scale_loss` without `amp.initialize` yields the loss unscaled: nothing to mix
        model = ctx.training
        for fn in model.functions:
            # `x.backward()` and `torch.autograd.backward(x)`, not a wrapper's (`accelerator.backward(loss)`)
            backwards = [e for e in fn.of(BACKWARD) if e.receiver is None and not e.scaled]
            scaled = [(b, r) for b in backwards for r in [_region_of(b, regions)] if r is not None]
            plain = [b for b in backwards if _region_of(b, regions) is None]
            for backward in plain:
                found = _scaled_in_same_step(model, fn, backward, scaled)
                if found is None:
                    continue
                other, region = found
                scaled_loss = ctx.segment(region.call.args[0]) if region.call.args else "another loss"
                effect = (
                    "apex unscales the optimizer's gradients when `scale_loss` exits, so this loss's gradients "
                    "are divided by the loss scale"
                    if fn.before(backward, other) else
                    "its gradients are never scaled: under O2 they miss the float32 master gradients (copied when "
                    "`scale_loss` exits), under O1 they are unprotected from float16 underflow and unchecked for overflow"
                )
                message = (
                    f"`{ctx.segment(backward.call)}` runs outside `with amp.scale_loss(...)` while this step scales "
                    f"`{scaled_loss}`: {effect}; wrap it in its own `with amp.scale_loss(loss, optimizer) as scaled_loss:`"
                )
                where, path = initialize
                evidence = [
                    (where or region.call, "apex amp initialized here" if where else f"apex amp initialized in {path}"),
                    (region.call, "this loss is scaled"),
                    (other.call, "its backward"),
                    (backward.call, "a backward with no loss scaling, in the same step"),
                ]
                yield ctx.diagnostic(self, backward.call, message, None, evidence)


def _stored_amp_regions(ctx: ModuleContext) -> list[ScaleLossRegion]:
    """``with args.amp.scale_loss(loss, optimizer) as scaled_loss:`` where the module stores apex's
    ``amp`` in that field (``args.amp = amp``, UER-py's fine-tuning scripts): the qualified-name
    look-up sees an attribute of ``args``, not apex."""
    stored = {
        dotted_name(target)
        for assign in ctx.semantic.nodes(ast.Assign)
        if ctx.semantic.qualified_name(assign.value) == "apex.amp"
        for target in assign.targets if isinstance(target, ast.Attribute)
    }
    stored.discard(None)
    found = []
    for stmt in ctx.semantic.nodes(ast.With, ast.AsyncWith) if stored else ():
        for item in stmt.items:
            call = item.context_expr
            func = call.func if isinstance(call, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr == "scale_loss" and dotted_name(func.value) in stored:
                optimizer = call.args[1] if len(call.args) > 1 else next(
                    (k.value for k in call.keywords if k.arg == "optimizers"), None)
                target = dotted_name(item.optional_vars) if item.optional_vars is not None else None
                found.append(ScaleLossRegion(stmt, call, target, optimizer))
    return found


def _region_of(backward: Event, regions: list[ScaleLossRegion]) -> Optional[ScaleLossRegion]:
    """The ``scale_loss`` region a backward differentiates: the one it runs in, or the one whose
    ``as`` name it is called on."""
    for frame in reversed(backward.context):
        region = next((r for r in regions if r.with_node is frame.node), None)
        if region is not None:
            return region
    receiver = backward.call.func.value if isinstance(backward.call.func, ast.Attribute) else None
    name = receiver.id if isinstance(receiver, ast.Name) else None
    return next((r for r in regions if name is not None and r.target == name), None)


def _scaled_in_same_step(model, fn: StepFunction, plain: Event, scaled: list) -> Optional[tuple]:
    """A scaled backward of ``fn`` whose gradients one optimizer step uses together with
    ``plain``'s: both reach a step of the optimizer ``scale_loss`` names, with no ``zero_grad``
    in between, and they can run in the same iteration (not ``if fp16: ... else: loss.backward()``)."""
    steps = fn.of(OPT_STEP)
    zeros = fn.of(ZERO_GRAD)
    for backward, region in scaled:
        if fn.exclusive(plain, backward) or _opposite_branches(plain, backward):
            continue
        for step in steps:
            if region.optimizer is not None and not _same(model, step, region.optimizer):
                continue
            if fn.reaches(plain, step, avoiding=zeros) and fn.reaches(backward, step, avoiding=zeros):
                return backward, region
    return None


def _opposite_branches(a: Event, b: Event) -> bool:
    """``if fp16: <scaled>`` and a later ``if not fp16: <plain>``: the path search correlates equal
    tests only, so a test and its negation are matched here."""
    def tests(event):
        return {(ast.dump(f.node.test), f.branch) for f in event.context if isinstance(f.node, ast.If)}

    def negations(event):
        negated = [f for f in event.context if isinstance(f.node, ast.If) and _is_not(f.node.test)]
        return {(ast.dump(f.node.test.operand), f.branch) for f in negated}
    return bool(negations(a) & tests(b)) or bool(negations(b) & tests(a))


def _is_not(test: ast.AST) -> bool:
    return isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)


def _same(model, step: Event, optimizer: ast.expr) -> bool:
    """Whether ``step`` (``opt.step()``) steps ``optimizer`` (by value, else by text)."""
    return model.same_object(step.obj, step.receiver, model.values.object_of(optimizer), dotted_name(optimizer))
