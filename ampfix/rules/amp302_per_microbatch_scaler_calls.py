"""AMP302: `unscale_`, clipping or `update` on every micro-batch while the step is conditional."""

from __future__ import annotations

import ast

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.edits import delete_statement, moved_after, moved_before, parent_body
from ampfix.prefilter import FileBytes, may_train_step
from ampfix.rules._loop import at, call_name
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.accumulation import step_evidence, where_it_steps
from ampfix.training.model import (
    CLIP,
    OPT_STEP,
    SCALER_STEP,
    UNSCALE,
    UPDATE,
    Accumulation,
    sets_scale,
)


class PerMicrobatchScalerCalls(Rule):
    code = "AMP302"
    name = "per-microbatch-scaler-call"
    summary = "`scaler.unscale_`, clipping or `scaler.update` run on every micro-batch of an accumulation loop"
    triggers = (b"backward",)  # accumulation backpropagates every micro-batch
    fix_safety = FIX_UNSAFE
    changes_training = "unscale/clip/update now run once per step"  # a bug fix: unsafe, as ruff defines it

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        if not may_train_step(file):
            return False
        return file.calls("unscale_") or file.calls("update") or file.has(b"clip_grad", b"get_total_norm")

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        for training_step in ctx.steps:
            fn = training_step.function
            for acc in training_step.windows:
                for event in fn.of(UNSCALE, CLIP, UPDATE):
                    if sets_scale(event) or not any(f.node is acc.loop for f in event.context):
                        continue
                    if any(f.node is acc.gate for f in event.context):
                        continue
                    if _shares_a_branch_with_a_step(event, acc, fn.of(OPT_STEP, SCALER_STEP)):
                        continue  # under a condition that also holds a step: it runs where the step runs
                    what = call_name(ctx, event.call)
                    consequence = {
                        UNSCALE: "a second micro-batch raises `unscale_() has already been called`",
                        CLIP: "it clips partial, possibly still-scaled gradients",
                        UPDATE: "the scale changes mid-accumulation (or `No inf checks were recorded` is raised)",
                    }[event.kind]
                    where = (
                        "move it into the step branch" if acc.gate is not None
                        else "move it after the loop, after the step" if event.kind == UPDATE
                        else "move it after the loop, before the step"
                    )
                    message = (
                        f"`{what}` runs on every micro-batch but the optimizer steps {where_it_steps(ctx, acc)}: "
                        f"{consequence}; {where}"
                    )
                    evidence = [at(event, "runs on every micro-batch"), step_evidence(ctx, acc)]
                    yield ctx.diagnostic(self, event.call, message, self._fix(ctx, fn, acc, event), evidence)

    def _fix(self, ctx: ModuleContext, fn, acc: Accumulation, event):
        body = parent_body(ctx, event.stmt)
        if acc.gate is None or body is None or acc.gate not in body:
            return None  # only a local move within one block into the step branch
        if event.kind != UPDATE and body.index(event.stmt) > body.index(acc.gate):
            return None  # unscale_/clipping after the step branch: not a local move
        gate_body = acc.gate.body
        indent = ctx.locator.indentation(gate_body[0].lineno)
        delete = delete_statement(ctx, event.stmt, body)
        if delete is None:
            return None
        steps = [s.stmt for s in acc.steps if s.stmt in gate_body and s.kind in (SCALER_STEP, OPT_STEP)]
        if not steps:
            return None
        if event.kind == UPDATE:
            insert = moved_after(ctx, event.stmt, steps[-1], indent)
        else:
            # unscale_ goes before any clipping already in the branch, clipping right before the step
            anchor = steps[0]
            if event.kind == UNSCALE:
                clips = [e.stmt for e in fn.of(CLIP) if e.stmt in gate_body and e.stmt.lineno < anchor.lineno]
                anchor = clips[0] if clips else anchor
            insert = moved_before(ctx, event.stmt, anchor, indent)
        if insert is None:
            return None
        return Fix("Move it into the step branch", (delete, insert), Applicability.UNSAFE)


def _shares_a_branch_with_a_step(event, acc: Accumulation, steps) -> bool:
    """Whether an ``if`` branch inside the accumulation loop holds both the event and a step
    (a retry loop's ``if high_loss: backward; unscale_; step``): not a micro-batch call."""
    frames = [f for f in event.context if isinstance(f.node, ast.If)]
    inside = {(id(f.node), f.branch) for f in frames if _within(event, f.node, acc.loop)}
    return any(
        (id(f.node), f.branch) in inside for step in steps for f in step.context if isinstance(f.node, ast.If)
    )


def _within(event, node, loop) -> bool:
    nodes = [f.node for f in event.context]
    return any(n is loop for n in nodes) and nodes.index(node) > next(i for i, n in enumerate(nodes) if n is loop)
