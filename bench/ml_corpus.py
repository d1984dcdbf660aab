#!/usr/bin/env python3
"""The ML-checkout corpus of issue 23, side by side with ruff: cold, warm and one file.

    python bench/ml_corpus.py --mirrors /work/.mirror --corpus /tmp/ampfix-ml    # extract, then measure
    python bench/ml_corpus.py --corpus /tmp/ampfix-ml --rounds 7 --file-rounds 15

The corpus: the ``.py`` files of eleven ML repositories at pinned commits, extracted from bare git
snapshots (``MIRRORS/owner+name/repo``, as ``fetch github:owner/name`` brings them) into
``CORPUS/owner+name@commit[:10]``, outside the git tree (third-party code is never committed).
Every command runs on the same folder, interleaved, ``--rounds`` times; the table shows medians of
wall time and CPU time (user+sys of the process tree, from wait4), and the load average of the
shared machine is recorded around every round. Peak RSS is ru_maxrss, which Linux carries over
a fork from the benchmark's own process: a figure near that process's RSS (~26 MB) is its floor.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from corpus_eval import checkout_dir, git_dir  # noqa: E402
from speed import ampfix_command, measure  # noqa: E402

from ampfix.discovery import discover  # noqa: E402
from ampfix.engine import may_fire  # noqa: E402
from ampfix.settings import CliOverrides, FileConfig, build_settings  # noqa: E402

# owner/name -> the commit measured (the snapshot `fetch` brought on 2026-12-02)
REPOS = {
    "Lightning-AI/pytorch-lightning": "7f0c3436cd3f6ad3753125672024fc415cbcb414",
    "huggingface/diffusers": "58eb52c0803ea9af3abec60841c2a093bdf1f951",
    "facebookresearch/fairseq": "3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99",
    "microsoft/DeepSpeed": "38327e07f6cd39b63418f60cedd1651b0be3e7c3",
    "Project-MONAI/MONAI": "d388d1c6fec8cb3a0eebee5b5a0b9776ca59ca83",
    "huggingface/accelerate": "16cb6eb80dd9aa8b4df1a63ef57863e455d53b83",
    "huggingface/peft": "5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40",
    "pytorch/ignite": "de08e799cfb55a6cf4aa778575d6bad725385453",
    "pytorch/torchtune": "bd2a0fc7c31430972728494fa01aaeeb0ebf1ba1",
    "open-mmlab/mmengine": "254342938d9bde1775c39ea7d5181c5d294026c4",
    "huggingface/trl": "f2cd57710ae345ea6428ae95363267fcf38a3dc8",
}
# the one-file path: two training scripts, ignite's CIFAR-10 trainer (it uses torch.cuda.amp: the
# prefilter passes it) and accelerate's example trainer (no AMP API of the stable rules: rejected)
TRAINING_SCRIPTS = {
    "ignite trainer": ("pytorch/ignite", "examples/cifar10/main.py"),
    "accelerate trainer": ("huggingface/accelerate", "examples/nlp_example.py"),
}


def extract(corpus: str, mirrors: str) -> None:
    """Write the ``.py`` files of every pinned commit under ``corpus`` (one ``git archive`` each)."""
    for repo, commit in REPOS.items():
        out = checkout_dir(corpus, repo, commit)
        if not os.path.isdir(out):
            extract_python(git_dir(mirrors, repo), commit, out)


def extract_python(git: str, commit: str, out: str) -> None:
    """The regular ``.py`` files of ``commit`` (links left out), built aside, then renamed."""
    archive = subprocess.run(["git", "--git-dir", git, "archive", "--format=tar", commit, "--", ":(glob)**/*.py"],
                             capture_output=True, check=True).stdout
    partial = out + ".part"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(partial, members=[m for m in tar.getmembers() if m.isfile()], filter="data")
    os.makedirs(partial, exist_ok=True)
    os.replace(partial, out)


def default_settings():
    """The command line's settings with ``--isolated``: no configuration file, the stable rules
    (``Settings()`` would be every rule, preview ones included)."""
    return build_settings(FileConfig(), CliOverrides())


def checked_files(root: str) -> list[str]:
    """The files ``ampfix check ROOT`` checks (its discovery, default excludes applied; ruff's
    ``--show-files`` lists the same 8,051 here: both leave out mmengine's ``dist/`` package)."""
    return discover([root], default_settings()).files


def passing_prefilter(files: list[str]) -> list[str]:
    """The files the byte prefilter lets through under the default selection."""
    settings = default_settings()
    passing = []
    for path in files:
        with open(path, "rb") as handle:
            if may_fire(handle.read(), settings.enabled(path)):
                passing.append(path)
    return passing


def rejected_example(files: list[str], passing: set[str]) -> str:
    """A rejected file of ordinary size (the median size of the rejected files of 100-400 lines)."""
    sized = []
    for path in files:
        if path not in passing:
            with open(path, "rb") as handle:
                lines = handle.read().count(b"\n")
            if 100 <= lines <= 400:
                sized.append((lines, path))
    sized.sort()
    return sized[len(sized) // 2][1]


def ruff_command(ruff: str, *args: str) -> list[str]:
    return [ruff, "check", "--isolated", "--select", "F", "--exit-zero", "-q", *args]


def interleaved(commands: dict[str, tuple[list[str], str]], rounds: int, before: dict | None = None) -> dict:
    """Each command once per round, in order, ``rounds`` times: lists of measurements and load averages."""
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    loads = []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        for name, (command, cwd) in commands.items():
            if before and name in before:
                before[name]()
            runs[name].append(measure(command, cwd))
    loads.append(os.getloadavg()[0])
    return {"runs": runs, "loads": loads}


def table(title: str, result: dict, unit: float = 1.0, label: str = "s") -> dict:
    print(f"\n{title} (load average 1 min: {min(result['loads']):.1f}-{max(result['loads']):.1f})")
    print(f"{'command':<42}{'wall ' + label:>10}{'cpu ' + label:>10}{'rss MB':>8}{'rc':>4}")
    medians = {}
    for name, runs in result["runs"].items():
        wall = statistics.median(r["wall"] for r in runs) * unit
        cpu = statistics.median(r["cpu"] for r in runs) * unit
        rss = max(r["rss"] for r in runs) / 2**20
        medians[name] = (wall, cpu)
        codes = sorted({r["rc"] for r in runs})
        print(f"{name:<42}{wall:>10.3f}{cpu:>10.3f}{rss:>8.0f}{','.join(map(str, codes)):>4}")
    return medians


def ratio(medians: dict, top: str, bottom: str, target: str) -> None:
    wall = medians[top][0] / medians[bottom][0]
    cpu = medians[top][1] / medians[bottom][1]
    print(f"  {top} / {bottom}: wall {wall:.2f}x, cpu {cpu:.2f}x   (target {target})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="/tmp/ampfix-ml", help="folder the checkouts are extracted into")
    parser.add_argument("--mirrors", help="folder of git snapshots (owner+name/repo) to extract missing checkouts from")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds on the whole corpus")
    parser.add_argument("--file-rounds", type=int, default=15, help="interleaved rounds of the one-file path")
    args = parser.parse_args()
    if args.mirrors:
        extract(args.corpus, args.mirrors)
    missing = [repo for repo, commit in REPOS.items() if not os.path.isdir(checkout_dir(args.corpus, repo, commit))]
    if missing:
        raise SystemExit(f"no checkout of {', '.join(missing)} in {args.corpus}: extract them with --mirrors")
    ruff = shutil.which("ruff") or sys.exit("ruff is not installed")
    # byte-compiled ampfix, as an installed wheel is (this environment sets PYTHONDONTWRITEBYTECODE)
    package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ampfix")
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)

    corpus = args.corpus
    files = checked_files(corpus)
    passing = passing_prefilter(files)
    size = sum(os.path.getsize(path) for path in files)
    print(f"corpus {corpus}: {len(files)} .py files checked, {size / 2**20:.1f} MiB, {len(REPOS)} repositories")
    print(f"pass the prefilter (default selection): {len(passing)} ({100 * len(passing) / len(files):.1f}%)")

    cache = os.path.join(corpus, ".ampfix_cache")
    for stale in (cache, os.path.join(corpus, ".ruff_cache")):
        shutil.rmtree(stale, ignore_errors=True)
    # prime both caches, so that the warm rounds are cache hits from the first
    measure(ruff_command(ruff, "."), corpus)
    measure(ampfix_command("."), corpus)
    whole = interleaved({
        "ruff --select F cold": (ruff_command(ruff, "--no-cache", "."), corpus),
        "ampfix cold (--no-cache)": (ampfix_command("--no-cache", "."), corpus),
        "ampfix cold, writing the cache": (ampfix_command("."), corpus),
        "ruff --select F warm": (ruff_command(ruff, "."), corpus),
        "ampfix warm (cache hits)": (ampfix_command("."), corpus),
    }, args.rounds, before={"ampfix cold, writing the cache": lambda: shutil.rmtree(cache, ignore_errors=True)})
    medians = table(f"whole corpus, {args.rounds} interleaved rounds, medians", whole)
    ratio(medians, "ampfix cold (--no-cache)", "ruff --select F cold", "<= 2x")
    ratio(medians, "ampfix warm (cache hits)", "ruff --select F cold", "<= 0.3x")
    ratio(medians, "ampfix warm (cache hits)", "ruff --select F warm", "none")

    passing_set = set(passing)
    singles = {"rejected file": os.path.relpath(rejected_example(files, passing_set), corpus)}
    for name, (repo, relative) in TRAINING_SCRIPTS.items():
        singles[name] = os.path.relpath(os.path.join(checkout_dir(corpus, repo, REPOS[repo]), relative), corpus)
    print()
    for name, path in singles.items():
        print(f"one file, {name}: {path} (passes the prefilter: {os.path.join(corpus, path) in passing_set})")
    commands = {"python -c pass (the interpreter's floor)": ([sys.executable, "-c", "pass"], corpus)}
    for name, path in singles.items():
        commands[f"ruff {name}"] = (ruff_command(ruff, "--no-cache", path), corpus)
        commands[f"ampfix {name}"] = (ampfix_command("--no-cache", path), corpus)
    one = interleaved(commands, args.file_rounds)
    medians = table(f"one file, --no-cache, {args.file_rounds} interleaved rounds, medians", one, 1000.0, "ms")
    for name in singles:
        ratio(medians, f"ampfix {name}", f"ruff {name}", "ampfix <= 40 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
