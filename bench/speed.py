#!/usr/bin/env python3
"""Side-by-side speed benchmark: ampfix (cold, warm, 1% touched, --apply) against ruff and TorchFix.

    python bench/speed.py --workdir /tmp/ampfix-bench            # build the corpus, then measure
    python bench/speed.py --workdir DIR --rounds 5 --torchfix-files 60

The corpus is reproducible by anyone: pinned PyPI packages downloaded with pip (`--no-deps`) and
unpacked (their .py files only); no repository fetching. Every command runs on the same file
list, interleaved, `--rounds` times; the table shows medians of wall time, CPU time (user+sys of
the process tree), files/s and peak RSS, and the ratios the targets are stated in.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

PACKAGES = [
    "transformers==5.23.0",
    "ultralytics==8.4.190",
    "timm==1.0.31",
    "accelerate==1.15.0",
    "diffusers==0.42.1",
    "speechbrain==1.1.2",
    "yolov5==7.0.14",
    "fairseq==0.12.2",
    "mmengine==0.10.7",
]
TORCHFIX = "torchfix==0.7.0"


def build_corpus(workdir: str) -> str:
    corpus = os.path.join(workdir, "corpus")
    if os.path.isdir(corpus):
        return corpus
    downloads = os.path.join(workdir, "downloads")
    os.makedirs(downloads, exist_ok=True)
    staging = corpus + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    for spec in PACKAGES:
        name = spec.split("==")[0]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "-q",
                        "-d", downloads, spec], check=True)
        archive = _find_archive(downloads, name, spec.split("==")[1])
        _unpack_python(archive, os.path.join(staging, name))
    os.replace(staging, corpus)
    return corpus


def _find_archive(downloads: str, name: str, version: str) -> str:
    for path in glob.glob(os.path.join(downloads, "*")):
        base = os.path.basename(path).lower().replace("_", "-")
        if base.startswith(f"{name.lower()}-{version}"):
            return path
    raise SystemExit(f"no archive for {name} {version} in {downloads}")


def _unpack_python(archive: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    if archive.endswith(".whl") or archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if member.endswith(".py") and ".dist-info/" not in member:
                    zf.extract(member, target)
    else:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".py")]
            tf.extractall(target, members=members)


def corpus_files(corpus: str) -> list[str]:
    return sorted(glob.glob(os.path.join(corpus, "**", "*.py"), recursive=True))


def measure(command: list[str], cwd: str) -> dict:
    """Wall, CPU (the process and everything it waited for) and peak RSS of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024,
            "rc": process.returncode}


def ampfix_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ampfix", "check", "--isolated", "--exit-zero", "-q", "--output-format", "concise", *args]


def touch_one_percent(files: list[str], salt: int) -> None:
    for path in files[:: 100]:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"\n# ampfix bench touch {salt}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ampfix-bench"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--torchfix-files", type=int, default=60, help="size of TorchFix's subset")
    parser.add_argument("--no-torchfix", action="store_true")
    args = parser.parse_args()

    source = build_corpus(args.workdir)
    # Byte-compile ampfix as pip does when it installs the wheel (this environment sets
    # PYTHONDONTWRITEBYTECODE, so a source checkout would otherwise compile itself on every start).
    package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ampfix")
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)
    work = os.path.join(args.workdir, "work")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    files = corpus_files(work)
    lines = sum(1 for path in files for _ in open(path, "rb"))
    print(f"corpus: {len(files)} files, {lines} lines ({', '.join(PACKAGES)})")
    ruff = shutil.which("ruff") or sys.exit("ruff is not installed: pip install ruff")

    results: dict[str, list[dict]] = {}

    def record(name: str, command: list[str], cwd: str, before=None) -> None:
        if before:
            before()
        results.setdefault(name, []).append(measure(command, cwd))

    cache = os.path.join(work, ".ampfix_cache")
    for round_index in range(args.rounds):
        record("ruff --select F (cold)", [ruff, "check", "--isolated", "--select", "F", "--no-cache",
                                          "--exit-zero", "-q", "."], work)
        record("ampfix check (cold)", ampfix_command("."), work, lambda: shutil.rmtree(cache, ignore_errors=True))
        record("ampfix check (warm)", ampfix_command("."), work)
        record("ampfix check (1% touched)", ampfix_command("."), work,
               lambda r=round_index: touch_one_percent(corpus_files(work), r))
        copy = os.path.join(args.workdir, "apply-copy")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy)
        record("ampfix --apply --unsafe-fixes (copy)", ampfix_command("--apply", "--unsafe-fixes", "--no-cache", "."), copy)

    # linear growth: 25 / 50 / 100 % of the corpus, cold, one round each after the main loop
    scaling = {}
    for share in (25, 50, 100):
        subset_dir = os.path.join(args.workdir, f"share-{share}")
        shutil.rmtree(subset_dir, ignore_errors=True)
        for path in files[: len(files) * share // 100]:
            target = os.path.join(subset_dir, os.path.relpath(path, work))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
        runs = [measure(ampfix_command("--no-cache", "."), subset_dir) for _ in range(3)]
        scaling[share] = statistics.median(r["wall"] for r in runs)

    # one file growing: 2,000 then 20,000 functions that each fire (every stage works on each)
    block = "def f{i}(model, x):\n    with torch.cuda.amp.autocast():\n        return model(x)\n\n"
    file_growth = {}
    for functions in (2_000, 20_000):
        big_dir = os.path.join(args.workdir, f"big-{functions}")
        os.makedirs(big_dir, exist_ok=True)
        with open(os.path.join(big_dir, "big.py"), "w", encoding="utf-8") as handle:
            handle.write("import torch\n" + "".join(block.format(i=i) for i in range(functions)))
        runs = [measure(ampfix_command("--no-cache", "big.py"), big_dir) for _ in range(3)]
        file_growth[functions] = statistics.median(r["wall"] for r in runs)

    # --jobs 1 and --jobs 2 give identical output
    outputs = [
        subprocess.run(ampfix_command("--no-cache", "--jobs", jobs, "."), cwd=work, capture_output=True, text=True).stdout
        for jobs in ("1", "2")
    ]

    print(f"\n{'command':<40}{'wall s':>9}{'cpu s':>9}{'files/s':>10}{'peak RSS MB':>13}")
    medians = {}
    for name, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        rss = max(r["rss"] for r in runs)
        medians[name] = wall
        print(f"{name:<40}{wall:>9.3f}{cpu:>9.3f}{len(files) / wall:>10.0f}{rss / 2**20:>13.0f}")
    ruff_wall = medians["ruff --select F (cold)"]
    print("\nratios (medians of the same interleaved rounds):")
    print(f"  ampfix cold / ruff cold        {medians['ampfix check (cold)'] / ruff_wall:6.2f}   (target <= 3)")
    print(f"  ampfix warm / ruff cold        {medians['ampfix check (warm)'] / ruff_wall:6.2f}   (target <= 1)")
    print(f"  ampfix 1% touched / ruff cold  {medians['ampfix check (1% touched)'] / ruff_wall:6.2f}   (target <= 1.5)")
    print(f"scaling (cold, wall s): 25% {scaling[25]:.3f}, 50% {scaling[50]:.3f}, 100% {scaling[100]:.3f}")
    print(f"one file, 2,000 -> 20,000 firing functions (wall s): {file_growth[2_000]:.3f} -> "
          f"{file_growth[20_000]:.3f} ({file_growth[20_000] / file_growth[2_000]:.1f}x for 10x the input)")
    print(f"--jobs 1 and --jobs 2 outputs identical: {outputs[0] == outputs[1]} ({len(outputs[0].splitlines())} lines)")

    if not args.no_torchfix:
        venv = os.path.join(args.workdir, "torchfix-venv")
        if not os.path.exists(os.path.join(venv, "bin", "torchfix")):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", TORCHFIX], check=True)
        # the subset: files with torch code, where TorchFix does its work
        subset = [p for p in files if b"torch" in open(p, "rb").read()][: args.torchfix_files]
        tf_runs = [measure([os.path.join(venv, "bin", "torchfix"), *subset], work) for _ in range(min(3, args.rounds))]
        af_runs = [measure(ampfix_command("--no-cache", "--jobs", "2", *subset), work) for _ in range(min(3, args.rounds))]
        tf, af = statistics.median(r["wall"] for r in tf_runs), statistics.median(r["wall"] for r in af_runs)
        print(f"\nTorchFix 0.7.0 on {len(subset)} torch files: {tf:.2f} s ({len(subset) / tf:.1f} files/s); "
              f"ampfix cold on the same files: {af:.3f} s; torchfix/ampfix {tf / af:.0f}x (target >= 50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
