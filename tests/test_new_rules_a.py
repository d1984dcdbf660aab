"""AMP211-AMP214 and AMP304 (preview): each fires on its bug, stays silent on the correct forms
and on the shapes that would make it wrong, and fixes only as documented."""

import textwrap

import pytest

import ampfix
from ampfix.settings import Settings


def found(code, source, path="t.py"):
    diagnostics = ampfix.check_source(textwrap.dedent(source), path, Settings(select=frozenset({code})))
    return [d for d in diagnostics if d.code == code]


def fixed(code, source):
    settings = Settings(select=frozenset({code}))
    return ampfix.fix_source(textwrap.dedent(source), "t.py", settings, unsafe_fixes=True).source


# -- AMP211 accelerate-clip-scaled-gradients ---------------------------------------------------

ACCELERATE_CLIP = """\
import torch
from accelerate import Accelerator

accelerator = Accelerator(mixed_precision="fp16")
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for x, y in loader:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    accelerator.backward(loss)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
"""

AMP211_INVALID = [
    ACCELERATE_CLIP,
    # a precision chosen at run time that may be fp16; the accelerator handed to the step function
    """\
    import accelerate
    from torch.nn.utils import clip_grad_value_

    def train(accelerator, model, optimizer, loader):
        for batch in loader:
            accelerator.backward(model(batch).mean())
            clip_grad_value_(model.parameters(), 0.5)
            optimizer.step()

    def main(args):
        accelerator = accelerate.Accelerator(mixed_precision=args.mixed_precision)
        train(accelerator, model, optimizer, loader)
    """,
    # a name holding "fp16" on one branch
    """\
    import torch
    from accelerate import Accelerator
    precision = "fp16" if use_fp16 else "no"
    accelerator = Accelerator(mixed_precision=precision)
    for x in loader:
        accelerator.backward(model(x).sum())
        if accelerator.sync_gradients:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    """,
]

AMP211_VALID = [
    # Accelerate's own clip unscales first
    ACCELERATE_CLIP.replace("torch.nn.utils.clip_grad_norm_", "accelerator.clip_grad_norm_"),
    # unscaled by hand first
    ACCELERATE_CLIP.replace("    torch.nn.utils.clip", "    accelerator.unscale_gradients()\n    torch.nn.utils.clip"),
    # bfloat16 and no mixed precision do not scale
    ACCELERATE_CLIP.replace('"fp16"', '"bf16"'),
    ACCELERATE_CLIP.replace('"fp16"', '"no"'),
    ACCELERATE_CLIP.replace('mixed_precision="fp16"', ""),
    # a name that can only be "bf16"
    ACCELERATE_CLIP.replace('mixed_precision="fp16"', "mixed_precision=precision").replace(
        "accelerator = ", 'precision = "bf16"\naccelerator = '),
    # clipping after the step: the step already unscaled
    """\
    import torch
    from accelerate import Accelerator
    accelerator = Accelerator(mixed_precision="fp16")
    for x in loader:
        accelerator.backward(model(x).sum())
        optimizer.step()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    """,
    # no Accelerator: a trainer's own backward is not Accelerate's
    """\
    import torch
    for x in loader:
        trainer.backward(model(x).sum())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    """,
]


@pytest.mark.parametrize("source", AMP211_INVALID)
def test_amp211_fires(source):
    assert len(found("AMP211", source)) == 1


@pytest.mark.parametrize("source", AMP211_VALID)
def test_amp211_silent(source):
    assert found("AMP211", source) == []


def test_amp211_says_when_the_precision_is_chosen_at_run_time():
    [diagnostic] = found("AMP211", AMP211_INVALID[1])
    assert 'when `mixed_precision` (args.mixed_precision) is "fp16"' in diagnostic.message


def test_amp211_fix_uses_accelerates_clip():
    assert "    accelerator.clip_grad_norm_(model.parameters(), 1.0)\n" in fixed("AMP211", ACCELERATE_CLIP)
    value = fixed("AMP211", AMP211_INVALID[1])
    assert "accelerator.clip_grad_value_(model.parameters(), 0.5)" in value


def test_amp211_no_fix_for_keywords_accelerate_lacks():
    source = ACCELERATE_CLIP.replace("1.0)", "1.0, foreach=True)")
    [diagnostic] = found("AMP211", source)
    assert diagnostic.fix is None


# -- AMP212 apex-backward-outside-scale-loss ---------------------------------------------------

APEX_ADVERSARIAL = """\
from apex import amp

model, optimizer = amp.initialize(model, optimizer, opt_level="O1")
for x, y in loader:
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    with amp.scale_loss(loss, optimizer) as scaled_loss:
        scaled_loss.backward()
    adversarial = criterion(model(perturb(x)), y)
    adversarial.backward()
    optimizer.step()
"""

AMP212_INVALID = [
    APEX_ADVERSARIAL,
    # the auxiliary backward before the scaled one
    """\
    from apex import amp
    model, optimizer = amp.initialize(model, optimizer)
    for x, y in loader:
        aux_loss.backward(retain_graph=True)
        with amp.scale_loss(loss, optimizer) as scaled_loss:
            scaled_loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    """,
    # apex's amp stored in a field and used through it (UER-py's fine-tuning scripts)
    """\
    def train_model(args, model, optimizer, loss):
        if args.fp16:
            with args.amp.scale_loss(loss, optimizer) as scaled_loss:
                scaled_loss.backward()
        else:
            loss.backward()
        if args.use_adv:
            loss_adv = model(perturbed)
            loss_adv.backward()
        optimizer.step()

    def main(args, model, optimizer):
        if args.fp16:
            from apex import amp
            model, optimizer = amp.initialize(model, optimizer, opt_level=args.fp16_opt_level)
            args.amp = amp
    """,
]

AMP212_VALID = [
    # both losses scaled
    APEX_ADVERSARIAL.replace(
        "    adversarial.backward()\n",
        "    with amp.scale_loss(adversarial, optimizer) as scaled:\n        scaled.backward()\n"),
    # the fp32 branch of `if fp16:` (tacotron2, semantic-segmentation)
    """\
    from apex import amp
    if args.fp16:
        model, optimizer = amp.initialize(model, optimizer)
    for x, y in loader:
        loss = criterion(model(x), y)
        if args.fp16:
            with amp.scale_loss(loss, optimizer) as scaled_loss:
                scaled_loss.backward()
        else:
            loss.backward()
        optimizer.step()
    """,
    # the fp32 path under the negated test
    """\
    from apex import amp
    model, optimizer = amp.initialize(model, optimizer, enabled=args.fp16)
    for x, y in loader:
        if args.fp16:
            with amp.scale_loss(loss, optimizer) as scaled_loss:
                scaled_loss.backward()
        if not args.fp16:
            loss.backward()
        optimizer.step()
    """,
    # another optimizer's backward (a network apex does not manage)
    """\
    from apex import amp
    model, optimizer = amp.initialize(model, optimizer)
    for x in loader:
        with amp.scale_loss(loss, optimizer) as scaled_loss:
            scaled_loss.backward()
        optimizer.step()
        critic_loss.backward()
        critic_optimizer.step()
    """,
    # gradients zeroed between: the two backwards feed different steps
    """\
    from apex import amp
    model, optimizer = amp.initialize(model, optimizer)
    for x in loader:
        warmup_loss.backward()
        optimizer.zero_grad()
        with amp.scale_loss(loss, optimizer) as scaled_loss:
            scaled_loss.backward()
        optimizer.step()
    """,
    # a field's `scale_loss` where the module stores no apex amp in that field
    """\
    from apex import amp
    model, optimizer = amp.initialize(model, optimizer)
    for x in loader:
        with args.amp.scale_loss(loss, optimizer) as scaled_loss:
            scaled_loss.backward()
        aux_loss.backward()
        optimizer.step()
    """,
    # no amp.initialize in the module: scale_loss is not known to scale
    APEX_ADVERSARIAL.replace('model, optimizer = amp.initialize(model, optimizer, opt_level="O1")\n', ""),
]


@pytest.mark.parametrize("source", AMP212_INVALID)
def test_amp212_fires(source):
    [diagnostic] = found("AMP212", source)
    assert diagnostic.fix is None


@pytest.mark.parametrize("source", AMP212_VALID)
def test_amp212_silent(source):
    assert found("AMP212", source) == []


# -- AMP213 scaler-without-autocast -------------------------------------------------------------

SCALER_ONLY = """\
import torch

scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""

AMP213_INVALID = [
    SCALER_ONLY,
    # enabled by a flag, and nothing else uses the flag for autocast
    SCALER_ONLY.replace('torch.amp.GradScaler("cuda")', "torch.cuda.amp.GradScaler(enabled=args.amp)"),
    # a trainer class keeps the scaler
    """\
    import torch

    class Trainer:
        def __init__(self, model):
            self.model = model
            self.scaler = torch.amp.GradScaler()

        def step(self, x, optimizer):
            loss = self.model(x).mean()
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

    trainer = Trainer(model)
    for x in loader:
        trainer.step(x, optimizer)
    """,
    # RAFT's shim: the import, and a do-nothing class for a PyTorch without AMP (the fallback runs
    # only where the import fails)
    SCALER_ONLY.replace('scaler = torch.amp.GradScaler("cuda")',
                        "try:\n    from torch.cuda.amp import GradScaler\nexcept ImportError:\n"
                        "    class GradScaler:\n        def __init__(self, enabled=False):\n            pass\n"
                        "scaler = GradScaler(enabled=args.mixed_precision)"),
    # an integer dtype is no precision choice (FlowFormer's data loader: `np.loadtxt(..., dtype=np.int32)`)
    SCALER_ONLY.replace("for x, y", "split = np.loadtxt('split.txt', dtype=np.int32)\nids = torch.zeros(3, dtype=int)\nfor x, y"),
    # prose is not code: a comment or a docstring that names autocast does not enter it
    '"""Trains the classifier; the autocast was taken out while debugging."""\n'
    + SCALER_ONLY.replace("    optimizer.zero_grad()\n", "    optimizer.zero_grad()  # TODO: add autocast back\n"),
]

AMP213_VALID = [
    # a class of the module's own, not a fallback for a failed import: not a GradScaler
    SCALER_ONLY.replace('scaler = torch.amp.GradScaler("cuda")',
                        "from torch.cuda.amp import GradScaler\nclass GradScaler:\n    pass\nscaler = GradScaler()"),
    # the forward runs under autocast
    SCALER_ONLY.replace(
        "    loss = torch", '    with torch.autocast("cuda"):\n        loss = torch'),
    # autocast as a decorator of the forward
    SCALER_ONLY + '\n@torch.autocast("cuda")\ndef forward(self, x):\n    return x\n',
    # a context manager variable entered elsewhere
    SCALER_ONLY.replace("for x, y", "ctx = make_amp_context()\nwith ctx:\n  pass\nfor x, y").replace(
        "make_amp_context", "get_autocast"),
    # float16 weights, or weights in a dtype chosen elsewhere
    SCALER_ONLY.replace("for x, y", "model.half()\nfor x, y"),
    SCALER_ONLY.replace("for x, y", "model.to(device, dtype=cfg.dtype)\nfor x, y"),
    # switched off
    SCALER_ONLY.replace('torch.amp.GradScaler("cuda")', 'torch.amp.GradScaler("cuda", enabled=False)'),
    # a scaler handed in: where it comes from (and what runs around the step) is not seen
    """\
    import torch

    def train_step(model, x, optimizer, scaler):
        scaler.scale(model(x).mean()).backward()
        scaler.step(optimizer)
        scaler.update()
    """,
    # precision owned by Accelerate
    "from accelerate import Accelerator\n" + SCALER_ONLY,
    # a wrapper whose callers (elsewhere) may run the forward under autocast (timm/MAE NativeScaler)
    """\
    import torch

    class NativeScaler:
        def __init__(self):
            self._scaler = torch.amp.GradScaler("cuda")

        def __call__(self, loss, optimizer):
            self._scaler.scale(loss).backward()
            self._scaler.step(optimizer)
            self._scaler.update()
    """,
    # a step function nothing here calls: its callers are not seen
    """\
    import torch
    scaler = torch.amp.GradScaler("cuda")

    def train_one_epoch(model, loader, optimizer):
        for x in loader:
            scaler.scale(model(x).mean()).backward()
            scaler.step(optimizer)
            scaler.update()
    """,
]


@pytest.mark.parametrize("source", AMP213_INVALID)
def test_amp213_fires(source):
    [diagnostic] = found("AMP213", source)
    assert diagnostic.fix is None


@pytest.mark.parametrize("source", AMP213_VALID)
def test_amp213_silent(source):
    assert found("AMP213", source) == []


def test_amp213_silent_when_an_imported_project_module_autocasts(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
        "        with torch.autocast('cuda'):\n            return self.body(x)\n"
    )
    script = tmp_path / "train.py"
    script.write_text("from net import Net\nmodel = Net()\n" + SCALER_ONLY)
    settings = Settings(select=frozenset({"AMP213"}), project_root=str(tmp_path))

    def check():
        return [d.code for d in ampfix.check_source(script.read_text(), str(script), settings)]
    assert check() == []
    (tmp_path / "net.py").write_text("import torch\nclass Net(torch.nn.Module):\n    pass\n")
    assert check() == ["AMP213"]


# -- AMP214 fsdp-float16-without-sharded-scaler -------------------------------------------------

FSDP_FP16 = """\
import torch
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import MixedPrecision

policy = MixedPrecision(param_dtype=torch.float16, reduce_dtype=torch.float16)
model = FSDP(model, mixed_precision=policy)
scaler = torch.amp.GradScaler("cuda", init_scale=1024.0)
"""

FSDP_AUTOCAST = """\
import torch
from torch.distributed.fsdp import FullyShardedDataParallel
model = FullyShardedDataParallel(model)
scaler = torch.cuda.amp.GradScaler()
for x in loader:
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(x).sum()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""

AMP214_INVALID = [
    FSDP_FP16,
    # FSDP1 with float16 autocast and the old class
    FSDP_AUTOCAST,
]

AMP214_VALID = [
    # fully_shard (FSDP2): its gradients are DTensors, whose inf check DTensor reduces over the mesh
    FSDP_AUTOCAST.replace("from torch.distributed.fsdp import FullyShardedDataParallel",
                          "from torch.distributed.fsdp import fully_shard").replace(
        "model = FullyShardedDataParallel(model)", "fully_shard(model)"),
    # NO_SHARD: every rank holds the whole gradient
    FSDP_AUTOCAST.replace("FullyShardedDataParallel(model)",
                          "FullyShardedDataParallel(model, sharding_strategy=ShardingStrategy.NO_SHARD)"),
    # the sharded scaler
    FSDP_FP16.replace("torch.amp.GradScaler", "ShardedGradScaler").replace(
        "import torch\n", "import torch\nfrom torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler\n"),
    # bfloat16: no scaler is needed, and AMP207 says so
    FSDP_FP16.replace("torch.float16", "torch.bfloat16"),
    # no FSDP: a plain GradScaler is right
    """\
    import torch
    model = torch.nn.parallel.DistributedDataParallel(model)
    scaler = torch.amp.GradScaler("cuda")
    """,
    # switched off
    FSDP_FP16.replace('init_scale=1024.0', "enabled=False"),
    # the plain scaler is for the path without FSDP
    FSDP_FP16.replace(
        'torch.amp.GradScaler("cuda", init_scale=1024.0)', 'ShardedGradScaler() if fsdp else torch.amp.GradScaler("cuda")',
    ).replace("import torch\n", "import torch\nfrom torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler\n"),
]


@pytest.mark.parametrize("source", AMP214_INVALID)
def test_amp214_fires(source):
    assert len(found("AMP214", source)) == 1


@pytest.mark.parametrize("source", AMP214_VALID)
def test_amp214_silent(source):
    assert found("AMP214", source) == []


def test_amp214_fix_imports_and_uses_the_sharded_scaler():
    result = fixed("AMP214", FSDP_FP16)
    assert "from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler\n" in result
    assert 'scaler = ShardedGradScaler("cuda", init_scale=1024.0)\n' in result
    old = fixed("AMP214", AMP214_INVALID[1])
    assert "scaler = ShardedGradScaler()\n" in old


def test_amp214_no_fix_where_fsdp_is_conditional():
    # physicsnemo's domino: single-GPU runs have no process group, where ShardedGradScaler raises
    source = FSDP_AUTOCAST.replace("model = FullyShardedDataParallel(model)",
                                   "if world_size > 1:\n    model = FullyShardedDataParallel(model)")
    [diagnostic] = found("AMP214", source)
    assert diagnostic.fix is None


def test_amp214_no_fix_for_positional_arguments_whose_order_differs():
    # GradScaler(device, init_scale, growth_factor, ...) vs ShardedGradScaler(device, init_scale, backoff_factor, ...)
    source = FSDP_FP16.replace('"cuda", init_scale=1024.0', '"cuda", 1024.0, 2.0')
    [diagnostic] = found("AMP214", source)
    assert diagnostic.fix is None


# -- AMP304 zero-grad-inside-accumulation-window -----------------------------------------------

WIPED_WINDOW = """\
import torch

for i, (x, y) in enumerate(loader):
    if (i + 1) % accum_steps == 0:
        optimizer.zero_grad()
    loss = criterion(model(x), y) / accum_steps
    loss.backward()
    if (i + 1) % accum_steps == 0:
        optimizer.step()
"""

# Accelerate's prepared optimizer zeroes only on the sync step (DiffSynth-Studio before #1404)
ACCELERATE_WIPED_WINDOW = """\
from accelerate import Accelerator

accelerator = Accelerator(gradient_accumulation_steps=4)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    with accelerator.accumulate(model):
        optimizer.zero_grad()
        loss = model(batch)
        accelerator.backward(loss)
        optimizer.step()
"""

AMP304_INVALID = [
    WIPED_WINDOW,
    # inside the gate itself, before the step: the step sees no gradients
    """\
    for i, (x, y) in enumerate(loader):
        (criterion(model(x), y) / accum).backward()
        if (i + 1) % accum == 0:
            optimizer.zero_grad()
            optimizer.step()
    """,
    # with a scaler
    """\
    for step, batch in enumerate(loader):
        if step % accumulation_steps == 0:
            model.zero_grad()
        scaler.scale(model(batch).loss / accumulation_steps).backward()
        if step % accumulation_steps == 0:
            scaler.step(optimizer)
            scaler.update()
    """,
    ACCELERATE_WIPED_WINDOW,
]

AMP304_VALID = [
    # zeroed after the step
    """\
    for i, (x, y) in enumerate(loader):
        (criterion(model(x), y) / accum).backward()
        if (i + 1) % accum == 0:
            optimizer.step()
            optimizer.zero_grad()
    """,
    # zeroed at the start of a window (another condition)
    WIPED_WINDOW.replace("    if (i + 1) % accum_steps == 0:\n        optimizer.zero_grad()",
                         "    if i % accum_steps == 0:\n        optimizer.zero_grad()"),
    # zeroed on every micro-batch: AMP303's finding, not this one's
    WIPED_WINDOW.replace("    if (i + 1) % accum_steps == 0:\n        optimizer.zero_grad()",
                         "    optimizer.zero_grad()"),
    # another optimizer's gradients
    WIPED_WINDOW.replace("optimizer.zero_grad()", "d_optimizer.zero_grad()").replace(
        "import torch\n", "import torch\noptimizer = torch.optim.SGD(g, 0.1)\nd_optimizer = torch.optim.SGD(d, 0.1)\n"),
    # the counter moves between the two tests: the start and the end of a window
    """\
    step = 0
    for x, y in loader:
        if step % accum == 0:
            optimizer.zero_grad()
        (criterion(model(x), y) / accum).backward()
        step += 1
        if step % accum == 0:
            optimizer.step()
    """,
    # two optimizers stepped in the gate, each zeroed after its own step
    """\
    import torch
    opt_g = torch.optim.Adam(g.parameters())
    opt_d = torch.optim.Adam(d.parameters())
    for i, x in enumerate(loader):
        (loss(x) / accum).backward()
        if (i + 1) % accum == 0:
            opt_g.step()
            opt_g.zero_grad()
            opt_d.step()
            opt_d.zero_grad()
    """,
    # Accelerate's window zeroed after the step
    ACCELERATE_WIPED_WINDOW.replace("        optimizer.zero_grad()\n", "").replace(
        "        optimizer.step()\n", "        optimizer.step()\n        optimizer.zero_grad()\n"),
    # a torch optimizer Accelerate did not prepare: zeroed on every micro-batch, not gated
    ACCELERATE_WIPED_WINDOW.replace("model, optimizer, loader = ", "model, loader = ").replace(
        "prepare(model, optimizer, loader)", "prepare(model, loader)"),
    # the model's zero_grad (not gated by Accelerate)
    ACCELERATE_WIPED_WINDOW.replace("optimizer.zero_grad()", "model.zero_grad()"),
    # no accumulation: a step on every iteration
    """\
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    """,
    # labml's StyleGAN: the generator's zero_grad opens its own window, after the
    # discriminator's window has been stepped
    """\
    for idx in range(steps):
        disc_optimizer.zero_grad()
        for i in range(accum):
            (disc_loss(real(), fake()) / accum).backward()
        disc_optimizer.step()
        gen_optimizer.zero_grad()
        for i in range(accum):
            (gen_loss(fake()) / accum).backward()
        gen_optimizer.step()
    """,
]


@pytest.mark.parametrize("source", AMP304_INVALID)
def test_amp304_fires(source):
    [diagnostic] = found("AMP304", source)
    assert diagnostic.fix is None


@pytest.mark.parametrize("source", AMP304_VALID)
def test_amp304_silent(source):
    assert found("AMP304", source) == []


def test_amp304_and_amp303_are_disjoint():
    every_micro_batch = AMP304_VALID[2]
    settings = Settings(select=frozenset({"AMP303", "AMP304"}))
    assert [d.code for d in ampfix.check_source(textwrap.dedent(every_micro_batch), "t.py", settings)] == ["AMP303"]
    assert [d.code for d in ampfix.check_source(WIPED_WINDOW, "t.py", settings)] == ["AMP304"]


# -- the prefilter is sound on every case ------------------------------------------------------

CASES = [
    (code, source)
    for code, sources in [
        ("AMP211", AMP211_INVALID + AMP211_VALID), ("AMP212", AMP212_INVALID + AMP212_VALID),
        ("AMP213", AMP213_INVALID + AMP213_VALID), ("AMP214", AMP214_INVALID + AMP214_VALID),
        ("AMP304", AMP304_INVALID + AMP304_VALID),
    ]
    for source in sources
]


@pytest.mark.parametrize("code, source", CASES)
def test_the_prefilter_hides_no_finding(code, source):
    settings = Settings(select=frozenset({code}))
    text = textwrap.dedent(source)
    filtered = ampfix.check_source(text, "t.py", settings)
    unfiltered = ampfix.check_source(text, "t.py", settings, prefilter=False)
    assert [(d.code, d.start) for d in filtered] == [(d.code, d.start) for d in unfiltered]


def test_amp211_reads_accelerates_old_fp16_switch():
    old = ACCELERATE_CLIP.replace('mixed_precision="fp16"', "fp16=args.fp16")
    [diagnostic] = found("AMP211", old)
    assert "when `fp16` (args.fp16) is true" in diagnostic.message
    assert found("AMP211", ACCELERATE_CLIP.replace('mixed_precision="fp16"', "fp16=False")) == []


def test_amp212_reads_amp_initialize_in_the_script_beside_the_step_module(tmp_path):
    step = tmp_path / "engine.py"
    step.write_text(textwrap.dedent("""\
        from apex import amp

        def train_one_epoch(model, loader, optimizer):
            for x, y in loader:
                with amp.scale_loss(criterion(model(x), y), optimizer) as scaled_loss:
                    scaled_loss.backward()
                aux_loss(model).backward()
                optimizer.step()
                optimizer.zero_grad()
        """))
    settings = Settings(select=frozenset({"AMP212"}), project_root=str(tmp_path))

    def check():
        return [d.code for d in ampfix.check_source(step.read_text(), str(step), settings)]
    assert check() == []
    (tmp_path / "main.py").write_text(
        "from apex import amp\nfrom engine import train_one_epoch\n"
        "model, optimizer = amp.initialize(model, optimizer, opt_level='O2')\n"
    )
    assert check() == ["AMP212"]


def test_amp211_silent_when_the_receiver_is_something_else_than_an_accelerator():
    source = ACCELERATE_CLIP.replace("for x, y in loader:", "accelerator = MyTrainer()\nfor x, y in loader:")
    assert found("AMP211", source) == []


def test_amp211_fires_in_accelerates_accumulation_shape_and_fixes_under_the_sync_condition():
    source = """\
import torch
from accelerate import Accelerator


def main(args):
    accelerator = Accelerator(gradient_accumulation_steps=4, mixed_precision=args.mixed_precision)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
"""
    [diagnostic] = found("AMP211", source)
    assert diagnostic.fix is not None
    assert "                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)\n" in fixed("AMP211", source)


def test_amp212_says_what_happens_to_the_plain_gradients_before_and_after_the_region():
    [after] = found("AMP212", AMP212_INVALID[0])
    assert "never scaled" in after.message
    [before] = found("AMP212", AMP212_INVALID[1])
    assert "divided by the loss scale" in before.message
