"""From three traces (original, AMP rewrite, fp32 reference) to a verdict.

Order, as ../shared/reference/verifier-notes.md §5 suggests: a run that errored or stopped at a
different step count; protocol events in the rewrite; non-finite losses and skipped steps;
the low-precision FLOP fraction; agreement with the fp32 reference; behaviour against the
original, with each intended change predicted and measured; then speed and memory, which
only inform.

Steps are grouped in phases, one per training loop that stepped an optimizer (an fp32
baseline loop, then an AMP loop, is two phases); each phase is compared with the same phase of
the other runs. Training is judged by the parameters' updates (w_t - w_0), tensor by tensor,
against the size of the fp32 update; the loss is the evidence where there are no parameters,
and a loss that jumps at one step while the updates agree is reported, not failed.
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
    "step_after_unscale": "optimizer.step() after scaler.unscale_(): the step bypasses scaler.step, so a step "
                          "with inf/NaN gradients is not skipped (call scaler.step(optimizer))",
    "discarded_scaled_loss": "backward of an unscaled loss while a scaled one was discarded",
    "update_before_step": "scaler.update() before any optimizer step",
    "update_without_step": "scaler.update() without a scaler.step() since the last one (update per micro-batch?)",
}

# Rounding unit of each dtype.
_EPSILON = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float32": 2.0 ** -23}
# Agreement asked of the AMP run's updates with the fp32 reference's, relative to the fp32
# update: 10 rounding units of the dtype, at least 0.06. Measured on CPU over 20 steps (MLP,
# CNN + BatchNorm, Transformer; SGD and Adam): correct bfloat16 and float16 runs differ by at
# most 2.8e-2 (Adam turns rounding noise into +-lr steps, whatever the dtype); clipping or
# clamping still-scaled gradients by 0.12 to 1.0.
_UPDATE_FLOOR = 0.06
# Same precision (the original against the rewrite that must train as it did): deterministic
# runs agree to the bit; 1e-4 leaves room for reordered float32 sums, a 2% learning-rate change
# is 200x more.
SAME_PRECISION = 1e-4
# Loss agreement with the fp32 reference (secondary evidence): correct AMP runs were within
# 4.7e-4 over 20 steps (notes §4); the tolerance grows by half over every 20 steps.
_LOSS_RTOL = {"float16": 1e-3, "bfloat16": 2e-3}
# Accumulated gradients divided by the factor: the ratio measured within this (the rewrite's
# loss scale changes float16 rounding in the backward by far less).
_PREDICTION_RTOL = 1e-2
_UPDATE_RESOLUTION = 2.0 ** -17  # below this share of the weights' norm an update is rounding


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


def update_tolerance(dtype: str, override: Optional[float] = None) -> float:
    """Relative agreement asked of the AMP run's per-tensor updates with the fp32 ones."""
    if override is not None:
        return override
    return max(10 * _EPSILON.get(dtype, _EPSILON["float16"]), _UPDATE_FLOOR)


def loss_tolerance(dtype: str, step: int, override: Optional[float] = None) -> float:
    """Relative agreement asked of step ``step``'s (0-based, within its phase) loss."""
    if override is not None:
        return override
    return _LOSS_RTOL.get(dtype, _LOSS_RTOL["float16"]) * (1 + step / 40)


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


def _relative(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return abs(a - b) / max(abs(b), 1e-12)


def update_difference(a: Optional[dict], b: Optional[dict]) -> Optional[tuple[float, int]]:
    """How far run a's update since the phase began is from run b's, relative to b's, tensor by
    tensor: sqrt(sum_i (|du_a,i| - |du_b,i|)^2) / |du_b| (a lower bound of |du_a - du_b| / |du_b|),
    with the tensor that differs most. An fp32 update smaller than the weights' rounding counts
    as that rounding. None without per-tensor digests of the same tensors."""
    if not a or not b or "updates" not in a or "updates" not in b or len(a["updates"]) != len(b["updates"]):
        return None
    pairs = list(zip(a["updates"], b["updates"]))
    if not all(math.isfinite(x) and math.isfinite(y) for x, y in pairs):
        return (math.inf, 0) if all(math.isfinite(y) for _, y in pairs) else None
    scale = max(math.sqrt(sum(y * y for _, y in pairs)), _UPDATE_RESOLUTION * b.get("norm", 0.0), 1e-30)
    gaps = [abs(x - y) for x, y in pairs]
    return math.sqrt(sum(g * g for g in gaps)) / scale, max(range(len(gaps)), key=gaps.__getitem__)


def _update_ratio(a: Optional[dict], b: Optional[dict]) -> Optional[float]:
    if not a or not b or not b.get("update"):
        return None
    return a.get("update", 0.0) / b["update"]


def _gradient(step: dict) -> Optional[float]:
    grads = step.get("grad") or []
    return math.sqrt(sum(g * g for g in grads)) if grads and all(math.isfinite(g) for g in grads) else None


def low_precision_fraction(trace_or_phase: dict) -> Optional[float]:
    flops = trace_or_phase.get("flops") or {}
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


def phases(trace: dict) -> list[dict]:
    """The trace's phases, each with the indices (into ``steps``) of its recorded steps."""
    found = [dict(p, indices=[]) for p in trace.get("phases") or []]
    for index, step in enumerate(trace.get("steps", [])):
        number = step.get("phase", 0)
        while len(found) <= number:
            found.append({"key": "?", "steps": 0, "through": 0, "autocast_entered": 0, "flops": {},
                          "scalers_stepped": 0, "indices": []})
        found[number]["indices"].append(index)
    return [p for p in found if p["indices"]]


def _phase_name(phase: dict, number: int, count: int) -> str:
    return f"phase {number + 1} (loop at {phase.get('key', '?')})" if count > 1 else ""


def warm_up(trace: dict, phase: dict) -> list[int]:
    """The leading steps of a phase that the scaler skipped while its scale was still falling:
    a warm-up, not a failure (GPU float16 scalers start at 65536 and back off)."""
    steps = trace.get("steps", [])
    out = []
    for index in phase["indices"]:
        if not steps[index].get("skipped"):
            break
        out.append(index)
    return out


def evaluate(traces: dict[str, dict], applied: list[str], steps: int, tolerance: Optional[float] = None,
             against: bool = False) -> Verdict:
    runner = traces.get("_runner") or {}
    traces = {m: t for m, t in traces.items() if not m.startswith("_")}
    original = traces["original"]
    cannot = runner.get("cannot_verify")
    if cannot:
        return Verdict(EXIT_CANNOT_RUN, [Check("device", FAIL, cannot)], f"cannot verify on this device: {cannot}")
    early = _could_not_run(original, steps)
    if early is not None:
        return early
    checks: list[Check] = []
    if runner.get("shim_note"):
        checks.append(Check("device", INFO, runner["shim_note"]))
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
    groups = {m: phases(traces[m]) for m in traces}
    shape = {m: [len(p["indices"]) for p in groups[m]] for m in traces}
    count = len(groups["amp"])
    if len({tuple(s) for s in shape.values()}) != 1:
        checks.append(Check("runs", FAIL, f"training steps per phase differ: {shape}"))
        return _finish(checks, {})
    through = original.get("through_steps", 0)
    ran_through = f" ({through} more step(s) ran through, unrecorded, to reach the next phase)" if through else ""
    if count > 1:
        per = ", ".join(f"{len(p['indices'])} in the loop at {p['key']}" for p in groups["amp"])
        checks.append(Check("runs", PASS, f"original, AMP and fp32 runs each took {count} phases of training steps: "
                                          f"{per}{ran_through}"))
    else:
        checks.append(Check("runs", PASS, f"original, AMP and fp32 runs each took {shape['amp'][0]} training steps"))

    checks.append(_protocol(original, amp, groups["amp"]))
    metrics: dict = {"phases": [{"key": p["key"], "steps": len(p["indices"])} for p in groups["amp"]]}
    low_checks, amp_phases = _low_precision(amp, fp32, original, groups, metrics, applied, against)
    checks += low_checks
    dtype = metrics["dtype"]
    fp32_check, compared, agreement = _trains_like_fp32(amp, fp32, groups["amp"], dtype, tolerance, metrics)
    checks.append(fp32_check)
    checks += _behaviour(original, amp, fp32, groups["amp"], applied, against, runner, agreement, metrics)
    checks += _speed(traces, amp, fp32, metrics, runner)
    if not any(c.status == FAIL for c in checks) and compared == 0:
        summary = ("every step the AMP run took was a scaler warm-up skip (or had no loss or parameters): nothing "
                   f"trained to compare; rerun with more --steps (more than {steps})")
        return Verdict(EXIT_CANNOT_RUN, checks + [Check("evidence", FAIL, summary)], summary, metrics)
    metrics["compared_steps"] = compared
    verdict = _finish(checks, metrics)
    if verdict.exit_code == EXIT_PASS:
        where = f" in {count} phases, {len(amp_phases)} of them measured in low precision" if count > 1 else ""
        verdict.summary = f"PASS (rests on {compared} non-skipped step(s) compared{where})"
        if metrics.get("amp_phases") == []:
            # nanoGPT with --device=cpu: its autocast is a nullcontext there and the scaler is off
            verdict.summary += (": no step ran in low precision on this device, so only the float32 behaviour of "
                                "the fixes was verified")
    return verdict


def _could_not_run(original: dict, steps: int) -> Optional[Verdict]:
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
    if ran == 0 and original.get("forked_trainers"):
        summary = (f"the original trains in {original['forked_trainers']} forked child process(es) "
                   "(multiprocessing with the fork start method), which verify cannot follow: nothing was seen to "
                   "verify (with the spawn start method, or mp.spawn, their steps are verified)")
        return Verdict(EXIT_CANNOT_RUN, [Check("runs", FAIL, summary)], summary)
    if ran == 0:
        summary = "the original took no optimizer step (is this a training script?)"
        return Verdict(EXIT_CANNOT_RUN, [Check("runs", FAIL, summary)], summary)
    # --steps is per phase; short phases (loops the script ends early) count together
    if ran < steps:
        summary = (f"only {ran} of the {steps} steps asked for ran before the original ended: too few to verify "
                   f"(lower --steps, or give the script more data)")
        return Verdict(EXIT_CANNOT_RUN, [Check("runs", FAIL, summary)], summary)
    return None


def _protocol(original: dict, amp: dict, amp_phases: list[dict]) -> Check:
    problems = []
    for event, text in PROTOCOL_EVENTS.items():
        count = amp.get("events", {}).get(event, 0)
        if count:
            problems.append(f"{count}× {text}")
    recreated = {site: n for site, n in amp.get("scaler_sites", {}).items() if n > 1}
    if recreated:
        site, n = max(recreated.items(), key=lambda kv: kv[1])
        problems.append(f"a GradScaler is created {n}× at {site} (per step or epoch: the scale never grows)")
    steps = amp.get("steps", [])
    scaled = [p for p in amp_phases if p.get("scalers_stepped")]  # phases that step through a scaler
    bad_updates = [i for p in scaled for i in p["indices"] if steps[i].get("updates", 0) != 1]
    if bad_updates:
        problems.append(f"scaler.update() not exactly once per step at steps {bad_updates[:5]}")
    backwards_amp = [s.get("backwards", 0) for s in steps]
    backwards_original = [s.get("backwards", 0) for s in original.get("steps", [])]
    if backwards_amp != backwards_original[: len(backwards_amp)]:
        problems.append(f"backward calls per step {backwards_amp[:6]} differ from the original's {backwards_original[:6]}")
    if problems:
        return Check("scaler protocol", FAIL, "; ".join(problems))
    factor = statistics.mode(backwards_amp) if backwards_amp else 0
    per_step = statistics.mode([s.get("optimizer_steps", 1) for s in steps] or [1])
    created = amp.get("scalers_created", 0)
    scalers = f"{created} scaler(s) created once, one update per step" if created else "no GradScaler"
    return Check("scaler protocol", PASS,
                 f"no clipping or stepping on scaled gradients, {scalers}, {per_step} optimizer step(s) "
                 f"and {factor} backward(s) per step as in the original")


def _low_precision(amp: dict, fp32: dict, original: dict, groups: dict, metrics: dict, applied: list[str],
                   against: bool) -> tuple[list[Check], list[int]]:
    """Per phase: the share of matmul/conv FLOPs in low precision. A phase that stays float32
    where the original's did too (a baseline loop) is not a failure; no phase in low precision is."""
    fraction = low_precision_fraction(amp)
    dtype = amp_dtype(amp)
    metrics.update(low_precision_fraction=fraction, fp32_low_precision_fraction=low_precision_fraction(fp32),
                   dtype=dtype)
    count = len(groups["amp"])
    if fraction is None:
        return [Check("low precision", WARN, "no matmul/convolution seen in the measured window")], list(range(count))
    amp_phases, fp32_phases, uncovered = [], [], []
    for number, phase in enumerate(groups["amp"]):
        share = low_precision_fraction(phase)
        if share is None:
            continue
        if share >= 0.5:
            amp_phases.append(number)
        elif phase.get("autocast_entered"):
            uncovered.append((number, share))
        else:
            before = groups["original"][number] if number < len(groups["original"]) else {}
            if (low_precision_fraction(before) or 0) >= 0.5:
                uncovered.append((number, share))  # the original ran this loop in low precision
            else:
                fp32_phases.append(number)
    metrics["amp_phases"] = amp_phases
    checks = []
    # a rewrite of your own claims AMP unless it is known as fixes (ampfix's own, or the bug
    # findings it mends) that keep the original's precision
    claims_amp = (against and not applied) or "AMP501" in applied or (low_precision_fraction(original) or 0) > 0 or bool(
        original.get("scalers_enabled") or original.get("autocast_entered"))
    if not amp_phases and not claims_amp:
        return [Check("low precision", INFO, "neither the original nor the rewrite runs in low precision: the fixes "
                                             f"verified ({', '.join(applied) or 'none'}) keep float32")], amp_phases
    if not amp_phases:
        detail = f"only {fraction:.1%} of matmul/conv FLOPs ran in low precision: "
        if amp.get("disabled_autocast"):
            devices = ", ".join(sorted(amp["disabled_autocast"]))
            detail += (f"the script's autocast is present but disabled on this device ({devices}; `enabled=` is false "
                       "here, as a rewrite for CUDA only sets it): rerun on a GPU, or with --cuda-shim")
        elif not amp.get("autocast_entered", 1):
            detail += "the rewrite never enters autocast"
        else:
            detail += "autocast does not cover the forward pass"
        return [Check("low precision", FAIL, detail)], amp_phases
    for number, share in uncovered:
        name = _phase_name(groups["amp"][number], number, count) or "the training loop"
        checks.append(Check("low precision", FAIL,
                            f"{name}: only {share:.1%} of matmul/conv FLOPs in low precision: autocast does not cover "
                            "the forward pass"))
    if not uncovered:
        reference = metrics["fp32_low_precision_fraction"] or 0
        if count > 1:
            parts = [f"{low_precision_fraction(groups['amp'][n]):.1%} of matmul/conv FLOPs in {dtype} in "
                     f"{_phase_name(groups['amp'][n], n, count)}" for n in amp_phases]
            parts += [f"{_phase_name(groups['amp'][n], n, count)} stays float32, as in the original" for n in fp32_phases]
            detail = "; ".join(parts)
        else:
            detail = f"{fraction:.1%} of matmul/conv FLOPs in {dtype}"
        checks.append(Check("low precision", PASS, f"{detail} (fp32 reference: {reference:.1%})"))
    return checks, amp_phases


def _trains_like_fp32(amp: dict, fp32: dict, amp_phases: list[dict], dtype: str, tolerance: Optional[float],
                      metrics: dict) -> tuple[Check, int, bool]:
    """Every recorded step, phase by phase: the per-tensor updates, then the loss. A step the
    AMP run's scaler skipped is skipped in the reference too, so later steps still line up."""
    amp_losses, fp32_losses = step_losses(amp), step_losses(fp32)
    amp_params, fp32_params = step_params(amp), step_params(fp32)
    steps = amp.get("steps", [])
    limit = update_tolerance(dtype, tolerance)
    rows, outside, spikes, problems, compared, warmups, non_finite = [], [], [], [], 0, 0, []
    for number, phase in enumerate(amp_phases):
        warm = set(warm_up(amp, phase))
        warmups += len(warm)
        later_skips = [i for i in phase["indices"] if steps[i].get("skipped") and i not in warm]
        allowed = max(2, len(phase["indices"]) // 10)
        if len(later_skips) > allowed:
            problems.append(f"{len(later_skips)} steps skipped after the scaler's warm-up ({later_skips[:6]}): "
                            f"overflow in training itself (at most {allowed} allowed)")
        for local, i in enumerate(phase["indices"]):
            skipped = bool(steps[i].get("skipped"))
            loss_delta = _relative(amp_losses[i], fp32_losses[i])
            difference = update_difference(amp_params[i], fp32_params[i])
            drift = difference[0] if difference else None
            loss_limit = loss_tolerance(dtype, local, tolerance)
            if not skipped:
                a, r = amp_losses[i], fp32_losses[i]
                if a is not None and r is not None and not math.isfinite(a) and math.isfinite(r):
                    non_finite.append(i)
                if loss_delta is not None or drift is not None:
                    compared += 1
                if drift is not None and drift > limit:
                    names = phase.get("tensors") or []
                    outside.append((i, drift, names[difference[1]] if difference[1] < len(names) else f"#{difference[1]}"))
                elif loss_delta is not None and loss_delta > loss_limit:
                    (spikes if drift is not None else outside).append((i, loss_delta, None))
            rows.append({"step": i, "phase": number, "amp_loss": amp_losses[i], "fp32_loss": fp32_losses[i],
                         "relative": loss_delta, "drift": drift, "tolerance": limit, "loss_tolerance": loss_limit,
                         "scale": steps[i].get("scale"), "skipped": skipped, "warm_up": i in warm})
    if non_finite:
        problems.append(f"non-finite AMP loss at steps {non_finite[:5]} where fp32 is finite")
    scales = amp.get("scale_history", [])
    if scales and min(scales) < 1:
        problems.append(f"the loss scale fell to {min(scales):g} (< 1)")
    metrics["steps"] = rows
    judged = [r for r in rows if not r["skipped"]]
    worst = max((r["relative"] for r in judged if r["relative"] is not None), default=0.0)
    worst_drift = max((r["drift"] for r in judged if r["drift"] is not None), default=0.0)
    metrics["max_relative_loss_delta"], metrics["max_update_difference"] = worst, worst_drift
    rule = "--tolerance" if tolerance is not None else f"updates within {limit:.2g} of the fp32 update ({dtype})"
    if outside:
        i, value, tensor = max(outside, key=lambda o: o[1])
        if tensor is not None:
            grown = _update_ratio(amp_params[i], fp32_params[i])
            size = f" (the AMP update is {grown:.3g}× the fp32 one)" if grown is not None else ""
            problems.append(f"the parameters' updates differ from the fp32 reference's by {value:.2e} of the fp32 update "
                            f"at step {i} (tolerance {limit:.2g}; most in {tensor}){size}, beyond at steps "
                            f"{[o[0] for o in outside][:5]}")
        else:
            problems.append(f"loss differs beyond the tolerance at steps {[o[0] for o in outside][:5]} (max relative "
                            f"{value:.2e}; no parameter digest to judge by)")
    if problems:
        return Check("trains like fp32", FAIL, "; ".join(problems)), compared, False
    if compared == 0:
        return Check("trains like fp32", WARN, "no step could be compared (every step skipped or without a scalar loss "
                                               "or parameters)"), 0, True
    notes = []
    if warmups:
        notes.append(f"{warmups} scaler warm-up skip(s) skipped in both")
    other = sum(1 for r in rows if r["skipped"] and not r["warm_up"])
    if other:
        notes.append(f"{other} later skip(s) skipped in both")
    if spikes:
        i, value, _ = max(spikes, key=lambda s: s[1])
        notes.append(f"the loss jumps by {value:.2e} at step {i} (over its {rows[i]['loss_tolerance']:.1e} tolerance) while "
                     "the updates agree: judged by the parameters")
    detail = (f"{compared} steps compared: updates within {worst_drift:.2e} of the fp32 update per tensor, loss within "
              f"{worst:.2e} relative (tolerance: {rule})" + "".join(f"; {n}" for n in notes))
    return Check("trains like fp32", WARN if spikes else PASS, detail), compared, True


def _behaviour(original: dict, amp: dict, fp32: dict, amp_phases: list[dict], applied: list[str], against: bool,
               runner: dict, agreement: bool, metrics: dict) -> list[Check]:
    """The run of the original's precision must train as the original did, unless a fix
    changes training on purpose; then its predicted effect is measured. Compared up to the
    first replayed skip when the original is float32 (the reference skips where AMP did)."""
    original_phases = phases(original)
    worst, worst_at, what, compared_steps, shortened = 0.0, None, "", [], False
    before_losses = step_losses(original)
    same_runs = []
    for number, phase in enumerate(amp_phases):
        before = original_phases[number] if number < len(original_phases) else phase
        in_low_precision = bool(before.get("scalers_stepped") or before.get("autocast_entered")
                                or (low_precision_fraction(before) or 0) > 0)
        same = amp if in_low_precision else fp32
        same_runs.append(same)
        indices = phase["indices"]
        if not in_low_precision:  # the reference skips where AMP did, the float32 original does not
            first_skip = next((k for k, i in enumerate(indices) if amp["steps"][i].get("skipped")), None)
            if first_skip is not None:
                indices, shortened = indices[:first_skip], True
        after_losses = step_losses(same)
        for i in indices:
            candidates = [
                ("loss", _relative(after_losses[i], before_losses[i])),
                ("gradients", _relative(_gradient(same["steps"][i]), _gradient(original["steps"][i]))),
            ]
            difference = update_difference(same["steps"][i].get("params"), original["steps"][i].get("params"))
            if difference is not None:
                candidates.append(("updates", difference[0]))
            for name, value in candidates:
                if value is not None and value > worst:
                    worst, worst_at, what = value, i, name
            compared_steps.append((i, after_losses[i], before_losses[i]))
    labels = {id(amp): "the AMP run", id(fp32): "the fp32 reference"}
    kinds = {labels[id(r)] for r in same_runs}
    label = " and ".join(sorted(kinds)) if kinds else "the fp32 reference"
    horizon = len(compared_steps)
    within = f" over {horizon} steps (up to the first skipped one)" if shortened else ""
    losses_match = all((a is None) == (b is None) for _, a, b in compared_steps)
    exercised, idle = _exercised(applied, runner)
    intended = [c for c in applied if c in BEHAVIOUR_CHANGING and c in exercised]
    checks = []
    if idle:
        lines = "; ".join(f"{code} (line {_spans(rows)})" for code, rows in idle.items())
        checks.append(Check("fixes", INFO, f"not exercised by this run: {lines} never ran with these arguments"))
    if horizon == 0:
        checks.append(Check("behaviour vs original", WARN, "the first step was skipped: nothing to compare with the original"))
        return checks
    if losses_match and worst <= SAME_PRECISION:
        note = f"; {', '.join(intended)} changed nothing measurable in this run" if intended else ""
        checks.append(Check("behaviour vs original", PASS,
                            f"{label} trains as the original did{within}: losses, gradients and per-tensor updates "
                            f"within {worst:.1e} relative{note}"))
        return checks
    metrics["behaviour_change"] = worst
    at = f" ({what} at step {worst_at})" if worst_at is not None else ""
    if not intended:
        who = "the rewrite" if against else "behaviour-keeping fixes"
        extra = " (the behaviour-changing fixes applied never ran)" if any(c in BEHAVIOUR_CHANGING for c in idle) else ""
        checks.append(Check("behaviour vs original", FAIL,
                            f"{label} differs from the original by up to {worst:.2e} relative{at}{within}, but {who} "
                            f"should train identically{extra}"))
        return checks
    predictions = _predictions(intended, original, amp, fp32, same_runs[0], metrics)
    failed = [p for p in predictions if p.status == FAIL]
    if not agreement and not failed:
        failed = [Check("behaviour vs original", FAIL,
                        f"changed on purpose by {', '.join(intended)}, but the changed training does not match its own "
                        "fp32 reference (see above): the change is not the intended one")]
    reasons = "; ".join(f"{c}: {BEHAVIOUR_CHANGING[c]}" for c in intended)
    checks += predictions
    if not failed:
        checks.append(Check("behaviour vs original", INFO,
                            f"changed on purpose by {reasons}; differs by up to {worst:.2e} relative{at}, as the "
                            "fixes predict (see the checks above)"))
    elif not any(c.name == "behaviour vs original" for c in failed):
        checks.append(Check("behaviour vs original", FAIL,
                            f"differs by up to {worst:.2e} relative{at}, not as {', '.join(intended)} predict"))
    else:
        checks += failed
    return checks


def _spans(rows: list[int]) -> str:
    """1, 5, 6, 7 -> '1, 5-7'."""
    spans: list[list[int]] = []
    for row in rows:
        if spans and row == spans[-1][1] + 1:
            spans[-1][1] = row
        else:
            spans.append([row, row])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)


def _exercised(applied: list[str], runner: dict) -> tuple[set, dict]:
    """Fixes whose lines ran in the original run, and those whose lines never did (with the
    lines). A fix whose lines were not watched counts as exercised."""
    watched = runner.get("watched") or {}
    ran = runner.get("ran_lines") or {}
    exercised, idle = set(), {}
    for code in applied:
        places = watched.get(code)
        if not places:
            exercised.add(code)
            continue
        if any(row in set(ran.get(path, [])) for path, row in places):
            exercised.add(code)
        else:
            idle[code] = sorted({row for _, row in places})
    return exercised, idle


def _predictions(intended: list[str], original: dict, amp: dict, fp32: dict, same: dict, metrics: dict) -> list[Check]:
    """Each behaviour-changing fix's expected effect, measured. A fix combined with another
    that changes the same quantity (division and accumulation) is judged by the fp32 reference."""
    checks = []
    steps_same, steps_before = same.get("steps", []), original.get("steps", [])
    first = next((i for i, s in enumerate(steps_same) if not s.get("skipped")), None)
    if "AMP301" in intended and "AMP303" not in intended and first is not None:
        factor = statistics.mode([s.get("backwards", 1) for s in steps_same] or [1])
        after, before = _gradient(steps_same[first]), _gradient(steps_before[first])
        if after is not None and before:
            ratio = after / before
            metrics["amp301_gradient_ratio"] = ratio
            expected = 1 / factor
            if abs(ratio / expected - 1) <= _PREDICTION_RTOL:
                checks.append(Check("AMP301 prediction", PASS,
                                    f"the first step's gradients are the original's / {factor} (the accumulation factor), "
                                    f"as predicted: measured ratio {ratio:.4g}"))
            else:
                how = "divided more than" if ratio < expected else "divided less than (or not by)"
                checks.append(Check("AMP301 prediction", FAIL,
                                    f"AMP301 predicts the first step's gradients = the original's / {factor} (ratio "
                                    f"{expected:.4g}); measured {ratio:.4g}: the loss is {how} the accumulation factor"))
    if "AMP201" in intended:
        pairs = [(a["clip"][0], r["clip"][0]) for a, r in zip(amp.get("steps", []), fp32.get("steps", []))
                 if a.get("clip") and r.get("clip") and not a.get("skipped")]
        if pairs:
            clipped, reference = pairs[0]
            ratio = clipped / reference if reference else math.inf
            metrics["amp201_clip_ratio"] = ratio
            if abs(ratio - 1) <= _UPDATE_FLOOR:
                checks.append(Check("AMP201 prediction", PASS,
                                    f"the clip acts on unscaled norms, as predicted: the norm it clips ({clipped:.4g}) is "
                                    f"the fp32 reference's ({reference:.4g})"))
            else:
                checks.append(Check("AMP201 prediction", FAIL,
                                    f"AMP201 predicts the clip acts on unscaled norms (the fp32 reference's {reference:.4g}); "
                                    f"it clipped a norm of {clipped:.4g} ({ratio:.3g}×)"))
    return checks


def _speed(traces: dict, amp: dict, fp32: dict, metrics: dict, runner: dict) -> list[Check]:
    checks = []
    amp_times, fp32_times = amp.get("step_times", []), fp32.get("step_times", [])
    amp_time, fp32_time = _median(amp_times), _median(fp32_times)
    memory_amp = amp.get("peak_cuda") or amp.get("peak_rss")
    memory_fp32 = fp32.get("peak_cuda") or fp32.get("peak_rss")
    low = (metrics.get("low_precision_fraction") or 0) >= 0.5
    if amp_time and fp32_time and low:
        metrics.update(step_time_amp=amp_time, step_time_fp32=fp32_time, speedup=fp32_time / amp_time)
        memory = f", peak memory {memory_amp / 2**20:.0f} vs {memory_fp32 / 2**20:.0f} MiB" if memory_amp and memory_fp32 else ""
        samples = min(len(_timed(amp_times)), len(_timed(fp32_times)))
        where = " (on the CPU under the CUDA shim: not a GPU figure)" if runner.get("shim") else ""
        checks.append(Check("speed", INFO, f"step time {amp_time * 1e3:.2f} ms AMP vs {fp32_time * 1e3:.2f} ms fp32 "
                                           f"({fp32_time / amp_time:.2f}× speed-up, median of {samples} steps){memory}{where}"))
    compiled = max((traces[m].get("compile_calls", 0) for m in traces), default=0)
    if compiled:
        checks.append(Check("torch.compile", INFO, f"disabled in the runs (the script calls it {compiled}×): "
                                                   "results and speed are eager mode"))
    for note in amp.get("shim_notes") or []:
        checks.append(Check("device", INFO, note))
    deprecated = [w for w in amp.get("warnings", {}) if "deprecated" in w.lower() and "amp" in w.lower()]
    if deprecated:
        checks.append(Check("warnings", WARN, f"the rewrite still warns: {deprecated[0][:160]}"))
    return checks


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
