"""The GradScaler protocol as a typestate: one forward dataflow over one iteration of the step.

For each scaler of a function (an object: ``Event.scaler_key``), the states of that scaler and of
each optimizer it steps flow over the function's control-flow graph (ampfix.program.flow), through
one iteration of the innermost loop that holds its scaled backward passes and its steps (the whole
function when no loop does: a per-step helper). A state is

    phase      idle | scaled | updated | unknown   (unknown: a call the model cannot follow was
                                                    handed the scaler; nothing is reported after it)
    unscaled   the optimizers ``unscale_`` ran for since the last ``update()``, with the event
    stepped    the optimizers ``scaler.step`` ran for since the last ``update()``, with the event
    plain      the unscaled backward passes (``loss.backward()``) since the last ``update()``

so the (scaler, optimizer) pairs are the (phase, opt in unscaled, opt in stepped) projections. The
events of the step model are the transitions, call summaries included (a call's events, at the
call, in the callee's order; a call's event that may not happen both happens and does not).
Paths are branch-correlated as in ``FlowGraph.path_exists`` (the ``else`` of a second ``if
use_amp:`` is not taken after the body of the first, unless ``use_amp`` was rebound in between).

Error transitions (``ProtocolError.kind``), each with the events on the path that led there:

    clip_scaled          a clip while gradients are scaled: no ``unscale_`` and no step since the
                         scaled backward (AMP201)
    step_while_scaled    ``optimizer.step()`` while its gradients are scaled (AMP203)
    plain_then_step      ``scaler.step`` of gradients that an unscaled backward produced (AMP202)
    second_unscale       ``unscale_(opt)`` again since the last ``update()``: raises
                         "unscale_() has already been called on this optimizer" (AMP210)
    unscale_after_step   ``unscale_(opt)`` after ``scaler.step(opt)`` before ``update()``: raises
                         "unscale_() is being called after step()" (AMP210)
    update_twice         ``update()`` with no step since the last one (AMP204)
    step_after_update    ``scaler.step`` after ``update()`` with no backward in between (AMP204),
                         unless a ``zero_grad`` of the stepped optimizer (or of a model) wiped
                         the gradients scaled before the update (a flush step after the loop)

A search that grows past its bound gives up (``complete`` is False) and reports nothing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional

from ampfix.program.flow import branch_label, take, take_all
from ampfix.semantic import dotted_name
from ampfix.training.model import (
    BACKWARD,
    CLIP,
    OPT_STEP,
    SCALER_STEP,
    UNKNOWN,
    UNSCALE,
    UPDATE,
    ZERO_GRAD,
    Event,
    StepFunction,
    _order,
    sets_scale,
)

if TYPE_CHECKING:
    from ampfix.training.model import TrainingModel

IDLE, SCALED, UPDATED, UNKNOWN_PHASE = "idle", "scaled", "updated", "unknown"
CLIP_SCALED, STEP_WHILE_SCALED, PLAIN_THEN_STEP = "clip_scaled", "step_while_scaled", "plain_then_step"
SECOND_UNSCALE, UNSCALE_AFTER_STEP = "second_unscale", "unscale_after_step"
UPDATE_TWICE, STEP_AFTER_UPDATE = "update_twice", "step_after_update"
_MAX_STATES = 20000
# Event outcomes the search may take in all (a node's events multiply the states that reach it:
# a helper whose many events each run under their own condition); past it the protocol is
# incomplete and the rules stay silent, as past _MAX_STATES
_MAX_TRANSITIONS = 100_000
# the events a function needs for each error state to be reachable ("scaled"/"plain": a scaled
# or an unscaled backward pass)
_MADE_BY = {
    CLIP_SCALED: ("scaled", CLIP), STEP_WHILE_SCALED: ("scaled", OPT_STEP), PLAIN_THEN_STEP: ("plain", SCALER_STEP),
    SECOND_UNSCALE: (UNSCALE,), UNSCALE_AFTER_STEP: (UNSCALE, SCALER_STEP), UPDATE_TWICE: (UPDATE,),
    STEP_AFTER_UPDATE: (UPDATE, SCALER_STEP),
}


def _kinds_present(function: StepFunction) -> set:
    """The event kinds of the function and its calls, a backward as "scaled" or "plain"."""
    found = getattr(function, "_kinds_present", None)
    if found is None:
        found = set()
        for event in function.of(BACKWARD, CLIP, OPT_STEP, SCALER_STEP, UNSCALE, UPDATE, calls=True):
            if event.kind == BACKWARD:
                found.add("scaled" if event.scaled else "plain" if event.receiver is None else BACKWARD)
            else:
                found.add(event.kind)
        function._kinds_present = found
    return found


@dataclass(frozen=True)
class State:
    phase: str
    scaled_by: Optional[int] = None  # the event index of the last scaled backward
    unscaled: frozenset = frozenset()  # (optimizer key, event index)
    stepped: frozenset = frozenset()  # (optimizer key, event index)
    plain: frozenset = frozenset()  # event indices of unscaled backward passes
    updated_by: Optional[int] = None  # the event index of the last update()
    wiped: bool = False  # the gradients scaled before that update() are gone (a zero_grad since)


@dataclass(frozen=True)
class ProtocolError:
    kind: str
    event: Event  # the transition that reaches the bad state
    scaler: Optional[str]  # the scaler's text, for messages
    path: tuple  # the protocol events before it on the path, in order (the evidence)


@dataclass
class ScalerProtocol:
    """The typestate result of one scaler in one function."""

    scaler: Optional[str]
    key: object  # the scaler's identity (ObjectId, or its text)
    events: list  # the scaler's events and the scaler-independent ones (clips, plain backwards)
    errors: list
    complete: bool


def protocols(model: "TrainingModel", function: StepFunction) -> list[ScalerProtocol]:
    """One typestate result per scaler that ``function`` scales, unscales, steps or updates
    (memoized on the function)."""
    cached = getattr(function, "_protocols", None)
    if cached is None:
        cached = function._protocols = [_solve(model, function, group) for group in _scaler_groups(model, function)]
    return cached


def errors_of(model: "TrainingModel", function: StepFunction, *kinds: str) -> list[ProtocolError]:
    """The errors of these kinds of every scaler of ``function`` whose search completed; the
    search runs only where the function has an event that could make one of them."""
    present = _kinds_present(function)
    if not any(all(k in present for k in _MADE_BY[kind]) for kind in kinds):
        return []
    return [e for p in protocols(model, function) if p.complete for e in p.errors if e.kind in kinds]


def seen_by_the_callee(error: ProtocolError) -> bool:
    """Whether the error and every event on its path stand for one call's events: the callee,
    analysed on its own, finds the same error where it is."""
    calls = {id(e.call) for e in (error.event, *error.path)}
    return error.event.via is not None and len(calls) == 1


def _scaler_groups(model: "TrainingModel", function: StepFunction) -> list[tuple]:
    """(identity, text) of each scaler whose protocol events the function has (its own or its
    calls'), one per object: two names of one scaler are one group."""
    groups: list[tuple] = []
    for event in function.of(BACKWARD, UNSCALE, SCALER_STEP, UPDATE, calls=True):
        if event.kind == UNKNOWN or (event.kind == BACKWARD and not event.scaled):
            continue
        obj = event.scaler_obj if event.kind == BACKWARD else event.obj
        text = event.scaler if event.kind == BACKWARD else event.receiver
        if not any(model.same_object(obj, text, o, t) for o, t in groups):
            groups.append((obj, text))
    return groups


def _wipes_of_stepped(model: "TrainingModel", function: StepFunction, events: list[Event]) -> list[Event]:
    """The ``zero_grad`` calls that wipe what this scaler steps: of an optimizer it steps, or of
    a model (``model.zero_grad()``: not an optimizer's)."""
    steps = [e for e in events if e.kind == SCALER_STEP]
    found = []
    for event in function.of(ZERO_GRAD, calls=True):
        if event.kind != ZERO_GRAD:
            continue
        stepped = any(
            model.same_object(event.obj, event.receiver, step.arg_obj, dotted_name(step.arg))
            for step in steps if step.arg is not None
        )
        if stepped or (event.receiver is not None and not model.is_optimizer(event.receiver)):
            found.append(event)
    return found


def _mine(model: "TrainingModel", event: Event, obj, text) -> bool:
    if event.kind == BACKWARD:
        return event.scaled and model.same_object(event.scaler_obj, event.scaler, obj, text)
    if event.kind == UNKNOWN:  # a call handed the scaler: known by its text only
        return event.receiver is not None and event.receiver == text
    return model.same_object(event.obj, event.receiver, obj, text)


def _solve(model: "TrainingModel", function: StepFunction, group: tuple) -> ScalerProtocol:
    obj, text = group
    every = function.of(BACKWARD, UNSCALE, SCALER_STEP, UPDATE, CLIP, OPT_STEP, calls=True)
    events = [
        e for e in every
        if e.kind in (CLIP, OPT_STEP) or (e.kind == BACKWARD and not e.scaled and e.receiver is None)
        or _mine(model, e, obj, text)
    ]
    events = [e for e in events if not (e.kind == BACKWARD and e.conditional and not e.scaled)]
    events += _wipes_of_stepped(model, function, events)
    result = ScalerProtocol(text, obj or text, events, [], True)
    graph = function.flow
    at_node: dict[int, list[int]] = {}
    for index, event in enumerate(events):
        node = graph.node_of(event.stmt)
        if node is not None:
            at_node.setdefault(node, []).append(index)
    for indices in at_node.values():
        indices.sort(key=lambda i: _order(events[i]))
    anchors = [
        graph.node_of(e.stmt) for e in events
        if e.kind in (SCALER_STEP,) or (e.kind == BACKWARD and e.scaled)
    ]
    anchors = [a for a in anchors if a is not None]
    if not anchors:
        return result
    loops = graph.loops_holding(*anchors)
    header = min(loops, key=lambda h: len(graph.inside[h])) if loops else None
    _Search(model, function, events, at_node, header, result).run()
    return result


def _guarding_tests(events: list[Event]) -> frozenset:
    """The test keys that decide whether one of ``events`` runs: the ``if`` tests around each, the
    conditions of a call's event, and what each branch of them implies about its operands."""
    keys = set()
    tests = [f.node.test for e in events for f in e.context if isinstance(f.node, ast.If)]
    tests += [test for e in events for test, _ in e.assume]
    for test in tests:
        for branch in ("body", "orelse"):
            label = branch_label(test, branch)
            keys.update(key for key, _ in (label, *label[0].implied(label[1])))
    return frozenset(keys)


class _Search:
    """The forward exploration of (node, state, branch assumptions) over one iteration."""

    def __init__(self, model, function, events, at_node, header, result):
        self.model, self.function, self.events, self.at_node = model, function, events, at_node
        self.graph = function.flow
        self.header = header
        self.members = self.graph.inside.get(header, set()) if header is not None else None
        self.result = result
        self.reported: set = set()
        self.spent = 0  # event outcomes taken so far (_MAX_TRANSITIONS)
        self.relevant = _guarding_tests(events)

    def run(self) -> None:
        graph = self.graph
        start_node = self.header if self.header is not None else graph.ENTRY
        start = (start_node, State(IDLE), frozenset())
        seen = {start}
        stack = [start]
        while stack:
            node, state, assumed = stack.pop()
            outcomes = self._through(node, state, assumed)
            if self.spent > _MAX_TRANSITIONS:
                self.result.complete = False
                return
            for state_after, assumed_after in outcomes:
                for nxt, label in graph.succ.get(node, ()):
                    step = self._edge(node, nxt, label, assumed_after)
                    if step is None:
                        continue
                    item = (nxt, state_after, step)
                    if item in seen:
                        continue
                    if len(seen) >= _MAX_STATES:
                        self.result.complete = False
                        return
                    seen.add(item)
                    stack.append(item)

    def _edge(self, node: int, nxt: int, label, assumed: frozenset) -> Optional[frozenset]:
        """The assumptions after following node -> nxt, or None when the edge leaves the
        iteration or contradicts the path."""
        graph = self.graph
        if (node, nxt) in graph.back_edges:
            if nxt == self.header:
                return None  # the end of this iteration
            assumed = graph.forget_round_loop(assumed, nxt)
        if self.members is not None and nxt not in self.members:
            return None  # leaving the training loop
        if assumed and nxt in graph.bindings:
            assumed = graph._forget_rebound(assumed, nxt)
        if label is not None:
            taken = take(assumed, label)
            if taken is None:
                return None
            # only the tests that guard an event (or a call's event's condition) are remembered:
            # the branches of the others change no state, and remembering them would multiply
            # the paths (a loop body of twenty logging ifs is 2 ** 20 of them)
            return frozenset(taken_label for taken_label in taken if taken_label[0] in self.relevant)
        return assumed

    def _through(self, node: int, state: State, assumed: frozenset) -> list:
        """The (state, assumptions) after the events at ``node``, in order."""
        if node == self.header and self.header is not None:
            return [(state, assumed)]  # the iteration starts after the loop's own header
        current = [(state, assumed)]
        for index in self.at_node.get(node, ()):
            event = self.events[index]
            following = []
            for before, path_assumed in current:
                for happens, after_assumed in self._happens(event, path_assumed):
                    following.append((self._transition(index, event, before) if happens else before, after_assumed))
            self.spent += len(following)
            if self.spent > _MAX_TRANSITIONS:
                return []
            current = list(dict.fromkeys(following))
        return current

    def _happens(self, event: Event, assumed: frozenset) -> list:
        """[(whether the event runs, assumptions)]: a call's event under the callee's
        conditions runs where they hold; one under a callee's own local may not run."""
        conditions = []
        for test, branch in event.assume:
            if isinstance(test, ast.Constant):  # the caller passes a constant: `run_epoch(train=False)`
                if bool(test.value) != (branch == "body"):
                    return [(False, assumed)]
                continue
            conditions.append(branch_label(test, branch))
        runs = take_all(assumed, conditions)  # with what each condition implies of its operands
        if runs is None:
            return [(False, assumed)]  # a condition contradicts the path: it does not run here
        if runs == assumed and not event.conditional:
            return [(True, assumed)]
        if event.conditional:  # it may not run whatever the conditions: nothing is learnt
            return [(True, runs), (False, assumed)]
        # it does not run when one of its conditions fails: the first that fails, the earlier
        # ones holding (so the events of one call under one test run or not together)
        missed = []
        for index, (key, branch) in enumerate(conditions):
            if (key, branch) in assumed:
                continue
            failed = take_all(assumed, [*conditions[:index], (key, "orelse" if branch == "body" else "body")])
            if failed is not None:
                missed.append((False, failed))
        return [(True, runs), *missed]

    def _transition(self, index: int, event: Event, state: State) -> State:
        phase = state.phase
        kind = event.kind
        if kind == UNKNOWN:
            return State(UNKNOWN_PHASE)
        if phase == UNKNOWN_PHASE and kind != UPDATE:
            return state
        if kind == BACKWARD:
            if not event.scaled:
                return replace(state, plain=state.plain | {index})
            return replace(state, phase=SCALED, scaled_by=index)
        if kind == CLIP:
            if phase == SCALED and not state.unscaled and not state.stepped:
                self._error(CLIP_SCALED, index, [state.scaled_by])
            return state
        optimizer = event.optimizer_key
        if kind == OPT_STEP:
            if event.call.args or event.call.keywords:
                return state  # step(closure): not a step the scaler could take over
            if phase == SCALED and not _has(state.stepped, optimizer):
                self._error(STEP_WHILE_SCALED, index, [state.scaled_by])
            return state
        if kind == UNSCALE:
            if _tracked(optimizer):
                stepped, unscaled = _first(state.stepped, optimizer), _first(state.unscaled, optimizer)
                if stepped is not None:
                    self._error(UNSCALE_AFTER_STEP, index, [state.scaled_by, stepped])
                elif unscaled is not None:
                    self._error(SECOND_UNSCALE, index, [state.scaled_by, unscaled])
            return replace(state, unscaled=state.unscaled | {(optimizer, index)})
        if kind == ZERO_GRAD:
            return replace(state, wiped=True) if phase == UPDATED else state
        if kind == SCALER_STEP:
            if phase == UPDATED and not state.wiped:
                self._error(STEP_AFTER_UPDATE, index, [state.updated_by])
            for plain in sorted(state.plain):
                self._error(PLAIN_THEN_STEP, plain, [], at=index)
            return replace(state, stepped=state.stepped | {(optimizer, index)})
        if kind == UPDATE:
            if phase == UPDATED and not state.stepped and not sets_scale(event):
                self._error(UPDATE_TWICE, index, [state.updated_by])  # no step since the last update
            return State(UPDATED, updated_by=index)
        return state

    def _error(self, kind: str, index: int, before: list, at: Optional[int] = None) -> None:
        """Record an error once per (kind, event): ``before`` are the path's earlier events that
        led to it, ``at`` a later event that makes it one (the step a plain backward reaches)."""
        key = (kind, index)
        if key in self.reported:
            return
        self.reported.add(key)
        path = [self.events[i] for i in before if i is not None]
        if at is not None:
            path.append(self.events[at])
        self.result.errors.append(ProtocolError(kind, self.events[index], self.result.scaler, tuple(path)))


def _has(pairs: frozenset, optimizer) -> bool:
    return optimizer is not None and any(o == optimizer for o, _ in pairs)


def _first(pairs: frozenset, optimizer) -> Optional[int]:
    found = [i for o, i in pairs if o == optimizer]
    return min(found) if found else None


def _tracked(optimizer) -> bool:
    """Whether a second ``unscale_`` of this optimizer key is one object twice: not a loop
    variable (``for opt in optimizers``), not one of several, not unknown."""
    if optimizer is None:
        return False
    kind = getattr(optimizer, "kind", None)
    if kind is None:
        return isinstance(optimizer, str) and "[" not in optimizer  # text: a plain reference
    if kind == "phi":
        return False
    return kind != "loop"
