"""The GradScaler typestate (ampfix.training.typestate): the errors each shape reaches, with the
path that leads there, over one iteration of the step."""

from __future__ import annotations

import ast
import textwrap

import pytest

from ampfix.context import ModuleContext
from ampfix.settings import Settings
from ampfix.training import typestate
from ampfix.training.typestate import protocols


def errors(source: str) -> list[tuple]:
    """(kind, line, [lines of the path]) of every error of every scaler of every function."""
    text = "import torch\n" + textwrap.dedent(source)
    ctx = ModuleContext("t.py", text, ast.parse(text), Settings())
    model = ctx.training
    found = []
    for fn in model.functions:
        for protocol in protocols(model, fn):
            assert protocol.complete
            found += [(e.kind, e.event.line, [p.line for p in e.path]) for e in protocol.errors]
    return sorted(found)


STEP = """
scaler = torch.amp.GradScaler()
for x in loader:
    loss = model(x)
    scaler.scale(loss).backward()
{middle}
    opt.zero_grad()
"""


def step(*lines: str) -> str:
    return STEP.format(middle="\n".join("    " + line for line in lines))


def test_correct_protocol_has_no_error():
    assert errors(step("scaler.unscale_(opt)", "torch.nn.utils.clip_grad_norm_(p, 1.0)",
                       "scaler.step(opt)", "scaler.update()")) == []


def test_clip_while_scaled_with_the_backward_as_evidence():
    assert errors(step("torch.nn.utils.clip_grad_norm_(p, 1.0)", "scaler.step(opt)", "scaler.update()")) == [
        ("clip_scaled", 7, [6]),
    ]


def test_second_unscale_names_the_first():
    assert errors(step("scaler.unscale_(opt)", "scaler.unscale_(opt)", "scaler.step(opt)", "scaler.update()")) == [
        ("second_unscale", 8, [6, 7]),
    ]


def test_unscale_after_step_names_the_step():
    assert errors(step("scaler.step(opt)", "scaler.unscale_(opt)", "scaler.update()")) == [
        ("unscale_after_step", 8, [6, 7]),
    ]


def test_update_twice():
    assert errors(step("scaler.step(opt)", "scaler.update()", "scaler.update()")) == [("update_twice", 9, [8])]


def test_update_inside_the_per_optimizer_loop_steps_after_update():
    found = errors(step("for o in (opt_a, opt_b):", "    scaler.step(o)", "    scaler.update()"))
    assert ("step_after_update", 8, [9]) in found


def test_plain_optimizer_step_while_scaled():
    assert errors(step("opt.step()")) == [("step_while_scaled", 7, [6])]


def test_each_optimizer_unscaled_once_is_right():
    assert errors(step("scaler.unscale_(opt_d)", "scaler.unscale_(opt_g)", "torch.nn.utils.clip_grad_norm_(p, 1.0)",
                       "scaler.step(opt_d)", "scaler.step(opt_g)", "scaler.update()")) == []


def test_a_loop_variable_is_one_optimizer_per_pass():
    assert errors(step("for o in optimizers:", "    scaler.unscale_(o)", "    scaler.step(o)",
                       "scaler.update()")) == []


def test_an_alias_of_the_optimizer_is_the_optimizer():
    assert errors(step("o = opt", "scaler.unscale_(opt)", "scaler.unscale_(o)", "scaler.step(opt)",
                       "scaler.update()")) == [("second_unscale", 9, [6, 8])]


def test_conditional_unscale_with_its_clip_is_right():
    assert errors(step("if clip:", "    scaler.unscale_(opt)", "    torch.nn.utils.clip_grad_norm_(p, 1.0)",
                       "scaler.step(opt)", "scaler.update()")) == []


def test_branches_on_one_flag_correlate_until_it_is_rebound():
    source = """
    scaler = torch.amp.GradScaler()
    for i, x in enumerate(loader):
        loss = model(x)
        if use_amp:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        {between}
        if use_amp:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    """
    assert errors(source.format(between="pass")) == []
    assert [e[0] for e in errors(source.format(between="use_amp = i > 100"))] == ["plain_then_step", "step_while_scaled"]


def test_an_unknown_call_handed_the_scaler_ends_the_analysis():
    assert errors(step("helper_elsewhere(scaler, opt)", "scaler.unscale_(opt)", "scaler.step(opt)",
                       "scaler.update()")) == []


def test_a_helper_that_unscales_counts_at_its_call():
    source = """
    def clip(scaler, opt, params):
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)

    def train(loader):
        scaler = torch.amp.GradScaler()
        for x in loader:
            scaler.scale(model(x)).backward()
            clip(scaler, opt, p)
            scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
    """
    assert errors(source) == [("second_unscale", 12, [10, 11])]


def test_micro_batch_loop_is_one_iteration_each():
    # unscale_ per micro-batch is AMP302's (across iterations): not a second unscale_ in one
    source = """
    scaler = torch.amp.GradScaler()
    for i, x in enumerate(loader):
        scaler.scale(model(x)).backward()
        scaler.unscale_(opt)
        if (i + 1) % 4 == 0:
            scaler.step(opt)
            scaler.update()
    """
    assert errors(source) == []


@pytest.mark.parametrize("spelling", ["torch.cuda.amp.GradScaler()", "torch.GradScaler('cuda')"])
def test_a_scaler_not_named_scaler(spelling):
    source = f"""
    gs = {spelling}
    for x in loader:
        gs.scale(model(x)).backward()
        torch.nn.utils.clip_grad_norm_(p, 1.0)
        gs.step(opt)
        gs.update()
    """
    assert errors(source) == [("clip_scaled", 6, [5])]


def test_a_callee_branch_on_a_constant_argument_is_decided_at_the_call():
    # pytorch/examples minGPT-ddp: one per-batch method for training and evaluation; the call
    # with `train=False` neither backpropagates nor steps, so nothing steps after the update
    source = """
    class Trainer:
        def run_batch(self, x, train):
            loss = self.model(x)
            if train:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()

        def fit(self, loader, test_loader):
            for epoch in range(10):
                for x in loader:
                    self.run_batch(x, train=True)
                for x in test_loader:
                    self.run_batch(x, train=False)
    """
    assert errors(source) == []
    # a flag of the caller: the call's backward and step run together or not at all
    assert errors(source.replace("train=False", "train=evaluate")) == []
    # a call that steps without its own backward after the update does step scaled-before gradients
    stale = source.replace("self.run_batch(x, train=False)", "self.scaler.step(self.optimizer)")
    assert [kind for kind, _, _ in errors(stale)] == ["step_after_update"]


# minimind: accumulation, then a flush step after the loop for a last incomplete window
FLUSH_AFTER_THE_LOOP = """
def train_epoch(loader):
    for step, x in enumerate(loader, start=1):
        loss = model(x) / accum
        scaler.scale(loss).backward()
        if step % accum == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
    if step % accum != 0:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
"""


def test_a_step_after_an_update_steps_nothing_stale_once_zero_grad_wiped_the_gradients():
    assert errors(FLUSH_AFTER_THE_LOOP) == []  # the last window's gradients were scaled after the update
    # without the wipe, the loop's last update is followed by a step of gradients scaled before it
    unwiped = FLUSH_AFTER_THE_LOOP.replace("            optimizer.zero_grad(set_to_none=True)\n", "")
    assert [kind for kind, _, _ in errors(unwiped)] == ["step_after_update"]
    # another optimizer's zero_grad does not wipe what this scaler steps
    other = FLUSH_AFTER_THE_LOOP.replace("            optimizer.zero_grad(set_to_none=True)\n", "            optimizer_d.zero_grad()\n")
    assert [kind for kind, _, _ in errors(other)] == ["step_after_update"]



def test_past_its_budget_of_event_outcomes_the_search_is_incomplete(monkeypatch):
    # Bert-VITS2: a call whose many events each run under their own condition multiplies the
    # states at its node (35 s of search for one module); past the budget the protocol is
    # incomplete, and the rules stay silent on it, as past the state limit
    text = "import torch\n" + textwrap.dedent(step("scaler.unscale_(opt)", "torch.nn.utils.clip_grad_norm_(p, 1.0)", "scaler.step(opt)", "scaler.update()"))
    ctx = ModuleContext("t.py", text, ast.parse(text), Settings())
    model = ctx.training
    assert all(p.complete for fn in model.functions for p in protocols(model, fn))
    monkeypatch.setattr(typestate, "_MAX_TRANSITIONS", 3)
    ctx = ModuleContext("t.py", text, ast.parse(text), Settings())
    model = ctx.training
    assert [p.complete for fn in model.functions for p in protocols(model, fn)] == [False]


def test_tests_that_guard_no_event_do_not_multiply_the_paths():
    # twenty logging conditions in the step: 2 ** 20 paths if each branch were remembered, past
    # the search's limits; only the tests around the protocol's events are, so the search ends
    # and the clip of still-scaled gradients is found
    lines = [line for n in range(2, 22) for line in (f"if step % {n} == 0:", f"    log({n})")]
    source = step(*lines, "torch.nn.utils.clip_grad_norm_(p, 1.0)", "scaler.step(opt)", "scaler.update()")
    assert [kind for kind, _line, _path in errors(source)] == ["clip_scaled"]
