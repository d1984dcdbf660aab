"""Printing a verification: a compact table for people, JSON for CI."""

from __future__ import annotations

import json
import math
from typing import Optional, TextIO

from ampfix.verify.checks import Verdict
from ampfix.verify.runner import Prepared, VerifyOptions

_MARK = {"pass": "pass", "fail": "FAIL", "warn": "warn", "info": "info"}


def write_text(out: TextIO, script: str, prepared: Prepared, options: VerifyOptions, verdict: Verdict,
               show_diff: bool = False, workdir: Optional[str] = None) -> None:
    ran = verdict.metrics.get("dtype") if verdict.metrics.get("low_precision_fraction") else None
    dtype = f"{ran} ran" if ran else (options.dtype if options.dtype != "auto" else "auto")
    out.write(f"ampfix verify {script}  (device {prepared.device}, dtype {dtype}, {options.steps} steps, "
              f"seed {options.seed}, {options.threads} thread(s)"
              f"{f', {options.nproc} processes (torchrun)' if options.nproc > 1 else ''}{', cuda shim' if options.cuda_shim else ''})\n")
    if options.against:
        ours = f" (the rewrite is ampfix's: {', '.join(prepared.applied)})" if prepared.applied else ""
        if prepared.mended:
            ours = f" (the rewrite mends the findings of {', '.join(prepared.mended)}: judged by their predictions)"
        out.write(f"comparing with the original {options.against}{ours}\n")
    else:
        modules = ", ".join(sorted(prepared.modules)) or "none"
        out.write(f"fixes applied: {', '.join(prepared.applied) if prepared.applied else 'none'} (in {modules})\n")
    if show_diff and prepared.diff:
        out.write(prepared.diff if prepared.diff.endswith("\n") else prepared.diff + "\n")
    rows = verdict.metrics.get("steps") or []
    phases = verdict.metrics.get("phases") or []
    if rows:
        out.write("  step   loss AMP    loss fp32   loss Δ     update Δ   tolerance  scale\n")
        shown = None
        for row in rows:
            if len(phases) > 1 and row.get("phase") != shown:
                shown = row.get("phase")
                phase = phases[shown]
                out.write(f"  -- phase {shown + 1}: the loop at {phase['key']} ({phase['steps']} steps)\n")
            mark = "  warm-up skip" if row.get("warm_up") else ("  skipped" if row["skipped"] else "")
            out.write(f"  {row['step']:>4}   {_number(row['amp_loss']):>9}   {_number(row['fp32_loss']):>9}   "
                      f"{_small(row['relative']):>8}   {_small(row['drift']):>8}   {_small(row['tolerance']):>8}   "
                      f"{_number(row['scale']):>6}{mark}\n")
    width = max((len(c.name) for c in verdict.checks), default=10)
    for check in verdict.checks:
        out.write(f"  {check.name:<{width}}  {_MARK[check.status]:<4}  {check.detail}\n")
    if workdir:
        out.write(f"work folder kept: {workdir}\n")
    out.write(f"verdict: {verdict.summary}\n")


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.5g}" if math.isfinite(value) else str(value)


def _small(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def write_json(out: TextIO, script: str, prepared: Prepared, options: VerifyOptions, verdict: Verdict,
               traces: dict) -> None:
    document = {
        "script": script,
        "against": options.against,
        "device": prepared.device,
        "dtype": options.dtype,
        "steps": options.steps,
        "applied": prepared.applied,
        "mended": prepared.mended,
        "exit_code": verdict.exit_code,
        "verdict": verdict.summary,
        "cuda_shim": options.cuda_shim,
        "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in verdict.checks],
        "metrics": verdict.metrics,
        "runs": {
            mode: {k: v for k, v in trace.items() if k in (
                "status", "error", "events", "scalers_created", "flops", "skipped", "scale_history",
                "warnings", "peak_rss", "peak_cuda", "wall", "ranks", "compile_calls", "phases", "through_steps",
                "shim_notes")}
            | {"losses": [s.get("criterion") or s.get("losses") for s in trace.get("steps", [])],
               "params": [s.get("params") for s in trace.get("steps", [])],
               "gradients": [s.get("grad") for s in trace.get("steps", [])]}
            for mode, trace in traces.items() if not mode.startswith("_")
        },
    }
    # strict JSON: a NaN or an infinite loss (a step with no scalar loss, an overflow) is null
    json.dump(_finite(document), out, indent=2, default=str, allow_nan=False)
    out.write("\n")


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_plot(path: str, script: str, verdict: Verdict, traces: dict) -> None:
    """Loss per step of the three runs, and the AMP run's loss scale (matplotlib, the `plot` extra)."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    from matplotlib import pyplot

    from ampfix.verify.checks import step_losses

    figure, (losses, scale) = pyplot.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[3, 1])
    for mode, style in (("original", ":"), ("fp32", "--"), ("amp", "-")):
        if mode in traces:
            values = step_losses(traces[mode])
            losses.plot(range(len(values)), [v if v is not None else float("nan") for v in values], style, label=mode)
    skipped = traces.get("amp", {}).get("skipped", [])
    for index in skipped:
        losses.axvline(index, color="grey", alpha=0.3)
    losses.set_ylabel("loss (criterion)")
    losses.set_title(f"ampfix verify {script}: {verdict.summary[:80]}")
    losses.legend()
    rows = verdict.metrics.get("steps") or []
    scales = [(r["step"], r["scale"]) for r in rows if r.get("scale")]
    if scales:
        scale.semilogy([s for s, _ in scales], [v for _, v in scales], "o-", base=2)
    scale.set_ylabel("loss scale")
    scale.set_xlabel("training step" + (f" (grey: {len(skipped)} skipped)" if skipped else ""))
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
