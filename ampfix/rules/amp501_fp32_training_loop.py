"""AMP501: a plain fp32 training step (forward, loss, backward, optimizer step) with no AMP."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import insert_before
from ampfix.prefilter import FileBytes, may_train_step
from ampfix.rules._conversion import (
    autocast_conversion,
    infer_device,
    module_manages_precision,
)
from ampfix.rules._loop import at, loops_of, shown_path, trains_through_opacus
from ampfix.rules._protocol import SCALER_NAMES, add_scaler_protocol, free_name
from ampfix.rules.amp502_manual_gradient_scaling import (
    gradient_rescales,
    scaled_loss_factor,
)
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.program.values import enclosing_function, parameter_names
from ampfix.semantic import own_nodes
from ampfix.training.model import BACKWARD, OPT_STEP, StepFunction, encloses
from ampfix.training.precision import candidate_reasons, model_facts


class Fp32TrainingLoop(Rule):
    code = "AMP501"
    opportunity = True
    name = "fp32-training-loop"
    summary = "A training step runs in plain fp32: autocast (and a GradScaler for float16) would speed it up"
    triggers = (b"backward",)
    fix_safety = FIX_UNSAFE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return may_train_step(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        if module_manages_precision(ctx):
            return  # the module already manages precision (AMP2xx/AMP4xx look at how)
        rescaled = [node for node, _, _ in gradient_rescales(ctx)]
        for fn in model.functions:
            backwards = [b for b in fn.of(BACKWARD) if not b.scaled and b.receiver is None]
            steps = fn.of(OPT_STEP)
            if not backwards or not any(
                fn.before(b, s) for b in backwards for s in steps
            ):
                continue
            if any(_no_grad_context(ctx, b) for b in backwards):
                continue
            if all(_loss_handed_in(fn, b) for b in backwards):
                continue  # a helper that backpropagates its caller's loss: the forward is not here
            if candidate_reasons(ctx, fn):
                continue  # a test, CPU-only code, managed precision, a demo: not a loop to convert
            facts = model_facts(ctx, fn)
            if facts is not None and (facts.dtype is not None or (facts.layers and facts.worth_amp() is None)):
                continue  # weights built in a dtype of their own, or a model too small for AMP to pay
            if any(encloses(fn.node, node) for node in rescaled) or any(scaled_loss_factor(ctx, fn, b) for b in backwards):
                continue  # hand-rolled scaling: AMP502 converts that step
            message = (
                "fp32 training step: wrap the forward pass and the loss in `torch.autocast` (with a "
                "`torch.amp.GradScaler` for float16) to use low-precision matmuls, typically 2-3x faster"
            )
            step = next(s for s in steps if any(fn.before(b, s) for b in backwards))
            evidence = [at(backwards[0], "fp32 backward (no autocast, no scaler in this step)"), at(step, "optimizer step")]
            pays = facts.worth_amp() if facts is not None else None
            if pays is not None:
                evidence.append((pays, f"the model's `{ctx.segment(pays.func)}` runs in float32: its matmuls and convolutions are what AMP speeds up"))
            extension = ctx.project.compiled_extension(ctx.path) if ctx.project is not None else None
            if extension is None:
                fix, reason = self._fix(ctx, fn, backwards)
            else:
                fix, reason = None, (
                    f"the project builds a custom C++/CUDA extension ({shown_path(extension)}), whose kernels "
                    "may have no float16 version; add autocast by hand, with "
                    "`torch.amp.custom_fwd(cast_inputs=torch.float32)` on the extension's autograd Function"
                )
            diagnostic = ctx.diagnostic(self, backwards[0].call, message, fix, evidence)
            diagnostic.no_fix_reason = reason
            yield diagnostic

    def _fix(self, ctx: ModuleContext, fn: StepFunction, backwards) -> tuple[Optional[Fix], Optional[str]]:
        """The conversion, or None and why it is not offered."""
        if len(backwards) != 1:
            return None, "several losses are backpropagated in this step (GANs, multi-task): the autocast regions need a person"
        backward = backwards[0]
        if trains_through_opacus(ctx):
            return None, (
                "Opacus clips per-sample gradients inside its optimizer: with a GradScaler it would clip "
                "gradients still multiplied by the loss scale; differential privacy needs its own AMP support"
            )
        complex_op = _complex_or_fft(ctx)
        if complex_op is not None:
            return None, (
                f"the module computes complex tensors or FFTs (`{complex_op}`), which float16 autocast does not "
                "run (half-precision FFTs need power-of-two sizes, complex32 has few kernels): convert by hand"
            )
        conversion = autocast_conversion(ctx, fn, backward, float16_on_cuda_only=True)
        if conversion is None:
            return None, "the forward pass and the loss are not statements of their own before the backward, to wrap in autocast"
        device, dtype, edits = conversion.device, conversion.dtype, conversion.edits
        # the scaler is enabled where the autocast is (on CUDA alone for a run-time device)
        scaler_args = device.scaler + (f", enabled={conversion.enabled}" if conversion.enabled else "")
        if device.literal != "cpu" and _uses_binary_cross_entropy(ctx):
            return None, "the loss uses BCELoss, which raises under CUDA autocast (AMP402): use BCEWithLogitsLoss first"
        threaded = None
        if dtype == "float16":
            loops = loops_of(backward)
            if not loops:
                return None, "a step function without its loop: where the GradScaler lives (and survives steps) is a design choice"
            threaded = _threading_plan(ctx, fn)
            if threaded is None:
                planned = add_scaler_protocol(ctx, fn, [backward], loops[0], scaler_args)
            else:
                planned = add_scaler_protocol(ctx, fn, [backward], loops[0], scaler_args, lazy=True, name=threaded[0])
            if planned is None:
                return None, "the GradScaler protocol cannot be added on every path of this step (see `ampfix rule AMP501`)"
            protocol, name = planned
            edits += protocol
            if threaded is not None:
                edits += threaded[1]
        kind = "autocast + GradScaler" if dtype == "float16" else "bfloat16 autocast"
        if threaded is not None and not _every_caller_passes_it(ctx, fn, threaded[1]):
            # a new parameter that every caller must pass (one in another module would build a
            # scaler per call): a person decides where the scaler lives
            return Fix(f"Convert the step to AMP ({kind}), with a `{threaded[0]}` parameter its callers pass",
                       tuple(edits), Applicability.DISPLAY_ONLY), None
        return Fix(f"Convert the step to AMP ({kind})", tuple(edits), Applicability.UNSAFE), None


def _loss_handed_in(fn: StepFunction, backward) -> bool:
    """``loss.backward()`` on a parameter of the step function that it never rebinds
    (robomimic's ``backprop_for_loss(net, optim, loss)``): its forward ran in the caller."""
    func = backward.call.func
    loss = func.value if isinstance(func, ast.Attribute) else None
    node = fn.node
    if not isinstance(loss, ast.Name) or loss.id not in parameter_names(node) or isinstance(node, ast.Lambda):
        return False
    return not any(
        isinstance(n, ast.Name) and n.id == loss.id and isinstance(n.ctx, (ast.Store, ast.Del)) for n in own_nodes(node)
    )


_COMPLEX = frozenset({
    "torch.view_as_complex", "torch.complex", "torch.polar", "torch.cfloat", "torch.cdouble",
    "torch.complex64", "torch.complex128", "torch.complex32",
})


def _complex_or_fft(ctx: ModuleContext) -> Optional[str]:
    """The first FFT or complex-dtype use of the module, by its resolved name (neural operators,
    MRI reconstruction): None when there is none."""
    if "fft" not in ctx.text and "complex" not in ctx.text and "cfloat" not in ctx.text:
        return None
    for node in ctx.semantic.nodes(ast.Attribute):
        name = ctx.semantic.qualified_name(node) or ""
        if name.startswith("torch.fft.") or name in _COMPLEX:
            return name
    return None


def _every_caller_passes_it(ctx: ModuleContext, fn: StepFunction, edits: list) -> bool:
    """Whether the threading plan updates every call of ``fn`` that the project has: some call
    of this module passes the new scaler (the plan's edits beyond the parameter), and no module
    of the project calls ``fn`` (its call would be left creating a scaler per call)."""
    if ctx.project is None or len(edits) < 2:
        return False
    return not ctx.project.callers(ctx, fn.node)


def _no_grad_context(ctx: ModuleContext, backward) -> bool:
    for frame in backward.context:
        if isinstance(frame.node, (ast.With, ast.AsyncWith)):
            text = " ".join(ctx.segment(item.context_expr) for item in frame.node.items)
            if "no_grad" in text or "inference_mode" in text:
                return True
    return False


_BCE = frozenset({"torch.nn.functional.binary_cross_entropy", "torch.nn.BCELoss", "torch.binary_cross_entropy"})


def _uses_binary_cross_entropy(ctx: ModuleContext) -> bool:
    if "binary_cross_entropy" not in ctx.text and "BCELoss" not in ctx.text:
        return False
    return any(ctx.semantic.qualified_name(call.func) in _BCE for call in ctx.semantic.nodes(ast.Call))


def _threading_plan(ctx: ModuleContext, fn: StepFunction):
    """A module-level function with its own training loop is usually called once per epoch: the
    scaler must outlive the call. It gets a ``scaler=None`` parameter (created lazily when not
    passed), and each call from a loop in this module passes one created before that loop.

    Returns (name, edits) or None when fn is not such a function (the scaler then goes before
    the loop in fn itself)."""
    node = fn.node
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or ctx.semantic.parent(node) is not ctx.tree:
        return None
    args = node.args
    if args.vararg or args.kwarg:
        return None
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if not params:
        return None
    name = free_name(ctx, SCALER_NAMES)
    if name is None:
        return None
    last = max([*params, *args.defaults, *(d for d in args.kw_defaults if d is not None)],
               key=lambda n: (n.end_lineno, n.end_col_offset))
    edits = [Edit.insert(ctx.locator.node_range(last)[1], f", {name}=None")]
    calls = [
        c for c in ctx.semantic.nodes(ast.Call)
        if isinstance(c.func, ast.Name) and c.func.id == node.name
        and ctx.semantic.binding_nodes(node.name, ctx.semantic.scope_of(c)) == [node]
        and not encloses(node, c)
    ]
    model = ctx.training
    for call in calls:
        caller = model.step_function(enclosing_function(ctx.semantic, call) or ctx.tree)  # the innermost: its names
        if caller is None or any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
            return None
        loops = [a for a in ctx.semantic.ancestors(call) if isinstance(a, (ast.For, ast.AsyncFor, ast.While))
                 and encloses(caller.node, a)]
        if not loops:
            continue  # a single call: the default (a scaler per call) is the same thing
        outer = loops[-1]
        device = infer_device(ctx, caller)
        torch = ctx.torch_module(outer)
        if torch is None:
            return None
        gate = device.cuda_only(ctx.quote)
        scaler_args = device.scaler + (f", enabled={gate}" if gate else "")
        create = insert_before(ctx, outer, f"{name} = {torch[0]}.amp.GradScaler({scaler_args})")
        if create is None:
            return None
        arguments = [*call.args, *call.keywords]
        end = ctx.locator.node_range(call)[1] - 1
        if arguments:
            last_arg = max(arguments, key=lambda n: (n.end_lineno, n.end_col_offset))
            end = ctx.locator.node_range(last_arg)[1]
            edits.append(Edit.insert(end, f", {name}={name}"))
        else:
            edits.append(Edit.insert(end, f"{name}={name}"))
        edits.append(create)
        edits.extend(torch[1])
    return name, edits
