"""AMP301: gradient accumulation whose loss is not divided by the number of micro-batches."""

from __future__ import annotations

import ast
import re
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import receiver_range
from ampfix.prefilter import FileBytes, may_backward, may_step
from ampfix.rules._loop import at
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.model import (
    BACKWARD,
    OPT_STEP,
    SCALER_STEP,
    ZERO_GRAD,
    Event,
    StepFunction,
)

# Sum-reduced or batch-size-scaled losses with a nominal batch size (yolov5/yolov7), anywhere in
# the module (the criterion is often a class beside the loop, pytorch-YOLOv4): not dividing is the
# design there.
_BY_DESIGN = re.compile(r"\bnbs\b|reduction\s*=\s*['\"]sum['\"]")


class AccumulationWithoutDivision(Rule):
    code = "AMP301"
    name = "accumulation-without-division"
    summary = "Gradient accumulation without dividing the loss by the number of micro-batches"
    triggers = (b"backward",)
    fix_safety = FIX_UNSAFE
    changes_training = "the accumulated loss is now divided"  # a bug fix: unsafe, as ruff defines it

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        # an accumulation gates a step; a micro-batch loop zero-grads before it (the step may be elsewhere)
        return may_backward(file) and (may_step(file) or file.has(b"zero_grad"))

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        if _BY_DESIGN.search(ctx.text):
            return  # a summed loss by design (a sum-reduced criterion of this module, a nominal batch size)
        for fn in model.functions:
            for acc in model.accumulations(fn):
                for backward in acc.backwards:
                    if _divided(ctx, fn, backward):
                        continue
                    factor = ctx.segment(acc.factor) if acc.factor is not None else "N"
                    message = (
                        f"gradients accumulate over `{factor}` micro-batches but the loss is not divided by "
                        f"`{factor}`: the update is {factor}× too large; backpropagate `loss / {factor}`"
                    )
                    evidence = [
                        at(backward, "backward on every iteration, loss not divided"),
                        (acc.gate.test, f"the optimizer steps only when `{ctx.segment(acc.gate.test)}`"),
                    ]
                    if backward.via is not None:  # the backward runs in a helper: report at the call, no fix
                        origin = backward.origin
                        message += f" (the backward is in `{_function_name(model, origin)}`, line {origin.line})"
                        yield ctx.diagnostic(self, backward.call, message, None, evidence)
                        continue
                    fix = self._fix(ctx, fn, backward, acc.factor)
                    yield ctx.diagnostic(self, backward.call, message, fix, evidence)
            for backward in _microbatch_backwards(ctx, fn):
                message = (
                    "backward runs once per micro-batch and the optimizer steps once after the loop, but the loss "
                    "is not divided by the number of micro-batches: gradients grow with it"
                )
                yield ctx.diagnostic(self, backward.call, message)

    def _fix(self, ctx: ModuleContext, fn: StepFunction, backward: Event, factor: Optional[ast.expr]) -> Optional[Fix]:
        if factor is None or backward.arg is None or backward.receiver is not None:
            return None
        if any(isinstance(n, ast.Call) for n in ast.walk(factor)):
            return None  # the divisor must be cheap and side-effect free to repeat
        loss = backward.arg
        start, end = ctx.locator.node_range(loss)
        divisor = ctx.segment(factor)
        if not isinstance(factor, (ast.Name, ast.Attribute, ast.Constant)):
            divisor = f"({divisor})"
        text = ctx.segment(loss)
        if not isinstance(loss, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
            text = f"({text})"
        if backward.scaled:
            new = f"{text} / {divisor}"
        else:
            new = f"({text} / {divisor})"
            # `(loss).backward()`: replace the parenthesised receiver, not just the name
            start, end = receiver_range(ctx, backward.call)
        return Fix(f"Divide the loss by `{ctx.segment(factor)}`", (Edit(start, end, new),), Applicability.UNSAFE)


def _function_name(model, event: Event) -> str:
    function = model.function_of(event)
    return getattr(function.node, "name", "<module>") if function is not None else "?"


def _divided(ctx: ModuleContext, fn: StepFunction, backward: Event) -> bool:
    """Whether the loss reaching backward was divided (or weighted by a fraction) somewhere: in
    this function, or, for a helper's backward, in the helper (or the argument the caller passes)."""
    if backward.via is not None:
        callee = ctx.training.function_of(backward)
        if callee is None or _divided(ctx, callee, backward.origin):
            return True
    loss = backward.arg
    if loss is None:
        return True
    if _has_division(loss):
        return True
    name = ctx.segment(loss) if isinstance(loss, (ast.Name, ast.Attribute)) else None
    if name is None:
        return False
    for node in ast.walk(fn.node):
        if getattr(node, "lineno", 10**9) > backward.call.lineno:
            continue
        if isinstance(node, ast.AugAssign) and ctx.segment(node.target) == name:
            if isinstance(node.op, (ast.Div, ast.FloorDiv)) or _has_division(node.value):
                return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(name in {ctx.segment(t), *(ctx.segment(e) for e in getattr(t, "elts", []))} for t in targets):
                if _has_division(node.value):
                    return True
    return False


def _has_division(expr: ast.AST) -> bool:
    for sub in ast.walk(expr):
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, (ast.Div, ast.FloorDiv)):
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in ("div", "div_", "true_divide"):
            return True
    return False


def _microbatch_backwards(ctx: ModuleContext, fn: StepFunction) -> list[Event]:
    """Backwards in a loop over micro-batches that zero-grads before the loop and never steps in it
    (guided-diffusion's forward_backward): the step comes after the loop, in this function or its caller."""
    found = []
    for backward in fn.of(BACKWARD):
        loops = [f.node for f in backward.context if isinstance(f.node, (ast.For, ast.AsyncFor))]
        if not loops:
            continue
        loop = loops[-1]
        if not _iterates_microbatches(loop):
            continue
        inside = lambda e: any(f.node is loop for f in e.context)  # noqa: E731
        if any(inside(s) for s in fn.of(OPT_STEP, SCALER_STEP)):
            continue
        zero = [z for z in fn.of(ZERO_GRAD) if z.call.lineno < loop.lineno and not inside(z)]
        if zero and not _divided(ctx, fn, backward):
            found.append(backward)
    return found


def _iterates_microbatches(loop: ast.AST) -> bool:
    """`for i in range(0, n, micro)`, or over `.split(...)` / `.chunk(...)` of a batch."""
    it = loop.iter
    if isinstance(it, ast.Call) and getattr(it.func, "id", None) == "range" and len(it.args) == 3:
        return True
    return isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr in ("split", "chunk")
