"""Properties for any program: check and fix never raise, fixed output parses, fixing is
idempotent, and a program without AMP tokens comes back byte-identical. The AMP programs are
built from training-step statements (classes, ``try``, several optimizers, multi-item ``with``),
and a test checks that they reach the rules: a property over programs no rule looks at proves
nothing."""

import ast
import random
import warnings

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ampfix
from ampfix.engine import FixError
from ampfix.settings import Settings

hypothesmith = pytest.importorskip("hypothesmith")
SETTINGS = Settings(unsafe_fixes=True)

# Statement templates mixing every rule's triggers with ordinary code.
TEMPLATES = [
    "import torch",
    "import torch as {n}",
    "from torch.cuda.amp import autocast, GradScaler",
    "from torch.cuda import amp",
    "scaler = torch.cuda.amp.GradScaler({a})",
    "scaler = torch.amp.GradScaler('cuda')",
    "{n} = GradScaler()",
    "with torch.cuda.amp.autocast({a}):\n    {n} = model(x)",
    "with torch.autocast('cuda', dtype=torch.float16):\n    loss = model(x)",
    "with amp.autocast():\n    loss = model(x)\n    loss.backward()",
    "loss.backward()",
    "scaler.scale(loss).backward()",
    "scaler.scale(loss)",
    "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
    "optimizer.step()",
    "scaler.step(optimizer)",
    "scaler.update()",
    "optimizer.zero_grad()",
    "ckpt = {{'model': model.state_dict(), 'optimizer': optimizer.state_dict()}}",
    "for p in model.parameters():\n    p.grad *= scale_factor",
    "for i, x in enumerate(loader):\n    loss = criterion(model(x))\n    loss.backward()\n    if (i + 1) % {n} == 0:\n        optimizer.step()\n        optimizer.zero_grad()",
    "def {n}(model, optimizer):\n    for x in loader:\n        loss = model(x).sum()\n        loss.backward()\n        optimizer.step()",
    "x = torch.get_autocast_gpu_dtype()",
    "@torch.cuda.amp.custom_fwd\ndef {n}(ctx, x):\n    return x",
    "try:\n    {n} = torch.amp.GradScaler('cuda')\nexcept AttributeError:\n    {n} = torch.cuda.amp.GradScaler()",
    "pass",
    "{n} = 1  # noqa: AMP{d}",
    # training-step shapes of ../shared/reference/program-shapes.md
    "class Trainer:\n    def __init__(self, model, optimizer):\n        self.model = model\n"
    "        self.optimizer = optimizer\n        self.scaler = torch.amp.GradScaler('cuda')\n"
    "    def step(self, x):\n        with torch.autocast('cuda'):\n            loss = self.model(x)\n"
    "        self.scaler.scale(loss).backward()\n        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)\n"
    "        self.scaler.step(self.optimizer)\n        self.scaler.update()",
    "try:\n    scaler.scale(loss).backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
    "finally:\n    optimizer.zero_grad()",
    "for opt in (opt_g, opt_d):\n    scaler.step(opt)\n    scaler.update()",
    "scaler.unscale_(optimizer)",
    "if use_amp:\n    scaler.scale(loss).backward()\nelse:\n    loss.backward()",
    "with torch.autocast('cuda'), model.no_sync():\n    loss = model(x)\n    loss.backward()",
    "model = model.half()",
    "torch.save({{'model': model.state_dict(), 'optimizer': optimizer.state_dict()}}, path)",
    "for i, x in enumerate(loader):\n    with torch.autocast('cuda'):\n        loss = model(x)\n"
    "    scaler.scale(loss).backward()\n    if (i + 1) % accum == 0:\n        scaler.step(optimizer)\n"
    "        scaler.update()\n        optimizer.zero_grad()",
]


NAMES = ["a", "b", "scaler", "model", "torch", "amp", "autocast", "accum", "steps"]
ARGS = ["", "1024.0", "False", "enabled=use_amp", "*args", "**kw", "True, torch.float16"]


def build_program(choose) -> str:
    """A program from ``choose(options)`` decisions (hypothesis draws, or a seeded random)."""
    statements = [choose(TEMPLATES) for _ in range(choose(range(1, 13)))]
    out = []
    for template in statements:
        code = template.format(n=choose(NAMES), a=choose(ARGS), d=choose(range(1000)))
        if choose([False, True]):
            code = "for step in range(3):\n" + "\n".join("    " + line for line in code.splitlines())
        out.append(code)
    newline = choose(["\n", "\r\n"])
    return newline.join("\n".join(out).splitlines()) + newline


@st.composite
def amp_programs(draw):
    return build_program(lambda options: draw(st.sampled_from(list(options))))


def _check_fix_properties(source: str) -> None:
    ampfix.check_source(source, "t.py", SETTINGS)
    try:
        once = ampfix.fix_source(source, "t.py", SETTINGS, unsafe_fixes=True)
    except FixError:
        pytest.fail("a fix produced code that does not parse")
    if once.fixed:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings of generated programs are not ours
            compile(once.source, "t.py", "exec")
    again = ampfix.fix_source(once.source, "t.py", SETTINGS, unsafe_fixes=True)
    assert again.source == once.source, "fixing is not idempotent"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(amp_programs())
def test_amp_programs_fix_to_a_stable_parseable_result(source):
    try:
        ast.parse(source)
    except SyntaxError:
        assume(False)
    _check_fix_properties(source)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(hypothesmith.from_grammar())
def test_any_program_never_crashes(source):
    _check_fix_properties(source)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(hypothesmith.from_node())
def test_programs_without_amp_tokens_come_back_byte_identical(source):
    from ampfix.engine import may_fire

    assume(not may_fire(source.encode("utf-8", "surrogatepass"), SETTINGS.select))
    assert ampfix.fix_source(source, "t.py", SETTINGS, unsafe_fixes=True).source == source
    assert ampfix.check_source(source, "t.py", SETTINGS) == []


def test_the_generated_programs_reach_the_rules():
    """Most generated programs pass the prefilter, many have a loop finding and a fix: the
    properties above are exercised on code the rules analyse and rewrite."""
    from ampfix.engine import may_fire

    rng = random.Random(0)
    programs = []
    while len(programs) < 200:
        source = build_program(lambda options: rng.choice(list(options)))
        try:
            ast.parse(source)
        except SyntaxError:
            continue
        programs.append(source)
    passing = [p for p in programs if may_fire(p.encode(), SETTINGS.select)]
    findings = [ampfix.check_source(p, "t.py", SETTINGS) for p in passing]
    loop = [f for f in findings if any(d.code.startswith(("AMP2", "AMP3", "AMP4", "AMP5")) for d in f)]
    fixed = [f for f in findings if any(d.fix is not None for d in f)]
    assert len(passing) >= 180, len(passing)
    assert len(loop) >= 120 and len(fixed) >= 120, (len(loop), len(fixed))
