"""AMP401: `backward()` (and the optimizer/scaler steps) inside an autocast block."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.edits import owns_lines, reblocked
from ampfix.prefilter import FileBytes, may_backward
from ampfix.rules._loop import at
from ampfix.rules.base import FIX_SOMETIMES, Rule
from ampfix.training.model import BACKWARD


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
                yield ctx.diagnostic(self, backward.call, message, self._fix(ctx, region.with_node, backward), evidence)

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
