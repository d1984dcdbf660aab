#!/usr/bin/env python3
"""One fixability decision, measured on real code: every fix that ``check`` offers (``[*]``, JSON
``fix``) is applied by ``--apply --unsafe-fixes``, and the fixed tree parses and has no finding
the original did not have.

    python bench/apply_check.py [--half dev|scoring|all] [--checkouts DIR] [--repo OWNER/NAME ...]

Each checkout of the ecosystem list (bench/ecosystem.py) is copied to a temporary folder, checked
(JSON, every rule), fixed in place, then checked again. Printed per repository when something
is off, and in total: fixes offered, fixes applied, findings created by the fixes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from corpus_eval import checkout_dir  # noqa: E402
from ecosystem import DEFAULT_CHECKOUTS, ECOSYSTEM, half_of  # noqa: E402

RULES = ("--preview", "--extend-select", "AMP501")


def run(folder: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, "..") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "ampfix", "check", ".", "--isolated", "--no-cache", "--unsafe-fixes", *RULES, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=folder, env=env)


def findings(folder: str) -> list[dict]:
    done = run(folder, "--output-format", "json", "--exit-zero", "--quiet")
    return json.loads(done.stdout or "[]")


def where(record: dict) -> tuple:
    return record["code"], os.path.relpath(record["filename"]), record.get("cell")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half", choices=("dev", "scoring", "all"), default="all")
    parser.add_argument("--checkouts", default=DEFAULT_CHECKOUTS)
    parser.add_argument("--repo", action="append", help="only these repositories of the list (repeatable)")
    args = parser.parse_args()
    totals = Counter()
    for repo, (commit, _domain) in sorted(ECOSYSTEM.items()):
        if args.half != "all" and half_of(repo) != args.half or args.repo and repo not in args.repo:
            continue
        source = checkout_dir(args.checkouts, repo, commit)
        with tempfile.TemporaryDirectory() as scratch:
            folder = os.path.join(scratch, "repo")
            shutil.copytree(source, folder, symlinks=True)
            cwd = os.getcwd()
            os.chdir(folder)
            try:
                before = findings(folder)
                offered = [r for r in before if r["fix"] is not None and r["fix"]["applicability"] != "display-only"]
                applied = run(folder, "--apply", "--exit-zero", "--output-format", "json", "--quiet")
                after = findings(folder)
            finally:
                os.chdir(cwd)
        fixed = len(before) - len(after)
        # a finding of the fixed tree whose (code, file) had none before is work the fixes created
        had = Counter(where(r) for r in before)
        created = [r for r in after if Counter(where(x) for x in after)[where(r)] > had[where(r)]]
        errors = applied.returncode not in (0, 1) or "error" in applied.stderr
        totals.update(offered=len(offered), removed=fixed, created=len(created), errors=int(errors))
        if fixed < len(offered) or created or errors:
            print(f"{repo}: offered {len(offered)}, findings removed {fixed}, created {len(created)}"
                  + (f", error: {applied.stderr.strip()[:200]}" if errors else ""))
    print(f"[{args.half}] fixes offered {totals['offered']}, findings removed by --apply {totals['removed']}, "
          f"findings created {totals['created']}, runs with an error {totals['errors']}")
    return 1 if totals["created"] or totals["errors"] or totals["removed"] < totals["offered"] else 0


if __name__ == "__main__":
    sys.exit(main())
