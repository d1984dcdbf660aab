"""The rule registry: every rule, in code order. Add a rule by adding its module here."""

from __future__ import annotations

from ampfix.prefilter import Prefilter
from ampfix.rules.amp001_syntax_error import InvalidSuppression, SyntaxErrorRule
from ampfix.rules.amp101_deprecated_autocast import DeprecatedAutocast
from ampfix.rules.amp102_deprecated_grad_scaler import DeprecatedGradScaler
from ampfix.rules.amp103_deprecated_custom_fwd import DeprecatedCustomFwd
from ampfix.rules.amp104_legacy_autocast_state import LegacyAutocastState
from ampfix.rules.amp105_apex_amp import ApexAmp
from ampfix.rules.amp106_dead_version_shim import DeadVersionShim
from ampfix.rules.amp107_private_amp_api import PrivateAmpApi
from ampfix.rules.amp201_clip_scaled_gradients import ClipScaledGradients
from ampfix.rules.amp202_unscaled_backward import UnscaledBackward
from ampfix.rules.amp203_step_bypasses_scaler import StepBypassesScaler
from ampfix.rules.amp204_scaler_update import ScalerUpdate
from ampfix.rules.amp205_scaler_recreated import ScalerRecreated
from ampfix.rules.amp206_checkpoint_without_scaler import CheckpointWithoutScaler
from ampfix.rules.amp207_scaler_with_bfloat16 import ScalerWithBfloat16
from ampfix.rules.amp208_float16_without_scaler import Float16WithoutScaler
from ampfix.rules.amp209_float16_weights import Float16Weights
from ampfix.rules.amp210_unscale_order import UnscaleOrder
from ampfix.rules.amp211_accelerate_clip_scaled_gradients import AccelerateClipScaledGradients
from ampfix.rules.amp212_apex_backward_outside_scale_loss import ApexBackwardOutsideScaleLoss
from ampfix.rules.amp213_scaler_without_autocast import ScalerWithoutAutocast
from ampfix.rules.amp214_fsdp_float16_without_sharded_scaler import FsdpFloat16WithoutShardedScaler
from ampfix.rules.amp301_accumulation_without_division import (
    AccumulationWithoutDivision,
)
from ampfix.rules.amp302_per_microbatch_scaler_calls import PerMicrobatchScalerCalls
from ampfix.rules.amp303_per_microbatch_zero_grad import PerMicrobatchZeroGrad
from ampfix.rules.amp304_zero_grad_inside_accumulation_window import ZeroGradInsideAccumulationWindow
from ampfix.rules.amp401_backward_in_autocast import BackwardInAutocast
from ampfix.rules.amp402_bce_in_autocast import BceInAutocast
from ampfix.rules.amp501_fp32_training_loop import Fp32TrainingLoop
from ampfix.rules.amp502_manual_gradient_scaling import ManualGradientScaling
from ampfix.rules.amp215_independent_amp_and_scaler_flags import IndependentAmpAndScalerFlags
from ampfix.rules.amp216_scaler_for_bfloat16_at_run_time import ScalerForBfloat16AtRunTime
from ampfix.rules.amp217_scheduler_on_skipped_steps import SchedulerOnSkippedSteps
from ampfix.rules.amp305_ddp_accumulation_without_no_sync import DdpAccumulationWithoutNoSync
from ampfix.rules.base import Rule

_RULE_CLASSES: list[type[Rule]] = [
    SyntaxErrorRule,
    InvalidSuppression,
    DeprecatedAutocast,
    DeprecatedGradScaler,
    DeprecatedCustomFwd,
    LegacyAutocastState,
    ApexAmp,
    DeadVersionShim,
    PrivateAmpApi,
    ClipScaledGradients,
    UnscaledBackward,
    StepBypassesScaler,
    ScalerUpdate,
    ScalerRecreated,
    CheckpointWithoutScaler,
    ScalerWithBfloat16,
    Float16WithoutScaler,
    Float16Weights,
    UnscaleOrder,
    AccumulationWithoutDivision,
    PerMicrobatchScalerCalls,
    PerMicrobatchZeroGrad,
    BackwardInAutocast,
    BceInAutocast,
    Fp32TrainingLoop,
    ManualGradientScaling,
    IndependentAmpAndScalerFlags,
    ScalerForBfloat16AtRunTime,
    SchedulerOnSkippedSteps,
    DdpAccumulationWithoutNoSync,
    AccelerateClipScaledGradients,
    ApexBackwardOutsideScaleLoss,
    ScalerWithoutAutocast,
    FsdpFloat16WithoutShardedScaler,
    ZeroGradInsideAccumulationWindow,
]

RULES: dict[str, Rule] = {cls.code: cls() for cls in sorted(_RULE_CLASSES, key=lambda c: c.code)}
ENGINE_CODES = frozenset({"AMP001", "AMP002"})


def get_rule(code: str) -> Rule | None:
    return RULES.get(code.upper())


_PREFILTERS: dict[frozenset, Prefilter] = {}


def prefilter_for(codes: frozenset) -> Prefilter:
    """The prefilter of these selected rules (built once per selection)."""
    found = _PREFILTERS.get(codes)
    if found is None:
        found = _PREFILTERS[codes] = Prefilter([RULES[code] for code in sorted(codes)])
    return found
