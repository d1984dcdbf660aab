"""AMP105: NVIDIA apex `amp` -> native `torch.autocast` + `torch.amp.GradScaler`.

Report-only for now, with the migration step for each apex call; the rewrite needs the
training-loop model (which forward to wrap, where the step is) and comes with the loop rules.
"""

from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Diagnostic
from ampfix.rules.base import FIX_NONE, Rule

# What each apex call becomes in native AMP.
GUIDANCE = {
    "apex.amp.initialize": (
        "drop it; wrap the forward pass in `torch.autocast(\"cuda\")` and create "
        "`scaler = torch.amp.GradScaler(\"cuda\")` once"
    ),
    "apex.amp.scale_loss": "use `scaler.scale(loss).backward()`, then `scaler.step(optimizer)` and `scaler.update()`",
    "apex.amp.master_params": "clip `model.parameters()` after `scaler.unscale_(optimizer)`",
    "apex.amp.state_dict": "save `scaler.state_dict()` instead",
    "apex.amp.load_state_dict": "use `scaler.load_state_dict(...)` instead",
}


class ApexAmp(Rule):
    code = "AMP105"
    name = "apex-amp"
    summary = "NVIDIA apex `amp` is unmaintained; use native `torch.amp`"
    triggers = (b"apex",)
    fix_safety = FIX_NONE

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        for ref in ctx.references(GUIDANCE):
            api = ref.qualified.replace("apex.", "", 1)
            yield ctx.diagnostic(
                self, ref.node, f"apex `{api}` is deprecated: {GUIDANCE[ref.qualified]}"
            )
