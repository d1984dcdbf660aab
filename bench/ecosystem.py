#!/usr/bin/env python3
"""The ecosystem check: every loop finding (AMP2xx-AMP5xx) on real code, against a committed triage.

    python bench/ecosystem.py --checkouts DIR --extract-from /work/.mirror            # public repos
    python bench/ecosystem.py --dev --checkouts DIR --extract-from /work/.mirror      # the dev corpus
    python bench/ecosystem.py --checkouts DIR --write-new                              # add untriaged stubs

As ruff's ecosystem check guards its rule changes, this shows what a change does to code nobody
labelled in advance. The repositories are pinned below (``ECOSYSTEM``) or, with ``--dev``, taken
from ``../shared/corpus/dev-labels.json``; their Python files are extracted from local git mirrors
(``MIRRORS/owner+name/repo``) into ``DIR/owner+name@commit[:10]``; their code is never committed.

ampfix runs on each checkout as a user would (``ampfix check DIR``, all rules, unsafe fixes shown,
no project config), and every loop finding is compared with the triage file
(``bench/triage/ecosystem.json`` or ``bench/triage/dev.json``), one entry per finding:

    {"repo", "path", "line", "code", "verdict": "TP" | "FP", "fix": "ok" | "harmful" | "none",
     "reason": "one line, from reading the code and its callers"}

Printed: new findings (not triaged yet), removed ones (triaged, no longer found), findings whose
fix appeared or disappeared, and the precision (TP / triaged findings found now), with the number
of offered fixes triaged harmful. Dev-corpus findings that a positive label expects count as TP
without an entry. Exit 1 when a finding is untriaged, so a rule change cannot land unread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from corpus_eval import DEFAULT_LABELS, checkout_dir, extract  # noqa: E402

# Public repositories with hand-written training loops, not in the dev corpus, at pinned commits.
ECOSYSTEM = {
    "facebookresearch/ConvNeXt": "048efcea897d999aed302f2639b6270aedf8d4c8",
    "microsoft/Swin-Transformer": "f82860bfb5225915aca09c3227159ee9e1df874d",
    "facebookresearch/moco-v3": "c349e6e24f40d3fedb22d973f92defa4cedf37a7",
    "facebookresearch/dinov2": "b8931f7bf91576930313be2c6d6af376033b35f0",
    "mlfoundations/open_clip": "89fb801f1e6087880e951fc8354b8a2077b79c6d",
    "karpathy/llm.c": "f1e2ace651495b74ae22d45d1723443fd00ecd3a",
    "karpathy/build-nanogpt": "6104ab1b53920f6e2159749676073ff7d815c1fa",
    "openai/improved-diffusion": "1bc7bbbdc414d83d4abf2ad8cc1446dc36c4e4d5",
    "NVlabs/edm": "008a4e5316c8e3bfe61a62f874bddba254295afb",
    "facebookresearch/DiT": "ed81ce2229091fd4ecc9a223645f95cf379d582b",
    "kuangliu/pytorch-cifar": "49b7aa97b0c12fe0d4054e670403a16b6b834ddd",
    "facebookresearch/ijepa": "52c1ae95d05f743e000e8f10a1f3a79b10cff048",
    "jik876/hifi-gan": "4769534d45265d52a904b850da5a622601885777",
    "fundamentalvision/Deformable-DETR": "11169a60c33333af00a4849f1808023eba96a931",
    "facebookresearch/vicreg": "4e12602fd495af83efd1631fbe82523e6db092e0",
    "facebookresearch/barlowtwins": "8e8d284ca0bc02f88b92328e53f9b901e86b4a3c",
    "NVIDIA/tacotron2": "185cd24e046cc1304b4f8e564734d2498c6e2e6f",
    "eriklindernoren/PyTorch-GAN": "36d3c77e5ff20ebe0aeefd322326a134a279b93e",
    "Tianxiaomo/pytorch-YOLOv4": "a65d219f9066bae4e12003bd7cdc04531860c672",
    "facebookresearch/sam2": "2b90b9f5ceec907a1c18123530e92e794ad901a4",
    "jaywalnut310/vits": "2e561ba58618d021b5b8323d3765880f7e0ecfdb",
    "meituan/YOLOv6": "e86a483f3f6bded25d45970b56831345a99744a4",
    "apple/ml-cvnets": "77717569ab4a852614dae01f010b32b820cb33bb",
    "WongKinYiu/yolov9": "5b1ea9a8b3f0ffe4fe0e203ec6232d788bb3fcff",
    "facebookresearch/SlowFast": "287ec0076846560f44a9327e931a5a2360240533",
    "Vision-CAIR/MiniGPT-4": "d94738a7626ec43eba6c2cddf3cd2043f1a9689a",
    "rosinality/stylegan2-pytorch": "bef283a1c24087da704d16c30abc8e36e63efa0e",
    "openai/consistency_models": "e32b69ee436d518377db86fb2127a3972d0d8716",
    "RVC-Project/Retrieval-based-Voice-Conversion-WebUI": "4338f12c3c28c80b3ac015e2d0df66c41592746d",
    "facebookresearch/xcit": "82f5291f412604970c39a912586e008ec009cdca",
}
LOOP_CODES = ("AMP2", "AMP3", "AMP4", "AMP5")
TRIAGE = os.path.join(HERE, "triage")


def findings(root: str, repo: str, commit: str) -> list[dict]:
    """ampfix's loop findings on one checkout: dicts with path (relative), line, code, fix, message."""
    folder = os.path.abspath(checkout_dir(root, repo, commit))
    command = [
        sys.executable, "-m", "ampfix", "check", folder, "--isolated", "--no-cache", "--unsafe-fixes",
        "--output-format", "json", "--exit-zero", "--quiet",
    ]
    # run from the checkout, as its user would (the project root is the checkout's)
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, "..") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder, env=env)
    if done.returncode not in (0, 1):
        raise SystemExit(f"ampfix failed on {folder} (exit {done.returncode}):\n{done.stderr}")
    records = json.loads(done.stdout or "[]")
    out = []
    for record in records:
        if not record["code"].startswith(LOOP_CODES):
            continue
        fix = record.get("fix")
        out.append({
            "repo": repo,
            "path": os.path.relpath(os.path.join(folder, record["filename"]), folder).replace(os.sep, "/"),
            "line": record["location"]["row"],
            "code": record["code"],
            "fix": fix["applicability"] if fix else "none",
            "message": record["message"],
        })
    return out


def key(entry: dict) -> tuple:
    return entry["repo"], entry["path"], entry["line"], entry["code"]


def labelled_positives(labels: dict) -> set:
    return {
        (l["repo"], l["path"], line, l["code"])
        for l in labels["labels"] if not l["code"].startswith("!")
        for line in range(l["line"], l["end_line"] + 1)
    }


def compare(found: list[dict], triage: list[dict], expected: set) -> int:
    """Print the differences and the precision; return the number of untriaged findings."""
    triaged = {key(t): t for t in triage}
    now = {key(f): f for f in found}
    new = [f for k, f in sorted(now.items()) if k not in triaged and k not in expected]
    removed = [t for k, t in sorted(triaged.items()) if k not in now]
    changed = [
        (f, triaged[k]) for k, f in sorted(now.items())
        if k in triaged and (f["fix"] == "none") != (triaged[k]["fix"] == "none")
    ]
    for f in new:
        print(f"  NEW      {f['repo']} {f['path']}:{f['line']} {f['code']} (fix: {f['fix']}) {f['message'][:110]}")
    for t in removed:
        print(f"  REMOVED  {t['repo']} {t['path']}:{t['line']} {t['code']} (was {t['verdict']}: {t['reason'][:90]})")
    for f, t in changed:
        print(f"  FIX CHANGED {f['repo']} {f['path']}:{f['line']} {f['code']}: triaged {t['fix']}, now {f['fix']}")
    verdicts = Counter()
    harmful = 0
    by_code: dict[str, Counter] = {}
    for k, f in now.items():
        verdict = "TP" if k in expected else triaged[k]["verdict"] if k in triaged else "untriaged"
        verdict = verdict if verdict in ("TP", "FP") else "untriaged"
        verdicts[verdict] += 1
        by_code.setdefault(f["code"], Counter())[verdict] += 1
        if k in triaged and f["fix"] != "none" and triaged[k]["fix"] == "harmful":
            harmful += 1
    judged = verdicts["TP"] + verdicts["FP"]
    precision = verdicts["TP"] / judged if judged else 1.0
    print("per rule (TP/FP/untriaged): " + ", ".join(
        f"{code} {c['TP']}/{c['FP']}/{c['untriaged']}" for code, c in sorted(by_code.items())))
    print(f"loop findings: {len(now)} ({verdicts['TP']} TP, {verdicts['FP']} FP, {verdicts['untriaged']} untriaged); "
          f"precision {precision:.1%}; offered fixes triaged harmful: {harmful}; "
          f"new {len(new)}, removed {len(removed)}, fix changed {len(changed)}")
    return len(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkouts", required=True, help="folder of extracted checkouts")
    parser.add_argument("--extract-from", help="folder of git mirrors (owner+name/repo) to extract from")
    parser.add_argument("--dev", action="store_true", help="the dev corpus instead of the ecosystem repositories")
    parser.add_argument("--triage", help="triage file (default: bench/triage/ecosystem.json or dev.json)")
    parser.add_argument("--write-new", action="store_true",
                        help="append untriaged findings to the triage file with verdict '?' (to fill in by reading)")
    parser.add_argument("--repo", action="append", help="only these repositories")
    args = parser.parse_args()

    labels = {"labels": []}
    if args.dev:
        with open(DEFAULT_LABELS, encoding="utf-8") as handle:
            labels = json.load(handle)
        repos = labels["repos"]
    else:
        repos = ECOSYSTEM
    if args.repo:
        repos = {r: c for r, c in repos.items() if r in args.repo}
    if args.extract_from:
        extract(args.checkouts, args.extract_from, {"repos": repos})
    triage_path = args.triage or os.path.join(TRIAGE, "dev.json" if args.dev else "ecosystem.json")
    triage = [t for t in load_triage(triage_path) if t["repo"] in repos]
    found = [f for repo, commit in sorted(repos.items()) for f in findings(args.checkouts, repo, commit)]
    expected = labelled_positives(labels)
    untriaged = compare(found, triage, expected)
    if args.write_new and untriaged:
        known = {key(t) for t in triage} | expected
        everything = load_triage(triage_path)
        for f in found:
            if key(f) not in known:
                everything.append({**{k: f[k] for k in ("repo", "path", "line", "code", "fix")},
                                   "verdict": "?", "reason": f["message"]})
        write_triage(triage_path, everything)
    return 1 if untriaged or any(t["verdict"] not in ("TP", "FP") for t in triage) else 0


def load_triage(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_triage(path: str, entries: list[dict]) -> None:
    entries = sorted(entries, key=key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n]\n")


if __name__ == "__main__":
    sys.exit(main())
