"""AMP105: NVIDIA apex `amp` -> native `torch.autocast` + `torch.amp.GradScaler`.

The rewrite (unsafe) covers the common O1/O2 shape as one fix for the whole module:

    model, optimizer = amp.initialize(model, optimizer, opt_level="O1")
        -> scaler = torch.amp.GradScaler("cuda")
    forward pass and loss
        -> wrapped in torch.autocast(device_type="cuda", dtype=torch.float16)
    with amp.scale_loss(loss, optimizer) as scaled_loss: scaled_loss.backward()
        -> scaler.scale(loss).backward()
    amp.master_params(optimizer)        -> model.parameters()
    amp.state_dict() / load_state_dict  -> scaler.state_dict() / load_state_dict

    amp.master_params(optimizer) in clipping
        -> model.parameters(), after scaler.unscale_(optimizer)
    optimizer.step() after the scaled backward
        -> scaler.step(optimizer); scaler.update()

O0, O3, extra
options such as `keep_batchnorm_fp32`, or shapes that do not map stay report-only, with the
reason in the message.
"""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import insert_after, insert_before, line_span, owns_lines
from ampfix.prefilter import FileBytes
from ampfix.rules._conversion import forward_statements, infer_device, wrap_in_autocast
from ampfix.rules.base import FIX_UNSAFE, STABLE, Rule
from ampfix.semantic import dotted_name
from ampfix.training.model import BACKWARD, OPT_STEP, Event, encloses

# What each apex call becomes in native AMP.
GUIDANCE = {
    "apex.amp.initialize": (
        "drop it; wrap the forward pass in `torch.autocast(\"cuda\")` and create "
        "`scaler = torch.amp.GradScaler(\"cuda\")` once"
    ),
    "apex.amp.scale_loss": "use `scaler.scale(loss).backward()`, then `scaler.step(optimizer)` and `scaler.update()`",
    "apex.amp.master_params": "clip `model.parameters()` after `scaler.unscale_(optimizer)`",
    "apex.amp.state_dict": "save `scaler.state_dict()` instead",
    "apex.amp.load_state_dict": "use `scaler.load_state_dict(...)` instead",
}
_MAPPABLE_LEVELS = ("O1", "O2")
_HARMLESS_OPTIONS = {"opt_level", "loss_scale", "verbosity"}


class ApexAmp(Rule):
    code = "AMP105"
    stability = STABLE
    name = "apex-amp"
    summary = "NVIDIA apex `amp` is unmaintained; use native `torch.amp`"
    triggers = (b"apex",)
    fix_safety = FIX_UNSAFE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return file.has(b"apex") and file.has(b"initialize", b"scale_loss", b"master_params", b"state_dict")

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        refs = ctx.references(GUIDANCE)
        if not refs:
            return
        fix, why_not = _migrate(ctx, refs)
        for ref in refs:
            api = ref.qualified.replace("apex.", "", 1)
            message = f"apex `{api}` is deprecated: {GUIDANCE[ref.qualified]}"
            if why_not and ref.qualified == "apex.amp.initialize":
                message += f" (not fixed: {why_not})"
            yield ctx.diagnostic(self, ref.node, message, fix)


def _migrate(ctx: ModuleContext, refs) -> tuple[Optional[Fix], Optional[str]]:
    by_api: dict[str, list] = {}
    for ref in refs:
        by_api.setdefault(ref.qualified.rsplit(".", 1)[-1], []).append(ref)
    inits = by_api.get("initialize", [])
    if len(inits) != 1:
        return None, "one `amp.initialize` call is needed to map" if inits else None
    init_call = ctx.semantic.parent(inits[0].node)
    init_stmt = ctx.semantic.parent(init_call)
    if not isinstance(init_call, ast.Call) or not isinstance(init_stmt, ast.Assign) or not owns_lines(ctx, init_stmt):
        return None, "`amp.initialize` is not a plain assignment"
    level = next((k.value for k in init_call.keywords if k.arg == "opt_level"), None)
    if not (isinstance(level, ast.Constant) and level.value in _MAPPABLE_LEVELS):
        shown = ctx.segment(level) if level is not None else "the default O1"
        return None, f"opt_level {shown} has no direct native equivalent"
    extra = {k.arg for k in init_call.keywords} - _HARMLESS_OPTIONS
    if extra:
        return None, f"options {', '.join(sorted(map(str, extra)))} need a person"
    model_name = _first_target(init_stmt)
    torch = ctx.torch_module(init_stmt)
    if model_name is None or torch is None:
        return None, "the model is not a plain name"
    torch_name, import_edits = torch
    scaler = "scaler"
    if ctx.semantic.is_bound(scaler, ctx.semantic.scope_of(init_stmt)):
        return None, "the name `scaler` is taken"
    init_scale = next((k.value for k in init_call.keywords if k.arg == "loss_scale"), None)
    scale_arg = ""
    if init_scale is not None and not (isinstance(init_scale, ast.Constant) and init_scale.value == "dynamic"):
        scale_arg = f", init_scale={ctx.segment(init_scale)}"
    device = infer_device(ctx, _function_of(ctx, init_stmt))
    indent = ctx.locator.indentation(init_stmt.lineno)
    start, end = line_span(ctx, init_stmt)
    newline = ctx.locator.newline()
    edits = [Edit(start, end, f"{indent}{scaler} = {torch_name}.amp.GradScaler({device.scaler}{scale_arg}){newline}")]
    edits += import_edits
    for ref in by_api.get("scale_loss", []):
        edit = _scale_loss_edits(ctx, ref, scaler, torch_name, device.autocast)
        if edit is None:
            return None, "`amp.scale_loss` is not the `with ... as scaled: scaled.backward()` shape"
        edits += edit
    optimizer_name = _second_target(init_stmt)
    for ref in by_api.get("master_params", []):
        call = ctx.semantic.parent(ref.node)
        if not isinstance(call, ast.Call):
            return None, "`amp.master_params` is not called"
        s, e = ctx.locator.node_range(call)
        edits.append(Edit(s, e, f"{model_name}.parameters()"))
        statement = _statement(ctx, call)
        unscale = insert_before(ctx, statement, f"{scaler}.unscale_({optimizer_name})") if optimizer_name else None
        if unscale is None:
            return None, "gradient clipping on `amp.master_params` is not a plain statement"
        edits.append(unscale)
    for step in _optimizer_steps_after_scale_loss(ctx, by_api.get("scale_loss", []), optimizer_name):
        s, e = ctx.locator.node_range(step.call)
        update = insert_after(ctx, step.stmt, f"{scaler}.update()")
        if update is None:
            return None, "`optimizer.step()` is not a plain statement"
        edits += [Edit(s, e, f"{scaler}.step({optimizer_name})"), update]
    for api in ("state_dict", "load_state_dict"):
        for ref in by_api.get(api, []):
            if ctx.semantic.scope_of(ref.node) is not ctx.semantic.scope_of(init_stmt):
                return None, f"`amp.{api}` is used where the scaler is not in scope"
            s, e = ctx.locator.node_range(ref.node)
            edits.append(Edit(s, e, f"{scaler}.{api}"))
    base = {dotted_name(r.node).split(".", 1)[0] for r in refs if dotted_name(r.node)}
    return Fix("Migrate apex amp to torch.autocast + torch.amp.GradScaler", tuple(edits), Applicability.UNSAFE,
               orphaned_imports=frozenset(base)), None


def _function_of(ctx: ModuleContext, node: ast.AST):
    for fn in ctx.training.functions:
        if fn.node is not ctx.tree and encloses(fn.node, node):
            return fn
    return ctx.training.functions[0]  # the module itself


def _second_target(stmt: ast.Assign) -> Optional[str]:
    target = stmt.targets[0]
    if isinstance(target, ast.Tuple) and len(target.elts) > 1:
        return dotted_name(target.elts[1])
    return None


def _statement(ctx: ModuleContext, node: ast.AST) -> ast.stmt:
    while not isinstance(node, ast.stmt):
        node = ctx.semantic.parent(node)
    return node


def _optimizer_steps_after_scale_loss(ctx: ModuleContext, scale_refs, optimizer: Optional[str]):
    """`optimizer.step()` calls that follow an `amp.scale_loss` block in the same function."""
    if optimizer is None:
        return []
    withs = [_statement(ctx, r.node) for r in scale_refs]
    steps = []
    for fn in ctx.training.functions:
        for step in fn.of(OPT_STEP):
            if step.receiver != optimizer or step.call.args or step.call.keywords:
                continue
            if any(fn.node.lineno <= w.lineno < step.call.lineno if not isinstance(fn.node, ast.Module)
                   else w.lineno < step.call.lineno for w in withs):
                steps.append(step)
    return steps


def _first_target(stmt: ast.Assign) -> Optional[str]:
    target = stmt.targets[0]
    if isinstance(target, ast.Tuple) and target.elts:
        target = target.elts[0]
    return dotted_name(target)


def _scale_loss_edits(ctx: ModuleContext, ref, scaler: str, torch_name: str, device: str) -> Optional[list[Edit]]:
    call = ctx.semantic.parent(ref.node)
    item = ctx.semantic.parent(call)
    with_stmt = ctx.semantic.parent(item)
    if not (isinstance(call, ast.Call) and isinstance(item, ast.withitem) and isinstance(with_stmt, ast.With)):
        return None
    if len(with_stmt.items) != 1 or len(with_stmt.body) != 1 or not call.args:
        return None
    alias = dotted_name(item.optional_vars) if item.optional_vars is not None else None
    inner = with_stmt.body[0]
    if not (isinstance(inner, ast.Expr) and isinstance(inner.value, ast.Call)):
        return None
    backward = inner.value
    if not (isinstance(backward.func, ast.Attribute) and backward.func.attr == "backward"
            and dotted_name(backward.func.value) == alias):
        return None
    if not owns_lines(ctx, with_stmt):
        return None
    loss = call.args[0]
    arguments = ctx.text[ctx.locator.node_range(backward.func)[1]:ctx.locator.node_range(backward)[1]]
    indent = ctx.locator.indentation(with_stmt.lineno)
    start, end = line_span(ctx, with_stmt)
    newline = ctx.locator.newline()
    edits = [Edit(start, end, f"{indent}{scaler}.scale({ctx.segment(loss)}).backward{arguments}{newline}")]
    # the forward pass that computes the loss goes under autocast, as apex O1 did implicitly
    pseudo = Event(BACKWARD, backward, with_stmt, (), arg=loss)
    forward = forward_statements(ctx, pseudo)
    if forward:
        header = f"{torch_name}.autocast(device_type={device}, dtype={torch_name}.float16)"
        wrap = wrap_in_autocast(ctx, forward, header)
        if wrap is None:
            return None
        edits.append(wrap)
    return edits
