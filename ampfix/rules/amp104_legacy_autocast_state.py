"""AMP104: device-specific autocast state functions -> the forms that take a device argument."""

from ampfix.rules._migration import MIGRATIONS, MigrationRule
from ampfix.rules.base import FIX_SAFE


class LegacyAutocastState(MigrationRule):
    code = "AMP104"
    name = "legacy-autocast-state-function"
    summary = "`torch.is_autocast_cpu_enabled()`, `torch.get_autocast_gpu_dtype()` and kin are deprecated"
    triggers = (b"_autocast_",)
    fix_safety = FIX_SAFE
    symbols = tuple(name for name in MIGRATIONS if name.count(".") == 1)
