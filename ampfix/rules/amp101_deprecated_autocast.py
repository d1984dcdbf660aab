"""AMP101: `torch.cuda.amp.autocast` / `torch.cpu.amp.autocast` -> `torch.autocast(device, ...)`."""

from ampfix.rules._migration import MigrationRule
from ampfix.rules.base import FIX_SAFE


class DeprecatedAutocast(MigrationRule):
    code = "AMP101"
    name = "deprecated-autocast"
    summary = "`torch.cuda.amp.autocast` / `torch.cpu.amp.autocast` are deprecated"
    triggers = (b"autocast",)
    fix_safety = FIX_SAFE
    symbols = ("torch.cuda.amp.autocast", "torch.cpu.amp.autocast")
