"""AMP215: float16 autocast and its GradScaler turned on by two independent values."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.rules._loop import at
from ampfix.rules.base import Rule
from ampfix.training.config import (
    FLOAT16,
    flag_leaves,
    independent,
    region_dtypes,
    region_flag,
    regions_of_scaler,
    scaler_flag,
)
from ampfix.training.model import CREATE


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
            scaler_leaves = flag_leaves(model, scaler_on)
            region = self._unscaled_configuration(model, regions_of_scaler(model, create) or [], scaler_leaves)
            if region is None:
                continue
            amp_on = region_flag(model, region)
            message = (
                f"float16 autocast is enabled by `{ctx.segment(amp_on)}` and its GradScaler by "
                f"`{ctx.segment(scaler_on)}`, an independent value: a run with the first on and the second off "
                "trains in float16 without loss scaling, and small gradients underflow to zero; "
                "enable both from one flag"
            )
            evidence = [at(region.entry, f"autocast enabled by `{ctx.segment(amp_on)}`")]
            yield ctx.diagnostic(self, create.call, message, None, evidence)

    @staticmethod
    def _unscaled_configuration(model, regions: list, scaler_leaves) -> Optional[object]:
        """The first region that may run float16 and is enabled by a flag independent of the
        scaler's (so some configuration runs it with the scaler off)."""
        for region in regions:
            dtypes = region_dtypes(model, region)
            amp_on = region_flag(model, region)
            if dtypes is None or FLOAT16 not in dtypes.dtypes or amp_on is None:
                continue
            if independent(flag_leaves(model, amp_on), scaler_leaves):
                return region
        return None
