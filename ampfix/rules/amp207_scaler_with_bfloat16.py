"""AMP207: a GradScaler next to bfloat16 autocast, where it does nothing but cost."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.rules._loop import at
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.config import regions_of_scaler
from ampfix.training.model import CREATE


def _bfloat16(ctx: ModuleContext, region) -> bool:
    return region.call is not None and region.dtype is not None and (
        ctx.semantic.qualified_name(region.dtype) == "torch.bfloat16"
    )


class ScalerWithBfloat16(Rule):
    code = "AMP207"
    name = "scaler-with-bfloat16"
    summary = "`GradScaler` used by steps whose autocast regions all run in bfloat16"
    triggers = (b"GradScaler",)
    requires = (b"bfloat16", b"autocast")
    fix_safety = FIX_UNSAFE

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for fn in model.functions:
            for create in fn.of(CREATE):
                enabled = next((k.value for k in create.call.keywords if k.arg == "enabled"), None)
                if enabled is not None and not (isinstance(enabled, ast.Constant) and enabled.value is True):
                    continue  # enabled=(dtype == "float16"): already conditional
                if len(create.call.args) >= 5 or any(k.arg is None for k in create.call.keywords):
                    continue
                regions = regions_of_scaler(model, create)
                if not regions or not all(_bfloat16(ctx, r) for r in regions):
                    continue  # some step's precision is unknown, or float16
                message = (
                    "`GradScaler` with bfloat16 autocast: bfloat16 has float32's exponent range, so loss scaling "
                    "never changes the result and only costs time; disable or remove the scaler"
                )
                evidence = [at(r.entry, "autocast region in bfloat16") for r in regions[:3]]
                yield ctx.diagnostic(self, create.call, message, self._fix(ctx, create.call, enabled), evidence)

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
