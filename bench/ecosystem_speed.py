#!/usr/bin/env python3
"""Check time on the ecosystem's checkouts, one ampfix version against another (issue 19: a
change of the model must keep ``check`` on the whole ecosystem within 1.3x of the time before).

    python bench/ecosystem_speed.py --code before=/tmp/wt-111e6c9 --code after=/work/main [--rounds 1]

Every checkout of ``bench/ecosystem.py``'s list (``--checkouts``, default /work/eco/checkouts,
built by ``ecosystem.py --extract-from``) is checked cold (``--no-cache``) as the ecosystem check
runs it (all rules, preview and AMP501 included; a version from before the tiers runs every
rule without ``--preview``), by each ``--code`` checkout in turn, the order
alternating from one repository to the next so that a drift of the machine's load falls on both.
Printed: the total wall time and CPU time (user+sys of the process tree) of each version, and
the ratio of each version to the first. CPU time is the figure to judge by on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from corpus_eval import checkout_dir  # noqa: E402
from ecosystem import DEFAULT_CHECKOUTS, ECOSYSTEM  # noqa: E402
from warm_path import timed  # noqa: E402


def _has_preview(checkout: str) -> bool:
    with open(os.path.join(checkout, "ampfix", "cli.py"), encoding="utf-8") as handle:
        return '"--preview/--no-preview"' in handle.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", action="append", required=True, help="LABEL=CHECKOUT of ampfix (two or more)")
    parser.add_argument("--checkouts", default=DEFAULT_CHECKOUTS)
    parser.add_argument("--rounds", type=int, default=1, help="passes over the whole ecosystem")
    parser.add_argument("--slowest", type=int, default=10, help="list the checkouts where the last version spends most CPU")
    args = parser.parse_args()
    codes = [c.split("=", 1) for c in args.code]
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    envs = {label: dict(plain, PYTHONPATH=os.path.abspath(path)) for label, path in codes}
    command = [sys.executable, "-m", "ampfix", "check", ".", "--isolated", "--no-cache", "--unsafe-fixes",
               "--extend-select", "AMP501", "--quiet", "--exit-zero"]
    # versions from before the rule tiers (no --preview) ran every rule by default
    commands = {label: command + ["--preview"] * _has_preview(path) for label, path in codes}
    folders = [checkout_dir(args.checkouts, repo, commit) for repo, (commit, _domain) in sorted(ECOSYSTEM.items())]
    missing = [f for f in folders if not os.path.isdir(f)]
    if missing:
        sys.exit(f"{len(missing)} checkouts missing (first: {missing[0]}): build them with ecosystem.py --extract-from")
    wall = {label: 0.0 for label, _ in codes}
    cpu = {label: 0.0 for label, _ in codes}
    per_folder: dict[str, dict[str, float]] = {folder: {label: 0.0 for label, _ in codes} for folder in folders}
    for round_ in range(args.rounds):
        for index, folder in enumerate(folders):
            order = codes if (index + round_) % 2 == 0 else codes[::-1]
            for label, _path in order:
                w, c = timed(commands[label], folder, envs[label])
                wall[label] += w
                cpu[label] += c
                per_folder[folder][label] += c
    first = codes[0][0]
    print(f"{len(folders)} checkouts, {args.rounds} round(s)")
    print(f"{'version':<12} {'wall s':>9} {'CPU s':>9}  wall ratio  CPU ratio")
    for label, _ in codes:
        print(f"{label:<12} {wall[label]:9.1f} {cpu[label]:9.1f}  {wall[label] / wall[first]:9.2f}x  {cpu[label] / cpu[first]:8.2f}x")
    last = codes[-1][0]
    print(f"the {args.slowest} checkouts where {last} spends most CPU (s): " + "  ".join(codes[i][0] for i in range(len(codes))))
    for folder in sorted(folders, key=lambda f: -per_folder[f][last])[:args.slowest]:
        print(f"  {os.path.basename(folder):<60} " + "  ".join(f"{per_folder[folder][label]:7.2f}" for label, _ in codes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
