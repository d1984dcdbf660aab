#!/usr/bin/env python3
"""Evaluate ampfix on the labelled dev corpus (../shared/corpus/dev-labels.json).

    python bench/corpus_eval.py --checkouts /path/to/checkouts [--labels FILE] [--codes AMP1]
    python bench/corpus_eval.py --checkouts DIR --extract-from /work/.mirror   # build DIR first

A checkout of ``owner/name`` at commit C lives in ``DIR/owner+name@C[:10]`` (``--extract-from``
writes the Python files of each pinned commit there from git mirrors ``MIRRORS/owner+name/repo``).

Figures printed:
- labels: each positive label must fire with its code at a line in [line, end_line]; each
  ``!CODE`` label must not see CODE there;
- hard cases: no diagnostic in the range beyond what a positive label expects, and no fix
  offered there for the compat-fallback kinds;
- history pairs: the label's rule fires on the buggy commit and is silent on the fixed one;
- stability: ``--apply --unsafe-fixes`` output of every labelled file parses and a second run
  changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import ast
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ampfix  # noqa: E402
from ampfix.engine import FixError  # noqa: E402
from ampfix.settings import Settings  # noqa: E402
from ampfix.source import SourceError, read_source  # noqa: E402

HISTORY_CODES = {"CLIP_BEFORE_UNSCALE": "AMP201", "ACCUM_NO_DIVISION": "AMP301"}
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LABELS = os.path.join(HERE, "..", "..", "shared", "corpus", "dev-labels.json")


def checkout_dir(root: str, repo: str, commit: str) -> str:
    return os.path.join(root, f"{repo.replace('/', '+')}@{commit[:10]}")


def git_dir(mirrors: str, repo: str) -> str:
    """The git directory of a snapshot: ``MIRRORS/owner+name/repo``, bare or with a ``.git`` work tree."""
    folder = os.path.join(mirrors, repo.replace("/", "+"), "repo")
    return os.path.join(folder, ".git") if os.path.isdir(os.path.join(folder, ".git")) else folder


def extract(root: str, mirrors: str, labels: dict) -> None:
    pairs = set(labels["repos"].items())
    for pair in labels.get("history_pairs", []):
        pairs.add((pair["repo"], pair["buggy_commit"]))
        pairs.add((pair["repo"], pair["fixed_commit"]))
    for repo, commit in sorted(pairs):
        out = checkout_dir(root, repo, commit)
        if not os.path.isdir(out):
            extract_one(git_dir(mirrors, repo), commit, out)


def extract_one(git: str, commit: str, out: str) -> None:
    """Write the Python, notebook and TOML blobs of ``commit`` under ``out`` (built aside, then renamed)."""
    listing = subprocess.run(["git", "--git-dir", git, "ls-tree", "-r", "-z", commit], capture_output=True, check=True)
    wanted = []
    for entry in listing.stdout.split(b"\0"):
        if not entry:
            continue
        meta, path = entry.split(b"\t", 1)
        _mode, kind, sha = meta.split()
        if kind == b"blob" and path.decode().endswith((".py", ".pyi", ".ipynb", ".toml")):
            wanted.append((sha, path.decode()))
    partial = out + ".part"
    shutil.rmtree(partial, ignore_errors=True)
    # one `cat-file --batch` for all blobs: a process per file took minutes on the large repositories
    batch = subprocess.run(["git", "--git-dir", git, "cat-file", "--batch"], capture_output=True, check=True,
                           input=b"".join(sha + b"\n" for sha, _ in wanted)).stdout
    offset = 0
    for sha, name in wanted:
        end = batch.index(b"\n", offset)
        header = batch[offset:end].split()
        offset = end + 1
        if header[-1] == b"missing":  # absent from the snapshot (a large file or LFS content)
            continue
        size = int(header[2])
        blob, offset = batch[offset:offset + size], offset + size + 1
        target = os.path.join(partial, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(blob)
    os.makedirs(partial, exist_ok=True)
    os.replace(partial, out)


class Corpus:
    def __init__(self, root: str, settings: Settings):
        self.root = root
        self.settings = settings
        self._cache: dict[str, list] = {}

    def located(self, repo: str, commit: str, path: str) -> tuple[str, Settings]:
        """The file where it lies in its checkout, and settings rooted there: as a user's
        `ampfix check` sees it (facts from the project's other modules, such as yolov5's loss
        class in utils/loss.py, need the file's real path)."""
        root = checkout_dir(self.root, repo, commit)
        if self.settings.project_root != root:
            self.settings = dataclasses.replace(self.settings, project_root=root)
        return os.path.join(root, path), self.settings

    def diagnostics(self, repo: str, commit: str, path: str):
        full, settings = self.located(repo, commit, path)
        if full not in self._cache:
            try:
                text = read_source(full).text
            except (SourceError, FileNotFoundError) as exc:
                raise SystemExit(f"missing checkout file {full}: {exc}")
            self._cache[full] = ampfix.check_source(text, full, settings)
        return self._cache[full]


# The rules each kind of hard case is a trap for (the labels predate rules that ask other
# questions about the same lines: AMP305 asks whether a DDP model all-reduces every micro-batch of
# yolov5's accumulation, which is no trap of "not dividing by design"). A kind not listed is a
# trap for every rule.
_TRAP_RULES = {
    "accumulation without loss division by design": ("AMP301", "AMP302", "AMP303", "AMP304"),
}


def in_range(diag, first: int, last: int) -> bool:
    return first <= diag.location.row <= last


def evaluate(root: str, labels: dict, prefixes: tuple[str, ...], verbose: bool) -> int:
    settings = Settings()
    corpus = Corpus(root, settings)
    failures = 0
    counts = defaultdict(lambda: [0, 0])  # code -> [passed, total]
    positives = defaultdict(list)
    for label in labels["labels"]:
        code = label["code"].lstrip("!")
        if not code.startswith(prefixes):
            continue
        diags = corpus.diagnostics(label["repo"], label["commit"], label["path"])
        hits = [d for d in diags if d.code == code and in_range(d, label["line"], label["end_line"])]
        negative = label["code"].startswith("!")
        ok = not hits if negative else bool(hits)
        if not negative:
            positives[(label["repo"], label["path"])].append((code, label["line"], label["end_line"]))
        counts[label["code"]][1] += 1
        counts[label["code"]][0] += ok
        if not ok:
            failures += 1
            if verbose:
                what = "fired at a !label" if negative else "missed"
                print(f"  FAIL {label['code']} {what}: {label['repo']} {label['path']}:{label['line']}-{label['end_line']}")
    print("labels (passed/total):")
    for code in sorted(counts):
        passed, total = counts[code]
        print(f"  {code:<8} {passed}/{total}")

    hard_ok = hard_total = 0
    for case in labels.get("hard_cases", []):
        diags = corpus.diagnostics(case["repo"], case["commit"], case["path"])
        expected = positives[(case["repo"], case["path"])]
        fired, elsewhere = [], []
        for d in diags:
            if not d.code.startswith(prefixes) or not in_range(d, case["line"], case["end_line"]):
                continue
            if not d.code.startswith(_TRAP_RULES.get(case["kind"], ("AMP",))):
                elsewhere.append(d)  # another rule's question about these lines (not this trap's)
                continue
            labelled = any(code == d.code and lo <= d.location.row <= hi for code, lo, hi in expected)
            if not labelled or ("compat" in case["kind"] or "fallback" in case["kind"]) and d.fix is not None:
                fired.append(d)
        hard_total += 1
        hard_ok += not fired
        if fired and verbose:
            print(f"  HARD CASE fired ({case['kind']}): {case['repo']} {case['path']}:{case['line']} -> "
                  + ", ".join(f"{d.code}@{d.location.row}{' (fix)' if d.fix else ''}" for d in fired))
        if elsewhere and verbose:
            print(f"  (in the range of that hard case, other rules: {case['repo']} {case['path']}:{case['line']} -> "
                  + ", ".join(f"{d.code}@{d.location.row}" for d in elsewhere) + ")")
    print(f"hard cases silent: {hard_ok}/{hard_total}")
    failures += hard_total - hard_ok

    pairs_ok = pairs_total = 0
    for pair in labels.get("history_pairs", []):
        code = HISTORY_CODES.get(pair["label"], pair["label"])
        if not code.startswith(prefixes):
            continue
        pairs_total += 1
        buggy = corpus.diagnostics(pair["repo"], pair["buggy_commit"], pair["path"])
        fixed = corpus.diagnostics(pair["repo"], pair["fixed_commit"], pair["path"])
        fires = any(d.code == code and in_range(d, pair["line"] - 3, pair["end_line"] + 3) for d in buggy)
        silent = not any(d.code == code for d in fixed)
        pairs_ok += fires and silent
        if verbose and not (fires and silent):
            print(f"  HISTORY {pair['repo']} {pair['path']}: fires on buggy={fires}, silent on fixed={silent}")
    print(f"history pairs (fires on buggy, silent on fixed): {pairs_ok}/{pairs_total}")
    failures += pairs_total - pairs_ok

    files = sorted({(l["repo"], l["commit"], l["path"]) for l in labels["labels"]})
    unsound = 0
    for repo, commit, path in files:
        where, rooted = corpus.located(repo, commit, path)
        text = read_source(where).text
        full = [(d.code, d.start) for d in ampfix.check_source(text, where, rooted, prefilter=False)]
        if full != [(d.code, d.start) for d in corpus.diagnostics(repo, commit, path)]:
            unsound += 1
            print(f"  PREFILTER UNSOUND: {repo} {path}")
    print(f"prefilter sound on labelled files (same diagnostics with and without it): {len(files) - unsound}/{len(files)}")
    failures += unsound
    stable = broken = 0
    for repo, commit, path in files:
        where, rooted = corpus.located(repo, commit, path)
        text = read_source(where).text
        try:
            once = ampfix.fix_source(text, where, rooted, unsafe_fixes=True)
            ast.parse(once.source)
            twice = ampfix.fix_source(once.source, where, rooted, unsafe_fixes=True)
        except (FixError, SyntaxError) as exc:
            broken += 1
            print(f"  UNSTABLE {repo} {path}: {exc}")
            continue
        if twice.source == once.source and not twice.fixed:
            stable += 1
        else:
            broken += 1
            print(f"  NOT IDEMPOTENT {repo} {path}")
    print(f"labelled files fixed, parseable and stable under a second run: {stable}/{stable + broken}")
    failures += broken
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkouts", required=True)
    parser.add_argument("--labels", default=DEFAULT_LABELS)
    parser.add_argument("--codes", default="AMP", help="comma-separated code prefixes to evaluate")
    parser.add_argument("--extract-from", help="directory of git mirrors to build --checkouts from")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    with open(args.labels, encoding="utf-8") as handle:
        labels = json.load(handle)
    if args.extract_from:
        extract(args.checkouts, args.extract_from, labels)
    failures = evaluate(args.checkouts, labels, tuple(args.codes.split(",")), not args.quiet)
    print(f"failures: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
