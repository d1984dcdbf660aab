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


def step_losses(trace: dict) -> list[float]:
    """One number per optimizer step: the mean of the losses backpropagated for it."""
    out = []
    for step in trace.get("steps", []):
        losses = [float(v) for v in step.get("losses", [])]
        out.append(sum(losses) / len(losses) if losses else float("nan"))
    return out


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


def evaluate(traces: dict[str, dict], applied: list[str], steps: int, tolerance: float,
             against: bool = False) -> Verdict:
    original, amp, fp32 = traces["original"], traces["amp"], traces["fp32"]
    checks: list[Check] = []

    # 1. could it run at all?
    if not _ran(original):
        reason = _error_tail(original)
        if "not compiled with CUDA" in reason or "CUDA" in reason and "available" in reason:
            summary = "the original needs CUDA and this machine has none: rerun on a GPU, or with --cuda-shim"
        elif original.get("status") == "timeout":
            summary = f"the original {original.get('error')}"
        else:
            summary = f"the original script failed: {reason}"
        return Verdict(EXIT_CANNOT_RUN, [Check("runs", FAIL, summary)], summary)
    broken = [m for m in ("amp", "fp32") if not _ran(traces[m])]
    if broken:
        detail = "; ".join(f"{m} run: {traces[m].get('error') if traces[m].get('status') == 'timeout' else _error_tail(traces[m])}" for m in broken)
        checks.append(Check("runs", FAIL, f"the rewrite does not run: {detail}"))
        seen = [f"{n}× {PROTOCOL_EVENTS.get(e, e)}" for e, n in amp.get("events", {}).items()]
        if seen:
            checks.append(Check("scaler protocol", FAIL, "; ".join(seen)))
        return _finish(checks, {})
    counts = {m: len(traces[m].get("steps", [])) for m in traces}
    if len(set(counts.values())) != 1:
        checks.append(Check("runs", FAIL, f"optimizer steps differ: {counts}"))
    elif counts["amp"] == 0:
        checks.append(Check("runs", FAIL, "no optimizer step was observed (is this a training script?)"))
        return _finish(checks, {})
    else:
        checks.append(Check("runs", PASS, f"original, AMP and fp32 runs each took {counts['amp']} optimizer steps"))

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
        bad_updates = [i for i, s in enumerate(amp.get("steps", [])) if s.get("updates", 0) != 1 and i < counts["amp"] - 0]
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
        checks.append(Check("scaler protocol", PASS,
                            f"no clipping or stepping on scaled gradients, {amp.get('scalers_created', 0)} scaler(s) created once, "
                            f"one update per step, {factor} backward(s) per step as in the original"))

    # 3. finite losses, skipped steps, scale
    amp_losses, fp32_losses = step_losses(amp), step_losses(fp32)
    bad = [i for i, (a, r) in enumerate(zip(amp_losses, fp32_losses)) if not math.isfinite(a) and math.isfinite(r)]
    skipped = amp.get("skipped", [])
    allowed = max(3, int(0.25 * counts["amp"]))
    numeric_problems = []
    if bad:
        numeric_problems.append(f"non-finite AMP loss at steps {bad[:5]} where fp32 is finite")
    if len(skipped) > allowed or any(i >= allowed for i in skipped):
        numeric_problems.append(f"{len(skipped)} skipped steps ({skipped[:6]}): more than the first {allowed}")
    scales = amp.get("scale_history", [])
    if scales and min(scales) < 1:
        numeric_problems.append(f"the loss scale fell to {min(scales):g} (< 1)")

    # 4. is low precision really used?
    fraction = low_precision_fraction(amp)
    reference_fraction = low_precision_fraction(fp32)
    metrics = {"low_precision_fraction": fraction, "fp32_low_precision_fraction": reference_fraction}
    if fraction is None:
        checks.append(Check("low precision", WARN, "no matmul/convolution seen in the measured window"))
    elif fraction < 0.5 and amp.get("disabled_autocast"):
        devices = ", ".join(sorted(amp["disabled_autocast"]))
        checks.append(Check("low precision", FAIL,
                            f"only {fraction:.1%} of matmul/conv FLOPs ran in low precision: the script's autocast is "
                            f"present but disabled on this device ({devices}; `enabled=` is false here, as a rewrite "
                            "for CUDA only sets it): rerun on a GPU, or with --cuda-shim"))
    elif fraction < 0.5:
        checks.append(Check("low precision", FAIL,
                            f"only {fraction:.1%} of matmul/conv FLOPs ran in low precision: autocast does not cover the forward pass"))
    else:
        dtype = max(((k, v) for k, v in amp["flops"].items() if "float16" in k), key=lambda kv: kv[1], default=("low precision", 0))[0]
        checks.append(Check("low precision", PASS,
                            f"{fraction:.1%} of matmul/conv FLOPs in {dtype.replace('torch.', '')} "
                            f"(fp32 reference: {(reference_fraction or 0):.1%})"))

    # 5. trains like its fp32 reference (up to the first skipped step: after a skip the AMP run
    # is one update behind, and batches no longer line up)
    window = min(20, len(amp_losses), len(fp32_losses), *(skipped[:1] or [20]))
    deltas = [
        abs(a - r) / max(abs(r), 1e-12) for a, r in zip(amp_losses[:window], fp32_losses[:window])
        if math.isfinite(a) and math.isfinite(r)
    ]
    outside = [
        i for i, (a, r) in enumerate(zip(amp_losses[:window], fp32_losses[:window]))
        if math.isfinite(a) and math.isfinite(r) and abs(a - r) > tolerance * abs(r) + 1e-4
    ]
    worst = max(deltas, default=0.0)
    metrics["max_relative_loss_delta"] = worst
    if window == 0 and not (numeric_problems or outside):
        checks.append(Check("trains like fp32", WARN, f"step {skipped[0] if skipped else 0} was skipped before any "
                                                       "step could be compared; observe more steps (--steps)"))
    elif numeric_problems or outside:
        detail = "; ".join(numeric_problems + ([f"loss differs beyond |Δ| ≤ {tolerance:g}·|loss| + 1e-4 at steps {outside[:5]} (max relative {worst:.2e})"] if outside else []))
        checks.append(Check("trains like fp32", FAIL, detail))
    else:
        checks.append(Check("trains like fp32", PASS,
                            f"max relative loss difference {worst:.2e} over {window} steps (tolerance {tolerance:g}), "
                            f"{len(skipped)} skipped step(s)"))

    # 6. behaviour against the original
    original_amp = bool(original.get("scalers_enabled")) or (low_precision_fraction(original) or 0) > 0
    same_precision = amp if original_amp else fp32
    label = "the AMP run" if original_amp else "the fp32 reference"
    before, after = step_losses(original), step_losses(same_precision)
    n = min(len(before), len(after))
    exact = before[:n] == after[:n]
    intended = [c for c in applied if c in BEHAVIOUR_CHANGING]
    if exact:
        checks.append(Check("behaviour vs original", PASS, f"{label} reproduces the original's losses exactly"))
    else:
        difference = max((abs(a - b) / max(abs(b), 1e-12) for a, b in zip(after[:n], before[:n])
                          if math.isfinite(a) and math.isfinite(b)), default=float("nan"))
        metrics["behaviour_change"] = difference
        if intended:
            reasons = "; ".join(f"{c}: {BEHAVIOUR_CHANGING[c]}" for c in intended)
            checks.append(Check("behaviour vs original", INFO,
                                f"changed on purpose by {reasons}; losses differ by up to {difference:.2e} relative"))
        else:
            what = "the rewrite" if against else "behaviour-keeping fixes"
            checks.append(Check("behaviour vs original", FAIL,
                                f"{label} differs from the original by up to {difference:.2e} relative, "
                                f"but {what} should train identically"))

    # 7. speed and memory (informative; meaningful on a GPU)
    amp_time, fp32_time = _median(amp.get("step_times", [])), _median(fp32.get("step_times", []))
    memory_amp = amp.get("peak_cuda") or amp.get("peak_rss")
    memory_fp32 = fp32.get("peak_cuda") or fp32.get("peak_rss")
    if amp_time and fp32_time:
        metrics.update(step_time_amp=amp_time, step_time_fp32=fp32_time, speedup=fp32_time / amp_time)
        memory = f", peak memory {memory_amp / 2**20:.0f} vs {memory_fp32 / 2**20:.0f} MiB" if memory_amp and memory_fp32 else ""
        checks.append(Check("speed", INFO, f"step time {amp_time * 1e3:.2f} ms AMP vs {fp32_time * 1e3:.2f} ms fp32 "
                                           f"({fp32_time / amp_time:.2f}× speed-up){memory}"))

    deprecated = [w for w in amp.get("warnings", {}) if "deprecated" in w.lower() and "amp" in w.lower()]
    if deprecated:
        checks.append(Check("warnings", WARN, f"the rewrite still warns: {deprecated[0][:160]}"))
    return _finish(checks, metrics)


def _median(values: list[float]) -> Optional[float]:
    values = values[1:] if len(values) > 2 else values  # the first step pays for warm-up
    return statistics.median(values) if values else None


def _finish(checks: list[Check], metrics: dict) -> Verdict:
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        return Verdict(EXIT_FAIL, checks, "FAIL: " + "; ".join(f"{c.name}: {c.detail}" for c in failed), metrics)
    return Verdict(EXIT_PASS, checks, "PASS", metrics)
