"""AMP401: `backward()` (and the optimizer/scaler steps) inside an autocast block."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.edits import owns_lines, reblocked
from ampfix.prefilter import FileBytes, may_backward
from ampfix.rules._loop import at
from ampfix.rules.base import FIX_SOMETIMES, Rule
from ampfix.training.model import BACKWARD, CLIP, OPT_STEP, SCALER_STEP, UNSCALE, UPDATE, ZERO_GRAD


class BackwardInAutocast(Rule):
    code = "AMP401"
    name = "backward-in-autocast"
    summary = "`backward()` runs inside an autocast block"
    triggers = (b"autocast",)
    fix_safety = FIX_SOMETIMES

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return file.has(b"autocast") and may_backward(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for fn in model.functions:
            reported = set()
            for backward in fn.of(BACKWARD):
                region = model.region_of(backward)
                if region is None or id(region.with_node) in reported:
                    continue
                reported.add(id(region.with_node))
                message = (
                    "backward pass inside an autocast block: autocast should cover the forward pass and the loss "
                    "only; backward ops already run in the forward's dtypes, and under torch.compile the "
                    "backward inherits the autocast state; move backward and the step after the block"
                )
                evidence = [at(region.entry, "autocast region entered here"), at(backward, "backward inside it")]
                reason = _why_not_movable(ctx, fn, region, backward)
                fix = None if reason else self._fix(ctx, region.with_node, backward)
                diag = ctx.diagnostic(self, backward.call, message, fix, evidence)
                diag.no_fix_reason = reason
                yield diag

    def _fix(self, ctx: ModuleContext, with_node: ast.With, backward) -> Fix | None:
        body = with_node.body
        top = backward.stmt
        while top not in body:
            top = ctx.semantic.parent(top)
            if top is None or top is with_node:
                return None
        index = body.index(top)
        if index == 0:
            return None  # nothing would stay inside the block
        if not owns_lines(ctx, with_node.body[0]):
            return None
        moved = reblocked(ctx, body[index:], ctx.locator.indentation(with_node.lineno))
        if moved is None:
            return None
        return Fix("Move the statements from the backward pass on out of the autocast block", (moved,), Applicability.SAFE)


# What may follow the backward out of the block: the step's own calls, whose ops autocast does not cast.
_STEP_WORK = frozenset({BACKWARD, OPT_STEP, SCALER_STEP, UPDATE, ZERO_GRAD, CLIP, UNSCALE})


def _why_not_movable(ctx: ModuleContext, fn, region, backward) -> Optional[str]:
    """Why moving the statements from the backward on out of the block would change more than
    where the backward runs (None: nothing)."""
    with_node = region.with_node
    others = [item for item in with_node.items if item is not region.item]
    if others:
        names = ", ".join(f"`{ctx.segment(item.context_expr)}`" for item in others)
        return f"the `with` also enters {names}: the backward would leave that context too"
    step_statements = {id(e.stmt) for e in fn.events if e.kind in _STEP_WORK}
    top = backward.stmt
    while top not in with_node.body:
        top = ctx.semantic.parent(top)
        if top is None:
            return None
    if top is not backward.stmt and _computes(top, step_statements):
        return (
            f"the backward is inside the statement at line {top.lineno}, which also computes values (the forward "
            "of a loop that the block wraps): moving it would take them out of autocast; split the block by hand"
        )
    after = with_node.body[with_node.body.index(top) + 1:]
    for stmt in after:
        if _computes(stmt, step_statements):
            return (
                f"line {stmt.lineno} after the backward computes a value (a second forward pass or loss "
                "must stay under autocast): split the block by hand"
            )
    return None


def _computes(stmt: ast.stmt, step_statements: set) -> bool:
    """Whether ``stmt`` binds a value that is not the step's own work (``loss_g = -d(g(z)).mean()``
    after the discriminator's backward): that would leave autocast. Step calls, logging and
    other expression statements move out unchanged in meaning."""
    if id(stmt) in step_statements:
        return False
    return any(isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr, ast.For, ast.With))
               for node in ast.walk(stmt))
