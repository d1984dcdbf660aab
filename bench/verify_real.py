#!/usr/bin/env python3
"""`ampfix verify` on real training scripts from public repositories (issue 22).

    python bench/verify_real.py [--root DIR] [--site DIR] [--only NAME ...] [--prepare-only] [--json FILE]

ROOT (default /work/eco/verify22) holds the repositories' files, one folder per repository named
``owner+name`` (see SOURCES: repository, commit, paths). A folder that is missing is extracted
from the repository's git mirror under ``--mirrors`` (``git ls-tree`` and ``git cat-file`` at COMMIT; the mirrors
are what the tool library's ``fetch`` brings). pytorch/tutorials is too large to mirror: its one
file, recipes_source/recipes/amp_recipe.py, is placed by hand as ROOT/pytorch+tutorials/amp_recipe.py
and checked against its git blob id; without it that case is left out, saying so. ROOT/PROVENANCE.txt
records what was used. Nothing is downloaded: this script writes small synthetic data sets where
each script looks for its data (MNIST in its idx format, BSDS300-like images, a Cora-like graph,
token shards, UNet image/mask pairs) and ``ROOT/stubs`` (tqdm, wandb, six, sentencepiece,
requests: logging, progress bars and download code only, none on the training path), then runs
each case and prints a table. ``--site`` is a folder holding torchvision, made once with
``pip install --no-deps --target ROOT/site torchvision==0.28.0`` (the PyPI wheel's Python part:
its C ops do not load on this CPU torch and are not used); it and the stubs go on PYTHONPATH.

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
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = "pytorch+examples"

# folder -> (repository, commit, the paths taken from it)
SOURCES = {
    EXAMPLES: ("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8",
               ["dcgan", "gat", "gcn", "imagenet", "mnist", "mnist_forward_forward", "mnist_hogwild", "mnist_rnn",
                "siamese_network", "super_resolution", "vae", "word_language_model"]),
    "karpathy+llama2.c": ("karpathy/llama2.c", "350e04fe35433e6d2941dce5a1f53308f87058eb",
                          ["configurator.py", "export.py", "model.py", "sample.py", "tinystories.py", "tokenizer.bin",
                           "tokenizer.model", "tokenizer.py", "train.py"]),
    "karpathy+nanoGPT": ("karpathy/nanoGPT", "3adf61e154",
                         ["bench.py", "config", "configurator.py", "model.py", "sample.py", "train.py"]),
    "milesial+Pytorch-UNet": ("milesial/Pytorch-UNet", "21d7850f2a",
                              ["evaluate.py", "predict.py", "train.py", "unet", "utils"]),
}
AMP_RECIPE = ("pytorch/tutorials", "db77dcf6e3637924f43852c014f2af9978b0f891",
              "recipes_source/recipes/amp_recipe.py", "b8a4d94233305d360bf982094fe5fd421083d2a4")  # its blob id

# Stand-ins for what the scripts import but never need on their training path
STUBS = {
    "tqdm/__init__.py": '''
class tqdm:
    """Progress bars: an iterable passed through, the rest ignored."""
    def __init__(self, iterable=None, *args, **kwargs):
        self.iterable = iterable
    def __iter__(self):
        return iter(self.iterable)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False
    def update(self, *args, **kwargs):
        pass
    def set_postfix(self, *args, **kwargs):
        pass
    def close(self):
        pass
    @staticmethod
    def write(*args, **kwargs):
        print(*args)
''',
    "wandb/__init__.py": '''
class _Run:
    class config:
        @staticmethod
        def update(*args, **kwargs):
            pass
    def log(self, *args, **kwargs):
        pass
def init(*args, **kwargs):
    return _Run()
def log(*args, **kwargs):
    pass
class Image:
    def __init__(self, *args, **kwargs):
        pass
class Histogram(Image):
    pass
''',
    "six/__init__.py": "from . import moves\n",
    "six/moves/__init__.py": "import urllib\nimport urllib.request\n",
    "sentencepiece/__init__.py": '''
class SentencePieceProcessor:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("sentencepiece is a stub here: these runs read pre-tokenised shards")
class SentencePieceTrainer:
    @staticmethod
    def train(*args, **kwargs):
        raise RuntimeError("sentencepiece is a stub here")
''',
    "requests/__init__.py": '''
def get(*args, **kwargs):
    raise RuntimeError("no network here: the data sets are written by bench/verify_real.py")
''',
}


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


def extract_sources(root: str, mirrors: str) -> list[str]:
    """The repositories' folders under ROOT, extracted from their mirrors where missing; the
    provenance of each goes to ROOT/PROVENANCE.txt. Returns what is missing still."""
    missing, lines = [], []
    for folder, (repo, commit, paths) in SOURCES.items():
        target = os.path.join(root, folder)
        git_dir = os.path.join(mirrors, repo.replace("/", "+"), "repo")
        absent: list[str] = []
        if not os.path.isdir(target) and os.path.isdir(git_dir):
            absent = _extract(git_dir, commit, paths, target)
        if os.path.isdir(target):
            lines.append(f"{folder}: {repo}@{commit}: {' '.join(paths)}"
                         + (f" (not in the mirror, left out: {' '.join(absent)})" if absent else ""))
        else:
            missing.append(f"{folder} (no mirror of {repo} under {mirrors})")
    repo, commit, file, blob = AMP_RECIPE
    recipe = os.path.join(root, "pytorch+tutorials", "amp_recipe.py")
    found = _blob_id(recipe) if os.path.isfile(recipe) else None
    if found == blob:
        lines.append(f"pytorch+tutorials: {repo}@{commit}: {file} (blob {blob}), as amp_recipe.py")
    else:
        missing.append(f"pytorch+tutorials/amp_recipe.py ({repo}@{commit}:{file}, blob {blob}"
                       + (f"; found blob {found}" if found else "") + ")")
    with open(os.path.join(root, "PROVENANCE.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines + [f"missing: {m}" for m in missing]) + "\n")
    return missing


def _extract(git_dir: str, commit: str, paths: list[str], target: str) -> list[str]:
    """The files under ``paths`` at ``commit``, written under ``target``; returns those whose
    blob the mirror does not hold (a mirror leaves out its largest files)."""
    listing = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-r", "-z", commit, "--", *paths],
                             capture_output=True, check=True).stdout
    absent = []
    for entry in filter(None, listing.split(b"\0")):
        meta, name = entry.split(b"\t", 1)
        kind, blob = meta.split()[1:3]
        if kind != b"blob":
            continue
        data = subprocess.run(["git", "--git-dir", git_dir, "cat-file", "blob", blob.decode()], capture_output=True)
        if data.returncode != 0:
            absent.append(name.decode())
            continue
        path = os.path.join(target, name.decode())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data.stdout)
    return absent


def _blob_id(path: str) -> str:
    import hashlib

    with open(path, "rb") as handle:
        data = handle.read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_stubs(root: str) -> None:
    for name, text in STUBS.items():
        path = os.path.join(root, "stubs", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text.lstrip())


def prepare_data(root: str) -> None:
    write_stubs(root)
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
    # train.py runs from run-llama (its data folder) and reads configurator.py from there
    configurator = os.path.join(root, "karpathy+llama2.c", "configurator.py")
    if os.path.isfile(configurator):
        shutil.copyfile(configurator, os.path.join(root, "run-llama", "configurator.py"))
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
    parser.add_argument("--mirrors", default="/work/.mirror", help="git mirrors, owner+name/repo [default: %(default)s]")
    parser.add_argument("--only", nargs="*", help="case names")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--skip-prepare", action="store_true")
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    os.makedirs(root, exist_ok=True)
    missing = extract_sources(root, args.mirrors)
    for what in missing:
        print(f"missing: {what}: its cases are left out", file=sys.stderr)
    if not args.skip_prepare:
        prepare_data(root)
    if args.prepare_only:
        return 0
    site = args.site or os.path.join(root, "site")
    if not os.path.isdir(os.path.join(site, "torchvision")):
        print(f"error: no torchvision under {site}: pip install --no-deps --target {site} torchvision==0.28.0",
              file=sys.stderr)
        return 2
    guard_torchvision_fakes(site)
    env = environment(root, site)
    rows = []
    for case in cases():
        if args.only and case.name not in args.only:
            continue
        if not os.path.isdir(os.path.join(root, case.cwd)) or not os.path.isfile(
                os.path.join(root, case.cwd, case.script)):
            print(f"left out  {case.name}: {os.path.join(case.cwd, case.script)} is missing", flush=True)
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
