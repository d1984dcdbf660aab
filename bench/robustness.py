#!/usr/bin/env python3
"""Robustness on real trees: zero crashes, every fix parseable and stable, nothing else touched.

    python bench/robustness.py DIR [DIR ...]

For each DIR (a checkout, the dev corpus, the benchmark corpus of bench/speed.py), on a copy:
1. `ampfix check` through the API on every .py/.pyi/.ipynb file: count crashes (exceptions), and
   diagnostics that a run without the byte prefilter finds but the prefiltered run misses (the
   prefilter must be sound; AMP001 is left out: syntax errors are reported only in files that
   the prefilter lets through, by design);
2. `ampfix check --apply --unsafe-fixes --no-cache` through the CLI on the copy;
3. every changed file must `compile()`, a second `--apply --unsafe-fixes` must change nothing,
   every file that ampfix did not report a fix for must be byte-identical to the original, and
   no fixed file may have more findings of a loop rule than before (fix closure).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ampfix  # noqa: E402
from ampfix.engine import FixError  # noqa: E402
from ampfix.notebook import Notebook  # noqa: E402
from ampfix.source import SourceError, read_source  # noqa: E402

SUFFIXES = (".py", ".pyi", ".ipynb")


def files_under(root: str) -> list[str]:
    out = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", ".ampfix_cache")]
        out.extend(os.path.join(directory, n) for n in names if n.endswith(SUFFIXES))
    return sorted(out)


def _keys(diagnostics) -> set:
    return {(d.code, d.start) for d in diagnostics if d.code != "AMP001"}


def evaluate(root: str) -> dict:
    counts = {"files": 0, "crashes": 0, "unreadable": 0, "fix_errors": 0, "prefilter_misses": 0}
    for path in files_under(root):
        counts["files"] += 1
        try:
            text = read_source(path).text
            if path.endswith(".ipynb"):
                text = Notebook.parse(text).program
            found = _keys(ampfix.check_source(text, path))
            missed = _keys(ampfix.check_source(text, path, prefilter=False)) - found
            if missed:
                counts["prefilter_misses"] += len(missed)
                print(f"  PREFILTER MISSED: {path}: {sorted(missed)}")
            ampfix.fix_source(text, path, unsafe_fixes=True)
        except SourceError:
            counts["unreadable"] += 1
        except FixError as exc:
            counts["fix_errors"] += 1
            print(f"  fix error: {path}: {exc}")
        except Exception:  # noqa: BLE001 - a crash is what we count
            counts["crashes"] += 1
            print(f"  CRASH: {path}\n{traceback.format_exc(limit=4)}")

    with tempfile.TemporaryDirectory() as scratch:
        copy = os.path.join(scratch, "tree")
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".git", ".ampfix_cache"), symlinks=True)
        command = [sys.executable, "-m", "ampfix", "check", "--isolated", "--apply", "--unsafe-fixes",
                   "--no-cache", "-q", "--exit-zero", "--output-format", "concise", copy]
        subprocess.run(command, capture_output=True, text=True)
        changed, broken = [], 0
        for original in files_under(root):
            rewritten = os.path.join(copy, os.path.relpath(original, root))
            if filecmp.cmp(original, rewritten, shallow=False):
                continue
            changed.append(rewritten)
            try:
                text = read_source(rewritten).text
                if rewritten.endswith(".ipynb"):
                    text = Notebook.parse(text).program
                compile(text, rewritten, "exec")
            except (SyntaxError, SourceError, ValueError) as exc:
                broken += 1
                print(f"  BROKEN OUTPUT: {rewritten}: {exc}")
        second = subprocess.run(command[:-1] + ["--diff", copy], capture_output=True, text=True)
        unstable = second.stdout.count("\n+++ ")
        # a file changed only if the first run reported a fix for it: anything else is a stray write
        report = subprocess.run(command[:3] + ["--isolated", "--no-cache", "--unsafe-fixes", "--exit-zero",
                                               "--output-format", "concise", root], capture_output=True, text=True)
        fixable = {line.split(":", 1)[0] for line in report.stdout.splitlines() if "[*]" in line}
        stray = [p for p in changed if os.path.join(root, os.path.relpath(p, copy)) not in fixable]
        gained = _files_gaining_loop_findings(root, copy)
    counts.update(changed=len(changed), broken=broken, unstable=unstable, stray=len(stray), gained=len(gained))
    for path in gained[:10]:
        print(f"  GAINED A LOOP FINDING: {path}")
    for path in stray[:10]:
        print(f"  STRAY WRITE: {path}")
    return counts


def _loop_findings(tree: str) -> dict:
    command = [sys.executable, "-m", "ampfix", "check", "--isolated", "--no-cache", "--exit-zero",
               "--output-format", "json", tree]
    records = json.loads(subprocess.run(command, capture_output=True, text=True, cwd=tree).stdout or "[]")
    found: dict = {}
    for record in records:
        if record["code"].startswith(("AMP2", "AMP3", "AMP4", "AMP5")):
            key = os.path.relpath(os.path.join(tree, record["filename"]), tree)
            found.setdefault(key, Counter())[record["code"]] += 1
    return found


def _files_gaining_loop_findings(root: str, copy: str) -> list[str]:
    """Fix closure: files whose fixed version has more findings of some loop rule."""
    before, after = _loop_findings(root), _loop_findings(copy)
    return sorted(
        path for path, counts in after.items()
        if any(n > before.get(path, Counter())[code] for code, n in counts.items())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+")
    args = parser.parse_args()
    total = {}
    for root in args.roots:
        counts = evaluate(os.path.abspath(root))
        print(f"{root}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
    print("total: " + ", ".join(f"{k} {v}" for k, v in total.items()))
    bad = sum(total.get(key, 0) for key in ("crashes", "prefilter_misses", "broken", "unstable", "stray"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
