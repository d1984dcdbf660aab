"""The project index: a step whose parts live in other files of the project.

Calls handed a scaler or an optimizer are followed through the imports into the project's other
modules (only those that pass the prefilter); what the callee does there counts at the call,
with the file and line shown as evidence. What only the other module names stays unknown, and the
result cache of a file holds only while the files it read facts from are unchanged."""

import json
import os
import textwrap

import ampfix
from ampfix.settings import Settings
from conftest import run_ampfix

TRAIN = """\
import torch
from helpers import backward_step


def train(model, loader, optimizer, scaler):
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x).sum()
        backward_step(scaler, loss, optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
"""

SCALES = """\
def backward_step(scaler, loss, optimizer):
    scaler.scale(loss).backward()
"""

SCALES_AND_UNSCALES = """\
def backward_step(scaler, loss, optimizer):
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
"""


def write(root, files: dict) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def check(root, name="train.py"):
    """The file's diagnostics; the prefilter must not hide one that facts from other files make."""
    path = str(root / name)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    settings = Settings(project_root=str(root))
    found = ampfix.check_source(text, path, settings)
    unfiltered = ampfix.check_source(text, path, settings, prefilter=False)
    assert [(d.code, d.start) for d in found] == [(d.code, d.start) for d in unfiltered]
    return found


def codes(diagnostics):
    return [d.code for d in diagnostics]


def test_a_helper_in_another_module_that_scales_makes_the_clip_a_finding(tmp_path):
    write(tmp_path, {"train.py": TRAIN, "helpers.py": SCALES})
    found = [d for d in check(tmp_path) if d.code == "AMP201"]
    assert len(found) == 1 and found[0].location.row == 10
    notes = [n.message for n in found[0].evidence]
    assert any("helpers.py:2" in note for note in notes), notes


def test_a_helper_in_another_module_that_unscales_protects_the_clip(tmp_path):
    write(tmp_path, {"train.py": TRAIN, "helpers.py": SCALES_AND_UNSCALES})
    assert "AMP201" not in codes(check(tmp_path))


def test_a_module_that_cannot_hold_a_step_is_never_loaded_and_the_call_stays_unknown(tmp_path):
    # the helper has no AMP token: the prefilter rejects it, so its call is unknown (silent)
    write(tmp_path, {"train.py": TRAIN, "helpers.py": "def backward_step(s, loss, opt):\n    pass\n"})
    assert "AMP201" not in codes(check(tmp_path))


def test_relative_imports_and_re_exports_resolve(tmp_path):
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/util/__init__.py": "from .misc import NativeScaler\n",
        "pkg/util/misc.py": """\
            import torch


            class NativeScaler:
                def __init__(self):
                    self._scaler = torch.amp.GradScaler("cuda")

                def __call__(self, loss, optimizer):
                    self._scaler.scale(loss).backward()
                    self._scaler.step(optimizer)
                    self._scaler.update()
            """,
        "pkg/train.py": """\
            import torch
            from .util import NativeScaler


            def train(model, loader, optimizer):
                loss_scaler = NativeScaler()
                for x, y in loader:
                    with torch.autocast("cuda"):
                        loss = model(x).sum()
                    loss_scaler(loss, optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            """,
    })
    path = str(tmp_path / "pkg" / "train.py")
    source = open(path, encoding="utf-8").read()
    from ampfix.context import ModuleContext
    from ampfix.engine import parse_quietly, project_index

    settings = Settings(project_root=str(tmp_path))
    ctx = ModuleContext(path, source, parse_quietly(source), settings, project=project_index(settings))
    train = next(f for f in ctx.training.functions if getattr(f.node, "name", "") == "train")
    events = {(e.kind, e.receiver) for e in train.call_events}
    # the callee's ``self._scaler`` is the caller's ``loss_scaler._scaler``
    assert ("update", "loss_scaler._scaler") in events and ("scaler_step", "loss_scaler._scaler") in events
    assert all(e.origin_path.endswith(os.path.join("util", "misc.py")) for e in train.call_events)


def test_an_object_only_the_other_module_names_makes_the_call_unknown(tmp_path):
    # the helper scales with its module's global scaler: not the caller's, so nothing is claimed
    write(tmp_path, {
        "train.py": TRAIN.replace("backward_step(scaler, loss, optimizer)", "backward_step(loss, optimizer)"),
        "helpers.py": """\
            import torch
            scaler = torch.amp.GradScaler("cuda")


            def backward_step(loss, optimizer):
                scaler.scale(loss).backward()
            """,
    })
    assert "AMP201" not in codes(check(tmp_path))


def test_the_cache_of_a_file_holds_only_while_the_files_it_read_are_unchanged(tmp_path):
    write(tmp_path, {"train.py": TRAIN, "helpers.py": SCALES})
    first = json.loads(run_ampfix("check", "--preview", "--output-format", "json", ".", cwd=tmp_path).stdout)
    assert "AMP201" in {r["code"] for r in first}
    (tmp_path / "helpers.py").write_text(SCALES_AND_UNSCALES)
    second = json.loads(run_ampfix("check", "--preview", "--output-format", "json", ".", cwd=tmp_path).stdout)
    assert "AMP201" not in {r["code"] for r in second}


STEP_FUNCTION = """\
    import torch


    def train(model, loader, optimizer, device):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
    """


def test_a_project_with_a_custom_cuda_extension_gets_no_conversion(tmp_path):
    write(tmp_path, {"train.py": STEP_FUNCTION, "setup.py": "from torch.utils.cpp_extension import CUDAExtension\n"})
    [found] = [d for d in check(tmp_path) if d.code == "AMP501"]
    assert found.fix is None and "custom C++/CUDA extension" in found.no_fix_reason
    other = tmp_path / "other"
    write(other, {"train.py": STEP_FUNCTION, "pyproject.toml": ""})
    [found] = [d for d in check(other) if d.code == "AMP501"]
    assert found.fix is not None


def test_a_step_function_whose_callers_set_the_precision_up_is_not_converted(tmp_path):
    # FSDP's example: utils/train_utils.py trains what T5_training.py wrapped with a bf16 policy
    write(tmp_path, {
        "utils/__init__.py": "from .train_utils import train\n",
        "utils/train_utils.py": STEP_FUNCTION,
        "main.py": """\
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, MixedPrecision
            from utils import train

            model = FSDP(build(), mixed_precision=MixedPrecision(param_dtype=torch.bfloat16))
            train(model, loader, optimizer, "cuda")
            """,
    })
    assert "AMP501" not in codes(check(tmp_path, "utils/train_utils.py"))
    (tmp_path / "main.py").write_text("from utils import train\n\ntrain(build().cuda(), loader, optimizer, 'cuda')\n")
    assert "AMP501" in codes(check(tmp_path, "utils/train_utils.py"))  # an fp32 caller: a candidate again


def test_a_file_read_for_facts_that_held_none_still_invalidates_the_cache(tmp_path):
    # the helper first holds nothing AMP-related (never parsed), then starts scaling
    write(tmp_path, {"train.py": TRAIN, "helpers.py": "def backward_step(s, loss, opt):\n    pass\n"})
    first = json.loads(run_ampfix("check", "--preview", "--output-format", "json", ".", cwd=tmp_path).stdout)
    assert "AMP201" not in {r["code"] for r in first}
    (tmp_path / "helpers.py").write_text(SCALES)
    second = json.loads(run_ampfix("check", "--preview", "--output-format", "json", ".", cwd=tmp_path).stdout)
    assert "AMP201" in {r["code"] for r in second}


def test_accumulation_of_a_loss_summed_in_another_module_is_the_design(tmp_path):
    # yolov5: `ComputeLoss` (utils/loss.py, a file with no AMP code) returns the batch mean times
    # the batch size, so the nominal-batch accumulation sums samples on purpose
    write(tmp_path, {
        "train.py": """\
            import torch
            from utils.loss import ComputeLoss


            def train(model, loader, optimizer, scaler, accumulate):
                compute_loss = ComputeLoss(model)
                for i, (x, y) in enumerate(loader):
                    with torch.autocast("cuda"):
                        loss, items = compute_loss(model(x), y)
                    scaler.scale(loss).backward()
                    if (i + 1) % accumulate == 0:
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad()
        """,
        "utils/__init__.py": "",
        "utils/loss.py": """\
            class ComputeLoss:
                def __init__(self, model):
                    self.model = model

                def __call__(self, p, targets):
                    bs, channels = p.shape[:2]
                    loss = (p - targets).abs().mean()
                    return loss * bs, loss.detach()
        """,
    })
    assert [d.code for d in check(tmp_path)] == []
    (tmp_path / "utils" / "loss.py").write_text(
        (tmp_path / "utils" / "loss.py").read_text().replace("return loss * bs,", "return loss,")
    )
    assert [d.code for d in check(tmp_path) if d.code == "AMP301"] == ["AMP301"]


# -- a DDP model built by the training script, trained by a helper module's epoch function ---------

EPOCH = """\
import torch.distributed as dist


def train_one_epoch(model, loader, optimizer, accum_steps):
    for i, (x, y) in enumerate(loader):
        loss = model(x).sum() / accum_steps
        loss.backward()
        if dist.get_rank() == 0:
            print(loss.item())
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
"""

DDP_SCRIPT = """\
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from train_utils import train_one_epoch


def main(net, loader, optimizer, rank):
    model = DDP(net, device_ids=[rank])
    train_one_epoch(model, loader, optimizer, 4)
"""


def test_a_ddp_model_passed_by_the_script_is_seen_in_the_epoch_function(tmp_path):
    write(tmp_path, {"train_utils.py": EPOCH, "train.py": DDP_SCRIPT})
    found = [d for d in check(tmp_path, "train_utils.py") if d.code == "AMP305"]
    assert len(found) == 1 and found[0].fix is not None  # DDP on the only path: wrapped in no_sync


def test_a_model_unknown_on_some_path_is_reported_without_the_no_sync_fix(tmp_path):
    # open_flamingo: FSDP (a model from an unpacking) on one path, DDP on the other
    script = DDP_SCRIPT.replace(
        "    model = DDP(net, device_ids=[rank])\n",
        "    if fsdp:\n        model, tokenizer = wrap(net)\n    else:\n        model = DDP(net, device_ids=[rank])\n",
    )
    write(tmp_path, {"train_utils.py": EPOCH, "train.py": script})
    found = [d for d in check(tmp_path, "train_utils.py") if d.code == "AMP305"]
    assert len(found) == 1 and found[0].fix is None  # `.no_sync()` may not exist on the other path


def test_a_plain_model_passed_by_the_script_is_not_ddp(tmp_path):
    write(tmp_path, {"train_utils.py": EPOCH, "train.py": DDP_SCRIPT.replace("DDP(net, device_ids=[rank])", "net.cuda()")})
    assert [d for d in check(tmp_path, "train_utils.py") if d.code == "AMP305"] == []


ACCUMULATING_SCRIPT = """\
import sys
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.append('./Configs/')
from segmentation_config import CFG


def train(model, loader, optimizer):
    model = DDP(model)
    for step, (x, y) in enumerate(loader):
        loss = model(x).sum()
        loss.backward()
        if (step + 1) % CFG.acc_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
"""


def test_a_count_of_one_in_a_configuration_module_on_sys_path_is_no_accumulation(tmp_path):
    # RSNA 2023's scripts: `sys.path.append('./Configs/')`, then the class the count is read from
    write(tmp_path, {"TRAIN/train.py": ACCUMULATING_SCRIPT, "Configs/segmentation_config.py": "class CFG:\n    acc_steps = 1\n"})
    assert [d.code for d in check(tmp_path, "TRAIN/train.py")] == []
    write(tmp_path, {"Configs/segmentation_config.py": "class CFG:\n    acc_steps = 2\n"})
    assert sorted(d.code for d in check(tmp_path, "TRAIN/train.py")) == ["AMP301", "AMP305"]
    # set again elsewhere: the count is not the class body's literal
    write(tmp_path, {"TRAIN/train.py": ACCUMULATING_SCRIPT + "\nCFG.acc_steps = 1\n",
                     "Configs/segmentation_config.py": "class CFG:\n    acc_steps = 1\n"})
    assert sorted(d.code for d in check(tmp_path, "TRAIN/train.py")) == ["AMP301", "AMP305"]


# yolov5's segment/train.py: the package root is the script's parent, put on sys.path from
# `__file__`; the criterion there returns a sum over the batch (`loss * bs`), so the undivided
# accumulation is the design, not a bug
SUM_REDUCED_CRITERION = """\
class ComputeLoss:
    def __call__(self, p, targets):
        bs = p.shape[0]
        loss = ((p - targets) ** 2).mean()
        return loss * bs, loss.detach()
"""
SEGMENT_SCRIPT = """\
import sys
from pathlib import Path

import torch

FILE = Path(__file__).resolve()
ROOT = FILE.parents[1]  # the package root
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # add ROOT to PATH

from utils.loss import ComputeLoss


def train(model, loader, optimizer, accumulate):
    compute_loss = ComputeLoss()
    for i, (x, y) in enumerate(loader):
        loss, items = compute_loss(model(x), y)
        loss.backward()
        if (i + 1) % accumulate == 0:
            optimizer.step()
            optimizer.zero_grad()
"""


def test_a_package_root_put_on_sys_path_from_the_script_s_own_place_resolves(tmp_path):
    # nested in a course repository, as in PyTorch-Tutorial-2nd: the project's root is not the package's
    script = "chapter-8/yolov5/segment/train.py"
    write(tmp_path, {script: SEGMENT_SCRIPT, "chapter-8/yolov5/utils/__init__.py": "",
                     "chapter-8/yolov5/utils/loss.py": SUM_REDUCED_CRITERION})
    assert [d.code for d in check(tmp_path, script)] == []
    # without the sys.path entry the criterion is unknown, and the accumulation looks undivided
    unrooted = SEGMENT_SCRIPT.replace("    sys.path.append(str(ROOT))", "    pass")
    write(tmp_path, {script: unrooted})
    assert [d.code for d in check(tmp_path, script)] == ["AMP301"]
    # `os.path.dirname(os.path.dirname(os.path.abspath(__file__)))` is the same folder
    spelled = SEGMENT_SCRIPT.replace(
        "    sys.path.append(str(ROOT))", "    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))")
    write(tmp_path, {script: "import os\n" + spelled})
    assert [d.code for d in check(tmp_path, script)] == []


# SELFRec's DirectAU: the step trains `LGCN_Encoder` of another module, whose forward is a COO
# `torch.sparse.mm` (no float16 kernel on CUDA: the conversion would raise there)
SPARSE_STEP = """\
import torch
from encoders import Encoder

model = Encoder().cuda()
optimizer = torch.optim.Adam(model.parameters())
for batch in loader:
    loss = model(batch).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def test_amp501_is_silent_on_a_model_of_a_project_module_that_computes_with_sparse_tensors(tmp_path):
    dense = "import torch\nclass Encoder(torch.nn.Module):\n    def forward(self, x):\n        return self.linear(x)\n"
    write(tmp_path, {"train.py": SPARSE_STEP, "encoders.py": dense})
    assert "AMP501" in codes(check(tmp_path))
    write(tmp_path, {"encoders.py": dense.replace("self.linear(x)", "torch.sparse.mm(self.adjacency, x)")})
    assert "AMP501" not in codes(check(tmp_path))


SCHEDULED_LOOP = """
    import torch
    from optim_utils import FACTORY


    def train(model, loader, optimizer):
        BUILD
        scaler = torch.amp.GradScaler("cuda")
        for x in loader:
            with torch.autocast("cuda"):
                loss = model(x)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scheduler.step()
            scaler.update()
    """


def test_a_scheduler_built_in_another_module_is_a_scheduler(tmp_path):
    """RAFT's shape: ``optimizer, scheduler = fetch_optimizer(...)`` from a helper module that
    names no AMP API; the scheduler stepped whatever ``scaler.step`` did is AMP217's finding."""
    write(tmp_path, {
        "train.py": SCHEDULED_LOOP.replace("FACTORY", "fetch_optimizer").replace(
            "BUILD", "optimizer, scheduler = fetch_optimizer(model)"),
        "optim_utils.py": """
            import torch


            def fetch_optimizer(model):
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
                return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, 1000)
            """,
    })
    found = [d for d in check(tmp_path) if d.code == "AMP217"]
    assert [d.location.row for d in found] == [14]


def test_a_factory_in_another_module_that_may_return_something_else_is_no_scheduler(tmp_path):
    write(tmp_path, {
        "train.py": SCHEDULED_LOOP.replace("FACTORY", "fetch_scheduler").replace(
            "BUILD", "scheduler = fetch_scheduler(optimizer)"),
        "optim_utils.py": """
            import torch
            from mystery import plateau


            def fetch_scheduler(optimizer):
                if optimizer.defaults["lr"] > 1:
                    return plateau(optimizer)
                return torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, 1000)
            """,
    })
    assert "AMP217" not in codes(check(tmp_path))

FFT_LOOP = """
    import torch
    from exp_basic import build_model


    def train(args, loader):
        model = build_model(args).cuda()
        optimizer = torch.optim.Adam(model.parameters())
        for x, y in loader:
            x, y = x.cuda(), y.cuda()
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
    """


def test_a_loop_that_may_train_an_fft_model_of_the_project_is_not_converted(tmp_path):
    """TSLib's shape: the loop trains whichever model ``--model`` picks, built in a module that
    imports them all; TimesNet's ``torch.fft.rfft`` raises on float16 input of a size that is not
    a power of two, so autocast would break those runs."""
    models = {
        "exp_basic.py": "from models import TimesNet, DLinear\n\n\ndef build_model(args):\n"
                        "    return {'TimesNet': TimesNet, 'DLinear': DLinear}[args.model].Model(args)\n",
        "models/__init__.py": "",
        "models/DLinear.py": "import torch\n\n\nclass Model(torch.nn.Module):\n    def forward(self, x):\n        return x\n",
    }
    fft = "import torch\n\n\nclass Model(torch.nn.Module):\n    def forward(self, x):\n        return torch.fft.rfft(x, dim=1).abs()\n"
    write(tmp_path, {"train.py": FFT_LOOP, **models, "models/TimesNet.py": fft})
    assert "AMP501" not in codes(check(tmp_path))
    (tmp_path / "models/TimesNet.py").write_text(fft.replace("torch.fft.rfft(x, dim=1).abs()", "x"))
    assert "AMP501" in codes(check(tmp_path))  # no model computes an FFT: a candidate
