"""AMP301: gradient accumulation whose loss is not divided by the number of micro-batches."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import receiver_range
from ampfix.prefilter import FileBytes, may_backward, may_step
from ampfix.rules._loop import at
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.accumulation import gradients_rescaled, rebound_in_window, step_evidence
from ampfix.training.frameworks import accelerate_backward, accelerators_of
from ampfix.training.loss import LossSource, divided_by_callee, is_divided, loss_sources, sums_over_samples
from ampfix.training.model import (
    BACKWARD,
    OPT_STEP,
    SCALER_STEP,
    ZERO_GRAD,
    Accumulation,
    Event,
    StepFunction,
)

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
        for training_step in ctx.steps:
            fn = training_step.function
            for acc in training_step.windows:
                if gradients_rescaled(ctx, fn, acc) is not None:
                    continue  # normalised on the gradient side, before the step (torchtune's scale_grads)
                for backward in acc.backwards:
                    if divided(ctx, fn, backward, acc.factor) or _zeroed_in_window(fn, acc, backward):
                        continue
                    if summed_by_design(ctx, backward) is not None:
                        continue  # a sum over samples (yolov5's loss * batch size): summing is the design
                    factor = ctx.segment(acc.factor) if acc.factor is not None else "N"
                    message = (
                        f"gradients accumulate over `{factor}` micro-batches but the loss is not divided by "
                        f"`{factor}`: the update is {factor}× too large; backpropagate `loss / {factor}`"
                    )
                    evidence = [
                        at(backward, "backward on every micro-batch, loss not divided"),
                        step_evidence(ctx, acc),
                    ]
                    if backward.via is not None:  # the backward runs in a helper: report at the call, no fix
                        origin = backward.origin
                        message += f" (the backward is in `{_function_name(model, origin)}`, line {origin.line})"
                        yield ctx.diagnostic(self, backward.call, message, None, evidence)
                        continue
                    unsafe_divisor = _unsafe_divisor(acc, factor)
                    fix = None if unsafe_divisor else division_fix(ctx, backward, acc.factor)
                    diag = ctx.diagnostic(self, backward.call, message, fix, evidence)
                    if unsafe_divisor:
                        diag.no_fix_reason = unsafe_divisor
                    yield diag
            for backward in _microbatch_backwards(ctx, fn):
                message = (
                    "backward runs once per micro-batch and the optimizer steps once after the loop, but the loss "
                    "is not divided by the number of micro-batches: gradients grow with it"
                )
                yield ctx.diagnostic(self, backward.call, message)


def division_fix(ctx: ModuleContext, backward: Event, factor: Optional[ast.expr]) -> Optional[Fix]:
    """Divide the loss that ``backward`` differentiates by ``factor`` (AMP303 adds it to its own fix)."""
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
    func = backward.call.func
    if backward.scaled or not (isinstance(func, ast.Attribute) and func.value is loss):
        new = f"{text} / {divisor}"  # an argument: `scaler.scale(loss)`, `torch.autograd.backward(loss)`
    else:
        new = f"({text} / {divisor})"
        # `(loss).backward()`: replace the parenthesised receiver, not just the name
        start, end = receiver_range(ctx, backward.call)
    return Fix(f"Divide the loss by `{ctx.segment(factor)}`", (Edit(start, end, new),), Applicability.UNSAFE)


def _function_name(model, event: Event) -> str:
    function = model.function_of(event)
    return getattr(function.node, "name", "<module>") if function is not None else "?"


def _unsafe_divisor(acc: Accumulation, factor: str) -> Optional[str]:
    """Why dividing by the window's count at the backward could fail or be wrong, if it could.
    A micro-batch loop's body runs only when ``range(N)`` is not empty, so N >= 1 there, as long
    as the body does not rebind it."""
    if acc.gate is None:
        if rebound_in_window(acc):
            return f"`{factor}` is rebound inside the micro-batch loop: at the backward it is not the count"
        return None
    if may_be_zero(acc.gate.test, acc.factor):
        return f"the step's condition shows `{factor}` may be 0 or unset, where dividing by it would fail"
    return None


def may_be_zero(test: ast.AST, factor: Optional[ast.expr]) -> bool:
    """Whether the gate guards its modulo by the factor with an earlier test of the factor
    (``not accum or (i + 1) % accum == 0``, ``accum and ...``): then the factor may be 0 or None
    on the iterations where the backward still runs, and ``loss / accum`` would raise there."""
    if factor is None:
        return False
    key = ast.dump(factor)
    for node in ast.walk(test):
        if not isinstance(node, ast.BoolOp):
            continue
        for index, operand in enumerate(node.values):
            has_modulo = any(isinstance(s, ast.BinOp) and isinstance(s.op, ast.Mod) and ast.dump(s.right) == key
                             for s in ast.walk(operand))
            if has_modulo and any(ast.dump(s) == key for earlier in node.values[:index] for s in ast.walk(earlier)):
                return True
    return False


def _zeroed_in_window(fn: StepFunction, acc, backward: Event) -> bool:
    """Whether gradients are zeroed on a path into this backward within one iteration, on every
    iteration or under the step's own condition (``if (i + 1) % n == 0: opt.zero_grad()`` before
    the backward): nothing accumulates, so there is nothing to divide (the misplaced
    ``zero_grad`` is the bug). A ``zero_grad`` under another condition opens a window: that is
    accumulation done right. In a micro-batch loop (``for t in range(K)``, the window opened
    before it) a ``zero_grad`` on any of its iterations keeps the K gradients from adding up
    (UER-py's PGD: zeroed on all but the last pass, then the clean gradient restored)."""
    gate = ast.dump(acc.gate.test) if acc.gate is not None else None
    for zero in fn.of(ZERO_GRAD):
        frames = [f.node for f in zero.context]
        if not any(node is acc.loop for node in frames) or not fn.before(zero, backward):
            continue
        inner = frames[next(i for i, node in enumerate(frames) if node is acc.loop) + 1:]
        conditions = [node.test for node in inner if isinstance(node, ast.If)]
        if acc.gate is None or not conditions or any(ast.dump(test) == gate for test in conditions):
            return True
    return False


def divided(ctx: ModuleContext, fn: StepFunction, backward: Event, count: Optional[ast.expr] = None) -> bool:
    """Whether the loss reaching backward was divided (or weighted by a fraction) on its way: in
    this function, or, for a helper's backward, in the helper (or the argument the caller passes),
    or by the function that returns it, by the window's ``count`` (``compute_loss(..., accum)``)."""
    if backward.via is not None:
        callee = ctx.training.function_of(backward)
        if callee is None or divided(ctx, callee, backward.origin):
            return True
    if backward.arg is None or _accelerate_divides(ctx, backward):
        return True
    if is_divided(loss_sources(ctx, backward.arg)):
        return True
    return count is not None and backward.via is None and divided_by_callee(ctx, backward.arg, count)


def _accelerate_divides(ctx: ModuleContext, backward: Event) -> bool:
    """``accelerator.backward(loss)`` of an ``Accelerator(gradient_accumulation_steps=k)`` divides
    the loss by k itself (or may: ``**kwargs``), on every construction of it that reaches here."""
    if backward.via is not None or not accelerate_backward(backward):
        return False
    accelerators = accelerators_of(ctx, backward)
    return bool(accelerators) and all(
        any(k.arg is None or (k.arg == "gradient_accumulation_steps" and not _is_one(k.value)) for k in c.keywords)
        for c in accelerators
    )


def _is_one(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Constant) and expr.value == 1


def summed_by_design(ctx: ModuleContext, backward: Event) -> Optional[LossSource]:
    """The source that makes the differentiated loss a sum over the batch's samples, if one does
    (then the window's gradient is the sum over its samples, as one large batch's would be)."""
    event = backward.origin if backward.via is not None else backward
    if event.arg is None:
        return None
    return sums_over_samples(loss_sources(ctx, event.arg, terms=True))


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
        if zero and not divided(ctx, fn, backward):
            found.append(backward)
    return found


def _iterates_microbatches(loop: ast.AST) -> bool:
    """`for i in range(0, n, micro)`, or over `.split(...)` / `.chunk(...)` of a batch."""
    it = loop.iter
    if isinstance(it, ast.Call) and getattr(it.func, "id", None) == "range" and len(it.args) == 3:
        return True
    return isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr in ("split", "chunk")
