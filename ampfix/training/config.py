"""What a run's configuration decides, read from values: the flag that turns an autocast region
or a GradScaler on, and the dtypes an autocast region may run in.

A *flag* is an expression whose value comes from outside the step (``args.amp``,
``cfg["fp16"]``, ``self.fp16``, a parameter its callers give a flag). ``flag_leaves`` follows an
expression through the definitions that reach it (ampfix.program.values) down to its *leaves*:
configuration entries and calls (``torch.cuda.is_available()``). An entry is known by its key
(``amp`` for ``args.amp``, ``self.config["amp"]`` and ``getattr(opts, "common.amp")``): the same
setting is often read through different objects (the parsed arguments, a config dictionary kept
on a trainer), so entries of one key count as one flag, which errs on the silent side. Two flags
with no common leaf are independent: some configuration sets one and not the other. A name the
analysis cannot follow to a leaf (a parameter no caller in the module is seen passing, a loop
variable, an unpacking) makes the answer unknown (None), and rules stay silent.

``dtype_choices`` reads an autocast dtype the same way: ``torch.bfloat16``, a name assigned
``torch.bfloat16 if args.bf16 else torch.float16``, a string mapped through ``getattr(torch, s)``;
the result says which dtypes a run may get and, for a choice, the test that chooses.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ampfix.program.values import Definition, assignments, enclosing_function
from ampfix.training.model import BACKWARD, AutocastRegion, Event

if TYPE_CHECKING:
    from ampfix.training.model import TrainingModel

_MAX_DEPTH = 6
FLOAT16, BFLOAT16, FLOAT32 = "float16", "bfloat16", "float32"
_DTYPES = {
    "torch.float16": FLOAT16, "torch.half": FLOAT16, "torch.bfloat16": BFLOAT16,
    "torch.float32": FLOAT32, "torch.float": FLOAT32,
}
# the names `getattr(torch, name)` accepts
_DTYPE_STRINGS = {"float16": FLOAT16, "half": FLOAT16, "bfloat16": BFLOAT16, "float32": FLOAT32, "float": FLOAT32}


class _Unknown(Exception):
    """A value the analysis cannot follow to its leaves."""


def flag_leaves(model: "TrainingModel", expr: ast.AST) -> Optional[frozenset]:
    """The configuration entries and calls ``expr``'s value depends on (see the module
    docstring); None when some part of it cannot be followed. Constants are no leaves."""
    try:
        return frozenset(_leaves(model, expr, 0))
    except _Unknown:
        return None


def _leaves(model: "TrainingModel", expr: ast.AST, depth: int) -> set:
    if depth > _MAX_DEPTH:
        raise _Unknown
    segment = model.ctx.segment
    if isinstance(expr, ast.Constant) or model.ctx.semantic.qualified_name(expr) in _DTYPES:
        return set()
    if isinstance(expr, ast.Name):
        return _name_leaves(model, expr, depth)
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "self":
        return _field_leaves(model, expr, depth)
    if isinstance(expr, ast.Attribute):
        return {expr.attr}  # a configuration entry: `args.amp`, `cfg.train.amp`
    if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant):
        return {str(expr.slice.value)}  # `config["amp"]`
    if isinstance(expr, ast.Call):
        if _builtin(model, expr.func, "getattr") and len(expr.args) >= 2 and isinstance(expr.args[1], ast.Constant):
            return {str(expr.args[1].value).rsplit(".", 1)[-1]}  # getattr(opts, "common.mixed_precision")
        if _builtin(model, expr.func, "bool") and len(expr.args) == 1:
            return _leaves(model, expr.args[0], depth + 1)
        if isinstance(expr.func, ast.Attribute) and expr.func.attr == "get" and expr.args \
                and isinstance(expr.args[0], ast.Constant):
            return {str(expr.args[0].value)}  # `cfg.get("amp", False)`
        # a call is a value of its own, which may derive from its arguments (`decide(args.amp)`)
        found = {segment(expr)}
        for argument in [*expr.args, *(k.value for k in expr.keywords)]:
            found |= _leaves(model, argument, depth + 1)
        return found
    if isinstance(expr, (ast.BoolOp, ast.Compare, ast.UnaryOp, ast.IfExp, ast.BinOp)):
        found: set = set()
        for child in ast.iter_child_nodes(expr):
            if isinstance(child, ast.expr):
                found |= _leaves(model, child, depth + 1)
        return found
    raise _Unknown


def _builtin(model: "TrainingModel", func: ast.AST, name: str) -> bool:
    """Whether ``func`` is the builtin ``name`` (not rebound in the module)."""
    semantic = model.ctx.semantic
    return isinstance(func, ast.Name) and func.id == name and not semantic.is_bound(name, semantic.scope_of(func))


def _definitions(model: "TrainingModel", name: ast.Name) -> list:
    """The definitions that reach ``name``; for a global read in a function, every module-level
    plain assignment of it (the function may run after any of them)."""
    values = model.values
    owner, stmt = values.owner_and_statement(name)
    if owner is None:
        return []
    node = values.graph(owner).node_of(stmt) if stmt is not None else None
    found = values.reaching(owner, name.id, node) if node is not None else []
    scope = model.ctx.semantic.scopes.get(owner)
    if found or owner is model.ctx.tree or (scope is not None and name.id in scope.bindings):
        return found
    module_level = [s for s in assignments(model.ctx.semantic, name) if enclosing_function(model.ctx.semantic, s) is None]
    if not all(isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
               for s in module_level):
        return []
    return [Definition(name.id, "assign", -1, s, s.value) for s in module_level]


def _name_leaves(model: "TrainingModel", name: ast.Name, depth: int) -> set:
    """A name: the leaves of every definition that reaches it; a parameter: what the module's
    callers pass (unknown when some caller is not seen)."""
    definitions = _definitions(model, name)
    if not definitions:
        raise _Unknown
    owner = model.values.owner_and_statement(name)[0]
    found: set = set()
    for definition in definitions:
        if definition.kind == "param":
            found |= _parameter_leaves(model, owner, name.id, depth)
        elif definition.kind in ("assign", "annassign") and definition.value is not None:
            found |= _leaves(model, definition.value, depth + 1)
        else:
            raise _Unknown
    return found


def _parameter_leaves(model: "TrainingModel", function: ast.AST, name: str, depth: int) -> set:
    callers = model.values.callers(function)
    if not callers:
        raise _Unknown
    found: set = set()
    for _call, bound in callers:
        argument = bound.get(name) if bound is not None else None
        if argument is None:
            raise _Unknown  # a default, or ``*args``: not followed
        found |= _leaves(model, argument, depth + 1)
    return found


def _field_leaves(model: "TrainingModel", expr: ast.Attribute, depth: int) -> set:
    """``self.fp16``: what its assignments in the class give, else the field itself."""
    stmts = [s for s in assignments(model.ctx.semantic, expr) if isinstance(s, (ast.Assign, ast.AnnAssign))]
    found: set = set()
    try:
        for stmt in stmts:
            found |= _leaves(model, stmt.value, depth + 1)
    except _Unknown:
        return {expr.attr}  # `self.fp16 = fp16` from a constructor's caller: the entry's name
    return found or {expr.attr}


# -- dtypes --------------------------------------------------------------------------------------


@dataclass
class DtypeChoice:
    """The dtypes an autocast region may run in; for a run-time choice between them, the
    ``IfExp`` that chooses (``choice.test``) and whether its body is the float16 side."""

    dtypes: frozenset
    choice: Optional[ast.IfExp] = None
    float16_in_body: bool = False

    @property
    def chosen_at_run_time(self) -> bool:
        return {FLOAT16, BFLOAT16} <= self.dtypes


def dtype_choices(
    model: "TrainingModel", expr: ast.AST, depth: int = 0, default: Optional[str] = None,
) -> Optional[DtypeChoice]:
    """The dtypes ``expr`` (an autocast's ``dtype`` argument) may be; None when unknown. A ``None``
    (``dtype=torch.bfloat16 if args.bf16 else None``) is the device's default, ``default``."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(expr, ast.Constant) and expr.value is None:
        return DtypeChoice(frozenset({default})) if default is not None else None
    literal = _DTYPES.get(model.ctx.semantic.qualified_name(expr) or "")
    if literal is not None:
        return DtypeChoice(frozenset({literal}))
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        found = _DTYPE_STRINGS.get(expr.value)
        return DtypeChoice(frozenset({found})) if found else None
    if isinstance(expr, ast.Call) and _builtin(model, expr.func, "getattr") \
            and len(expr.args) == 2 and model.ctx.semantic.qualified_name(expr.args[0]) == "torch":
        return dtype_choices(model, expr.args[1], depth + 1, default)  # getattr(torch, "bfloat16")
    if isinstance(expr, ast.IfExp):
        body, orelse = dtype_choices(model, expr.body, depth + 1, default), dtype_choices(model, expr.orelse, depth + 1, default)
        if body is None or orelse is None:
            return None
        both = body.dtypes | orelse.dtypes
        if len(body.dtypes) == 1 and len(orelse.dtypes) == 1 and both == {FLOAT16, BFLOAT16}:
            return DtypeChoice(both, expr, FLOAT16 in body.dtypes)
        return DtypeChoice(both)
    if isinstance(expr, ast.Name):
        definitions = _definitions(model, expr)
        if len(definitions) == 1 and definitions[0].kind == "assign" and definitions[0].value is not None:
            return dtype_choices(model, definitions[0].value, depth + 1, default)
        # `amp_dtype = torch.float16` then `if args.bf16: amp_dtype = torch.bfloat16`: either, by a
        # test this does not read
        if definitions and all(d.kind == "assign" and d.value is not None for d in definitions):
            each = [dtype_choices(model, d.value, depth + 1, default) for d in definitions]
            if all(c is not None for c in each):
                return DtypeChoice(frozenset().union(*(c.dtypes for c in each)))
    return None


def region_dtypes(model: "TrainingModel", region: AutocastRegion) -> Optional[DtypeChoice]:
    """What a region with a call runs in: its dtype argument, or its device's default (CUDA's
    float16, the CPU's bfloat16; an unknown device counts as CUDA)."""
    if region.call is None:
        return None
    default = FLOAT16 if region.device in ("cuda", None) else BFLOAT16 if region.device == "cpu" else None
    if region.dtype is None:
        return DtypeChoice(frozenset({default})) if default == FLOAT16 else None
    return dtype_choices(model, region.dtype, default=default)


# -- what turns autocast and a scaler on -----------------------------------------------------------


def region_flag(model: "TrainingModel", region: AutocastRegion) -> Optional[ast.expr]:
    """The expression an autocast region is enabled by (``autocast(enabled=args.amp)``; the old
    ``torch.cuda.amp.autocast(args.amp)``), or None when it is always on or unknown."""
    call = region.call
    if call is None:
        return None
    enabled = next((k.value for k in call.keywords if k.arg == "enabled"), None)
    qualified = model.ctx.semantic.qualified_name(call.func) or ""
    if enabled is None and qualified.startswith("torch.cuda.amp") and call.args:
        enabled = call.args[0]
    return None if enabled is None or isinstance(enabled, ast.Constant) else enabled


def scaler_flag(model: "TrainingModel", create: Event) -> Optional[ast.expr]:
    """The expression a GradScaler creation is enabled by: its ``enabled=`` argument, or the test
    of ``GradScaler() if flag else None`` (negated for the ``else`` side); None when always on."""
    enabled = next((k.value for k in create.call.keywords if k.arg == "enabled"), None)
    if enabled is not None:
        return None if isinstance(enabled, ast.Constant) else enabled
    child, parent = create.call, model.ctx.semantic.parent(create.call)
    if isinstance(parent, ast.IfExp) and child is not parent.test:
        return parent.test if child is parent.body else ast.UnaryOp(ast.Not(), parent.test)
    return None


def scaler_always_off(create: Event) -> bool:
    enabled = next((k.value for k in create.call.keywords if k.arg == "enabled"), None)
    return isinstance(enabled, ast.Constant) and not enabled.value


def regions_of_scaler(model: "TrainingModel", create: Event) -> Optional[list]:
    """The autocast regions that reach a backward this scaler scales, in every function of the
    module that uses it; None when one of its scaled backwards is under no region the model sees
    (its precision is unknown), [] when the module never scales with it."""
    path = model.ctx.path
    site = (path, create.call.lineno, create.call.col_offset)
    creator = model.function_of(create)
    keys = {model.object_key(creator, name) for name in model.creation_targets(create)} if creator else set()
    found: list = []
    for fn in model.functions:
        for backward in fn.of(BACKWARD, calls=True):
            if not backward.scaled:
                continue
            scales_it = any(o.site == site for o in model.values.origins(backward.scaler_obj))
            if not scales_it and model.object_key(fn, backward.scaler) not in keys:
                continue
            reaching = model.regions_reaching(fn, backward)
            if not reaching and backward.via is not None:
                # a call of a step helper whose own region holds its backward: counted in the helper
                helper = model.function_of(backward)
                if helper is not None and model.regions_reaching(helper, backward.origin):
                    continue
            if not reaching:
                return None
            found += [r for r in reaching if r not in found]
    return found


def same_value_at(model: "TrainingModel", expr: ast.AST, here: ast.AST, there: ast.AST) -> bool:
    """Whether ``expr`` (written at ``here``) reads the same bindings at ``there``: both in one
    function, and every name it reads reached by the same definitions (or, for a name the
    function never binds, read from the enclosing scope at both), so that a copy of ``expr`` at
    ``there`` computes the same value."""
    values = model.values
    owner, here_stmt = values.owner_and_statement(here)
    other, there_stmt = values.owner_and_statement(there)
    if owner is None or owner is not other or here_stmt is None or there_stmt is None:
        return False
    graph = values.graph(owner)
    here_node, there_node = graph.node_of(here_stmt), graph.node_of(there_stmt)
    if here_node is None or there_node is None:
        return False
    for name in {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}:
        at_here = [(d.node, d.kind) for d in values.reaching(owner, name, here_node)]
        at_there = [(d.node, d.kind) for d in values.reaching(owner, name, there_node)]
        if at_here != at_there:
            return False
        scope = model.ctx.semantic.scopes.get(owner)
        if not at_here and scope is not None and name in scope.bindings:
            return False  # bound in this function, but not yet there
    return True


# -- flags as conditions -----------------------------------------------------------------------------
#
# For AMP215's question, "is there a configuration that runs float16 autocast with the scaler off",
# a flag is a boolean formula over *atoms* (``and``/``or``/``not`` over anything else: an entry,
# a comparison, a call), with names replaced by the values that reach them. Atoms of the same
# text (entries written through different objects normalised to their key) are one variable;
# two different atoms that read a common entry (``args.precision == "fp16"`` and
# ``args.precision == "bf16"``) are correlated in ways this does not solve, so the answer is then
# unknown. Otherwise the atoms are independent variables and a few of them are tried exhaustively.

_MAX_ATOMS = 10


def flag_formula(model: "TrainingModel", expr: ast.AST, depth: int = 0):
    """``expr`` as ("and"|"or", [parts]) / ("not", part) / ("const", bool) / ("atom", text,
    leaves); None when some part cannot be followed."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(expr, ast.Constant):
        return ("const", bool(expr.value))
    if isinstance(expr, ast.BoolOp):
        parts = [flag_formula(model, v, depth + 1) for v in expr.values]
        return None if None in parts else ("and" if isinstance(expr.op, ast.And) else "or", parts)
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        inner = flag_formula(model, expr.operand, depth + 1)
        return None if inner is None else ("not", inner)
    if isinstance(expr, ast.Call) and _builtin(model, expr.func, "bool") and len(expr.args) == 1:
        return flag_formula(model, expr.args[0], depth + 1)
    if isinstance(expr, ast.Name):
        definitions = _definitions(model, expr)
        if len(definitions) == 1 and definitions[0].kind in ("assign", "annassign") and definitions[0].value is not None:
            return flag_formula(model, definitions[0].value, depth + 1)
        if len(definitions) == 1 and definitions[0].kind == "param":
            passed = _passed(model, expr)
            if passed is not None:
                return flag_formula(model, passed, depth + 1)
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "self":
        stmts = [s for s in assignments(model.ctx.semantic, expr) if isinstance(s, (ast.Assign, ast.AnnAssign))]
        if len(stmts) == 1:
            found = flag_formula(model, stmts[0].value, depth + 1)
            if found is not None:
                return found
    leaves = flag_leaves(model, expr)
    if leaves is None:
        return None
    return ("atom", _atom_text(expr), leaves)


def _passed(model: "TrainingModel", name: ast.Name) -> Optional[ast.expr]:
    """What the module's only caller passes for a parameter, if there is one caller."""
    owner = model.values.owner_and_statement(name)[0]
    callers = model.values.callers(owner) if owner is not None else []
    if len(callers) != 1 or callers[0][1] is None:
        return None
    return callers[0][1].get(name.id)


class _Keys(ast.NodeTransformer):
    """An atom's text with each entry written as its key: ``self.cfg["amp"]`` and ``args.amp``
    both read ``amp``."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        return ast.Name(node.attr)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        if isinstance(node.slice, ast.Constant):
            return ast.Name(str(node.slice.value))
        return self.generic_visit(node)


def _atom_text(expr: ast.AST) -> str:
    import copy

    return ast.dump(_Keys().visit(copy.deepcopy(expr)))


def _atoms(formula, found: dict) -> None:
    kind = formula[0]
    if kind == "atom":
        found[formula[1]] = formula[2]
    elif kind == "not":
        _atoms(formula[1], found)
    elif kind in ("and", "or"):
        for part in formula[1]:
            _atoms(part, found)


def _value(formula, assignment: dict) -> bool:
    kind = formula[0]
    if kind == "const":
        return formula[1]
    if kind == "atom":
        return assignment[formula[1]]
    if kind == "not":
        return not _value(formula[1], assignment)
    values = (_value(part, assignment) for part in formula[1])
    return all(values) if kind == "and" else any(values)


def satisfiable(*formulas) -> Optional[bool]:
    """Whether some configuration makes every formula true; None when a formula is unknown or
    two different atoms read a common entry (their correlation is not solved)."""
    if any(f is None for f in formulas):
        return None
    atoms: dict = {}
    for formula in formulas:
        _atoms(formula, atoms)
    names = sorted(atoms)
    for i, a in enumerate(names):
        if any(not atoms[a].isdisjoint(atoms[b]) for b in names[i + 1:]):
            return None
    if len(names) > _MAX_ATOMS:
        return None
    for bits in range(1 << len(names)):
        assignment = {name: bool(bits >> i & 1) for i, name in enumerate(names)}
        if all(_value(f, assignment) for f in formulas):
            return True
    return False


def negated(formula):
    return None if formula is None else ("not", formula)


def float16_condition(model: "TrainingModel", region: AutocastRegion):
    """When the region runs in float16, as a formula: always (its dtype is float16, or CUDA's
    default), the float16 side of a run-time choice, never (bfloat16 or float32); None unknown."""
    dtypes = region_dtypes(model, region)
    if dtypes is None:
        return None
    if FLOAT16 not in dtypes.dtypes:
        return ("const", False)
    if dtypes.dtypes == {FLOAT16}:
        return ("const", True)
    if dtypes.choice is None:
        return None
    test = flag_formula(model, dtypes.choice.test)
    return test if dtypes.float16_in_body else negated(test)
