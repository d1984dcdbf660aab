"""Very large files: time and peak memory of `ampfix check` and `--apply` on generated code.

    python bench/large_file.py [--workdir /tmp/ampfix-large] [--steps 44486] [--fixes 20000]

Writes (1) a 12 MB file of training-step functions on the current API (nothing to report),
(2) the same file on the deprecated `torch.cuda.amp.autocast` (one finding per function), and
(3) a file of ``--fixes`` deprecated `GradScaler()` calls, then runs ampfix on each in a fresh
process (`--no-cache`) and prints wall time and peak RSS (the child's ``ru_maxrss``).
Figures are kept in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

STEP = '''def train_{n}(model, loader, optimizer, scaler):
    for x, y in loader:
        optimizer.zero_grad()
        with {autocast}:
            loss = model(x).sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

'''


def write_steps(path: str, count: int, autocast: str) -> None:
    with open(path, "w") as handle:
        handle.write("import torch\n\n")
        for n in range(count):
            handle.write(STEP.format(n=n, autocast=autocast))


def write_scalers(path: str, count: int) -> None:
    with open(path, "w") as handle:
        handle.write("import torch\n")
        handle.writelines(f"scaler_{n} = torch.cuda.amp.GradScaler()\n" for n in range(count))


_MEASURED = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stdout + done.stderr)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def measure(args: list[str], cwd: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, last line of output) of one ampfix run in a fresh process,
    started by a wrapper of its own so that the peak is that run's alone."""
    command = [sys.executable, "-c", _MEASURED, sys.executable, "-m", "ampfix", *args, "--no-cache"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    code, peak_kb = done.stdout.split()
    if int(code) not in (0, 1):
        raise SystemExit(f"ampfix {' '.join(args)} failed ({code}): {done.stderr.strip()}")
    lines = done.stderr.strip().splitlines()
    return seconds, int(peak_kb) / 1024, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/ampfix-large")
    parser.add_argument("--steps", type=int, default=44_486, help="functions in the 12 MB files")
    parser.add_argument("--fixes", type=int, default=20_000)
    options = parser.parse_args()
    os.makedirs(options.workdir, exist_ok=True)
    work = options.workdir
    write_scalers(os.path.join(work, "scalers.py"), options.fixes)
    write_steps(os.path.join(work, "modern.py"), options.steps, 'torch.autocast("cuda")')
    write_steps(os.path.join(work, "deprecated.py"), options.steps, "torch.cuda.amp.autocast()")
    shutil.copy(os.path.join(work, "scalers.py"), os.path.join(work, "scalers_fix.py"))
    shutil.copy(os.path.join(work, "deprecated.py"), os.path.join(work, "deprecated_fix.py"))
    runs = [
        (f"{options.fixes:,} fixes, check", ["check", "scalers.py", "--statistics"]),
        (f"{options.fixes:,} fixes, --apply", ["check", "scalers_fix.py", "--apply"]),
        ("12 MB, nothing to report", ["check", "modern.py"]),
        ("12 MB, a finding per function", ["check", "deprecated.py", "--statistics"]),
        ("12 MB, --apply", ["check", "deprecated_fix.py", "--apply"]),
    ]
    for name in ("modern.py", "deprecated.py"):
        print(f"{name}: {os.path.getsize(os.path.join(work, name)) / 1e6:.1f} MB")
    for label, args in runs:
        seconds, peak, last = measure(args, work)
        print(f"{label:32} {seconds:6.2f} s  {peak:7.0f} MB peak  ({last})")
    with open(os.path.join(work, "deprecated_fix.py")) as fixed, open(os.path.join(work, "modern.py")) as modern:
        print("12 MB --apply result equals the modern file:", fixed.read() == modern.read())


if __name__ == "__main__":
    main()
