"""From three traces (original, AMP rewrite, fp32 reference) to a verdict.

Order, as ../shared/reference/verifier-notes.md §5 suggests: a run that errored or stopped at a
different step count; protocol events in the rewrite; non-finite losses and skipped steps;
the low-precision FLOP fraction; loss agreement with the fp32 reference; behaviour against the
original; then speed and memory, which only inform.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Optional

from ampfix.rules import RULES

PASS, FAIL, WARN, INFO = "pass", "fail", "warn", "info"
EXIT_PASS, EXIT_FAIL, EXIT_CANNOT_RUN = 0, 1, 2

# Fixes that change training on purpose (bug fixes), as opposed to behaviour-keeping ones: the
# rules say so themselves (Rule.changes_training), and their fixes are the unsafe ones.
BEHAVIOUR_CHANGING = {code: rule.changes_training for code, rule in RULES.items() if rule.changes_training}
PROTOCOL_EVENTS = {
    "clip_on_scaled_gradients": "clipping on still-scaled gradients (call scaler.unscale_ first)",
    "step_bypasses_scaler": "optimizer.step() on scaled gradients, bypassing scaler.step",
    "discarded_scaled_loss": "backward of an unscaled loss while a scaled one was discarded",
    "update_before_step": "scaler.update() before any step (update per micro-batch?)",
    "update_without_step": "scaler.update() without a scaler.step() since the last one (update per micro-batch?)",
}


@dataclass
class Check:
    name: str
    status: str
    detail: str


@dataclass
class Verdict:
    exit_code: int
    checks: list[Check] = field(default_factory=list)
    summary: str = ""
    metrics: dict = field(default_factory=dict)


def step_losses(trace: dict) -> list[Optional[float]]:
    """One loss per step: the mean of what the criterion returned in it, else of the values
    handed to ``backward`` (unscaled); None when the step had no scalar loss."""
    out = []
    for step in trace.get("steps", []):
        values = [float(v) for v in (step.get("criterion") or step.get("losses") or []) if v is not None]
        finite = [v for v in values if math.isfinite(v)]
        out.append(sum(values) / len(values) if values and len(finite) == len(values) else
                   (float("inf") if values else None))
    return out


def step_params(trace: dict) -> list[Optional[dict]]:
    return [step.get("params") for step in trace.get("steps", [])]


# Rounding unit of each dtype: a step's loss may differ from fp32 by a few of them, more as the
# runs go on (the differences compound through the updates).
_EPSILON = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float32": 2.0 ** -23}


def tolerance_at(dtype: str, step: int, override: Optional[float] = None) -> float:
    """The relative agreement asked of step ``step`` (0-based): 4 rounding units of ``dtype``
    times the square root of the steps so far, or the user's ``--tolerance``."""
    if override is not None:
        return override
    return 4 * _EPSILON.get(dtype, _EPSILON["float16"]) * math.sqrt(step + 1)


def _relative(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return abs(a - b) / max(abs(b), 1e-12)


def _drift(a: Optional[dict], b: Optional[dict]) -> Optional[float]:
    """How far two runs' parameters went apart: the relative difference of their norms."""
    if not a or not b:
        return None
    return _relative(a.get("norm"), b.get("norm"))


def low_precision_fraction(trace: dict) -> Optional[float]:
    flops = trace.get("flops") or {}
    total = sum(flops.values())
    if not total:
        return None
    low = sum(v for k, v in flops.items() if k in ("torch.float16", "torch.bfloat16"))
    return low / total


def _ran(trace: dict) -> bool:
    return trace.get("status") in ("stopped", "finished")


def _error_tail(trace: dict) -> str:
    text = (trace.get("error") or "").strip() or trace.get("stderr", "").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:])[:600]


def amp_dtype(trace: dict) -> str:
    """The low-precision dtype the AMP run's matmuls really ran in (float16 if none was seen)."""
    flops = {k.replace("torch.", ""): v for k, v in (trace.get("flops") or {}).items()}
    low = {k: v for k, v in flops.items() if k in ("float16", "bfloat16")}
    return max(low, key=low.get) if low else "float16"


def evaluate(traces: dict[str, dict], applied: list[str], steps: int, tolerance: Optional[float] = None,
             against: bool = False) -> Verdict:
    original = traces["original"]
    checks: list[Check] = []

    # 1. could it run at all? (the runner stops at the first run that does not)
    if not _ran(original):
        reason = _error_tail(original)
        if "not compiled with CUDA" in reason or "CUDA" in reason and "available" in reason:
            summary = "the original needs CUDA and this machine has none: rerun on a GPU, or with --cuda-shim"
        elif original.get("status") == "timeout":
            summary = f"the original {original.get('error')}"
        else:
            summary = f"the original script failed: {reason}"
        return Verdict(EXIT_CANNOT_RUN, [Check("runs", FAIL, summary)], summary)
    ran = len(original.get("steps", []))
    if ran == 0:
        summary = "the original took no optimizer step (is this a training script?)"
        return Verdict(EXIT_CANNOT_RUN, [Check("runs", FAIL, summary)], summary)
    if ran < steps:
        summary = (f"only {ran} of the {steps} steps asked for ran before the original ended: too few to verify "
                   f"(lower --steps, or give the script more data)")
        return Verdict(EXIT_CANNOT_RUN, [Check("runs", FAIL, summary)], summary)
    amp, fp32 = traces.get("amp", {}), traces.get("fp32", {})
    broken = [m for m in ("amp", "fp32") if not _ran(traces.get(m, {}))]
    if broken:
        mode = broken[0]
        trace = traces.get(mode, {})
        cause = trace.get("error") if trace.get("status") == "timeout" else _error_tail(trace)
        checks.append(Check("runs", FAIL, f"the rewrite does not run ({mode} run): {cause}"))
        seen = [f"{n}× {PROTOCOL_EVENTS.get(e, e)}" for e, n in amp.get("events", {}).items()]
        if seen:
            checks.append(Check("scaler protocol", FAIL, "; ".join(seen)))
        return _finish(checks, {})
    counts = {m: len(traces[m].get("steps", [])) for m in traces}
    if len(set(counts.values())) != 1:
        checks.append(Check("runs", FAIL, f"training steps differ: {counts}"))
    else:
        checks.append(Check("runs", PASS, f"original, AMP and fp32 runs each took {counts['amp']} training steps"))

    # 2. the scaler protocol in the rewrite
    problems = []
    for event, text in PROTOCOL_EVENTS.items():
        count = amp.get("events", {}).get(event, 0)
        if count:
            problems.append(f"{count}× {text}")
    recreated = {site: n for site, n in amp.get("scaler_sites", {}).items() if n > 1}
    if recreated:
        site, n = max(recreated.items(), key=lambda kv: kv[1])
        problems.append(f"a GradScaler is created {n}× at {site} (per step or epoch: the scale never grows)")
    if amp.get("scalers_enabled"):
        bad_updates = [i for i, s in enumerate(amp.get("steps", [])) if s.get("updates", 0) != 1]
        if bad_updates:
            problems.append(f"scaler.update() not exactly once per step at steps {bad_updates[:5]}")
    backwards_amp = [s.get("backwards", 0) for s in amp.get("steps", [])]
    backwards_original = [s.get("backwards", 0) for s in original.get("steps", [])]
    if backwards_amp != backwards_original[: len(backwards_amp)]:
        problems.append(f"backward calls per step {backwards_amp[:6]} differ from the original's {backwards_original[:6]}")
    if problems:
        checks.append(Check("scaler protocol", FAIL, "; ".join(problems)))
    else:
        factor = statistics.mode(backwards_amp) if backwards_amp else 0
        per_step = statistics.mode([s.get("optimizer_steps", 1) for s in amp.get("steps", [])] or [1])
        created = amp.get("scalers_created", 0)
        scalers = f"{created} scaler(s) created once, one update per step" if created else "no GradScaler"
        checks.append(Check("scaler protocol", PASS,
                            f"no clipping or stepping on scaled gradients, {scalers}, {per_step} optimizer step(s) "
                            f"and {factor} backward(s) per step as in the original"))

    # 3. finite losses, skipped steps, scale
    amp_losses, fp32_losses = step_losses(amp), step_losses(fp32)
    skipped = set(amp.get("skipped", []))
    bad = [i for i, (a, r) in enumerate(zip(amp_losses, fp32_losses))
           if a is not None and r is not None and not math.isfinite(a) and math.isfinite(r) and i not in skipped]
    # a GradScaler's warm-up skips a few early steps while the scale backs off; many skips, or
    # skips late in the run, mean overflow in training itself
    allowed = max(4, counts["amp"] // 4)
    numeric_problems = []
    if bad:
        numeric_problems.append(f"non-finite AMP loss at steps {bad[:5]} where fp32 is finite")
    if len(skipped) > allowed or any(i >= 2 * allowed for i in skipped):
        numeric_problems.append(f"{len(skipped)} skipped steps ({sorted(skipped)[:6]}): more than a warm-up "
                                f"(at most {allowed}, within the first {2 * allowed} steps)")
    scales = amp.get("scale_history", [])
    if scales and min(scales) < 1:
        numeric_problems.append(f"the loss scale fell to {min(scales):g} (< 1)")

    # 4. is low precision really used?
    fraction = low_precision_fraction(amp)
    reference_fraction = low_precision_fraction(fp32)
    dtype = amp_dtype(amp)
    metrics = {"low_precision_fraction": fraction, "fp32_low_precision_fraction": reference_fraction, "dtype": dtype}
    if fraction is None:
        checks.append(Check("low precision", WARN, "no matmul/convolution seen in the measured window"))
    elif fraction < 0.5 and amp.get("disabled_autocast"):
        devices = ", ".join(sorted(amp["disabled_autocast"]))
        checks.append(Check("low precision", FAIL,
                            f"only {fraction:.1%} of matmul/conv FLOPs ran in low precision: the script's autocast is "
                            f"present but disabled on this device ({devices}; `enabled=` is false here, as a rewrite "
                            "for CUDA only sets it): rerun on a GPU, or with --cuda-shim"))
    elif fraction < 0.5 and not amp.get("autocast_entered", 1):
        checks.append(Check("low precision", FAIL,
                            f"only {fraction:.1%} of matmul/conv FLOPs ran in low precision: the rewrite never enters autocast"))
    elif fraction < 0.5:
        checks.append(Check("low precision", FAIL,
                            f"only {fraction:.1%} of matmul/conv FLOPs ran in low precision: autocast does not cover the forward pass"))
    else:
        checks.append(Check("low precision", PASS,
                            f"{fraction:.1%} of matmul/conv FLOPs in {dtype} (fp32 reference: {(reference_fraction or 0):.1%})"))

    # 5. trains like its fp32 reference: every step, the loss and the parameters. A step the
    # AMP run's scaler skipped is skipped in the reference too, so later steps still line up.
    amp_params, fp32_params = step_params(amp), step_params(fp32)
    rows, outside, compared = [], [], 0
    for i in range(min(len(amp_losses), len(fp32_losses))):
        delta, drift = _relative(amp_losses[i], fp32_losses[i]), _drift(amp_params[i], fp32_params[i])
        limit = tolerance_at(dtype, i, tolerance)
        if i not in skipped and (delta is not None or drift is not None):
            compared += 1
            if (delta is not None and delta > limit) or (drift is not None and drift > limit):
                outside.append(i)
        rows.append({"step": i, "amp_loss": amp_losses[i], "fp32_loss": fp32_losses[i], "relative": delta,
                     "drift": drift, "tolerance": limit, "scale": amp["steps"][i].get("scale"), "skipped": i in skipped})
    metrics["steps"] = rows
    worst = max((r["relative"] for r in rows if r["relative"] is not None and not r["skipped"]), default=0.0)
    worst_drift = max((r["drift"] for r in rows if r["drift"] is not None and not r["skipped"]), default=0.0)
    metrics["max_relative_loss_delta"], metrics["max_parameter_drift"] = worst, worst_drift
    rule = "--tolerance" if tolerance is not None else f"4 {dtype} rounding units × √step"
    if numeric_problems or outside:
        detail = "; ".join(numeric_problems + ([f"loss or parameters differ beyond the tolerance ({rule}) at steps {outside[:5]} "
                                                f"(max relative loss {worst:.2e}, parameters {worst_drift:.2e})"] if outside else []))
        checks.append(Check("trains like fp32", FAIL, detail))
    elif compared == 0:
        checks.append(Check("trains like fp32", WARN, "no step could be compared (every step skipped or without a scalar loss)"))
    else:
        checks.append(Check("trains like fp32", PASS,
                            f"{compared} steps compared: loss within {worst:.2e}, parameters within {worst_drift:.2e} "
                            f"relative (tolerance {rule}), {len(skipped)} skipped step(s) skipped in both"))

    # 6. behaviour against the original: the run of the same precision must train the same,
    # unless a fix changes training on purpose (compared up to the first replayed skip)
    original_amp = bool(original.get("scalers_enabled")) or (low_precision_fraction(original) or 0) > 0
    same = amp if original_amp else fp32
    label = "the AMP run" if original_amp else "the fp32 reference"
    horizon = len(same.get("steps", [])) if original_amp or not skipped else min(skipped)
    before_losses, after_losses = step_losses(original)[:horizon], step_losses(same)[:horizon]
    before_params, after_params = step_params(original)[:horizon], step_params(same)[:horizon]
    differences = [d for d in (
        [_relative(a, b) for a, b in zip(after_losses, before_losses)] + [_drift(a, b) for a, b in zip(after_params, before_params)]
    ) if d is not None]
    losses_match = all((a is None) == (b is None) for a, b in zip(after_losses, before_losses))
    difference = max(differences, default=0.0)
    intended = [c for c in applied if c in BEHAVIOUR_CHANGING]
    within = f" over {horizon} steps (up to the first skipped one)" if horizon < counts["amp"] else ""
    if horizon == 0:
        checks.append(Check("behaviour vs original", WARN, "the first step was skipped: nothing to compare with the original"))
    elif losses_match and difference <= 1e-6:
        checks.append(Check("behaviour vs original", PASS,
                            f"{label} trains as the original did{within}: losses and parameters within {difference:.1e} relative"))
    else:
        metrics["behaviour_change"] = difference
        if intended:
            reasons = "; ".join(f"{c}: {BEHAVIOUR_CHANGING[c]}" for c in intended)
            checks.append(Check("behaviour vs original", INFO,
                                f"changed on purpose by {reasons}; losses or parameters differ by up to {difference:.2e} relative"))
        else:
            what = "the rewrite" if against else "behaviour-keeping fixes"
            checks.append(Check("behaviour vs original", FAIL,
                                f"{label} differs from the original by up to {difference:.2e} relative{within}, "
                                f"but {what} should train identically"))

    # 7. speed and memory (informative; meaningful on a GPU)
    amp_times, fp32_times = amp.get("step_times", []), fp32.get("step_times", [])
    amp_time, fp32_time = _median(amp_times), _median(fp32_times)
    memory_amp = amp.get("peak_cuda") or amp.get("peak_rss")
    memory_fp32 = fp32.get("peak_cuda") or fp32.get("peak_rss")
    if amp_time and fp32_time:
        metrics.update(step_time_amp=amp_time, step_time_fp32=fp32_time, speedup=fp32_time / amp_time)
        memory = f", peak memory {memory_amp / 2**20:.0f} vs {memory_fp32 / 2**20:.0f} MiB" if memory_amp and memory_fp32 else ""
        samples = min(len(_timed(amp_times)), len(_timed(fp32_times)))
        checks.append(Check("speed", INFO, f"step time {amp_time * 1e3:.2f} ms AMP vs {fp32_time * 1e3:.2f} ms fp32 "
                                           f"({fp32_time / amp_time:.2f}× speed-up, median of {samples} steps){memory}"))
    compiled = max((traces[m].get("compile_calls", 0) for m in traces), default=0)
    if compiled:
        checks.append(Check("torch.compile", INFO, f"disabled in the runs (the script calls it {compiled}×): "
                                                   "results and speed are eager mode"))

    deprecated = [w for w in amp.get("warnings", {}) if "deprecated" in w.lower() and "amp" in w.lower()]
    if deprecated:
        checks.append(Check("warnings", WARN, f"the rewrite still warns: {deprecated[0][:160]}"))
    return _finish(checks, metrics)


def _timed(values: list[float]) -> list[float]:
    return values[1:] if len(values) > 2 else values  # the first step pays for warm-up


def _median(values: list[float]) -> Optional[float]:
    values = _timed(values)
    return statistics.median(values) if values else None


def _finish(checks: list[Check], metrics: dict) -> Verdict:
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        return Verdict(EXIT_FAIL, checks, "FAIL: " + "; ".join(f"{c.name}: {c.detail}" for c in failed), metrics)
    return Verdict(EXIT_PASS, checks, "PASS", metrics)
