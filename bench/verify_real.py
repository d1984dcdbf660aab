#!/usr/bin/env python3
"""`ampfix verify` on real training scripts from public repositories (issue 22).

    python bench/verify_real.py [--root DIR] [--site DIR] [--only NAME ...] [--prepare-only] [--json FILE]

ROOT (default /work/eco/verify22) holds the repositories' files, extracted from their stored
snapshots (``git --git-dir=<mirror> show HEAD:<file>``), one folder per repository named
``owner+name``: pytorch+examples, pytorch+tutorials (amp_recipe.py), karpathy+llama2.c,
karpathy+nanoGPT, milesial+Pytorch-UNet. Nothing is downloaded: this script first writes small
synthetic data sets where each script looks for its data (MNIST in its idx format, BSDS300-like
images, a Cora-like graph, token shards, UNet image/mask pairs), then runs each case and prints
a table. ``ROOT/stubs`` (tqdm, wandb, six, sentencepiece, requests: logging, progress bars and
download code only, none on the training path) and ``--site`` (a folder holding torchvision,
installed with ``pip install --no-deps --target``: the PyPI wheel's Python part, its C ops do
not load on this CPU torch and are not used) go on PYTHONPATH.

Each case names the verdict a right verify gives (pass, fail, or exit 2 with the reason): the
table's "right?" column compares it with what verify said. Breaks are rewrites made by hand from
ampfix's own rewrite (a clip on still-scaled gradients, a double division) and verified with
``--against`` the original; a bug put into an original by hand (nanoGPT without its loss division) is
verified as the script itself, so that verify judges the predicted effect of the fix ampfix applies.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = "pytorch+examples"


@dataclass
class Case:
    name: str
    repo: str  # owner/name@commit
    cwd: str  # relative to ROOT
    script: str  # relative to cwd
    args: list[str] = field(default_factory=list)
    steps: int = 6
    expect: str = "pass"  # pass | fail | exit2
    expect_text: str = ""  # a phrase the verdict must hold (the rule a FAIL names, the reason of exit 2)
    expect_pass: str = ""  # a check that must be there and pass ("AMP301 prediction")
    options: list[str] = field(default_factory=list)  # more verify options
    break_with: Optional[Callable[[str], str]] = None  # the rewrite -> a broken rewrite (run --against)
    # the original -> an original with a bug ampfix fixes (verified as the script: the fix's predicted effect)
    break_original: Optional[Callable[[str], str]] = None
    # with break_original: a rewrite of your own, made from the unbroken original and run --against
    # the broken one (it mends the bug; verify judges it by the prediction of the rule that reports it)
    hand_rewrite: Optional[Callable[[str], str]] = None
    why: str = ""


# ---------------------------------------------------------------- synthetic data


def _rng(seed: int = 0):
    import numpy

    return numpy.random.RandomState(seed)


def write_mnist(raw: str, train: int = 1024, test: int = 256) -> None:
    """MNIST in its idx format (what torchvision reads): a fixed 28x28 pattern per class plus noise."""
    os.makedirs(raw, exist_ok=True)
    rng = _rng(0)
    templates = (rng.rand(10, 28, 28) > 0.7) * 180.0
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.randint(0, 10, count).astype("uint8")
        images = (templates[labels] + rng.rand(count, 28, 28) * 75).clip(0, 255).astype("uint8")
        with open(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), "wb") as handle:
            handle.write(struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes())
        with open(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), "wb") as handle:
            handle.write(struct.pack(">II", 2049, count) + labels.tobytes())


def write_images(folder: str, count: int, size: int, seed: int, mode: str = "RGB") -> list[str]:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = _rng(seed)
    names = []
    for index in range(count):
        channels = 3 if mode == "RGB" else 1
        pixels = (rng.rand(size // 8, size // 8, channels) * 255).astype("uint8")
        image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).resize((size, size))
        name = f"img{index:03d}"
        image.save(os.path.join(folder, name + (".jpg" if mode == "RGB" else ".png")))
        names.append(name)
    return names


def write_cora(folder: str, nodes: int = 1800, features: int = 64, classes: int = 7, edges: int = 4000) -> None:
    """A Cora-like graph in Cora's file format (paper id, binary words, class; cited, citing)."""
    os.makedirs(folder, exist_ok=True)
    import numpy

    rng = _rng(1)
    ids = rng.permutation(100000)[:nodes] + 1
    labels = rng.randint(0, classes, nodes)
    words = (rng.rand(nodes, features) < 0.05 + 0.1 * (labels[:, None] == (numpy.arange(features) % classes))).astype(int)
    with open(os.path.join(folder, "cora.content"), "w") as handle:
        for paper, row, label in zip(ids, words, labels):
            handle.write(f"{paper}\t" + "\t".join(map(str, row)) + f"\tClass_{label}\n")
    with open(os.path.join(folder, "cora.cites"), "w") as handle:
        for a, b in rng.randint(0, nodes, (edges, 2)):
            if a != b:
                handle.write(f"{ids[a]}\t{ids[b]}\n")


def write_tokens(folder: str, vocab: int, tokens: int = 200_000) -> None:
    """nanoGPT's shakespeare_char layout: uint16 train.bin/val.bin and meta.pkl."""
    os.makedirs(folder, exist_ok=True)
    rng = _rng(2)
    for name, count in (("train.bin", tokens), ("val.bin", tokens // 10)):
        rng.randint(0, vocab, count).astype("uint16").tofile(os.path.join(folder, name))
    with open(os.path.join(folder, "meta.pkl"), "wb") as handle:
        pickle.dump({"vocab_size": vocab, "itos": {i: chr(32 + i) for i in range(vocab)},
                     "stoi": {chr(32 + i): i for i in range(vocab)}}, handle)


def write_llama_shards(folder: str, vocab: int = 512, shards: int = 2, tokens: int = 50_000) -> None:
    """llama2.c's pretokenized TinyStories layout (data/tok512/*.bin, uint16, BOS-separated)."""
    os.makedirs(folder, exist_ok=True)
    rng = _rng(3)
    for index in range(shards):
        rng.randint(2, vocab, tokens).astype("uint16").tofile(os.path.join(folder, f"data{index:02d}.bin"))


def write_unet(folder: str, count: int = 12, size: int = 64) -> None:
    from PIL import Image

    names = write_images(os.path.join(folder, "imgs"), count, size, seed=4)
    os.makedirs(os.path.join(folder, "masks"), exist_ok=True)
    rng = _rng(5)
    for name in names:
        mask = ((rng.rand(size // 8, size // 8) > 0.5) * 255).astype("uint8")
        mask = Image.fromarray(mask, "L").resize((size, size), Image.NEAREST)  # two values, no blend
        mask.save(os.path.join(folder, "masks", name + "_mask.png"))


def small_amp_recipe(root: str) -> None:
    """amp_recipe.py with its six size constants made CPU-sized (nothing else changed)."""
    folder = os.path.join(root, "pytorch+tutorials")
    with open(os.path.join(folder, "amp_recipe.py"), encoding="utf-8") as handle:
        text = handle.read()
    sizes = {"batch_size": 64, "in_size": 256, "out_size": 256, "num_layers": 3, "num_batches": 8, "epochs": 2}
    for name, value in sizes.items():
        text, count = re.subn(rf"^{name} = \d+", f"{name} = {value}", text, flags=re.MULTILINE)
        assert count == 1, name
    with open(os.path.join(folder, "amp_recipe_small.py"), "w", encoding="utf-8") as handle:
        handle.write(text)


def guard_torchvision_fakes(site: str) -> None:
    """The PyPI torchvision wheel is built against CUDA torch: its C ops do not load on this CPU
    torch, and ``import torchvision`` then fails registering fake kernels for them. Register
    those only where the ops loaded (idempotent; the C ops are not used by these scripts)."""
    path = os.path.join(site, "torchvision", "_meta_registrations.py")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    guarded = text.replace("@torch.library.register_fake(", "@(torch.library.register_fake if "
                           "torchvision.extension._has_ops() else (lambda *a, **k: (lambda f: f)))(")
    if guarded != text:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(guarded)


def prepare_data(root: str) -> None:
    examples = os.path.join(root, EXAMPLES)
    write_mnist(os.path.join(examples, "data", "MNIST", "raw"))
    write_mnist(os.path.join(examples, "mnist_forward_forward", "data", "MNIST", "raw"))
    bsds = os.path.join(examples, "super_resolution", "dataset", "BSDS300", "images")
    write_images(os.path.join(bsds, "train"), 16, 256, seed=6)
    write_images(os.path.join(bsds, "test"), 4, 256, seed=7)
    write_cora(os.path.join(examples, "gcn", "cora"))
    write_cora(os.path.join(examples, "gat", "cora"))
    write_tokens(os.path.join(root, "karpathy+nanoGPT", "data", "shakespeare_char"), vocab=65)
    write_llama_shards(os.path.join(root, "run-llama", "data", "tok512"))
    write_unet(os.path.join(root, "run-unet", "data"))
    if os.path.isfile(os.path.join(root, "pytorch+tutorials", "amp_recipe.py")):
        small_amp_recipe(root)


# ---------------------------------------------------------------- deliberate breaks


def clip_scaled_gradients(rewrite: str) -> str:
    """Drop every ``scaler.unscale_(...)``: the clip that follows acts on still-scaled gradients
    (or, where there was none, add a clip right before the scaler's step)."""
    lines = rewrite.splitlines(keepends=True)
    if any(re.search(r"\.unscale_\(", line) for line in lines):
        return "".join(line for line in lines if not re.search(r"^\s*\w+(\.\w+)*\.unscale_\(", line))
    out = []
    for line in lines:
        match = re.match(r"^(\s*)(\w+)\.step\((\w+)\)", line)
        if match and "scaler" in match.group(2):
            indent, _, optimizer = match.groups()
            out.append(f"{indent}torch.nn.utils.clip_grad_norm_("
                       f"[p for g in {optimizer}.param_groups for p in g['params']], 1.0)\n")
        out.append(line)
    return "".join(out)


def divide_twice(rewrite: str) -> str:
    """An accumulation fix applied twice: the loss divided by the factor again."""
    out, done = [], False
    for line in rewrite.splitlines(keepends=True):
        out.append(line)
        match = re.match(r"^(\s*)(\w+) = \2 / (\w+)\s*(#.*)?$", line)
        if match and not done:
            out.append(f"{match.group(1)}{match.group(2)} = {match.group(2)} / {match.group(3)}\n")
            done = True
    if not done:
        raise ValueError("no loss division to repeat")
    return "".join(out)


def drop_loss_division(original: str) -> str:
    """The accumulation bug AMP301 fixes: the first ``loss = loss / N`` line removed, so the
    loss of every micro-batch is backpropagated undivided."""
    lines = original.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if re.match(r"^\s*(\w+) = \1 / (\w+)\s*(#.*)?$", line):
            return "".join(lines[:index] + lines[index + 1:])
    raise ValueError("no loss division to remove")


# ---------------------------------------------------------------- the cases


def cases() -> list[Case]:
    examples = "pytorch/examples@77f55b912142e11fcfdf5b530231fb9c52f181e8"
    llama = "karpathy/llama2.c@350e04fe35433e6d2941dce5a1f53308f87058eb"
    nanogpt = "karpathy/nanoGPT@3adf61e154"
    unet = "milesial/Pytorch-UNet@21d7850f2a"
    tutorials = "pytorch/tutorials@db77dcf6e3637924f43852c014f2af9978b0f891"
    ex = EXAMPLES
    llama_args = ["--compile=False", "--batch_size=4", "--max_seq_len=64", "--vocab_source=custom", "--vocab_size=512",
                  "--dim=64", "--n_layers=2", "--n_heads=4", "--n_kv_heads=4", "--eval_iters=1",
                  "--gradient_accumulation_steps=2"]
    nanogpt_args = ["config/train_shakespeare_char.py", "--compile=False", "--batch_size=4", "--block_size=32",
                    "--n_layer=2", "--n_head=2", "--n_embd=64", "--eval_iters=1", "--max_iters=20",
                    "--gradient_accumulation_steps=2", "--dtype=float16", "--log_interval=100"]
    return [
        Case("mnist", examples, f"{ex}/mnist", "main.py", ["--epochs", "1", "--batch-size", "32"]),
        Case("vae", examples, f"{ex}/vae", "main.py", ["--epochs", "1", "--batch-size", "32"], expect="exit2",
             expect_text="nothing to verify", why="AMP501 flags the step and offers no fix (binary_cross_entropy "
             "is unsafe under autocast): nothing of ampfix's to verify"),
        Case("mnist_rnn --accel", examples, f"{ex}/mnist_rnn", "main.py",
             ["--epochs", "1", "--batch-size", "32", "--accel"], expect="pass",
             why="with --accel the device is torch.accelerator.current_accelerator() (None without one); the "
             "rewrite names its type as `device.type if device is not None else 'cpu'` and runs under the CUDA shim "
             "(before 2026-12-02 it wrote `device.type` and failed: a true FAIL, mended in AMP501)"),
        Case("mnist_rnn on its CPU branch", examples, f"{ex}/mnist_rnn", "main.py",
             ["--epochs", "1", "--batch-size", "32"], expect="exit2", expect_text="stays on its CPU branch",
             why="without --accel the script never asks for an accelerator: its rewrite's autocast stays off "
             "even under the shim, so nothing can be tested here"),
        Case("siamese_network", examples, f"{ex}/siamese_network", "main.py",
             ["--epochs", "1", "--batch-size", "16"], expect="exit2", expect_text="nothing to verify",
             why="AMP501 offers no fix (BCELoss after a sigmoid)"),
        Case("mnist_forward_forward", examples, f"{ex}/mnist_forward_forward", "main.py", ["--epochs", "10"]),
        Case("dcgan", examples, f"{ex}/dcgan", "main.py",
             ["--dataset", "fake", "--batchSize", "4", "--niter", "1", "--workers", "0", "--imageSize", "64",
              "--outf", "/tmp/ampfix-dcgan-out", "--accel"], expect="exit2", expect_text="nothing to verify",
             why="AMP501 offers no fix (BCELoss after a sigmoid)"),
        Case("super_resolution", examples, f"{ex}/super_resolution", "main.py",
             ["--upscale_factor", "3", "--batchSize", "2", "--nEpochs", "1", "--threads", "0", "--accel"]),
        Case("imagenet", examples, f"{ex}/imagenet", "main.py",
             ["--dummy", "-a", "resnet18", "-b", "4", "--epochs", "1", "-j", "0"], steps=4, expect="exit2",
             expect_text="nothing to verify", why="AMP501 flags the step and refuses its fix"),
        Case("gcn", examples, f"{ex}/gcn", "main.py", ["--epochs", "10"], expect="exit2", expect_text="nothing to verify",
             why="AMP501 flags the step and offers no fix (sparse features and adjacency)"),
        Case("gat", examples, f"{ex}/gat", "main.py", ["--epochs", "10"], expect="exit2", expect_text="nothing to verify",
             why="AMP501 flags the step and offers no fix"),
        Case("mnist_hogwild", examples, f"{ex}/mnist_hogwild", "main.py",
             ["--epochs", "1", "--num-processes", "1", "--batch-size", "32", "--cuda"]),
        Case("word_language_model", examples, f"{ex}/word_language_model", "main.py",
             ["--use-optimizer", "--epochs", "1"], expect="exit2", expect_text="nothing to verify"),
        Case("llama2.c", llama, "run-llama", "../karpathy+llama2.c/train.py", llama_args + ["--dtype=float16"]),
        Case("llama2.c bf16", llama, "run-llama", "../karpathy+llama2.c/train.py", llama_args),
        Case("nanoGPT", nanogpt, "karpathy+nanoGPT", "train.py",
             ["config/train_shakespeare_char.py", "--compile=False", "--batch_size=4",
              "--block_size=32", "--n_layer=2", "--n_head=2", "--n_embd=64", "--eval_iters=1", "--max_iters=20",
              "--gradient_accumulation_steps=2", "--dtype=float16", "--log_interval=100"]),
        Case("nanoGPT --device=cpu", nanogpt, "karpathy+nanoGPT", "train.py",
             ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--batch_size=4",
              "--block_size=32", "--n_layer=2", "--n_head=2", "--n_embd=64", "--eval_iters=1", "--max_iters=20",
              "--gradient_accumulation_steps=2", "--dtype=float16", "--log_interval=100"],
             expect_text="only the float32 behaviour", why="on the CPU nanoGPT's autocast is a nullcontext and "
             "its CUDA scaler is off: the PASS must say it rests on float32 steps only"),
        Case("Pytorch-UNet", unet, "run-unet", "../milesial+Pytorch-UNet/train.py",
             ["--epochs", "1", "--batch-size", "2", "--scale", "0.5", "--amp"], steps=4),
        Case("amp_recipe", tutorials, "pytorch+tutorials", "amp_recipe_small.py", steps=6),
        # deliberate breaks of ampfix's own rewrites
        Case("llama2.c: clip on scaled gradients", llama, "run-llama", "../karpathy+llama2.c/train.py",
             llama_args + ["--dtype=float16", "--grad_clip=0.01"], expect="fail", break_with=clip_scaled_gradients),
        Case("llama2.c: loss divided twice", llama, "run-llama", "../karpathy+llama2.c/train.py",
             llama_args + ["--dtype=float16"], expect="fail", break_with=divide_twice),
        Case("mnist: clip on scaled gradients", examples, f"{ex}/mnist", "main.py",
             ["--epochs", "1", "--batch-size", "32"], expect="fail", break_with=clip_scaled_gradients),
        # a deliberate bug in the original that ampfix fixes: verify must measure the fix's predicted effect
        Case("nanoGPT without the loss division", nanogpt, "karpathy+nanoGPT", "train.py",
             ["config/train_shakespeare_char.py", "--compile=False", "--batch_size=4",
              "--block_size=32", "--n_layer=2", "--n_head=2", "--n_embd=64", "--eval_iters=1", "--max_iters=20",
              "--gradient_accumulation_steps=2", "--dtype=float16", "--log_interval=100"],
             expect_pass="AMP301 prediction", break_original=drop_loss_division,
             why="AMP301 divides the loss of the micro-batch loop by gradient_accumulation_steps at the backward: "
             "the first step's gradients must be the original's / 2, as predicted"),
        # a rewrite of your own that mends that bug: judged by AMP301's prediction, right or wrong
        Case("nanoGPT: the division restored by hand", nanogpt, "karpathy+nanoGPT", "train.py",
             nanogpt_args, expect_pass="AMP301 prediction", break_original=drop_loss_division,
             hand_rewrite=lambda original: original,
             why="nanoGPT itself, --against nanoGPT without its division: it mends AMP301's finding, and the first "
             "step's gradients are the original's / 2, as AMP301 predicts"),
        Case("nanoGPT: the division restored twice", nanogpt, "karpathy+nanoGPT", "train.py",
             nanogpt_args, expect="fail", expect_text="AMP301", break_original=drop_loss_division,
             hand_rewrite=divide_twice,
             why="a double division, --against nanoGPT without its division: it mends AMP301's finding but the "
             "gradients are the original's / 4, not / 2: a FAIL that names AMP301"),
    ]


# ---------------------------------------------------------------- running


def environment(root: str, site: Optional[str]) -> dict:
    paths = [ROOT, os.path.join(root, "stubs"), site, os.environ.get("PYTHONPATH")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))


def broken_rewrite(case: Case, root: str, env: dict) -> tuple[str, str]:
    """ampfix's rewrite of the case's script, broken by ``case.break_with``, written beside the
    original (so that its siblings import): returns (broken path, original path)."""
    cwd = os.path.join(root, case.cwd)
    original = os.path.normpath(os.path.join(cwd, case.script))
    code = ("import sys, json\nfrom ampfix.verify.runner import VerifyOptions, prepare\n"
            "print(json.dumps(prepare(sys.argv[1], VerifyOptions()).rewrite_text))\n")
    result = subprocess.run([sys.executable, "-c", code, original], env=env, cwd=cwd, capture_output=True,
                            text=True, check=True)
    broken = case.break_with(json.loads(result.stdout))
    path = os.path.join(os.path.dirname(original), "_ampfix_broken_" + os.path.basename(original))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(broken)
    return path, original


def transformed_script(case: Case, root: str, transform: Callable[[str], str], prefix: str) -> str:
    """``transform`` of the case's script, written beside it (so that its siblings import) as
    ``prefix`` + its name: the new script's path. ``case.break_original`` makes the original
    with a bug ampfix fixes; ``case.hand_rewrite`` a rewrite of your own from the unbroken one."""
    original = os.path.normpath(os.path.join(root, case.cwd, case.script))
    with open(original, encoding="utf-8") as handle:
        text = transform(handle.read())
    path = os.path.join(os.path.dirname(original), prefix + os.path.basename(original))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def run_case(case: Case, root: str, env: dict) -> dict:
    cwd = os.path.join(root, case.cwd)
    script, against = case.script, []
    if case.break_original is not None:
        script = transformed_script(case, root, case.break_original, "_ampfix_bug_")
    if case.hand_rewrite is not None:
        against = ["--against", script]
        script = transformed_script(case, root, case.hand_rewrite, "_ampfix_hand_")
    if case.break_with is not None:
        script, original = broken_rewrite(case, root, env)
        against = ["--against", original]
    command = [sys.executable, "-m", "ampfix", "verify", script, "--steps", str(case.steps), "--format", "json",
               *against, *case.options, "--", *case.args]
    started = time.monotonic()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=900, check=False)
    wall = time.monotonic() - started
    try:
        document = json.loads(result.stdout)
    except ValueError:
        document = {"verdict": (result.stdout + result.stderr).strip().splitlines()[-1:] or ["?"],
                    "exit_code": result.returncode}
        document["verdict"] = document["verdict"][0]
    verdict = str(document.get("verdict"))
    got = {0: "pass", 1: "fail", 2: "exit2"}.get(result.returncode, f"exit {result.returncode}")
    right = got == case.expect and (not case.expect_text or case.expect_text in verdict)
    if case.expect_pass:
        right = right and any(c.get("name") == case.expect_pass and c.get("status") == "pass"
                              for c in document.get("checks") or [])
    return {"name": case.name, "repo": case.repo, "command": " ".join(command[2:]), "cwd": case.cwd,
            "exit_code": result.returncode, "got": got, "expect": case.expect, "right": right,
            "verdict": verdict, "applied": document.get("applied"), "wall_s": round(wall, 1),
            "checks": document.get("checks")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/work/eco/verify22")
    parser.add_argument("--site", default=None, help="a folder holding torchvision [default: ROOT/site]")
    parser.add_argument("--only", nargs="*", help="case names")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--skip-prepare", action="store_true")
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    site = args.site or os.path.join(root, "site")
    guard_torchvision_fakes(site)
    if not args.skip_prepare:
        prepare_data(root)
    if args.prepare_only:
        return 0
    env = environment(root, site)
    rows = []
    for case in cases():
        if args.only and case.name not in args.only:
            continue
        row = run_case(case, root, env)
        rows.append(row)
        print(f"{'right' if row['right'] else 'WRONG'}  {row['name']:<36} {row['got']:<6} ({row['wall_s']} s)  "
              f"{row['verdict']}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    wrong = [r["name"] for r in rows if not r["right"]]
    print(f"{len(rows) - len(wrong)} of {len(rows)} verdicts right" + (f"; wrong: {', '.join(wrong)}" if wrong else ""))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
