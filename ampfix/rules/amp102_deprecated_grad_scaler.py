"""AMP102: `torch.cuda.amp.GradScaler` / `torch.cpu.amp.GradScaler` -> `torch.amp.GradScaler(device, ...)`."""

from ampfix.rules._migration import MigrationRule
from ampfix.rules.base import FIX_SAFE


class DeprecatedGradScaler(MigrationRule):
    code = "AMP102"
    name = "deprecated-grad-scaler"
    summary = "`torch.cuda.amp.GradScaler` / `torch.cpu.amp.GradScaler` are deprecated"
    triggers = (b"GradScaler",)
    fix_safety = FIX_SAFE
    symbols = ("torch.cuda.amp.GradScaler", "torch.cpu.amp.GradScaler")
