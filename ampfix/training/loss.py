"""What a loss is made of: the expressions its value flows from, and what they do to it.

The accumulation rules ask two questions of the loss that a backward differentiates: was it
divided on its way there (the accumulated gradients are averaged), and is it a sum over the
batch's samples (a criterion built with ``reduction="sum"``, a loss multiplied by the batch size,
as yolov5's ``ComputeLoss`` returns it)? Then summing micro-batches is the design: the window's
gradient is the sum over its samples, as one large batch's would be.

Both are read from values, never from the file's text: the definitions of the loss's names that
reach the use (``program/values.py``), the loss-scaling wrappers it passes through
(``scaler.scale(loss)``, ``with amp.scale_loss(loss, opt) as scaled:``) and, for the sum, what the
function that computes it returns (in this module, or in the project module it is imported from).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional

from ampfix.program.calls import Target, bind_arguments, flow_of, overrides, resolve, resolve_in_project
from ampfix.program.flow import dotted_key
from ampfix.program.values import ValueFlow, parameter_names
from ampfix.semantic import own_nodes

if TYPE_CHECKING:
    from ampfix.program.module import ModuleSource

_MAX_DEPTH = 10  # assignments, wrappers, terms and calls followed from the backward's loss
_RETURNS_FOLLOWED = 2  # calls whose returns are read (a loss helper, and the criterion it calls)
_ASSIGNMENTS = ("assign", "annassign", "walrus")


@dataclass(frozen=True)
class LossSource:
    """An expression the loss's value flows from (or an augmented assignment of it), in ``module``."""

    module: "ModuleSource"
    node: ast.AST
    element: Optional[int] = None  # a call whose result is unpacked: the item the loss is


def scaling_call(expr: ast.AST, methods: tuple[str, ...] = ("scale",)) -> Optional[ast.Call]:
    """``expr`` when it is a loss-scaling call, ``X.scale(loss, ...)`` (with ``methods``, also
    apex's ``amp.scale_loss(loss, opt)``); whether ``X`` is a scaler, the caller asks of its value."""
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.args and expr.func.attr in methods:
        return expr
    return None


def wrapped_loss(expr: ast.AST) -> Optional[ast.expr]:
    """The loss inside a loss-scaling wrapper call: ``scaler.scale(loss)``, ``amp.scale_loss(loss, opt)``."""
    call = scaling_call(expr, ("scale", "scale_loss"))
    return call.args[0] if call is not None else None


def loss_sources(module: "ModuleSource", loss: ast.expr, *, terms: bool = False) -> list[LossSource]:
    """``loss`` and every expression its value is assigned from in the function that uses it:
    the assignments that reach it, through loss-scaling wrappers (and, where the backward's
    argument is itself arithmetic, what its operands are assigned from). With ``terms``, also the terms
    it is computed from: the names in its arithmetic (``loss = lbox + lobj``) and what the loss
    functions it calls return (a weight ``w = 1 / 3`` in ``w * criterion(out, y)`` is such a
    term, which is why the division question does not ask for them)."""
    found: list[LossSource] = []
    seen: set = set()
    if isinstance(loss, ast.BinOp) and not terms:
        # the backward's own argument: `(divided * args.loss_multiplier).backward()` differentiates
        # `divided` scaled by a weight; what its operands are assigned from counts
        found.append(LossSource(module, loss))
        seen.add((id(loss), None))
        for operand in (loss.left, loss.right):
            _collect(module, operand, None, found, seen, _MAX_DEPTH - 1, -1)
        return found
    _collect(module, loss, None, found, seen, _MAX_DEPTH, _RETURNS_FOLLOWED if terms else -1)
    return found


def _collect(module, expr, element, found, seen, depth, calls) -> None:
    """Add ``expr`` (its ``element``-th item, for a tuple that is unpacked) and its sources."""
    if expr is None or depth < 0 or (id(expr), element) in seen:
        return
    seen.add((id(expr), element))
    if element is not None:
        if isinstance(expr, (ast.Tuple, ast.List)) and element < len(expr.elts):
            _collect(module, expr.elts[element], None, found, seen, depth - 1, calls)
        elif isinstance(expr, ast.Call) and calls > 0:
            for ret_module, value in _returned(module, expr):
                _collect(ret_module, value, element, found, seen, depth - 1, calls - 1)
        elif isinstance(expr, ast.Call):  # `loss, acc = forward_pass(...)`: the call, and which item
            found.append(LossSource(module, expr, element))
        return
    found.append(LossSource(module, expr))
    inner = wrapped_loss(expr)
    if inner is not None:
        _collect(module, inner, None, found, seen, depth - 1, calls)
    elif isinstance(expr, (ast.Name, ast.Attribute)):
        definitions = _values(module).definitions_at(expr)
        for definition in definitions:
            _from_definition(module, definition, found, seen, depth - 1, calls)
        found.extend(LossSource(module, call) for call in _divided_in_place(module, expr, definitions))
        if not definitions and isinstance(expr, ast.Attribute) and isinstance(expr.value, (ast.Name, ast.Attribute)):
            # a member of a value computed here (iris: `losses = compute_loss(batch) / grad_acc_steps`,
            # then `losses.loss_total.backward()`): the container's arithmetic is its members'
            _collect(module, expr.value, None, found, seen, depth - 1, calls)
    elif isinstance(expr, ast.BinOp) and calls >= 0:
        _collect(module, expr.left, None, found, seen, depth - 1, calls)
        _collect(module, expr.right, None, found, seen, depth - 1, calls)
    elif isinstance(expr, ast.Call) and calls > 0:
        for ret_module, value in _returned(module, expr):
            _collect(ret_module, value, None, found, seen, depth - 1, calls - 1)


def _divided_in_place(module, expr: ast.expr, definitions: list) -> list[ast.Call]:
    """``loss.div_(n)`` statements before the use of ``loss`` that read the same value (the same
    definitions reach them): horovod's ``loss.div_(math.ceil(len(data) / args.batch_size))``."""
    key = dotted_key(expr)
    if key is None or not definitions:
        return []
    values = _values(module)
    owner, use = values.owner_and_statement(expr)
    if owner is None or use is None:
        return []
    return [
        call for call in _in_place_divisions(module).get((id(owner), key), ())
        if call.lineno < use.lineno and values.definitions_at(call.func.value) == definitions
    ]


def _in_place_divisions(module) -> dict:
    """(id of the function, the divided reference) -> its ``x.div_(...)`` statements, found once
    per module (asked for every reference the loss flows from)."""
    found = getattr(module.semantic, "_in_place_divisions", None)
    if found is None:
        found = {}
        values = _values(module)
        for call in module.semantic.nodes(ast.Call):
            func = call.func
            if not (isinstance(func, ast.Attribute) and func.attr == "div_"):
                continue
            owner, stmt = values.owner_and_statement(call)
            key = dotted_key(func.value)
            if owner is not None and key is not None and isinstance(stmt, ast.Expr) and stmt.value is call:
                found.setdefault((id(owner), key), []).append(call)
        module.semantic._in_place_divisions = found
    return found


def _from_definition(module, definition, found, seen, depth, calls) -> None:
    stmt = definition.stmt
    if definition.kind in _ASSIGNMENTS and definition.value is not None:
        _collect(module, definition.value, None, found, seen, depth, calls)
    elif definition.kind == "augassign" and isinstance(stmt, ast.AugAssign):
        found.append(LossSource(module, stmt))
        _collect(module, stmt.value, None, found, seen, depth, calls)
        _collect(module, stmt.target, None, found, seen, depth, calls)  # the value before it
    elif definition.kind == "with" and definition.value is not None:
        _collect(module, definition.value, None, found, seen, depth, calls)  # `as scaled_loss`
    elif definition.kind == "assign" and isinstance(stmt, ast.Assign):
        element = _unpacked_index(stmt, definition.key)  # `loss, items = compute_loss(...)`
        if element is not None:
            _collect(module, stmt.value, element, found, seen, depth, calls)


def _unpacked_index(stmt: ast.Assign, key: str) -> Optional[int]:
    for target in stmt.targets:
        if isinstance(target, (ast.Tuple, ast.List)):
            for index, item in enumerate(target.elts):
                if isinstance(item, ast.Name) and item.id == key:
                    return index
    return None


def _returned(module: "ModuleSource", call: ast.Call) -> Iterator[tuple["ModuleSource", ast.expr]]:
    """What the function that ``call`` runs returns: a function or ``__call__`` of this module,
    or of the project module it is imported from (loaded whatever its contents: a loss module
    need not mention AMP)."""
    callee_module, target = _callee(module, call)
    if target is not None:
        for value in _returns_of(target):
            yield callee_module, value


def _callee(module: "ModuleSource", call: ast.Call) -> tuple["ModuleSource", Optional[Target]]:
    target = resolve(module.semantic, call, module_forward=True)
    callee_module = module
    if target is None and getattr(module, "project", None) is not None:
        followed = resolve_in_project(module, call, module.project, prefiltered=False, module_forward=True)
        if followed is not None:
            callee_module, target = followed.module, followed.target
    return callee_module, target if target is not None and target.function is not None else None


def _returns_of(target: Target) -> Iterator[ast.expr]:
    for node in own_nodes(target.function):
        if isinstance(node, ast.Return) and node.value is not None:
            yield node.value


def _values(module: "ModuleSource") -> ValueFlow:
    return flow_of(module)


# -- whether a loss scaler made it ------------------------------------------------------------------


def may_be_scaled(module: "ModuleSource", loss: ast.expr, depth: int = 3) -> bool:
    """Whether the tensor that a plain ``loss.backward()`` differentiates may be a loss scaler's
    result on some path: assigned from ``scaler.scale(...)`` (``loss = scaler.scale(loss) if
    amp else loss``), or a parameter that a caller binds to such a value, or whose callers are
    not all in this module (OCP's ``_backward(self, loss)``, which its subclasses call with
    ``self.scaler.scale(loss)``): then that the backward bypasses the scaler is not known."""
    if depth < 0:
        return True
    values = _values(module)
    for source in loss_sources(module, loss):
        node = source.node
        if isinstance(node, ast.IfExp):  # `scaler.scale(loss) if amp else loss`: either branch
            if any(may_be_scaled(module, branch, depth - 1) for branch in (node.body, node.orelse)):
                return True
            continue
        if scaling_call(node) is not None:
            return True
        if not isinstance(node, ast.Name):
            continue
        for definition in values.definitions_at(node):
            if definition.kind == "param" and _caller_may_scale(module, definition, depth):
                return True
    return False


def _caller_may_scale(module: "ModuleSource", parameter, depth: int) -> bool:
    """For a parameter's definition: whether some caller may pass a scaled tensor for it (every
    caller in this module is read; a function no call here runs is called from elsewhere)."""
    callers = _values(module).callers(parameter.stmt)
    if not callers:
        return True
    for _call, bound in callers:
        argument = bound.get(parameter.key) if bound is not None else None
        if argument is None or may_be_scaled(module, argument, depth - 1):
            return True
    return False


# -- what the sources do to the loss ---------------------------------------------------------------


def is_divided(sources: list[LossSource]) -> bool:
    """Whether one of the sources divides (or weights by a fraction) anywhere in it: ``loss / n``,
    ``loss /= n``, ``.div(n)``, ``criterion(out, y) * len(x) / len(batch)``."""
    for source in sources:
        node = source.node
        if isinstance(node, ast.AugAssign) and isinstance(node.op, (ast.Div, ast.FloorDiv)):
            return True
        if any(_divides(sub) for sub in ast.walk(node.value if isinstance(node, ast.AugAssign) else node)):
            return True
    return False


def divided_by_callee(module: "ModuleSource", loss: ast.expr, count: ast.expr) -> bool:
    """Whether a function the loss's value is returned from divides it by ``count``, the caller's
    micro-batch count: ``loss = compute_loss(model, x, y, accum)`` whose helper returns
    ``loss / accum`` (the parameter the count is passed to, or a field of it: DPR's
    ``cfg.train.gradient_accumulation_steps``), or a method that divides by the same
    ``self.accum`` (or module global) that the caller counts with, a local alias such as
    ``cfg = self.cfg`` followed on both sides. One call deep; a division by anything else (a mean
    written ``sum / len(x)``) is not the window's."""
    key = aliased_key(module, count)
    if key is None:
        return False
    for source in loss_sources(module, loss):
        call = source.node
        if not isinstance(call, ast.Call):
            continue
        callee_module, target = _callee(source.module, call)
        if target is None:
            continue
        # `self.forward_propagation(...)` runs a subclass's override when `self` is one
        here = callee_module is source.module
        virtual = overrides(callee_module.semantic, call) if here else []
        if any(_divides_by(callee_module, candidate, source, key, here) for candidate in (target, *virtual)):
            return True
    return False


def _divides_by(module: "ModuleSource", target: Target, source: LossSource, key: str, same_module: bool) -> bool:
    """Whether what ``target`` returns (the item ``source`` unpacks) is divided by the caller's
    count ``key``: through the parameter the call passes it (or its container) to, the same
    ``self.`` field, or (in the caller's module) the global."""
    call = source.node
    bound = bind_arguments(target, call) or {}
    same_field = key.startswith("self.") and target.bound_self and call_on_self(call)
    same_global = same_module and "." not in key and key not in _locals(target.function)
    for value in _returns_of(target):
        if source.element is not None:
            if not isinstance(value, (ast.Tuple, ast.List)) or source.element >= len(value.elts):
                continue
            value = value.elts[source.element]
        for divisor in _divisors(loss_sources(module, value)):
            through_parameter = _in_caller_terms(module, source.module, divisor, bound)
            if through_parameter is not None:
                if through_parameter == key:
                    return True
            elif aliased_key(module, divisor) == key and (same_field or same_global):
                return True
    return False


def _root_name(expr: ast.AST) -> Optional[ast.Name]:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr if isinstance(expr, ast.Name) else None


def aliased_key(module: "ModuleSource", expr: ast.AST, depth: int = 2) -> Optional[str]:
    """``dotted_key(expr)`` with its first name replaced by what that name is an alias of, where
    one assignment reaches it: ``cfg.train.steps`` after ``cfg = self.cfg`` is ``self.cfg.train.steps``."""
    key, root = dotted_key(expr), _root_name(expr)
    if key is None or root is None or depth == 0:
        return key
    definitions = _values(module).definitions_at(root)
    if len(definitions) == 1 and definitions[0].kind == "assign" and isinstance(definitions[0].value, (ast.Name, ast.Attribute)):
        base = aliased_key(module, definitions[0].value, depth - 1)
        if base is not None:
            return base + key[len(root.id):]
    return key


def _in_caller_terms(module: "ModuleSource", caller: "ModuleSource", divisor: ast.AST, bound: dict) -> Optional[str]:
    """The divisor as the caller names it, when it is a parameter of the callee or a field of
    one (``cfg.train.steps`` with ``cfg`` bound to the caller's ``self.cfg``); None otherwise."""
    root = _root_name(divisor)
    if root is None or root.id not in bound:
        return None
    definitions = _values(module).definitions_at(root)
    if not definitions or any(d.kind != "param" for d in definitions):
        return None  # rebound in the callee: no longer what the caller passed
    passed = aliased_key(caller, bound[root.id])
    return None if passed is None else passed + dotted_key(divisor)[len(root.id):]


def call_on_self(call: ast.Call) -> bool:
    func = call.func
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self"


def _locals(function: ast.AST) -> set:
    """The names a function binds (its parameters and assignments): not the module's globals."""
    return parameter_names(function) | {n.id for n in own_nodes(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _divisors(sources: list[LossSource]) -> Iterator[ast.expr]:
    """What the sources divide by: ``x / d``, ``x /= d``, ``x.div(d)``."""
    for source in sources:
        node = source.node
        if isinstance(node, ast.AugAssign):
            if isinstance(node.op, (ast.Div, ast.FloorDiv)):
                yield node.value
            node = node.value
        for sub in ast.walk(node):
            if isinstance(sub, ast.BinOp) and isinstance(sub.op, (ast.Div, ast.FloorDiv)):
                yield sub.right
            elif _divides(sub) and isinstance(sub, ast.Call) and sub.args:
                yield sub.args[0]


def _divides(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.FloorDiv)):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
        "div", "div_", "true_divide",
    )


def sums_over_samples(sources: list[LossSource]) -> Optional[LossSource]:
    """The source that makes the loss a sum over the batch's samples, if one does: a criterion
    called or built with ``reduction="sum"`` (``size_average=False``), or a product with the
    batch size (``x.shape[0]``, ``x.size(0)``, ``len(x)``, or a name bound to one)."""
    for source in sources:
        node = source.node
        if isinstance(node, ast.Call) and (_sum_reduction(node) or _built_sum_reduced(source.module, node.func)):
            return source
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            if _is_batch_size(source.module, node.left) or _is_batch_size(source.module, node.right):
                return source
    return None


def _sum_reduction(call: ast.Call) -> bool:
    for keyword in call.keywords:
        value = keyword.value
        if keyword.arg == "reduction" and isinstance(value, ast.Constant) and value.value == "sum":
            return True
        if keyword.arg == "size_average" and isinstance(value, ast.Constant) and value.value is False:
            return True
    return False


def _built_sum_reduced(module: "ModuleSource", func: ast.AST) -> bool:
    """Whether the criterion called is an object every creation of which passes ``reduction="sum"``
    (``self.criterion = nn.MSELoss(reduction="sum")`` in ``__init__``)."""
    if not isinstance(func, (ast.Name, ast.Attribute)):
        return False
    values = _values(module)
    origins = values.origins(values.object_of(func))
    calls = _calls_by_site(module)
    created = [calls.get(o.site) for o in origins if o.kind == "call"]
    return bool(created) and len(created) == len(origins) and all(c is not None and _sum_reduction(c) for c in created)


def _calls_by_site(module: "ModuleSource") -> dict:
    found = getattr(module.semantic, "_calls_by_site", None)
    if found is None:
        found = module.semantic._calls_by_site = {
            (module.path, c.lineno, c.col_offset): c for c in module.semantic.nodes(ast.Call)
        }
    return found


def _is_batch_size(module: "ModuleSource", expr: ast.AST, depth: int = 2) -> bool:
    """``x.shape[0]``, ``x.size(0)``, ``len(x)``, or a name whose every reaching value is one."""
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Attribute) and expr.value.attr == "shape":
        return isinstance(expr.slice, ast.Constant) and expr.slice.value == 0
    if isinstance(expr, ast.Call):
        func = expr.func
        if isinstance(func, ast.Attribute) and func.attr == "size" and len(expr.args) == 1:
            return isinstance(expr.args[0], ast.Constant) and expr.args[0].value == 0
        return isinstance(func, ast.Name) and func.id == "len" and len(expr.args) == 1
    if isinstance(expr, ast.Name) and depth > 0:
        definitions = _values(module).definitions_at(expr)
        return bool(definitions) and all(_binds_batch_size(module, d, depth - 1) for d in definitions)
    return False


def _binds_batch_size(module: "ModuleSource", definition, depth: int) -> bool:
    if definition.kind in _ASSIGNMENTS and definition.value is not None:
        return _is_batch_size(module, definition.value, depth)
    stmt = definition.stmt
    if definition.kind == "assign" and isinstance(stmt, ast.Assign):
        # `bs, c, h, w = x.shape`, `batch_size, grid = scores.shape[:2]`: the first item
        if _unpacked_index(stmt, definition.key) == 0:
            return _is_shape(stmt.value)
    return False


def _is_shape(expr: ast.AST) -> bool:
    if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Slice):
        expr = expr.value if expr.slice.lower is None else expr  # `.shape[:2]` starts at 0
    if isinstance(expr, ast.Attribute):
        return expr.attr == "shape"
    return isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "size" and not expr.args
