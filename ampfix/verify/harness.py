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
from typing import Optional

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
        self.last_step_end = None
        self.last_step_cpu = None
        self.started = time.perf_counter()
        self.scale_history: list[float] = []
        self.skipped: list[int] = []
        self.disabled_autocast: dict[str, int] = {}  # device type -> autocast regions the script disabled

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
        for step in self.steps:
            digest = step.get("params")
            if digest is not None and not isinstance(digest["norm"], float):
                digest["norm"] = math.sqrt(sum(float(n) ** 2 for n in digest["norm"]))
        return {
            "mode": self.config["mode"],
            "status": self.status,
            "error": self.error,
            "exit_code": self.exit_code,
            "steps": self.steps,
            "events": self.events,
            "disabled_autocast": self.disabled_autocast,
            "event_samples": self.event_samples,
            "scalers_created": self.scalers_created,
            "scaler_sites": self.scaler_sites,
            "scalers_enabled": self.scalers_enabled,
            "flops": self.flops,
            "warnings": self.warnings,
            "step_times": self.step_times,
            "step_cpu_times": self.step_cpu_times,
            "scale_history": self.scale_history,
            "skipped": self.skipped,
            "compile_calls": self.compile_calls,
            "autocast_entered": self.autocast_entered,
            "peak_rss": peak,
            "peak_cuda": cuda_peak,
            "wall": time.perf_counter() - self.started,
        }


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
    state = {"in_scaler_step": 0, "opt_depth": 0, "mode_active": None, "scaler_steps": 0}
    GradScaler = torch.amp.GradScaler

    # -- step accounting: iterations ------------------------------------------------------
    replay_skips = set(config.get("replay_skips") or [])  # the AMP run's skipped steps (fp32 mode)

    def optimizer_stepping(optimizer) -> None:
        """An optimizer step begins: it opens the next iteration when this optimizer already
        stepped in the current one, or the scaler's update() closed it; before the first step
        past the limit the run ends (recorded and left from here: no `except:` can swallow it)."""
        current = trace.current
        if current is None or current["closed"] or id(optimizer) in current["optimizer_ids"]:
            if current is not None:
                close_iteration()
            if len(trace.steps) >= limit:
                finish(trace, "stopped")
            trace.current = current = {
                "losses": [], "criterion": [], "backwards": 0, "skipped": False, "updates": 0,
                "optimizer_steps": 0, "optimizer_ids": set(), "closed": False,
            }
            _flop_window(len(trace.steps))
        current["optimizer_ids"].add(id(optimizer))
        current["optimizer_steps"] += 1
        current["losses"] += trace.pending_losses
        current["criterion"] += trace.pending_criterion
        current["backwards"] += trace.pending_backwards
        trace.pending_losses, trace.pending_criterion, trace.pending_backwards = [], [], 0
        if not any(o is optimizer for o in trace.optimizers):
            trace.optimizers.append(optimizer)

    def close_iteration() -> None:
        current = trace.current
        trace.current = None
        _clock_step(trace, counted=state["mode_active"] is None)  # steps under the FLOP counter are slower
        current.pop("optimizer_ids")
        current.pop("closed")
        current["params"] = parameter_digest(trace)
        if current["skipped"]:
            trace.skipped.append(len(trace.steps))
        trace.steps.append(current)
        _report_progress(trace)

    trace.close_iteration = close_iteration

    def _flop_window(index: int) -> None:
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
        return None

    def post_hook(optimizer, args, kwargs):
        state["opt_depth"] -= 1

    optim_module.register_optimizer_step_pre_hook(pre_hook)
    optim_module.register_optimizer_step_post_hook(post_hook)

    def _stage(scaler, optimizer):
        states = getattr(scaler, "_per_optimizer_states", None)
        if states is None:
            return None
        entry = states.get(id(optimizer))  # never [] : a defaultdict would insert
        return entry.get("stage") if entry else None

    def _scale_pending(optimizer=None, params=None) -> bool:
        for scaler in list(scalers):
            if not getattr(scaler, "_ampfix_pending", False) or not scaler.is_enabled():
                continue
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

    live_optimizers = weakref.WeakSet()
    original_optimizer_init = torch.optim.Optimizer.__init__

    def optimizer_init(self, *args, **kwargs):
        original_optimizer_init(self, *args, **kwargs)
        live_optimizers.add(self)

    torch.optim.Optimizer.__init__ = optimizer_init

    def _optimizers_of(params):
        if params is None:
            return []
        if isinstance(params, torch.Tensor):
            params = [params]
        ids = {id(p) for p in params}
        return [o for o in list(live_optimizers) if any(id(p) in ids for g in o.param_groups for p in g["params"])]

    # -- GradScaler ------------------------------------------------------------------------
    original = {
        name: getattr(GradScaler, name) for name in ("__init__", "scale", "unscale_", "step", "update")
    }

    def scaler_init(self, *args, **kwargs):
        if mode == "fp32":
            kwargs["enabled"] = False
            if len(args) > 5:
                args = args[:5]
        if config.get("cuda_shim"):
            args, kwargs = _shim_scaler_args(args, kwargs)
        original["__init__"](self, *args, **kwargs)
        trace.scalers_created += 1
        caller = sys._getframe(1)
        while caller is not None and caller.f_code.co_filename == __file__:
            caller = caller.f_back
        site = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}" if caller else "?"
        trace.scaler_sites[site] = trace.scaler_sites.get(site, 0) + 1
        trace.scalers_enabled += bool(self.is_enabled())
        self._ampfix_pending = False
        self._ampfix_last_step = self._ampfix_last_update = -1  # step index of the last step / update
        scalers.add(self)

    def scaler_scale(self, outputs):
        result = original["scale"](self, outputs)
        if self.is_enabled():
            if getattr(self, "_ampfix_scale", None) is None:
                self._ampfix_scale = float(self.get_scale())  # then refreshed once per update()
            self._ampfix_pending = True
            if isinstance(result, torch.Tensor):
                result._ampfix_scaled = True  # tensors take attributes; a WeakSet would compare values
        return result

    def scaler_unscale(self, optimizer):
        return original["unscale_"](self, optimizer)

    def scaler_step(self, optimizer, *args, **kwargs):
        optimizer_stepping(optimizer)
        state["scaler_steps"] += 1
        self._ampfix_last_step = state["scaler_steps"]
        if len(trace.steps) in replay_skips:
            # the fp32 reference skips where the AMP run skipped, so both stay aligned
            trace.current["skipped"] = True
            return None
        state["in_scaler_step"] += 1
        try:
            return original["step"](self, optimizer, *args, **kwargs)
        finally:
            state["in_scaler_step"] -= 1

    def scaler_update(self, *args, **kwargs):
        if self.is_enabled() and self._ampfix_last_step == self._ampfix_last_update:
            trace.event("update_without_step", "scaler.update() with no scaler.step() since the last update")
        self._ampfix_last_update = self._ampfix_last_step
        before = getattr(self, "_ampfix_scale", None)
        result = original["update"](self, *args, **kwargs)
        self._ampfix_pending = False
        if self.is_enabled():
            after = float(self.get_scale())
            self._ampfix_scale = after
            trace.scale_history.append(after)
            if trace.current is not None:
                trace.current["scale"] = after
            # found_inf read without another sync: only an inf/NaN step makes the scale back off
            if before is not None and after < before and trace.current is not None and not args and not kwargs:
                trace.current["skipped"] = True
        if trace.current is not None:
            trace.current["updates"] += 1
            trace.current["closed"] = True  # the update ends the iteration
        elif trace.steps:
            trace.steps[-1]["updates"] += 1  # a second update after the iteration closed
        else:
            trace.event("update_before_step", "scaler.update() before any optimizer step")
        return result

    GradScaler.__init__ = scaler_init
    GradScaler.scale = scaler_scale
    GradScaler.unscale_ = scaler_unscale
    GradScaler.step = scaler_step
    GradScaler.update = scaler_update

    # -- clipping on still-scaled gradients ----------------------------------------------------
    for module in (torch.nn.utils, torch.nn.utils.clip_grad):
        for name in ("clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"):
            function = getattr(module, name, None)
            if function is None or getattr(function, "_ampfix", False):
                continue

            def clip(*args, _function=function, _name=name, **kwargs):
                params = args[0] if args else kwargs.get("parameters")
                if _name != "get_total_norm":
                    params = list(params) if not isinstance(params, torch.Tensor) else [params]
                    args = (params, *args[1:]) if args else args
                    if not args:
                        kwargs["parameters"] = params
                    if _scale_pending(params=params):
                        trace.event("clip_on_scaled_gradients", f"{_name} before scaler.unscale_()")
                return _function(*args, **kwargs)

            clip._ampfix = True
            setattr(module, name, clip)

    # -- backward (Tensor.backward calls torch.autograd.backward: one hook sees both) ----------
    original_backward = torch.autograd.backward

    def backward(tensors, *args, **kwargs):
        trace.pending_backwards += 1
        first = tensors[0] if isinstance(tensors, (list, tuple)) and tensors else tensors
        value = None
        if isinstance(first, torch.Tensor):
            try:
                value = first.item() if first.numel() == 1 else None
            except Exception:
                value = None
            if getattr(first, "_ampfix_scaled", False):
                scale = next((s._ampfix_scale for s in list(scalers) if getattr(s, "_ampfix_pending", False)), None)
                if value is not None and scale:
                    value /= scale
            elif any(getattr(s, "_ampfix_pending", False) and s.is_enabled() for s in list(scalers)):
                trace.event("discarded_scaled_loss", "backward of a loss not returned by scaler.scale()")
        if value is not None:
            trace.pending_losses.append(value)
        return original_backward(tensors, *args, **kwargs)

    torch.autograd.backward = backward

    # -- the criterion's loss (outermost loss call: a loss module calls its functional form) ---
    depth = {"loss": 0}

    def recording(function):
        def call(*args, **kwargs):
            depth["loss"] += 1
            try:
                out = function(*args, **kwargs)
            finally:
                depth["loss"] -= 1
            if depth["loss"] == 0 and isinstance(out, torch.Tensor) and out.numel() == 1:
                try:
                    trace.pending_criterion.append(float(out.detach().float().item()))
                except Exception:
                    pass
            return out

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
    compile_function = torch.compile

    def counted_compile(*args, **kwargs):
        trace.compile_calls += 1
        return compile_function(*args, **kwargs)

    torch.compile = counted_compile

    # -- precision overrides ---------------------------------------------------------------------
    autocast_init = torch.amp.autocast.__init__

    def forced_autocast_init(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        if enabled:
            trace.autocast_entered += 1
        if mode != "fp32" and not enabled:
            # the script's own choice (``enabled=device.type == "cuda"`` on a CPU): reported as such
            trace.disabled_autocast[str(device_type)] = trace.disabled_autocast.get(str(device_type), 0) + 1
        if mode == "fp32":
            enabled = False
        if config.get("cuda_shim") and str(device_type).startswith("cuda"):
            device_type, dtype = "cpu", dtype or torch.float16
        autocast_init(self, device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    torch.amp.autocast.__init__ = forced_autocast_init
    if config.get("cuda_shim"):
        _install_cuda_shim(torch)


def _clock_step(trace: Trace, counted: bool) -> None:
    now, cpu = time.perf_counter(), time.thread_time()
    if trace.last_step_end is not None and counted:
        trace.step_times.append(now - trace.last_step_end)
        trace.step_cpu_times.append(cpu - trace.last_step_cpu)
    trace.last_step_end, trace.last_step_cpu = now, cpu


_LOSS_FUNCTIONS = (
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "kl_div", "poisson_nll_loss", "gaussian_nll_loss", "cosine_embedding_loss",
    "margin_ranking_loss", "hinge_embedding_loss", "soft_margin_loss", "multilabel_soft_margin_loss",
    "triplet_margin_loss", "ctc_loss",
)


def parameter_digest(trace: Trace) -> Optional[dict]:
    """A cheap fingerprint of every parameter the optimizers hold: the L2 norm of them all (a
    norm per tensor in one fused op, combined in float64 when the trace is written). Equal
    digests: the same training; their relative difference: how far two runs went apart."""
    torch = sys.modules["torch"]
    params = _parameters(trace, torch)
    if not params:
        return None
    with torch.no_grad():
        norms = torch._foreach_norm(params)  # one fused op; combined when the trace is written
    return {"norm": norms, "count": len(params)}


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
        if trace.status == "finished":
            trace.status = status
        trace.error = trace.error or error
        with open(trace.config["trace"], "w", encoding="utf-8") as handle:
            json.dump(trace.to_json(), handle, default=_jsonable)
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


def _install_cuda_shim(torch) -> None:
    """Best effort: CUDA-only scripts on a CPU machine. `.cuda()`, `.to("cuda")`, `device="cuda"`
    and `torch.device("cuda")` arguments go to the CPU; autocast and scalers become CPU ones with
    the same dtype (float16)."""

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
    torch.cuda.max_memory_allocated = torch.cuda.memory_allocated = lambda *a, **k: 0
    torch.cuda.reset_peak_memory_stats = lambda *a, **k: None


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
