"""Call resolution (ampfix.program.calls) and the project index (ampfix.program.project):
snapshots of which function every call of a small module or project runs, with the arguments
bound to its parameters, as ruff snapshots its semantic model. A line reads
``line:column call -> function (bound self) {parameter: argument}``, or ``-> ?`` when the call
is left unresolved (a builtin, an attribute of an unknown object, ``*args``)."""

from __future__ import annotations

import ast
import os
import textwrap

from ampfix.engine import project_index
from ampfix.program.calls import bind_arguments, module_callers, resolve, resolve_in_project
from ampfix.semantic import SemanticModel
from ampfix.settings import Settings

MODULE = """\
class Trainer:
    def __init__(self, model):
        self.model = model

    def step(self, loss, scaler=None):
        self.backward(loss)

    def backward(self, loss):
        loss.backward()

    def __call__(self, batch):
        return self.step(batch)


class Criterion:
    def forward(self, out, y):
        return out - y


def train(trainer, loader):
    for batch in loader:
        trainer.step(batch)


trainer = Trainer(model)
criterion = Criterion()
trainer.step(loss, scaler=gs)
trainer(batch)
criterion(out, y)
train(trainer, loader)
train(*arguments)
print(trainer)
"""


def describe(source: str, module_forward: bool = False) -> str:
    tree = ast.parse(source)
    semantic = SemanticModel(tree)
    lines = []
    for call in sorted(semantic.nodes(ast.Call), key=lambda c: (c.lineno, c.col_offset)):
        target = resolve(semantic, call, module_forward=module_forward)
        text = ast.get_source_segment(source, call)
        if target is None:
            lines.append(f"{call.lineno}:{call.col_offset} {text} -> ?")
            continue
        bound = bind_arguments(target, call)
        arguments = "*args" if bound is None else ", ".join(f"{k}: {ast.unparse(v)}" for k, v in bound.items())
        self_note = " (bound self)" if target.bound_self else ""
        lines.append(f"{call.lineno}:{call.col_offset} {text} -> {target.function.name}{self_note} {{{arguments}}}")
    return "\n".join(lines) + "\n"


def test_snapshot_module_calls():
    # `trainer` in `train` is a parameter that `train` never assigns: its class is read from the
    # module's `trainer = Trainer(model)` (here also what the one caller passes)
    assert describe(MODULE) == textwrap.dedent("""\
        6:8 self.backward(loss) -> backward (bound self) {loss: loss}
        9:8 loss.backward() -> ?
        12:15 self.step(batch) -> step (bound self) {loss: batch}
        22:8 trainer.step(batch) -> step (bound self) {loss: batch}
        25:10 Trainer(model) -> ?
        26:12 Criterion() -> ?
        27:0 trainer.step(loss, scaler=gs) -> step (bound self) {loss: loss, scaler: gs}
        28:0 trainer(batch) -> __call__ (bound self) {batch: batch}
        29:0 criterion(out, y) -> ?
        30:0 train(trainer, loader) -> train {trainer: trainer, loader: loader}
        31:0 train(*arguments) -> train {*args}
        32:0 print(trainer) -> ?
        """)


def test_snapshot_module_forward_is_what_calling_a_module_runs():
    # asked for a value (the loss a criterion returns), calling an instance runs `forward`
    lines = describe(MODULE, module_forward=True).splitlines()
    assert "29:0 criterion(out, y) -> forward (bound self) {out: out, y: y}" in lines
    assert "28:0 trainer(batch) -> __call__ (bound self) {batch: batch}" in lines  # `__call__` first


def test_module_callers_of_a_function():
    semantic = SemanticModel(ast.parse(MODULE))
    train = next(n for n in semantic.nodes(ast.FunctionDef) if n.name == "train")
    callers = [(call.lineno, None if bound is None else sorted(bound)) for call, bound in module_callers(semantic, train)]
    assert callers == [(30, ["loader", "trainer"]), (31, None)]


PROJECT = {
    "train.py": """\
        import torch
        from engine import fit, Stepper
        from losses import SumLoss
        import utils.helpers as helpers

        criterion = SumLoss()
        stepper = Stepper()


        def main(model, loader, optimizer, scaler):
            fit(model, loader, optimizer, scaler)
            stepper.step(scaler, optimizer)
            criterion(model(x), y)
            helpers.clip(model)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        """,
    "engine.py": """\
        from utils import fit


        class Stepper:
            def step(self, scaler, optimizer):
                scaler.step(optimizer)
                scaler.update()
        """,
    "utils/__init__.py": "from .loops import fit\n",
    "utils/loops.py": """\
        def fit(model, loader, optimizer, scaler):
            for x, y in loader:
                scaler.scale(model(x, y)).backward()
                scaler.step(optimizer)
                scaler.update()
        """,
    "utils/helpers.py": """\
        def clip(model):
            return model
        """,
    "losses.py": """\
        class SumLoss:
            def forward(self, out, y):
                return (out - y).sum()
        """,
}


def write(root, files) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def describe_project(root, name: str, prefiltered: bool = True, module_forward: bool = False) -> str:
    settings = Settings(project_root=str(root))
    index = project_index(settings)
    module = index.load(str(root / name), prefiltered=False)
    lines = []
    for call in sorted(module.semantic.nodes(ast.Call), key=lambda c: (c.lineno, c.col_offset)):
        found = resolve_in_project(module, call, index, prefiltered=prefiltered, module_forward=module_forward)
        where = "?" if found is None else (
            f"{os.path.relpath(found.module.path, root)}:{found.target.function.lineno} {found.target.function.name}"
        )
        lines.append(f"{call.lineno} {ast.get_source_segment(module.text, call)} -> {where}")
    return "\n".join(lines) + "\n"


def test_snapshot_project_calls(tmp_path):
    # through `from engine import fit` re-exported by `from utils import fit` and `utils/__init__.py`;
    # a method of an instance of an imported class; `import a.b as c`. Modules without AMP code
    # (helpers, losses) are not loaded for training facts.
    write(tmp_path, PROJECT)
    assert describe_project(tmp_path, "train.py") == textwrap.dedent("""\
        6 SumLoss() -> ?
        7 Stepper() -> ?
        11 fit(model, loader, optimizer, scaler) -> utils/loops.py:1 fit
        12 stepper.step(scaler, optimizer) -> engine.py:5 step
        13 criterion(model(x), y) -> ?
        13 model(x) -> ?
        14 helpers.clip(model) -> ?
        15 torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) -> ?
        15 model.parameters() -> ?
        """)


def test_snapshot_project_calls_for_values(tmp_path):
    # asked about values (what a loss function returns): any module, and `forward` of a module
    write(tmp_path, PROJECT)
    found = describe_project(tmp_path, "train.py", prefiltered=False, module_forward=True).splitlines()
    assert "13 criterion(model(x), y) -> losses.py:2 forward" in found
    assert "14 helpers.clip(model) -> utils/helpers.py:1 clip" in found


def test_project_callers_of_a_step_function(tmp_path):
    write(tmp_path, PROJECT)
    settings = Settings(project_root=str(tmp_path))
    index = project_index(settings)
    loops = index.load(str(tmp_path / "utils" / "loops.py"))
    fit = next(n for n in loops.semantic.nodes(ast.FunctionDef) if n.name == "fit")
    callers = sorted(
        (os.path.relpath(module.path, tmp_path), call.lineno) for module, call in index.callers(loops, fit)
    )
    assert callers == [("train.py", 11)]
