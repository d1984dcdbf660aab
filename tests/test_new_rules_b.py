"""AMP215, AMP216, AMP217, AMP305: each fires on its INVALID cases, stays silent on its VALID
ones (the shapes that a name- or text-based rule would get wrong), and fixes as documented."""

import textwrap

import pytest

from conftest import codes, fixed

HEAD = "import torch\n"


def src(body, head=HEAD):
    return head + textwrap.dedent(body)


def only(code, source):
    return [c for c in codes(source) if c == code]


STEP = """
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda"{autocast}):
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
"""


def amp_step(scaler_line, autocast="", head=""):
    return src(head + scaler_line + "\n" + textwrap.dedent(STEP).format(autocast=autocast))


# -- AMP215 ----------------------------------------------------------------------------------------

AMP215_INVALID = [
    # two entries of one configuration object
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=args.scaler)', ", enabled=args.amp"),
    # through assignments: the values are followed, not the names
    amp_step(
        'use_scaler = cfg["scaler"]\nscaler = torch.amp.GradScaler("cuda", enabled=use_scaler)',
        ", enabled=use_amp", head='use_amp = cfg["amp"]\n',
    ),
    # a common conjunct does not tie the flags together
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=args.scaler and device.type == "cuda")',
             ', enabled=args.amp and device.type == "cuda"'),
    # the scaler is off for bfloat16 runs, but this autocast is float16 whatever `--bf16` says
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=args.amp and not args.bf16)', ", enabled=args.amp"),
    # `dtype=None` is the device's default: float16 on CUDA (SIFT_DBT's `--amp` without `--bf16`)
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=args.scaler)', ", enabled=args.amp, dtype=dtype",
             head="dtype = torch.bfloat16 if args.bf16 else None\n"),
    # a scaler created only under its own flag; the old autocast's positional `enabled`
    src("""
    scaler = torch.cuda.amp.GradScaler() if args.grad_scaling else None
    for x, y in loader:
        with torch.cuda.amp.autocast(args.amp):
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    """),
    # a trainer's fields, set from two different arguments
    src("""
    class Trainer:
        def __init__(self, opt):
            self.fp16 = opt.fp16
            self.scaler = torch.amp.GradScaler("cuda", enabled=opt.loss_scaling)

        def step(self, x, y):
            with torch.autocast("cuda", enabled=self.fp16):
                loss = criterion(model(x), y)
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
    """),
]

AMP215_VALID = [
    # one flag for both
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=args.amp)', ", enabled=args.amp"),
    # the same flag under another name (yolov5's `amp`), through an assignment
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=use_amp)', ", enabled=args.amp",
             head="use_amp = args.amp\n"),
    # the scaler is off exactly when the run chooses bfloat16
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=args.amp and not args.bf16)',
             ", dtype=torch.bfloat16 if args.bf16 else torch.float16, enabled=args.amp"),
    # the default dtype (None) is the float16 side, and the scaler is on exactly there
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=args.amp and not args.bf16)', ", enabled=args.amp, dtype=dtype",
             head="dtype = torch.bfloat16 if args.bf16 else None\n"),
    # a call's result may derive from its argument; `cfg.get("amp")` is the entry `cfg["amp"]`
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=needs_scaling(args.amp))', ", enabled=args.amp"),
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=cfg.get("amp", False))', ', enabled=self.cfg["amp"]'),
    # the scaler always on: every float16 step is scaled
    amp_step('scaler = torch.amp.GradScaler("cuda")', ", enabled=args.amp"),
    # bfloat16 needs no scaler: no configuration underflows
    amp_step('scaler = torch.amp.GradScaler("cuda", enabled=args.scaler)', ", dtype=torch.bfloat16, enabled=args.amp"),
    # a flag handed in by callers the module does not show: unknown, silent
    src("""
    def train(use_amp, use_scaler):
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        for x, y in loader:
            with torch.autocast("cuda", enabled=use_amp):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    """),
]


@pytest.mark.parametrize("source", AMP215_INVALID)
def test_amp215_fires(source):
    assert only("AMP215", source) == ["AMP215"]


@pytest.mark.parametrize("source", AMP215_VALID)
def test_amp215_silent(source):
    assert only("AMP215", source) == []


def test_amp215_a_parameter_is_what_the_module_passes():
    passed = src("""
    def train(use_amp, use_scaler):
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        for x, y in loader:
            with torch.autocast("cuda", enabled=use_amp):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    train(args.amp, {scaler})
    """)
    assert only("AMP215", passed.format(scaler="args.scaler")) == ["AMP215"]
    assert only("AMP215", passed.format(scaler="args.amp")) == []


# -- AMP216 ----------------------------------------------------------------------------------------

CHOSEN = src("""
def train(args, model, loader, optimizer):
    dtype = torch.bfloat16 if args.bf16 else torch.float16
    scaler = torch.amp.GradScaler("cuda"{enabled})
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=dtype):
            loss = model(x).sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""")


def test_amp216_fires_and_enables_the_scaler_for_float16_only():
    source = CHOSEN.format(enabled="")
    assert only("AMP216", source) == ["AMP216"]
    assert 'torch.amp.GradScaler("cuda", enabled=not args.bf16)' in fixed(source, unsafe=True)


AMP216_INVALID = [
    # one flag turns autocast and the scaler on, another picks the dtype: `--amp --bf16` scales bfloat16
    CHOSEN.format(enabled=", enabled=args.amp").replace("dtype=dtype)", "dtype=dtype, enabled=args.amp)"),
    # the choice by statements: either dtype reaches the region
    src("""
    amp_dtype = torch.float16
    if args.amp_dtype == "bfloat16":
        amp_dtype = torch.bfloat16
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        with torch.autocast("cuda", dtype=amp_dtype):
            loss = model(x).sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    """),
    # a string chosen at run time, turned into a dtype
    src("""
    name = "bfloat16" if args.bf16 else "float16"
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        with torch.autocast("cuda", dtype=getattr(torch, name)):
            loss = model(x).sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    """),
]

AMP216_VALID = [
    # the scaler follows the choice (nanoGPT's pattern, and the flag itself)
    CHOSEN.format(enabled=", enabled=(dtype == torch.float16)"),
    CHOSEN.format(enabled=", enabled=not args.bf16"),
    # a scaler flag that autocast does not read: `--bf16` alone runs bfloat16 with the scaler off
    CHOSEN.format(enabled=", enabled=args.amp"),
    # off in the bfloat16 runs of one flag: only `--fp16 --bf16` together keeps it on, the user's choice
    CHOSEN.format(enabled=", enabled=args.fp16 and torch.cuda.is_available()"),
    # float16 or float32: the scaler is needed whenever autocast is float16
    CHOSEN.replace("torch.bfloat16 if args.bf16 else torch.float16", "torch.float16 if args.amp else torch.float32")
    .format(enabled=""),
    # statically bfloat16 is AMP207's, statically float16 needs the scaler
    CHOSEN.replace("torch.bfloat16 if args.bf16 else torch.float16", "torch.bfloat16").format(enabled=""),
    CHOSEN.replace("torch.bfloat16 if args.bf16 else torch.float16", "torch.float16").format(enabled=""),
    # a dtype the module does not show
    CHOSEN.replace("torch.bfloat16 if args.bf16 else torch.float16", "cfg.dtype").format(enabled=""),
    # disabled
    CHOSEN.format(enabled=", enabled=False"),
]


@pytest.mark.parametrize("source", AMP216_INVALID)
def test_amp216_fires(source):
    assert only("AMP216", source) == ["AMP216"]


@pytest.mark.parametrize("source", AMP216_VALID)
def test_amp216_silent(source):
    assert only("AMP216", source) == []


def test_amp216_and_amp207_are_disjoint():
    static = CHOSEN.replace("torch.bfloat16 if args.bf16 else torch.float16", "torch.bfloat16").format(enabled="")
    static = static.replace("dtype=dtype", "dtype=torch.bfloat16")
    found = codes(static)
    assert "AMP207" in found and "AMP216" not in found
    chosen = codes(CHOSEN.format(enabled=""))
    assert "AMP216" in chosen and "AMP207" not in chosen


def test_amp216_no_fix_where_the_condition_is_not_in_scope():
    # the choice is made in another function: its `args` is not the scaler's
    source = src("""
    def choose(args):
        return torch.bfloat16 if args.bf16 else torch.float16

    dtype = torch.bfloat16 if config.bf16 else torch.float16

    def train(model, loader, optimizer):
        scaler = torch.amp.GradScaler("cuda")
        for x, y in loader:
            with torch.autocast("cuda", dtype=dtype):
                loss = model(x).sum()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    """)
    assert only("AMP216", source) == ["AMP216"]
    assert fixed(source, unsafe=True) == textwrap.dedent(source)


# -- AMP217 ----------------------------------------------------------------------------------------

SCHEDULED = src("""
def train(model, loader, optimizer, epochs):
    scaler = torch.amp.GradScaler("cuda"{enabled})
    scheduler = {scheduler}
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            with torch.autocast("cuda"):
                loss = model(x).sum()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            {per_iteration}
        {per_epoch}
""")
ONE_CYCLE = "torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=1000)"


def scheduled(per_iteration="scaler.update()\n            scheduler.step()", per_epoch="pass",
              scheduler=ONE_CYCLE, enabled=""):
    return SCHEDULED.format(per_iteration=per_iteration, per_epoch=per_epoch, scheduler=scheduler, enabled=enabled)


AMP217_INVALID = [
    scheduled(),
    # a transformers schedule, stepped inside the accumulation gate with the scaler
    src("""
    from transformers import get_linear_schedule_with_warmup

    scaler = torch.amp.GradScaler("cuda")
    scheduler = get_linear_schedule_with_warmup(optimizer, 100, 1000)
    for step, (x, y) in enumerate(loader):
        with torch.autocast("cuda"):
            loss = model(x).sum() / accum
        scaler.scale(loss).backward()
        if (step + 1) % accum == 0:
            if args.fp16:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    """),
]

AMP217_VALID = [
    # per epoch: stepped outside the loop that steps the optimizer
    scheduled(per_iteration="scaler.update()", per_epoch="scheduler.step()"),
    # the remedy: compare the scale around update()
    scheduled(per_iteration=(
        "scale = scaler.get_scale()\n            scaler.update()\n"
        "            if scaler.get_scale() >= scale:\n                scheduler.step()"
    )),
    # under a condition of its own
    scheduled(per_iteration="scaler.update()\n            if warmup:\n                scheduler.step()"),
    # ReduceLROnPlateau steps on a metric
    scheduled(scheduler="torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)"),
    # a scaler that never skips
    scheduled(enabled=", enabled=False"),
    # something named like a scheduler that is not one (a noise scheduler of diffusers)
    scheduled(scheduler="DDPMScheduler()"),
]


@pytest.mark.parametrize("source", AMP217_INVALID)
def test_amp217_fires(source):
    assert only("AMP217", source) == ["AMP217"]


@pytest.mark.parametrize("source", AMP217_VALID)
def test_amp217_silent(source):
    assert only("AMP217", source) == []


# -- AMP305 ----------------------------------------------------------------------------------------

DDP_HEAD = HEAD + "from torch.nn.parallel import DistributedDataParallel as DDP\n"
DDP_LOOP = src("""
def train(net, loader, optimizer, accum_steps, rank):
    model = DDP(net, device_ids=[rank])
    for i, (x, y) in enumerate(loader):
        out = model(x)
        loss = criterion(out, y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
""", head=DDP_HEAD)


def test_amp305_fires_and_wraps_the_forward_and_backward():
    assert only("AMP305", DDP_LOOP) == ["AMP305"]
    result = fixed(DDP_LOOP, unsafe=True)
    assert "import contextlib\n" in result
    assert (
        "        with (model.no_sync() if (i + 1) % accum_steps != 0 else contextlib.nullcontext()):\n"
        "            out = model(x)\n"
        "            loss = criterion(out, y) / accum_steps\n"
        "            loss.backward()\n"
        "        if (i + 1) % accum_steps == 0:\n"
    ) in result


AMP305_REPORT_ONLY = [
    # DDP only when distributed (the HF legacy examples): reported, not fixed
    src("""
    def train(model, loader, optimizer, args):
        if args.local_rank != -1:
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.local_rank])
        for step, batch in enumerate(loader):
            outputs = model(**batch)
            loss = outputs[0] / args.gradient_accumulation_steps
            loss.backward()
            if (step + 1) % args.gradient_accumulation_steps == 0:
                optimizer.step()
                model.zero_grad()
    """),
    # no fix where the backward shares its line with another statement (re-indenting splits nothing)
    DDP_LOOP.replace("        loss.backward()\n", "        loss.backward(); seen += 1\n"),
]

AMP305_FIXED = [
    # a helper that returns the DDP model (yolov5's smart_DDP), a counter since the last step
    src("""
    def wrap(model):
        return DDP(model, device_ids=[0])

    def train(model, loader, optimizer, scaler, accumulate):
        model = wrap(model)
        last_opt_step = -1
        for ni, (x, y) in enumerate(loader):
            with torch.autocast("cuda"):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            if ni - last_opt_step >= accumulate:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                last_opt_step = ni
    """, head=DDP_HEAD),
]

AMP305_VALID = [
    # no_sync on the non-step iterations
    src("""
    import contextlib

    def train(net, loader, optimizer, accum_steps, rank):
        model = DDP(net, device_ids=[rank])
        for i, (x, y) in enumerate(loader):
            sync = (i + 1) % accum_steps == 0
            with model.no_sync() if not sync else contextlib.nullcontext():
                loss = criterion(model(x), y) / accum_steps
                loss.backward()
            if sync:
                optimizer.step()
                optimizer.zero_grad()
    """, head=DDP_HEAD),
    # nanoGPT sets the flag no_sync sets
    DDP_LOOP.replace("        out = model(x)\n",
                     "        model.require_backward_grad_sync = (i + 1) % accum_steps == 0\n        out = model(x)\n"),
    # no accumulation: a step on every iteration
    DDP_LOOP.replace("        if (i + 1) % accum_steps == 0:\n            optimizer.step()",
                     "        if True:\n            optimizer.step()"),
    # not provably DDP: DataParallel, or a model nobody in the module wraps
    DDP_LOOP.replace("DDP(net, device_ids=[rank])", "torch.nn.DataParallel(net)"),
    DDP_LOOP.replace("model = DDP(net, device_ids=[rank])", "model = net"),
    # Accelerate accumulates and syncs itself (its model is no DDP construction here)
    src("""
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for x, y in loader:
        with accelerator.accumulate(model):
            loss = criterion(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    """),
]


@pytest.mark.parametrize("source", AMP305_REPORT_ONLY + AMP305_FIXED)
def test_amp305_fires(source):
    assert only("AMP305", source) == ["AMP305"]


@pytest.mark.parametrize("source", AMP305_REPORT_ONLY)
def test_amp305_no_fix_unless_ddp_on_every_path_and_contiguous(source):
    assert fixed(source, unsafe=True) == textwrap.dedent(source)


@pytest.mark.parametrize("source", AMP305_FIXED)
def test_amp305_fix_leaves_no_finding(source):
    result = fixed(source, unsafe=True)
    assert ".no_sync() if not (ni - last_opt_step >= accumulate) else contextlib.nullcontext()):" in result
    assert only("AMP305", result) == []


@pytest.mark.parametrize("source", AMP305_VALID)
def test_amp305_silent(source):
    assert only("AMP305", source) == []


def test_amp305_no_fix_when_the_condition_is_computed_after_the_forward():
    late = DDP_LOOP.replace(
        "        loss.backward()\n        if (i + 1) % accum_steps == 0:",
        "        loss.backward()\n        boundary = (i + 1) % accum_steps == 0\n        if boundary:",
    )
    assert only("AMP305", late) == ["AMP305"]
    assert fixed(late, unsafe=True) == late


def test_amp305_no_fix_across_a_multiline_string():
    source = DDP_LOOP.replace("        out = model(x)\n", '        out = model(x, """a\nb""")\n')
    assert only("AMP305", source) == ["AMP305"]
    assert fixed(source, unsafe=True) == source


def test_amp305_reads_a_ddp_helper_of_another_module(tmp_path):
    """yolov5's `smart_DDP(model)`: the helper module holds no training step, so it is loaded
    only because AMP305's own prefilter lets a module that constructs DDP through."""
    import ampfix
    from ampfix.settings import Settings

    (tmp_path / "utils.py").write_text(textwrap.dedent("""
    from torch.nn.parallel import DistributedDataParallel as DDP

    def smart_ddp(model):
        return DDP(model, device_ids=[0])
    """))
    train = textwrap.dedent("""
    import torch
    from utils import smart_ddp

    def train(model, loader, optimizer, accumulate, distributed):
        if distributed:
            model = smart_ddp(model)
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            loss.backward()
            if (i + 1) % accumulate == 0:
                optimizer.step()
                optimizer.zero_grad()
    """)
    (tmp_path / "train.py").write_text(train)
    settings = Settings(select=frozenset({"AMP305"}), project_root=str(tmp_path))
    path = str(tmp_path / "train.py")
    assert [d.code for d in ampfix.check_source(train, path, settings)] == ["AMP305"]
    (tmp_path / "utils.py").write_text("def smart_ddp(model):\n    return model\n")
    assert ampfix.check_source(train, path, Settings(select=frozenset({"AMP305"}), project_root=str(tmp_path))) == []


def test_amp305_a_comment_about_no_sync_does_not_silence_it():
    # the code controls the sync, not a sentence about it (check_source runs the prefilter: it
    # must pass the file too)
    source = DDP_LOOP.replace("        loss.backward()\n", "        loss.backward()  # TODO: model.no_sync()\n")
    assert only("AMP305", source) == ["AMP305"]
    assert only("AMP305", DDP_LOOP.replace("        out = model(x)\n", "        model.require_backward_grad_sync = False\n        out = model(x)\n")) == []


# the forward runs in a helper handed the DDP model (HF's `compute_loss(model, inputs)`)
HELPER_FORWARD = src("""
def compute_loss(model, x, y):
    return criterion(model(x), y)


def train(net, loader, optimizer, accum_steps, rank):
    model = DDP(net, device_ids=[rank])
    for i, (x, y) in enumerate(loader):
        loss = compute_loss(model, x, y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
""", head=DDP_HEAD)


def test_amp305_sees_the_forward_in_a_helper_the_loss_comes_from():
    assert only("AMP305", HELPER_FORWARD) == ["AMP305"]
    result = fixed(HELPER_FORWARD, unsafe=True)
    assert "with (model.no_sync() if (i + 1) % accum_steps != 0 else contextlib.nullcontext()):" in result
    assert only("AMP305", result) == []
    # the DDP model handed to a call the loss does not come from (a log), the loss from the
    # unwrapped module's forward (no all-reduce): nothing to report
    logged = HELPER_FORWARD.replace(
        "        loss = compute_loss(model, x, y) / accum_steps\n",
        "        log_weights(model)\n        loss = criterion(net(x), y) / accum_steps\n",
    )
    assert only("AMP305", logged) == []


def test_amp305_a_forward_of_the_unwrapped_module_does_not_all_reduce():
    # minimind's RL trainers: `model.module if isinstance(model, DDP) else model` is never DDP
    # (and its backward never all-reduces: a bug of another kind, not this rule's)
    unwrapped = DDP_LOOP.replace(
        "        out = model(x)\n",
        "        raw = model.module if isinstance(model, DDP) else model\n        out = raw(x)\n",
    )
    assert only("AMP305", unwrapped) == []
    by_attribute = unwrapped.replace("isinstance(model, DDP)", 'hasattr(model, "module")')
    assert only("AMP305", by_attribute) == []
    # a choice that may be the DDP model itself still is one
    chosen = unwrapped.replace("model.module if isinstance(model, DDP) else model", "model if use_ddp else net")
    assert only("AMP305", chosen) == ["AMP305"]
