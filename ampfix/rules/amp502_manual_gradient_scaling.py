"""AMP502: hand-rolled loss/gradient scaling instead of `torch.amp.GradScaler`.

Two shapes:
- the loss is multiplied by a scale before backward (`(loss * 2 ** k).backward()`,
  `scaled = loss * self.loss_scale; scaled.backward()`), the gradients divided by it later;
- gradients are multiplied or divided by a scale after backward
  (`for p in model.parameters(): p.grad *= scale_factor`, `p.grad.data.div_(loss_scale)`).

The fix (unsafe) handles the local form: one backward, one optimizer, a loop over the gradients
right after the backward. ``p.grad *= c`` after ``loss.backward()`` is exactly the gradient of
``loss * c``, so the rewrite keeps the factor: ``scaler.scale(loss * c).backward()``; a static
scale that is multiplied in and divided out again cancels: ``scaler.scale(loss).backward()``.
"""

from __future__ import annotations

import ast
import re
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import delete_statement, parent_body, receiver_range
from ampfix.model import BACKWARD, Event, StepFunction, encloses
from ampfix.prefilter import FileBytes, may_backward
from ampfix.rules._conversion import autocast_conversion, infer_device
from ampfix.rules._loop import loops_of
from ampfix.rules._protocol import add_scaler_protocol
from ampfix.rules.base import FIX_UNSAFE, Rule

_SCALE_WORD = re.compile(r"scale", re.I)
# `p.grad *= c`, `p.grad /= c`, `p.grad.mul_(c)`, `p.grad.data.div_(c)`: what the rule detects
_GRAD_RESCALE = re.compile(rb"\.grad(?:\.data)?\s*(?:\*=|/=|\.(?:mul|div)_\()")


class ManualGradientScaling(Rule):
    code = "AMP502"
    name = "manual-gradient-scaling"
    summary = "Loss or gradients are scaled by hand instead of with `torch.amp.GradScaler`"
    # a scaled loss backpropagated, or a gradient rescaled in place (the shapes the rule detects)
    triggers = (b"backward", b".grad")
    fix_safety = FIX_UNSAFE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        if not file.has(b"scale", b"Scale", b"SCALE"):  # the factor's name says scale, in any case
            return False
        return may_backward(file) or (file.has(b".grad") and file.matches(_GRAD_RESCALE))

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for fn in model.functions:
            for backward in fn.of(BACKWARD):
                if backward.scaled or backward.arg is None:
                    continue
                factor = scaled_loss_factor(ctx, fn, backward)
                if factor is not None:
                    message = (
                        f"the loss is scaled by hand (× `{ctx.segment(factor)}`) before backward: "
                        "use `torch.amp.GradScaler`, which also skips overflowed steps and adapts the scale"
                    )
                    yield ctx.diagnostic(self, backward.call, message, self._static_fix(ctx, fn, backward, factor))
        for node, factor, divide in gradient_rescales(ctx):
            message = (
                f"gradients are {'divided' if divide else 'multiplied'} by `{ctx.segment(factor)}` by hand: "
                "use `torch.amp.GradScaler` (`scaler.scale(loss)`, `scaler.unscale_(optimizer)`, `scaler.step`)"
            )
            yield ctx.diagnostic(self, node, message, self._grad_fix(ctx, node, factor, divide))

    def _static_fix(self, ctx, fn, backward: Event, factor) -> Optional[Fix]:
        """`(loss * S).backward()` ... `p.grad /= S`: the scale cancels; GradScaler does both."""
        if not isinstance(backward.arg, ast.BinOp):
            return None
        divisions = [
            (node, f, divide) for node, f, divide in gradient_rescales(ctx)
            if divide and ctx.segment(f) == ctx.segment(factor) and encloses(fn.node, node)
        ]
        if len(divisions) != 1:
            return None
        loop = _enclosing_for(ctx, divisions[0][0])
        if loop is None:
            return None
        loss = backward.arg.left if backward.arg.right is factor else backward.arg.right
        return self._protocol_fix(ctx, fn, backward, loop, ctx.segment(loss), f"Use a GradScaler instead of the static scale `{ctx.segment(factor)}`")

    def _grad_fix(self, ctx, node, factor, divide) -> Optional[Fix]:
        loop = _enclosing_for(ctx, node)
        fn = next((f for f in ctx.training.functions if encloses(f.node, node) and f.node is not loop), None)
        if loop is None or fn is None:
            return None
        body = parent_body(ctx, loop)
        if body is None or body.index(loop) == 0:
            return None
        previous = body[body.index(loop) - 1]
        backwards = [b for b in fn.of(BACKWARD) if b.stmt is previous and not b.scaled and b.receiver is None]
        if len(backwards) != 1 or backwards[0].arg is None:
            return None
        backward = backwards[0]
        if any(isinstance(b.arg, ast.BinOp) and _mentions_scale(ctx, b.arg) for b in backwards):
            return None  # the static form, fixed from the backward's side
        operator = "/" if divide else "*"
        loss = f"{_operand(ctx, backward.arg)} {operator} {_operand(ctx, factor)}"
        return self._protocol_fix(ctx, fn, backward, loop, loss, f"Use `scaler.scale({loss})` instead of rescaling gradients")

    def _protocol_fix(self, ctx, fn: StepFunction, backward: Event, loop: ast.For, loss: str, message: str) -> Optional[Fix]:
        """Replace the manual scaling by the GradScaler protocol; a step with no autocast yet is
        converted whole (the forward wrapped as AMP501 does it)."""
        if len(loop.body) != 1:
            return None  # the loop does something else too
        delete = delete_statement(ctx, loop, parent_body(ctx, loop) or [])
        loops = loops_of(backward)
        if delete is None or not loops:
            return None
        edits = [delete]
        device_scaler = infer_device(ctx, fn).scaler
        r_start, r_end = receiver_range(ctx, backward.call)
        if not ctx.training.regions:
            conversion = autocast_conversion(ctx, fn, backward)
            if conversion is None:
                return None
            edits += conversion.edits
            device_scaler = conversion.device.scaler
            if conversion.dtype == "bfloat16":  # no underflow to guard against: no scaler at all
                edits.append(Edit(r_start, r_end, f"({loss})"))
                return Fix(message.replace("a GradScaler", "bfloat16 autocast"), tuple(edits), Applicability.UNSAFE)
        planned = add_scaler_protocol(ctx, fn, [backward], loops[0], device_scaler)
        if planned is None:
            return None
        protocol, name = planned
        # the loss inside `name.scale(...)` is the rescaled one: replace the receiver whole
        start, end = ctx.locator.node_range(backward.arg)
        protocol = [e for e in protocol if not (e.start in (start, end) and e.start == e.end)]
        edits += [*protocol, Edit(r_start, r_end, f"{name}.scale({loss})")]
        return Fix(message, tuple(edits), Applicability.UNSAFE)


def _mentions_scale(ctx: ModuleContext, expr: ast.AST) -> bool:
    for sub in ast.walk(expr):
        if isinstance(sub, ast.Name) and _SCALE_WORD.search(sub.id):
            return True
        if isinstance(sub, ast.Attribute) and _SCALE_WORD.search(sub.attr):
            return True
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Pow):
            base = sub.left
            if isinstance(base, ast.Constant) and base.value == 2:
                return True
    return False


def scaled_loss_factor(ctx: ModuleContext, fn: StepFunction, backward: Event) -> Optional[ast.AST]:
    """The scale in `(loss * S).backward()` or `scaled = loss * S; scaled.backward()`."""
    expr = backward.arg
    if isinstance(expr, ast.Name):
        values = [
            n.value for n in ctx.semantic.nodes(ast.Assign)
            if encloses(fn.node, n) and n.lineno < backward.call.lineno
            and any(isinstance(t, ast.Name) and t.id == expr.id for t in n.targets)
        ]
        expr = values[-1] if values else None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        for side in (expr.right, expr.left):
            if _mentions_scale(ctx, side) and not _mentions_scale_loss_name(side):
                return side
    return None


def _mentions_scale_loss_name(side: ast.AST) -> bool:
    """`loss * scale` has the loss on one side; a side that is itself the loss is not a factor."""
    return isinstance(side, ast.Name) and "loss" in side.id.lower() and "scale" not in side.id.lower()


def gradient_rescales(ctx: ModuleContext):
    """(node, factor, divides) for `p.grad *= c`, `p.grad.mul_(c)`, `p.grad.data.div_(c)`, ..."""
    found = []
    for node in ctx.semantic.nodes(ast.AugAssign):
        if _is_grad(node.target) and isinstance(node.op, (ast.Mult, ast.Div)) and _mentions_scale(ctx, node.value):
            found.append((node, node.value, isinstance(node.op, ast.Div)))
    for call in ctx.semantic.nodes(ast.Call):
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in ("mul_", "div_") and len(call.args) == 1:
            if _is_grad(func.value) and _mentions_scale(ctx, call.args[0]):
                found.append((call, call.args[0], func.attr == "div_"))
    return found


def _is_grad(expr: ast.AST) -> bool:
    if isinstance(expr, ast.Attribute) and expr.attr == "data":
        expr = expr.value
    return isinstance(expr, ast.Attribute) and expr.attr == "grad"


def _enclosing_for(ctx: ModuleContext, node: ast.AST) -> Optional[ast.For]:
    for ancestor in ctx.semantic.ancestors(node):
        if isinstance(ancestor, ast.For):
            return ancestor
        if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
    return None


def _operand(ctx: ModuleContext, expr: ast.AST) -> str:
    text = ctx.segment(expr)
    if isinstance(expr, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant)):
        return text
    return f"({text})"
