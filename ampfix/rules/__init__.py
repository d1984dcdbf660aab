"""The rule registry: every rule, in code order. Add a rule by adding its module here."""

from __future__ import annotations

from ampfix.rules.amp001_syntax_error import InvalidSuppression, SyntaxErrorRule
from ampfix.rules.amp101_deprecated_autocast import DeprecatedAutocast
from ampfix.rules.amp102_deprecated_grad_scaler import DeprecatedGradScaler
from ampfix.rules.amp103_deprecated_custom_fwd import DeprecatedCustomFwd
from ampfix.rules.amp104_legacy_autocast_state import LegacyAutocastState
from ampfix.rules.amp105_apex_amp import ApexAmp
from ampfix.rules.base import Rule

_RULE_CLASSES: list[type[Rule]] = [
    SyntaxErrorRule,
    InvalidSuppression,
    DeprecatedAutocast,
    DeprecatedGradScaler,
    DeprecatedCustomFwd,
    LegacyAutocastState,
    ApexAmp,
]

RULES: dict[str, Rule] = {cls.code: cls() for cls in sorted(_RULE_CLASSES, key=lambda c: c.code)}
ENGINE_CODES = frozenset({"AMP001", "AMP002"})


def get_rule(code: str) -> Rule | None:
    return RULES.get(code.upper())
