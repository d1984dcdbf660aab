"""AMP215: float16 autocast and its GradScaler turned on by two independent values."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.rules._loop import at
from ampfix.rules.base import Rule
from ampfix.training.config import (
    flag_formula,
    float16_condition,
    negated,
    region_flag,
    regions_of_scaler,
    satisfiable,
    scaler_flag,
)


class IndependentAmpAndScalerFlags(Rule):
    code = "AMP215"
    name = "independent-amp-and-scaler-flags"
    summary = "float16 autocast and its `GradScaler` are enabled by two independent values"
    triggers = (b"GradScaler",)
    requires = (b"autocast",)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for create in model.creations:
            scaler_on = scaler_flag(model, create)
            if scaler_on is None:
                continue  # always on (or off): every float16 step is scaled
            scaler_off = negated(flag_formula(model, scaler_on))
            for region in regions_of_scaler(model, create) or []:
                amp_on = region_flag(model, region)
                if amp_on is None:
                    continue  # always on: not two flags
                # a configuration with this region on, in float16, and the scaler off
                if satisfiable(flag_formula(model, amp_on), float16_condition(model, region), scaler_off):
                    yield self._report(ctx, create, region, amp_on, scaler_on)
                    break

    def _report(self, ctx: ModuleContext, create, region, amp_on: ast.expr, scaler_on: ast.expr) -> Diagnostic:
        amp, scaler = ctx.segment(amp_on), ctx.segment(scaler_on)
        message = (
            f"float16 autocast is enabled by `{amp}` and its GradScaler by `{scaler}`, an independent value: "
            "a configuration with the first on and the second off trains in float16 without loss scaling, and "
            "small gradients underflow to zero; enable both from one flag"
        )
        evidence = [at(region.entry, f"autocast enabled by `{amp}`")]
        return ctx.diagnostic(self, create.call, message, None, evidence)
