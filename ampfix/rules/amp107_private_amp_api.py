"""AMP107: private AMP API (``torch.cuda.amp.autocast_mode._cast``, a GradScaler's ``_scale``).

A data table, as TorchFix keeps one: each private name says what to use instead and, where a
public (or at least supported) equivalent computes the same thing, how to rewrite it. Facts read
from torch 2.13's modules (see rules/AMP107.md): ``torch.cuda.amp.grad_scaler`` keeps ``OptState``
only "for BC reasons" (it is ``torch.amp.grad_scaler.OptState``, which that module's ``__all__``
exports); ``torch.cuda.amp.autocast_mode._cast(value, dtype)`` warns and calls
``torch.amp.autocast_mode._cast(value, "cuda", dtype)``; ``_MultiDeviceReplicator`` and
``_refresh_per_optimizer_state`` are gone from ``torch.cuda.amp.grad_scaler`` since GradScaler
moved to ``torch.amp`` (torch 2.3); a GradScaler's ``is_enabled()``, ``get_growth_factor()``,
``get_backoff_factor()``, ``get_growth_interval()`` return its ``_enabled``, ``_growth_factor``,
``_backoff_factor``, ``_growth_interval``, and the ``set_`` methods assign them.

``torch.cuda.amp.common.amp_definitely_not_available`` and ``torch.amp.grad_scaler.OptState`` are
in their modules' ``__all__`` (public) and are not reported.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterator, Optional

from ampfix.context import FALLBACK, GUARDED, ModuleContext, Reference
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import owns_lines
from ampfix.prefilter import FileBytes
from ampfix.rules._torch_version import release_text
from ampfix.rules.base import FIX_SAFE, Rule
from ampfix.semantic import dotted_name, dotted_parts
from ampfix.training.model import GRAD_SCALERS


@dataclass(frozen=True)
class PrivateName:
    """A private module-level AMP name and what to use instead."""

    advice: str
    replacement: Optional[str] = None  # the same object, relative to torch ("amp.grad_scaler.OptState")
    min_torch: tuple[int, int] = (2, 3)
    cast_call: bool = False  # `_cast(value, dtype)` -> `torch.amp.autocast_mode._cast(value, "cuda", dtype)`


_GONE = "is gone from `torch.cuda.amp.grad_scaler` since torch 2.3 (an AttributeError); it is the private `torch.amp.grad_scaler.{}`, with no public equivalent"
_CAST_ADVICE = (
    "to cast a custom autograd function's inputs as autocast does, decorate its forward with "
    "`torch.amp.custom_fwd(device_type=..., cast_inputs=dtype)`"
)

PRIVATE_NAMES: dict[str, PrivateName] = {
    "torch.cuda.amp.grad_scaler.OptState": PrivateName(
        "kept in `torch.cuda.amp.grad_scaler` only for backward compatibility; use `torch.amp.grad_scaler.OptState`",
        replacement="amp.grad_scaler.OptState",
    ),
    "torch.cuda.amp.autocast_mode._cast": PrivateName(
        "is deprecated and private; `torch.amp.autocast_mode._cast(value, \"cuda\", dtype)` is what it calls "
        f"(still private: {_CAST_ADVICE})",
        min_torch=(2, 4),
        cast_call=True,
    ),
    "torch.amp.autocast_mode._cast": PrivateName(f"is private; {_CAST_ADVICE}"),
    "torch.cuda.amp.grad_scaler._MultiDeviceReplicator": PrivateName(_GONE.format("_MultiDeviceReplicator")),
    "torch.cuda.amp.grad_scaler._refresh_per_optimizer_state": PrivateName(_GONE.format("_refresh_per_optimizer_state")),
    "torch.amp.grad_scaler._MultiDeviceReplicator": PrivateName("is private, with no public equivalent"),
    "torch.amp.grad_scaler._refresh_per_optimizer_state": PrivateName("is private, with no public equivalent"),
    **{
        f"torch.amp{module}.{name}": PrivateName("is private (for `torch.compile` and export); use `with torch.autocast(...)`")
        for module in ("", ".autocast_mode")
        for name in ("_enter_autocast", "_exit_autocast")
    },
}


@dataclass(frozen=True)
class PrivateAttribute:
    """A private attribute of a GradScaler and its public form."""

    advice: str
    getter: Optional[str] = None  # `scaler._x` read -> `scaler.<getter>()`
    setter: Optional[str] = None  # `scaler._x = v` -> `scaler.<setter>(v)`


_SKIPPED_STEP = "to know whether `step()` was skipped, compare `get_scale()` before and after `update()`"

SCALER_ATTRIBUTES: dict[str, PrivateAttribute] = {
    "_enabled": PrivateAttribute("use `is_enabled()`", getter="is_enabled"),
    "_growth_factor": PrivateAttribute("use `get_growth_factor()` / `set_growth_factor()`", "get_growth_factor", "set_growth_factor"),
    "_backoff_factor": PrivateAttribute("use `get_backoff_factor()` / `set_backoff_factor()`", "get_backoff_factor", "set_backoff_factor"),
    "_growth_interval": PrivateAttribute("use `get_growth_interval()` / `set_growth_interval()`", "get_growth_interval", "set_growth_interval"),
    "_scale": PrivateAttribute(
        "`get_scale()` returns it as a Python float (a device sync; 1.0 when the scaler is disabled, the "
        "initial scale before the first `scale()`), and `update(new_scale)` sets it"
    ),
    "_init_scale": PrivateAttribute("pass `init_scale=` to the constructor; `get_scale()` returns it until the first `scale()`"),
    "_growth_tracker": PrivateAttribute("`state_dict()` holds it, to save and restore"),
    "_per_optimizer_states": PrivateAttribute(f"is per-step bookkeeping; {_SKIPPED_STEP}"),
    "_found_inf_per_device": PrivateAttribute(f"is private; {_SKIPPED_STEP}"),
    "_check_inf_per_device": PrivateAttribute(f"is private; {_SKIPPED_STEP}"),
    "_unscale_grads_": PrivateAttribute(
        "use `unscale_(optimizer)`: it records the unscale, so that `step()` does not unscale again "
        "(it refuses float16 gradients, which need float32 master weights)"
    ),
    "_get_scale_async": PrivateAttribute("is private; `get_scale()` is the public form (it synchronises)"),
    "_lazy_init_scale_growth_tracker": PrivateAttribute("is private; the first `scale()` creates the scale"),
}

_NAME_TRIGGERS = (b"OptState", b"_cast", b"_MultiDeviceReplicator", b"_refresh_per_optimizer_state",
                  b"_enter_autocast", b"_exit_autocast")
_ATTRIBUTE_TRIGGERS = (b"_enabled", b"_growth_", b"_backoff_factor", b"_scale", b"_per_optimizer_states",
                       b"_found_inf_per_device", b"_check_inf_per_device", b"_unscale_grads_")


class PrivateAmpApi(Rule):
    code = "AMP107"
    name = "private-amp-api"
    summary = "Private AMP API: a private name of `torch.amp`/`torch.cuda.amp`, or a GradScaler's private attribute"
    triggers = _NAME_TRIGGERS + _ATTRIBUTE_TRIGGERS
    fix_safety = FIX_SAFE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        if file.has(*_NAME_TRIGGERS):
            return True
        # an attribute counts on what the model takes for a GradScaler: named `...scaler`, built
        # from a GradScaler class or receiving `unscale_` (all spell "cale")
        return file.has(*_ATTRIBUTE_TRIGGERS) and file.has(b"cale", b"CALE")

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        found = list(self._names(ctx)) + list(self._attributes(ctx))
        yield from sorted(found, key=lambda d: d.start)

    # -- module-level private names -------------------------------------------------------------

    def _names(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        for ref in _references(ctx):
            entry = PRIVATE_NAMES[ref.qualified]
            compat = ctx.compat_context(ref.node)
            if compat == GUARDED:
                continue
            message = f"`{ref.qualified}` {entry.advice}"
            fix, why_not = None, None
            if entry.replacement or entry.cast_call:
                fix, why_not = _name_fix(ctx, ref, entry, compat)
            diag = ctx.diagnostic(self, ref.node, message, fix)
            if why_not:
                diag.no_fix_reason = why_not
            yield diag

    # -- a GradScaler's private attributes ------------------------------------------------------

    def _attributes(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        constructed = None
        for node in ctx.semantic.nodes(ast.Attribute):
            entry = SCALER_ATTRIBUTES.get(node.attr)
            if entry is None:
                continue
            receiver = dotted_name(node.value)
            if receiver is None or receiver.split(".", 1)[0] in ("self", "cls") and "." not in receiver:
                continue  # a GradScaler subclass's own state
            if not ctx.training.is_scaler(receiver, node.value):
                continue
            if constructed is None:
                constructed = _scaler_names(ctx)
            message = f"`{node.attr}` of a GradScaler is private: {entry.advice}"
            fix, why_not = _attribute_fix(ctx, node, entry, receiver, constructed)
            diag = ctx.diagnostic(self, node, message, fix)
            if why_not:
                diag.no_fix_reason = why_not
            yield diag


_LASTS = frozenset(name.rsplit(".", 1)[-1] for name in PRIVATE_NAMES)


def _references(ctx: ModuleContext) -> list[Reference]:
    """Every read of a private name, also as the start of a longer chain (``OptState.READY``)."""
    refs = []
    for node in ctx.semantic.nodes(ast.Name, ast.Attribute):
        last = node.attr if isinstance(node, ast.Attribute) else node.id
        if last in _LASTS and isinstance(node.ctx, ast.Load):
            qualified = ctx.semantic.qualified_name(node)
            if qualified in PRIVATE_NAMES:
                refs.append(Reference(node, qualified, ctx.semantic.scope_of(node)))
    return refs


def _name_fix(ctx: ModuleContext, ref, entry: PrivateName, compat) -> tuple[Optional[Fix], Optional[str]]:
    if compat == FALLBACK:
        return None, "in a compatibility fallback; not fixed"
    if tuple(ctx.settings.target_torch) < entry.min_torch:
        return None, f"the replacement needs torch >= {release_text(entry.min_torch)}"
    torch = ctx.torch_module(ref.node)
    if torch is None:
        return None, "the name `torch` is bound to something else here"
    torch_name, import_edits = torch
    start, end = ctx.locator.node_range(ref.node)
    parts = dotted_parts(ref.node)
    orphans = frozenset([parts[0]]) if parts and parts[0] != torch_name else frozenset()
    if entry.replacement:
        new = f"{torch_name}.{entry.replacement}"
        return Fix(f"Replace with `torch.{entry.replacement}`", (Edit(start, end, new), *import_edits),
                   Applicability.SAFE, orphaned_imports=orphans), None
    call = ctx.semantic.parent(ref.node)
    if not (isinstance(call, ast.Call) and call.func is ref.node and len(call.args) == 2 and not call.keywords
            and not any(isinstance(a, ast.Starred) for a in call.args)):
        return None, "not a call `_cast(value, dtype)`"
    quote = ctx.quote
    dtype_start = ctx.locator.node_range(call.args[1])[0]
    edits = (Edit(start, end, f"{torch_name}.amp.autocast_mode._cast"),
             Edit.insert(dtype_start, f"{quote}cuda{quote}, "), *import_edits)
    return Fix('Replace with `torch.amp.autocast_mode._cast(value, "cuda", dtype)`', edits,
               Applicability.SAFE, orphaned_imports=orphans), None


def _scaler_names(ctx: ModuleContext) -> set[str]:
    """Names and attributes every assignment of which, in this module, builds a torch GradScaler."""
    built: dict[str, bool] = {}
    for stmt in ctx.semantic.nodes(ast.Assign, ast.AnnAssign, ast.AugAssign):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        value = stmt.value
        is_scaler = (
            isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Call)
            and ctx.semantic.qualified_name(value.func) in GRAD_SCALERS
        )
        for target in targets:
            for sub in ast.walk(target):
                name = dotted_name(sub) if isinstance(sub, (ast.Name, ast.Attribute)) else None
                if name and isinstance(sub.ctx, ast.Store):
                    built[name] = built.get(name, True) and is_scaler and sub is target
    return {name for name, only_scalers in built.items() if only_scalers}


def _attribute_fix(ctx: ModuleContext, node: ast.Attribute, entry: PrivateAttribute, receiver: str,
                   constructed: set[str]) -> tuple[Optional[Fix], Optional[str]]:
    if not (entry.getter or entry.setter):
        return None, None  # no public equivalent: report only
    if receiver not in constructed:
        return None, "not fixed: the receiver is not only ever assigned a torch GradScaler in this module"
    end = ctx.locator.node_range(node)[1]
    name_start = end - len(node.attr)
    if isinstance(node.ctx, ast.Load):
        parent = ctx.semantic.parent(node)
        if isinstance(parent, ast.Call) and parent.func is node or entry.getter is None:
            return None, None
        return Fix(f"Replace with `{entry.getter}()`", (Edit(name_start, end, f"{entry.getter}()"),),
                   Applicability.SAFE), None
    stmt = ctx.semantic.parent(node)
    if (
        entry.setter and isinstance(node.ctx, ast.Store) and isinstance(stmt, ast.Assign)
        and stmt.targets == [node] and not isinstance(stmt.value, (ast.Tuple, ast.Yield, ast.YieldFrom))
        and owns_lines(ctx, stmt)
    ):
        start, stmt_end = ctx.locator.node_range(stmt)
        value = ctx.segment(stmt.value)
        new = f"{ctx.text[start:name_start]}{entry.setter}({value})"
        return Fix(f"Replace with `{entry.setter}(...)`", (Edit(start, stmt_end, new),), Applicability.SAFE), None
    return None, "not fixed: not a plain read or a plain assignment"
