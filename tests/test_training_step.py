"""Training steps (ampfix.training.step): one per iteration of a loop that backpropagates and
steps, wherever the step's parts live; what no such loop holds is the function's body step."""

import ast
import textwrap

import ampfix
from ampfix.context import ModuleContext
from ampfix.settings import Settings
from ampfix.training.model import BACKWARD, OPT_STEP, SCALER_STEP


def steps(source: str, function: str = None):
    text = "import torch\n" + textwrap.dedent(source).lstrip("\n")  # line 2: the first line
    ctx = ModuleContext("train.py", text, ast.parse(text), Settings())
    found = []
    for step in ctx.steps:
        name = getattr(step.function.node, "name", "<module>")
        if function is None or name == function:
            found.append(step)
    return found


def lines(step, *kinds):
    return [e.line for e in step.of(*kinds, calls=True)]


def test_two_training_phases_in_one_module_are_two_steps():
    found = steps("""
        for x in loader:                              # 2: the fp32 baseline
            loss = model(x)
            loss.backward()                           # 4
            optimizer.step()
        scaler = torch.amp.GradScaler()
        for x in loader:                              # 7: the AMP phase
            with torch.autocast("cuda"):
                loss = model(x)
            scaler.scale(loss).backward()             # 10
            scaler.step(optimizer)
            scaler.update()
    """)
    loops = [s for s in found if s.loop is not None]
    assert [s.loop.lineno for s in loops] == [2, 7]
    assert [lines(s, BACKWARD) for s in loops] == [[4], [10]]
    assert [s.uses_scaler for s in loops] == [False, True]
    body = next(s for s in found if s.loop is None)
    assert not body.backwards  # only the scaler's creation is outside the loops


def test_a_micro_batch_loop_belongs_to_the_step_around_it_with_its_window():
    (step,) = [s for s in steps("""
        for it in range(max_iters):                   # 2
            for micro in range(accum):                # 3
                loss = model(x) / accum
                loss.backward()                       # 5
            optimizer.step()                          # 6
            optimizer.zero_grad()
    """) if s.loop is not None]
    assert step.loop.lineno == 2
    assert lines(step, BACKWARD) == [5] and lines(step, OPT_STEP) == [6]
    (window,) = step.windows
    assert window.loop.lineno == 3 and window.gate is None


def test_a_gated_step_is_one_step_of_the_batch_loop_not_of_the_epoch_loop():
    found = [s for s in steps("""
        for epoch in range(epochs):                   # 2
            for i, x in enumerate(loader):            # 3
                (model(x) / n).backward()
                if (i + 1) % n == 0:
                    optimizer.step()
                    optimizer.zero_grad()
    """) if s.loop is not None]
    assert [s.loop.lineno for s in found] == [3]
    assert [w.gate.lineno for w in found[0].windows] == [5]


def test_a_loop_over_optimizers_is_part_of_the_step():
    (step,) = [s for s in steps("""
        for x in loader:                              # 2
            scaler.scale(model(x)).backward()
            for opt in optimizers:
                scaler.step(opt)                      # 5
            scaler.update()
    """) if s.loop is not None]
    assert step.loop.lineno == 2 and lines(step, SCALER_STEP) == [5]


def test_an_inner_loop_that_steps_on_its_own_is_a_step_of_its_own():
    found = [s for s in steps("""
        for task in tasks:                            # 2: meta-learning
            for _ in range(inner_steps):              # 3
                inner_loss(task).backward()           # 4
                inner_opt.step()
            outer_loss(task).backward()               # 6
            meta_opt.step()
    """) if s.loop is not None]
    assert [(s.loop.lineno, lines(s, BACKWARD)) for s in found] == [(2, [6]), (3, [4])]


def test_a_step_method_without_a_loop_is_its_body_step():
    (step,) = steps("""
        class Trainer:
            def train_step(self, batch):
                loss = self.model(batch)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
    """, function="train_step")
    assert step.loop is None and step.uses_scaler and len(step.backwards) == 1


def test_a_helpers_backward_counts_in_the_callers_step_at_the_call():
    (step,) = [s for s in steps("""
        def backward_pass(loss):
            loss.backward()

        for x in loader:                              # 5
            backward_pass(model(x))                   # 6
            optimizer.step()
    """, function="<module>") if s.loop is not None]
    assert step.loop.lineno == 5 and lines(step, BACKWARD) == [6]
    assert step.backwards[0].via is not None  # the callee's event, at the call


SCALED_PHASE = """
        scaler = torch.amp.GradScaler("cuda")
        for x, y in loader:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
"""


def amp208(source):
    source = "import torch\n" + textwrap.dedent(source).lstrip("\n")
    return [d.location.row for d in ampfix.check_source(source, "train.py", Settings(preview=True)) if d.code == "AMP208"]


def test_amp208_judges_each_phase_a_float16_phase_before_the_scaled_one_is_reported():
    # the scaler of the second loop does not scale the first loop's float16 gradients
    assert amp208("""
        for x, y in loader:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    """ + SCALED_PHASE) == [5]  # its backward


def test_amp208_a_step_through_a_scaler_stays_silent_when_set_up_runs_outside_its_loop():
    assert amp208(SCALED_PHASE) == []


def test_a_loop_over_an_empty_range_holds_no_step():
    # the official AMP recipe keeps an illustration loop that never runs
    assert amp208("""
        for epoch in range(0):  # for illustration only
            for x, y in loader:
                with torch.autocast("cuda", dtype=torch.float16):
                    loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
    """ + SCALED_PHASE) == []
    found = steps("""
        for epoch in range(3, 3):
            for x in loader:
                model(x).backward()
                optimizer.step()
    """)
    assert all(not s.backwards for s in found)


def test_amp209_float16_weights_are_judged_by_their_own_steps_scaling():
    # the scaler of the second model's loop does not scale the float16 model's gradients
    source = "import torch\n" + textwrap.dedent("""
        net = Net().cuda().half()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for x in loader:
            net(x).sum().backward()
            opt.step()
        scaler = torch.amp.GradScaler("cuda")
        model = Net().cuda()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in loader:
            with torch.autocast("cuda"):
                loss = model(x).sum()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    """).lstrip("\n")
    found = [d.location.row for d in ampfix.check_source(source, "train.py", Settings(preview=True)) if d.code == "AMP209"]
    assert found == [6]  # `opt.step()` of the first loop
