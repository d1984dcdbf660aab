"""The verifier's harness: runs inside each child process, around the user's script.

    python -m ampfix.verify.harness CONFIG.json

It seeds everything and pins threads, installs instrumentation that observes without changing
results, runs the script as ``__main__`` with its arguments and, when the step after the last
one to observe begins, writes the JSON trace and leaves with ``os._exit`` from the hook itself:
no ``except:`` in the script can swallow the stop, and DataLoader workers and stray threads
cannot hang the run. A step is one iteration of the training loop (see ``Trace``). Building
blocks and their measured costs: ../shared/reference/verifier-notes.md.

Modes: ``original`` and ``amp`` run the script as it is; ``fp32`` forces autocast and every
GradScaler off (the float32 reference of the same code). With ``cuda_shim`` CUDA devices,
autocast and scalers map to the CPU, for CUDA-only scripts on a CPU machine.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import runpy
import sys
import time
import traceback
import warnings
import weakref
from typing import Any, Optional

LOW_PRECISION = ("torch.float16", "torch.bfloat16")


class Trace:
    """What one run did, step by step. A step is one iteration of the training loop: one round
    of optimizer steps (a GAN's two optimizers step once each), closed by the scaler's
    ``update()`` where there is one; the loss is what the criterion returned in it (the value
    handed to ``backward`` only where no loss function was called)."""

    def __init__(self, config: dict):
        self.config = config
        self.steps: list[dict] = []  # one per completed iteration
        self.current: Optional[dict] = None  # the iteration whose optimizer steps are running
        self.pending_losses: list[float] = []  # handed to backward, since the last optimizer step
        self.pending_criterion: list[float] = []  # returned by a loss function, since then
        self.pending_backwards = 0
        self.compile_calls = 0
        self.autocast_entered = 0  # autocast regions the script enabled (before fp32 mode forces them off)
        self.pending_autocast = 0  # of them, since the last optimizer step
        self.optimizers: list = []  # those that stepped, held to the end (their digest is taken then)
        self.parameters: Optional[tuple] = None  # (key of the optimizers' groups, their parameters)
        self.progress_fd: Optional[int] = None
        self.close_iteration = None  # installed by the instrumentation: records the open iteration
        self.events: dict[str, int] = {}
        self.event_samples: list[str] = []
        self.scalers_created = 0
        self.scaler_sites: dict[str, int] = {}  # where GradScalers were created, and how often
        self.scalers_enabled = 0
        self.flops: dict[str, float] = {}
        self.warnings: dict[str, int] = {}
        self.status = "finished"
        self.error = None
        self.exit_code = None
        self.step_times: list[float] = []  # wall clock per step (what a person waits for)
        self.step_cpu_times: list[float] = []  # thread CPU time per step (steadier on a busy machine)
        self.ledger: Optional[Ledger] = None  # with account_overhead: the harness's own time
        self.step_own_times: list[float] = []  # of it, per step
        self.last_own = 0.0
        self.last_step_end = None
        self.last_step_cpu = None
        self.started = time.perf_counter()
        self.scale_history: list[float] = []
        self.skipped: list[int] = []  # indices (in steps) of recorded steps the scaler skipped
        self.skip_keys: list[list[int]] = []  # [phase, step in phase, optimizer step in it] of every skipped step
        self.disabled_autocast: dict[str, int] = {}  # device type -> autocast regions the script disabled
        self.phases: list[dict] = []  # one per training loop that stepped, in order (see _phase_key)
        self.through_steps = 0  # steps run past a phase's limit to reach the next phase, not recorded
        self.pending_grads: dict[int, tuple] = {}  # optimizer id -> (gradient norm, divisor) before its step
        self.pending_clips: list = []  # total norms clip_grad_norm_ returned (what it acted on)
        self.start_params: dict[int, object] = {}  # parameter id -> its sample's copy when its phase began (w_0)
        self.sample_views: dict[int, object] = {}  # parameter id -> the view of it the digest reads
        self.sample_geometry: dict[int, tuple] = {}  # parameter id -> (runs, RUN, spacing) of a sampled one
        self.started_optimizers: dict[int, int] = {}  # optimizer id -> its parameter count when w_0 was taken
        self.start_version = 0  # changes whenever start_params does: the digest batch's w_0 is stale then
        self.digest_batch: Optional[_DigestBatch] = None  # the samples of the steps whose norms are still to take
        self.sampled = [0, 0]  # elements in the digest samples, elements in the parameters
        self.exercised: dict[str, list[int]] = {}  # watched file -> lines that ran
        self.shim_notes: list[str] = []  # what the CUDA shim changed (dtype chosen for the CPU, ...)

    def event(self, name: str, detail: str) -> None:
        self.events[name] = self.events.get(name, 0) + 1
        if len(self.event_samples) < 20:
            self.event_samples.append(f"step {len(self.steps)}: {name}: {detail}")

    def to_json(self) -> dict:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        cuda_peak = None
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and not self.config.get("cuda_shim"):
            cuda_peak = torch.cuda.max_memory_allocated()
        _reduce_digests(self)
        for step in self.steps:
            _materialise(step)
        return {
            "mode": self.config["mode"],
            "status": self.status,
            "error": self.error,
            "exit_code": self.exit_code,
            "steps": self.steps,
            "events": self.events,
            "disabled_autocast": self.disabled_autocast,
            "phases": self.phases,
            "sampled": self.sampled,
            "through_steps": self.through_steps,
            "exercised": {f: sorted(lines) for f, lines in self.exercised.items()},
            "shim_notes": self.shim_notes,
            "event_samples": self.event_samples,
            "scalers_created": self.scalers_created,
            "scaler_sites": self.scaler_sites,
            "scalers_enabled": self.scalers_enabled,
            "flops": self.flops,
            "warnings": self.warnings,
            "step_times": self.step_times,
            "step_cpu_times": self.step_cpu_times,
            "step_own_times": self.step_own_times,
            "scale_history": self.scale_history,
            "skipped": self.skipped,
            "skip_keys": self.skip_keys,
            "compile_calls": self.compile_calls,
            "autocast_entered": self.autocast_entered,
            "peak_rss": peak,
            "peak_cuda": cuda_peak,
            "wall": time.perf_counter() - self.started,
        }


class Ledger:
    """The harness's own time (``account_overhead``, for bench/verify_overhead.py): a hook that
    ``_install`` puts on the training path runs on the ledger's clock, the script's and torch's
    code it wraps (the originals) off it, a hook inside an original on it again (the CUDA shim's
    and the child starters' wrappers are not on it: the benchmark runs neither). Per step, that is the overhead itself, without the noise of
    comparing two whole runs on a shared machine (5% run to run here). Wall time: perf_counter
    is a vDSO read, about 60 ns, and the ledger's own reads are counted as overhead."""

    def __init__(self):
        self.own = 0.0
        self.since: Optional[float] = None  # when the harness's code began running, while it runs

    def reading(self) -> float:
        """The own time so far, the running stretch included."""
        return self.own + (time.perf_counter() - self.since if self.since is not None else 0.0)

    def hook(self, function):
        """``function`` as harness code."""
        def on_the_clock(*args, **kwargs):
            if self.since is not None:  # already inside the harness's own code
                return function(*args, **kwargs)
            self.since = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.own += time.perf_counter() - self.since
                self.since = None

        return on_the_clock

    def original(self, function):
        """``function`` as the code the harness wraps: off the clock while it runs."""
        def off_the_clock(*args, **kwargs):
            if self.since is None:
                return function(*args, **kwargs)
            self.own += time.perf_counter() - self.since
            self.since = None
            try:
                return function(*args, **kwargs)
            finally:
                self.since = time.perf_counter()

        return off_the_clock


def _unchanged(function):
    return function


def _seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def _install(trace: Trace, torch) -> None:
    import torch.nn.utils
    import torch.nn.utils.clip_grad
    import torch.optim.optimizer as optim_module

    config = trace.config
    mode = config["mode"]
    limit = config["steps"]
    window = set(range(config.get("flop_window", [2, 4])[0], config.get("flop_window", [2, 4])[1]))
    scalers = weakref.WeakSet()
    # the enabled scalers that scaled a loss since their last update(), by id: a dict, not a WeakSet,
    # whose iteration costs ten times as much several times a step (held only until that update)
    pending_scalers: dict[int, Any] = {}
    state = {"in_scaler_step": 0, "opt_depth": 0, "mode_active": None, "scaler_steps": 0, "tracing": False}
    GradScaler = torch.amp.GradScaler
    ledger = trace.ledger = Ledger() if config.get("account_overhead") else None
    timed = ledger.hook if ledger else _unchanged  # what the harness installs
    untimed = ledger.original if ledger else _unchanged  # what it wraps

    # -- step accounting: iterations, grouped in phases (one per training loop) ---------------
    replay_skips = {tuple(key) for key in config.get("replay_skips") or []}  # the AMP run's [phase, step]
    phases_expected = max(1, int(config.get("phases_expected") or 1))
    max_through = int(config.get("max_through_steps", 2000))

    def optimizer_stepping(optimizer) -> None:
        """An optimizer step begins: it opens the next iteration when this optimizer already
        stepped in the current one, the scaler's update() closed it, or it steps in another
        training loop (a new phase); before the first step past a phase's limit the run ends
        (recorded and left from here: no `except:` can swallow it), unless a later training
        loop is still to come: then the steps run through, unrecorded, until it begins."""
        current = trace.current
        key = _phase_key(sys._getframe(1))
        if (current is None or current["closed"] or id(optimizer) in current["optimizer_ids"]
                or key != current["phase_key"]):
            if current is not None:
                close_iteration()
            phase = trace.phases[-1] if trace.phases else None
            if phase is None or phase["key"] != key:
                if phase is not None:
                    _close_phase(trace, torch)
                phase = {"key": key, "steps": 0, "through": 0, "autocast_entered": 0, "flops": {},
                         "scalers_stepped": 0}
                trace.phases.append(phase)
                _forget_starts(trace)  # w_0 of this phase: taken as its optimizers first step
            through = phase["steps"] >= limit
            if through and (len(trace.phases) >= phases_expected or trace.through_steps >= max_through):
                finish(trace, "stopped")
            trace.current = current = {
                "losses": [], "criterion": [], "backwards": 0, "skipped": False, "updates": 0,
                "optimizer_steps": 0, "optimizer_ids": set(), "closed": False, "phase_key": key,
                "phase": len(trace.phases) - 1, "index": phase["steps"] + phase["through"], "through": through,
                "grad": [], "clip": [],
            }
            _flop_window(None if through else phase["steps"])
        current["optimizer_ids"].add(id(optimizer))
        current["optimizer_steps"] += 1
        current["losses"] += trace.pending_losses
        current["criterion"] += trace.pending_criterion
        current["backwards"] += trace.pending_backwards
        trace.phases[-1]["autocast_entered"] += trace.pending_autocast
        trace.pending_losses, trace.pending_criterion, trace.pending_backwards = [], [], 0
        trace.pending_autocast = 0
        if not current["through"]:
            grad = trace.pending_grads.get(id(optimizer))
            if grad is None:  # no unscale_ or clip before the step: its gradients, unscaled if still scaled
                divisor = _pending_scale() if _scale_pending(optimizer) else 1.0
                grad = _gradient_norm(torch, _own_parameters(optimizer), divisor, trace.sample_geometry)
            if grad is not None:
                current["grad"].append(grad)
            current["clip"] += trace.pending_clips
            _remember_start(trace, torch, optimizer)
        trace.pending_grads.pop(id(optimizer), None)
        trace.pending_clips = []
        if not any(o is optimizer for o in trace.optimizers):
            trace.optimizers.append(optimizer)
            trace.parameters = None

    def close_iteration() -> None:
        _settle_skips()  # those of a scaler that did not update
        current = trace.current
        trace.current = None
        phase = trace.phases[current["phase"]]
        if current["through"]:
            phase["through"] += 1
            trace.through_steps += 1
            return
        _clock_step(trace, counted=state["mode_active"] is None)
        for name in ("optimizer_ids", "closed", "phase_key", "through"):
            current.pop(name)
        current["params"] = parameter_digest(trace)
        if phase["steps"] == 0:
            _name_tensors(trace, torch)
        if current["skipped"]:
            trace.skipped.append(len(trace.steps))
        trace.steps.append(current)
        phase["steps"] += 1
        _report_progress(trace)

    trace.close_iteration = close_iteration

    def _flop_window(index) -> None:
        if config.get("count_flops", True) is False:
            return
        active = state["mode_active"]
        if index in window and active is None:
            counter = _FlopCounter(torch, trace)
            counter.__enter__()
            state["mode_active"] = counter
        elif index not in window and active is not None:
            active.__exit__(None, None, None)
            state["mode_active"] = None

    # -- optimizer hooks (outermost call only: subclasses calling super().step() fire twice) ----
    def pre_hook(optimizer, args, kwargs):
        state["opt_depth"] += 1
        if state["opt_depth"] == 1 and not state["in_scaler_step"]:
            optimizer_stepping(optimizer)
            if _scale_pending(optimizer):
                trace.event("step_bypasses_scaler", f"{type(optimizer).__name__}.step() on scaled gradients")
            else:
                unscaled_by = _unscaled_by(optimizer)
                if unscaled_by is not None:
                    unscaled_by._ampfix_direct_step = True  # its update() then has no scaler.step: this is why
                    trace.event("step_after_unscale", f"{type(optimizer).__name__}.step() after scaler.unscale_()")
        return None

    def _unscaled_by(optimizer):
        """The enabled scaler that unscaled this optimizer's gradients in the current step."""
        for scaler in pending_scalers.values():
            stage = _stage(scaler, optimizer)
            if stage is not None and stage.name == "UNSCALED":
                return scaler
        return None

    def post_hook(optimizer, args, kwargs):
        state["opt_depth"] -= 1

    optim_module.register_optimizer_step_pre_hook(timed(pre_hook))
    optim_module.register_optimizer_step_post_hook(timed(post_hook))

    def _stage(scaler, optimizer):
        states = getattr(scaler, "_per_optimizer_states", None)
        if states is None:
            return None
        entry = states.get(id(optimizer))  # never [] : a defaultdict would insert
        return entry.get("stage") if entry else None

    def _scale_pending(optimizer=None, params=None) -> bool:
        for scaler in pending_scalers.values():
            if optimizer is not None:
                stage = _stage(scaler, optimizer)
                if stage is None or stage.name == "READY":
                    return True
                continue
            stages = getattr(scaler, "_per_optimizer_states", {})
            if stages and all(e.get("stage") is not None and e["stage"].name != "READY" for e in stages.values()):
                continue  # every optimizer this scaler knows is unscaled already: no mapping needed
            optimizers = _optimizers_of(params)
            if not optimizers:
                return True
            if any((_stage(scaler, o) is None or _stage(scaler, o).name == "READY") for o in optimizers):
                return True
        return False

    def _pending_scale() -> float:
        return next((s._ampfix_scale for s in pending_scalers.values() if getattr(s, "_ampfix_scale", None)), 1.0)

    module_init = untimed(torch.nn.Module.__init__)

    def registering_init(self, *args, **kwargs):
        module_init(self, *args, **kwargs)
        _MODULES.add(self)  # for the names of the tensors in the report (cheaper than a heap scan)

    torch.nn.Module.__init__ = timed(registering_init)

    live_optimizers = weakref.WeakSet()
    original_optimizer_init = untimed(torch.optim.Optimizer.__init__)
    original_add_param_group = untimed(torch.optim.Optimizer.add_param_group)
    # the last answer of _optimizers_of (a clip asks every step), valid while no group was added
    holders = {"params": None, "groups_added": -1, "optimizers": []}
    state["groups_added"] = 0

    def optimizer_init(self, *args, **kwargs):
        original_optimizer_init(self, *args, **kwargs)
        live_optimizers.add(self)
        state["groups_added"] += 1

    def add_param_group(self, *args, **kwargs):
        state["groups_added"] += 1
        return original_add_param_group(self, *args, **kwargs)

    torch.optim.Optimizer.__init__ = timed(optimizer_init)
    torch.optim.Optimizer.add_param_group = timed(add_param_group)

    def _optimizers_of(params):
        """The live optimizers holding any of ``params``: looked for again only when the
        parameters differ from the last call's or a parameter group was added since."""
        if params is None:
            return []
        if isinstance(params, torch.Tensor):
            params = [params]
        key = tuple(map(id, params))
        if key != holders["params"] or holders["groups_added"] != state["groups_added"]:
            ids = set(key)
            holders["optimizers"] = [o for o in list(live_optimizers)
                                     if any(id(p) in ids for g in o.param_groups for p in g["params"])]
            holders["params"], holders["groups_added"] = key, state["groups_added"]
        return holders["optimizers"]

    # -- GradScaler ------------------------------------------------------------------------
    original = {
        name: untimed(getattr(GradScaler, name)) for name in ("__init__", "scale", "unscale_", "step", "update")
    }
    own_methods: dict[tuple, Any] = {}  # (a GradScaler subclass, method name) -> its own override

    def _own(scaler, name: str):
        """The method the scaler's class really runs: a subclass's override (ShardedGradScaler's
        ``scale``, ``unscale_``, ``update``) or GradScaler's."""
        for cls in type(scaler).__mro__:
            found = own_methods.get((cls, name))
            if found is not None:
                return found
            if cls is GradScaler:
                break
        return original[name]

    def _hook_subclass(cls) -> None:
        """Route a GradScaler subclass's overrides through the same bookkeeping (once per class).
        An override that calls ``super()`` reaches GradScaler's own method, not the hook again."""
        for klass in cls.__mro__:
            if klass is GradScaler or not issubclass(klass, GradScaler):
                break
            for name in ("scale", "unscale_", "step", "update"):
                method = klass.__dict__.get(name)
                if method is not None and (klass, name) not in own_methods:
                    own_methods[(klass, name)] = untimed(method)
                    setattr(klass, name, hooks[name])

    def scaler_init(self, *args, **kwargs):
        if mode == "fp32":
            kwargs["enabled"] = False
            if len(args) > 5:
                args = args[:5]
        if config.get("cuda_shim"):
            args, kwargs = _shim_scaler_args(args, kwargs)
        original["__init__"](self, *args, **kwargs)
        if type(self) is not GradScaler:
            _hook_subclass(type(self))
        trace.scalers_created += 1
        caller = sys._getframe(1)
        while caller is not None and _not_user_code(caller.f_code.co_filename):
            caller = caller.f_back
        site = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}" if caller else "?"
        trace.scaler_sites[site] = trace.scaler_sites.get(site, 0) + 1
        trace.scalers_enabled += bool(self.is_enabled())
        self._ampfix_last_step = self._ampfix_last_update = -1  # step index of the last step / update
        scalers.add(self)

    def scaler_scale(self, outputs):
        result = _own_once(self, "scale", outputs)
        if self.is_enabled():
            if getattr(self, "_ampfix_scale", None) is None:
                self._ampfix_scale = float(self.get_scale())  # then refreshed once per update()
            pending_scalers[id(self)] = self
            if isinstance(result, torch.Tensor):
                result._ampfix_scaled = True  # tensors take attributes; a WeakSet would compare values
        return result

    def scaler_unscale(self, optimizer):
        # no pass over the gradients here: the clip that follows returns their norm, else the
        # step measures them (unscaled by then)
        return _own_once(self, "unscale_", optimizer)

    def scaler_step(self, optimizer, *args, **kwargs):
        optimizer_stepping(optimizer)
        state["scaler_steps"] += 1
        if self.is_enabled():
            trace.phases[-1]["scalers_stepped"] += 1
        self._ampfix_last_step = state["scaler_steps"]
        current = trace.current
        key = (current["phase"], current["index"], current["optimizer_steps"] - 1)  # which step of the iteration
        if key in replay_skips:
            # the fp32 reference skips where the AMP run skipped (optimizer by optimizer), so both stay aligned
            current["skipped"] = True
            return None
        state["in_scaler_step"] += 1
        try:
            result = _own_once(self, "step", optimizer, *args, **kwargs)
        finally:
            state["in_scaler_step"] -= 1
        if self.is_enabled():
            # whether it skipped is read later, and only where it can have (see _settle_skips)
            entry = getattr(self, "_per_optimizer_states", {}).get(id(optimizer))
            unsettled.append((self, key, current, entry))
        return result

    unsettled: list[tuple] = []  # (scaler, step key, iteration, its state for the optimizer) per scaler.step

    def _settle_skips(scaler=None, read: bool = True) -> None:
        """Mark the scaler steps that were skipped (those of ``scaler``, else all): each one's inf
        checks, kept from before update() replaced them. ``read=False`` (the update did not back
        the scale off, so no step since the last one found an inf) settles them unread."""
        keep = []
        for entry in unsettled:
            owner, key, iteration, optimizer_state = entry
            if scaler is not None and owner is not scaler:
                keep.append(entry)
            elif read and _found_inf(optimizer_state):
                iteration["skipped"] = True
                trace.skip_keys.append(list(key))
        unsettled[:] = keep

    def _found_inf(optimizer_state) -> bool:
        found = optimizer_state.get("found_inf_per_device") if optimizer_state else None
        return bool(found) and sum(float(v) for v in found.values()) > 0

    def scaler_update(self, *args, **kwargs):
        direct, self._ampfix_direct_step = getattr(self, "_ampfix_direct_step", False), False
        if self.is_enabled() and self._ampfix_last_step == self._ampfix_last_update and not direct:
            trace.event("update_without_step", "scaler.update() with no scaler.step() since the last update")
        self._ampfix_last_update = self._ampfix_last_step
        before = getattr(self, "_ampfix_scale", None)
        result = _own_once(self, "update", *args, **kwargs)
        pending_scalers.pop(id(self), None)
        if self.is_enabled():
            after = float(self.get_scale())
            self._ampfix_scale = after
            trace.scale_history.append(after)
            if trace.current is not None:
                trace.current["scale"] = after
            # only an inf/NaN step makes the scale back off (a new scale given by hand says nothing)
            backed_off = before is not None and after < before
            if backed_off and trace.current is not None and not args and not kwargs:
                trace.current["skipped"] = True
            _settle_skips(self, read=backed_off or bool(args or kwargs))
        if trace.current is not None:
            trace.current["updates"] += 1
            trace.current["closed"] = True  # the update ends the iteration
        elif trace.steps:
            trace.steps[-1]["updates"] += 1  # a second update after the iteration closed
        else:
            trace.event("update_before_step", "scaler.update() before any optimizer step")
        return result

    def _own_once(scaler, name: str, *args, **kwargs):
        """Run the scaler's own ``name``; a ``super()`` call from an override, back into the
        hooked GradScaler method, then runs GradScaler's original without counting again."""
        if not own_methods:  # no subclass overrides a method: no super() call can come back
            return original[name](scaler, *args, **kwargs)
        running = scaler.__dict__.setdefault("_ampfix_running", set())
        running.add(name)
        try:
            return _own(scaler, name)(scaler, *args, **kwargs)
        finally:
            running.discard(name)

    def _guarded(name: str, hook):
        def method(self, *args, **kwargs):
            if own_methods and name in self.__dict__.get("_ampfix_running", ()):
                return original[name](self, *args, **kwargs)  # an override's super() call
            return hook(self, *args, **kwargs)

        return method

    hooks = {
        "scale": timed(_guarded("scale", scaler_scale)),
        "unscale_": timed(_guarded("unscale_", scaler_unscale)),
        "step": timed(_guarded("step", scaler_step)),
        "update": timed(_guarded("update", scaler_update)),
    }
    GradScaler.__init__ = timed(scaler_init)
    for name, hook in hooks.items():
        setattr(GradScaler, name, hook)

    # -- clipping on still-scaled gradients ----------------------------------------------------
    listed = untimed(list)
    for module in (torch.nn.utils, torch.nn.utils.clip_grad):
        for name in ("clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"):
            function = getattr(module, name, None)
            if function is None or getattr(function, "_ampfix", False):
                continue

            def clip(*args, _function=untimed(function), _name=name, **kwargs):
                params = args[0] if args else kwargs.get("parameters")
                if _name != "get_total_norm":
                    # the script's own work, off the clock: the clip would list the generator itself
                    params = listed(params) if not isinstance(params, torch.Tensor) else [params]
                    args = (params, *args[1:]) if args else args
                    if not args:
                        kwargs["parameters"] = params
                    scaled = _scale_pending(params=params)
                    if scaled:
                        trace.event("clip_on_scaled_gradients", f"{_name} before scaler.unscale_()")
                result = _function(*args, **kwargs)
                if _name == "clip_grad_norm_" and isinstance(result, torch.Tensor):
                    norm = result.detach()
                    trace.pending_clips.append(norm)  # the total norm it clipped (before clipping)
                    divisor = _pending_scale() if scaled else 1.0
                    for optimizer in _optimizers_of(params):
                        trace.pending_grads.setdefault(id(optimizer), (norm, divisor))
                return result

            clip = timed(clip)
            clip._ampfix = True
            setattr(module, name, clip)

    # -- backward (Tensor.backward calls torch.autograd.backward: one hook sees both) ----------
    original_backward = untimed(torch.autograd.backward)

    def backward(tensors, *args, **kwargs):
        trace.pending_backwards += 1
        first = tensors[0] if isinstance(tensors, (list, tuple)) and tensors else tensors
        if isinstance(first, torch.Tensor):
            scaled = getattr(first, "_ampfix_scaled", False)
            if not scaled and pending_scalers:
                trace.event("discarded_scaled_loss", "backward of a loss not returned by scaler.scale()")
            if not trace.pending_criterion:  # a step reports this value only where no loss function ran
                try:
                    value = first.item() if first.numel() == 1 else None
                except Exception:
                    value = None
                scale = next((s._ampfix_scale for s in pending_scalers.values()), None) if scaled else None
                if value is not None and scale:
                    value /= scale
                if value is not None:
                    trace.pending_losses.append(value)
        return original_backward(tensors, *args, **kwargs)

    torch.autograd.backward = timed(backward)

    # -- the criterion's loss (outermost loss call: a loss module calls its functional form) ---
    depth = {"loss": 0}

    def recording(function):
        function = untimed(function)

        def call(*args, **kwargs):
            depth["loss"] += 1
            try:
                out = function(*args, **kwargs)
            finally:
                depth["loss"] -= 1
            if depth["loss"] == 0 and isinstance(out, torch.Tensor) and out.numel() == 1:
                try:
                    trace.pending_criterion.append(out.item())  # a Python float, whatever the dtype
                except Exception:
                    pass
            return out

        call = timed(call)
        call._ampfix = True
        return call

    loss_call = torch.nn.modules.loss._Loss.__call__
    torch.nn.modules.loss._Loss.__call__ = recording(loss_call)
    import torch.nn.functional as functional

    for name in _LOSS_FUNCTIONS:
        function = getattr(functional, name, None)
        if function is not None and not getattr(function, "_ampfix", False):
            setattr(functional, name, recording(function))

    # -- torch.compile is disabled for the runs (TORCH_COMPILE_DISABLE): count what was asked ---
    compile_function = untimed(torch.compile)

    def counted_compile(*args, **kwargs):
        trace.compile_calls += 1
        return compile_function(*args, **kwargs)

    torch.compile = timed(counted_compile)

    # -- precision overrides ---------------------------------------------------------------------
    autocast_init = untimed(torch.amp.autocast.__init__)

    def forced_autocast_init(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        if enabled:
            trace.autocast_entered += 1
            trace.pending_autocast += 1
        if mode != "fp32" and not enabled:
            # the script's own choice (``enabled=device.type == "cuda"`` on a CPU): reported as such
            trace.disabled_autocast[str(device_type)] = trace.disabled_autocast.get(str(device_type), 0) + 1
        if mode == "fp32":
            enabled = False
        if config.get("cuda_shim") and str(device_type).startswith("cuda"):
            device_type, dtype = "cpu", shim_dtype(torch, dtype)
        autocast_init(self, device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    torch.amp.autocast.__init__ = timed(forced_autocast_init)
    _install_spawn(trace, torch)
    if config.get("cuda_shim"):
        _install_cuda_shim(torch, trace)
    _start_line_tracing(trace, state)


def _install_spawn(trace: Trace, torch) -> None:
    """``torch.multiprocessing.spawn`` children run the trainer: each gets the harness (and the
    shim) before its function runs, and writes its own trace; the parent, which takes no step
    itself, reports child 0's (see ``finish``)."""
    import functools

    import torch.multiprocessing

    spawn_module = sys.modules["torch.multiprocessing.spawn"]  # the attribute `spawn` is the function
    start_processes = spawn_module.start_processes

    def start(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
        import importlib

        harness = importlib.import_module("ampfix.verify.harness")  # by name: this module may be __main__
        trace.config["spawned"] = max(int(trace.config.get("spawned") or 0), int(nprocs))
        wrapped = functools.partial(harness._spawned_child, fn, _child_config(trace))
        return start_processes(wrapped, args, nprocs, join, daemon, start_method)

    spawn_module.start_processes = start
    torch.multiprocessing.start_processes = start
    _install_process_start(trace)


def _install_process_start(trace: Trace) -> None:
    """``multiprocessing.Process`` trainers (Hogwild: ``mp.Process(target=train, ...)``): a child
    started by spawn or forkserver gets the harness like an ``mp.spawn`` child. A forked child
    would inherit the parent's patched state half-way, so it is counted, not followed, and the
    verdict says why nothing was seen. DataLoader workers and the library's own processes are
    left alone."""
    import functools
    import multiprocessing
    import multiprocessing.process

    base_start = multiprocessing.process.BaseProcess.start

    def start(self):
        target = getattr(self, "_target", None)
        module = getattr(target, "__module__", "") or ""
        if target is None or module.startswith(("torch.", "multiprocessing", "ampfix.")):
            return base_start(self)
        method = getattr(type(self), "_start_method", None) or multiprocessing.get_start_method(allow_none=True)
        if method in ("spawn", "forkserver"):
            import importlib

            harness = importlib.import_module("ampfix.verify.harness")  # by name: this module may be __main__
            index = int(trace.config.get("spawned") or 0)
            trace.config["spawned"] = index + 1
            self._target = functools.partial(harness._process_child, target, _child_config(trace), index)
        else:
            trace.config["forked_trainers"] = int(trace.config.get("forked_trainers") or 0) + 1
        return base_start(self)

    multiprocessing.process.BaseProcess.start = start


def _child_config(trace: Trace) -> dict:
    """A child trainer's configuration: the parent's, with the layers the parent's model was
    built from (the shim's dtype choice: mnist_hogwild builds its CNN before starting the child)."""
    return dict(trace.config, shim_layers=_SHIM.get("found", {}).get("kind"))


def _process_child(fn, config: dict, index: int, *args, **kwargs) -> None:
    """In a ``multiprocessing.Process`` child: the harness around ``fn(*args, **kwargs)``."""
    _spawned_child(lambda _index: fn(*args, **kwargs), config, index)


def _spawned_child(fn, config: dict, index: int, *args) -> None:
    """In a spawned child: the harness around ``fn(index, *args)``; never returns."""
    config = dict(config, trace=f"{config['trace']}.spawn{index}", spawned=0)
    if index:
        config["progress"] = None
    trace = Trace(config)
    try:
        _capture_warnings(trace)
        import torch

        _seed_everything(config["seed"], config["threads"])
        _install(trace, torch)
        fn(index, *args)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            finish(trace, "error", f"SystemExit({exc.code!r})")
    except BaseException as exc:  # noqa: BLE001 - the trainer's failure is the data
        finish(trace, "error", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:]))
    finish(trace, "finished")


def _adopt_spawned(trace: Trace, document: dict) -> dict:
    """The parent of spawned trainers reports child 0's trace (the first failing child's status)."""
    children = []
    for index in range(int(trace.config.get("spawned") or 0)):
        try:
            with open(f"{trace.config['trace']}.spawn{index}", encoding="utf-8") as handle:
                children.append(json.load(handle))
        except (OSError, ValueError):
            children.append({"status": "error", "error": f"spawned child {index} wrote no trace"})
    if not children or document["steps"]:
        return document
    adopted = dict(children[0]) if "steps" in children[0] else dict(document, **children[0])
    failed = next((c for c in children if c.get("status") not in ("stopped", "finished")), None)
    if failed is not None:
        adopted.update(status=failed["status"], error=failed.get("error"))
    elif document["status"] not in ("stopped", "finished"):
        adopted.update(status=document["status"], error=document.get("error"))
    adopted["spawned"] = len(children)
    return adopted


def _clock_step(trace: Trace, counted: bool) -> None:
    now, cpu = time.perf_counter(), time.thread_time()
    own = trace.ledger.reading() if trace.ledger is not None else 0.0  # its clock runs: counted so far
    if trace.last_step_end is not None and counted:
        trace.step_times.append(now - trace.last_step_end)
        trace.step_cpu_times.append(cpu - trace.last_step_cpu)
        if trace.ledger is not None:
            trace.step_own_times.append(own - trace.last_own)
    trace.last_step_end, trace.last_step_cpu, trace.last_own = now, cpu, own


_LOSS_FUNCTIONS = (
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "kl_div", "poisson_nll_loss", "gaussian_nll_loss", "cosine_embedding_loss",
    "margin_ranking_loss", "hinge_embedding_loss", "soft_margin_loss", "multilabel_soft_margin_loss",
    "triplet_margin_loss", "ctc_loss",
)


def parameter_digest(trace: Trace) -> Optional[dict]:
    """A cheap fingerprint of every parameter the optimizers hold, per tensor: the norm of each
    (``norm``) and of its update since its phase began (``update``, w_t - w_0), over a fixed
    sample of each tensor (see ``_sample``: the same elements in every run, so two runs compare
    exactly on them). Two runs that train alike have close updates tensor by tensor; one global
    norm would hide an update a thousand times too small.

    A step pays for one gather: the samples copied (two ``cat`` calls); their norms are taken
    later, many steps at once (``_DigestBatch.reduce``), off the training path."""
    torch = sys.modules["torch"]
    params = _parameters(trace, torch)
    if not params:
        return None
    batch = trace.digest_batch
    if batch is None or batch.params is not params or batch.start_version != trace.start_version:
        _reduce_digests(trace)
        batch = trace.digest_batch = _DigestBatch.of(trace, torch, params)
    digest: dict = {"count": len(params)}
    if batch is None:  # parameters on several devices, or complex: tensor by tensor, at once
        digest["norm"], digest["update"] = _digest_now(trace, torch, params)
        return digest
    batch.rows.append((digest, batch.gather(torch)))
    if len(batch.rows) * batch.width >= _BATCH_ELEMENTS:
        batch.reduce(torch)
    return digest


_BATCH_ELEMENTS = 1 << 24  # sampled elements held before their norms are taken (64 MB in float32)


class _DigestBatch:
    """The copies of the digest samples of the steps since the last reduction, with what
    the reduction needs: which tensor each element comes from, and w_0 laid out alike. The
    samples of the large tensors (all of shape (RUNS, RUN)) are gathered by one ``cat``, those
    of the small ones by a second, together with any non-contiguous tensor, flattened."""

    def __init__(self, params, start_version, runs, rest, segments, starts, started):
        self.params, self.start_version = params, start_version
        self.runs = runs  # the live views, in the order of the flat copy
        # flat views of the small tensors, made once; a non-contiguous one is flattened (copied) per step
        self.rest = [v.view(-1) if v.is_contiguous() else v for v in rest]
        self.rest_all_flat = all(v.is_contiguous() for v in rest)
        self.width = int(segments.numel())
        self.segments = segments  # element of the flat copy -> index of its tensor in params
        self.starts = starts  # w_0's samples, laid out alike (zeros where a tensor has no w_0 yet)
        self.started = started  # 1.0 per tensor with a w_0, else 0.0 (its update is reported as 0)
        self.rows: list[tuple[dict, Any]] = []

    @classmethod
    def of(cls, trace: Trace, torch, params: list) -> Optional["_DigestBatch"]:
        if len({p.device for p in params}) != 1 or any(p.is_complex() for p in params):
            return None
        samples = [(i, _sample(trace, p)) for i, p in enumerate(params)]
        in_runs = [id(p) in trace.sample_geometry for p in params]
        ordered = [(i, v) for i, v in samples if in_runs[i]] + [(i, v) for i, v in samples if not in_runs[i]]
        device = params[0].device
        with torch.no_grad():
            lengths = torch.tensor([v.numel() for _, v in ordered], device=device)
            owners = torch.tensor([i for i, _ in ordered], device=device)
            segments = torch.repeat_interleave(owners, lengths)
            starts = [trace.start_params.get(id(params[i])) for i, _ in ordered]
            flat_starts = torch.cat([(s if s is not None else torch.zeros_like(v)).float().reshape(-1)
                                     for s, (_, v) in zip(starts, ordered)])
            started = torch.tensor([float(id(p) in trace.start_params) for p in params], device=device)
        runs = [v for i, v in ordered if in_runs[i]]
        rest = [v for i, v in ordered if not in_runs[i]]
        return cls(params, trace.start_version, runs, rest, segments, flat_starts, started)

    def gather(self, torch) -> tuple:
        """This step's samples, copied: the runs into one tensor, the rest into another."""
        with torch.no_grad():
            runs = torch.cat(self.runs) if self.runs else None
            flat = self.rest if self.rest_all_flat else [v.reshape(-1) for v in self.rest]
            rest = torch.cat(flat) if flat else None
        return runs, rest

    def reduce(self, torch) -> None:
        """Every held step's per-tensor norms, in one pass over all of them (floats from here)."""
        if not self.rows:
            return
        with torch.no_grad():
            parts = [torch.stack([row[i] for _, row in self.rows]).reshape(len(self.rows), -1)
                     for i in (0, 1) if self.rows[0][1][i] is not None]
            values = torch.cat(parts, dim=1).float()  # a row per step, laid out as segments says
            shape = (len(self.rows), len(self.params))
            norms = torch.zeros(shape, device=values.device).index_add_(1, self.segments, values * values).sqrt()
            moved = values - self.starts
            updates = torch.zeros(shape, device=values.device).index_add_(1, self.segments, moved * moved).sqrt()
            updates *= self.started
        for (digest, _), norm, update in zip(self.rows, norms.tolist(), updates.tolist()):
            digest["norm"], digest["update"] = norm, update
        self.rows.clear()


def _reduce_digests(trace: Trace) -> None:
    if trace.digest_batch is not None:
        trace.digest_batch.reduce(sys.modules["torch"])


def _digest_now(trace: Trace, torch, params: list) -> tuple[list, list]:
    samples = [_sample(trace, p) for p in params]
    with torch.no_grad():
        norms = torch._foreach_norm(samples)
        starts = [trace.start_params.get(id(p)) for p in params]
        updates = [torch.linalg.vector_norm(v - s) if s is not None else torch.zeros(()) for v, s in zip(samples, starts)]
    return norms, updates


SAMPLE = 4096  # elements per tensor in the digest: its cost stays small next to a step
RUN = 64  # of them contiguous: a run of 64 reads 4 cache lines where 64 strided elements read 64


def _sample(trace: Trace, p):
    """The digest's view of a parameter (a live view: the optimizer updates in place): all of a
    tensor of up to SAMPLE elements, else SAMPLE // RUN runs of RUN contiguous elements, evenly
    spaced, as a (runs, RUN) view. Right after a step the parameters are out of the cache, and a
    strided read misses on every element; the runs cost a fraction of that. Their spacing is
    coprime with a row's length, so the runs start at columns spread over the row."""
    view = trace.sample_views.get(id(p))
    if view is None:
        view = p.detach()
        geometry = _runs_of(p)
        if geometry is not None:
            view = _runs_view(view, geometry)
            trace.sample_geometry[id(p)] = geometry
        trace.sample_views[id(p)] = view
        trace.sampled[0] += view.numel()
        trace.sampled[1] += p.numel()
    return view


def _runs_of(p) -> Optional[tuple[int, int, int]]:
    """(runs, RUN, spacing) of a large contiguous tensor's sample, else None (all of it)."""
    if p.numel() <= SAMPLE or not p.is_contiguous():
        return None
    runs = SAMPLE // RUN
    spacing = (p.numel() - RUN) // (runs - 1)
    row = p.shape[-1] if p.dim() > 1 else 0
    while row and spacing > RUN and math.gcd(spacing, row) != 1:
        spacing -= 1  # smaller keeps the last run inside the tensor
    return runs, RUN, spacing


def _sampled_gradient(grad, geometry: Optional[tuple]):
    """A gradient sampled as its parameter is (the same elements)."""
    if geometry is None or not grad.is_contiguous():
        return grad
    return _runs_view(grad, geometry)


def _runs_view(tensor, geometry: tuple):
    """The (runs, RUN) view of a contiguous tensor that ``geometry`` (see ``_runs_of``) describes."""
    runs, run, spacing = geometry
    return tensor.view(-1).as_strided((runs, run), (spacing, 1))


def _parameters(trace: Trace, torch) -> list:
    """The distinct parameters of the optimizers, listed again only when their groups change."""
    key = tuple((id(o), len(o.param_groups), sum(len(g["params"]) for g in o.param_groups)) for o in trace.optimizers)
    cached = trace.parameters
    if cached is None or cached[0] != key:
        seen, params = set(), []
        for optimizer in trace.optimizers:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if isinstance(p, torch.Tensor) and id(p) not in seen and p.numel():
                        seen.add(id(p))
                        params.append(p)
        cached = trace.parameters = (key, params)
    return cached[1]


def _close_phase(trace: Trace, torch) -> None:
    """A fresh list of optimizers for the next phase (the tensors of a phase are its own)."""
    _name_tensors(trace, torch)
    trace.optimizers, trace.parameters = [], None
    trace.sample_views.clear()
    trace.sample_geometry.clear()


def _name_tensors(trace: Trace, torch) -> None:
    """The phase's tensors by name, for the report: taken at its first step, while the modules
    are alive (a finished script's globals are gone)."""
    phase = trace.phases[-1]
    if "tensors" in phase:
        return
    try:
        phase["tensors"] = _names(_parameters(trace, torch), torch)
    except Exception:  # names are for people; a failure to find them must not stop the run
        phase["tensors"] = []


def _names(params: list, torch) -> list[str]:
    """Each parameter's name in the largest module that holds it (among the modules the script
    built), else its shape."""
    wanted = {id(p): i for i, p in enumerate(params)}
    names = [f"#{i} {tuple(p.shape)}" for i, p in enumerate(params)]
    modules = list(_MODULES)
    modules.sort(key=lambda m: -sum(1 for _ in m.parameters()))
    named = set()
    for module in modules[:50]:
        for name, p in module.named_parameters():
            index = wanted.get(id(p))
            if index is not None and index not in named:
                named.add(index)
                names[index] = name
        if len(named) == len(params):
            break
    return names


def _remember_start(trace: Trace, torch, optimizer) -> None:
    """w_0 of the optimizer's parameters (of their digest samples), copied before their first
    step in this phase (looked for again only when the optimizer's groups change)."""
    size = sum(len(g["params"]) for g in optimizer.param_groups)
    if trace.started_optimizers.get(id(optimizer)) == size:
        return
    trace.started_optimizers[id(optimizer)] = size
    missing = [p for p in _own_parameters(optimizer) if id(p) not in trace.start_params]
    if missing:
        with torch.no_grad():
            copies = torch._foreach_add([_sample(trace, p) for p in missing], 0)  # one fused copy
            for p, copy in zip(missing, copies):
                trace.start_params[id(p)] = copy
        trace.start_version += 1


def _forget_starts(trace: Trace) -> None:
    trace.start_params.clear()
    trace.started_optimizers.clear()
    trace.start_version += 1


def _own_parameters(optimizer) -> list:
    torch = sys.modules["torch"]
    return [p for g in optimizer.param_groups for p in g["params"] if isinstance(p, torch.Tensor) and p.numel()]


def _gradient_norm(torch, params: list, divisor: float, geometry: Optional[dict] = None) -> Optional[tuple]:
    """(total gradient norm as a tensor, the loss scale it still carries): no sync here. Over
    the digest's sample of each large tensor where it is known (a constant factor, the effect a
    prediction measures, scales the sample as it scales the whole)."""
    geometry = geometry or {}
    grads = [_sampled_gradient(p.grad, geometry.get(id(p))) for p in params if p.grad is not None]
    if not grads:
        return None
    with torch.no_grad():
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float()), float(divisor)


def _materialise(step: dict) -> None:
    """Tensors of a recorded step become floats (once, when the trace is written)."""
    digest = step.get("params")
    if digest is not None:
        digest["tensors"] = [float(n) for n in digest.pop("norm")]
        digest["updates"] = [float(u) for u in digest.pop("update")]
        digest["norm"] = math.sqrt(sum(n * n for n in digest["tensors"]))
        digest["update"] = math.sqrt(sum(u * u for u in digest["updates"]))
    step["grad"] = [float(g) / d for g, d in step.get("grad", [])]  # unscaled, before clipping
    step["clip"] = [float(c) for c in step.get("clip", [])]


_TORCH_DIR = None
_MODULES = weakref.WeakSet()  # every torch.nn.Module the script built


def _not_user_code(filename: str) -> bool:
    """Frames of the harness, of torch and of the standard library: not where a loop is
    (answered once per file: every step walks these frames)."""
    found = _NOT_USER.get(filename)
    if found is None:
        found = _NOT_USER[filename] = _is_not_user_code(filename)
    return found


_NOT_USER: dict[str, bool] = {}


def _is_not_user_code(filename: str) -> bool:
    global _TORCH_DIR
    if _TORCH_DIR is None:
        torch = sys.modules.get("torch")
        _TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep if torch is not None else "\0"
    return (filename == __file__ or filename.startswith(_TORCH_DIR) or filename.startswith("<")
            or filename.startswith(_STDLIB) or os.path.basename(filename) == "typing_extensions.py")  # @deprecated


_STDLIB = os.path.dirname(os.__file__) + os.sep
_LOOPS: dict[str, list] = {}  # file -> its (first line, last line) of every for/while loop
# (id(code), line) -> (code, phase key): by identity, since hashing a code object hashes all of
# its constants, nested functions' code included (17 us for a module of 1,500 lines, every step);
# the code is held, so its id is not reused
_KEYS: dict[tuple, tuple] = {}


def _phase_key(frame) -> str:
    """The training loop a step belongs to: the innermost for/while loop of user code around
    the call that steps (``file:line`` of the loop), walking out through helper functions; a
    step outside any loop of user code is keyed by its outermost user call site."""
    while frame is not None and _not_user_code(frame.f_code.co_filename):
        frame = frame.f_back
    last = None
    while frame is not None:
        code, line = frame.f_code, frame.f_lineno
        if not _not_user_code(code.co_filename):
            cached = _KEYS.get((id(code), line))
            if cached is not None:
                return cached[1]
            loop = _innermost_loop(code.co_filename, line, code.co_firstlineno)
            if loop is not None:
                key = f"{os.path.basename(code.co_filename)}:{loop}"
                _KEYS[(id(code), line)] = (code, key)
                return key
            last = f"{os.path.basename(code.co_filename)}:{line}"
        frame = frame.f_back
    return last or "?"


def _innermost_loop(filename: str, line: int, first_line: int) -> Optional[int]:
    loops = _LOOPS.get(filename)
    if loops is None:
        import ast

        try:
            with open(filename, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
            loops = [(n.lineno, n.end_lineno) for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.AsyncFor))]
        except (OSError, SyntaxError, ValueError):
            loops = []
        _LOOPS[filename] = loops
    inside = [(start, end) for start, end in loops if start <= line <= end and start >= first_line]
    return max(inside)[0] if inside else None


def _start_line_tracing(trace: Trace, state: dict) -> None:
    """Which of the watched lines (those a fix flags or edits) run: a tracer on the watched
    files' frames only, until every watched line ran (a fix inside the loop: at the first
    step). Only the original run watches lines; its timing is not the one reported."""
    watched = {os.path.abspath(f): set(lines) for f, lines in (trace.config.get("watch_lines") or {}).items()}
    if not watched:
        return
    seen = {f: set() for f in watched}
    left = {"count": sum(len(lines) for lines in watched.values())}

    def local(frame, event, arg):
        if event == "line":
            path = frame.f_code.co_filename
            if frame.f_lineno in watched[path] and frame.f_lineno not in seen[path]:
                seen[path].add(frame.f_lineno)
                left["count"] -= 1
                if left["count"] == 0:
                    _stop_line_tracing(trace, state)
                    return None
        return local

    def global_trace(frame, event, arg):
        return local if frame.f_code.co_filename in watched else None

    trace.exercised = seen
    state["tracing"] = True
    sys.settrace(global_trace)


def _stop_line_tracing(trace: Trace, state: dict) -> None:
    sys.settrace(None)
    frame = sys._getframe(1)
    while frame is not None:  # frames already running keep a local tracer: drop it
        frame.f_trace = None
        frame = frame.f_back
    state["tracing"] = False


def _report_progress(trace: Trace) -> None:
    """The step reached, for the runner's counter and for a run killed at the timeout: rewritten
    in place, fixed width, on a descriptor opened once (a few microseconds a step)."""
    path = trace.config.get("progress")
    if not path:
        return
    try:
        if trace.progress_fd is None:
            trace.progress_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        line = f"{len(trace.steps):>10} {time.perf_counter() - trace.started:>14.3f}\n".encode()
        os.pwrite(trace.progress_fd, line, 0)
    except OSError:
        trace.config["progress"] = None


def finish(trace: Trace, status: str, error: Optional[str] = None) -> None:
    """Record the run and leave the process at once (DataLoader workers and stray threads
    cannot hang it, a script's `except:` cannot swallow the stop)."""
    try:
        if trace.current is not None and trace.close_iteration is not None:
            trace.close_iteration()
        if trace.phases:
            _name_tensors(trace, sys.modules["torch"])
        if trace.status == "finished":
            trace.status = status
        trace.error = trace.error or error
        document = trace.to_json()
        if trace.config.get("spawned"):
            document = _adopt_spawned(trace, document)
        document["forked_trainers"] = int(trace.config.get("forked_trainers") or 0)
        with open(trace.config["trace"], "w", encoding="utf-8") as handle:
            json.dump(document, handle, default=_jsonable)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _install_timing_only(trace: Trace, torch) -> None:
    """Step timing and the stop, nothing else: the baseline for measuring harness overhead."""
    import torch.optim.optimizer as optim_module

    depth = {"n": 0}

    def pre(optimizer, args, kwargs):
        depth["n"] += 1
        if depth["n"] == 1 and len(trace.steps) >= trace.config["steps"]:
            finish(trace, "stopped")

    def post(optimizer, args, kwargs):
        depth["n"] -= 1
        if depth["n"] == 0:
            _clock_step(trace, counted=True)
            trace.steps.append({"losses": [], "criterion": [], "backwards": 0, "skipped": False, "updates": 0})

    optim_module.register_optimizer_step_pre_hook(pre)
    optim_module.register_optimizer_step_post_hook(post)


def _shim_scaler_args(args, kwargs):
    if args and isinstance(args[0], str) and args[0].startswith("cuda"):
        args = ("cpu", *args[1:])
    elif str(kwargs.get("device", "cuda")).startswith("cuda") and not (args and isinstance(args[0], str)):
        kwargs["device"] = "cpu"
    return args, kwargs


def _install_cuda_shim(torch, trace: Optional[Trace] = None) -> None:
    """Best effort: CUDA-only scripts on a CPU machine. `.cuda()`, `.to("cuda")`, `device="cuda"`
    and `torch.device("cuda")` arguments go to the CPU; autocast and scalers become CPU ones with
    the same dtype (float16), except for models with recurrent or convolution layers, whose
    float16 CPU kernels are missing (LSTM) or 14-33x slower (convolutions): bfloat16 there, and
    the trace says so. The memory statistics, events and streams a script reads are stubs."""
    _shim_low_precision_layers(torch, trace)

    def cpu(device):
        if isinstance(device, torch.device) and device.type == "cuda":
            return torch.device("cpu")
        if isinstance(device, str) and device.startswith("cuda"):
            return "cpu"
        if isinstance(device, int) and not isinstance(device, bool):
            return "cpu"  # a CUDA ordinal
        return device

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.Tensor.pin_memory = lambda self, *a, **k: self  # pinned memory needs a CUDA device
    torch.nn.Module.cuda = lambda self, *a, **k: self
    tensor_to, module_to = torch.Tensor.to, torch.nn.Module.to

    def to(self, *args, **kwargs):
        args = (cpu(args[0]), *args[1:]) if args else args  # only the device position
        if "device" in kwargs:
            kwargs["device"] = cpu(kwargs["device"])
        return tensor_to(self, *args, **kwargs)

    def module_to_shim(self, *args, **kwargs):
        args = (cpu(args[0]), *args[1:]) if args else args
        if "device" in kwargs:
            kwargs["device"] = cpu(kwargs["device"])
        return module_to(self, *args, **kwargs)

    torch.Tensor.to = to
    torch.nn.Module.to = module_to_shim
    for name in ("randn", "rand", "zeros", "ones", "empty", "full", "tensor", "arange", "randint", "randperm",
                 "zeros_like", "ones_like", "randn_like", "rand_like", "empty_like", "full_like", "eye", "linspace"):
        factory = getattr(torch, name, None)
        if factory is None:
            continue

        def shimmed(*args, _factory=factory, **kwargs):
            if "device" in kwargs:
                kwargs["device"] = cpu(kwargs["device"])
            return _factory(*args, **kwargs)

        setattr(torch, name, shimmed)
    # the script takes its CUDA branch; the CUDA calls such scripts make around training are stubs
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_name = lambda *a, **k: "cuda-shim (CPU)"
    torch.cuda.is_bf16_supported = lambda *a, **k: True
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None
    torch.cuda.set_device = lambda *a, **k: None
    torch.cuda.manual_seed = torch.cuda.manual_seed_all = lambda *a, **k: None
    for name in ("max_memory_allocated", "memory_allocated", "max_memory_reserved", "memory_reserved",
                 "memory_cached", "max_memory_cached"):
        setattr(torch.cuda, name, lambda *a, **k: 0)
    for name in ("reset_peak_memory_stats", "reset_max_memory_allocated", "reset_max_memory_cached",
                 "reset_accumulated_memory_stats", "ipc_collect", "init"):
        setattr(torch.cuda, name, lambda *a, **k: None)
    torch.cuda.memory_stats = lambda *a, **k: {}
    torch.cuda.memory_summary = lambda *a, **k: "cuda-shim: no CUDA memory (the run is on the CPU)"
    torch.cuda.mem_get_info = lambda *a, **k: (0, 0)
    torch.cuda.get_device_properties = lambda *a, **k: _ShimDeviceProperties()
    torch.cuda.get_device_capability = lambda *a, **k: (8, 0)
    torch.cuda.Event = _ShimEvent
    torch.cuda.current_stream = torch.cuda.default_stream = lambda *a, **k: _ShimStream()
    _shim_accelerator(torch)


def _shim_accelerator(torch) -> None:
    """``torch.accelerator`` (the device-agnostic API of recent scripts: ``device =
    torch.accelerator.current_accelerator() if torch.accelerator.is_available() else cpu``) names
    CUDA too, or such a script stays on its CPU branch and its rewrite's autocast stays off."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None:
        return
    accelerator.is_available = lambda *a, **k: True
    accelerator.current_accelerator = lambda *a, **k: torch.device("cuda")
    accelerator.device_count = lambda *a, **k: 1
    accelerator.current_device_index = accelerator.current_device_idx = lambda *a, **k: 0
    for name in ("set_device_index", "set_device_idx", "synchronize", "empty_cache", "reset_peak_memory_stats",
                 "reset_accumulated_memory_stats"):
        setattr(accelerator, name, lambda *a, **k: None)
    for name in ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved"):
        setattr(accelerator, name, lambda *a, **k: 0)
    accelerator.memory_stats = lambda *a, **k: {}
    accelerator.current_stream = lambda *a, **k: _ShimStream()  # torch's optimizers ask it is_capturing()


class _ShimDeviceProperties:
    name = "cuda-shim (CPU)"
    total_memory = 0
    major, minor = 8, 0
    multi_processor_count = 1


class _ShimEvent:
    """torch.cuda.Event for timing (``elapsed_time`` in milliseconds, as CUDA events give)."""

    def __init__(self, *args, **kwargs):
        self.time = None

    def record(self, *args, **kwargs):
        self.time = time.perf_counter()

    def synchronize(self):
        return None

    def wait(self, *args, **kwargs):
        return None

    def query(self):
        return True

    def elapsed_time(self, end):
        return (end.time - self.time) * 1e3


class _ShimStream:
    def synchronize(self):
        return None

    def wait_stream(self, *args, **kwargs):
        return None

    def is_capturing(self):
        return False  # no CUDA graph is ever captured on the CPU


def _shim_low_precision_layers(torch, trace: Optional[Trace]) -> None:
    """Remembers whether the script builds recurrent or convolution layers (their __init__ is
    wrapped): the shim's autocast then runs bfloat16 on the CPU instead of float16."""
    # a child trainer (mp.spawn, mp.Process) whose model the parent built: the parent's finding
    found = {"kind": trace.config.get("shim_layers") if trace is not None else None}

    def wrap(cls, kind):
        init = cls.__init__

        def __init__(self, *args, **kwargs):
            found["kind"] = found["kind"] or kind
            init(self, *args, **kwargs)

        cls.__init__ = __init__

    wrap(torch.nn.modules.rnn.RNNBase, "recurrent (LSTM/GRU/RNN)")
    wrap(torch.nn.modules.conv._ConvNd, "convolution")
    _SHIM["found"] = found
    _SHIM["trace"] = trace


_SHIM: dict = {}


def shim_dtype(torch, requested):
    """The CPU dtype for a CUDA autocast under the shim."""
    requested = requested or torch.float16
    found = _SHIM.get("found", {}).get("kind")
    if requested is torch.float16 and found:
        trace = _SHIM.get("trace")
        note = (f"cuda shim: bfloat16 instead of float16 on the CPU, for the model's {found} layers "
                "(float16 CPU kernels are missing or very slow for them)")
        if trace is not None and note not in trace.shim_notes:
            trace.shim_notes.append(note)
        return torch.bfloat16
    return requested


class _FlopCounter:
    """Matmul/conv FLOPs by the dtype autocast really ran (a TorchDispatchMode sits below the
    Autocast key). ~15 us per aten op, so it is only on for a short window of steps."""

    def __new__(cls, torch, trace):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        class Counter(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                packet = func._overloadpacket
                formula = flop_registry.get(packet)
                if formula is not None:
                    try:
                        count = formula(*args, **kwargs, out_val=out)
                    except Exception:
                        count = 0
                    dtype = next(
                        (str(a.dtype) for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), "other"
                    )
                    trace.flops[dtype] = trace.flops.get(dtype, 0) + float(count)
                    phase = trace.phases[-1]["flops"] if trace.phases else {}
                    phase[dtype] = phase.get(dtype, 0) + float(count)
                return out

        return Counter()


def _capture_warnings(trace: Trace) -> None:
    warnings.simplefilter("always")

    def show(message, category, filename, lineno, file=None, line=None):
        key = f"{category.__name__}: {str(message).splitlines()[0][:200]}"
        trace.warnings[key] = trace.warnings.get(key, 0) + 1

    warnings.showwarning = show


def main(config_path: str) -> None:
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    rank = os.environ.get("RANK")  # set by torchrun (--nproc): each rank writes its own trace
    if rank not in (None, "0"):
        config["trace"] = f"{config['trace']}.rank{rank}"
        config["progress"] = None
    trace = Trace(config)
    os.chdir(config["workdir"])
    script = config["script"]
    sys.argv = [script, *config.get("args", [])]
    # the script's own folder first (its sibling modules), as `python script.py` would have it
    sys.path.insert(0, config.get("import_dir") or os.path.dirname(os.path.abspath(script)))
    try:
        _capture_warnings(trace)
        import torch

        _seed_everything(config["seed"], config["threads"])
        if config.get("instrument", True):
            _install(trace, torch)
        else:
            _install_timing_only(trace, torch)
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        trace.exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if trace.exit_code:
            finish(trace, "error", f"SystemExit({exc.code!r})")
    except BaseException as exc:  # noqa: BLE001 - the script's failure is the data
        finish(trace, "error", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:]))
    finish(trace, "finished")


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


if __name__ == "__main__":
    main(sys.argv[1])
