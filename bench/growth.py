#!/usr/bin/env python3
"""Growth in functions per file: `ampfix check` and `--apply` on one file of N training functions.

    python bench/growth.py                       # N = 300, 1200 (4N) and 3000
    python bench/growth.py --sizes 300 1200 --rounds 3 --workdir /tmp/ampfix-growth
    python bench/growth.py --kind clean          # current-API steps with nothing to report

With ``--kind findings`` (the default) each function is a small training loop of its own, with the same local names in all of them
(``scaler``, ``loss``: every same-named assignment of the module is a candidate wherever one is
looked up): a third on the deprecated ``torch.cuda.amp`` API with the scaler created per call
(AMP1xx fixes), a third on the current API with the scaler created inside the loop (AMP205, with
its hoisting fix), a third in fp32 (AMP501's candidates under ``--preview``, silent in a module that already
uses a scaler); every fifth function is called
from an epoch loop of a driver. With ``--kind clean`` each function is the training step of
bench/large_file.py on the current API, handed its scaler (nothing to report). ampfix runs in a fresh process (``--no-cache --isolated``, the
default selection plus ``--preview --extend-select AMP501``); ``--apply --unsafe-fixes`` on a copy.
Printed: the median wall and CPU time (user + sys of the ampfix process) per size, and
time(4N) / time(N) in CPU for each pair of sizes where one is four times the other (linear is 4;
the target is <= 5): CPU, since on a shared machine wall time measures the neighbours. Figures are kept in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

DEPRECATED = '''def train_{n}(model, loader, optimizer):
    scaler = torch.cuda.amp.GradScaler()
    for x, y in loader:
        optimizer.zero_grad()
        with torch.cuda.amp.autocast():
            loss = model(x).sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return scaler


'''

IN_LOOP = '''def fit_{n}(model, loader, optimizer, epochs):
    for epoch in range(epochs):
        scaler = torch.amp.GradScaler("cuda")
        for x, y in loader:
            optimizer.zero_grad()
            with torch.autocast("cuda"):
                loss = model(x).sum()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()


'''

FP32 = '''def step_{n}(model, loader, optimizer, device):
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()


'''

DRIVER = '''def main_{n}(model, loader, optimizer):
    for epoch in range(10):
        train_{n}(model, loader, optimizer)


'''

CLEAN = '''def train_{n}(model, loader, optimizer, scaler):
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda"):
            loss = model(x).sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


'''

COMMON = ["--no-cache", "--isolated", "--preview", "--extend-select", "AMP501"]


def write_functions(path: str, count: int, kind: str) -> None:
    templates = (DEPRECATED, IN_LOOP, FP32) if kind == "findings" else (CLEAN,)
    with open(path, "w") as handle:
        handle.write("import torch\n\n\n")
        for n in range(count):
            handle.write(templates[n % len(templates)].format(n=n))
            if kind == "findings" and n % 15 == 0:  # a DEPRECATED function (n % 3 == 0) called once per epoch
                handle.write(DRIVER.format(n=n))


def timed(args: list[str], cwd: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, last line of output) of one ampfix run in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ampfix", *args], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if done.returncode not in (0, 1):
        raise SystemExit(f"ampfix {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    lines = (done.stdout + done.stderr).strip().splitlines()
    return seconds, cpu, lines[-1] if lines else ""


def measure(work: str, count: int, kind: str, rounds: int) -> dict[str, tuple[float, float, str]]:
    source = os.path.join(work, f"{kind}_{count}.py")
    write_functions(source, count, kind)
    runs: dict[str, list] = {"check": [], "fix": []}
    for _ in range(rounds):
        runs["check"].append(timed(["check", source, *COMMON, "--statistics"], work))
        copy = os.path.join(work, f"{kind}_{count}_fix.py")
        shutil.copy(source, copy)
        runs["fix"].append(timed(["check", copy, *COMMON, "--fix", "--unsafe-fixes"], work))
    return {
        name: (statistics.median(r[0] for r in done), statistics.median(r[1] for r in done), done[-1][2])
        for name, done in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1200, 3000])
    parser.add_argument("--kind", choices=("findings", "clean"), default="findings")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workdir", default="/tmp/ampfix-growth")
    options = parser.parse_args()
    os.makedirs(options.workdir, exist_ok=True)
    table = {}
    for count in options.sizes:
        table[count] = measure(options.workdir, count, options.kind, options.rounds)
        for name, (wall, cpu, line) in table[count].items():
            print(f"N={count:<6} {name:<5} wall {wall:7.2f} s  cpu {cpu:7.2f} s   ({line})", flush=True)
    for small in options.sizes:
        if 4 * small in table:
            for name in ("check", "fix"):
                ratio = table[4 * small][name][1] / table[small][name][1]
                print(f"{name}: cpu(N={4 * small}) / cpu(N={small}) = {ratio:.2f} (target <= 5)")


if __name__ == "__main__":
    main()
