"""The verified AMP rewrite of a matmul-heavy loop against its fp32 reference, on CUDA.

    python bench/verify_gpu.py [--steps 40] [--script bench/gpu/matmul_mlp.py]

Runs `ampfix verify --device cuda` on the script (AMP501 converts it to float16 autocast and a
GradScaler) and prints what the verifier measured: the verdict, step time of the AMP rewrite and
of its fp32 reference (median, with the number of steps behind it), the speed-up, peak CUDA
memory of both, and the share of matmul FLOPs that ran in low precision. Target: the rewrite
at least 2x faster than fp32 on an H100/H200. Needs a CUDA device (exit 2 without one); put the
figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--script", default=os.path.join(ROOT, "bench", "gpu", "matmul_mlp.py"))
    options = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("verify_gpu: no CUDA device on this machine", file=sys.stderr)
        return 2
    done = subprocess.run(
        [sys.executable, "-m", "ampfix", "verify", options.script, "--device", "cuda", "--steps", str(options.steps),
         "--format", "json"],
        capture_output=True, text=True, cwd=ROOT,
    )
    if not done.stdout.strip():
        print(done.stderr, file=sys.stderr)
        return 2
    report = json.loads(done.stdout)
    metrics, runs = report["metrics"], report["runs"]
    amp_ms, fp32_ms = metrics.get("step_time_amp"), metrics.get("step_time_fp32")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {options.steps} steps")
    print(f"verdict: {report['verdict']}")
    if amp_ms and fp32_ms:
        print(f"step time: AMP {amp_ms * 1e3:.2f} ms, fp32 {fp32_ms * 1e3:.2f} ms, speed-up {fp32_ms / amp_ms:.2f}x")
    for mode in ("amp", "fp32"):
        peak = runs.get(mode, {}).get("peak_cuda")
        if peak:
            print(f"peak CUDA memory, {mode}: {peak / 2**20:.0f} MiB")
    fraction = metrics.get("low_precision_fraction")
    if fraction is not None:
        print(f"low-precision matmul/conv FLOPs: {fraction:.1%} ({metrics.get('dtype')})")
    speed = next((c["detail"] for c in report["checks"] if c["name"] == "speed"), "")
    print(f"speed check: {speed}")
    return report["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
