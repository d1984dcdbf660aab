"""AMP205: a GradScaler constructed inside the training loop, or once per epoch."""

from __future__ import annotations

import ast
import re
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Fix
from ampfix.edits import delete_statement, moved_before, parent_body
from ampfix.program.calls import calls_named
from ampfix.program.calls import resolve as resolve_call
from ampfix.rules._loop import loops_of
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.model import BACKWARD, CREATE, OPT_STEP, SCALER_STEP

_PER_EPOCH = re.compile(r"epoch", re.I)


class ScalerRecreated(Rule):
    code = "AMP205"
    name = "scaler-recreated"
    summary = "A `GradScaler` is created inside the training loop or in a per-epoch function"
    triggers = (b"GradScaler",)
    fix_safety = FIX_UNSAFE
    changes_training = "the scale now carries over"  # a bug fix: unsafe, as ruff defines it

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        for fn in ctx.training.functions:
            for create in fn.of(CREATE):
                if _created_only_when_missing(ctx, create):
                    continue  # `if scaler is None: scaler = GradScaler()`: the caller's scaler wins
                loops = loops_of(create)
                if loops and _builds_an_optimizer(ctx, loops[-1]):
                    continue  # `for fold in folds:` with a new model and optimizer: each iteration is a run of its own
                if loops:
                    message = (
                        "`GradScaler` created inside a loop starts over at the initial scale every iteration: "
                        "the scale never grows, and on overflow every step is skipped; create it once before the loop"
                    )
                    yield ctx.diagnostic(self, create.call, message, self._hoist(ctx, create, loops[0]))
                elif isinstance(fn.node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _runs_whole_training(fn) \
                        and _runs_per_epoch(ctx, fn.node):
                    message = (
                        f"`GradScaler` created in `{fn.node.name}`, which runs once per epoch: the scale and its "
                        f"growth tracker restart every epoch; create it once and pass it in"
                    )
                    yield ctx.diagnostic(self, create.call, message)

    def _hoist(self, ctx: ModuleContext, create, loop: ast.AST):
        stmt = create.stmt
        if not isinstance(stmt, (ast.Assign, ast.AnnAssign)) or stmt.value is not create.call:
            return None
        loop_names = {
            n.id for n in ast.walk(loop) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        used = {n.id for n in ast.walk(create.call) if isinstance(n, ast.Name)}
        if used & loop_names:
            return None  # its arguments change inside the loop
        delete = delete_statement(ctx, stmt, parent_body(ctx, stmt) or [])
        insert = moved_before(ctx, stmt, loop)
        if delete is None or insert is None:
            return None
        return Fix("Create the scaler once, before the loop", (insert, delete), Applicability.UNSAFE)


def _builds_an_optimizer(ctx: ModuleContext, loop: ast.AST) -> bool:
    """Whether each iteration of ``loop`` constructs an optimizer (``torch.optim.AdamW(...)``):
    then it starts a training run of its own (cross-validation folds, a hyperparameter sweep),
    and a scaler per run is right."""
    for node in ast.walk(loop):
        if isinstance(node, ast.Call):
            name = ctx.semantic.qualified_name(node.func) or ""
            last = name.rsplit(".", 1)[-1]
            if name.startswith("torch.optim.") and ".lr_scheduler." not in name and last[:1].isupper():
                return True
    return False


def _runs_whole_training(fn) -> bool:
    """The function holds its own epoch loop (the step sits in a loop inside a loop): each call is
    a whole training run (yolov5's ``train`` called per hyperparameter generation), not an epoch."""
    return any(len(loops_of(e)) >= 2 for e in fn.of(BACKWARD, SCALER_STEP, OPT_STEP))


def _runs_per_epoch(ctx: ModuleContext, function: ast.AST) -> bool:
    """Called from a loop of this module (whatever its name), or, where the module never calls it,
    named for an epoch (``train_one_epoch``: its caller's loop is elsewhere)."""
    calls = [
        c for c in calls_named(ctx.semantic, function.name)
        if (target := resolve_call(ctx.semantic, c)) is not None and target.function is function
    ]
    if calls:
        return any(
            isinstance(a, (ast.For, ast.AsyncFor, ast.While)) for c in calls for a in _ancestors_in_function(ctx, c)
        )
    return bool(_PER_EPOCH.search(function.name))


def _ancestors_in_function(ctx: ModuleContext, node: ast.AST):
    for ancestor in ctx.semantic.ancestors(node):
        if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            return
        yield ancestor


def _created_only_when_missing(ctx: ModuleContext, create) -> bool:
    """`if scaler is None:` or `if self._scaler is None:` right around the creation."""
    for frame in reversed(create.context):
        if isinstance(frame.node, ast.If) and frame.branch == "body":
            test = frame.node.test
            return (
                isinstance(test, ast.Compare)
                and len(test.ops) == 1
                and isinstance(test.ops[0], ast.Is)
                and isinstance(test.comparators[0], ast.Constant)
                and test.comparators[0].value is None
            )
    return False
