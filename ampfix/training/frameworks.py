"""Facts about the libraries that own a step's precision: Hugging Face Accelerate, NVIDIA apex,
FSDP, and whether autocast may be entered anywhere around a step.

Each answer comes from values (ampfix.program.values: what created an object, what an argument
holds), not from names; where a value cannot be read the answer says so (``MAYBE``, None) and the
rules that ask decide whether that is enough to report.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ampfix.program.calls import module_callers
from ampfix.program.project import imported_project_files, python_files
from ampfix.program.values import assignments, enclosing_function
from ampfix.program.vocabulary import code_text
from ampfix.semantic import dotted_name

if TYPE_CHECKING:
    from ampfix.program.module import ModuleSource
    from ampfix.training.model import Event

ACCELERATORS = frozenset({"accelerate.Accelerator", "accelerate.accelerator.Accelerator"})
FP16, MAYBE = "fp16", "maybe"  # an Accelerator's loss scaling: certain, or chosen at run time


def _call_at(ctx: "ModuleSource", origin) -> Optional[ast.Call]:
    """The call of this module that created the ObjectId ``origin`` (its site is (path, line,
    column); a call on a call's result starts at the same place, so the callee decides)."""
    site = origin.site
    if origin.kind != "call" or len(site) < 3 or site[0] != ctx.training.values.path:
        return None
    index = getattr(ctx.semantic, "_calls_by_position", None)  # memoized on the semantic model
    if index is None:
        index = ctx.semantic._calls_by_position = {}
        for call in ctx.semantic.nodes(ast.Call):
            index.setdefault((call.lineno, call.col_offset), []).append(call)
    semantic = ctx.semantic
    return next(
        (c for c in index.get((site[1], site[2]), ()) if semantic.qualified_name(c.func) == origin.callee), None,
    )


def _keyword(call: ast.Call, name: str) -> Optional[ast.expr]:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _strings(ctx: "ModuleSource", expr: ast.expr, depth: int = 0) -> Optional[set]:
    """The string constants ``expr`` may be, when it can only be constants (a literal, ``a if c
    else b`` of them, a name every assignment of which gives one); None when unknown."""
    if isinstance(expr, ast.Constant):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        body, orelse = _strings(ctx, expr.body, depth), _strings(ctx, expr.orelse, depth)
        return None if body is None or orelse is None else body | orelse
    if isinstance(expr, ast.Name) and depth < 3:
        found: set = set()
        statements = assignments(ctx.semantic, expr)
        for stmt in statements:
            value = getattr(stmt, "value", None)
            if isinstance(stmt, ast.AugAssign) or value is None:
                return None
            strings = _strings(ctx, value, depth + 1)
            if strings is None:
                return None
            found |= strings
        return found or None
    return None


def accelerator_precision(ctx: "ModuleSource", create: ast.Call) -> Optional[str]:
    """Whether an ``Accelerator(...)`` scales losses: ``FP16`` for ``mixed_precision="fp16"``,
    ``MAYBE`` for a value chosen at run time that may be ``"fp16"`` (``args.mixed_precision``),
    None for ``"bf16"``/``"no"``/``"fp8"``, for ``**kwargs`` and for no argument (Accelerate's
    default is ``"no"`` unless ``accelerate config`` says otherwise: not in the code)."""
    value = _keyword(create, "mixed_precision")
    if value is None:
        return _old_fp16_switch(create)
    strings = _strings(ctx, value)
    if strings is None:
        return MAYBE
    if "fp16" not in strings:
        return None
    return FP16 if strings == {"fp16"} else MAYBE


def _old_fp16_switch(create: ast.Call) -> Optional[str]:
    """Accelerate's deprecated ``fp16=`` switch (``mixed_precision="fp16"`` when true)."""
    value = _keyword(create, "fp16")
    if value is None or (isinstance(value, ast.Constant) and not value.value):
        return None
    return FP16 if isinstance(value, ast.Constant) else MAYBE


def precision_setting(create: ast.Call) -> ast.expr:
    """The argument ``accelerator_precision`` read (``mixed_precision=`` or the old ``fp16=``)."""
    return _keyword(create, "mixed_precision") or _keyword(create, "fp16")


def accelerate_backward(event: "Event") -> bool:
    """``accelerator.backward(loss)`` (a wrapper's backward: the loss is its argument)."""
    call = event.origin.call
    return (
        event.kind == "backward" and not event.scaled and event.origin.receiver is not None
        and isinstance(call.func, ast.Attribute) and bool(call.args)
    )


def accelerators_of(ctx: "ModuleSource", event: "Event") -> Optional[list[ast.Call]]:
    """The ``Accelerator(...)`` constructions of this module whose ``backward`` ``event`` is, from
    the receiver's value. Where that value is unknown (a parameter of a function nobody in the
    module calls, a field set elsewhere) and the receiver is named like one: every Accelerator the
    module creates. A value some other call created is no Accelerator: None."""
    values = ctx.training.values
    obj = values.object_of(event.call.func.value) if event.via is None else event.obj
    origins = values.origins(obj)
    if any(o.kind == "call" and o.callee not in ACCELERATORS for o in origins):
        return None
    created = [_call_at(ctx, o) for o in origins if o.kind == "call"]
    if created and len(created) == len(origins) and all(c is not None for c in created):
        return created
    if "accelerator" not in (event.receiver or "").rsplit(".", 1)[-1].lower():
        return None
    every = [c for c in ctx.semantic.nodes(ast.Call) if ctx.semantic.qualified_name(c.func) in ACCELERATORS]
    return every or None


# -- apex ------------------------------------------------------------------------------------


@dataclass
class ScaleLossRegion:
    """``with amp.scale_loss(loss, optimizer) as scaled_loss:``."""

    with_node: ast.AST
    call: ast.Call
    target: Optional[str]  # the ``as`` name
    optimizer: Optional[ast.expr]


def scale_loss_regions(ctx: "ModuleSource") -> list[ScaleLossRegion]:
    found = []
    for stmt in ctx.semantic.nodes(ast.With, ast.AsyncWith):
        for item in stmt.items:
            call = item.context_expr
            if isinstance(call, ast.Call) and ctx.semantic.qualified_name(call.func) == "apex.amp.scale_loss":
                optimizer = call.args[1] if len(call.args) > 1 else _keyword(call, "optimizers")
                target = dotted_name(item.optional_vars) if item.optional_vars is not None else None
                found.append(ScaleLossRegion(stmt, call, target, optimizer))
    return found


def apex_initialized(ctx: "ModuleSource") -> Optional[tuple[Optional[ast.AST], str]]:
    """Where apex's ``amp.initialize(...)`` runs: (the reference, "here") in this module, else
    (None, path) for a Python file of this module's folder or package root that calls it (where a
    training script sets up what its step module runs); None when neither does."""
    refs = ctx.references({"apex.amp.initialize"})
    if refs:
        return refs[0].node, "here"
    if ctx.project is None:
        return None
    here = os.path.abspath(ctx.path)
    folder = os.path.dirname(here)
    root = folder
    while os.path.isfile(os.path.join(root, "__init__.py")):
        root = os.path.dirname(root)
    for candidate in python_files(folder, root, limit=_MAX_FILES):
        try:
            with open(candidate, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        if b"apex" in data and b"amp.initialize(" in data:
            return None, os.path.relpath(candidate, folder)
    return None


_MAX_FILES = 64  # files of a folder read for one question


# -- FSDP ------------------------------------------------------------------------------------

FSDP_WRAPS = frozenset({
    "torch.distributed.fsdp.FullyShardedDataParallel",
    "torch.distributed.fsdp.fully_sharded_data_parallel.FullyShardedDataParallel",
    "torch.distributed.fsdp.fully_shard",
    "torch.distributed._composable.fsdp.fully_shard",
    "torch.distributed._composable.fsdp.fully_shard.fully_shard",
    "torch.distributed.fsdp._fully_shard.fully_shard",
    "torch.distributed.fsdp._fully_shard._fully_shard.fully_shard",
})
_POLICIES = frozenset({
    "torch.distributed.fsdp.MixedPrecision",
    "torch.distributed.fsdp.fully_sharded_data_parallel.MixedPrecision",
    "torch.distributed.fsdp.api.MixedPrecision",
    "torch.distributed.fsdp.MixedPrecisionPolicy",
    "torch.distributed._composable.fsdp.MixedPrecisionPolicy",
    "torch.distributed.fsdp._fully_shard.MixedPrecisionPolicy",
})
FLOAT16 = frozenset({"torch.float16", "torch.half"})
PLAIN_SCALERS = frozenset({
    "torch.amp.GradScaler", "torch.GradScaler", "torch.amp.grad_scaler.GradScaler",
    "torch.cuda.amp.GradScaler", "torch.cuda.amp.grad_scaler.GradScaler",
})


# FSDP2 (`fully_shard`) keeps gradients as DTensors, and a plain GradScaler's inf check on them
# is reduced over the mesh by DTensor itself (`found_inf_reduce_handler`): only FSDP1 needs
# ShardedGradScaler
FSDP1_WRAPS = frozenset({
    "torch.distributed.fsdp.FullyShardedDataParallel",
    "torch.distributed.fsdp.fully_sharded_data_parallel.FullyShardedDataParallel",
})


def fsdp_wraps(ctx: "ModuleSource", kinds: frozenset = FSDP_WRAPS) -> list[ast.Call]:
    return [c for c in ctx.semantic.nodes(ast.Call) if ctx.semantic.qualified_name(c.func) in kinds]


def float16_policy(ctx: "ModuleSource", wrap: ast.Call) -> Optional[ast.Call]:
    """The ``MixedPrecision(param_dtype=torch.float16)`` (``MixedPrecisionPolicy`` for
    ``fully_shard``) an FSDP wrap is handed, followed through the module's assignments; None when
    it has none, another dtype, or one this module does not show."""
    value = _keyword(wrap, "mixed_precision") or _keyword(wrap, "mp_policy")
    candidates = [value] if value is not None else []
    if isinstance(value, ast.Name):
        candidates += [getattr(s, "value", None) for s in assignments(ctx.semantic, value)]
    for candidate in candidates:
        if isinstance(candidate, ast.Call) and ctx.semantic.qualified_name(candidate.func) in _POLICIES:
            dtype = _keyword(candidate, "param_dtype")
            if dtype is None and candidate.args:
                dtype = candidate.args[0]
            if dtype is not None and ctx.semantic.qualified_name(dtype) in FLOAT16:
                return candidate
    return None


def float16_autocast(ctx: "ModuleSource") -> Optional[ast.AST]:
    """An autocast region of the module that runs in float16: ``dtype=torch.float16``, or a CUDA
    autocast with no dtype (float16 is CUDA's default)."""
    for region in ctx.training.regions:
        if region.call is None:
            continue
        if region.dtype is not None and ctx.semantic.qualified_name(region.dtype) in FLOAT16:
            return region.call
        if region.dtype is None and region.device == "cuda":
            return region.call
    return None


def disabled(call: ast.Call) -> bool:
    """``GradScaler(enabled=False)``: a literal off switch."""
    enabled = _keyword(call, "enabled")
    return isinstance(enabled, ast.Constant) and enabled.value is False


# -- autocast around a step ------------------------------------------------------------------

# Text that lets a step run in low precision without an autocast of this module: autocast named
# anywhere (a decorator, a context manager variable, a helper), low-precision weights, or a
# library that owns precision (Accelerate, Lightning, DeepSpeed, apex). A silence condition: text
# over-approximates, so the rule asking stays silent wherever the code may autocast.
_PRECISION_TEXT = (
    "autocast", ".half(", "torch.half", "halftensor", "float16", "custom_fwd", "torch_dtype", "amp_dtype",
    "set_default_dtype", "set_default_tensor_type", "precision=", "load_in_", "accelerat", "lightning", "deepspeed",
    "apex",
)
# a dtype chosen elsewhere: `dtype=self.dtype`, `.to(args.dtype)` (not `dtype=torch.long`, nor a
# NumPy or builtin integer, boolean, 32/64-bit float or string type: `np.loadtxt(f, dtype=np.int32)`)
_DTYPE_FROM_ELSEWHERE = re.compile(
    r"dtype\s*=\s*(?!(?:torch|np|numpy)\.(?:long|u?int\w*|bool\w*|float32|float64|float\b|double|complex\w*|str\w*|object\w*)"
    r"|(?:int|bool|float|str|object|complex)\b)[\w.]"
    r"|\.(?:to|type)\(\s*[\w.]*dtype\b"
)


def _mentions_precision(text: str) -> bool:
    lowered = text.lower()
    return any(token in lowered for token in _PRECISION_TEXT) or bool(_DTYPE_FROM_ELSEWHERE.search(text))


def autocast_may_be_entered(ctx: "ModuleSource", function: ast.AST) -> bool:
    """Whether a step of ``function`` may run under autocast (or in low precision): this module,
    a project module it imports (the model's class, a helper) or a module that calls
    ``function`` names autocast or another way to low precision. False only when none does."""
    model = ctx.training
    if model.regions or model.autocast_names or _mentions_precision(code_text(ctx.semantic, ctx.text)):
        return True
    for path in imported_project_files(ctx) if ctx.project is not None else ():
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                if _mentions_precision(handle.read()):
                    return True
        except OSError:
            return True
    return _entered_elsewhere(ctx, function)


def _entered_elsewhere(ctx: "ModuleSource", function: ast.AST) -> bool:
    """Whether ``function`` may run from code this module does not show, which may enter
    autocast: follow its callers in the module up to the top level; a function on the way that
    nothing here calls must be called from other modules, all found and none naming precision
    (a method nobody here calls: unknown, True)."""
    semantic = ctx.semantic
    todo, seen = [function], set()
    while todo:
        current = todo.pop()
        if current is semantic.tree or id(current) in seen:
            continue
        seen.add(id(current))
        if len(seen) > 16:
            return True  # too far to tell
        callers = module_callers(semantic, current)
        if callers:
            todo += [enclosing_function(semantic, call) or semantic.tree for call, _ in callers]
            continue
        if enclosing_function(semantic, current) is not None or not isinstance(semantic.parent(current), ast.Module):
            return True  # a method or a nested function run from elsewhere
        elsewhere = ctx.project.callers(ctx, current) if ctx.project is not None else []
        if not elsewhere or any(_mentions_precision(code_text(module.semantic, module.text)) for module, _ in elsewhere):
            return True
    return False


