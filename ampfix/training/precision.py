"""What precision and device a training step really uses: the facts AMP501 asks before it calls a
step "an fp32 loop worth converting" (``../shared/reference/program-shapes.md``, section 4).

A step is a candidate only when it trains (not a test), on an accelerator on the path that runs by
default (not CPU-only code), in float32 (no low-precision weights,
no precision policy of a framework, no hand-made loss scaling), on real data (not an API demo on
random tensors), of a model's weights (not latents or inputs), and not a reinforcement-learning toy. Each answer errs towards "not a
candidate": a suggestion on the wrong code costs more than a missed one.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ampfix.program.project import imported_project_files
from ampfix.program.values import assignments, enclosing_class
from ampfix.program.vocabulary import Vocabulary, vocabulary
from ampfix.semantic import own_nodes
from ampfix.training.model import BACKWARD, OPT_STEP

if TYPE_CHECKING:
    from ampfix.program.module import ModuleSource
    from ampfix.training.model import StepFunction

_TEST_FILE = re.compile(r"(^test_.*|.*_test|^conftest|^tests?)\.py$")
_TEST_DIRS = frozenset({"test", "tests", "testing", "unittests"})
_BENCHMARK_DIRS = frozenset({"bench", "benchmark", "benchmarks"})
# Accelerator evidence, as the code names it: a device string, `.cuda()`, the `torch.cuda` or
# `torch.accelerator` modules, DataParallel's `device_ids`.
_ACCELERATOR_DEVICE = re.compile(r"^(cuda|mps|xpu|npu)(:\d+)?$")
_ACCELERATOR_MODULES = ("torch.cuda", "torch.accelerator")
# Precision already chosen by the code: low-precision weights, framework policies, precision
# options and hand-made loss scaling.
_LOW_PRECISION_CASTS = frozenset({"half", "bfloat16"})
_PRECISION_SETTINGS = (
    "torch_dtype", "MixedPrecision", "mixed_precision", "param_dtype", "use_fp16", "fp16", "bf16", "loss_scaling",
)
_LOW_DTYPES = frozenset({"torch.float16", "torch.half", "torch.bfloat16"})
_FLOAT64 = frozenset({"torch.float64", "torch.double"})
_RL_MODULES = ("gym", "gymnasium")
# Sparse models (LightGCN-style recommenders, graph transformers on a sparse adjacency): a sparse
# matmul gains little from autocast, and a COO one has no float16 kernel on CUDA (autocast's cast
# makes it raise). Message passing through a graph library's layers is not this: PyG's examples
# run dense layers that AMP speeds up.
_SPARSE = ("torch_sparse", "torch.sparse", "torch.spmm", "torch.smm", "torch.hspmm", "torch.sparse_coo_tensor",
           "torch.sparse_csr_tensor")
_RANDOM_DATA = frozenset({"rand", "randn", "randint", "randn_like", "rand_like"})


def is_test_code(ctx: "ModuleSource", fn: "StepFunction") -> bool:
    """A unit test: a test file or folder, a ``test_*`` function, a ``Test*`` class or a TestCase."""
    parts = ctx.path.replace("\\", "/").split("/")
    if _TEST_FILE.match(parts[-1]) or _TEST_DIRS & set(parts[:-1]):
        return True
    node = fn.node
    chain = [node, *ctx.semantic.ancestors(node)] if not isinstance(node, ast.Module) else [node]
    for item in chain:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
            return True
        if isinstance(item, ast.ClassDef) and (
            item.name.startswith("Test") or any("TestCase" in ctx.segment(b) for b in item.bases)
        ):
            return True
    return False


def runs_on_accelerator(ctx: "ModuleSource") -> bool:
    """Whether the module may train on an accelerator: it names one (``"cuda"``, ``.cuda()``,
    ``torch.accelerator``), or moves tensors to a device decided elsewhere (a parameter, a
    command-line option). A module whose only device is ``"cpu"``, or that never moves a tensor,
    is CPU code (unless the user configured CPU conversions)."""
    if ctx.settings.default_device == "cpu":
        return True  # the user asked for CPU conversions
    if _names_an_accelerator(vocabulary(ctx.semantic)):
        return True
    for call in ctx.semantic.nodes(ast.Call):
        if isinstance(call.func, ast.Attribute) and call.func.attr == "to":
            target = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "device"), None)
            if target is not None and _may_be_accelerator(ctx, target):
                return True
    return False


def _names_an_accelerator(words: Vocabulary) -> bool:
    return (
        any(_ACCELERATOR_DEVICE.match(s) for s in words.strings)
        or "cuda" in words.calls
        or any(m == a or m.startswith(a + ".") for m in words.modules for a in _ACCELERATOR_MODULES)
        or "device_ids" in words.names
    )


def _may_be_accelerator(ctx: "ModuleSource", target: ast.AST) -> bool:
    if not isinstance(target, (ast.Name, ast.Attribute)) or _DTYPE_NAME.search(ctx.segment(target)):
        return False
    if (ctx.semantic.qualified_name(target) or "").startswith("torch."):
        return False  # torch.float16, torch.long: a dtype
    values = [s.value for s in assignments(ctx.semantic, target)]
    return not values or not all(_is_cpu(v) for v in values)


def _is_cpu(value: ast.AST) -> bool:
    if isinstance(value, ast.Call) and value.args:
        value = value.args[0]  # torch.device("cpu")
    return isinstance(value, ast.Constant) and value.value == "cpu"


_DTYPE_NAME = re.compile(r"dtype|float|half|long|int\b", re.I)


def precision_managed(ctx: "ModuleSource") -> bool:
    """Low-precision or float64 weights (``.half()``, ``.to(torch.bfloat16)``, ``.double()``, a
    default dtype set by ``set_default_dtype``), an FSDP/DeepSpeed precision policy, fp16/bf16 options (``args.fp16``, ``"--bf16"``) or a hand-made
    loss scaling, as the module's code names them (not its comments): it chose its precision; an
    autocast on top would fight it (or, on float64 weights, do nothing: TALENT's tabular models)."""
    words = vocabulary(ctx.semantic)
    if _LOW_PRECISION_CASTS & words.calls or words.mentions(*_PRECISION_SETTINGS):
        return True
    if "to" in words.calls and any(_casts_to(ctx, call, _LOW_DTYPES) for call in ctx.semantic.nodes(ast.Call)):
        return True
    if "set_default_dtype" in words.calls and _default_dtype_set(ctx):
        return True
    return bool({"double", "to"} & words.calls) and _module_made_float64(ctx)


def _default_dtype_set(ctx: "ModuleSource") -> bool:
    """``torch.set_default_dtype(dtype)``, or a helper of that name (torchtune's
    ``with training.set_default_dtype(self._dtype):`` around the model's construction, the dtype
    from the configuration, bf16 as shipped), with a dtype that is not written as float32: the
    weights are built in the dtype the run chooses."""
    for call in ctx.semantic.nodes(ast.Call):
        if _called_name(call) == "set_default_dtype" and call.args:
            if (ctx.semantic.qualified_name(call.args[0]) or "") not in ("torch.float32", "torch.float"):
                return True
    return False


def _casts_to(ctx: "ModuleSource", call: ast.Call, dtypes: frozenset) -> bool:
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "to"):
        return False
    arguments = [*call.args, *(k.value for k in call.keywords)]
    return any(ctx.semantic.qualified_name(a) in dtypes for a in arguments)


def _module_made_float64(ctx: "ModuleSource") -> bool:
    """A module converted to float64 in place: ``model.double()`` or ``model.to(torch.float64)``
    as a statement of its own (a tensor's ``.double()`` returns a copy, so a statement that
    discards it is a module's conversion; ``acc = correct.double() / n`` is a metric, not one)."""
    for stmt in ctx.semantic.nodes(ast.Expr):
        call = stmt.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
            if (call.func.attr == "double" and not call.args) or _casts_to(ctx, call, _FLOAT64):
                return True
    return False


def precision_managed_by_callers(ctx: "ModuleSource", fn: "StepFunction") -> bool:
    """A step function of a library module (``utils/train_utils.py``: ``train(model, ...)``)
    whose every caller in the project sets the precision up where it builds the model (an FSDP
    ``MixedPrecision`` policy, ``.half()`` weights): an autocast inside would fight it."""
    project = getattr(ctx, "project", None)
    if project is None or not isinstance(fn.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    if ctx.semantic.parent(fn.node) is not ctx.tree:
        return False
    callers = project.callers(ctx, fn.node)
    return bool(callers) and all(precision_managed(module) for module, _ in callers)


def trains_on_random_data(ctx: "ModuleSource", fn: "StepFunction") -> bool:
    """An API demo: every iteration feeds fresh random tensors, and no loop iterates over data
    (``for i in range(10): out = model(torch.rand(20, 10))``; a single step on ``torch.randn``).
    A fixed random dataset made once before the loop is ordinary (synthetic) training."""
    nodes = list(own_nodes(fn.node))
    loops = {
        id(f.node): f.node for b in fn.of(BACKWARD) for f in b.context
        if isinstance(f.node, (ast.For, ast.AsyncFor, ast.While))
    }.values()  # the loops of the step, not the module's other loops
    if not all(
        isinstance(loop, (ast.For, ast.AsyncFor)) and isinstance(loop.iter, ast.Call)
        and isinstance(loop.iter.func, ast.Name) and loop.iter.func.id == "range"
        for loop in loops
    ):
        return False  # a loop over a loader, or a `while`: real data
    in_loops = {id(n) for loop in loops for stmt in loop.body for n in ast.walk(stmt)}
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _RANDOM_DATA
        and (not loops or id(n) in in_loops)
        for n in nodes
    )


def optimizes_inputs(ctx: "ModuleSource", fn: "StepFunction") -> bool:
    """The optimizer updates tensors, not a model's weights (GAN inversion, adversarial inputs,
    style transfer on latents): ``optim.Adam([latent] + noises)``, with no ``.parameters()``."""
    optimizers = [e.call.func.value for e in fn.of(OPT_STEP) if e.receiver]
    if not optimizers:
        return False
    for expr in optimizers:
        values = [s.value for s in assignments(ctx.semantic, expr) if isinstance(s, ast.Assign)]
        if not values or not all(_built_from_tensors(v) for v in values):
            return False
    return True


def _built_from_tensors(value: ast.AST) -> bool:
    if not (isinstance(value, ast.Call) and value.args):
        return False
    params = value.args[0]
    if not isinstance(params, (ast.List, ast.Tuple, ast.BinOp, ast.ListComp)):
        return False
    return not any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        and n.func.attr in ("parameters", "named_parameters", "param_groups")
        or isinstance(n, ast.Dict)  # param groups: {"params": model.head.parameters(), ...}
        for n in ast.walk(params)
    )


def reinforcement_learning(ctx: "ModuleSource") -> bool:
    """Policy-gradient toys on gym environments: tiny networks, CPU-bound by the environment."""
    return _imports_any(vocabulary(ctx.semantic).modules, _RL_MODULES)


def _imports_any(modules: frozenset, names: tuple) -> bool:
    """Whether ``modules`` (a vocabulary's) holds one of ``names`` or a submodule of one."""
    return any(m == name or m.startswith(name + ".") for m in modules for name in names)


def sparse_model(ctx: "ModuleSource") -> bool:
    """The module computes with sparse tensors (``torch.sparse.mm``, ``.to_sparse()``,
    ``torch_sparse``): by what its code names, not by the model followed through its values."""
    words = vocabulary(ctx.semantic)
    return "to_sparse" in words.calls or _imports_any(words.modules, _SPARSE)


def builds_a_sparse_model(ctx: "ModuleSource") -> bool:
    """The module builds a class or calls a function of a project module that computes with
    sparse tensors (SELFRec's ``DirectAU`` builds ``LGCN_Encoder`` of ``model/graph/LightGCN.py``)."""
    project = getattr(ctx, "project", None)
    if project is None:
        return False
    seen: set = set()
    for call in ctx.semantic.nodes(ast.Call):
        if not isinstance(call.func, ast.Name) or call.func.id in seen:
            continue
        seen.add(call.func.id)
        named = project.definition(ctx, call.func, prefiltered=False)
        if named is not None and named.module is not ctx and sparse_model(named.module):
            return True
    return False


def fft_model(ctx: "ModuleSource") -> bool:
    """A model of this module computes FFTs: a ``torch.fft`` call in a class (TSLib's TimesNet,
    Autoformer's auto-correlation). Under float16 autocast the FFT's input is a float16 layer
    output, and cuFFT runs half precision only for power-of-two sizes: the step raises."""
    semantic = ctx.semantic
    return any(
        (semantic.qualified_name(call.func) or "").startswith("torch.fft.") and enclosing_class(semantic, call) is not None
        for call in semantic.nodes(ast.Call)
    )


_IMPORT_HOPS = 2  # TSLib: exp/exp_imputation.py -> exp/exp_basic.py -> models/TimesNet.py


def imports_an_fft_model(ctx: "ModuleSource") -> bool:
    """A project module this module imports, or one that such a module imports, holds an FFT
    model (``fft_model``): a loop that trains whichever model its arguments pick may train it."""
    project = getattr(ctx, "project", None)
    if project is None:
        return False
    seen = {os.path.abspath(ctx.path)}
    frontier = [ctx]
    for _hop in range(_IMPORT_HOPS):
        reached = []
        for module in frontier:
            for path in imported_project_files(module):
                key = os.path.abspath(path)
                if key in seen:
                    continue
                seen.add(key)
                loaded = project.load(path, prefiltered=False)
                if loaded is None:
                    continue
                if fft_model(loaded):
                    return True
                reached.append(loaded)
        frontier = reached
    return False


# Layers whose work is matmuls or convolutions, which low precision runs 2-3x faster on tensor cores.
_HEAVY_LAYERS = frozenset({
    "Linear", "LazyLinear", "Bilinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
    "ConvTranspose3d", "LazyConv1d", "LazyConv2d", "LazyConv3d", "MultiheadAttention", "Transformer",
    "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer",
    "LSTM", "GRU", "RNN",
})
_CONTAINERS = frozenset({"Sequential", "ModuleList", "ModuleDict"})
_NN_MODULES = frozenset({"torch.nn", "torch.nn.modules"})
_WRAPPERS = frozenset({
    "torch.nn.DataParallel", "torch.nn.parallel.DistributedDataParallel", "torch.nn.parallel.DataParallel",
    "torch.compile",
})
_SMALL = 64  # a layer whose literal widths are all below this does too little work for AMP to pay
_MOVES = frozenset({"to", "cuda", "train", "float", "requires_grad_"})


@dataclass
class ModelFacts:
    """What the step's model is made of, as far as the module shows it."""

    layers: list  # the torch.nn layer constructions of the model (empty: unknown)
    dtype: Optional[ast.AST] = None  # a dtype the weights are built or cast in (``dtype=cfg["dtype"]``)

    def worth_amp(self) -> Optional[ast.Call]:
        """A matmul or convolution layer big enough for low precision to pay (None: none is)."""
        return next((c for c in self.layers if _called_name(c) in _HEAVY_LAYERS and not _small(c)), None)


def model_facts(ctx: "ModuleSource", fn: "StepFunction") -> Optional[ModelFacts]:
    """The model whose ``.parameters()`` the step's optimizer was built with, read from values:
    the optimizer's construction, the model's (a ``torch.nn`` layer, a ``Sequential``, or a class
    of this module whose fields are all ``torch.nn`` layers), through wrappers (``DataParallel``,
    ``torch.compile``) and ``.to(...)`` calls. Every assignment of the model counts: a layer size
    is known only when every one of them shows it. None when the module does not show it (a
    factory, a config, a class of another module): then nothing is known."""
    for step in fn.of(OPT_STEP):
        if not isinstance(step.call.func, ast.Attribute):
            continue
        for built in _values(ctx, step.call.func.value):
            model = _parameters_owner(built)
            if model is not None:
                return _facts_of_model(ctx, model, depth=3)
    return None


def _facts_of_model(ctx: "ModuleSource", model: ast.AST, depth: int) -> Optional[ModelFacts]:
    values = _values(ctx, model)
    if not values or depth == 0:
        return None
    found = [_facts_of_construction(ctx, value, depth) for value in values]
    dtype = next((f.dtype for f in found if f is not None and f.dtype is not None), None)
    if any(f is None for f in found):
        return ModelFacts([], dtype) if dtype is not None else None
    return ModelFacts([layer for f in found for layer in f.layers], dtype)


def _values(ctx: "ModuleSource", expr: ast.AST) -> list:
    return [s.value for s in assignments(ctx.semantic, expr) if isinstance(s, (ast.Assign, ast.AnnAssign)) and s.value]


def _parameters_owner(value: ast.AST) -> Optional[ast.AST]:
    """``model`` of ``torch.optim.SGD(model.parameters(), ...)``."""
    if not isinstance(value, ast.Call) or not value.args:
        return None
    first = value.args[0]
    if isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) and first.func.attr == "parameters":
        return first.func.value
    return None


def _facts_of_construction(ctx: "ModuleSource", value: ast.AST, depth: int) -> Optional[ModelFacts]:
    dtype = None
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr in _MOVES:
        dtype = dtype or _dtype_argument(ctx, value)
        value = value.func.value  # `Net().to(device)`: the construction is underneath
    if isinstance(value, (ast.Name, ast.Attribute)):
        inner = _facts_of_model(ctx, value, depth - 1)  # `net = net.to(device)`: the earlier value
        return ModelFacts(inner.layers, inner.dtype or dtype) if inner is not None else None
    if not isinstance(value, ast.Call):
        return None
    dtype = dtype or _dtype_argument(ctx, value)
    qualified = ctx.semantic.qualified_name(value.func) or ""
    if qualified in _WRAPPERS:
        return _facts_of_construction(ctx, value.args[0], depth) if value.args else None
    if qualified.startswith("torch.nn."):
        layers = _layers_in(ctx, value)
        return ModelFacts(layers, dtype) if layers is not None else None
    name = value.func.id if isinstance(value.func, ast.Name) else None
    classes = [n for n in ctx.tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    layers = _layers_of_class(ctx, classes[0]) if len(classes) == 1 else None
    if layers is None:
        return ModelFacts([], dtype) if dtype is not None else None
    return ModelFacts(layers, dtype)


def _layers_of_class(ctx: "ModuleSource", cls: ast.ClassDef) -> Optional[list]:
    """The layers a module class builds, when every field it assigns a call to is a known
    ``torch.nn`` layer (None: it builds something else, whose size is unknown)."""
    layers = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if not any(isinstance(t, ast.Attribute) for t in node.targets):
                continue
            qualified = ctx.semantic.qualified_name(node.value.func) or ""
            if not qualified.startswith("torch.nn."):
                return None
            found = _layers_in(ctx, node.value)
            if found is None:
                return None
            layers += found
    return layers


def _layers_in(ctx: "ModuleSource", call: ast.Call) -> Optional[list]:
    """A layer, or the layers of a ``Sequential`` (nested containers included); None when a part
    is not a ``torch.nn`` layer (a block of the project's own) or the container is built from a
    list whose members are not shown."""
    if (ctx.semantic.qualified_name(call.func) or "").rsplit(".", 1)[0] not in _NN_MODULES:
        return None
    if _called_name(call) in ("Parameter", "ParameterList", "ParameterDict"):
        return None  # raw weights: what the forward computes with them is not a layer's size
    if _called_name(call) in _CONTAINERS:
        if not call.args or any(not isinstance(arg, ast.Call) for arg in call.args):
            return None
        parts = [_layers_in(ctx, arg) for arg in call.args]
        return None if any(p is None for p in parts) else [layer for part in parts for layer in part]
    return [call]


def _called_name(call: ast.Call) -> str:
    """The last name of what ``call`` calls: ``Linear`` of ``nn.Linear(...)``."""
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _small(call: ast.Call) -> bool:
    """Every width of the layer is a literal below ``_SMALL`` (``nn.Linear(1, 1)``)."""
    widths = call.args[:2] or [k.value for k in call.keywords if k.arg in ("in_features", "out_features")]
    return bool(widths) and all(isinstance(w, ast.Constant) and isinstance(w.value, int) and w.value < _SMALL
                                for w in widths)


def _dtype_argument(ctx: "ModuleSource", call: ast.Call) -> Optional[ast.AST]:
    """A dtype the call builds or casts weights in, unless it is float32: ``dtype=cfg["dtype"]``,
    ``.to(torch.bfloat16)``, ``.to(device, dtype)``."""
    candidates = [k.value for k in call.keywords if k.arg in ("dtype", "torch_dtype")]
    if isinstance(call.func, ast.Attribute) and call.func.attr == "to":
        candidates += [a for a in call.args if _looks_like_dtype(ctx, a)]
    for value in candidates:
        if (ctx.semantic.qualified_name(value) or "") not in ("torch.float32", "torch.float"):
            return value
    return None


def _looks_like_dtype(ctx: "ModuleSource", value: ast.AST) -> bool:
    qualified = ctx.semantic.qualified_name(value) or ""
    if qualified.startswith("torch.") and qualified.rsplit(".", 1)[-1] in ("float16", "half", "bfloat16", "float32", "float"):
        return True
    key = value.slice if isinstance(value, ast.Subscript) else None
    text = key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else ctx.segment(value)
    return "dtype" in text.lower()


def is_benchmark(ctx: "ModuleSource") -> bool:
    """A benchmark's baseline loop: a file in a ``bench``/``benchmarks`` folder."""
    return bool(_BENCHMARK_DIRS & set(ctx.path.replace("\\", "/").split("/")[:-1]))


def candidate_reasons(ctx: "ModuleSource", fn: "StepFunction") -> list[str]:
    """Why this step is not an fp32 loop to convert (empty: it is a candidate)."""
    reasons = []
    if is_test_code(ctx, fn):
        reasons.append("a unit test")
    if is_benchmark(ctx):
        reasons.append("a benchmark")
    if not runs_on_accelerator(ctx):
        reasons.append("no accelerator on the default path")
    if precision_managed(ctx):
        reasons.append("precision is managed already")
    if trains_on_random_data(ctx, fn):
        reasons.append("an API demo on random tensors")
    if reinforcement_learning(ctx):
        reasons.append("a reinforcement-learning toy")
    if sparse_model(ctx):
        reasons.append("a sparse model")
    if optimizes_inputs(ctx, fn):
        reasons.append("it optimizes input tensors, not a model's weights")
    if not reasons and precision_managed_by_callers(ctx, fn):  # reads other files: asked last
        reasons.append("precision is managed by its callers")
    if not reasons and builds_a_sparse_model(ctx):
        reasons.append("a sparse model of another module")
    if not reasons and (fft_model(ctx) or imports_an_fft_model(ctx)):
        reasons.append("a model that computes FFTs, which float16 makes raise")
    return reasons

