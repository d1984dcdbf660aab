"""AMP207: a GradScaler next to bfloat16 autocast, where it does nothing but cost."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.training.model import CREATE
from ampfix.rules.base import FIX_UNSAFE, Rule


class ScalerWithBfloat16(Rule):
    code = "AMP207"
    name = "scaler-with-bfloat16"
    summary = "`GradScaler` used while every autocast region runs in bfloat16"
    triggers = (b"GradScaler",)
    requires = (b"bfloat16", b"autocast")
    fix_safety = FIX_UNSAFE

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        regions = [r for r in model.regions if r.call is not None]
        if not regions or len(regions) != len(model.regions):
            return  # some region's dtype is unknown
        if not all(r.dtype is not None and ctx.semantic.qualified_name(r.dtype) == "torch.bfloat16" for r in regions):
            return
        for fn in model.functions:
            for create in fn.of(CREATE):
                enabled = next((k.value for k in create.call.keywords if k.arg == "enabled"), None)
                if enabled is not None and not (isinstance(enabled, ast.Constant) and enabled.value is True):
                    continue  # enabled=(dtype == "float16"): already conditional
                if len(create.call.args) >= 5 or any(k.arg is None for k in create.call.keywords):
                    continue
                message = (
                    "`GradScaler` with bfloat16 autocast: bfloat16 has float32's exponent range, so loss scaling "
                    "never changes the result and only costs time; disable or remove the scaler"
                )
                yield ctx.diagnostic(self, create.call, message, self._fix(ctx, create.call, enabled))

    @staticmethod
    def _fix(ctx: ModuleContext, call: ast.Call, enabled) -> Fix:
        if enabled is not None:
            start, end = ctx.locator.node_range(enabled)
            edit = Edit(start, end, "False")
        else:
            close = ctx.locator.node_range(call)[1] - 1
            if call.args or call.keywords:
                last = max([*call.args, *call.keywords], key=lambda n: (n.end_lineno, n.end_col_offset))
                edit = Edit.insert(ctx.locator.node_range(last)[1], ", enabled=False")
            else:
                edit = Edit.insert(close, "enabled=False")
        return Fix("Disable the scaler (`enabled=False`): its calls become no-ops", (edit,), Applicability.UNSAFE)
