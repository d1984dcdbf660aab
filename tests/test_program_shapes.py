"""The program shapes real training code uses (../shared/reference/program-shapes.md), one case
each, Fixit-style: INVALID cases must fire (with the fix they offer, or none), VALID ones stay
silent. Paths, not source order; objects, not text; calls, not one function at a time."""

import textwrap

import pytest

import ampfix
from ampfix.settings import Settings
from test_validate import REFUSED_CONVERSION


def diagnostics(source, code):
    source = "import torch\n" + textwrap.dedent(source)
    return [d for d in ampfix.check_source(source, "train.py", Settings()) if d.code == code]


def fixed(source):
    source = "import torch\n" + textwrap.dedent(source)
    return ampfix.fix_source(source, "train.py", Settings(), unsafe_fixes=True).source


# -- 2. paths, not source order --------------------------------------------------------------------

AMP201_INVALID = {
    "try-else runs with the body": """
        for x, y in loader:
            try:
                scaler.scale(model(x).loss).backward()
            except torch.cuda.OutOfMemoryError:
                continue
            else:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
    """,
    "unscale only under a logging condition": """
        for x, y in loader:
            scaler.scale(model(x).loss).backward()
            if log_norms:
                scaler.unscale_(optimizer)
                norms.append(grad_norm(model))
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
    """,
}

AMP201_VALID = {
    "unscale in the else of the try": """
        for x, y in loader:
            try:
                scaler.scale(model(x).loss).backward()
            except torch.cuda.OutOfMemoryError:
                continue
            else:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
    """,
    "unscale and clip under the same condition": """
        for x, y in loader:
            scaler.scale(model(x).loss).backward()
            if clip:
                scaler.unscale_(optimizer)
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
    """,
    "a helper of the module unscales": """
        def unscale_and_log(scaler, optimizer):
            scaler.unscale_(optimizer)

        for x, y in loader:
            scaler.scale(model(x).loss).backward()
            unscale_and_log(scaler, optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
    """,
    "an unknown call is handed the scaler": """
        from utils import prepare_step

        for x, y in loader:
            scaler.scale(model(x).loss).backward()
            prepare_step(scaler, optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
    """,
}


@pytest.mark.parametrize("source", AMP201_INVALID.values(), ids=AMP201_INVALID.keys())
def test_amp201_invalid(source):
    assert len(diagnostics(source, "AMP201")) == 1


def test_amp201_try_else_fix_inserts_unscale():
    out = fixed(AMP201_INVALID["try-else runs with the body"])
    assert "scaler.unscale_(optimizer)\n        torch.nn.utils.clip_grad_norm_" in out


def test_amp201_conditional_unscale_is_reported_without_a_fix():
    # a second unscale_ before the clip would raise on the path where the first one ran
    diag, = diagnostics(AMP201_INVALID["unscale only under a logging condition"], "AMP201")
    assert diag.fix is None


@pytest.mark.parametrize("source", AMP201_VALID.values(), ids=AMP201_VALID.keys())
def test_amp201_valid(source):
    assert diagnostics(source, "AMP201") == []


BRANCHES = """
    for x, y in loader:
        if use_amp:
            with torch.autocast("cuda"):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
"""

FP32_BRANCH_OF_SPLIT_STEP = """
    for x, y in loader:
        if use_amp:
            with torch.autocast("cuda"):
                loss = criterion(model(x), y)
        else:
            loss = criterion(model(x), y)
        if use_amp:
            loss_scaler(loss, optimizer)
        else:
            loss.backward()
            optimizer.step()
"""


@pytest.mark.parametrize("code", ["AMP202", "AMP203", "AMP208", "AMP501"])
def test_the_fp32_branch_of_use_amp_is_deliberate(code):
    assert diagnostics(BRANCHES, code) == []
    assert diagnostics(FP32_BRANCH_OF_SPLIT_STEP, code) == []


# -- 5. several optimizers ---------------------------------------------------------------------------

def test_update_inside_the_per_optimizer_loop_is_a_finding_without_a_fix():
    source = """
        for x, y in loader:
            scaler.scale(loss_fn(model(x), y)).backward()
            for opt in optimizers:
                scaler.step(opt)
                scaler.update()
    """
    diag, = diagnostics(source, "AMP204")
    assert "once, after every optimizer has stepped" in diag.message and diag.fix is None


def test_update_between_two_steps_of_one_backward_is_a_finding():
    source = """
        for x, y in loader:
            scaler.scale(loss_d).backward()
            scaler.scale(loss_g).backward()
            scaler.step(opt_d)
            scaler.update()
            scaler.step(opt_g)
            scaler.update()
    """
    assert len(diagnostics(source, "AMP204")) == 1


@pytest.mark.parametrize("source", [
    # the PyTorch AMP examples: every optimizer steps, then one update
    """
    for x, y in loader:
        scaler.scale(loss).backward()
        scaler.step(opt_a)
        scaler.step(opt_b)
        scaler.update()
    """,
    """
    for x, y in loader:
        scaler.scale(loss).backward()
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
    """,
    # D then G, each with its own backward, step and update: each update follows its own step
    """
    for x, y in loader:
        scaler.scale(loss_d).backward()
        scaler.step(opt_d)
        scaler.update()
        scaler.scale(loss_g).backward()
        scaler.step(opt_g)
        scaler.update()
    """,
    # the update in a finally runs once
    """
    for x, y in loader:
        try:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
        finally:
            scaler.update()
    """,
])
def test_several_optimizers_valid(source):
    assert diagnostics(source, "AMP204") == []


def test_a_second_update_in_a_finally_is_twice():
    source = """
        for x, y in loader:
            try:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            finally:
                scaler.update()
    """
    assert len(diagnostics(source, "AMP204")) == 1


# -- 1. objects: a self.scaler of class A is not the self.scaler of class B ---------------------------

def test_a_field_of_one_class_is_not_the_field_of_another():
    source = """
        class Evaluator:
            def __init__(self):
                self.scaler = torch.amp.GradScaler("cuda")

            def finish(self):
                self.scaler.update()

        class Trainer:
            def __init__(self):
                self.scaler = torch.amp.GradScaler("cuda")

            def step(self, loss):
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
    """
    diag, = diagnostics(source, "AMP204")
    assert "without `self.scaler.update()`" in diag.message


def test_update_in_a_helper_method_of_the_same_class_counts():
    source = """
        class Trainer:
            def step(self, loss):
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.after_step()

            def after_step(self):
                self.scaler.update()
    """
    assert diagnostics(source, "AMP204") == []


# -- 1. calls: a function called once per epoch, whatever its name -----------------------------------

def test_a_scaler_created_in_a_function_called_from_the_epoch_loop_restarts_every_epoch():
    source = """
        def run(model, loader, optimizer):
            scaler = torch.amp.GradScaler("cuda")
            for x, y in loader:
                scaler.scale(model(x)).backward()
                scaler.step(optimizer)
                scaler.update()

        for epoch in range(10):
            run(model, loader, optimizer)
    """
    assert len(diagnostics(source, "AMP205")) == 1
    called_once = source.replace("for epoch in range(10):\n            run(", "run(")
    assert called_once != source
    assert diagnostics(called_once, "AMP205") == []


# -- 1 and 3. accumulation across a helper, and what is not accumulation -------------------------------

HELPER_ACCUMULATION = """
    def fwd_bwd(model, x, y, scaler):
        with torch.autocast("cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()

    def train(model, loader, opt, scaler, accum):
        for i, (x, y) in enumerate(loader):
            fwd_bwd(model, x, y, scaler)
            if (i + 1) % accum == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
"""


def test_accumulation_whose_backward_is_in_a_helper_is_reported_at_the_call_without_a_fix():
    diag, = diagnostics(HELPER_ACCUMULATION, "AMP301")
    assert diag.location.row == 10 and diag.fix is None and "`fwd_bwd`, line 6" in diag.message


def test_a_helper_that_divides_its_loss_is_accumulation_done_right():
    divided = HELPER_ACCUMULATION.replace("scaler.scale(loss).backward()", "scaler.scale(loss / 4).backward()")
    assert diagnostics(divided, "AMP301") == []
    passed_divided = """
        def backward_step(scaler, loss):
            scaler.scale(loss).backward()

        for i, (x, y) in enumerate(loader):
            loss = model(x).mean()
            backward_step(scaler, loss / accum)
            if (i + 1) % accum == 0:
                scaler.step(opt)
                scaler.update()
    """
    assert diagnostics(passed_divided, "AMP301") == []
    assert diagnostics(passed_divided.replace("loss / accum", "loss"), "AMP301")


@pytest.mark.parametrize("source", [
    # alternating optimizers: every iteration steps one of them
    """
    for i, (x, y) in enumerate(loader):
        loss = model(x).mean()
        loss.backward()
        if i % 2 == 0:
            opt_d.step()
        else:
            opt_g.step()
    """,
    # a warm-up gate: once open, the step runs on every iteration
    """
    for it, (x, y) in enumerate(loader):
        loss = model(x).mean()
        loss.backward()
        if it >= warmup_iters:
            optimizer.step()
        optimizer.zero_grad()
    """,
])
def test_not_accumulation(source):
    for code in ("AMP301", "AMP303"):
        assert diagnostics(source, code) == []


def test_zero_grad_at_the_start_of_a_window_is_correct():
    source = """
        for i, (x, y) in enumerate(loader):
            if i % accum == 0:
                optimizer.zero_grad()
            loss = model(x).mean() / accum
            loss.backward()
            if (i + 1) % accum == 0:
                optimizer.step()
    """
    assert diagnostics(source, "AMP303") == []


def test_a_function_holding_its_own_epoch_loop_is_a_whole_training_run():
    # yolov5's `train` is called once per hyperparameter generation: each call is a new run
    source = """
        def train(hyp, epochs):
            scaler = torch.amp.GradScaler("cuda")
            for epoch in range(epochs):
                for x, y in loader:
                    scaler.scale(model(x)).backward()
                    scaler.step(optimizer)
                    scaler.update()

        for generation in range(10):
            train(hyp, 300)
    """
    assert diagnostics(source, "AMP205") == []


# -- 6. fixes use only objects that exist where they run ----------------------------------------------

def test_no_restore_fix_for_a_scaler_created_after_the_resume():
    # YOLOv6: the resume runs in __init__, the scaler is made later in before_train_loop
    source = """
        class Trainer:
            def __init__(self, ckpt):
                self.optimizer.load_state_dict(ckpt["optimizer"])

            def before_train_loop(self):
                self.scaler = torch.amp.GradScaler("cuda")

            def step(self, loss):
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
    """
    diag, = diagnostics(source, "AMP206")
    assert diag.fix is None
    created_first = source.replace("def before_train_loop(self):", "def __init__(self):", 1)
    created_first = created_first.replace("def __init__(self, ckpt):", "def resume(self, ckpt):")
    diag, = diagnostics(created_first, "AMP206")
    assert diag.fix is not None


def test_a_helpers_own_condition_correlates_with_the_callers():
    # open_clip: `backward(loss, scaler)` scales only when a scaler is given; the caller clips
    # unscaled gradients in the branch where there is none
    source = """
        def backward(total_loss, scaler):
            if scaler is not None:
                scaler.scale(total_loss).backward()
            else:
                total_loss.backward()

        for x, y in loader:
            backward(model(x).loss, scaler)
            if scaler is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
            else:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
    """
    assert diagnostics(source, "AMP201") == []
    no_unscale = source.replace("                scaler.unscale_(optimizer)\n", "")
    assert len(diagnostics(no_unscale, "AMP201")) == 1


# -- 4. per-step facts: a bfloat16 step elsewhere in the file says nothing of this scaler's step -------

def test_amp207_judges_the_steps_that_use_the_scaler():
    source = """
        def finetune(model, x):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                model(x).sum().backward()

        def train(model, x):
            scaler = torch.amp.GradScaler("cuda")
            with torch.autocast("cuda", dtype=torch.float16):
                loss = model(x).sum()
            scaler.scale(loss).backward()
    """
    assert diagnostics(source, "AMP207") == []  # its own step is float16
    # the scaler's step in bfloat16, an unrelated float16 step elsewhere: the scaler is still useless
    swapped = source.replace("torch.float16", "FP16").replace("torch.bfloat16", "torch.float16")
    swapped = swapped.replace("FP16", "torch.bfloat16")
    assert len(diagnostics(swapped, "AMP207")) == 1


# -- 6. fixes that create work are refused, and say why ------------------------------------------------

def test_a_conversion_whose_result_would_have_a_new_finding_is_refused():
    # AMP501 adds a GradScaler; the checkpoint would then lack it (a new AMP206)
    source = REFUSED_CONVERSION
    result = ampfix.fix_source(source, "train.py", Settings(), unsafe_fixes=True)
    assert result.source == source
    diag, = [d for d in result.remaining if d.code == "AMP501"]
    assert diag.fix is None and "new finding (AMP206)" in diag.fix_refused


def test_a_fix_refused_in_one_pass_is_tried_again_once_others_landed():
    # found by the property tests: the discarded scale's fix first targets the accumulation's
    # backward (a new AMP203: refused), then, once AMP301 divided that loss, the other backward
    source = (
        "scaler.scale(loss)\nfor i, x in enumerate(loader):\n    loss = criterion(model(x))\n"
        "    loss.backward()\n    if (i + 1) % a == 0:\n        optimizer.step()\n        optimizer.zero_grad()\n"
        "with amp.autocast():\n    loss = model(x)\n    loss.backward()\n"
    )
    once = ampfix.fix_source(source, "t.py", Settings(), unsafe_fixes=True)
    twice = ampfix.fix_source(once.source, "t.py", Settings(), unsafe_fixes=True)
    assert twice.source == once.source and not twice.fixed
