#!/usr/bin/env python3
"""Warm runs (every file a cache hit) and one-file runs, side by side with ruff, interleaved.

    python bench/warm_path.py TREE [--code LABEL=CHECKOUT ...] [--rounds 5] [--one-file PATH ...]

Each ``--code`` is an ampfix checkout run with ``PYTHONPATH`` set to it (default: this one), so a
before and an after are measured on the same tree in the same rounds. The cache is primed by one
cold run per checkout first (its time is printed, not a median); ruff is measured cold
(``--no-cache``) and warm. Medians of wall time; the ratio the target is stated in is ampfix warm
over ruff cold. TREE must be a copy you can write a ``.ampfix_cache/`` into.
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

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(command: list[str], cwd: str, env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds; CPU is user+sys of the command's process tree (robust to a loaded
    machine, where wall time mostly measures the other processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree")
    parser.add_argument("--code", action="append", default=[], help="LABEL=CHECKOUT (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one-file", action="append", default=[], help="a file of TREE to check alone")
    args = parser.parse_args()
    tree = os.path.abspath(args.tree)
    codes = [c.split("=", 1) for c in args.code] or [["ampfix", HERE]]
    ruff = shutil.which("ruff") or sys.exit("ruff is not installed: pip install ruff==0.17.6")
    commands: dict[str, tuple[list[str], dict]] = {}
    # compiled modules are cached (__pycache__) as they are on a user's machine; an environment
    # that forbids writing them would make every run pay ~0.6 s of compiling ampfix
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    commands["ruff --select F (cold)"] = ([ruff, "check", "--isolated", "--select", "F", "--no-cache", "-q", "."], plain)
    commands["ruff --select F (warm)"] = ([ruff, "check", "--isolated", "--select", "F", "-q", "."], plain)
    for label, checkout in codes:
        env = dict(plain, PYTHONPATH=os.path.abspath(checkout))
        ampfix = [sys.executable, "-m", "ampfix", "check", "--quiet", "--exit-zero"]
        shutil.rmtree(os.path.join(tree, ".ampfix_cache"), ignore_errors=True)
        wall, cpu = timed([*ampfix, "."], tree, env)
        print(f"{label}: cold run to prime the cache {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
        commands[f"{label} check (warm)"] = ([*ampfix, "."], env)
        for path in args.one_file:
            commands[f"{label} one file {os.path.basename(path)}"] = ([*ampfix, "--no-cache", path], env)
    for path in args.one_file:
        commands[f"ruff one file {os.path.basename(path)}"] = ([ruff, "check", "--isolated", "--no-cache", "-q", path], plain)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, (command, env) in commands.items():
            wall, cpu = timed(command, tree, env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    wall_of = {name: statistics.median(values) for name, values in walls.items()}
    cpu_of = {name: statistics.median(values) for name, values in cpus.items()}
    ruff = "ruff --select F (cold)"
    print(f"{'median of ' + str(args.rounds):<40} {'wall ms':>8} {'CPU ms':>8}  wall/ruff cold  CPU/ruff cold")
    for name in commands:
        print(f"{name:<40} {wall_of[name] * 1000:8.0f} {cpu_of[name] * 1000:8.0f}  {wall_of[name] / wall_of[ruff]:10.2f}x"
              f"  {cpu_of[name] / cpu_of[ruff]:10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
