"""Building blocks for converting an fp32 training step to AMP (AMP501, AMP502, AMP105):
which device the code trains on, which statements are the forward pass, and wrapping them in
``torch.autocast``.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from typing import Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Edit
from ampfix.edits import parent_body, reblocked
from ampfix.program.values import enclosing_function
from ampfix.semantic import dotted_name
from ampfix.training.model import Event, StepFunction

_DATA_MOVES = frozenset({"to", "cuda", "cpu", "float", "half", "long", "contiguous", "non_blocking"})


@dataclass(frozen=True)
class Device:
    """How to name the training device in the rewrite."""

    autocast: str  # the device_type argument: '"cuda"', 'device', 'device.type', ...
    literal: Optional[str]  # "cuda" / "cpu" when known statically

    @property
    def scaler(self) -> str:
        return self.autocast

    def cuda_only(self, quote: str) -> Optional[str]:
        """For a device known only at run time: the test that enables float16 AMP on CUDA alone
        (float16 autocast on a CPU is slower than fp32, and some CPU kernels have none)."""
        return None if self.literal is not None else f"{self.autocast} == {quote}cuda{quote}"


def infer_device(ctx: ModuleContext, fn: StepFunction) -> Device:
    """From the step's own code, never a blind "cuda": the device passed to ``.to(...)``,
    ``"cuda"`` for ``.cuda()`` code, else the configured default device. Only the step's function
    and the module's top level are read (a helper's ``x.to(logits.device)`` names a local of the
    helper), only names bound where the step runs are used, a dtype (``.to(torch.long)``,
    ``.to(x.dtype)``) is never a device, and a move to the CPU (for logging, numpy) counts only
    where nothing moves anywhere else."""
    quote = ctx.quote
    scopes = [fn.node] if isinstance(fn.node, ast.Module) else [fn.node, ctx.tree]
    cpu = named = None
    for scope in scopes:
        for call in _calls_in(ctx, scope):
            named = named or _device_argument(ctx, call, fn)
            func = call.func
            if not isinstance(func, ast.Attribute):
                continue
            if func.attr == "cuda" and not call.args:
                return Device(f"{quote}cuda{quote}", "cuda")
            if func.attr == "to":
                target = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "device"), None)
                device = _device_expression(ctx, target) if _visible_at(ctx, target, fn.node) else None
                if device is not None and device.literal == "cpu":
                    cpu = cpu or device
                elif device is not None:
                    return device
    if cpu is not None:
        return cpu
    if named is not None:
        return named  # no move in the step's code: the device its model or config is built for
    default = ctx.settings.default_device
    return Device(f"{quote}{default}{quote}", default)


def _device_argument(ctx: ModuleContext, call: ast.Call, fn: StepFunction) -> Optional[Device]:
    """The device a call is handed as ``device=`` (a policy's config, a model built on it:
    lerobot's ``RewardClassifierConfig(device=device)`` with ``device = "mps"``), when known and
    not the CPU."""
    value = next((k.value for k in call.keywords if k.arg == "device"), None)
    device = _device_expression(ctx, value) if _visible_at(ctx, value, fn.node) else None
    return device if device is not None and device.literal != "cpu" else None


def _calls_in(ctx: ModuleContext, scope: ast.AST):
    """The calls of a function (nested ones included), or of the module's top level alone."""
    if isinstance(scope, ast.Module):
        return [n for n in ctx.semantic.nodes(ast.Call) if enclosing_function(ctx.semantic, n) is None]
    return [n for n in ctx.semantic.nodes(ast.Call) if scope.lineno <= n.lineno <= scope.end_lineno]


def _visible_at(ctx: ModuleContext, target: Optional[ast.AST], function: ast.AST) -> bool:
    """Whether the names ``target`` reads are bound in ``function``'s scope (or globally)."""
    if target is None:
        return False
    scope = ctx.semantic.scopes.get(function, ctx.semantic.module_scope)
    names = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return all(ctx.semantic.is_bound(name, scope) or name in _BUILTINS for name in names)


_BUILTINS = frozenset(dir(builtins))
_TORCH_DTYPES = frozenset(
    f"torch.{name}" for name in (
        "float16", "half", "bfloat16", "float32", "float", "float64", "double", "complex64", "complex128",
        "cfloat", "cdouble", "uint8", "int8", "int16", "short", "int32", "int", "int64", "long", "bool",
        "float8_e4m3fn", "float8_e5m2",
    )
)


def _device_expression(ctx: ModuleContext, target: Optional[ast.AST]) -> Optional[Device]:
    quote = ctx.quote
    if isinstance(target, ast.Constant) and isinstance(target.value, str):
        kind = target.value.split(":", 1)[0]
        return Device(f"{quote}{kind}{quote}", kind)
    name = dotted_name(target) if target is not None else None
    if name is None:
        return None
    qualified = ctx.semantic.qualified_name(target) or ""
    if qualified in _TORCH_DTYPES or name.rsplit(".", 1)[-1] == "dtype":
        return None  # .to(torch.long), .to(x.dtype): a dtype
    values = [
        n.value for n in ctx.semantic.nodes(ast.Assign)
        if any(dotted_name(t) == name for t in n.targets)
    ]
    if values and all(_is_dtype(ctx, v) for v in values):
        return None  # `input_dtype = x.dtype` / `= torch.bfloat16`: a dtype by its value
    if not values and "dtype" in name.rsplit(".", 1)[-1].lower():
        return None  # a parameter whose value is unknown: its name is all there is (a known problem)
    if values and all(_is_torch_device(ctx, v) for v in values):
        if any(_may_be_no_device(ctx, v) for v in values):
            # `torch.accelerator.current_accelerator()` is None on a machine without one, where
            # `.to(None)` keeps the tensors on the CPU: so does the rewrite, instead of raising
            return Device(f"({name}.type if {name} is not None else {quote}cpu{quote})", None)
        return Device(f"{name}.type", None)
    strings = [s for v in values for s in _string_literals(v)]
    if values and strings and all(_only_strings(v) for v in values):
        kinds = {s.split(":", 1)[0] for s in strings}
        if all(":" not in s for s in strings):
            return Device(name, kinds.pop() if len(kinds) == 1 else None)
    # a parameter, an attribute or an index: torch.device() accepts a str, a device or an int
    torch_name = ctx.semantic.module_alias("torch", ctx.semantic.module_scope) or "torch"
    return Device(f"{torch_name}.device({name}).type", None)


def _is_dtype(ctx: ModuleContext, value: ast.AST) -> bool:
    name = dotted_name(value)
    return name is not None and (name.rsplit(".", 1)[-1] == "dtype" or ctx.semantic.qualified_name(value) in _TORCH_DTYPES)


def _is_torch_device(ctx: ModuleContext, value: ast.AST) -> bool:
    if isinstance(value, ast.IfExp):  # `current_accelerator() if args.accel else torch.device("cpu")`
        return _is_torch_device(ctx, value.body) and _is_torch_device(ctx, value.orelse)
    if isinstance(value, ast.Call):
        qualified = ctx.semantic.qualified_name(value.func) or ""
        return qualified in ("torch.device", "torch.accelerator.current_accelerator")
    return False


def _may_be_no_device(ctx: ModuleContext, value: ast.AST) -> bool:
    if isinstance(value, ast.IfExp):
        return _may_be_no_device(ctx, value.body) or _may_be_no_device(ctx, value.orelse)
    return isinstance(value, ast.Call) and ctx.semantic.qualified_name(value.func) == "torch.accelerator.current_accelerator"


def _string_literals(value: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(value) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _only_strings(value: ast.AST) -> bool:
    """A string literal, or a conditional choosing between string literals."""
    if isinstance(value, ast.Constant):
        return isinstance(value.value, str)
    if isinstance(value, ast.IfExp):
        return _only_strings(value.body) and _only_strings(value.orelse)
    return False


def amp_dtype(ctx: ModuleContext, device: Device) -> str:
    """float16 on CUDA (and unknown devices), bfloat16 on CPU, unless configured."""
    if ctx.settings.amp_dtype:
        return ctx.settings.amp_dtype
    return "bfloat16" if device.literal == "cpu" else "float16"


def indent_unit(ctx: ModuleContext) -> str:
    """The file's indentation step, from its first block."""
    for node in ctx.semantic.nodes(ast.FunctionDef, ast.For, ast.If, ast.With, ast.While, ast.ClassDef):
        body = getattr(node, "body", None)
        if body and body[0].lineno != node.lineno:
            outer = ctx.locator.indentation(node.lineno)
            inner = ctx.locator.indentation(body[0].lineno)
            if inner.startswith(outer) and len(inner) > len(outer):
                return inner[len(outer):]
    return "    "


def forward_statements(ctx: ModuleContext, backward: Event) -> Optional[list[ast.stmt]]:
    """The contiguous statements before the backward pass that compute its loss (the forward pass
    and the loss), in the backward's own block; None when there is nothing separate to wrap."""
    body = parent_body(ctx, backward.stmt)
    if body is None or backward.arg is None:
        return None
    index = body.index(backward.stmt)
    needed = {n.id for n in ast.walk(backward.arg) if isinstance(n, ast.Name)}
    if not needed:
        return None
    chosen: list[int] = []
    for position in range(index - 1, -1, -1):
        stmt = body[position]
        assigned = _stored_names(stmt)
        if assigned & needed:
            chosen.append(position)
            needed |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    chosen = sorted(p for p in chosen if not _is_data_move(body[p])) or sorted(chosen)
    if not chosen:
        return None
    region = body[chosen[0] : chosen[-1] + 1]
    if any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Return)) for s in region):
        return None
    if any(_has_backward_or_step(s) for s in region):
        return None
    return region


def _stored_names(stmt: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _is_data_move(stmt: ast.stmt) -> bool:
    """`x, y = x.to(device), y.to(device)`: moving data is not the forward pass."""
    if not isinstance(stmt, ast.Assign):
        return False
    calls = [n for n in ast.walk(stmt.value) if isinstance(n, ast.Call)]
    return bool(calls) and all(isinstance(c.func, ast.Attribute) and c.func.attr in _DATA_MOVES for c in calls)


def _has_backward_or_step(stmt: ast.stmt) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("backward", "step", "zero_grad")
        for n in ast.walk(stmt)
    )


def wrap_in_autocast(ctx: ModuleContext, statements: list[ast.stmt], header: str) -> Optional[Edit]:
    """Indent ``statements`` (contiguous siblings) under ``with <header>:`` (a LibCST rewrite)."""
    return reblocked(ctx, statements, ctx.locator.indentation(statements[0].lineno), header, indent_unit(ctx))


@dataclass
class Conversion:
    edits: list
    device: Device
    dtype: str  # "float16" | "bfloat16"
    enabled: Optional[str] = None  # the autocast's ``enabled=`` test, when it has one


def autocast_conversion(
    ctx: ModuleContext, fn: StepFunction, backward: Event, float16_on_cuda_only: bool = False,
) -> Optional[Conversion]:
    """Wrap the forward pass of ``backward``'s step in ``torch.autocast`` (device and dtype
    inferred as the AMP501 document says). The caller adds the scaler protocol for float16.
    With ``float16_on_cuda_only``, float16 autocast on a device known only at run time is
    enabled on CUDA alone (``enabled=device.type == "cuda"``)."""
    forward = forward_statements(ctx, backward)
    if forward is None:
        return None
    device = infer_device(ctx, fn)
    dtype = amp_dtype(ctx, device)
    torch = ctx.torch_module(backward.call)
    if torch is None:
        return None
    torch_name, import_edits = torch
    header = f"{torch_name}.autocast(device_type={device.autocast}, dtype={torch_name}.{dtype})"
    gate = device.cuda_only(ctx.quote) if float16_on_cuda_only and dtype == "float16" else None
    if gate is not None:
        header = header[:-1] + f", enabled={gate})"
    wrap = wrap_in_autocast(ctx, forward, header)
    if wrap is None:
        return None
    return Conversion([wrap, *import_edits], device, dtype, gate)


def module_manages_precision(ctx: ModuleContext) -> bool:
    """The module already uses autocast, a GradScaler or apex: conversions leave it alone."""
    model = ctx.training
    if model.regions or model.uses_scaler():
        return True
    from ampfix.training.model import AUTOCASTS

    return bool(ctx.references(AUTOCASTS | _APEX)) or bool(model.autocast_names)


_APEX = frozenset({"apex.amp", "apex.amp.initialize", "apex.amp.scale_loss"})
