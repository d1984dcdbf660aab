"""Fixes, run: each case is a tiny training script on CPU, run before and after ampfix rewrites it.

- A safe fix (an API migration) trains identically: the same losses, the same parameters.
- An unsafe bug fix makes the intended change, checked against torch computing the right thing
  directly: an accumulation fix steps with the gradient of the concatenated batch; an
  unscale-before-clip fix clips at ``max_norm`` on unscaled gradients; a static manual loss
  scale replaced by a GradScaler trains as before when nothing overflows.

The shapes of ../shared/reference/program-shapes.md are covered: a trainer class, ``try``/
``finally``, two optimizers, an optional scaler, a multi-item ``with``. Scripts run in-process
(``exec``, one torch import), every random draw seeded inside the script.
"""

import textwrap

import pytest

import ampfix
from ampfix.settings import Settings

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # the deprecated APIs the migrations replace

def run(source: str) -> dict:
    namespace: dict = {"__name__": "__main__"}
    exec(compile(source, "case.py", "exec"), namespace)
    return namespace["RESULT"]


def rewrite(source: str, *codes: str, amp_dtype=None) -> str:
    """The rewrite by the rules ``codes`` alone (what a user selecting them gets)."""
    settings = Settings(select=frozenset(codes), default_device="cpu", amp_dtype=amp_dtype)
    result = ampfix.fix_source(source, "case.py", settings, unsafe_fixes=True)
    assert sorted({d.code for d in result.fixed}) == sorted(codes), [d.code for d in result.fixed]
    return result.source


def same(a: dict, b: dict) -> bool:
    return a["losses"] == b["losses"] and all(torch.equal(p, q) for p, q in zip(a["params"], b["params"]))


def script(body: str) -> str:
    return textwrap.dedent(body).lstrip()


# -- safe fixes: the program computes the same thing -------------------------------------------

PLAIN = script("""
    import torch
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.cpu.amp.GradScaler()
    batches = [(torch.randn(16, 8), torch.randn(16, 4)) for _ in range(6)]
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        with torch.cpu.amp.autocast():
            loss = torch.nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    RESULT = {"losses": losses, "params": [p.detach().clone() for p in model.parameters()]}
""")

TRAINER_CLASS = script("""
    import torch
    torch.manual_seed(0)


    class Trainer:
        def __init__(self, model):
            self.model = model
            self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            self.scaler = torch.cpu.amp.GradScaler()

        def step(self, x, y):
            self.optimizer.zero_grad()
            try:
                with torch.cpu.amp.autocast():
                    loss = torch.nn.functional.mse_loss(self.model(x), y)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
            finally:
                self.scaler.update()
            return loss.item()


    trainer = Trainer(torch.nn.Linear(8, 4))
    batches = [(torch.randn(16, 8), torch.randn(16, 4)) for _ in range(6)]
    RESULT = {"losses": [trainer.step(x, y) for x, y in batches],
              "params": [p.detach().clone() for p in trainer.model.parameters()]}
""")

TWO_OPTIMIZERS = script("""
    import contextlib
    import torch
    torch.manual_seed(0)
    g, d = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)
    opt_g = torch.optim.SGD(g.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(d.parameters(), lr=0.1)
    use_amp = True
    scaler = torch.cpu.amp.GradScaler() if use_amp else None
    losses = []
    for step in range(6):
        x = torch.randn(16, 8)
        with torch.cpu.amp.autocast(enabled=use_amp), contextlib.nullcontext():
            loss = d(g(x)).float().pow(2).mean()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt_g)
            scaler.step(opt_d)
            scaler.update()
        else:
            loss.backward()
            opt_g.step()
            opt_d.step()
        opt_g.zero_grad()
        opt_d.zero_grad()
        losses.append(loss.item())
    RESULT = {"losses": losses, "params": [p.detach().clone() for p in [*g.parameters(), *d.parameters()]]}
""")


@pytest.mark.parametrize("source", [PLAIN, TRAINER_CLASS, TWO_OPTIMIZERS], ids=["plain", "class-try-finally", "two-optimizers-optional-scaler-multi-with"])
def test_a_migration_trains_identically(source):
    fixed = rewrite(source, "AMP101", "AMP102")
    assert "torch.cpu.amp" not in fixed
    assert same(run(source), run(fixed))


# -- unsafe fixes: the intended change, and only it --------------------------------------------

ACCUMULATION = script("""
    import torch
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    accum_steps = 4
    batches = [(torch.randn(16, 8), torch.randn(16, 4)) for _ in range(accum_steps)]
    start = [p.detach().clone() for p in model.parameters()]
    for i, (x, y) in enumerate(batches):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    RESULT = {"start": start, "batches": batches, "params": [p.detach().clone() for p in model.parameters()]}
""")


def test_an_accumulation_fix_steps_with_the_gradient_of_the_concatenated_batch():
    fixed = rewrite(ACCUMULATION, "AMP301")
    after, before = run(fixed), run(ACCUMULATION)
    # the reference: one step (lr 1) on the mean loss of all micro-batches at once
    model = torch.nn.Linear(8, 4)
    with torch.no_grad():
        for p, p0 in zip(model.parameters(), after["start"]):
            p.copy_(p0)
    x = torch.cat([b[0] for b in after["batches"]])
    y = torch.cat([b[1] for b in after["batches"]])
    torch.nn.functional.mse_loss(model(x), y).backward()
    expected = [p0 - p.grad for p0, p in zip(after["start"], model.parameters())]
    assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(after["params"], expected))
    assert not all(torch.allclose(p, e, atol=1e-6) for p, e in zip(before["params"], expected))  # the bug: 4x the step


CLIPPING = script("""
    import torch
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu")
    x, y = torch.randn(16, 8), torch.randn(16, 4)
    start = [p.detach().clone() for p in model.parameters()]
    for step in range(1):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y) * 100
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
    RESULT = {"start": start, "x": x, "y": y, "params": [p.detach().clone() for p in model.parameters()]}
""")


def _clipped_step(result, max_norm=0.5):
    model = torch.nn.Linear(8, 4)
    with torch.no_grad():
        for p, p0 in zip(model.parameters(), result["start"]):
            p.copy_(p0)
    (torch.nn.functional.mse_loss(model(result["x"]), result["y"]) * 100).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return [p0 - p.grad for p0, p in zip(result["start"], model.parameters())]


def _update_norm(result):
    return torch.cat([(p - p0).flatten() for p, p0 in zip(result["params"], result["start"])]).norm().item()


def test_an_unscale_before_clip_fix_clips_at_max_norm_on_unscaled_gradients():
    fixed = rewrite(CLIPPING, "AMP201")
    after, before = run(fixed), run(CLIPPING)
    expected = _clipped_step(after)
    assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(after["params"], expected))
    assert abs(_update_norm(after) - 0.5) < 1e-5  # the gradient norm was above 0.5: clipped to it
    assert _update_norm(before) < 1e-3  # the bug: clipped at 0.5 x scale, so the unscaled step is tiny


CLIPPING_IN_A_CLASS = script("""
    import torch
    torch.manual_seed(0)


    class Trainer:
        def __init__(self):
            self.model = torch.nn.Linear(8, 4)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1.0)
            self.scaler = torch.amp.GradScaler("cpu")

        def fit(self, batches):
            for x, y in batches:
                self.optimizer.zero_grad()
                try:
                    loss = torch.nn.functional.mse_loss(self.model(x), y) * 100
                    self.scaler.scale(loss).backward()
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.5)
                    self.scaler.step(self.optimizer)
                finally:
                    self.scaler.update()


    trainer = Trainer()
    x, y = torch.randn(16, 8), torch.randn(16, 4)
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit([(x, y)])
    RESULT = {"start": start, "x": x, "y": y, "params": [p.detach().clone() for p in trainer.model.parameters()]}
""")


def test_an_unscale_before_clip_fix_in_a_trainer_class_with_try_finally():
    fixed = rewrite(CLIPPING_IN_A_CLASS, "AMP201")
    assert "self.scaler.unscale_(self.optimizer)" in fixed
    after = run(fixed)
    expected = _clipped_step(after)
    assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(after["params"], expected))


MANUAL_SCALE = script("""
    import torch
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_scale = 1024.0
    batches = [(torch.randn(16, 8), torch.randn(16, 4)) for _ in range(6)]
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        (loss * loss_scale).backward()
        for p in model.parameters():
            p.grad /= loss_scale
        optimizer.step()
        losses.append(loss.item())
    RESULT = {"losses": losses, "params": [p.detach().clone() for p in model.parameters()]}
""")


def test_a_static_loss_scale_becomes_bfloat16_autocast_on_a_cpu_and_trains_as_before():
    fixed = rewrite(MANUAL_SCALE, "AMP502")
    assert "loss_scale" not in fixed.split("loss_scale = 1024.0")[1] and "GradScaler" not in fixed
    assert "    loss.backward()" in fixed  # no scale left to undo, and no stray parentheses
    after, before = run(fixed), run(MANUAL_SCALE)
    assert torch.allclose(torch.tensor(after["losses"]), torch.tensor(before["losses"]), rtol=2e-2)


def test_a_static_loss_scale_replaced_by_a_grad_scaler_trains_as_before():
    fixed = rewrite(MANUAL_SCALE, "AMP502", amp_dtype="float16")
    assert "scaler.scale(loss).backward()" in fixed and "p.grad /= loss_scale" not in fixed
    after, before = run(fixed), run(MANUAL_SCALE)
    assert torch.allclose(torch.tensor(after["losses"]), torch.tensor(before["losses"]), rtol=2e-2)
    assert all(torch.allclose(p, q, atol=1e-2) for p, q in zip(after["params"], before["params"]))


FP32_LOOP = script("""
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = [(torch.randn(32, 32), torch.randint(0, 4, (32,))) for _ in range(8)]
    losses, dtypes = [], set()
    model[0].register_forward_hook(lambda module, inputs, output: dtypes.add(str(output.dtype)))
    for x, y in batches:
        x, y = x.to("cpu"), y.to("cpu")
        optimizer.zero_grad()
        output = model(x)
        loss = torch.nn.functional.cross_entropy(output, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    RESULT = {"losses": losses, "dtypes": dtypes, "params": [p.detach().clone() for p in model.parameters()]}
""")


def test_a_conversion_runs_the_forward_pass_in_low_precision_and_trains_like_fp32():
    fixed = rewrite(FP32_LOOP, "AMP501")
    after, before = run(fixed), run(FP32_LOOP)
    assert before["dtypes"] == {"torch.float32"} and after["dtypes"] == {"torch.bfloat16"}
    assert torch.allclose(torch.tensor(after["losses"]), torch.tensor(before["losses"]), rtol=2e-2)


# -- the harmful fixes of real code, each as a program that must still run and train ------------

def test_accumulation_with_autograd_backward_is_divided_and_trains_as_the_concatenated_batch():
    # `from torch.autograd import backward` crashed AMP301 ('Name' object has no attribute 'value')
    source = script("""
        import torch
        from torch.autograd import backward
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1, bias=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        xs = [torch.randn(3, 4) for _ in range(4)]
        accum = 2
        for i, x in enumerate(xs):
            loss = model(x).pow(2).mean()
            backward(loss)
            if (i + 1) % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
        RESULT = {"losses": [], "params": [p.detach().clone() for p in model.parameters()]}
    """)
    fixed = rewrite(source, "AMP301")
    assert "backward(loss / accum)" in fixed
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    xs = [torch.randn(3, 4) for _ in range(4)]
    for pair in (xs[:2], xs[2:]):
        model(torch.cat(pair)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.allclose(run(fixed)["params"][0], model.weight.detach(), atol=1e-6)


def test_an_accumulation_whose_factor_may_be_zero_gets_no_division():
    # `not accum or ...`: accum = 0 means "step every iteration"; `loss / accum` would give inf
    # (a count that is 0 as written is no accumulation at all: here it comes from the environment)
    source = script("""
        import os
        import torch
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        accum = int(os.environ.get("ACCUM", "0"))
        for i in range(4):
            loss = model(torch.randn(3, 4)).pow(2).mean()
            loss.backward()
            if not accum or (i + 1) % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
        RESULT = {"losses": [], "params": [p.detach().clone() for p in model.parameters()]}
    """)
    [diag] = [d for d in ampfix.check_source(source, "case.py", Settings(select=frozenset({"AMP301"})))]
    assert diag.fix is None and "may be 0" in diag.no_fix_reason
    assert all(torch.isfinite(p).all() for p in run(source)["params"])


def test_a_checkpoint_of_a_run_without_amp_saves_and_loads(tmp_path):
    # the scaler is None unless AMP is on: the fix must hold on that path too
    source = script(f"""
        import torch
        torch.manual_seed(0)


        class Trainer:
            def __init__(self, use_amp):
                self.model = torch.nn.Linear(4, 1)
                self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
                self._scaler = torch.amp.GradScaler("cpu") if use_amp else None

            def step(self, x):
                loss = self.model(x).pow(2).mean()
                if self._scaler is not None:
                    self._scaler.scale(loss).backward()
                    self._scaler.step(self.optimizer)
                    self._scaler.update()
                else:
                    loss.backward()
                    self.optimizer.step()
                self.optimizer.zero_grad()

            def save(self, path):
                torch.save({{"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}}, path)

            def load(self, path):
                ckpt = torch.load(path)
                self.model.load_state_dict(ckpt["model"])
                self.optimizer.load_state_dict(ckpt["optimizer"])


        for use_amp in (False, True):
            trainer = Trainer(use_amp)
            trainer.step(torch.randn(3, 4))
            trainer.save({str(tmp_path / "ckpt.pt")!r})
            Trainer(use_amp).load({str(tmp_path / "ckpt.pt")!r})
        RESULT = {{"losses": [], "params": [p.detach().clone() for p in trainer.model.parameters()]}}
    """)
    fixed = rewrite(source, "AMP206")
    assert "self._scaler.state_dict() if self._scaler is not None else None" in fixed
    assert "if self._scaler is not None and " in fixed
    run(fixed)  # raised AttributeError: 'NoneType' object has no attribute 'state_dict'


def test_backward_stays_inside_no_sync():
    # `with torch.autocast(...), ddp.no_sync():` — moving the backward out would all-reduce it
    source = script("""
        import contextlib
        import torch
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        synced = []

        @contextlib.contextmanager
        def no_sync():
            synced.append(False)
            yield

        for i in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16), no_sync():
                loss = model(torch.randn(3, 4)).float().pow(2).mean()
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        RESULT = {"losses": [], "params": [p.detach().clone() for p in model.parameters()]}
    """)
    [diag] = ampfix.check_source(source, "case.py", Settings(select=frozenset({"AMP401"})))
    assert diag.fix is None and "`no_sync()`" in diag.no_fix_reason
    result = ampfix.fix_source(source, "case.py", Settings(select=frozenset({"AMP401"})), unsafe_fixes=True)
    assert result.source == source


def test_a_conversion_on_an_accelerator_that_may_be_absent_runs_without_one():
    # pytorch/examples' mnist_rnn: `torch.accelerator.current_accelerator()` is None on a machine
    # without one, where `.to(None)` keeps tensors on the CPU; the rewrite must run there too
    source = textwrap.dedent("""\
        import torch

        torch.manual_seed(0)
        device = torch.accelerator.current_accelerator() if USE_ACCEL else torch.device("cpu")
        model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 4)).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = [(torch.randn(8, 128), torch.randint(0, 4, (8,))) for _ in range(3)]
        losses = []
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        RESULT = {"losses": losses, "params": [p.detach().clone() for p in model.parameters()]}
    """)
    if torch.accelerator.current_accelerator() is not None:
        pytest.skip("an accelerator is present")
    settings = Settings(select=frozenset({"AMP501"}))
    for form in ("torch.accelerator.current_accelerator() if USE_ACCEL else torch.device(\"cpu\")",
                 "torch.accelerator.current_accelerator()"):
        script = source.replace("torch.accelerator.current_accelerator() if USE_ACCEL else torch.device(\"cpu\")", form)
        script = script.replace("USE_ACCEL", "True")
        converted = ampfix.fix_source(script, "case.py", settings, unsafe_fixes=True).source
        assert "is not None else" in converted
        assert same(run(script), run(converted))  # autocast and the scaler stay off on the CPU
