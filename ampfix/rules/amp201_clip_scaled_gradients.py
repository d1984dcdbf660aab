"""AMP201: gradient clipping (or norm reading) on gradients still multiplied by the loss scale."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.edits import insert_before
from ampfix.prefilter import FileBytes, may_backward_scaled, may_use_scaler
from ampfix.rules._loop import at, call_name, created, loops_of, optimizer_for
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.frameworks import apex_initialized, scale_loss_regions
from ampfix.training.model import BACKWARD, CLIP, SCALER_STEP, UNSCALE
from ampfix.training.typestate import CLIP_SCALED, errors_of


class ClipScaledGradients(Rule):
    code = "AMP201"
    name = "clip-scaled-gradients"
    summary = "Gradients are clipped (or their norm read) before `scaler.unscale_(optimizer)`"
    # GradScaler, scaler, loss_scaler, x.unscale_(); apex's `amp.scale_loss`
    triggers = (b"caler", b"CALER", b"unscale_", b"scale_loss")
    fix_safety = FIX_UNSAFE
    changes_training = "clipping now sees unscaled gradients"  # a bug fix: unsafe, as ruff defines it

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        # the scaled backward may be in a call handed the scaler (a helper here or in another
        # module of the project): a name the model takes for a scaler is enough
        scaling = may_backward_scaled(file) or may_use_scaler(file) or file.has(b"scale_loss")
        return scaling and file.has(b"clip_grad", b"get_total_norm")

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        """A query over the scaler typestate: a clip reached while gradients are scaled (a
        scaled backward, then no ``unscale_`` and no step of that scaler on the path)."""
        model = ctx.training
        if not any(fn.of(CLIP) for fn in model.functions):
            return  # a clip of another module is that module's finding: no clip here, none to report
        yield from self._clips_inside_apex_scale_loss(ctx)
        for fn in model.functions:
            reported = set()
            for error in errors_of(model, fn, CLIP_SCALED):
                clip = error.event
                if not error.path or id(clip) in reported:
                    continue
                backward = error.path[0]
                if backward.conditional:
                    continue  # a helper's backward under its own condition may not run
                if clip.via is not None and (clip.origin_path is not None or backward.call is clip.call):
                    continue  # the callee's finding (or another file's, which the prefilter reads)
                reported.add(id(clip))
                scaler = backward.scaler

                def same_scaler(u, backward=backward):
                    return model.same_object(u.obj, u.receiver, backward.scaler_obj, backward.scaler)
                optimizer = optimizer_for(ctx, fn, clip)
                message = (
                    f"`{call_name(ctx, clip.call)}` runs on gradients still scaled by `{scaler}`: the threshold "
                    f"is in effect max_norm × scale (65536 by default); call `{scaler}.unscale_(optimizer)` first"
                )
                partial = [u for u in fn.of(UNSCALE, calls=True) if same_scaler(u) and fn.before(backward, u)]
                evidence = [
                    at(backward, f"gradients scaled by `{scaler}` here"),
                    *(at(u, "`unscale_` here runs only on some paths to the clip") for u in partial),
                    at(clip, "clipped here on a path with no `unscale_`"),
                    created(ctx, fn, scaler, backward.scaler_obj),
                ]
                # a clip in a helper of the step (a class's `clip()` method): reported at its call
                fix = self._fix(ctx, fn, backward, clip, scaler, optimizer) if clip.via is None else None
                yield ctx.diagnostic(self, clip.call, message, fix, evidence)

    def _clips_inside_apex_scale_loss(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        """apex: a clip in the body of ``with amp.scale_loss(loss, optimizer) as scaled_loss:``
        after its backward. apex unscales the gradients when the block exits, so the clip sees
        them multiplied by the loss scale (and the update is then shrunk by it)."""
        regions = scale_loss_regions(ctx)
        if not regions or apex_initialized(ctx) is None:
            return  # without `amp.initialize`, `scale_loss` yields the loss unscaled
        for fn in ctx.training.functions:
            for clip in fn.of(CLIP):
                region = next((r for r in regions if _inside(clip, r)), None)
                if region is None:
                    continue
                backwards = [b for b in fn.of(BACKWARD) if _inside(b, region) and fn.before(b, clip)]
                if not backwards:
                    continue
                message = (
                    f"`{call_name(ctx, clip.call)}` runs inside `with amp.scale_loss(...)`, on gradients still "
                    "multiplied by the loss scale (apex unscales them when the block exits): the threshold is in "
                    "effect max_norm × scale; clip after the `with` block"
                )
                evidence = [
                    at(backwards[0], "gradients scaled by apex's loss scale here"),
                    (region.call, "apex unscales the gradients when this block exits"),
                    at(clip, "clipped before the block exits"),
                ]
                diag = ctx.diagnostic(self, clip.call, message, None, evidence)
                diag.no_fix_reason = "moving the clip out of the block changes its indentation and what runs with it"
                yield diag

    def _fix(self, ctx, fn, backward, clip, scaler, optimizer):
        if optimizer is None:
            return None
        step = next(s for s in fn.of(SCALER_STEP) if fn.before(clip, s))
        if fn.between(UNSCALE, backward, clip) or fn.between(UNSCALE, clip, step):
            return None  # an unscale_ on some path of the step: inserting another would raise there
        if len(loops_of(clip)) > len(loops_of(step)):
            return None  # clipping in a loop of its own: one unscale_ per step cannot go there
        if not _branches(step) <= _branches(clip):
            return None  # clipping runs more often than the step (accumulation): AMP302 moves it first
        edit = insert_before(ctx, clip.stmt, f"{scaler}.unscale_({optimizer})")
        if edit is None:
            return None
        return Fix(f"Insert `{scaler}.unscale_({optimizer})` before clipping", (edit,), Applicability.UNSAFE)


def _inside(event, region) -> bool:
    """Whether ``event`` runs in the body of the ``with amp.scale_loss(...)`` of ``region``."""
    return any(frame.node is region.with_node for frame in event.context)


def _branches(event) -> set:
    return {(id(f.node), f.branch) for f in event.context if isinstance(f.node, ast.If)}
