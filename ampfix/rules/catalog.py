"""The rule catalog: every rule's code, the module and class that implement it, and what the
prefilter and the selection need of it (triggers, tier, whether it is an opportunity).

Starting a check must not import the rules: a file that names no AMP API is rejected by the
prefilter's first stage, which needs only the triggers, so such a check imports no rule module
(what pre-commit and editors pay on most files: issue 23's one-file start-up). A rule's module
is imported when the rule is first asked for (``ampfix.rules.RULES[code]``): for the second
stage of the prefilter on a file one of its triggers occurs in, to run it, or to list it.

The table below is generated from the rule classes, which stay the one place these facts are
written: after adding a rule module or changing a rule's triggers, tier or opportunity, run
``python -m ampfix.rules.write_catalog``. tests/test_rule_catalog.py fails while the table is stale.
"""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    module: str  # under ampfix.rules
    cls: str
    triggers: tuple[bytes, ...]
    stability: str
    opportunity: bool


# fmt: off
CATALOG: dict[str, Entry] = {
    # BEGIN GENERATED (python -m ampfix.rules.write_catalog)
    "AMP001": Entry("amp001_syntax_error", "SyntaxErrorRule", (), "stable", False),
    "AMP002": Entry("amp001_syntax_error", "InvalidSuppression", (b"AMP",), "stable", False),
    "AMP101": Entry("amp101_deprecated_autocast", "DeprecatedAutocast", (b"autocast",), "stable", False),
    "AMP102": Entry("amp102_deprecated_grad_scaler", "DeprecatedGradScaler", (b"GradScaler",), "stable", False),
    "AMP103": Entry("amp103_deprecated_custom_fwd", "DeprecatedCustomFwd", (b"custom_fwd", b"custom_bwd"), "stable", False),
    "AMP104": Entry("amp104_legacy_autocast_state", "LegacyAutocastState", (b"_autocast_",), "stable", False),
    "AMP105": Entry("amp105_apex_amp", "ApexAmp", (b"apex",), "stable", False),
    "AMP106": Entry("amp106_dead_version_shim", "DeadVersionShim", (b"version", b"hasattr", b"Error", b"_TORCH_GREATER_EQUAL_", b"is_torch_greater_or_equal"), "preview", False),
    "AMP107": Entry("amp107_private_amp_api", "PrivateAmpApi", (b"OptState", b"_cast", b"_MultiDeviceReplicator", b"_refresh_per_optimizer_state", b"_enter_autocast", b"_exit_autocast", b"_enabled", b"_growth_", b"_backoff_factor", b"_scale", b"_per_optimizer_states", b"_found_inf_per_device", b"_check_inf_per_device", b"_unscale_grads_"), "preview", False),
    "AMP201": Entry("amp201_clip_scaled_gradients", "ClipScaledGradients", (b"caler", b"CALER", b"unscale_", b"scale_loss"), "preview", False),
    "AMP202": Entry("amp202_unscaled_backward", "UnscaledBackward", (b"caler", b"CALER", b"unscale_"), "preview", False),
    "AMP203": Entry("amp203_step_bypasses_scaler", "StepBypassesScaler", (b"caler", b"CALER", b"unscale_"), "preview", False),
    "AMP204": Entry("amp204_scaler_update", "ScalerUpdate", (b"caler", b"CALER", b"unscale_"), "preview", False),
    "AMP205": Entry("amp205_scaler_recreated", "ScalerRecreated", (b"GradScaler",), "preview", False),
    "AMP206": Entry("amp206_checkpoint_without_scaler", "CheckpointWithoutScaler", (b"caler", b"CALER", b"unscale_"), "stable", False),
    "AMP207": Entry("amp207_scaler_with_bfloat16", "ScalerWithBfloat16", (b"GradScaler",), "preview", False),
    "AMP208": Entry("amp208_float16_without_scaler", "Float16WithoutScaler", (b"autocast",), "preview", False),
    "AMP209": Entry("amp209_float16_weights", "Float16Weights", (b".half(", b"float16", b"torch.half"), "preview", False),
    "AMP210": Entry("amp210_unscale_order", "UnscaleOrder", (b"unscale_",), "preview", False),
    "AMP211": Entry("amp211_accelerate_clip_scaled_gradients", "AccelerateClipScaledGradients", (b"Accelerator",), "preview", False),
    "AMP212": Entry("amp212_apex_backward_outside_scale_loss", "ApexBackwardOutsideScaleLoss", (b"scale_loss",), "preview", False),
    "AMP213": Entry("amp213_scaler_without_autocast", "ScalerWithoutAutocast", (b"GradScaler",), "preview", False),
    "AMP214": Entry("amp214_fsdp_float16_without_sharded_scaler", "FsdpFloat16WithoutShardedScaler", (b"FullyShardedDataParallel",), "preview", False),
    "AMP215": Entry("amp215_independent_amp_and_scaler_flags", "IndependentAmpAndScalerFlags", (b"GradScaler",), "preview", False),
    "AMP216": Entry("amp216_scaler_for_bfloat16_at_run_time", "ScalerForBfloat16AtRunTime", (b"GradScaler",), "preview", False),
    "AMP217": Entry("amp217_scheduler_on_skipped_steps", "SchedulerOnSkippedSteps", (b"lr_scheduler", b"schedule"), "preview", False),
    "AMP301": Entry("amp301_accumulation_without_division", "AccumulationWithoutDivision", (b"backward",), "preview", False),
    "AMP302": Entry("amp302_per_microbatch_scaler_calls", "PerMicrobatchScalerCalls", (b"backward",), "preview", False),
    "AMP303": Entry("amp303_per_microbatch_zero_grad", "PerMicrobatchZeroGrad", (b"backward",), "preview", False),
    "AMP304": Entry("amp304_zero_grad_inside_accumulation_window", "ZeroGradInsideAccumulationWindow", (b"zero_grad",), "preview", False),
    "AMP305": Entry("amp305_ddp_accumulation_without_no_sync", "DdpAccumulationWithoutNoSync", (b"DistributedDataParallel", b"DDP", b"ddp", b"distributed"), "stable", False),
    "AMP401": Entry("amp401_backward_in_autocast", "BackwardInAutocast", (b"autocast",), "preview", False),
    "AMP402": Entry("amp402_bce_in_autocast", "BceInAutocast", (b"autocast",), "preview", False),
    "AMP501": Entry("amp501_fp32_training_loop", "Fp32TrainingLoop", (b"backward",), "preview", True),
    "AMP502": Entry("amp502_manual_gradient_scaling", "ManualGradientScaling", (b"backward", b".grad"), "preview", False),
    # END GENERATED
}
# fmt: on
