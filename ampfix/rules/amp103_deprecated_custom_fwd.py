"""AMP103: `torch.cuda.amp.custom_fwd` / `custom_bwd` -> `torch.amp.custom_fwd(device_type="cuda", ...)`."""

from ampfix.rules._migration import MigrationRule
from ampfix.rules.base import FIX_SAFE


class DeprecatedCustomFwd(MigrationRule):
    code = "AMP103"
    name = "deprecated-custom-fwd"
    summary = "`torch.cuda.amp.custom_fwd` / `custom_bwd` are deprecated"
    triggers = (b"custom_fwd", b"custom_bwd")
    fix_safety = FIX_SAFE
    symbols = ("torch.cuda.amp.custom_fwd", "torch.cuda.amp.custom_bwd")
