"""AMP209: a model whose weights are float16 trained with no loss scaling, or stepped by a GradScaler."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.prefilter import FileBytes, may_train_step
from ampfix.program.values import assignments, enclosing_function
from ampfix.rules._loop import at
from ampfix.rules.amp502_manual_gradient_scaling import (
    gradient_rescales,
    scaled_loss_factor,
)
from ampfix.rules.base import FIX_NONE, Rule
from ampfix.semantic import dotted_name
from ampfix.training.model import BACKWARD, OPT_STEP, SCALER_STEP, Event, StepFunction

_FLOAT16 = frozenset({"torch.float16", "torch.half"})


class Float16Weights(Rule):
    code = "AMP209"
    name = "float16-weights-without-loss-scaling"
    summary = "A model converted to float16 is trained with no loss scaling, or stepped through a `GradScaler`"
    triggers = (b".half(", b"float16", b"torch.half")
    fix_safety = FIX_NONE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return may_train_step(file)  # a backward here, or in a helper of this module

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        conversions = _float16_conversions(ctx)
        if not conversions:
            return
        for training_step in ctx.steps:
            fn = training_step.function
            for step in training_step.of(OPT_STEP, SCALER_STEP):
                optimizer = step.call.func.value if step.kind == OPT_STEP else step.arg
                converted = self._converted_model(ctx, fn, optimizer, step, conversions)
                if converted is None:
                    continue
                network, conversion = converted
                backwards = [
                    b for b in training_step.of(BACKWARD, calls=True)
                    if b.kind == BACKWARD and b.origin_path is None and fn.before(b, step)
                ]  # in this module: a file with no backward of its own is not parsed (the prefilter)
                if not backwards:
                    continue
                evidence = [
                    (conversion, f"`{network}` converted to float16 here"),
                    at(backwards[-1], "backward through float16 weights"),
                ]
                if step.kind == SCALER_STEP:
                    message = (
                        f"`{step.receiver}.step({ctx.segment(optimizer)})` on float16 parameters: GradScaler cannot unscale "
                        f"float16 gradients and raises `Attempting to unscale FP16 gradients` at the first step; "
                        f"keep `{network}` in float32 and use `torch.autocast`"
                    )
                    yield ctx.diagnostic(self, step.call, message, None, evidence)
                elif not self._scaled(ctx, training_step, backwards):
                    message = (
                        f"`{network}` has float16 weights and its gradients are not loss-scaled: small gradients "
                        f"underflow to zero and updates smaller than float16's resolution are lost; keep the weights "
                        f"in float32 with `torch.autocast` and a `torch.amp.GradScaler` (or use bfloat16)"
                    )
                    yield ctx.diagnostic(self, step.call, message, None, [*evidence, at(step, "stepped unscaled")])

    @staticmethod
    def _converted_model(ctx, fn: StepFunction, optimizer: Optional[ast.expr], step: Event, conversions):
        """(model name, conversion node) when ``optimizer`` is built from the parameters of a model
        that this function converts to float16 before the step (on a path that runs)."""
        if optimizer is None:
            return None
        for statement in assignments(ctx.semantic, optimizer):
            value = getattr(statement, "value", None)
            if not isinstance(value, ast.Call) or not value.args:
                continue
            for sub in ast.walk(value.args[0]):
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "parameters":
                    network = dotted_name(sub.func.value)
                    for name, node in conversions:
                        if name == network and _before(ctx, fn, node, step):
                            return network, node
        return None

    @staticmethod
    def _scaled(ctx, training_step, backwards) -> bool:
        """Some loss scaling in this step: a scaler, or a hand-written scale (AMP502's shapes)."""
        if training_step.uses_scaler:
            return True
        fn = training_step.function
        if any(scaled_loss_factor(ctx, fn, b) is not None for b in backwards if b.via is None):
            return True
        return bool(gradient_rescales(ctx))


def _float16_conversions(ctx: ModuleContext) -> list[tuple[str, ast.AST]]:
    """(model name, node) for ``model.half()``, ``model.to(torch.float16)``,
    ``model.to(dtype=torch.half)`` and ``X.from_pretrained(..., torch_dtype=torch.float16)``."""
    found = []
    for call in ctx.semantic.nodes(ast.Call):
        func = call.func
        if not isinstance(func, ast.Attribute):
            continue
        if func.attr == "half" and not call.args:
            target = _converted_name(ctx, call)
        elif func.attr == "to" and any(
            ctx.semantic.qualified_name(a) in _FLOAT16
            for a in [*call.args, *(k.value for k in call.keywords if k.arg == "dtype")]
        ):
            target = _converted_name(ctx, call)
        elif func.attr == "from_pretrained" and any(
            k.arg == "torch_dtype" and ctx.semantic.qualified_name(k.value) in _FLOAT16 for k in call.keywords
        ):
            target = _assigned_to(ctx, call)
        else:
            continue
        if target is not None:
            found.append((target, call))
    return found


def _converted_name(ctx: ModuleContext, call: ast.Call) -> Optional[str]:
    """``model.half()`` converts ``model`` in place (an ``nn.Module``); ``net = Net().half()`` names
    ``net``. A tensor's ``x.half()`` converts a copy: only a statement of its own, or an assignment
    back to the same name, counts."""
    receiver = dotted_name(call.func.value)
    parent = ctx.semantic.parent(call)
    if isinstance(parent, ast.Expr) and receiver is not None:
        return receiver
    return _assigned_to(ctx, call)


def _assigned_to(ctx: ModuleContext, call: ast.Call) -> Optional[str]:
    parent = ctx.semantic.parent(call)
    if isinstance(parent, ast.Assign) and parent.value is call and len(parent.targets) == 1:
        return dotted_name(parent.targets[0])
    return None


def _before(ctx: ModuleContext, fn: StepFunction, conversion: ast.AST, step: Event) -> bool:
    """The conversion runs before the step: earlier in the step's function on a path to it, or at
    module level / in ``__init__`` (set up once, before any training)."""
    node = enclosing_function(ctx.semantic, conversion) or ctx.tree
    owner = next((f for f in ctx.training.functions if f.node is node), None)
    if owner is None:
        return False
    if owner is fn:
        probe = ctx.training.event_at(conversion, "convert")
        return probe is not None and fn.before(probe, step)
    return isinstance(owner.node, ast.Module) or getattr(owner.node, "name", "") == "__init__"
