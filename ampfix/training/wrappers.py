"""Objects that wrap the step: DistributedDataParallel models and learning-rate schedulers, from
the values that create them (ampfix.program.values), never from their names.

A model is DDP when the object its forward call runs on was created by
``torch.nn.parallel.DistributedDataParallel`` (any spelling, through imports), or returned by a
function (of this module or, through the project index, of another) whose ``return`` creates
one (the ``smart_DDP(model)`` helper shape). ``ddp_model`` says whether that holds on some path
(a model wrapped only under ``if distributed:``) and on every path.

A scheduler is an object created by a ``torch.optim.lr_scheduler`` class (``ReduceLROnPlateau``
aside: it steps on a metric, per evaluation) or returned by a schedule factory of transformers or
diffusers (``get_linear_schedule_with_warmup``, ``get_scheduler``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ampfix.program.calls import resolve, resolve_in_project
from ampfix.training.model import Event, StepFunction

if TYPE_CHECKING:
    from ampfix.training.model import TrainingModel

DDP_CLASSES = frozenset({
    "torch.nn.parallel.DistributedDataParallel",
    "torch.nn.parallel.distributed.DistributedDataParallel",
})
SCHEDULER_STEP = "scheduler_step"  # not a model event kind: made for path questions here
_SCHEDULE_FACTORY = re.compile(r"^(transformers|diffusers)(\.optimization)?\.get_\w*schedule", re.I)


@dataclass
class DdpModel:
    some_path: bool  # the object is a DDP model on some path
    every_path: bool  # ... and on every path (``model.no_sync()`` then always exists)


def ddp_model(model: "TrainingModel", expr: ast.AST) -> DdpModel:
    """Whether ``expr`` (a forward call's callee: ``model``, ``self.net``) is a DDP model."""
    origins = model.values.origins(model.values.object_of(expr))
    verdicts = [_creates_ddp(model, o) for o in origins]
    return DdpModel(any(verdicts), bool(verdicts) and all(verdicts))


def _creates_ddp(model: "TrainingModel", origin) -> bool:
    if origin.kind != "call":
        return False
    if origin.callee in DDP_CLASSES:
        return True
    call = _call_at(model, origin.site)
    return call is not None and _returns_ddp(model, call)


def _call_at(model: "TrainingModel", site: tuple) -> Optional[ast.Call]:
    if len(site) < 3 or site[0] != model.ctx.path:
        return None
    index = getattr(model, "_calls_by_site", None)
    if index is None:
        index = model._calls_by_site = {(c.lineno, c.col_offset): c for c in model.ctx.semantic.nodes(ast.Call)}
    return index.get((site[1], site[2]))


def _returns_ddp(model: "TrainingModel", call: ast.Call) -> bool:
    """Whether the function ``call`` runs returns a DDP construction (one level: its own ``return``)."""
    target = resolve(model.ctx.semantic, call)
    source = model.ctx
    project = getattr(model.ctx, "project", None)
    if target is None and project is not None:
        found = resolve_in_project(model.ctx, call, project)
        if found is not None:
            project.note_call(model.ctx.path, found.module.path)
            target, source = found.target, found.module
    if target is None:
        return False
    returns = [n for n in ast.walk(target.function) if isinstance(n, ast.Return) and n.value is not None]
    return any(
        isinstance(r.value, ast.Call) and source.semantic.qualified_name(r.value.func) in DDP_CLASSES for r in returns
    )


def is_lr_scheduler(model: "TrainingModel", expr: ast.AST) -> bool:
    """Whether every object ``expr`` may be is an LR scheduler stepped per optimizer step."""
    origins = model.values.origins(model.values.object_of(expr))
    return bool(origins) and all(o.kind == "call" and _scheduler_callee(o.callee) for o in origins)


def _scheduler_callee(callee: Optional[str]) -> bool:
    if not callee:
        return False
    if callee.startswith("torch.optim.lr_scheduler."):
        return not callee.endswith("ReduceLROnPlateau")
    return bool(_SCHEDULE_FACTORY.match(callee))


def scheduler_steps(model: "TrainingModel", function: StepFunction) -> list[Event]:
    """``scheduler.step()`` calls of a function's own body, as events (for path questions)."""
    found = []
    for call in model.calls_in(function):
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "step" and is_lr_scheduler(model, func.value):
            event = model.event_at(call, SCHEDULER_STEP)
            if event is not None:
                found.append(event)
    return found
