"""Training steps: what one iteration of a training loop does, wherever its parts live.

A function's events (ampfix.training.model) are split into *steps*. A step is one iteration of
a *step loop*: the innermost loop that holds both a backward and an optimizer step (its own, or
a callee's at the call; an unknown call handed a scaler counts as both, since it may do either).
A backward in a micro-batch loop inside it belongs to it (the micro-batch loop never steps); an
optimizer loop inside it (``for opt in optimizers: scaler.step(opt)``) too. A nested loop that
backpropagates and steps on its own is a step of its own (an inner adaptation loop, a second
training phase written inside the first). What no step loop holds makes the function's *body
step*: a ``train_step(batch)`` method, called once per iteration by a loop elsewhere, or the
set-up and tear-down around the loops.

So an fp32 phase followed by an AMP phase in one function, or one notebook, are two steps,
each asked on its own ("does this step go through a GradScaler?"), and a window of gradient
accumulation (``Accumulation``) belongs to the step whose optimizer steps it gates. Events in a
loop over a literal empty range (``for epoch in range(0):``, code kept for illustration) are in
no step: they never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Optional

from ampfix.training.model import (
    BACKWARD, OPT_STEP, SCALE, SCALER_STEP, UNKNOWN, UNSCALE, UPDATE, Accumulation, Event, StepFunction, events_of,
)

if TYPE_CHECKING:
    from ampfix.training.model import TrainingModel

_LOOPS = (ast.For, ast.AsyncFor, ast.While)
# what an event contributes to making a loop a step loop (an unknown call handed a scaler may
# backpropagate and step)
_STEP_PARTS = {BACKWARD: {BACKWARD}, OPT_STEP: {OPT_STEP}, SCALER_STEP: {OPT_STEP}, UNKNOWN: {BACKWARD, OPT_STEP}}
_SCALER_PROTOCOL = (SCALER_STEP, UNSCALE, UPDATE, SCALE, UNKNOWN)


@dataclass
class TrainingStep:
    """One iteration of a step loop of ``function`` (``loop`` None: the function's body step)."""

    function: StepFunction
    loop: Optional[ast.AST]
    events: list[Event] = field(default_factory=list)  # its own statements' events
    call_events: list[Event] = field(default_factory=list)  # what its calls do (``via`` the callee)
    windows: list[Accumulation] = field(default_factory=list)  # accumulation windows its steps close

    def of(self, *kinds: str, calls: bool = False) -> list[Event]:
        """The step's events of ``kinds`` (as ``StepFunction.of``, restricted to this step)."""
        return events_of(self.events, self.call_events if calls else None, kinds)

    @property
    def backwards(self) -> list[Event]:
        return self.of(BACKWARD, calls=True)

    @property
    def uses_scaler(self) -> bool:
        """Whether this step goes through a GradScaler: a scaler call of the protocol, its own or
        its callees', or the loss handed to a call the model cannot follow that takes a scaler
        (``loss_scaler(loss, optimizer)``, timm/MAE)."""
        return any(e.kind in _SCALER_PROTOCOL or e.scaled for e in self.events + self.call_events)

    @property
    def line(self) -> int:
        return getattr(self.loop if self.loop is not None else self.function.node, "lineno", 1)


def steps_of(model: "TrainingModel") -> list[TrainingStep]:
    """Every step of the module, function by function, in source order within a function."""
    return [step for function in model.functions for step in _function_steps(model, function)]


def _function_steps(model: "TrainingModel", function: StepFunction) -> Iterator[TrainingStep]:
    everything = function.events + function.call_events
    loops = _step_loops(everything)
    steps: dict[int, TrainingStep] = {}

    def step_for(event: Event) -> TrainingStep:
        loop = next((f.node for f in reversed(event.context) if id(f.node) in loops), None)
        key = id(loop)
        if key not in steps:
            steps[key] = TrainingStep(function, loop)
        return steps[key]

    for event in function.events:
        if not _never_runs(event):
            step_for(event).events.append(event)
    for event in function.call_events:
        if not _never_runs(event):
            step_for(event).call_events.append(event)
    for window in model.accumulations(function):
        if not _never_runs(window.steps[0]):
            step_for(window.steps[0]).windows.append(window)
    yield from sorted(steps.values(), key=lambda s: (s.loop is not None, s.line))


def _step_loops(events: list[Event]) -> set[int]:
    """The loops (by identity) that hold both a backward and an optimizer step of one function;
    an event belongs to the innermost of them around it."""
    holding: dict[int, set] = {}
    for event in events:
        parts = _STEP_PARTS.get(event.kind)
        if parts is None:
            continue
        for frame in event.context:
            if isinstance(frame.node, _LOOPS):
                holding.setdefault(id(frame.node), set()).update(parts)
    return {key for key, kinds in holding.items() if kinds == {BACKWARD, OPT_STEP}}


def _never_runs(event: Event) -> bool:
    """Whether ``event`` sits in the body of a loop over a literal empty range (the official AMP
    recipe's ``for epoch in range(0):  # for illustration only``): no step of it ever runs."""
    return any(f.branch == "body" and _empty_range(f.node) for f in event.context)


def _empty_range(loop: ast.AST) -> bool:
    it = getattr(loop, "iter", None)
    if not isinstance(loop, (ast.For, ast.AsyncFor)) or not isinstance(it, ast.Call) or it.keywords:
        return False
    if not (isinstance(it.func, ast.Name) and it.func.id == "range") or not 1 <= len(it.args) <= 2:
        return False
    bounds = [a.value if isinstance(a, ast.Constant) else None for a in it.args]
    if not all(type(b) is int for b in bounds):  # noqa: E721 - True is no bound
        return False
    start, stop = (0, bounds[0]) if len(bounds) == 1 else bounds
    return stop <= start
