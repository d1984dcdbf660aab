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

from ampfix.program.calls import Target, bind_arguments, resolve, resolve_in_project
from ampfix.semantic import dotted_name
from ampfix.training.model import Event, StepFunction

if TYPE_CHECKING:
    from ampfix.training.model import TrainingModel

DDP_CLASSES = frozenset({
    "torch.nn.parallel.DistributedDataParallel",
    "torch.nn.parallel.distributed.DistributedDataParallel",
})
SCHEDULER_STEP = "scheduler_step"  # not a model event kind: made for path questions here
_SCHEDULE_FACTORY = re.compile(r"^(transformers|diffusers)(\.optimization)?\.get_\w*schedule", re.I)
_MAX_ALIASES = 4  # `ddp_model = model = DDP(...)`: names followed back to a value


@dataclass
class DdpModel:
    some_path: bool  # the object is a DDP model on some path
    every_path: bool  # ... and on every path (``model.no_sync()`` then always exists)


def ddp_model(model: "TrainingModel", expr: ast.AST) -> DdpModel:
    """Whether ``expr`` (a forward call's callee: ``model``, ``self.net``) is a DDP model."""
    if _unwrapped(model.values, expr):
        return DdpModel(False, False)
    origins = model.values.origins(model.values.object_of(expr))
    verdicts = []
    for origin in origins:
        verdicts += _passed_ddp(model, origin) if origin.kind == "param" else [_creates_ddp(model, origin)]
    every = bool(verdicts) and all(verdicts) and _known_on_every_path(model.values, expr)
    return DdpModel(any(verdicts), every)


def _unwrapped(values, expr: ast.AST) -> bool:
    """Whether ``expr`` is the unwrapping idiom's result on every path: ``m.module if
    isinstance(m, DDP) else m`` (or ``hasattr(m, "module")``) is the wrapped module where ``m``
    is DDP and ``m`` itself only where it is not, so never a DDP model (its forward skips the
    all-reduce: minimind's ``model_unwrapped``)."""
    if not isinstance(expr, ast.Name):
        return False
    definitions = values.definitions_at(expr)
    return bool(definitions) and all(
        d.kind != "param" and isinstance(d.value, ast.IfExp) and _unwrapping(d.value) for d in definitions
    )


def _unwrapping(choice: ast.IfExp) -> bool:
    """``m.module if isinstance(m, ...) else m`` (or ``hasattr(m, ...)``): the same ``m`` throughout."""
    body, test = choice.body, choice.test
    wrapped = dotted_name(choice.orelse)
    if not (isinstance(body, ast.Attribute) and body.attr == "module" and wrapped and dotted_name(body.value) == wrapped):
        return False
    if not (isinstance(test, ast.Call) and isinstance(test.func, ast.Name) and test.args):
        return False
    return test.func.id in ("isinstance", "hasattr") and dotted_name(test.args[0]) == wrapped


def _known_on_every_path(values, expr: ast.AST, depth: int = 0) -> bool:
    """Whether every definition of ``expr`` that reaches it gives a known object: a path on which
    it comes from an unpacking (``model, tokenizer = create(...)``) or another unknown value is
    missing from its objects, and "DDP on every path" must not rest on the paths that are known."""
    if isinstance(expr, ast.Call):
        return True
    if not isinstance(expr, ast.Name) or depth > _MAX_ALIASES:
        return bool(values.objects(expr))
    definitions = values.definitions_at(expr)
    if not definitions:
        return False
    for definition in definitions:
        if definition.kind == "param":
            continue  # what the callers pass: their verdicts
        if definition.kind not in ("assign", "annassign", "walrus") or definition.value is None:
            return False
        if not _known_on_every_path(values, definition.value, depth + 1):
            return False
    return True


def _passed_ddp(model: "TrainingModel", param) -> list[bool]:
    """For a parameter that no call of its module binds (``train_one_epoch(args, model, ...)``
    run by the training script): whether each call of the function in the project's other
    modules passes a DDP model, one verdict per object passed; [False] when no caller is known."""
    project = getattr(model.ctx, "project", None)
    function = _function_at(model, param.site)
    if project is None or function is None:
        return [False]
    verdicts = []
    for module, call in project.callers(model.ctx, function):
        bound = bind_arguments(Target(function, bound_self=False), call)
        argument = bound.get(param.site[-1]) if bound is not None else None
        if argument is None:
            verdicts.append(False)
            continue
        values = module.training.values
        verdicts += [_creates_ddp(module.training, o) for o in values.origins(values.object_of(argument))] or [False]
        if not _known_on_every_path(values, argument):
            verdicts.append(False)  # some path passes a value of unknown kind
    return verdicts or [False]


def _function_at(model: "TrainingModel", site: tuple) -> Optional[ast.AST]:
    """The top-level function of this module a parameter's site names (path, line, column, name)."""
    if len(site) < 4 or site[0] != model.ctx.path:
        return None
    return next(
        (
            node for node in model.ctx.tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (node.lineno, node.col_offset) == (site[1], site[2])
        ),
        None,
    )


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
        # wherever the helper is defined: a module that only builds the DDP model has no AMP
        # code for the prefilter to pass
        found = resolve_in_project(model.ctx, call, project, prefiltered=False)
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
