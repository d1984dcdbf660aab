"""AMP402: `nn.BCELoss` / `F.binary_cross_entropy` under CUDA autocast (a RuntimeError there)."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.prefilter import FileBytes
from ampfix.rules.base import FIX_NONE, Rule
from ampfix.semantic import dotted_name

_BCE_FUNCTIONS = frozenset({"torch.nn.functional.binary_cross_entropy", "torch.binary_cross_entropy"})
_BCE_MODULES = frozenset({"torch.nn.BCELoss", "torch.nn.modules.loss.BCELoss"})


class BceInAutocast(Rule):
    code = "AMP402"
    name = "bce-in-autocast"
    summary = "`nn.BCELoss` / `F.binary_cross_entropy` inside CUDA autocast"
    triggers = (b"autocast",)

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return file.has(b"autocast") and file.has(b"binary_cross_entropy", b"BCELoss")
    fix_safety = FIX_NONE

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        semantic = ctx.semantic
        criteria = {
            dotted_name(t)
            for node in semantic.nodes(ast.Assign)
            if isinstance(node.value, ast.Call)
            and semantic.qualified_name(node.value.func) in _BCE_MODULES
            for t in node.targets
        }
        seen = set()
        for region in model.regions:
            if region.device == "cpu":
                continue  # on CPU binary_cross_entropy is on the fp32 list and runs
            for stmt in region.with_node.body:
                for node in ast.walk(stmt):
                    if not isinstance(node, ast.Call) or id(node) in seen:
                        continue
                    func = node.func
                    direct = semantic.qualified_name(func) in _BCE_FUNCTIONS
                    via_module = dotted_name(func) in criteria or (
                        isinstance(func, ast.Call) and semantic.qualified_name(func.func) in _BCE_MODULES
                    )
                    if direct or via_module:
                        seen.add(id(node))
                        yield ctx.diagnostic(
                            self, node,
                            "binary cross-entropy on autocast outputs raises under CUDA autocast (\"unsafe to "
                            "autocast\"); use `nn.BCEWithLogitsLoss` / `F.binary_cross_entropy_with_logits` on the "
                            "logits, or compute it in float32 outside the block",
                        )
