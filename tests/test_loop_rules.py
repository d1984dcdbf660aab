"""AMP2xx-AMP4xx: each rule fires on the bug, stays silent on the correct form and on the
real-world shapes that naive rules get wrong, and fixes exactly as documented."""

import textwrap

import pytest

import ampfix
from ampfix.settings import Settings
from conftest import codes, fixed

HEAD = "import torch\n"


def loop(body, head=HEAD):
    return head + textwrap.dedent(body)


def only(code, source):
    return [c for c in codes(source) if c == code]


# -- AMP201 ----------------------------------------------------------------------------------------

CLIP_BUG = loop("""
for x, y in loader:
    scaler.scale(loss_fn(model(x), y)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""")


def test_amp201_fires_and_inserts_unscale():
    assert only("AMP201", CLIP_BUG) == ["AMP201"]
    assert "    scaler.unscale_(optimizer)\n    torch.nn.utils.clip_grad_norm_" in fixed(CLIP_BUG, unsafe=True)


# apex: the clip inside `with amp.scale_loss(...)` sees the scaled gradients (PyTorch-Tutorial-2nd's GPT)
APEX_CLIP_BUG = loop("""
from apex import amp
model, optimizer = amp.initialize(model, optimizer, opt_level="O1")
for x, y in loader:
    loss = model(x).sum()
    with amp.scale_loss(loss, optimizer) as scaled_loss:
        scaled_loss.backward()
        torch.nn.utils.clip_grad_norm_(amp.master_params(optimizer), 1.0)
    optimizer.step()
    optimizer.zero_grad()
""")


def test_amp201_apex_clip_inside_scale_loss_is_reported_without_a_fix():
    diag, = [d for d in ampfix.check_source(APEX_CLIP_BUG, "t.py") if d.code == "AMP201"]
    assert diag.fix is None and "apex unscales them when the block exits" in diag.message


@pytest.mark.parametrize("source", [
    # clipped after the block: apex has unscaled the gradients
    APEX_CLIP_BUG.replace("        torch.nn.utils.clip_grad_norm_", "    torch.nn.utils.clip_grad_norm_"),
    # without `amp.initialize`, `scale_loss` yields the loss as it is
    APEX_CLIP_BUG.replace('model, optimizer = amp.initialize(model, optimizer, opt_level="O1")\n', ""),
    # the clip before the backward (of the previous step's gradients, zeroed after the step)
    APEX_CLIP_BUG.replace(
        "        scaled_loss.backward()\n        torch.nn.utils.clip_grad_norm_(amp.master_params(optimizer), 1.0)\n",
        "        torch.nn.utils.clip_grad_norm_(amp.master_params(optimizer), 1.0)\n        scaled_loss.backward()\n"),
])
def test_amp201_apex_clip_silent(source):
    assert only("AMP201", source) == []


@pytest.mark.parametrize("source", [
    # unscaled first
    CLIP_BUG.replace("    torch.nn.utils.clip", "    scaler.unscale_(optimizer)\n    torch.nn.utils.clip"),
    # unscale conditional together with the clip (yolov5, Pytorch-UNet fixed)
    loop("""
    for x, y in loader:
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
    """),
    # no scaler: plain fp32 clipping
    loop("""
    for x, y in loader:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    """),
    # the scaled and the clipping branches never run together (minGPT's else branch)
    loop("""
    if use_amp:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    """),
    # a helper that unscales internally is not a clip call (timm NativeScaler, accelerate)
    loop("""
    scaler.scale(loss).backward()
    accelerator.clip_grad_norm_(model.parameters(), 1.0)
    dispatch_clip_grad(params, 1.0)
    """),
    # tabm: `is None` and `is not None` of one scaler are one test, taken both ways
    loop("""
    for x in loader:
        if grad_scaler is None:
            loss.backward()
        else:
            grad_scaler.scale(loss).backward()
        if grad_scaler is not None:
            grad_scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if grad_scaler is None:
            optimizer.step()
        else:
            grad_scaler.step(optimizer)
            grad_scaler.update()
    """),
    # aerojepa: skipping `if world_size > 1 or clip > 0:` decides that `clip > 0` is false
    loop("""
    for x in loader:
        scaler.scale(loss).backward()
        if world_size > 1 or grad_clip_norm > 0.0:
            scaler.unscale_(optimizer)
        if grad_clip_norm > 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
    """),
])
def test_amp201_silent(source):
    assert only("AMP201", source) == []


def test_amp201_an_unscale_under_a_conjunction_does_not_cover_its_operand():
    # `a and clip` skipped says nothing about `clip` alone: that path clips scaled gradients
    source = loop("""
    for x in loader:
        scaler.scale(loss).backward()
        if world_size > 1 and grad_clip_norm > 0.0:
            scaler.unscale_(optimizer)
        if grad_clip_norm > 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
    """)
    assert only("AMP201", source) == ["AMP201"]


def test_amp201_clip_from_import_alias():
    source = "from torch.nn.utils import clip_grad_norm_ as clip\nscaler.scale(loss).backward()\nclip(params, 1.0)\nscaler.step(opt)\nscaler.update()\n"
    assert only("AMP201", source) == ["AMP201"]


def test_amp201_without_a_visible_optimizer_reports_only():
    source = loop("""
    def backward_and_clip(scaler, loss, params):
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
    """)
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP201"]
    assert diag.fix is None


# -- AMP202 / AMP203 / AMP204 ---------------------------------------------------------------------

def test_amp202_discarded_scale():
    source = loop("""
    scaler.scale(loss)
    loss.backward()
    scaler.step(optimizer)
    scaler.update()
    """)
    assert only("AMP202", source) == ["AMP202"]
    assert fixed(source, unsafe=True) == loop("""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    """)


def test_amp202_plain_backward_before_scaler_step():
    source = loop("""
    loss.backward()
    self.scaler.step(self.optimizer)
    self.scaler.update()
    """)
    assert fixed(source, unsafe=True).startswith(HEAD + "\nself.scaler.scale(loss).backward()\n")


def test_amp202_silent_on_branch_without_the_scaler():
    source = loop("""
    if use_amp:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    if use_amp:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    """)
    assert codes(source) == []


TRAINER_BACKWARD = loop("""
class Trainer:
    def train(self, loader):
        for x, y in loader:
            with torch.autocast("cuda", enabled=self.scaler is not None):
                loss = self.model(x).sum()
            LOSS
            self._backward(loss)

    def _backward(self, loss):
        self.optimizer.zero_grad()
        loss.backward()
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
""")


@pytest.mark.parametrize("source", [
    # OCP's trainers: the caller scales the loss it hands to the backward helper
    TRAINER_BACKWARD.replace("LOSS", "loss = self.scaler.scale(loss) if self.scaler else loss"),
    # the same through a name in one function
    loop("""
    for x, y in loader:
        loss = model(x).sum()
        loss = scaler.scale(loss) if use_amp else loss
        loss.backward()
        scaler.step(optimizer)
        scaler.update()
    """),
    # physicsnemo's xmgn: the device test is the same across the partition loops (nothing rebinds it)
    loop("""
    for batch in loader:
        for partitions in batch:
            for partition in partitions:
                loss = model(partition).sum()
                if self.device.type == "cuda":
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
        if self.device.type == "cuda":
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
    """),
    # a helper no call of its module runs: its callers (a subclass elsewhere) may scale the loss
    loop("""
    class Base:
        def _backward(self, loss):
            loss.backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
    """),
])
def test_amp202_silent_when_the_loss_may_be_scaled_already(source):
    assert only("AMP202", source) == []


def test_amp202_a_test_with_a_call_may_change_round_a_loop():
    # `ready()` may answer otherwise on the next pass: that pass's plain backward reaches the step
    source = loop("""
    for batch in loader:
        for part in batch:
            loss = model(part).sum()
            if ready():
                scaler.scale(loss).backward()
            else:
                loss.backward()
        if ready():
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    """)
    assert only("AMP202", source) == ["AMP202"]


def test_amp202_fires_when_every_caller_passes_the_unscaled_loss():
    source = TRAINER_BACKWARD.replace("LOSS", "loss = loss * 1.0")
    assert only("AMP202", source) == ["AMP202"]


def test_amp203_optimizer_step_after_scaled_backward():
    source = loop("""
    scaler.scale(loss).backward()
    optimizer.step()
    """)
    assert only("AMP203", source) == ["AMP203"]
    assert fixed(source, unsafe=True) == loop("""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    """)


def test_amp203_a_loss_scaled_through_a_name_is_scaled():
    # accelerate's ms_amp benchmark: `loss = scaler.scale(loss)`, then `loss.backward()`
    source = loop("""
    def train(model, loader, optimizer, scaler):
        for x, y in loader:
            loss = scaler.scale(model(x).sum())
            loss.backward()
            optimizer.step()
    """)
    assert codes(source) == ["AMP203"]
    assert only("AMP201", source.replace("optimizer.step()", "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
                                                         "        scaler.step(optimizer)\n        scaler.update()")) == ["AMP201"]


@pytest.mark.parametrize("source", [
    loop("scaler.scale(loss).backward()\nscheduler.step()\nscaler.step(optimizer)\nscaler.update()\n"),
    loop("scaler.scale(loss).backward()\nscaler.step(optimizer)\nscaler.update()\nlr_scheduler.step()\nema.step()\n"),
    loop("loss.backward()\noptimizer.step()\n"),
])
def test_amp203_silent(source):
    assert only("AMP203", source) == []


def test_amp204_missing_update():
    source = loop("""
    for batch in loader:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
    """)
    assert only("AMP204", source) == ["AMP204"]
    assert fixed(source, unsafe=True).endswith("    scaler.step(optimizer)\n    scaler.update()\n")


def test_amp204_update_twice():
    source = loop("scaler.scale(loss).backward()\nscaler.step(optimizer)\nscaler.update()\nscaler.update()\n")
    assert only("AMP204", source) == ["AMP204"]
    assert fixed(source, unsafe=True).count("scaler.update()") == 1


def test_amp204_silent_when_update_lives_in_another_method():
    source = loop("""
    class Trainer:
        def step(self):
            self.scaler.step(self.optimizer)

        def end_step(self):
            self.scaler.update()
    """)
    assert only("AMP204", source) == []


def test_amp204_update_with_a_new_scale_counts():
    source = loop("scaler.step(optimizer)\nscaler.update(new_scale)\n")
    assert only("AMP204", source) == []


# -- AMP205 / AMP206 / AMP207 / AMP208 -----------------------------------------------------------

def test_amp205_hoists_out_of_the_loop_as_an_unsafe_fix():
    source = loop("""
    for epoch in range(3):
        scaler = torch.amp.GradScaler("cuda")
        train(scaler)
    """)
    assert only("AMP205", source) == ["AMP205"]
    assert fixed(source) == source  # unsafe: not with --apply alone
    assert fixed(source, unsafe=True) == loop("""
    scaler = torch.amp.GradScaler("cuda")
    for epoch in range(3):
        train(scaler)
    """)


def test_amp205_not_hoisted_when_arguments_change_in_the_loop():
    source = loop("""
    for epoch in range(3):
        init = 2.0 ** epoch
        scaler = torch.amp.GradScaler("cuda", init_scale=init)
    """)
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP205"]
    assert diag.fix is None


def test_amp205_per_epoch_function_and_silent_init():
    per_epoch = loop("def train_one_epoch(model):\n    scaler = torch.amp.GradScaler()\n")
    assert only("AMP205", per_epoch) == ["AMP205"]
    init = loop("class T:\n    def __init__(self):\n        self.scaler = torch.amp.GradScaler()\n")
    lazy = loop("class R:\n    @property\n    def scaler(self):\n        if self._s is None:\n            self._s = torch.cuda.amp.GradScaler()\n        return self._s\n")
    assert only("AMP205", init) == [] and only("AMP205", lazy) == []


CHECKPOINT = loop("""
scaler = torch.amp.GradScaler()
ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
torch.save(ckpt, path)
""")


def test_amp206_fires_and_adds_the_key_unsafely():
    assert only("AMP206", CHECKPOINT) == ["AMP206"]
    assert '"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}' in fixed(CHECKPOINT, unsafe=True)


@pytest.mark.parametrize("source", [
    CHECKPOINT.replace("optimizer.state_dict()}", "optimizer.state_dict(), 'scaler': scaler.state_dict()}"),
    CHECKPOINT.replace("scaler = torch.amp.GradScaler()\n", ""),  # no scaler in this module
    CHECKPOINT + "ckpt['amp_scaler'] = scaler.state_dict()\n",  # added later (dino)
    loop("scaler = torch.amp.GradScaler()\nlog(metadata={'optimizer': optimizer.state_dict(), 'epoch': 1})\n"),
    # tabm: merged with the scaler's state where there is a scaler
    CHECKPOINT.replace("optimizer.state_dict()}", "optimizer.state_dict()} | ({} if scaler is None else "
                                                    "{'grad_scaler': scaler.state_dict()})"),
    # fairchem: the training state is merged into a dict that holds the scaler's already
    loop("scaler = torch.amp.GradScaler()\nstate = {'state_dict': model.state_dict(), 'amp': scaler.state_dict()}\n"
         "state.update({'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict()})\ntorch.save(state, path)\n"),
])
def test_amp206_silent(source):
    assert only("AMP206", source) == []


def test_amp206_a_merge_into_a_dict_without_the_scaler_is_reported():
    source = loop("scaler = torch.amp.GradScaler()\nstate = {'state_dict': model.state_dict()}\n"
                  "state.update({'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict()})\ntorch.save(state, path)\n")
    assert only("AMP206", source) == ["AMP206"]


# RETFound's save_model: the scaler's branch saves it; the other has no scaler to save
SAVED_WHERE_THERE_IS_A_SCALER = loop("""
def save_model(model, optimizer, loss_scaler, path):
    if loss_scaler is not None:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": loss_scaler.state_dict()}, path)
    else:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)


loss_scaler = torch.amp.GradScaler() if use_amp else None
save_model(model, optimizer, loss_scaler, "last.pt")
""")


@pytest.mark.parametrize("test", ["loss_scaler is not None", "not loss_scaler is None", "loss_scaler"])
def test_amp206_silent_where_the_scaler_is_none(test):
    source = SAVED_WHERE_THERE_IS_A_SCALER.replace("if loss_scaler is not None:", f"if {test}:")
    assert only("AMP206", source) == []
    # the branches the other way round: the checkpoint without the scaler is where there is one
    swapped = source.replace("else:", "if True:").replace(f"if {test}:", "if False:")
    flipped = SAVED_WHERE_THERE_IS_A_SCALER.replace("if loss_scaler is not None:", "if loss_scaler is None:")
    assert only("AMP206", flipped) == ["AMP206"]
    assert only("AMP206", swapped) == ["AMP206"]


def test_amp206_dataclass_snapshot_is_reported():
    source = loop("scaler = torch.amp.GradScaler()\nsnap = Snapshot(model_state=model.state_dict(), optimizer_state=optimizer.state_dict())\n")
    assert only("AMP206", source) == ["AMP206"]


def test_amp207_bf16_scaler():
    source = loop("""
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x)
    scaler.scale(loss).backward()
    """)
    assert only("AMP207", source) == ["AMP207"]
    assert 'torch.amp.GradScaler("cuda", enabled=False)' in fixed(source, unsafe=True)


@pytest.mark.parametrize("source", [
    # nanoGPT: already conditional on the dtype
    loop("scaler = torch.amp.GradScaler(enabled=(dtype == 'float16'))\nwith torch.autocast('cuda', dtype=torch.bfloat16):\n    pass\n"),
    loop("scaler = torch.amp.GradScaler()\nwith torch.autocast('cuda', dtype=torch.float16):\n    pass\n"),
    loop("scaler = torch.amp.GradScaler()\nwith torch.autocast('cuda', dtype=amp_dtype):\n    pass\n"),
])
def test_amp207_silent(source):
    source = source + "scaler.scale(loss).backward()\n"
    assert only("AMP207", source) == []


@pytest.mark.parametrize("source", [
    loop("with torch.autocast('cuda', dtype=torch.float16):\n    loss = model(x)\nloss.backward()\noptimizer.step()\n"),
    loop("with torch.autocast('cuda'):\n    loss = model(x)\nloss.backward()\noptimizer.step()\n"),  # the CUDA default
    loop("""
    dtype = 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
    ptdtype = {'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = torch.amp.autocast(device_type='cuda', dtype=ptdtype)
    with ctx:
        loss = model(x)
    loss.backward()
    optimizer.step()
    """),
])
def test_amp208_fires(source):
    assert only("AMP208", source) == ["AMP208"]


@pytest.mark.parametrize("source", [
    loop("with torch.autocast('cuda', dtype=torch.bfloat16):\n    loss = model(x)\nloss.backward()\n"),
    loop("with torch.autocast('cpu'):\n    loss = model(x)\nloss.backward()\n"),  # CPU default: bf16
    loop("scaler = torch.amp.GradScaler()\nwith torch.autocast('cuda'):\n    loss = model(x)\nscaler.scale(loss).backward()\n"),
    loop("with torch.autocast('cuda'):\n    out = model(x)\n"),  # inference
    # a kernel timing or gradient check: no optimizer applies the gradients, nothing to underflow into
    loop("with torch.autocast('cuda', dtype=torch.float16):\n    loss = model(x)\nloss.backward()\n"),
])
def test_amp208_silent(source):
    assert only("AMP208", source) == []


# torch-ngp's testing/test_ffmlp.py: a kernel timing beside a training loop in one module
TIMING_BESIDE_TRAINING = loop("""
def time_backward(net, x):
    with torch.autocast("cuda", dtype=torch.float16):
        y = net(x)
    y.sum().backward()


def train(model, loader, optimizer):
    for x in loader:
        loss = model(x)
        loss.backward()
        optimizer.step()
""")


def test_amp208_asks_whether_an_optimizer_applies_these_gradients():
    assert only("AMP208", TIMING_BESIDE_TRAINING) == []
    # the same helper called from a loop that steps: its gradients are trained on
    helper = TIMING_BESIDE_TRAINING.replace("        loss = model(x)\n        loss.backward()\n", "        time_backward(model, x)\n")
    assert only("AMP208", helper) == ["AMP208"]


# An out-of-memory probe before training: one backward per pessimistic batch, wiped at once
OOM_PROBE = loop("""
def scan_batches_for_oom(model, batches, optimizer):
    for batch in batches:
        try:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = model(batch)
            loss.backward()
            optimizer.zero_grad()
        except RuntimeError:
            print("out of memory")
            raise


def run(model, batches, loader, optimizer):
    scan_batches_for_oom(model, batches, optimizer)
    for x in loader:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
""")


def test_amp208_gradients_wiped_before_the_helper_returns_are_not_trained_on():
    found = [d.location.row for d in ampfix.check_source(OOM_PROBE, "t.py") if d.code == "AMP208"]
    assert found == [OOM_PROBE.splitlines().index("        loss.backward()") + 1]  # run's, not the probe's
    # zero_grad on one path only: the other returns with the gradients, to a caller that steps
    partial = OOM_PROBE.replace("            optimizer.zero_grad()\n", "            if wipe:\n                optimizer.zero_grad()\n")
    assert len([d for d in ampfix.check_source(partial, "t.py") if d.code == "AMP208"]) == 2
    # an exception handler that swallows the error returns with the gradients too
    swallowed = OOM_PROBE.replace("            raise\n", "")
    assert len([d for d in ampfix.check_source(swallowed, "t.py") if d.code == "AMP208"]) == 2


# -- AMP301 / AMP302 / AMP303 ----------------------------------------------------------------------

ACCUM = loop("""
criterion = torch.nn.CrossEntropyLoss()
for i, (x, y) in enumerate(loader):
    loss = criterion(model(x), y)
    loss.backward()
    if (i + 1) % accum == 0:
        optimizer.step()
        optimizer.zero_grad()
""")


def test_amp301_divides_the_loss_unsafely():
    # a bug fix changes training on purpose: unsafe, as ruff defines fix safety, mean loss or not
    assert only("AMP301", ACCUM) == ["AMP301"]
    assert fixed(ACCUM) == ACCUM
    assert "    (loss / accum).backward()\n" in fixed(ACCUM, unsafe=True)
    source = ACCUM.replace("torch.nn.CrossEntropyLoss()", "make_loss()")
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP301"]
    assert diag.fix.applicability.value == "unsafe"


TOKEN_NORMALISED = loop("""
for i, batch in enumerate(loader):
    n = (batch["labels"] != -100).sum()
    num_tokens += n
    loss = loss_step(batch) * n
    loss.backward()
    if (i + 1) % accum == 0:
        RESCALE
        optimizer.step()
        optimizer.zero_grad()
        num_tokens = 0
""")


@pytest.mark.parametrize("rescale", [
    "for p in model.parameters():\n            p.grad.div_(num_tokens)",
    "for p in model.parameters():\n            if p.grad is not None:\n                p.grad *= 1 / num_tokens",
    "torch._foreach_div_([p.grad for p in model.parameters()], num_tokens)",
    "scale_grads(model, 1 / num_tokens)",  # a helper of the module (torchtune's, through its package)
])
def test_amp301_a_window_normalised_on_the_gradient_side_is_divided(rescale):
    helper = "def scale_grads(model, factor):\n    for p in model.parameters():\n        p.grad.mul_(factor)\n"
    source = TOKEN_NORMALISED.replace("RESCALE", rescale) + helper
    assert only("AMP301", source) == []


SUB_BATCHES = """
import math
import torch.nn.functional as F


def train(model, loader, optimizer, args):
    for data, target in loader:
        optimizer.zero_grad()
        for i in range(0, len(data), args.batch_size):
            output = model(data[i:i + args.batch_size])
            loss = F.cross_entropy(output, target[i:i + args.batch_size])
            DIVIDE_BEFORE
            loss.backward()
            DIVIDE_AFTER
        optimizer.step()
"""


def test_amp301_a_loss_divided_in_place_before_its_backward_is_divided():
    """horovod's ImageNet example: ``loss.div_(math.ceil(len(data) / args.batch_size))``."""
    divided = SUB_BATCHES.replace("DIVIDE_BEFORE", "loss.div_(math.ceil(len(data) / args.batch_size))")
    assert only("AMP301", divided.replace("            DIVIDE_AFTER\n", "")) == []
    after = SUB_BATCHES.replace("            DIVIDE_BEFORE\n", "").replace("DIVIDE_AFTER", "loss.div_(2)")
    assert only("AMP301", after) == ["AMP301"]  # after the backward: the gradients are not divided
    other = SUB_BATCHES.replace("DIVIDE_BEFORE", "other = loss * 1\n            other.div_(2)")
    assert only("AMP301", other.replace("            DIVIDE_AFTER\n", "")) == ["AMP301"]


def test_amp301_a_gradient_rescale_after_the_step_does_not_divide_the_window():
    source = TOKEN_NORMALISED.replace("        RESCALE\n", "").replace(
        "        num_tokens = 0\n", "        num_tokens = 0\n    for p in model.parameters():\n        p.grad.mul_(0.5)\n")
    assert only("AMP301", source) == ["AMP301"]
    assert only("AMP301", TOKEN_NORMALISED.replace("        RESCALE\n", "")) == ["AMP301"]


@pytest.mark.parametrize("gate", [
    "if step % accum_steps == 0:",
    "if ni - last_opt_step >= accumulate:",
    "if (i + 1) % self.accum == 0 or i + 1 == len(loader):",
])
def test_amp301_accumulation_conditions(gate):
    source = ACCUM.replace("if (i + 1) % accum == 0:", gate)
    assert only("AMP301", source) == ["AMP301"]


# yolov5's shape: the loss class returns the batch mean times the batch size, with a nominal
# batch size deciding the accumulation
SUMMED_BY_A_LOSS_CLASS = loop("""
class ComputeLoss:
    def __init__(self, model):
        self.bce = torch.nn.BCEWithLogitsLoss()

    def __call__(self, p, targets):
        bs = p.shape[0]
        loss = self.bce(p, targets)
        return loss * bs, loss.detach()


compute_loss = ComputeLoss(model)
nbs = 64
accumulate = max(round(nbs / batch_size), 1)
for i, (x, y) in enumerate(loader):
    loss, loss_items = compute_loss(model(x), y)
    loss.backward()
    if (i + 1) % accumulate == 0:
        optimizer.step()
        optimizer.zero_grad()
""")


# pytorch-YOLOv4's shape: an nn.Module criterion whose forward sums its terms' sum reductions
SUMMED_IN_A_MODULE_FORWARD = loop("""
import torch.nn.functional as F


class YoloLoss(torch.nn.Module):
    def forward(self, outputs, y):
        loss_xy, loss_obj = 0, 0
        for out in outputs:
            loss_xy += F.mse_loss(out, y, reduction="sum")
            loss_obj += F.binary_cross_entropy(out, y, reduction="sum")
        loss = loss_xy + loss_obj
        return loss, loss_xy, loss_obj


criterion = YoloLoss()
for i, (x, y) in enumerate(loader):
    loss, loss_xy, loss_obj = criterion(model(x), y)
    loss.backward()
    if (i + 1) % accum == 0:
        optimizer.step()
        optimizer.zero_grad()
""")


@pytest.mark.parametrize("source", [
    ACCUM.replace("loss = criterion(model(x), y)", "loss = criterion(model(x), y) / accum"),
    ACCUM.replace("    loss.backward()", "    loss /= accum\n    loss.backward()"),
    ACCUM.replace("loss.backward()", "(loss * len(x) / len(batch)).backward()"),
    # open_flamingo: the divided loss, weighted at the backward
    ACCUM.replace("    loss.backward()\n", "    divided = loss / accum\n    (divided * args.loss_multiplier).backward()\n"),
    # a loss that sums over the samples: summing micro-batches is the design (the window's
    # gradient is the sum over its samples, as one large batch's would be)
    ACCUM.replace("torch.nn.CrossEntropyLoss()", "torch.nn.CrossEntropyLoss(reduction='sum')"),
    ACCUM.replace("loss = criterion(model(x), y)", "loss = F.mse_loss(model(x), y, reduction='sum')"),
    ACCUM.replace("loss = criterion(model(x), y)", "loss = criterion(model(x), y) * x.shape[0]"),
    SUMMED_BY_A_LOSS_CLASS,
    SUMMED_IN_A_MODULE_FORWARD,
    # no accumulation: the step runs every iteration
    loop("for x in loader:\n    loss.backward()\n    optimizer.step()\n"),
    # the backward is conditional too: not accumulation
    loop("for i, x in enumerate(loader):\n    if i % 2 == 0:\n        loss.backward()\n        optimizer.step()\n"),
    # a wrapper that takes the divided loss (MAE)
    loop("for i, x in enumerate(loader):\n    loss /= accum_iter\n    loss_scaler(loss, optimizer, update_grad=(i + 1) % accum_iter == 0)\n"),
    # UER-py: the base class's loss method raises, every override divides by the same count
    loop("""
    class Trainer:
        def forward_propagation(self, batch, model):
            raise NotImplementedError

        def train(self, loader, model, optimizer):
            for step, batch in enumerate(loader):
                loss = self.forward_propagation(batch, model)
                loss.backward()
                if step % self.accumulation_steps == 0:
                    optimizer.step()
                    model.zero_grad()


    class MlmTrainer(Trainer):
        def forward_propagation(self, batch, model):
            loss = model(*batch)
            return loss / self.accumulation_steps
    """),
    # UER-py's PGD: gradients zeroed on all but the last pass, so the K passes do not add up
    loop("""
    for x in loader:
        for t in range(K):
            attack(t)
            if t != K - 1:
                model.zero_grad()
            else:
                restore_grad()
            model(x).sum().backward()
        optimizer.step()
    """),
    # GraphEBM's Langevin sampling: each pass moves the inputs by their own gradient, then zeroes it
    loop("""
    for x in loader:
        for _ in range(ld_step):
            energy(neg_x).sum().backward()
            neg_x.data.add_(neg_x.grad.data, alpha=-step_size)
            neg_x.grad.zero_()
        energy(x).mean().backward()
        optimizer.step()
    """),
    # a count that is 1 as written (a module constant, a configuration class's attribute): the
    # step follows every backward
    ACCUM.replace("criterion = torch.nn.CrossEntropyLoss()", "accum = 1\ncriterion = torch.nn.CrossEntropyLoss()"),
    ACCUM.replace("% accum", "% CFG.accum").replace("criterion = torch.nn.CrossEntropyLoss()",
                                                     "class CFG:\n    accum = 1\ncriterion = torch.nn.CrossEntropyLoss()"),
    # ... or an entry of a configuration dictionary: a literal, or a class copied by
    # `dict(vars(CFG))` (kozodoi's Kaggle notebooks)
    ACCUM.replace("% accum", "% CFG['accum']").replace("criterion = torch.nn.CrossEntropyLoss()",
                                                        "CFG = {'accum': 1, 'lr': 1e-3}\ncriterion = torch.nn.CrossEntropyLoss()"),
    ACCUM.replace("% accum", "% CFG['accum']").replace(
        "criterion = torch.nn.CrossEntropyLoss()", "class CFG:\n    accum = 1\nCFG = dict(vars(CFG))\ncriterion = torch.nn.CrossEntropyLoss()"),
    # ... whose other entries are written (the notebook drops `__dict__` and friends, sets paths)
    ACCUM.replace("% accum", "% CFG['accum']").replace(
        "criterion = torch.nn.CrossEntropyLoss()",
        "class CFG:\n    accum = 1\nCFG = dict(vars(CFG))\nfor key in ['__dict__', '__doc__']:\n    del CFG[key]\n"
        "CFG['model_path'] = path\ncriterion = torch.nn.CrossEntropyLoss()"),
    # ... read in a function, after the module rebound the class's name to the copy
    loop("""
    class CFG:
        accum = 1
    CFG = dict(vars(CFG))
    def train(loader):
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            loss.backward()
            if (i + 1) % CFG['accum'] == 0:
                optimizer.step()
                optimizer.zero_grad()
    """),
])
def test_amp301_silent(source):
    assert only("AMP301", source) == []


@pytest.mark.parametrize("source", [
    # the file's text is not the loss's value: a comment, or a sum-reduced criterion the loop
    # does not use, leaves a mean loss undivided
    ACCUM.replace("criterion = torch.nn.CrossEntropyLoss()",
                  "criterion = torch.nn.CrossEntropyLoss()  # reduction='sum' was tried"),
    ACCUM.replace("criterion = torch.nn.CrossEntropyLoss()",
                  "criterion = torch.nn.CrossEntropyLoss()\nprobe = torch.nn.MSELoss(reduction='sum')"),
    ACCUM.replace("criterion = torch.nn.CrossEntropyLoss()", "nbs = 64\naccum = max(round(nbs / bs), 1)"),
    # a count of 1 that the run may change: a command-line default, a class attribute set again
    ACCUM.replace("% accum", "% args.accum"),
    ACCUM.replace("% accum", "% CFG.accum").replace("criterion = torch.nn.CrossEntropyLoss()",
                                                     "class CFG:\n    accum = 1\nCFG.accum = n\ncriterion = torch.nn.CrossEntropyLoss()"),
    # ... a dictionary entry written again, or a class copied with another count
    ACCUM.replace("% accum", "% CFG['accum']").replace(
        "criterion = torch.nn.CrossEntropyLoss()", "CFG = {'accum': 1}\nCFG['accum'] = n\ncriterion = torch.nn.CrossEntropyLoss()"),
    ACCUM.replace("% accum", "% CFG['accum']").replace(
        "criterion = torch.nn.CrossEntropyLoss()", "CFG = {'accum': 1}\nCFG.update(args)\ncriterion = torch.nn.CrossEntropyLoss()"),
    ACCUM.replace("% accum", "% CFG['accum']").replace(
        "criterion = torch.nn.CrossEntropyLoss()", "CFG = {'accum': 1}\nCFG[name] = n\ncriterion = torch.nn.CrossEntropyLoss()"),
    ACCUM.replace("% accum", "% CFG['accum']").replace(
        "criterion = torch.nn.CrossEntropyLoss()",
        "CFG = {'accum': 1}\nfor key in ['accum', 'lr']:\n    CFG[key] = n\ncriterion = torch.nn.CrossEntropyLoss()"),
    ACCUM.replace("% accum", "% CFG['accum']").replace(
        "criterion = torch.nn.CrossEntropyLoss()", "class CFG:\n    accum = 2\nCFG = dict(vars(CFG))\ncriterion = torch.nn.CrossEntropyLoss()"),
    # a criterion sometimes built with a sum and sometimes with a mean: not known to sum
    ACCUM.replace("criterion = torch.nn.CrossEntropyLoss()",
                  "criterion = torch.nn.CrossEntropyLoss(reduction='sum') if s else torch.nn.CrossEntropyLoss()"),
    # a division before a later reassignment does not reach the backward
    ACCUM.replace("    loss = criterion(model(x), y)\n",
                  "    loss = criterion(model(x), y) / accum\n    loss = criterion(model(x), y)\n"),
])
def test_amp301_reads_the_loss_value_not_the_text(source):
    assert only("AMP301", source) == ["AMP301"]


def test_amp301_microbatch_loop_stepping_after_the_loop():
    source = loop("""
    def forward_backward(self, batch):
        self.trainer.zero_grad()
        for i in range(0, batch.shape[0], self.microbatch):
            loss = self.compute(batch[i : i + self.microbatch]).mean()
            self.trainer.backward(loss)
    """)
    assert only("AMP301", source) == ["AMP301"]
    weighted = source.replace("self.trainer.backward(loss)", "self.trainer.backward(loss * len(sub) / len(batch))")
    assert only("AMP301", weighted) == []


PER_MICRO = loop("""
for i, x in enumerate(loader):
    scaler.scale(loss / n).backward()
    scaler.unscale_(optimizer)
    if (i + 1) % n == 0:
        scaler.step(optimizer)
    scaler.update()
""")


def test_amp302_moves_unscale_and_update_into_the_step_branch():
    assert only("AMP302", PER_MICRO) == ["AMP302", "AMP302"]
    assert fixed(PER_MICRO, unsafe=True) == loop("""
    for i, x in enumerate(loader):
        scaler.scale(loss / n).backward()
        if (i + 1) % n == 0:
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
    """)


def test_amp302_silent_when_already_in_the_step_branch():
    assert only("AMP302", fixed(PER_MICRO, unsafe=True)) == []


def test_amp303_moves_zero_grad_after_the_step():
    source = loop("""
    for i, x in enumerate(loader):
        optimizer.zero_grad()
        (loss / n).backward()
        if (i + 1) % n == 0:
            optimizer.step()
    """)
    assert only("AMP303", source) == ["AMP303"]
    assert fixed(source, unsafe=True) == loop("""
    for i, x in enumerate(loader):
        (loss / n).backward()
        if (i + 1) % n == 0:
            optimizer.step()
            optimizer.zero_grad()
    """)


def test_amp303_silent_for_zero_grad_before_an_inner_loop():
    source = loop("""
    for epoch in range(3):
        optimizer.zero_grad()
        for i, x in enumerate(loader):
            (loss / n).backward()
            if (i + 1) % n == 0:
                optimizer.step()
                optimizer.zero_grad()
    """)
    assert only("AMP303", source) == []


# -- a loop over micro-batches: `for micro in range(N):` backpropagates, the step follows it ------

# nanoGPT's and llama2.c's step, with the division left out
MICRO_LOOP = loop("""
scaler = torch.amp.GradScaler()
optimizer = torch.optim.AdamW(model.parameters())
for it in range(max_iters):
    for micro_step in range(gradient_accumulation_steps):
        with torch.autocast("cuda"):
            logits, loss = model(X, Y)
        X, Y = get_batch("train")
        scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
""")


def test_amp301_microbatch_loop_divides_at_the_backward():
    assert only("AMP301", MICRO_LOOP) == ["AMP301"]
    assert "        scaler.scale(loss / gradient_accumulation_steps).backward()\n" in fixed(MICRO_LOOP, unsafe=True)
    constant = MICRO_LOOP.replace("range(gradient_accumulation_steps)", "range(0, 4)")
    assert "        scaler.scale(loss / 4).backward()\n" in fixed(constant, unsafe=True)


def test_amp301_a_member_of_a_divided_loss_container_is_divided():
    # iris: the container's __truediv__ divides every loss it holds
    source = MICRO_LOOP.replace(
        "            logits, loss = model(X, Y)\n",
        "            losses = model.compute_loss(X, Y) / gradient_accumulation_steps\n            loss = losses.loss_total\n",
    )
    assert only("AMP301", source) == []
    undivided = source.replace(" / gradient_accumulation_steps\n", "\n")
    assert only("AMP301", undivided) == ["AMP301"]


def test_amp301_microbatch_loop_whose_count_may_be_above_one():
    # 1 on one path only: the window may hold several micro-batches
    source = "gradient_accumulation_steps = 1\nif big_batch:\n    gradient_accumulation_steps = 8\n" + MICRO_LOOP
    assert only("AMP301", source) == ["AMP301"]
    assert only("AMP301", MICRO_LOOP.replace("range(gradient_accumulation_steps)", "range(0, accum)")) == ["AMP301"]


def test_amp301_microbatch_loop_in_a_step_function_with_its_count_as_an_attribute():
    source = loop("""
    class Trainer:
        def train_step(self, batches):
            for micro in range(self.accum):
                loss = self.model(batches[micro]).mean()
                loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
    """)
    assert only("AMP301", source) == ["AMP301"]
    assert "            (loss / self.accum).backward()\n" in fixed(source, unsafe=True)


def test_amp301_microbatch_loop_whose_count_is_rebound_is_reported_without_a_fix():
    source = MICRO_LOOP.replace('X, Y = get_batch("train")', 'X, Y = get_batch("train")\n        gradient_accumulation_steps = 2')
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP301"]
    assert diag.fix is None and "rebound inside the micro-batch loop" in diag.no_fix_reason


# a helper that divides by the count it is handed, a method that divides by the caller's field
DIVIDED_BY_THE_CALLEE = loop("""
def compute_loss(model, x, y, accum):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    return loss / accum


for it in range(max_iters):
    for micro in range(accum_steps):
        loss = compute_loss(model, x, y, accum_steps)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad()
""")
DIVIDED_BY_A_METHOD = loop("""
class Trainer:
    def compute_loss(self, batch):
        return self.model(batch).mean() / self.accum

    def train_step(self, batches):
        for micro in range(self.accum):
            self.compute_loss(batches[micro]).backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
""")


@pytest.mark.parametrize("source", [
    MICRO_LOOP.replace("logits, loss = model(X, Y)\n", "logits, loss = model(X, Y)\n            loss = loss / gradient_accumulation_steps\n"),
    MICRO_LOOP.replace("scaler.scale(loss)", "scaler.scale(loss / gradient_accumulation_steps)"),
    MICRO_LOOP.replace("scaler.scale(loss).backward()", "(loss / gradient_accumulation_steps).backward()"),
    DIVIDED_BY_THE_CALLEE,
    DIVIDED_BY_A_METHOD,
    # one micro-batch by construction: range(1), or a count only ever assigned 1
    MICRO_LOOP.replace("range(gradient_accumulation_steps)", "range(1)"),
    "gradient_accumulation_steps = 1\n" + MICRO_LOOP,
    # the step runs on every micro-batch: nothing accumulates across the loop
    loop("""
    for it in range(max_iters):
        for micro in range(accum):
            loss = model(x).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    """),
    # chunks of one batch summed by design: a sum-reduced criterion
    loop("""
    for it in range(max_iters):
        for chunk in range(n_chunks):
            loss = torch.nn.functional.cross_entropy(model(x[chunk]), y[chunk], reduction="sum")
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    """),
    # the micro-batches' losses are averaged, then backpropagated once
    loop("""
    for it in range(max_iters):
        losses = []
        for micro in range(accum):
            losses.append(model(x[micro]).mean())
        loss = sum(losses) / len(losses)
        loss.backward()
        optimizer.step()
    """),
    # a for-else backward runs once, not per micro-batch
    loop("""
    for it in range(max_iters):
        for micro in range(accum):
            x = prepare(x)
        else:
            model(x).mean().backward()
        optimizer.step()
    """),
    # Accelerate's backward divides by the Accelerator's own gradient_accumulation_steps
    loop("""
    from accelerate import Accelerator

    accelerator = Accelerator(gradient_accumulation_steps=accum)
    for it in range(max_iters):
        for micro in range(accum):
            accelerator.backward(model(x).mean())
        optimizer.step()
        optimizer.zero_grad()
    """),
    # a loop that never steps after it (the step is elsewhere, unseen): not this window
    loop("""
    def backward_all(accum):
        for micro in range(accum):
            model(x).mean().backward()
    """),
])
def test_amp301_microbatch_loop_silent(source):
    assert only("AMP301", source) == []


def test_amp301_accelerate_backward_without_its_own_accumulation_is_reported():
    source = loop("""
    from accelerate import Accelerator

    accelerator = Accelerator()
    for it in range(max_iters):
        for micro in range(accum):
            accelerator.backward(model(x).mean())
        optimizer.step()
        optimizer.zero_grad()
    """)
    assert only("AMP301", source) == ["AMP301"]


def test_amp301_gated_accumulation_divided_by_the_callee():
    source = ACCUM.replace(
        "criterion = torch.nn.CrossEntropyLoss()\n",
        "def compute_loss(model, x, y, n):\n    return torch.nn.functional.cross_entropy(model(x), y) / n\n\n\n",
    ).replace("loss = criterion(model(x), y)", "loss = compute_loss(model, x, y, accum)")
    assert only("AMP301", source) == []
    assert only("AMP301", source.replace("compute_loss(model, x, y, accum)", "compute_loss(model, x, y, 2)")) == ["AMP301"]


# DPR's trainers: the helper returns (loss, correct) with the loss divided by a field of the
# configuration it is handed; the method reads the same field through `cfg = self.cfg`
DIVIDED_THROUGH_THE_CONFIG = loop("""
def forward_pass(model, x, y, cfg):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    if cfg.train.accumulation_steps > 1:
        loss = loss / cfg.train.accumulation_steps
    return loss, (model(x).argmax(1) == y).sum()


class Trainer:
    def _calc_loss(self, x, y):
        cfg = self.cfg
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        if cfg.train.accumulation_steps > 1:
            loss = loss / cfg.train.accumulation_steps
        return loss

    def train_epoch(self, loader):
        cfg = self.cfg
        for i, (x, y) in enumerate(loader):
            loss, correct = forward_pass(self.model, x, y, cfg)
            loss.backward()
            loss = self._calc_loss(x, y)
            loss.backward()
            if (i + 1) % cfg.train.accumulation_steps == 0:
                self.optimizer.step()
                self.optimizer.zero_grad()
""")


def test_amp301_division_by_a_field_of_the_passed_configuration_is_the_window_s():
    assert only("AMP301", DIVIDED_THROUGH_THE_CONFIG) == []


@pytest.mark.parametrize("change", [
    # the helper divides the other item of the pair it returns
    ("loss = loss / cfg.train.accumulation_steps\n    return loss, (model(x).argmax(1) == y).sum()",
     "loss = loss * 1\n    return loss, (model(x).argmax(1) == y).sum() / cfg.train.accumulation_steps"),
    # a field of another configuration
    ("loss = loss / cfg.train.accumulation_steps\n    return loss, ", "loss = loss / cfg.eval.accumulation_steps\n    return loss, "),
    # the method's `cfg` is another object than the caller's
    ("    def _calc_loss(self, x, y):\n        cfg = self.cfg", "    def _calc_loss(self, x, y):\n        cfg = self.eval_cfg"),
])
def test_amp301_a_callee_division_by_something_else_is_still_reported(change):
    old, new = change
    assert old in DIVIDED_THROUGH_THE_CONFIG
    assert only("AMP301", DIVIDED_THROUGH_THE_CONFIG.replace(old, new)) == ["AMP301"]


def test_amp301_callee_division_by_something_else_is_not_the_window_s():
    # a mean written as a division inside the helper is not a division by the micro-batch count
    source = DIVIDED_BY_THE_CALLEE.replace("return loss / accum", "return loss.sum() / len(x)")
    assert only("AMP301", source) == ["AMP301"]


MICRO_LOOP_DIVIDED = MICRO_LOOP.replace("scaler.scale(loss)", "scaler.scale(loss / gradient_accumulation_steps)")


@pytest.mark.parametrize("code, source", [
    # per micro-batch scaler calls: inside the loop that never steps
    ("AMP302", MICRO_LOOP_DIVIDED.replace(
        "        scaler.scale(loss / gradient_accumulation_steps).backward()\n    scaler.unscale_(optimizer)\n",
        "        scaler.scale(loss / gradient_accumulation_steps).backward()\n        scaler.unscale_(optimizer)\n")),
    ("AMP302", MICRO_LOOP_DIVIDED.replace(
        "        scaler.scale(loss / gradient_accumulation_steps).backward()\n",
        "        scaler.scale(loss / gradient_accumulation_steps).backward()\n        scaler.update()\n")),
    # gradients zeroed on every micro-batch
    ("AMP303", MICRO_LOOP_DIVIDED.replace(
        '        X, Y = get_batch("train")\n', '        X, Y = get_batch("train")\n        optimizer.zero_grad()\n')),
    # gradients zeroed after the loop, before the step
    ("AMP304", MICRO_LOOP_DIVIDED.replace(
        "    scaler.step(optimizer)\n", "    optimizer.zero_grad()\n    scaler.step(optimizer)\n")),
])
def test_microbatch_loop_window_rules_fire(code, source):
    assert only(code, source) == [code]
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == code]
    assert diag.fix is None  # the step is outside the loop: not a move within one block
    assert "after the loop over `gradient_accumulation_steps` micro-batches" in diag.message


@pytest.mark.parametrize("code", ["AMP301", "AMP302", "AMP303", "AMP304"])
def test_microbatch_loop_window_rules_silent_on_the_correct_step(code):
    assert only(code, MICRO_LOOP_DIVIDED) == []
    # zeroing before the loop opens the window: that is accumulation done right
    opened = MICRO_LOOP_DIVIDED.replace(
        "    for micro_step", "    optimizer.zero_grad(set_to_none=True)\n    for micro_step"
    ).replace("    scaler.update()\n    optimizer.zero_grad(set_to_none=True)\n", "    scaler.update()\n")
    assert only(code, opened) == []


DDP_MICRO_LOOP = loop("""
from torch.nn.parallel import DistributedDataParallel as DDP

model = DDP(Net().cuda())
optimizer = torch.optim.AdamW(model.parameters())
for it in range(max_iters):
    for micro in range(accum):
        loss = model(x).mean() / accum
        loss.backward()
    optimizer.step()
    optimizer.zero_grad()
""")


def test_amp305_microbatch_loop_all_reduces_every_micro_batch():
    assert only("AMP305", DDP_MICRO_LOOP) == ["AMP305"]
    # nanoGPT turns the sync off on all but the last micro-batch itself
    handled = DDP_MICRO_LOOP.replace(
        "        loss = model(x)", "        model.require_backward_grad_sync = micro == accum - 1\n        loss = model(x)"
    )
    assert only("AMP305", handled) == []


def test_amp305_microbatch_loop_fix_skips_the_sync_on_all_but_the_last_micro_batch():
    result = fixed(DDP_MICRO_LOOP, unsafe=True)
    assert "        with (model.no_sync() if micro < accum - 1 else contextlib.nullcontext()):\n" in result
    assert "            loss.backward()\n" in result and only("AMP305", result) == []
    # the count rebound inside the loop: the condition would not be the one the loop ends on
    rebound = DDP_MICRO_LOOP.replace("        loss.backward()\n", "        loss.backward()\n        accum = schedule(it)\n")
    assert only("AMP305", rebound) == ["AMP305"] and fixed(rebound, unsafe=True) == rebound


# -- AMP401 / AMP402 ---------------------------------------------------------------------------------

def test_amp401_dedents_the_trailing_statements():
    source = loop("""
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x)
            # backward and step
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        log(loss)
    """)
    assert only("AMP401", source) == ["AMP401"]
    assert fixed(source) == loop("""
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x)
            # backward and step
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        log(loss)
    """)


def test_amp401_backward_first_in_block_is_reported_only():
    source = loop("with torch.autocast('cuda'):\n    model(x).sum().backward()\n")
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP401"]
    assert diag.fix is None


def test_amp401_a_block_around_the_whole_loop_is_reported_only():
    # AutoGPTQ's PEFT examples: the autocast wraps the epoch loop, forward and backward alike;
    # moving the loop out would take the forward out of autocast too
    source = loop("""
    with torch.cuda.amp.autocast():
        global_step = 0
        for step, batch in enumerate(loader):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    """)
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP401"]
    assert diag.fix is None and "also computes values" in diag.no_fix_reason


@pytest.mark.parametrize("source", [
    loop("with torch.autocast('cuda'):\n    loss = model(x)\nloss.backward()\n"),
    loop("with torch.autocast('cuda', enabled=False):\n    loss = model(x)\n    loss.backward()\n"),  # fp32 island
])
def test_amp401_silent(source):
    assert only("AMP401", source) == []


def test_amp402_bce_under_cuda_autocast():
    source = loop("criterion = torch.nn.BCELoss()\nwith torch.autocast('cuda'):\n    loss = criterion(torch.sigmoid(model(x)), y)\n")
    assert only("AMP402", source) == ["AMP402"]
    functional = loop("import torch.nn.functional as F\nwith torch.cuda.amp.autocast():\n    loss = F.binary_cross_entropy(p, y)\n")
    assert only("AMP402", functional) == ["AMP402"]


@pytest.mark.parametrize("source", [
    loop("with torch.autocast('cpu'):\n    loss = torch.nn.functional.binary_cross_entropy(p, y)\n"),
    loop("with torch.autocast('cuda', enabled=False):\n    loss = torch.nn.functional.binary_cross_entropy(p, y)\n"),
    loop("with torch.autocast('cuda'):\n    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)\n"),
])
def test_amp402_silent(source):
    assert only("AMP402", source) == []


# -- the model ------------------------------------------------------------------------------------

def test_check_never_executes_the_code(tmp_path):
    marker = tmp_path / "executed"
    source = f"import os\nopen({str(marker)!r}, 'w').write('x')\nimport torch\nwith torch.cuda.amp.autocast():\n    pass\n"
    ampfix.check_source(source, "t.py")
    ampfix.fix_source(source, "t.py", unsafe_fixes=True)
    assert not marker.exists()


def test_rules_only_run_on_files_that_mention_their_triggers():
    from ampfix.rules import RULES

    for rule in RULES.values():
        if rule.code in ("AMP001",):
            continue
        assert rule.triggers, rule.code
    assert ampfix.check_source("x = 1\n", "t.py", Settings()) == []


def test_amp208_unsafe_fix_adds_the_whole_protocol():
    source = loop("""
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda", enabled=use_amp):
            loss = model(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    """)
    assert fixed(source) == source  # unsafe only
    assert fixed(source, unsafe=True) == loop("""
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda", enabled=use_amp):
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
    """)


def test_amp208_runtime_dtype_enables_the_scaler_only_for_float16():
    source = loop("""
    ptdtype = torch.bfloat16 if bf16 else torch.float16
    ctx = torch.amp.autocast(device_type=device_type, dtype=ptdtype)
    for X, Y in batches:
        with ctx:
            loss = model(X, Y)
        loss.backward()
        optimizer.step()
    """)
    assert "scaler = torch.amp.GradScaler(device_type, enabled=(ptdtype == torch.float16))\n" in fixed(source, unsafe=True)


def test_amp208_two_optimizers_are_reported_without_a_fix():
    source = loop("""
    with torch.autocast("cuda"):
        loss_d = d(x)
        loss_g = g(z)
    loss_d.backward()
    opt_d.step()
    loss_g.backward()
    opt_g.step()
    """)
    diags = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP208"]
    assert len(diags) == 2 and all(d.fix is None for d in diags)


def test_amp206_resume_restores_the_scaler_when_it_exists_already():
    source = loop("""
    scaler = torch.amp.GradScaler()
    checkpoint = torch.load(path)
    optimizer.load_state_dict(checkpoint["optimizer"])
    """)
    assert only("AMP206", source) == ["AMP206"]
    assert fixed(source, unsafe=True).endswith(
        'optimizer.load_state_dict(checkpoint["optimizer"])\n'
        'if "scaler" in checkpoint and checkpoint["scaler"]:\n    scaler.load_state_dict(checkpoint["scaler"])\n'
    )
    restored = source + 'scaler.load_state_dict(checkpoint["scaler"])\n'
    assert only("AMP206", restored) == []


def test_amp206_resume_before_the_scaler_exists_is_reported_only():
    source = loop("""
    checkpoint = torch.load(path)
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler = torch.amp.GradScaler()
    """)
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP206"]
    assert diag.fix is None


# -- AMP501 / AMP502 ---------------------------------------------------------------------------------

FP32 = loop("""
device = "cpu"
for x, y in loader:
    x, y = x.to(device), y.to(device)
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
""")


def test_amp501_cpu_only_code_is_not_a_candidate_unless_cpu_conversions_are_configured():
    assert only("AMP501", FP32) == []  # CPU-only code: AMP rarely pays off there
    assert only("AMP501", FP32.replace('"cpu"', '"cuda"')) == ["AMP501"]
    assert [c for c in codes(FP32, default_device="cpu") if c == "AMP501"] == ["AMP501"]
    out = fixed(FP32, unsafe=True, default_device="cpu")
    assert "    with torch.autocast(device_type=device, dtype=torch.bfloat16):\n        loss = criterion(model(x), y)\n" in out
    assert "GradScaler" not in out and "    loss.backward()\n    optimizer.step()\n" in out


CUDA_STEP = """
device = "cuda"
for x, y in loader:
    x, y = x.to(device), y.to(device)
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
"""


@pytest.mark.parametrize("source, path", [
    # a unit test: a test file, a test folder, a test function, a TestCase
    (CUDA_STEP, "tests/train_check.py"),
    (CUDA_STEP, "test_train.py"),
    ("def test_step():\n" + textwrap.indent(CUDA_STEP, "    "), "t.py"),
    ("class TestStep(unittest.TestCase):\n    def check(self):\n" + textwrap.indent(CUDA_STEP, "        "), "t.py"),
    # CPU-only code: no device but the CPU, or no tensor ever moved
    (CUDA_STEP.replace('"cuda"', 'torch.device("cpu")'), "t.py"),
    ("for x, y in loader:\n    loss = criterion(model(x), y)\n    loss.backward()\n    optimizer.step()\n", "t.py"),
    # precision managed already: bfloat16 weights, an FSDP policy, an fp16 option
    ("model = model.to(torch.bfloat16)\n" + CUDA_STEP, "t.py"),
    ("policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16)\n" + CUDA_STEP, "t.py"),
    ("net = Net(use_fp16=args.fp16)\n" + CUDA_STEP, "t.py"),
    # weights built in the run's default dtype (torchtune: bf16 from the config, through its helper)
    ("with training.set_default_dtype(self._dtype):\n    model = build_model(cfg)\n" + CUDA_STEP, "t.py"),
    ("torch.set_default_dtype(torch.bfloat16)\n" + CUDA_STEP, "t.py"),
    # an API demo on random tensors
    ("for i in range(10):\n    out = model(torch.rand(20, 10, device='cuda'))\n    out.sum().backward()\n    optimizer.step()\n",
     "t.py"),
    # a gym policy-gradient toy
    ("import gym\n" + CUDA_STEP, "t.py"),
    # sparse models (SELFRec's LightGCN, SGFormer): little for autocast to speed up, and a COO
    # sparse matmul has no float16 kernel on CUDA
    ("from torch_sparse import SparseTensor, matmul\n" + CUDA_STEP, "t.py"),
    ("def propagate(adj, e):\n    return torch.sparse.mm(adj, e)\n" + CUDA_STEP, "t.py"),
    ("adj = adj.to_sparse()\n" + CUDA_STEP, "t.py"),
    # latents optimized through a frozen generator (GAN inversion), not a model trained
    ("optimizer = torch.optim.Adam([latent] + noises, lr=0.1)\n" + CUDA_STEP, "t.py"),
])
def test_amp501_not_a_candidate(source, path):
    found = [d.code for d in ampfix.check_source(HEAD + source, path, Settings())]
    assert "AMP501" not in found


def test_amp501_a_graph_library_alone_is_not_a_sparse_model():
    # PyG's examples: message-passing layers around dense Linear layers that AMP speeds up
    source = HEAD + "from torch_geometric.nn import GCNConv\n" + CUDA_STEP
    assert "AMP501" in [d.code for d in ampfix.check_source(source, "t.py", Settings())]


def test_amp501_leaves_a_helper_that_backpropagates_its_callers_loss_alone():
    # robomimic's backprop_for_loss(net, optim, loss): the forward ran in the caller
    helper = ('device = "cuda"\ndef backprop(net, optim, loss, max_norm=None):\n    optim.zero_grad()\n'
              '    loss.backward()\n    optim.step()\n')
    assert "AMP501" not in [d.code for d in ampfix.check_source(HEAD + helper, "t.py", Settings())]
    computed_here = helper.replace("    loss.backward()", "    loss = net(batch).mean()\n    loss.backward()")
    assert "AMP501" in [d.code for d in ampfix.check_source(HEAD + computed_here, "t.py", Settings())]


def test_amp501_amp_dtype_and_default_device_options():
    source = FP32.replace('device = "cpu"\n', "").replace("    x, y = x.to(device), y.to(device)\n", "")
    out = fixed(source, unsafe=True, default_device="cpu", amp_dtype="float16")
    assert 'torch.autocast(device_type="cpu", dtype=torch.float16)' in out
    assert 'scaler = torch.amp.GradScaler("cpu")' in out


def test_amp501_takes_the_device_a_model_is_built_for_when_the_step_moves_nothing():
    # lerobot's tutorial: `device = "mps"` handed to the policy's config, no `.to()` in the loop
    source = loop('device = "mps"\nmodel = Policy(Config(device=device))\nfor batch in loader:\n'
                  '    loss = model(batch).sum()\n    loss.backward()\n    optimizer.step()\n')
    out = fixed(source, unsafe=True)
    assert "torch.autocast(device_type=device" in out and "GradScaler(device)" in out


def test_amp501_cuda_code_gets_a_literal_cuda_device():
    source = loop("model = Net().cuda()\nfor x, y in loader:\n    loss = model(x.cuda()).sum()\n    loss.backward()\n    optimizer.step()\n")
    assert 'device_type="cuda", dtype=torch.float16' in fixed(source, unsafe=True)


@pytest.mark.parametrize("source", [
    # evaluation loop: no backward
    loop("with torch.no_grad():\n    for x in loader:\n        out = model(x)\n"),
    # the module already uses AMP (AMP208 and friends look at it)
    loop("with torch.autocast('cuda', dtype=torch.bfloat16):\n    loss = model(x)\nloss.backward()\noptimizer.step()\n"),
    # backward without an optimizer step (gradient inspection)
    loop("loss = model(x).sum()\nloss.backward()\nprint(x.grad)\n"),
    # float64 weights by default (TALENT's tabular models): autocast leaves float64 alone
    loop("model = Net().cuda()\nif not args.use_float:\n    model.double()\nfor x, y in loader:\n"
         "    loss = model(x.cuda()).sum()\n    loss.backward()\n    optimizer.step()\n"),
    loop("model = Net().cuda()\nmodel.to(torch.float64)\nfor x, y in loader:\n"
         "    loss = model(x.cuda()).sum()\n    loss.backward()\n    optimizer.step()\n"),
])
def test_amp501_silent(source):
    assert only("AMP501", source) == []


def test_amp501_a_float32_default_dtype_is_no_precision_choice():
    source = HEAD + "torch.set_default_dtype(torch.float32)\n" + CUDA_STEP
    assert "AMP501" in [d.code for d in ampfix.check_source(source, "t.py", Settings())]


def test_amp501_a_float64_metric_is_not_float64_weights():
    # the transfer-learning tutorial: `running_corrects.double() / n` is an accuracy, not the model
    source = loop("model = Net().cuda()\nfor x, y in loader:\n    out = model(x.cuda())\n    loss = out.sum()\n"
                  "    loss.backward()\n    optimizer.step()\n    accuracy = (out.argmax(1) == y).double().mean()\n")
    assert only("AMP501", source) == ["AMP501"]


def test_amp501_gan_with_two_optimizers_is_report_only():
    source = loop("""
    d, g = D().cuda(), G().cuda()
    for x in loader:
        loss_d = d(x).mean()
        loss_d.backward()
        opt_d.step()
        loss_g = d(g(z)).mean()
        loss_g.backward()
        opt_g.step()
    """)
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP501"]
    assert diag.fix is None


def test_amp502_static_scale_cancels():
    source = loop("""
    loss_scale = 1024.0
    for x, y in loader:
        loss = criterion(model(x), y)
        (loss * loss_scale).backward()
        for p in model.parameters():
            p.grad.data.div_(loss_scale)
        optimizer.step()
    """)
    assert only("AMP502", source) == ["AMP502", "AMP502"]
    out = fixed(source, unsafe=True)
    assert "scaler.scale(loss).backward()" in out and "div_" not in out


def test_amp502_ignores_gradient_averaging_across_workers():
    source = loop("for p in model.parameters():\n    dist.all_reduce(p.grad)\n    p.grad /= world_size\n")
    assert only("AMP502", source) == []


# -- AMP209 ----------------------------------------------------------------------------------------

FP16_WEIGHTS = loop("""
model = Net().cuda().half()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
for x, y in loader:
    loss = criterion(model(x.cuda().half()), y.cuda())
    loss.backward()
    optimizer.step()
""")


@pytest.mark.parametrize("source", [
    FP16_WEIGHTS,
    FP16_WEIGHTS.replace("model = Net().cuda().half()", "model = Net().cuda()\nmodel.to(torch.float16)"),
    FP16_WEIGHTS.replace("Net().cuda().half()", 'AutoModel.from_pretrained("m", torch_dtype=torch.float16)'),
])
def test_amp209_float16_weights_trained_unscaled(source):
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP209"]
    assert "not loss-scaled" in diag.message and diag.fix is None


def test_amp209_gradscaler_on_float16_parameters_raises():
    source = FP16_WEIGHTS.replace("    loss.backward()\n    optimizer.step()\n",
                                  "    scaler.scale(loss).backward()\n    scaler.step(optimizer)\n    scaler.update()\n")
    source = source.replace("for x, y", "scaler = torch.amp.GradScaler('cuda')\nfor x, y")
    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP209"]
    assert "Attempting to unscale FP16 gradients" in diag.message


@pytest.mark.parametrize("source", [
    # float32 weights, float16 autocast: mixed precision done right (AMP208 looks at the scaler)
    FP16_WEIGHTS.replace(".half()", ""),
    # the float16 copy is an EMA / teacher that no optimizer trains
    FP16_WEIGHTS.replace("model = Net().cuda().half()", "model = Net().cuda()\nteacher = Net().cuda().half()"),
    # converted after training, for export
    loop("""
    model = Net().cuda()
    optimizer = torch.optim.AdamW(model.parameters())
    for x, y in loader:
        criterion(model(x), y).backward()
        optimizer.step()
    model.half()
    torch.save(model.state_dict(), "fp16.pt")
    """),
    # hand-written loss scaling with float16 weights (AMP502 looks at it)
    FP16_WEIGHTS.replace("loss.backward()", "(loss * 1024.0).backward()\n    for p in model.parameters():\n        p.grad /= 1024.0"),
    # bfloat16 weights
    FP16_WEIGHTS.replace(".half()", ".to(torch.bfloat16)"),
])
def test_amp209_silent(source):
    assert only("AMP209", source) == []


# -- shapes from the scoring half of the ecosystem check ---------------------------------------

def test_a_scale_set_by_hand_is_not_a_second_update():
    # icefall/vall-e rescue a tiny scale with `scaler.update(new_scale)`: no inf check, not the step's update
    source = loop("""
    scaler = torch.amp.GradScaler("cuda")
    for i, x in enumerate(loader):
        with torch.autocast("cuda"):
            loss = model(x).mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if i % 100 == 0 and scaler.get_scale() < 1.0:
            scaler.update(scaler.get_scale() * 2.0)
    """)
    assert only("AMP204", source) == [] and only("AMP302", source) == []


def test_a_scaled_loss_behind_typing_cast_is_scaled():
    # ignite: `cast(torch.Tensor, scaler.scale(loss)).backward()`
    source = loop("""
    from typing import cast
    scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        with torch.autocast("cuda"):
            loss = model(x).mean()
        cast(torch.Tensor, scaler.scale(loss)).backward()
        scaler.step(optimizer)
        scaler.update()
    """)
    assert only("AMP202", source) == [] and only("AMP203", source) == []


def test_amp206_two_scalers_are_reported_without_a_fix():
    # LlamaGen's VQ trainer: a scaler per optimizer (generator and discriminator); one "scaler" key
    # would save one of them and restore it into both
    source = loop("""
    scaler = torch.amp.GradScaler("cuda")
    scaler_disc = torch.amp.GradScaler("cuda")
    if resume:
        checkpoint = torch.load(path)
        optimizer.load_state_dict(checkpoint["optimizer"])
        optimizer_disc.load_state_dict(checkpoint["optimizer_disc"])
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
        scaler_disc.scale(disc(x)).backward()
        scaler_disc.step(optimizer_disc)
        scaler_disc.update()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "optimizer_disc": optimizer_disc.state_dict()}, path)
    """)
    found = [d for d in ampfix.check_source(source, "t.py") if d.code == "AMP206"]
    assert len(found) == 3 and all(d.fix is None and "several GradScalers" in d.no_fix_reason for d in found)


# FourCastNet: the trainer creates its scaler only under `if params.enable_amp:`
CONDITIONAL_SCALER = loop("""
class Trainer:
    def __init__(self, params, model, optimizer):
        self.params, self.model, self.optimizer = params, model, optimizer
        if params.enable_amp:
            self.gscaler = torch.amp.GradScaler("cuda")

    def step(self, x):
        with torch.autocast("cuda", enabled=self.params.enable_amp):
            loss = self.model(x).mean()
        if self.params.enable_amp:
            self.gscaler.scale(loss).backward()
            self.gscaler.step(self.optimizer)
            self.gscaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def save(self, path):
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, path)

    def restore(self, path):
        checkpoint = torch.load(path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
""")


def test_amp206_no_fix_naming_a_scaler_that_exists_on_some_paths_only():
    found = [d for d in ampfix.check_source(CONDITIONAL_SCALER, "t.py") if d.code == "AMP206"]
    assert len(found) == 2  # the save and the resume: both still reported
    assert all(d.fix is None and "only on some paths" in d.no_fix_reason for d in found)
    # created on every path (enabled or not): the fixes name it
    always = CONDITIONAL_SCALER.replace(
        "        if params.enable_amp:\n            self.gscaler = torch.amp.GradScaler(\"cuda\")\n",
        "        self.gscaler = torch.amp.GradScaler(\"cuda\", enabled=params.enable_amp)\n",
    )
    assert [d.fix is not None for d in ampfix.check_source(always, "t.py") if d.code == "AMP206"] == [True, True]
    # both branches assign it (None without AMP: the fix guards on it); a field made unconditionally
    # by another method (YOLOv6's before_train_loop): bound where the code uses it
    both = CONDITIONAL_SCALER.replace(
        '            self.gscaler = torch.amp.GradScaler("cuda")\n',
        '            self.gscaler = torch.amp.GradScaler("cuda")\n        else:\n            self.gscaler = None\n',
    )
    saves = [d for d in ampfix.check_source(both, "t.py") if d.code == "AMP206"]
    assert saves[0].fix is not None and "is not None" in saves[0].fix.edits[-1].content
    elsewhere = CONDITIONAL_SCALER.replace(
        '        if params.enable_amp:\n            self.gscaler = torch.amp.GradScaler("cuda")\n', ""
    ).replace("    def save(self, path):\n", '    def before_train(self):\n        self.gscaler = torch.amp.GradScaler("cuda")\n\n    def save(self, path):\n')
    assert [d.fix is not None for d in ampfix.check_source(elsewhere, "t.py") if d.code == "AMP206"][0]
    # made in the epoch loop and saved in the same iteration: bound where it is saved
    per_epoch = loop("""
    for epoch in range(3):
        scaler = torch.amp.GradScaler("cuda")
        for x in loader:
            scaler.scale(model(x).mean()).backward()
            scaler.step(optimizer)
            scaler.update()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    """)
    assert [d.fix is not None for d in ampfix.check_source(per_epoch, "t.py") if d.code == "AMP206"] == [True]
