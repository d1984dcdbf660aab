"""AMP208: float16 autocast with a backward pass and no GradScaler."""

from __future__ import annotations

import ast
import re
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.prefilter import FileBytes, may_backward
from ampfix.program.calls import module_callers
from ampfix.program.values import enclosing_function
from ampfix.program.vocabulary import vocabulary
from ampfix.rules._loop import at
from ampfix.rules._protocol import add_scaler_protocol, protocol_anchor
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.semantic import dotted_name
from ampfix.training.model import AUTOCASTS, BACKWARD, OPT_STEP, SCALER_STEP, AutocastRegion

_FP16 = re.compile(r"(?<!b)float16|\bhalf\b|fp16")  # in a dtype expression; `bfloat16` is not float16


class Float16WithoutScaler(Rule):
    code = "AMP208"
    name = "float16-without-scaler"
    summary = "float16 autocast (explicit or the CUDA default) trains without a `GradScaler`"
    triggers = (b"autocast",)
    fix_safety = FIX_UNSAFE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return file.has(b"autocast") and may_backward(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        if not any(f.of(OPT_STEP, SCALER_STEP, calls=True) for f in model.functions):
            return  # nothing in the module steps an optimizer (the question below, answered at once)
        # step by step: an fp32 or float16 phase without a scaler and an AMP phase with one, in one
        # function or notebook, are two steps
        for step in ctx.steps:
            if step.uses_scaler:
                continue  # this step scales (or hands the loss to a scaler wrapper): AMP202-204 check how
            fn = step.function
            every = model.regions_in(fn)
            regions = [r for r in every if self._may_be_float16(ctx, r)]
            # a float16 region reaches the backward on a path that runs (not the fp32 branch of `if use_amp`)
            # and no other region entered after it does (a bfloat16 step after a float16 warm-up)
            reaching = {
                id(b): found for b in step.of(BACKWARD)
                if not b.scaled and b.receiver is None and regions
                and (found := [r for r in _last_regions(fn, b, model.regions_reaching(fn, b, every)) if r in regions])
            }
            # a backward whose gradients no optimizer applies (a kernel timing, a gradient check)
            # trains nothing: an underflow there harms nobody
            backwards = [b for b in step.of(BACKWARD) if id(b) in reaching and gradients_applied(ctx, fn, b)]
            groups: dict[int, list] = {}
            for backward in backwards:
                region = reaching[id(backward)][0]
                anchor = protocol_anchor(fn, backward, _statement_of(ctx, region.with_node, fn))
                groups.setdefault(id(anchor), [anchor, []])[1].append(backward)
            for anchor, group in groups.values():
                region = reaching[id(group[0])][0]
                fix = self._fix(ctx, fn, group, anchor, region)
                for backward in group:
                    message = (
                        "backward pass under float16 autocast without a GradScaler: small gradients underflow to "
                        "zero in float16; use `torch.amp.GradScaler` (scale, step, update) or bfloat16"
                    )
                    dtype = ctx.segment(region.dtype) if region.dtype is not None else "float16 (the CUDA default)"
                    steps = [s for s in step.of(OPT_STEP, calls=True) if fn.before(backward, s)][:1]
                    evidence = [
                        at(region.entry, f"autocast region entered here, dtype {dtype}"),
                        at(backward, "backward of its loss, unscaled"),
                        *(at(s, "the optimizer steps these gradients") for s in steps),
                    ]
                    yield ctx.diagnostic(self, backward.call, message, fix, evidence)

    def _fix(self, ctx: ModuleContext, fn, group, anchor, region: AutocastRegion) -> Optional[Fix]:
        device, dtype = region.device, region.dtype
        if region.call is None:
            device, dtype, _ = self._from_assignment(ctx, region)
        quote = ctx.quote
        if isinstance(device, str):
            device_text = f"{quote}{device}{quote}"
        elif isinstance(device, ast.AST):
            device_text = ctx.segment(device)
        else:
            device_text = f"{quote}cuda{quote}"
        enabled = None
        if dtype is not None and ctx.semantic.qualified_name(dtype) not in ("torch.float16", "torch.half"):
            enabled = f"({ctx.segment(dtype)} == torch.float16)"
        elif region.call is not None:
            # autocast(enabled=use_amp): the scaler is on exactly when autocast is
            flag = next((k.value for k in region.call.keywords if k.arg == "enabled"), None)
            if flag is not None and not isinstance(flag, ast.Constant):
                enabled = ctx.segment(flag)
        planned = add_scaler_protocol(ctx, fn, group, anchor, device_text, enabled)
        if planned is None:
            return None
        edits, name = planned
        return Fix(
            f"Add a GradScaler (`{name}`): scale the loss, step and update through it",
            tuple(edits),
            Applicability.UNSAFE,
        )

    def _may_be_float16(self, ctx: ModuleContext, region: AutocastRegion) -> bool:
        device, dtype = region.device, region.dtype
        if region.call is None:
            device, dtype, known = self._from_assignment(ctx, region)
            if not known:
                return False
        if dtype is None:
            return device != "cpu"  # CUDA's default autocast dtype is float16 (None: unknown device)
        if ctx.semantic.qualified_name(dtype) == "torch.bfloat16":
            return False
        return self._dtype_may_be_float16(ctx, dtype)

    def _from_assignment(self, ctx: ModuleContext, region: AutocastRegion):
        """Device and dtype of `ctx = torch.autocast(...)` / `partial(torch.autocast, ...)` regions."""
        target = region.item.context_expr
        target = target.func if isinstance(target, ast.Call) else target
        name = dotted_name(target)
        for node in ctx.semantic.nodes(ast.Assign):
            if any(dotted_name(t) == name for t in node.targets):
                for call in (n for n in ast.walk(node.value) if isinstance(n, ast.Call)):
                    args = list(call.args)
                    if args and ctx.semantic.qualified_name(call.func) == "functools.partial":
                        call_func, args = args[0], args[1:]
                    else:
                        call_func = call.func
                    if ctx.semantic.qualified_name(call_func) in AUTOCASTS:
                        keywords = {k.arg: k.value for k in call.keywords}
                        device = keywords.get("device_type", args[0] if args else None)
                        device_value = device.value if isinstance(device, ast.Constant) else device
                        return device_value, keywords.get("dtype", args[1] if len(args) > 1 else None), True
        return None, None, False

    def _dtype_may_be_float16(self, ctx: ModuleContext, expr: ast.AST) -> bool:
        """Whether the dtype expression may be float16: as written, or followed through simple
        assignments; for a value computed elsewhere (a parameter, a config field), whether the
        module's code (not its comments) names float16 as a choice."""
        name = dotted_name(expr)
        if name is None:
            return bool(_FP16.search(ctx.segment(expr)))
        values = [n.value for n in ctx.semantic.nodes(ast.Assign) if any(dotted_name(t) == name for t in n.targets)]
        if values and all(dotted_name(v) is None for v in values):
            return bool(_FP16.search(" ".join(ctx.segment(v) for v in values)))
        if _FP16.search(ctx.segment(expr)):
            return True
        named = [word for word in ("float16", "half", "fp16") if word in ctx.text]
        if not named:
            return False  # the vocabulary holds only the text's words (and a walk of the tree costs)
        words = vocabulary(ctx.semantic)
        return words.mentions(*named) or bool({"torch.float16", "torch.half"} & words.modules)


def gradients_applied(ctx: ModuleContext, fn, backward) -> bool:
    """Whether an optimizer steps the gradients of ``backward``: a step after it in its function
    (its own or a call's), or, for a function that never steps (a per-batch helper), a step in a
    function of this module or the project that calls it, unless the function wipes them
    (``zero_grad``) on every path before it returns."""
    steps = fn.of(OPT_STEP, SCALER_STEP, calls=True)
    if steps:
        return any(fn.reaches(backward, s) is not False for s in steps)
    if fn.gradients_wiped(backward):
        return False
    model = ctx.training
    for call, _ in module_callers(ctx.semantic, fn.node) if not isinstance(fn.node, ast.Module) else ():
        caller = model.step_function(enclosing_function(ctx.semantic, call) or ctx.semantic.tree)
        if caller is not None and caller.of(OPT_STEP, SCALER_STEP, calls=True):
            return True
    project = getattr(ctx, "project", None)
    if project is not None and isinstance(fn.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for module, call in project.callers(ctx, fn.node):
            caller = module.training.step_function(enclosing_function(module.semantic, call) or module.semantic.tree)
            if caller is not None and caller.of(OPT_STEP, SCALER_STEP, calls=True):
                return True
    return False


def _last_regions(fn, backward, reaching: list[AutocastRegion]) -> list[AutocastRegion]:
    """The regions of ``reaching`` that no other one follows on the way to ``backward``: the
    precision the loss was computed in. All of them when each follows another (a loop)."""
    last = [
        r for r in reaching
        if r.entry is not None and not any(
            o is not r and o.entry is not None and fn.before(r.entry, o.entry) and fn.before(o.entry, backward)
            and not fn.before(o.entry, r.entry)
            for o in reaching
        )
    ]
    return last or reaching


def _statement_of(ctx: ModuleContext, node: ast.stmt, fn) -> ast.stmt:
    """The statement of fn's own body that holds node (where a scaler can be created)."""
    body = fn.node.body
    while node not in body:
        parent = ctx.semantic.parent(node)
        if parent is None or parent is fn.node:
            return node
        node = parent
    return node
