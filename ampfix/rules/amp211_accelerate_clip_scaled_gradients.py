"""AMP211: under Accelerate's fp16, `torch.nn.utils.clip_grad_norm_` clips scaled gradients."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.prefilter import FileBytes
from ampfix.rules._loop import at, call_name
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.semantic import dotted_name
from ampfix.training.frameworks import (
    FP16,
    accelerate_backward,
    accelerator_precision,
    accelerators_of,
    precision_setting,
)
from ampfix.training.model import BACKWARD, CLIP, OPT_STEP

# torch's clip -> Accelerate's, and the keywords Accelerate's accepts (torch's `foreach` and
# `error_if_nonfinite` are not among them: such a call is reported, not rewritten)
_REPLACEMENT = {
    "clip_grad_norm_": ("clip_grad_norm_", {"parameters", "max_norm", "norm_type"}, 3),
    "clip_grad_norm": ("clip_grad_norm_", {"parameters", "max_norm", "norm_type"}, 3),
    "clip_grad_value_": ("clip_grad_value_", {"parameters", "clip_value"}, 2),
}


class AccelerateClipScaledGradients(Rule):
    code = "AMP211"
    name = "accelerate-clip-scaled-gradients"
    summary = "`torch.nn.utils.clip_grad_norm_` after `accelerator.backward(loss)` under fp16 clips scaled gradients"
    triggers = (b"Accelerator",)
    fix_safety = FIX_UNSAFE
    changes_training = "clipping now sees unscaled gradients"

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        precision = file.has(b"mixed_precision", b"fp16")
        return precision and file.has(b"clip_grad", b"get_total_norm") and file.calls("backward")

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        if not any(fn.of(CLIP) for fn in model.functions):
            return  # a clip of another module: the prefilter did not read it (AMP201 does the same)
        for fn in model.functions:
            clips = [e for e in fn.of(CLIP, calls=True) if e.kind == CLIP and not e.conditional]
            if not clips:
                continue
            steps = [e for e in fn.of(OPT_STEP, calls=True) if e.kind == OPT_STEP]
            unscales = _unscale_gradients(ctx, fn)
            for backward in fn.of(BACKWARD, calls=True):
                if backward.kind != BACKWARD or backward.conditional or not accelerate_backward(backward):
                    continue
                creates = accelerators_of(ctx, backward)
                if not creates:
                    continue
                precisions = [accelerator_precision(ctx, c) for c in creates]
                if None in precisions:
                    continue  # some Accelerator it may be does not scale: unsure
                for clip in clips:
                    if clip.via is not None and backward.call is clip.call:
                        continue  # one helper does both: its own finding
                    if not fn.reaches(backward, clip, avoiding=unscales + steps):
                        continue
                    if not any(fn.before(clip, step) for step in steps):
                        continue  # not before an optimizer step: no update uses these gradients
                    yield self._diagnostic(ctx, backward, clip, creates[0], all(p == FP16 for p in precisions))

    def _diagnostic(self, ctx, backward, clip, create, certain: bool) -> Diagnostic:
        accelerator = backward.receiver
        argument = precision_setting(create)
        keyword = "fp16" if argument is _keyword_value(create, "fp16") else "mixed_precision"
        setting = ctx.segment(argument)
        fp16 = "true" if keyword == "fp16" else '"fp16"'
        when = "" if certain else f" when `{keyword}` ({setting}) is {fp16}"
        clip_name = call_name(ctx, clip.call)
        method = _REPLACEMENT.get(clip_name.rsplit(".", 1)[-1], ("clip_grad_norm_",))[0]
        message = (
            f"`{clip_name}` runs on gradients `{accelerator}.backward(loss)` scaled{when}: "
            f"the threshold is in effect max_norm × scale (65536 at the start); "
            f"use `{accelerator}.{method}(...)`, which unscales first"
        )
        evidence = [
            (create, f"{keyword}={setting}: Accelerate scales every loss by its GradScaler"),
            at(backward, "gradients scaled here"),
            at(clip, "clipped here, before any `unscale_gradients()`"),
        ]
        return ctx.diagnostic(self, clip.call, message, self._fix(ctx, backward, clip, accelerator), evidence)

    def _fix(self, ctx, backward, clip, accelerator):
        if clip.via is not None or backward.via is not None or dotted_name(backward.call.func.value) is None:
            return None
        call = clip.call
        name = call.func.attr if isinstance(call.func, ast.Attribute) else ctx.semantic.qualified_name(call.func)
        replacement = _REPLACEMENT.get((name or "").rsplit(".", 1)[-1])
        if replacement is None:
            return None  # get_total_norm: Accelerate has no norm reader
        method, keywords, positional = replacement
        if len(call.args) > positional or any(k.arg not in keywords for k in call.keywords):
            return None
        start, end = ctx.locator.node_range(call.func)
        edit = Edit(start, end, f"{accelerator}.{method}")
        return Fix(f"Use `{accelerator}.{method}`", (edit,), Applicability.UNSAFE)


def _keyword_value(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _unscale_gradients(ctx: ModuleContext, fn) -> list:
    """``accelerator.unscale_gradients()`` calls of the function, as events for path questions."""
    model = ctx.training
    found = []
    for call in model.calls_in(fn):
        if isinstance(call.func, ast.Attribute) and call.func.attr == "unscale_gradients":
            event = model.event_at(call, "unscale_gradients")
            if event is not None:
                found.append(event)
    return found
