"""The training-loop model: what the loop rules (AMP2xx, AMP3xx, AMP4xx) ask instead of syntax.

Start here. For every function of a module (and the module's own top level) the model lists
the *events* of a training step:

    backward   ``loss.backward()``, ``scaler.scale(loss).backward()``, ``trainer.backward(loss)``
    scale      ``scaler.scale(loss)`` whose result is thrown away
    unscale    ``scaler.unscale_(optimizer)``
    clip       ``torch.nn.utils.clip_grad_norm_/clip_grad_value_/clip_grad_norm/get_total_norm``
    opt_step   ``optimizer.step()``           scaler_step  ``scaler.step(optimizer)``
    update     ``scaler.update()``            zero_grad    ``optimizer.zero_grad()``
    create     ``torch.amp.GradScaler(...)`` (any spelling)

Each event carries its *context*: the chain of enclosing loops, ``if`` branches, ``with``
blocks and ``try`` parts inside its function (``Frame``). "Before", "exclusive", "between",
"avoidable" and "always preceded" are path questions on the function's control-flow graph
(ampfix.program.flow), within one iteration of the loops that hold the events, with ``if``
tests correlated along the path. Accumulation is a gated step in a loop that backpropagates on
every iteration.

What a function's calls do counts too (``StepFunction.of(..., calls=True)``): a call of a module
function or method (ampfix.program.calls) stands for the callee's events, with its parameters
read as the arguments and its own conditions read in the caller's names; a call the model cannot
follow that is handed a scaler is UNKNOWN, and the rules stay silent on what it may do. Calls
handed a scaler or an optimizer are followed into other modules of the project too
(ampfix.program.project: the callee's module is loaded only if it passes the prefilter), where
the callee's module globals are not the caller's: a condition on one makes the event
conditional, and an object named only there makes the call UNKNOWN.

Objects get *roles* from their values (ampfix.program.values): a scaler is an object created by a
``GradScaler`` constructor (any spelling, through imports), a parameter or field whose value is
one (its assignments, the module's callers), or something ``.unscale_()`` is called on, whatever
the names (``gs``, ``amp = grad_scaler``); an optimizer is an object a ``torch.optim``
constructor created. Only where the value cannot be known (a parameter nobody in the module
passes, an attribute of an unknown object, a helper's result) do names decide: a name like
``loss_scaler``, what ``.scale()`` is called on when so named, ``optimizer``; schedulers are never
optimizers. Events carry their objects' identities (``Event.obj``, ``Event.scaler_obj``), so an
alias (``s = scaler``) is its scaler and ``self.x`` of one class is not ``self.x`` of another; a
call's event reads the callee's parameter as the caller's argument object. Receivers with no
known object are compared by their text (``same_object``).

The events of a function are split into training steps, one per iteration of a loop that
backpropagates and steps (ampfix.training.step): rules that ask "does this step use a scaler",
"which accumulation window does this step close" ask ``ctx.steps``.

Autocast regions are ``with`` items that call an autocast API (resolved through the import
table), or a name assigned from one (``ctx = torch.autocast(...)``,
``self.amp_autocast = partial(torch.autocast, ...)``), or a helper whose name says autocast.
"""

from __future__ import annotations

import ast
import copy
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

from ampfix.program.calls import bind_arguments, flow_of, resolve_in_project
from ampfix.program.calls import resolve as resolve_call
from ampfix.program.flow import FlowGraph, branch_label, dotted_key
from ampfix.program.flow import build as build_flow
from ampfix.training.loss import scaling_call
from ampfix.program.values import (
    ObjectId, ValueFlow, assigned_through, class_constants, enclosing_class, enclosing_function,
)
from ampfix.semantic import dotted_name

if TYPE_CHECKING:
    from ampfix.program.module import ModuleSource

BACKWARD, SCALE, UNSCALE, CLIP = "backward", "scale", "unscale", "clip"
OPT_STEP, SCALER_STEP, UPDATE, ZERO_GRAD, CREATE = "opt_step", "scaler_step", "update", "zero_grad", "create"
# A call the model cannot follow that is handed a scaler: it may scale, unscale, step or update.
UNKNOWN = "unknown"
ENTER_AUTOCAST = "enter_autocast"  # not in a function's events: AutocastRegion.entry

GRAD_SCALERS = frozenset(
    {
        "torch.amp.GradScaler",
        "torch.GradScaler",
        "torch.amp.grad_scaler.GradScaler",
        "torch.cuda.amp.GradScaler",
        "torch.cpu.amp.GradScaler",
        "torch.cuda.amp.grad_scaler.GradScaler",
        "torch.cpu.amp.grad_scaler.GradScaler",
        "torch.distributed.fsdp.sharded_grad_scaler.ShardedGradScaler",
    }
)
AUTOCASTS = frozenset(
    {
        "torch.autocast",
        "torch.amp.autocast",
        "torch.amp.autocast_mode.autocast",
        "torch.cuda.amp.autocast",
        "torch.cpu.amp.autocast",
        "torch.cuda.amp.autocast_mode.autocast",
        "torch.cpu.amp.autocast_mode.autocast",
    }
)
CLIPS = frozenset(
    f"torch.nn.utils{mod}.{name}"
    for mod in ("", ".clip_grad")
    for name in ("clip_grad_norm_", "clip_grad_value_", "clip_grad_norm", "get_total_norm")
)
_STEP_METHOD = re.compile(r"step|backward|train|update|scale|clip|optim|zero_grad", re.I)
_MAX_CALL_DEPTH = 4  # calls followed from a function (helpers of helpers), in and across modules
_SCALER_NAME = re.compile(r"(^|_)scaler$", re.I)
_OPTIMIZER_NAME = re.compile(r"optim|(^|_)opt(_|$|\d)", re.I)
_SCHEDULER_NAME = re.compile(r"sched|lr_|warmup", re.I)


@dataclass(frozen=True)
class Frame:
    node: ast.AST  # For / While / If / With / Try / ExceptHandler
    branch: str  # "body" | "orelse" | "handlers" | "finalbody"


@dataclass
class Event:
    kind: str
    call: ast.Call
    stmt: ast.stmt  # the statement holding the call (for moving and inserting code)
    context: tuple[Frame, ...]
    receiver: Optional[str] = None  # source text of the object: "scaler", "self.optimizer"
    arg: Optional[ast.expr] = None  # the loss (backward, scale) or the optimizer (unscale, step)
    scaled: bool = False  # backward on scaler.scale(...)
    scaler: Optional[str] = None  # for a scaled backward: the scaler's text
    via: Optional["Event"] = None  # a call's event: the callee's event it stands for (report-only)
    # For a call's event: the callee's conditions on it, read in the caller's names (the callee's
    # `if scaler is not None:` becomes the caller's, so the two correlate), and whether some
    # condition could not be read so (a local of the callee: the event may not happen).
    assume: tuple = ()
    conditional: bool = False
    callee_path: Optional[str] = None  # for a call's event: the callee's file, when another module
    # (receiver's object, scaled backward's scaler's object, unscale_/scaler.step argument's
    # object), or a function that computes them on first use (most events are never compared)
    objects: object = field(default=None, repr=False, compare=False)

    def _objects(self) -> tuple:
        if callable(self.objects):
            self.objects = self.objects()
        return self.objects or (None, None, None)

    @property
    def obj(self) -> Optional[ObjectId]:
        """The receiver's object (None: unknown, compare ``receiver``)."""
        return self._objects()[0]

    @property
    def scaler_obj(self) -> Optional[ObjectId]:
        """For a scaled backward: the scaler's object."""
        return self._objects()[1]

    @property
    def arg_obj(self) -> Optional[ObjectId]:
        """For ``unscale_``/``scaler.step``: the optimizer's object."""
        return self._objects()[2]

    @property
    def scaler_key(self):
        """The scaler this event acts on, as an identity (its object, else its text)."""
        if self.kind == BACKWARD:
            return self.scaler_obj or self.scaler
        return self.obj or self.receiver

    @property
    def optimizer_key(self):
        """The optimizer this event acts on: ``scaler.step(opt)``/``unscale_(opt)``'s argument,
        ``opt.step()``/``zero_grad()``'s receiver (its object, else its text)."""
        if self.kind in (SCALER_STEP, UNSCALE):
            if self.arg_obj is not None:
                return self.arg_obj
            return dotted_name(self.arg) if self.arg is not None else None
        return self.obj or self.receiver

    @property
    def line(self) -> int:
        return self.call.lineno

    @property
    def origin(self) -> "Event":
        """The event in the function that performs it (itself, unless it stands for a call)."""
        return self.via.origin if self.via is not None else self

    @property
    def origin_path(self) -> Optional[str]:
        """The file of ``origin`` when it is another module of the project (None: this one)."""
        inner = self.via.origin_path if self.via is not None else None
        return inner or self.callee_path


@dataclass
class AutocastRegion:
    with_node: ast.With
    item: ast.withitem
    device: Optional[str]  # "cuda" / "cpu" if literal, else None (unknown)
    dtype: Optional[ast.expr]  # the dtype argument if any
    call: Optional[ast.Call]  # the autocast call if direct
    entry: Optional[Event] = None  # entering the region, as an event of its function (for path questions)


class StepFunction:
    """The events of one function (or of the module's top level), and path questions on them.

    "Before", "exclusive" and "between" are questions about paths in the function's control-flow
    graph (ampfix.program.flow), within one iteration of the loops that hold both events."""

    def __init__(self, node: ast.AST):
        self.node = node
        self.events: list[Event] = []  # what this function's own statements do
        self._call_events: Optional[list[Event]] = None
        self._summarise: Optional[object] = None  # the model's call-event pass, run on first use
        self._flow: Optional[FlowGraph] = None
        self._values: Optional[ValueFlow] = None  # the module's value flow, which owns the graphs

    @property
    def call_events(self) -> list[Event]:
        """What its calls do (resolved callees, unknown calls handed a scaler): computed for the
        whole module on first use, since most files' rules never ask."""
        if self._call_events is None:
            self._call_events = []
            if self._summarise is not None:
                self._summarise()
        return self._call_events

    def of(self, *kinds: str, calls: bool = False) -> list[Event]:
        """This function's events of ``kinds``; with ``calls``, also those its calls perform
        (at the call, ``via`` the callee's event) and the unknown calls handed a scaler."""
        return events_of(self.events, self.call_events if calls else None, kinds)

    @property
    def flow(self) -> FlowGraph:
        if self._flow is None:
            self._flow = self._values.graph(self.node) if self._values is not None else build_flow(self.node)
        return self._flow

    def _node(self, event: Event) -> Optional[int]:
        return self.flow.node_of(event.stmt)

    def reaches(
        self, a: Event, b: Event, avoiding: Sequence[Event] = (), within: Optional[Event] = None,
    ) -> Optional[bool]:
        """Whether b can run after a in one iteration (on a branch-consistent path that passes
        none of ``avoiding``); None when unknown. The iteration is that of every loop holding
        both, or, with ``within``, of the loops that also hold that event (the training loop
        around a per-optimizer loop: its back edge stays, so a second pass through it counts)."""
        na, nb = self._node(a), self._node(b)
        if na is None or nb is None:
            return None
        nw = self._node(within) if within is not None else None
        anchors = [na, nb] + ([nw] if nw is not None else [])
        if na == nb and within is None:
            return _order(a) < _order(b)
        blocked = {self._node(e) for e in avoiding} - {na, nb, None}
        return self.flow.path_exists(
            na, nb, avoid=blocked.__contains__, assumptions=_assumptions(a),
            one_iteration_of=self.flow.loops_holding(*anchors),
        )

    def exclusive(self, a: Event, b: Event) -> bool:
        """Whether a and b never run in the same iteration: no path from one to the other
        (different branches of one if, or of two ifs on the same test)."""
        return self.reaches(a, b) is False and self.reaches(b, a) is False

    def before(self, a: Event, b: Event) -> bool:
        return bool(self.reaches(a, b))

    def between(self, kind: str, a: Event, b: Event) -> list[Event]:
        """Events of ``kind`` that can run after a and before b."""
        return [e for e in self.of(kind) if self.before(a, e) and self.before(e, b)]

    def always_preceded(self, b: Event, by: Sequence[Event]) -> bool:
        """Whether every path of the iteration that reaches b passes one of ``by`` first (a
        protocol call inserted at b then never runs without the backward it belongs to)."""
        nb = self._node(b)
        nodes = {self._node(e) for e in by} - {None}
        if nb is None or not nodes or nb in nodes:
            return False
        loops = self.flow.loops_holding(nb, *nodes)
        start = min(loops, key=lambda h: len(self.flow.inside[h])) if loops else FlowGraph.ENTRY
        found = self.flow.path_exists(start, nb, avoid=nodes.__contains__, one_iteration_of=loops)
        return found is False

    def gradients_wiped(self, backward: Event) -> bool:
        """Whether every path from ``backward`` that returns passes a ``zero_grad`` (its own or a
        call's) first, so that its gradients never leave the function (an out-of-memory probe:
        backward, zero_grad, next batch). A ``raise`` is not a return: no step after it runs."""
        start = self._node(backward)
        wipes = {self._node(e) for e in self.of(ZERO_GRAD, calls=True)} - {None, start}
        if start is None or not wipes:
            return False
        raises = {i for i, stmt in enumerate(self.flow.nodes) if isinstance(stmt, ast.Raise)}
        stops = wipes | raises
        return self.flow.path_exists(start, FlowGraph.EXIT, avoid=stops.__contains__) is False

    def avoidable(self, a: Event, b: Event, kinds: Sequence[str], where=lambda e: True) -> Optional[bool]:
        """Whether some path from a to b passes no event of ``kinds`` (those for which ``where``
        holds), counting what calls do and unknown calls as such events: ``unscale_`` under
        ``if log_norms:`` does not protect a clip that runs on every path, a helper that unscales does."""
        blocking = [e for e in self.of(*kinds, calls=True) if e.kind == UNKNOWN or where(e)]
        # one call doing both (a helper that scales, then unscales): the callee's order decides
        if any(e.call is a.call and _order(a) < _order(e) for e in blocking):
            return False
        if any(e.call is b.call and _order(e) < _order(b) for e in blocking):
            return False
        return self.reaches(a, b, avoiding=blocking)


def events_of(own: list[Event], call_events: Optional[list[Event]], kinds: Sequence[str]) -> list[Event]:
    """The events of ``kinds`` among ``own``, with those of ``call_events`` (and every UNKNOWN
    call) when given, in source order."""
    events = [e for e in own if e.kind in kinds]
    if call_events is not None:
        events += [e for e in call_events if e.kind in kinds or e.kind == UNKNOWN]
        events.sort(key=lambda e: (e.call.lineno, e.call.col_offset))
    return events


def _order(event: Event) -> tuple:
    """Where an event runs within its statement: its call's position, then, for a call's event,
    the callee's event's position there (two events of one call compare in the callee's order)."""
    key = (event.call.lineno, event.call.col_offset)
    return key + _order(event.via) if event.via is not None else key


def _assumptions(event: Event) -> list[tuple]:
    """The if branches the path to ``event`` took (the tests it already decided), with those a
    callee took for a call's event."""
    frames = [branch_label(f.node.test, f.branch) for f in event.context if isinstance(f.node, ast.If)]
    return frames + [branch_label(test, branch) for test, branch in event.assume]


class _Substitute(ast.NodeTransformer):
    """A callee's test with its parameters replaced by the caller's arguments."""

    def __init__(self, bound: dict, receiver: Optional[ast.AST]):
        self.bound, self.receiver = bound, receiver

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.bound:
            return self.bound[node.id]
        if node.id == "self" and self.receiver is not None:
            return self.receiver
        return node


def _locals_of(function: ast.AST) -> tuple[set, set]:
    """(parameter names, assigned names) of a function."""
    params = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
    stored = {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return params, stored


def _in_caller_names(
    test: ast.AST, callee_locals: tuple, bound: dict, receiver: Optional[ast.AST], foreign: bool = False,
) -> Optional[ast.AST]:
    """``test`` read at the call, or None when it depends on the callee's own locals (or, for a
    callee of another module, on anything but its parameters: its globals are not the caller's)."""
    params, stored = callee_locals
    for name in {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}:
        if name in stored or (name in params and name not in bound and name != "self"):
            return None
        if foreign and name not in params:
            return None
    return _Substitute(bound, receiver).visit(copy.deepcopy(test))


@dataclass
class Accumulation:
    """An accumulation window: a loop that backpropagates every iteration but steps only under a
    condition (``gate``), or a loop over micro-batches, ``for micro in range(N):``, that
    backpropagates every iteration and never steps, the step following it in the iteration that
    holds it (``gate`` None: the window is the loop; nanoGPT's and llama2.c's shape)."""

    loop: ast.AST
    gate: Optional[ast.If]  # the if holding the step; None for a micro-batch loop
    factor: Optional[ast.expr]  # N in `% N == 0` / `>= N` / `range(N)`, when visible
    backwards: list[Event]
    steps: list[Event]


class TrainingModel:
    def __init__(self, ctx: "ModuleSource"):
        self.ctx = ctx
        self.functions: list[StepFunction] = []
        self.scalers: set[str] = set()
        self.optimizers: set[str] = set()
        self.autocast_names: set[str] = set()
        self.regions: list[AutocastRegion] = []
        self._region_by_with: dict[int, AutocastRegion] = {}
        self._regions_by_owner: dict[int, list[AutocastRegion]] = {}
        self.creations: list[Event] = []
        self._creations_indexed: Optional[tuple[dict, dict]] = None
        self._function_of_event: Optional[dict[int, StepFunction]] = None
        self._calls_by_owner: Optional[dict[int, list[ast.Call]]] = None
        self._defined_names: Optional[set[str]] = None
        self._callee_locals: dict[int, tuple[set, set]] = {}
        self._summaries: dict[int, list[Event]] = {}
        self._by_node: Optional[dict[int, StepFunction]] = None
        self.values = flow_of(ctx)
        self._unscaled: set[ObjectId] = set()  # objects `.unscale_()` is called on
        self._roles: dict[tuple, Optional[str]] = {}  # (function id, reference) -> role
        self._role_objects: Optional[bool] = None
        self._role_names: dict[str, set] = {"scaler": set(), "optimizer": set()}
        self._name_index: Optional[tuple] = None
        self._unscaled_nodes: list[ast.AST] = []
        # is_scaler accepts a known scaler, or a name ending in "scaler" (any case): without either
        # in the module, no call is handed one
        self._scaler_text = "caler" in ctx.text or "CALER" in ctx.text
        # names bound by imports (``from torch.nn.utils import clip_grad_norm_ as clip``)
        self._imported_names = {
            name for scope in ctx.semantic.scopes.values() for name, bindings in scope.bindings.items()
            if any(b.kind == "import" for b in bindings)
        }

    def release(self) -> None:
        """Forget everything, once the analysis of the module is over: its events hold closures
        over the model, and the model its module's context, so these cycles would keep the
        tree alive until a collection (ModuleContext.release)."""
        for function in self.functions:
            function.__dict__.clear()
        self.__dict__.clear()

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def build(cls, ctx: "ModuleSource") -> "TrainingModel":
        model = cls(ctx)
        model._collect_roles()
        model._collect_regions()
        model._collect_events()
        for function in model.functions:
            function._summarise = model._collect_call_events
            function._values = model.values
        return model

    def _qualified(self, expr: ast.AST) -> Optional[str]:
        return self.ctx.semantic.qualified_name(expr)

    def _collect_roles(self) -> None:
        semantic = self.ctx.semantic
        for node in semantic.nodes(ast.Assign, ast.AnnAssign):
            if node.value is None:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if isinstance(node.value, ast.Call) and _last_name(node.value.func) in _SCALER_CLASSES:
                if self._qualified(node.value.func) in GRAD_SCALERS:
                    self.scalers.update(t for t in map(dotted_name, targets) if t)
        for node in self._assignments_mentioning_autocast():
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            self.autocast_names.update(t for t in map(dotted_name, targets) if t)
        calls = [
            n for n in semantic.nodes(ast.Call)
            if isinstance(n.func, ast.Attribute) and n.func.attr in ("scale", "unscale_", "step", "zero_grad")
        ]
        for node in calls:
            receiver = dotted_name(node.func.value)
            if receiver is None:
                continue
            method = node.func.attr
            if method == "unscale_":
                self.scalers.add(receiver)
                obj = self.values.object_of(node.func.value)
                if obj is not None:
                    self._unscaled.add(obj)
                    self._unscaled_nodes.append(node.func.value)
            elif method == "scale" and node.args and _SCALER_NAME.search(receiver.rsplit(".", 1)[-1]):
                self.scalers.add(receiver)
            elif method == "zero_grad" and _OPTIMIZER_NAME.search(receiver.rsplit(".", 1)[-1]):
                self.optimizers.add(receiver)
        for node in semantic.nodes(ast.arg):
            if _SCALER_NAME.search(node.arg):
                self.scalers.add(node.arg)
        # what the scalers step and unscale are optimizers
        for node in calls:
            if node.func.attr in ("step", "unscale_") and node.args and dotted_name(node.func.value) in self.scalers:
                name = dotted_name(node.args[0])
                if name:
                    self.optimizers.add(name)

    def _assignments_mentioning_autocast(self) -> list:
        """Assignments whose value mentions an autocast (``ctx = torch.autocast(...) if amp else
        nullcontext()``): found from the names, which is cheaper than walking every value."""
        parents = self.ctx.semantic.parents
        found = {}
        for sub in self.ctx.semantic.nodes(ast.Name, ast.Attribute):
            if "autocast" not in _last_name(sub).lower():
                continue
            if not (isinstance(sub, ast.Name) or self._qualified(sub) in AUTOCASTS):
                continue
            child, node = sub, parents.get(sub)
            while node is not None and not isinstance(node, ast.stmt):
                child, node = node, parents.get(node)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and child is node.value:
                found[id(node)] = node
        return list(found.values())

    def is_scaler(self, receiver: Optional[str], node: Optional[ast.AST] = None, owner=None) -> bool:
        """Whether ``receiver`` (the text of ``node``, when given, in the function ``owner``) is
        a GradScaler: from the value of ``node`` where it is known, else from the name
        (``(^|_)scaler$``)."""
        if node is not None:
            known = self._role_by_value(node, owner)
            if known is not None:
                return known == "scaler"
        if receiver is None:
            return False
        return receiver in self.scalers or bool(_SCALER_NAME.search(receiver.rsplit(".", 1)[-1]))

    def is_optimizer(self, receiver: Optional[str], node: Optional[ast.AST] = None, owner=None) -> bool:
        if node is not None:
            known = self._role_by_value(node, owner, "optimizer")
            if known is not None:
                return known == "optimizer"
        if receiver is None or self.is_scaler(receiver):
            return False
        last = receiver.rsplit(".", 1)[-1]
        if _SCHEDULER_NAME.search(last):
            return False
        return receiver in self.optimizers or bool(_OPTIMIZER_NAME.search(last))

    def _role_by_value(self, node: ast.AST, owner: Optional[ast.AST] = None, asked: str = "scaler") -> Optional[str]:
        """"scaler", "optimizer" or "other" when the value of ``node`` says so; None when it
        cannot be known (then names decide). ``asked``: the role the caller wants to know of."""
        if not self._has_role_objects():
            return None  # nothing here creates or unscales one: values cannot say more than names
        name = _last_name(node)
        if name and name not in self._role_names[asked]:
            return None  # no assignment or call of the module can give this reference one
        # a role is asked of every argument of every call: one answer per reference and function
        # (a name rebound in one function to a scaler and to something else is rare)
        if owner is None:
            owner = enclosing_function(self.ctx.semantic, node)
        key = (id(owner), dotted_name(node))
        if key[1] is None or key not in self._roles:
            obj = self.values.object_of(node)
            role = self._role_of_object(obj) if obj is not None else None
            if key[1] is None:
                return role
            self._roles[key] = role
        return self._roles[key]

    def _has_role_objects(self) -> bool:
        """Whether the module constructs a GradScaler or a torch optimizer, or calls ``unscale_``
        (and, when it does, the names that may come to hold one: ``_role_names``)."""
        if self._role_objects is None:
            seeds = [
                call for call in self.ctx.semantic.nodes(ast.Call)
                if _last_name(call.func) in _ROLE_CLASSES and _is_role_constructor(self._qualified(call.func))
            ]
            self._role_objects = bool(self._unscaled or seeds)
            if self._role_objects:
                scalers = [c for c in seeds if self._qualified(c.func) in GRAD_SCALERS]
                optimizers = [c for c in seeds if self._qualified(c.func) not in GRAD_SCALERS]
                self._role_names = {
                    "scaler": self._names_holding(scalers, self._unscaled_nodes),
                    "optimizer": self._names_holding(optimizers, []),
                }
        return self._role_objects

    def _name_flow_index(self) -> tuple:
        """Read once per module for ``_names_holding``: parameters by function name; per
        assignment (the names its value mentions, the ids of its calls, its targets' names); per
        call with arguments (argument names, (keyword, name) pairs, the called name)."""
        if self._name_index is None:
            semantic = self.ctx.semantic
            params_by_function: dict[str, list] = {}
            for function in semantic.nodes(ast.FunctionDef, ast.AsyncFunctionDef):
                args = function.args
                params_by_function.setdefault(function.name, []).append(
                    [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
                )
            assigns = []
            for node in semantic.nodes(ast.Assign, ast.AnnAssign):
                if node.value is None:
                    continue
                subs = _carried(node.value)
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                assigns.append((
                    {_last_name(sub) for sub in subs}, {id(sub) for sub in subs if isinstance(sub, ast.Call)},
                    {_last_name(e) for t in targets for e in ast.walk(t) if isinstance(e, (ast.Name, ast.Attribute))},
                ))
            calls = [
                ([_last_name(a) for a in call.args], {(k.arg, _last_name(k.value)) for k in call.keywords},
                 _last_name(call.func))
                for call in semantic.nodes(ast.Call) if call.args or call.keywords
            ]
            self._name_index = (params_by_function, assigns, calls)
        return self._name_index

    def _names_holding(self, seeds: list, unscaled: list) -> set:
        """A cheap over-approximation of the last names of references that may hold an object
        created by ``seeds`` or unscaled: assignment targets whose value mentions one, then the
        parameters (of module functions of the called name) an argument mentioning one binds,
        to a fixed point. A reference whose name is not here has no role by value."""
        names = {_last_name(obj_node) for obj_node in unscaled}
        seed_ids = {id(c) for c in seeds}
        params_by_function, assign_index, calls = self._name_flow_index()
        assigns = [(mentioned, not seed_ids.isdisjoint(created), targets) for mentioned, created, targets in assign_index]
        for _ in range(_MAX_CALL_DEPTH):
            before = len(names)
            for mentioned, creates, targets in assigns:
                if creates or not mentioned.isdisjoint(names):
                    names |= targets
            for positional, keywords, called in calls:
                handed = [k for k, value in keywords if value in names]
                places = [i for i, name in enumerate(positional) if name in names]
                if not handed and not places:
                    continue
                names.update(k for k in handed if k)
                for params in params_by_function.get(called, ()):
                    # the parameter at that place, or the next one (a method's `self` comes first)
                    names.update(params[j] for i in places for j in (i, i + 1) if j < len(params))
            if len(names) == before:
                break
        names.discard("")
        return names

    def _role_of_object(self, obj: ObjectId) -> Optional[str]:
        origins = self.values.origins(obj)
        if obj in self._unscaled or any(o in self._unscaled for o in origins):
            return "scaler"
        callees = [o.callee for o in origins if o.kind == "call"]
        if any(c in GRAD_SCALERS for c in callees):
            return "scaler"
        if any(c and c.startswith("torch.optim.") and ".lr_scheduler" not in c for c in callees):
            return "optimizer"
        if callees and len(callees) == len(origins) and all(c and c.startswith("torch.") for c in callees):
            return "other"  # created by torch, and not a scaler or an optimizer (a scheduler, a module)
        return None

    def same_object(self, a_obj, a_text, b_obj, b_text) -> bool:
        """Whether two receivers are one object: by identity when both are known, else by text."""
        if a_obj is not None and b_obj is not None:
            return a_obj == b_obj
        return a_text is not None and a_text == b_text

    def _collect_events(self) -> None:
        """One pass over the module's calls: classify each, then place it in its function with
        the control flow around it, read off the parent links (no second walk of the tree)."""
        semantic = self.ctx.semantic
        functions: dict[ast.AST, StepFunction] = {self.ctx.tree: StepFunction(self.ctx.tree)}
        for node in semantic.nodes(ast.FunctionDef, ast.AsyncFunctionDef):
            functions[node] = StepFunction(node)
        for call in semantic.nodes(ast.Call):
            last = _last_name(call.func)
            if last not in _INTERESTING_CALLS and last not in self._imported_names:
                continue
            placed = self._place(call)
            if placed is None:
                continue
            owner, stmt, context = placed
            event = self._classify(call, stmt, context, owner)
            if event is not None:
                functions[owner].events.append(event)
                if event.kind == CREATE:
                    self.creations.append(event)
        self.functions = list(functions.values())

    def _collect_call_events(self) -> None:
        """What each call does, from the callee's events (ampfix.program.calls resolves calls
        inside the module and into the project), with the callee's parameters read as the
        caller's arguments; an unresolved call handed a scaler is one UNKNOWN event."""
        for function in self.functions:
            function._summarise = None
            function._call_events = []
        for function in self.functions:
            function._call_events = self._calls_of(function, 0)

    def summary(self, function: "StepFunction", depth: int = 0) -> list[Event]:
        """Everything ``function`` does: its own events and its calls' (memoized per model)."""
        key = id(function.node)
        if key not in self._summaries:
            self._summaries[key] = []  # recursion: a call back into a function being summarised adds nothing
            if depth < _MAX_CALL_DEPTH:
                self._summaries[key] = function.events + self._calls_of(function, depth)
        return self._summaries[key]

    def step_function(self, node: ast.AST) -> Optional["StepFunction"]:
        if self._by_node is None:
            self._by_node = {id(f.node): f for f in self.functions}
        return self._by_node.get(id(node))

    def _calls_of(self, function: "StepFunction", depth: int) -> list[Event]:
        found = []
        event_calls = {id(e.call) for e in function.events}
        for call in self.calls_in(function):
            if id(call) in event_calls:
                continue
            target = resolve_call(self.ctx.semantic, call) if self._may_resolve(call) else None
            callee = self.step_function(target.function) if target is not None else None
            events, foreign = None, None
            if callee is not None and callee is not function:
                events = self.summary(callee, depth + 1)
            elif callee is None:
                followed = self._follow_into_project(call, depth, function.node)
                if followed is not None:
                    target, foreign, events = followed
            if events is None:
                scaler = self._scaler_handed_to(call, function.node)
                if scaler is not None:
                    placed = self._place(call)
                    if placed is not None:
                        found.append(Event(UNKNOWN, call, placed[1], placed[2], receiver=scaler))
                continue
            events = [e for e in events if e.kind != CREATE]
            if not events:
                continue
            placed = self._place(call)
            bound = bind_arguments(target, call)
            if placed is None or bound is None:
                continue
            # the object a method runs on: ``obj`` of ``obj.method(...)``, or ``obj`` itself for
            # ``obj(...)`` running its ``__call__``
            receiver = call.func.value if isinstance(call.func, ast.Attribute) else call.func if target.bound_self else None
            mapped = [
                self._as_call_event(event, call, placed, bound, receiver, target.function, foreign)
                for event in events
            ]
            if any(e is None for e in mapped):
                # an object only the other module names (its global scaler): what the call does
                # to the caller's objects is unknown
                found.append(Event(UNKNOWN, call, placed[1], placed[2], receiver=self._scaler_handed_to(call, function.node)))
                continue
            found.extend(mapped)
        return found

    def _follow_into_project(self, call: ast.Call, depth: int, owner: ast.AST):
        """(target, callee path, callee's events) for a call into another project module that
        is handed a scaler or an optimizer (or is a ``self`` method inherited from one), else None."""
        project = getattr(self.ctx, "project", None)
        if project is None or depth >= _MAX_CALL_DEPTH or not self._worth_following(call, owner):
            return None
        found = resolve_in_project(self.ctx, call, project)
        if found is None or os.path.abspath(found.module.path) == os.path.abspath(self.ctx.path):
            return None
        project.note_call(self.ctx.path, found.module.path)
        other = found.module.training
        callee = other.step_function(found.target.function)
        if callee is None:
            return None
        return found.target, found.module.path, other.summary(callee, depth + 1)

    def _worth_following(self, call: ast.Call, owner: ast.AST) -> bool:
        func = call.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
            # an inherited method is looked up (a base imported from the project) only when its
            # name says it may take part in a step: following every `self.x()` loads half a package
            if _STEP_METHOD.search(func.attr):
                return True
        callee = func.value if isinstance(func, ast.Attribute) else func
        if self.is_scaler(dotted_name(callee), callee, owner):
            return True
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            name = dotted_name(arg)
            if name is not None and (self.is_scaler(name, arg, owner) or self.is_optimizer(name, arg, owner)):
                return True
        return False

    def _may_resolve(self, call: ast.Call) -> bool:
        """A cheap filter before resolving: only a call named like a function or method of this
        module (or, where a class of it defines ``__call__``, any plain-name call) can run one."""
        if self._defined_names is None:
            functions = self.ctx.semantic.nodes(ast.FunctionDef, ast.AsyncFunctionDef)
            self._defined_names = {f.name for f in functions}
        if isinstance(call.func, ast.Attribute):
            return call.func.attr in self._defined_names
        return isinstance(call.func, ast.Name) and (
            call.func.id in self._defined_names or "__call__" in self._defined_names
        )

    def _as_call_event(
        self, event: Event, call: ast.Call, placed, bound: dict, receiver: Optional[ast.AST], callee,
        foreign: Optional[str] = None,
    ) -> Optional[Event]:
        """``event`` of the callee as an event of ``call``; None when the callee is in another
        module (``foreign``) and the event's object is named only there."""
        unnamed = object()
        receiver_text = self.ctx.segment(receiver) if receiver is not None else None

        def caller_text(text: Optional[str]):
            if text is None:
                return None
            base, _, rest = text.partition(".")
            if base in bound:
                replaced = dotted_name(bound[base])
                return None if replaced is None else replaced + (f".{rest}" if rest else "")
            if base == "self" and receiver_text not in (None, "self"):
                return receiver_text + (f".{rest}" if rest else "")
            if foreign is not None and base != "self":
                return unnamed  # a global (or local) of the other module: not a caller's name
            return text

        def caller_object(text: Optional[str], obj: Optional[ObjectId]) -> Optional[ObjectId]:
            """The callee's object as the caller's: a parameter's is the argument's, ``self``'s
            field the receiver's; a global of this module is itself (of another: unknown)."""
            base = text.partition(".")[0] if text is not None else None
            if base is not None and (base in bound or base == "self"):
                mapped = caller_text(text)
                return self.values.object_at(mapped, call) if isinstance(mapped, str) else None
            return obj if foreign is None else None

        receiver_of, scaler_of = caller_text(event.receiver), caller_text(event.scaler)
        if receiver_of is unnamed or scaler_of is unnamed:
            return None
        arg = event.arg
        if isinstance(arg, ast.Name) and arg.id in bound:
            arg = bound[arg.id]
            argument = arg
            arg_object = lambda: self.values.object_of(argument)  # noqa: E731
        else:
            callee_arg = arg
            arg_object = lambda: (  # noqa: E731
                caller_object(dotted_name(callee_arg), event.arg_obj) if callee_arg is not None else None
            )
        if foreign is not None and not (isinstance(event.arg, ast.Name) and event.arg.id in bound):
            arg = None  # a node of the other module's tree: never read with this module's text
        conditions = [(f.node.test, f.branch) for f in event.context if isinstance(f.node, ast.If)]
        assume, conditional = [], event.conditional
        if id(callee) not in self._callee_locals:  # a callee is read once per call: memoized per module
            self._callee_locals[id(callee)] = _locals_of(callee)
        for test, branch in [*conditions, *event.assume]:
            read = _in_caller_names(test, self._callee_locals[id(callee)], bound, receiver, foreign is not None)
            if read is None:
                conditional = True
            else:
                assume.append((read, branch))
        return Event(
            event.kind, call, placed[1], placed[2], receiver=receiver_of, arg=arg,
            scaled=event.scaled, scaler=scaler_of, via=event,
            assume=tuple(assume), conditional=conditional, callee_path=foreign,
            objects=lambda: (
                caller_object(event.receiver, event.obj), caller_object(event.scaler, event.scaler_obj), arg_object(),
            ),
        )

    def _scaler_handed_to(self, call: ast.Call, owner: Optional[ast.AST] = None) -> Optional[str]:
        """The scaler an unresolved call is handed (as an argument, or as the callee itself:
        ``loss_scaler(loss, optimizer)``), if any."""
        if not (self.scalers or self._scaler_text):
            return None  # no name in the module can be a scaler
        func = dotted_name(call.func)
        if func is not None and self.is_scaler(func, call.func, owner):
            return func
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            name = dotted_name(arg)
            if name is not None and self.is_scaler(name, arg, owner):
                return name
        return None

    def object_key(self, function: StepFunction, receiver: Optional[str], obj: Optional[ObjectId] = None):
        """An identity for a receiver: its object when known (``obj``, or the value of the
        reference ``receiver`` read in ``function``); else ``self.x`` is the field of the class
        of ``function`` (two classes' ``self.scaler`` differ) and other names stay text."""
        if obj is not None:
            return obj
        if receiver is not None and receiver.startswith("self.") and not isinstance(function.node, ast.Module):
            cls = enclosing_class(self.ctx.semantic, function.node)
            return (id(cls), receiver)
        return (None, receiver)

    def event_at(self, node: ast.AST, kind: str) -> Optional[Event]:
        """An event of ``kind`` at any expression (a conversion, a region's entry), placed in its
        function like a call, for path questions; None in lambdas and class bodies."""
        placed = self._place(node)
        return Event(kind, node, placed[1], placed[2]) if placed is not None else None

    def created_at(
        self, function: StepFunction, receiver: Optional[str], obj: Optional[ObjectId] = None,
    ) -> Optional[Event]:
        """Where the scaler ``obj`` (or, not known, named ``receiver`` in ``function``: ``self.scaler``
        of this class, or a name of this module) was created, if the module shows it."""
        by_site, by_key = self._creation_index()
        found = [by_site[o.site] for o in self.values.origins(obj) if o.kind == "call" and o.site in by_site]
        if found:
            return min(found, key=lambda ordered: ordered[0])[1]  # the first creation, as written
        return by_key.get(self.object_key(function, receiver))

    def _creation_index(self) -> tuple[dict, dict]:
        """The creations by their call's site (with their order) and by the identity of each name
        they assign (the first creation for each), built once: asked per scaler reference, a scan of every creation
        each time was quadratic in a file of many training functions."""
        if self._creations_indexed is None:
            by_site: dict = {}
            by_key: dict = {}
            for order, create in enumerate(self.creations):
                by_site.setdefault((self.ctx.path, create.call.lineno, create.call.col_offset), (order, create))
                owner = self.function_of(create)
                if owner is not None:
                    for name in self.creation_targets(create):
                        by_key.setdefault(self.object_key(owner, name), create)
            self._creations_indexed = (by_site, by_key)
        return self._creations_indexed

    def function_of(self, event: Event) -> Optional[StepFunction]:
        """The function whose own statements perform ``event``'s origin."""
        if self._function_of_event is None:
            owners: dict[int, StepFunction] = {}
            for function in self.functions:
                for own in function.events:
                    owners.setdefault(id(own), function)
            self._function_of_event = owners
        return self._function_of_event.get(id(event.origin))

    def _place(self, call: ast.AST):
        """(owning function or module, statement, context frames outermost first), or None for
        calls in lambdas and class bodies."""
        parents = self.ctx.semantic.parents
        frames: list[Frame] = []
        stmt = None
        child: ast.AST = call
        node = parents.get(call)
        while node is not None:
            if stmt is None and isinstance(child, ast.stmt):
                stmt = child
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
                if stmt is None:
                    return None  # a decorator or default value
                frames.reverse()
                return node, stmt, tuple(frames)
            if isinstance(node, (ast.Lambda, ast.ClassDef)):
                return None
            if stmt is not None:
                frame = _frame(node, child)
                if frame is not None:
                    frames.append(frame)
            child, node = node, parents.get(node)
        return None

    def _collect_regions(self) -> None:
        parents = self.ctx.semantic.parents
        for stmt in self.ctx.semantic.nodes(ast.With, ast.AsyncWith):
            for item in stmt.items:
                region = self._autocast_region(stmt, item)
                if region is not None:
                    region.entry = self.event_at(item.context_expr, ENTER_AUTOCAST)
                    self.regions.append(region)
                    self._region_by_with[id(stmt)] = region
                    owner = parents.get(stmt)
                    while owner is not None:  # every enclosing function, and the module
                        if isinstance(owner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
                            self._regions_by_owner.setdefault(id(owner), []).append(region)
                        owner = parents.get(owner)

    def regions_in(self, function: "StepFunction") -> list["AutocastRegion"]:
        """Autocast regions lexically inside ``function`` (nested functions included)."""
        return self._regions_by_owner.get(id(function.node), [])

    def _classify(self, call: ast.Call, stmt: ast.stmt, context: tuple, owner=None) -> Optional[Event]:
        func = call.func
        last = _last_name(func)
        if last not in _INTERESTING_CALLS and last not in self._imported_names:
            return None
        qualified = self._qualified(func) if last in _RESOLVED_CALLS or last in self._imported_names else None
        if qualified is None and last in _SCALER_CLASSES:
            # `try: from torch.cuda.amp import GradScaler` / `except: class GradScaler: ...`
            qualified = self.ctx.semantic.qualified_name_where_imported(func)
        if qualified in GRAD_SCALERS:
            return Event(CREATE, call, stmt, context)
        if qualified in CLIPS:
            return Event(CLIP, call, stmt, context)
        if qualified == "torch.autograd.backward" and call.args:
            return Event(BACKWARD, call, stmt, context, arg=call.args[0])
        if not isinstance(func, ast.Attribute):
            return None
        method = func.attr
        receiver_node = func.value
        receiver = dotted_name(receiver_node)
        if method == "backward":
            if isinstance(receiver_node, ast.Call) and self._qualified(receiver_node.func) == "typing.cast" \
                    and len(receiver_node.args) == 2:
                receiver_node = receiver_node.args[1]  # `cast(Tensor, scaler.scale(loss)).backward()`: the value itself
            scaled = scaling_call(receiver_node)
            if scaled is not None:
                scaler_node = scaled.func.value
                if self.is_scaler(dotted_name(scaler_node), scaler_node, owner):
                    return Event(BACKWARD, call, stmt, context, arg=scaled.args[0], scaled=True,
                                 scaler=dotted_name(scaler_node), objects=_lazy(self.values, None, scaler_node, None))
            if call.args and receiver is not None and not _is_tensor_like(receiver):
                if self._may_resolve(call) and resolve_call(self.ctx.semantic, call) is not None:
                    return None  # a method of the module (``self.backward(loss)``): its calls say what it does
                # a wrapper: accelerator.backward(loss), mp_trainer.backward(loss)
                return Event(BACKWARD, call, stmt, context, receiver=receiver, arg=call.args[0])
            scale = self._scaled_through_name(receiver_node, owner)
            if scale is not None:  # `loss = scaler.scale(loss)`, then `loss.backward()`
                return Event(BACKWARD, call, stmt, context, arg=scale.args[0], scaled=True,
                             scaler=dotted_name(scale.func.value), objects=_lazy(self.values, None, scale.func.value, None))
            return Event(BACKWARD, call, stmt, context, arg=receiver_node)
        if method in CLIP_METHOD_NAMES and receiver in ("torch.nn.utils", "nn.utils"):
            return Event(CLIP, call, stmt, context)
        if method not in ("scale", "unscale_", "update", "step", "zero_grad"):
            return None
        node = receiver_node if receiver is not None else None
        if method == "scale" and self.is_scaler(receiver, receiver_node, owner) and call.args:
            if isinstance(stmt, ast.Expr) and stmt.value is call:
                return Event(SCALE, call, stmt, context, receiver=receiver, arg=call.args[0],
                             objects=_lazy(self.values, node, None, None))
            return None
        first = call.args[0] if call.args else None
        objects = _lazy(self.values, node, None, first)
        if method == "unscale_" and self.is_scaler(receiver, receiver_node, owner):
            return Event(UNSCALE, call, stmt, context, receiver=receiver, arg=first, objects=objects)
        if method == "update" and self.is_scaler(receiver, receiver_node, owner):
            return Event(UPDATE, call, stmt, context, receiver=receiver, objects=objects)
        if method == "step":
            if self.is_scaler(receiver, receiver_node, owner):
                return Event(SCALER_STEP, call, stmt, context, receiver=receiver, arg=first, objects=objects)
            if self.is_optimizer(receiver, receiver_node, owner):
                return Event(OPT_STEP, call, stmt, context, receiver=receiver, objects=objects)
        if method == "zero_grad" and receiver is not None:
            return Event(ZERO_GRAD, call, stmt, context, receiver=receiver, objects=objects)
        return None

    def _scaled_through_name(self, node: ast.AST, owner) -> Optional[ast.Call]:
        """The ``scaler.scale(...)`` call that gives the name ``node`` its one reaching value
        (None when some path binds it otherwise: ``scaler.scale(loss) if amp else loss``)."""
        if not isinstance(node, ast.Name):
            return None
        definitions = self.values.definitions_at(node)
        if len(definitions) != 1 or definitions[0].kind not in ("assign", "annassign"):
            return None
        value = scaling_call(definitions[0].value)
        if value is None:
            return None
        return value if self.is_scaler(dotted_name(value.func.value), value.func.value, owner) else None

    def _autocast_region(self, stmt: ast.With, item: ast.withitem) -> Optional[AutocastRegion]:
        expr = item.context_expr
        call = expr if isinstance(expr, ast.Call) else None
        target = call.func if call is not None else expr
        qualified = self._qualified(target)
        if qualified in AUTOCASTS and call is not None:
            if _disabled(call, qualified):
                return None  # `autocast(enabled=False)`: a float32 island, not an autocast region
            return AutocastRegion(stmt, item, _autocast_device(call, qualified), _autocast_dtype(call, qualified), call)
        name = dotted_name(target)
        if name and (name in self.autocast_names or "autocast" in name.rsplit(".", 1)[-1].lower()):
            return AutocastRegion(stmt, item, None, None, None)
        return None

    # -- questions ----------------------------------------------------------------------------

    def accumulations(self, function: StepFunction) -> list[Accumulation]:
        """Loops that backpropagate every iteration and step under an if in the same loop."""
        found = []
        events = [
            e for e in function.of(BACKWARD, OPT_STEP, SCALER_STEP, calls=True)
            if e.kind != UNKNOWN and not e.conditional  # a callee's backward under its own condition may not run
        ]
        loops = {f.node for e in events for f in e.context if isinstance(f.node, (ast.For, ast.AsyncFor, ast.While))}
        for loop in loops:
            # the loop that backpropagates and steps is the innermost loop of both (a helper's
            # backward or step counts at its call)
            steps = [e for e in events if e.kind in (OPT_STEP, SCALER_STEP) and _innermost_loop(e) is loop]
            backwards = [e for e in events if e.kind == BACKWARD and _innermost_loop(e) is loop]
            if not steps or not backwards:
                continue
            gate = _gating_if(steps[0], loop)
            if gate is None or not all(_gating_if(s, loop) is gate for s in steps):
                continue
            if any(_under(b, gate) for b in backwards):
                continue  # backward is conditional too: not accumulation
            if {_branch_under(s, gate) for s in steps} == {"body", "orelse"}:
                continue  # `if i % 2 == 0: opt_d.step() else: opt_g.step()`: alternating optimizers
            if not _looks_like_accumulation(gate.test):
                continue
            factor = _accumulation_factor(gate.test)
            if self._one_by_construction(factor):
                continue  # `step % CFG.acc_steps == 0` with `acc_steps = 1`: a step every iteration
            found.append(Accumulation(loop, gate, factor, backwards, steps))
        found += [w for loop in loops if (w := self._microbatch_window(function, loop, events)) is not None]
        return found

    def _microbatch_window(self, function: StepFunction, loop: ast.AST, events: list[Event]) -> Optional[Accumulation]:
        """``for micro in range(N):`` (N > 1 possible) whose body backpropagates and never steps,
        with a step after it in the iteration that holds it: N micro-batches' gradients add up
        before each step."""
        count = microbatch_count(loop)
        if count is None or self._one_by_construction(count):
            return None
        backwards = [e for e in events if e.kind == BACKWARD and _innermost_loop(e) is loop and _in_body(e, loop)]
        stepping = [e for e in events if e.kind in (OPT_STEP, SCALER_STEP)]
        if not backwards or any(_inside(s, loop) for s in stepping):
            return None  # a step per micro-batch: nothing accumulates across the loop
        if _gradients_consumed(loop, backwards[0]):
            return None  # Langevin sampling, an adversarial attack: each pass uses its own gradients
        outer = _enclosing_loop(backwards[0], loop)
        # the steps after the loop that no other backward comes before: a GAN's generator window
        # (its own micro-batch loop after the discriminator's step) is not this window
        others = [e.call.lineno for e in events if e.kind == BACKWARD and not _inside(e, loop)]
        steps = [
            s for s in stepping
            if _innermost_loop(s) is outer and any(function.before(b, s) for b in backwards)
            and not any(loop.end_lineno < line < s.call.lineno for line in others)
        ]
        return Accumulation(loop, None, count, backwards, steps) if steps else None

    def _one_by_construction(self, count: Optional[ast.expr]) -> bool:
        """Whether every value of the micro-batch count is a literal 0 or 1 (``accum = 1``, a
        configuration class's ``acc_steps = 1`` here or in the project module it is imported
        from): no window of several micro-batches is ever built, the step follows every backward."""
        if count is None:
            return False
        values = self.values.constants(count)
        if values is None:
            values = self._imported_class_constants(count)
        return values is not None and bool(values) and all(
            type(v) is int and v in (0, 1) for v in values  # noqa: E721 - True is no count
        )

    def _imported_class_constants(self, expr: ast.expr) -> Optional[frozenset]:
        """``CFG.acc_steps`` of a class imported from another project module: its literal value
        there, when neither module assigns it through the class."""
        project = self.ctx.project
        if project is None or not isinstance(expr, ast.Attribute) or not isinstance(expr.value, ast.Name):
            return None
        if assigned_through(self.ctx.semantic, expr):
            return None  # `CFG.acc_steps = args.accum` in this module
        named = project.definition(self.ctx, expr, prefiltered=False)
        if named is None or not isinstance(named.node, ast.ClassDef) or named.attribute != expr.attr:
            return None
        there = ast.Attribute(value=ast.Name(id=named.node.name, ctx=ast.Load()), attr=expr.attr, ctx=ast.Load())
        if assigned_through(named.module.semantic, there):  # as its own module names the class
            return None
        return class_constants(named.node, expr.attr)

    def regions_reaching(self, function: StepFunction, event: Event, among=None) -> list[AutocastRegion]:
        """The autocast regions of ``function`` (or ``among`` them) that hold ``event`` or whose
        entry reaches it on a path that runs (not the fp32 ``else`` of ``if use_amp:``)."""
        candidates = self.regions_in(function) if among is None else among
        inside = self.region_of(event)
        return [
            r for r in candidates
            if r is inside or (r.entry is not None and function.before(r.entry, event))
        ]

    def creation_targets(self, create: Event) -> list[str]:
        """The names a scaler creation assigns (``scaler``, ``self.scaler``)."""
        stmt = create.stmt
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
        return [name for name in (dotted_name(t) for t in targets if t is not None) if name]

    def region_of(self, event: Event) -> Optional[AutocastRegion]:
        for frame in reversed(event.context):
            if isinstance(frame.node, (ast.With, ast.AsyncWith)):
                region = self._region_by_with.get(id(frame.node))
                if region is not None:
                    return region
        return None

    def calls_in(self, function: StepFunction) -> list[ast.Call]:
        """The calls of a function's own body (not of functions nested in it)."""
        if self._calls_by_owner is None:
            index: dict[int, list[ast.Call]] = {}
            for call in self.ctx.semantic.nodes(ast.Call):
                owner = enclosing_function(self.ctx.semantic, call) or self.ctx.tree
                index.setdefault(id(owner), []).append(call)
            self._calls_by_owner = index
        return self._calls_by_owner.get(id(function.node), [])

    def uses_scaler(self) -> bool:
        return bool(self.creations) or any(
            e.kind in (SCALER_STEP, UNSCALE, UPDATE) or e.scaled for f in self.functions for e in f.events
        )


CLIP_METHOD_NAMES = frozenset({"clip_grad_norm_", "clip_grad_value_", "clip_grad_norm"})
_SCALER_CLASSES = frozenset({"GradScaler", "ShardedGradScaler"})
# Calls the model classifies, by their last name; only these are resolved through imports.
_RESOLVED_CALLS = _SCALER_CLASSES | CLIP_METHOD_NAMES | {"get_total_norm", "backward"}
_INTERESTING_CALLS = _RESOLVED_CALLS | {"scale", "unscale_", "update", "step", "zero_grad"}


# the classes whose instances have a role: only calls so named are resolved through imports
_ROLE_CLASSES = frozenset({"GradScaler", "ShardedGradScaler"}) | frozenset({
    "SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "Adafactor", "ASGD", "LBFGS", "NAdam", "RAdam",
    "RMSprop", "Rprop", "SparseAdam", "Muon",
})


def _carried(expr: ast.AST) -> list:
    """The expressions whose object ``expr`` may evaluate to, as ampfix.program.values follows
    them: a name, an attribute, a call's result, either side of ``a if c else b`` / ``a or b``."""
    found, todo = [], [expr]
    while todo:
        current = todo.pop()
        if isinstance(current, (ast.Name, ast.Attribute, ast.Call)):
            found.append(current)
        elif isinstance(current, ast.IfExp):
            todo += [current.body, current.orelse]
        elif isinstance(current, ast.BoolOp):
            todo += current.values
        elif isinstance(current, ast.NamedExpr):
            todo.append(current.value)
    return found


def _lazy(values: ValueFlow, receiver, scaler, arg):
    """The objects of an event's receiver, scaler and argument nodes, computed when first asked."""
    return lambda: tuple(values.object_of(n) if n is not None else None for n in (receiver, scaler, arg))


def _is_role_constructor(qualified: Optional[str]) -> bool:
    return qualified is not None and (
        qualified in GRAD_SCALERS or (qualified.startswith("torch.optim.") and ".lr_scheduler" not in qualified)
    )


def sets_scale(event: Event) -> bool:
    """``scaler.update(new_scale)``: the scale set by hand (icefall's rescue of a tiny scale). It
    closes the step like ``update()`` but reads no inf check, so it is legal in any state: after
    another update too, and between micro-batches."""
    return event.kind == UPDATE and bool(event.call.args or event.call.keywords)


def _last_name(expr: ast.AST) -> str:
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Name):
        return expr.id
    return ""
_TENSORISH = re.compile(r"loss|^l$|out|^y|pred|logit|^z$|total", re.I)


def _is_tensor_like(receiver: str) -> bool:
    """`loss.backward(gradient)` vs `trainer.backward(loss)`: the receiver's name tells."""
    return bool(_TENSORISH.search(receiver.rsplit(".", 1)[-1]))


def encloses(outer: ast.AST, node: ast.AST) -> bool:
    """Whether node lies inside outer (a function or the module), by source lines."""
    if isinstance(outer, ast.Module):
        return True
    return outer.lineno <= node.lineno <= outer.end_lineno


def _frame(node: ast.AST, child: ast.AST) -> Optional[Frame]:
    """The frame that ``node`` (a compound statement) puts around its direct child, if any."""
    if isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.If)):
        if child in node.body:
            return Frame(node, "body")
        if child in node.orelse:
            return Frame(node, "orelse")
        return None  # the test or the iterable
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return Frame(node, "body") if child in node.body else None
    if isinstance(node, ast.ExceptHandler):
        return None  # its Try gives the frame
    if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
        if child in node.body:
            return Frame(node, "body")
        if isinstance(child, ast.ExceptHandler):
            return Frame(node, "handlers")
        if child in node.orelse:
            return Frame(node, "orelse")
        if child in node.finalbody:
            return Frame(node, "finalbody")
    if type(node).__name__ == "match_case":
        return Frame(node, "body")
    return None


def _inside(event: Event, node: ast.AST) -> bool:
    return any(f.node is node for f in event.context)


def _innermost_loop(event: Event) -> Optional[ast.AST]:
    for frame in reversed(event.context):
        if isinstance(frame.node, (ast.For, ast.AsyncFor, ast.While)):
            return frame.node
    return None


def _in_body(event: Event, loop: ast.AST) -> bool:
    """Whether ``event`` runs in ``loop``'s body (a ``for ... else:`` runs even with no iteration)."""
    return any(f.node is loop and f.branch == "body" for f in event.context)


def _enclosing_loop(event: Event, loop: ast.AST) -> Optional[ast.AST]:
    """The loop around ``loop`` among ``event``'s frames (None: ``loop`` is outermost in its function)."""
    frames = [f.node for f in event.context]
    outer = [n for n in frames[:frames.index(loop)] if isinstance(n, (ast.For, ast.AsyncFor, ast.While))]
    return outer[-1] if outer else None


def microbatch_count(loop: ast.AST) -> Optional[ast.expr]:
    """N of ``for micro in range(N):`` / ``range(0, N)``: a name, an attribute or an integer
    above 1 (``range(1)`` is one micro-batch by construction), not the loop's own target."""
    it = getattr(loop, "iter", None)
    if not isinstance(loop, (ast.For, ast.AsyncFor)) or not isinstance(it, ast.Call) or it.keywords:
        return None
    if not (isinstance(it.func, ast.Name) and it.func.id == "range"):
        return None
    if len(it.args) == 2 and isinstance(it.args[0], ast.Constant) and it.args[0].value == 0:
        count = it.args[1]
    elif len(it.args) == 1:
        count = it.args[0]
    else:
        return None
    if isinstance(count, ast.Constant):
        value = count.value
        return count if isinstance(value, int) and not isinstance(value, bool) and value > 1 else None
    if not isinstance(count, (ast.Name, ast.Attribute)) or dotted_key(count) is None:
        return None
    target = {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}
    return None if dotted_key(count).split(".")[0] in target else count


def _under(event: Event, gate: ast.If) -> bool:
    return any(f.node is gate for f in event.context)


def _branch_under(event: Event, gate: ast.If) -> Optional[str]:
    return next((f.branch for f in event.context if f.node is gate), None)


def _gating_if(event: Event, loop: ast.AST) -> Optional[ast.If]:
    """The outermost if inside loop that encloses event (None when unconditional in loop)."""
    seen_loop = False
    for frame in event.context:
        if frame.node is loop:
            seen_loop = True
        elif seen_loop and isinstance(frame.node, ast.If):
            return frame.node
    return None


def _looks_like_accumulation(test: ast.AST) -> bool:
    """`(i + 1) % N == 0`, `step % accum == 0`, `ni - last_opt_step >= accumulate`, flags like
    `update_grad`, `is_last` or `(i + 1) % N == 0 or last`."""
    for sub in ast.walk(test):
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Mod):
            return True
        if isinstance(sub, ast.Compare) and any(isinstance(op, (ast.GtE, ast.Gt)) for op in sub.ops):
            # `ni - last_opt_step >= accumulate`, `micro >= accum_steps`; not a warm-up gate
            # (`it >= warmup_iters`), which steps on every iteration once it opens
            text = ast.dump(sub)
            counts_since_step = isinstance(sub.left, ast.BinOp) and isinstance(sub.left.op, ast.Sub)
            if not re.search(r"warm", text, re.I) and (re.search(r"accum", text, re.I) or counts_since_step):
                return True
        name = sub.id if isinstance(sub, ast.Name) else sub.attr if isinstance(sub, ast.Attribute) else ""
        if re.search(r"accum|update_grad|sync_grad|do_step|should_step|boundary", name, re.I):
            return True
    return False


def _gradients_consumed(loop: ast.AST, backward: Event) -> bool:
    """Whether the loop's body reads or resets a ``.grad`` after its backward (GraphEBM's
    ``neg_x.data.add_(neg_x.grad.data, ...)`` then ``neg_x.grad.zero_()``): the gradients of each
    pass are used within it, they are not summed for a step after the loop."""
    after = (backward.stmt.end_lineno or backward.stmt.lineno, backward.stmt.end_col_offset or 0)
    return any(
        isinstance(node, ast.Attribute) and node.attr == "grad" and (node.lineno, node.col_offset) > after
        for stmt in loop.body for node in ast.walk(stmt)
    )


def _accumulation_factor(test: ast.AST) -> Optional[ast.expr]:
    for sub in ast.walk(test):
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Mod):
            return sub.right
        if isinstance(sub, ast.Compare) and len(sub.ops) == 1 and isinstance(sub.ops[0], ast.GtE):
            return sub.comparators[0]
    return None


def _disabled(call: ast.Call, qualified: str) -> bool:
    enabled = next((k.value for k in call.keywords if k.arg == "enabled"), None)
    if enabled is None and qualified.startswith(("torch.cuda.", "torch.cpu.")) and call.args:
        enabled = call.args[0]  # the old classes take `enabled` first
    elif enabled is None and len(call.args) > 2:
        enabled = call.args[2]
    return isinstance(enabled, ast.Constant) and enabled.value is False


def _autocast_device(call: ast.Call, qualified: str) -> Optional[str]:
    if qualified.startswith("torch.cuda."):
        return "cuda"
    if qualified.startswith("torch.cpu."):
        return "cpu"
    expr = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "device_type"), None)
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value.split(":", 1)[0]
    return None


def _autocast_dtype(call: ast.Call, qualified: str) -> Optional[ast.expr]:
    for keyword in call.keywords:
        if keyword.arg == "dtype":
            return keyword.value
    # dtype is the second positional parameter of the new and the old signatures alike
    return call.args[1] if len(call.args) > 1 else None
