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
import bisect
import re
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import delete_statement, parent_body, receiver_range
from ampfix.prefilter import FileBytes, may_backward
from ampfix.program.values import assignments
from ampfix.rules._conversion import autocast_conversion, infer_device
from ampfix.rules._loop import loops_of
from ampfix.rules._protocol import add_scaler_protocol
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.semantic import dotted_name
from ampfix.training.accumulation import is_gradient
from ampfix.training.model import BACKWARD, Event, StepFunction, encloses

# `p.grad *= c`, `p.grad /= c`, `p.grad.mul_(c)`, `p.grad.data.div_(c)`: what the rule detects
# `(loss * 1024.).backward()`, `(65536 * loss).backward()`: a literal of 8 or more multiplied
# into the loss on the backward's own line
_LITERAL_FACTOR = re.compile(
    rb"(?:(?<!\*)\*\s*\(?\s*(?:[1-9]\d|[89]\b|2\s*\*\*)|\b(?:[1-9]\d+|[89])\.?\d*\s*\*(?!\*))[^\n]*\.backward\s*\("
)
_GRAD_RESCALE = re.compile(rb"\.grad(?:\.data)?\s*(?:\*=|/=|\.(?:mul|div)_\()")


def _literal_factor_on_a_backward_line(data: bytes) -> bool:
    """``_LITERAL_FACTOR`` on the lines that hold a ``backward`` only (a regex over the file
    would try its alternatives at every byte)."""
    start = data.find(b"backward")
    while start != -1:
        line_start = data.rfind(b"\n", 0, start) + 1
        line_end = data.find(b"\n", start)
        line_end = len(data) if line_end == -1 else line_end
        if _LITERAL_FACTOR.search(data, line_start, line_end):
            return True
        start = data.find(b"backward", line_end)
    return False


class ManualGradientScaling(Rule):
    code = "AMP502"
    name = "manual-gradient-scaling"
    summary = "Loss or gradients are scaled by hand instead of with `torch.amp.GradScaler`"
    # a scaled loss backpropagated, or a gradient rescaled in place (the shapes the rule detects)
    triggers = (b"backward", b".grad")
    fix_safety = FIX_UNSAFE
    changes_training = "the manual scale became a GradScaler (rounding differs)"  # a bug fix: unsafe, as ruff defines it

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        # the factor is named for a scale (`loss_scale`, `self.cur_scale`) or a literal (`* 1024.`,
        # `* 2 ** 16`); whether it is a *precision* scale is then decided from its value
        if may_backward(file) and (
            file.has(b"scale", b"Scale", b"SCALE", b"scaling", b"Scaling")
            or file.answer(_LITERAL_FACTOR, _literal_factor_on_a_backward_line)
        ):
            return True
        return file.has(b".grad") and file.matches(_GRAD_RESCALE)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for fn in model.functions:
            for backward in fn.of(BACKWARD):
                if backward.scaled or backward.arg is None or _implements_a_scaler(ctx, backward.call):
                    continue  # a LossScaler class's own methods (or its demo) are the implementation, not a use
                factor = scaled_loss_factor(ctx, fn, backward)
                if factor is not None:
                    message = (
                        f"the loss is scaled by hand (× `{ctx.segment(factor)}`) before backward: "
                        "use `torch.amp.GradScaler`, which also skips overflowed steps and adapts the scale"
                    )
                    yield ctx.diagnostic(self, backward.call, message, self._static_fix(ctx, fn, backward, factor))
        for node, factor, divide in gradient_rescales(ctx):
            if _implements_a_scaler(ctx, node):
                continue
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
        if any(scaled_loss_factor(ctx, fn, b) is not None for b in backwards):
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
                edits.append(Edit(r_start, r_end, loss if _atomic(loss) else f"({loss})"))
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


def _atomic(expression: str) -> bool:
    """Whether ``expression`` needs no parentheses before ``.backward()``."""
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        return False
    return isinstance(node, (ast.Name, ast.Attribute, ast.Call, ast.Subscript))


def _implements_a_scaler(ctx: ModuleContext, node: ast.AST) -> bool:
    """Whether node lies in a class whose name says it is a loss scaler (apex/Megatron's
    ``LossScaler``, ``DynamicLossScaler``), or in the ``if __name__ == "__main__":`` demo of a
    module that defines one."""
    if not any(_SCALER_CLASS.search(c.name) for c in ctx.semantic.nodes(ast.ClassDef)):
        return False
    for ancestor in [node, *ctx.semantic.ancestors(node)]:
        if isinstance(ancestor, ast.ClassDef) and _SCALER_CLASS.search(ancestor.name):
            return True
        if isinstance(ancestor, ast.If) and "__main__" in ctx.segment(ancestor.test):
            return True
    return False


_SCALER_CLASS = re.compile(r"scaler", re.I)


def _is_loss_scale(ctx: ModuleContext, expr: ast.AST, depth: int = 0) -> bool:
    """Whether ``expr`` is a *precision* loss scale, decided from its value, not its name: a
    constant of 8 or more, a power of two (``2 ** k``), or a name or attribute every assignment
    of which is one, or that the code backs off or grows by a constant factor (a dynamic scale).
    ``loss_scale = 1 / accum``, a per-batch weight from a call, a parameter: not a loss scale."""
    if isinstance(expr, ast.Constant):
        return isinstance(expr.value, (int, float)) and not isinstance(expr.value, bool) and expr.value >= 8
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Pow):
        return isinstance(expr.left, ast.Constant) and expr.left.value == 2
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div):
        # `1. / loss_scaler.loss_scale`: the inverse of a loss scale unscales
        return isinstance(expr.left, ast.Constant) and expr.left.value == 1 and _is_loss_scale(ctx, expr.right, depth)
    if depth >= 2 or not isinstance(expr, (ast.Name, ast.Attribute)):
        return False
    if isinstance(expr, ast.Attribute) and _is_loss_scaler_object(ctx, expr.value):
        return True  # `self.loss_scaler.loss_scale` of a `LossScaler(...)` object (mmcv, apex)
    values, dynamic = _assigned_values(ctx, expr)
    if dynamic:
        return True
    return bool(values) and all(_is_loss_scale(ctx, value, depth + 1) for value in values)


def _is_loss_scaler_object(ctx: ModuleContext, expr: ast.AST) -> bool:
    """Whether every assignment of ``expr`` creates an object of a ``...LossScaler`` class."""
    if not isinstance(expr, (ast.Name, ast.Attribute)):
        return False
    values, _ = _assigned_values(ctx, expr)
    return bool(values) and all(
        isinstance(v, ast.Call) and _LOSS_SCALER_CLASS.search(dotted_name(v.func) or "") for v in values
    )


_LOSS_SCALER_CLASS = re.compile(r"LossScaler$")


def _assigned_values(ctx: ModuleContext, expr: ast.AST) -> tuple[list, bool]:
    """Every value that may reach ``expr`` (ampfix.program.values: ``self.x`` of this class only),
    and whether it is multiplied or divided in place by a constant factor (``self.loss_scale /= 2``)."""
    values, dynamic = [], False
    for node in assignments(ctx.semantic, expr):
        if isinstance(node, ast.AugAssign):
            dynamic |= isinstance(node.op, (ast.Mult, ast.Div)) and isinstance(node.value, ast.Constant)
            dynamic |= isinstance(node.op, (ast.Add, ast.Sub)) and _is_log_scale(expr)
        else:
            values.append(node.value)
    return values, dynamic


def _is_log_scale(expr: ast.AST) -> bool:
    """``lg_loss_scale -= 1``: a log2 scale steps by adding (improved-diffusion)."""
    name = expr.id if isinstance(expr, ast.Name) else expr.attr
    return "lg" in name.lower() or "log" in name.lower()


def scaled_loss_factor(ctx: ModuleContext, fn: StepFunction, backward: Event) -> Optional[ast.AST]:
    """The scale in `(loss * S).backward()` or `scaled = loss * S; scaled.backward()`."""
    expr = backward.arg
    through_name = isinstance(expr, ast.Name) and not _SCALE_NAME.search(expr.id)
    if isinstance(expr, ast.Name):
        values = _assigned_in_lines(ctx, expr.id, fn.node, backward.call.lineno - 1)
        expr = values[-1].value if values else None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        for side in (expr.right, expr.left):
            if _named_or_literal(side, through_name) and _is_loss_scale(ctx, side) and not _mentions_scale_loss_name(side):
                return side
    return None


def _assigned_in_lines(ctx: ModuleContext, name: str, scope: ast.AST, last_row: int) -> list[ast.Assign]:
    """The ``name = ...`` statements (a plain name among the targets) on the lines of ``scope``
    (a function, nested ones included, or the whole module) up to ``last_row``, in source order:
    from an index of the module's assignments by name, built once (a file of many training
    functions would otherwise scan every assignment of the module per backward)."""
    index = getattr(ctx.semantic, "_plain_assignments", None)
    if index is None:
        index = ctx.semantic._plain_assignments = {}
        for node in ctx.semantic.nodes(ast.Assign):
            for target in dict.fromkeys(t.id for t in node.targets if isinstance(t, ast.Name)):
                index.setdefault(target, ([], []))
                index[target][0].append(node)
                index[target][1].append(node.lineno)
    nodes, rows = index.get(name, ((), ()))
    first = 0 if isinstance(scope, ast.Module) else scope.lineno
    last = last_row if isinstance(scope, ast.Module) else min(last_row, scope.end_lineno)
    return list(nodes[bisect.bisect_left(rows, first):bisect.bisect_right(rows, last)])


def _named_or_literal(side: ast.AST, through_name: bool) -> bool:
    """A factor the rule looks at (the prefilter's condition): named for a scale, or a literal in
    the backward's own expression or in a value named for a scale (``scaled = loss * 1024``)."""
    if isinstance(side, (ast.Constant, ast.BinOp)):
        return not through_name  # 1024.0, 2 ** 16
    name = side.id if isinstance(side, ast.Name) else side.attr if isinstance(side, ast.Attribute) else ""
    return bool(_SCALE_NAME.search(name))


_SCALE_NAME = re.compile(r"scale|scaling", re.I)


def _mentions_scale_loss_name(side: ast.AST) -> bool:
    """`loss * scale` has the loss on one side; a side that is itself the loss is not a factor."""
    return isinstance(side, ast.Name) and "loss" in side.id.lower() and "scale" not in side.id.lower()


def gradient_rescales(ctx: ModuleContext):
    """(node, factor, divides) for gradients unscaled by hand: ``p.grad /= S``, ``p.grad.data.div_(S)``,
    ``p.grad.mul_(1. / S)`` where S is a precision loss scale (``p.grad *= 0.5`` is a weight)."""
    found = []
    for node in ctx.semantic.nodes(ast.AugAssign):
        if is_gradient(node.target) and _unscales(ctx, node.op, node.value):
            found.append((node, node.value, isinstance(node.op, ast.Div)))
    for call in ctx.semantic.nodes(ast.Call):
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in ("mul_", "div_") and len(call.args) == 1:
            op = ast.Div() if func.attr == "div_" else ast.Mult()
            if is_gradient(func.value) and _unscales(ctx, op, call.args[0]):
                found.append((call, call.args[0], func.attr == "div_"))
    return found


def _unscales(ctx: ModuleContext, op: ast.operator, factor: ast.AST) -> bool:
    """Dividing by a loss scale, or multiplying by its inverse."""
    if isinstance(op, ast.Div):
        return _is_loss_scale(ctx, factor)
    inverse = isinstance(factor, ast.BinOp) and isinstance(factor.op, ast.Div)
    return isinstance(op, ast.Mult) and inverse and _is_loss_scale(ctx, factor)


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
