"""AMP304: `zero_grad()` on the step's own iterations before the step: the window is wiped."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.prefilter import FileBytes, may_train_step
from ampfix.rules._loop import at
from ampfix.rules.base import Rule
from ampfix.semantic import dotted_name
from ampfix.training.accumulation import window_wipes


class ZeroGradInsideAccumulationWindow(Rule):
    code = "AMP304"
    name = "zero-grad-inside-accumulation-window"
    summary = "`zero_grad()` under the accumulation step's condition, before the step, wipes the window"
    triggers = (b"zero_grad",)

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return may_train_step(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for training_step in ctx.steps:
            fn = training_step.function
            for acc in training_step.windows:
                for zero, step in window_wipes(model, fn, acc):
                    when = f"when `{ctx.segment(acc.gate.test)}`" if acc.gate is not None else (
                        f"after the loop over `{ctx.segment(acc.factor)}` micro-batches"
                    )
                    after = [b for b in acc.backwards if fn.before(zero, b) and fn.before(b, step)]
                    what = (
                        "before this iteration's backward: the step sees only the last micro-batch's gradients"
                        if after else "right before the step: the step sees no gradients at all"
                    )
                    message = (
                        f"`{ctx.segment(zero.call)}` runs {when}, {what}, so accumulation does "
                        f"nothing; zero the gradients after the step instead"
                    )
                    evidence = [
                        at(zero, f"gradients zeroed {when}"),
                        *(at(b, "then this backward adds one micro-batch") for b in after[:1]),
                        at(step, "the step that should have used the whole window"),
                    ]
                    yield ctx.diagnostic(self, zero.call, message, None, evidence)
        yield from self._accelerate_windows(ctx)

    def _accelerate_windows(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        """``with accelerator.accumulate(model):`` that opens with ``optimizer.zero_grad()`` of a
        prepared optimizer: Accelerate's optimizer zeroes only on the sync step (it skips the call
        on the other micro-batches), so the window is wiped right before its last backward."""
        if not _imports_accelerate(ctx):
            return
        prepared = _prepared_names(ctx)
        for block in ctx.semantic.nodes(ast.With):
            opener = next((i.context_expr for i in block.items if _is_accumulate(i.context_expr)), None)
            if opener is None:
                continue
            wipe = _wipe_in(block.body, prepared)
            if wipe is None:
                continue
            zero, backward, step = wipe
            message = (
                f"`{ctx.segment(zero)}` opens `with {ctx.segment(opener)}:`: Accelerate's prepared optimizer "
                f"zeroes only on the step's micro-batch (the sync step), before its backward, so with "
                f"gradient_accumulation_steps > 1 the step sees only the last micro-batch's gradients and "
                f"accumulation does nothing; zero the gradients after the step instead"
            )
            evidence = [
                (opener, "Accelerate's accumulation window"),
                (zero, "gradients zeroed on the sync step only"),
                (backward, "then this backward adds one micro-batch"),
                (step, "the step that should have used the whole window"),
            ]
            yield ctx.diagnostic(self, zero, message, None, evidence)


def _imports_accelerate(ctx: ModuleContext) -> bool:
    for node in ctx.semantic.nodes(ast.Import, ast.ImportFrom):
        modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        if any(m == "accelerate" or m.startswith("accelerate.") for m in modules):
            return True
    return False


def _is_accumulate(expr: ast.expr) -> bool:
    """``accelerator.accumulate(model)`` (``self.accelerator``, ``accel``: any receiver whose last
    name mentions ``accel``)."""
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "accumulate"):
        return False
    receiver = dotted_name(expr.func.value) or ""
    return "accel" in receiver.rsplit(".", 1)[-1].lower()


def _prepared_names(ctx: ModuleContext) -> set:
    """Names bound by ``... = accelerator.prepare(...)``: only Accelerate's wrapped optimizer skips
    ``zero_grad`` off the sync step (a bare torch optimizer zeroes every micro-batch: AMP303's case)."""
    names = set()
    for assign in ctx.semantic.nodes(ast.Assign):
        call = assign.value
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "prepare"):
            continue
        for target in assign.targets:
            for element in target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]:
                name = dotted_name(element)
                if name is not None:
                    names.add(name)
    return names


def _wipe_in(body: list, prepared: set) -> Optional[tuple]:
    """(zero_grad, backward, step) when a statement of the block (not one under a condition) zeroes
    a prepared optimizer, a later one backpropagates, and a later one steps that optimizer."""
    for zero in (s.value for s in body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)):
        receiver = _method_receiver(zero, "zero_grad")
        if receiver is None or receiver not in prepared:
            continue
        backward = next((c for c in _calls_after(body, zero) if _is_backward(c)), None)
        if backward is None:
            continue
        step = next((c for c in _calls_after(body, backward) if _method_receiver(c, "step") == receiver), None)
        if step is not None:
            return zero, backward, step
    return None


def _calls_after(body: list, node: ast.AST) -> list:
    """The calls in ``body`` (at any depth, in source order) that start after ``node``."""
    found = [n for s in body for n in ast.walk(s) if isinstance(n, ast.Call)]
    after = [c for c in found if (c.lineno, c.col_offset) > (node.lineno, node.col_offset)]
    return sorted(after, key=lambda c: (c.lineno, c.col_offset))


def _method_receiver(call: ast.Call, method: str) -> Optional[str]:
    if isinstance(call.func, ast.Attribute) and call.func.attr == method and not call.args:
        return dotted_name(call.func.value)
    return None


def _is_backward(call: ast.Call) -> bool:
    """``accelerator.backward(loss)`` or ``loss.backward()``."""
    return isinstance(call.func, ast.Attribute) and call.func.attr == "backward"
