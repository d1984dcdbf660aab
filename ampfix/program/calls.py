"""Calls inside a module: which function a call runs, and how its parameters bind to the arguments.

Resolved (Pyright's "declared type" in miniature, inside one module):
- ``helper(...)``: a function of the module that the name is bound to (and nothing else);
- ``self.method(...)`` in a method of class C: the method of C or of a base of C defined here;
- ``obj(...)`` / ``obj.method(...)`` where every assignment of ``obj`` creates an instance of a
  class defined here: that class's ``__call__`` / method (the timm ``NativeScaler`` shape).

Across the project (``resolve_in_project``, through ampfix.program.project): a function imported
from another module of the project, ``module.function(...)``, and ``obj(...)`` / ``obj.method(...)``
where every assignment of ``obj`` creates an instance of a class imported from one (or ``self``'s
methods inherited from such a class).

Everything else is unresolved; the training model treats an unresolved call that is handed a
scaler as *unknown* (it may unscale, step or update), and rules stay silent on what it touches.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Callable, Optional

from ampfix.program.module import ModuleSource
from ampfix.program.project import Definition, ProjectIndex
from ampfix.program.values import ValueFlow, assignments, class_family, enclosing_class, value_flow
from ampfix.semantic import SemanticModel, own_nodes

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Target:
    function: ast.AST  # the FunctionDef that runs
    bound_self: bool  # called as a method: its first parameter is the receiver


def resolve(semantic: SemanticModel, call: ast.Call, module_forward: bool = False) -> Optional[Target]:
    """The function of this module that ``call`` runs. ``module_forward``: calling an instance of
    a class without ``__call__`` runs its ``forward`` (a ``torch.nn.Module``'s ``__call__`` does);
    asked where what matters is the value computed, not the events on the way."""
    func = call.func
    if isinstance(func, ast.Name):
        nodes = semantic.binding_nodes(func.id, semantic.scope_of(call))
        if len(nodes) == 1 and isinstance(nodes[0], _FUNCTIONS):
            return Target(nodes[0], False)
        instance = _instance_class(semantic, func)
        method = _call_method(semantic, instance, module_forward) if instance is not None else None
        return Target(method, True) if method is not None else None
    if isinstance(func, ast.Attribute):
        receiver = func.value
        if isinstance(receiver, ast.Name) and receiver.id == "self":
            cls = enclosing_class(semantic, call)
            method = _method(semantic, cls, func.attr) if cls is not None else None
            return Target(method, True) if method is not None else None
        instance = _instance_class(semantic, receiver)
        if instance is not None:
            method = _method(semantic, instance, func.attr)
            return Target(method, True) if method is not None else None
    return None


def overrides(semantic: SemanticModel, call: ast.Call) -> list[Target]:
    """For ``self.m(...)`` in a method of class C: the ``m`` of C's subclasses in this module that
    override it, which run instead when ``self`` is one of them (UER-py's trainers: the base
    ``forward_propagation`` raises, each subclass's divides the loss)."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self"):
        return []
    cls = enclosing_class(semantic, call)
    if cls is None:
        return []
    found = []
    for sub in semantic.nodes(ast.ClassDef):
        if sub is cls or not any(c is cls for c in class_family(semantic, sub)):
            continue
        own = next((s for s in sub.body if isinstance(s, _FUNCTIONS) and s.name == func.attr), None)
        if own is not None:
            found.append(Target(own, True))
    return found


def _call_method(semantic: SemanticModel, cls: ast.ClassDef, module_forward: bool) -> Optional[ast.AST]:
    method = _method(semantic, cls, "__call__")
    return method if method is not None or not module_forward else _method(semantic, cls, "forward")


def _method(semantic: SemanticModel, cls: ast.ClassDef, name: str) -> Optional[ast.AST]:
    for member_of in class_family(semantic, cls):
        for stmt in member_of.body:
            if isinstance(stmt, _FUNCTIONS) and stmt.name == name:
                return stmt
    return None


def _instantiated(semantic: SemanticModel, expr: Optional[ast.AST], class_of: Callable):
    """The one class every assignment of ``expr`` instantiates (``class_of`` says which class a
    constructor names, or None), if there is one."""
    if not isinstance(expr, (ast.Name, ast.Attribute)):
        return None
    found: dict[int, object] = {}
    for stmt in assignments(semantic, expr):
        if isinstance(stmt, ast.AugAssign):
            continue
        cls = class_of(stmt.value.func) if isinstance(stmt.value, ast.Call) else None
        if cls is None:
            return None
        found[id(getattr(cls, "node", cls))] = cls
    return next(iter(found.values())) if len(found) == 1 else None


def _instance_class(semantic: SemanticModel, expr: ast.AST) -> Optional[ast.ClassDef]:
    """The class of this module every assignment of ``expr`` instantiates, if there is one."""

    def class_of(func: ast.AST) -> Optional[ast.ClassDef]:
        if not isinstance(func, ast.Name):
            return None
        nodes = semantic.binding_nodes(func.id, semantic.scope_of(func))
        return nodes[0] if len(nodes) == 1 and isinstance(nodes[0], ast.ClassDef) else None

    return _instantiated(semantic, expr, class_of)


@dataclass(frozen=True)
class ProjectTarget:
    module: ModuleSource  # the module the callee is defined in
    target: Target


def resolve_in_project(
    source: ModuleSource, call: ast.Call, index: ProjectIndex, prefiltered: bool = True, module_forward: bool = False
) -> Optional[ProjectTarget]:
    """The function of another project module that ``call`` runs, if the imports say so
    (``prefiltered=False``: wherever it is defined, also in a module without AMP code;
    ``module_forward`` as for ``resolve``)."""
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
        cls = enclosing_class(source.semantic, call)
        return _inherited(source, cls, func.attr, index) if cls is not None else None
    named = index.definition(source, func, prefiltered)
    if named is not None:
        if isinstance(named.node, _FUNCTIONS) and named.attribute is None:
            return ProjectTarget(named.module, Target(named.node, False))
        return None  # a class: constructing it runs ``__init__`` (not followed)
    receiver = func if isinstance(func, ast.Name) else getattr(func, "value", None)
    instance = _project_instance(source, receiver, index, prefiltered)
    if instance is None:
        return None
    if isinstance(func, ast.Name):
        method = _call_method(instance.module.semantic, instance.node, module_forward)
        if method is not None:
            return ProjectTarget(instance.module, Target(method, True))
    method_name = "__call__" if isinstance(func, ast.Name) else func.attr
    method = _method(instance.module.semantic, instance.node, method_name)
    if method is None:
        return _inherited(instance.module, instance.node, method_name, index)
    return ProjectTarget(instance.module, Target(method, True))


def _inherited(source: ModuleSource, cls: ast.ClassDef, name: str, index: ProjectIndex) -> Optional[ProjectTarget]:
    """``name`` from a base class imported from another project module (one level of bases of
    each class of the family defined in ``source``)."""
    for member_of in class_family(source.semantic, cls):
        for base in member_of.bases:
            named = _imported_class(source, base, index)
            if named is None:
                continue
            method = _method(named.module.semantic, named.node, name)
            if method is not None:
                return ProjectTarget(named.module, Target(method, True))
    return None


def _project_instance(
    source: ModuleSource, expr: Optional[ast.AST], index: ProjectIndex, prefiltered: bool = True
) -> Optional[Definition]:
    """The class of another project module every assignment of ``expr`` instantiates."""
    return _instantiated(source.semantic, expr, lambda func: _imported_class(source, func, index, prefiltered))


def _imported_class(
    source: ModuleSource, expr: ast.AST, index: ProjectIndex, prefiltered: bool = True
) -> Optional[Definition]:
    """The class of another project module that ``expr`` names through an import."""
    named = index.definition(source, expr, prefiltered)
    if named is None or not isinstance(named.node, ast.ClassDef) or named.attribute is not None:
        return None
    return named


def bind_arguments(target: Target, call: ast.Call) -> Optional[dict[str, ast.expr]]:
    """Parameter name -> argument expression at this call; None for ``*args``/``**kwargs`` calls."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None
    args = target.function.args
    positional = [*args.posonlyargs, *args.args]
    if target.bound_self and positional:
        positional = positional[1:]
    bound: dict[str, ast.expr] = {}
    for param, arg in zip(positional, call.args):
        bound[param.arg] = arg
    names = {p.arg for p in [*positional, *args.kwonlyargs]}
    for keyword in call.keywords:
        if keyword.arg in names:
            bound[keyword.arg] = keyword.value
    return bound


def calls_named(semantic: SemanticModel, name: str) -> list[ast.Call]:
    """The calls of the module whose callee's last name is ``name`` (``name(...)``,
    ``x.name(...)``), in source order: calls are indexed by that name once per module, so that
    asking about each function of a large module stays linear."""
    index = getattr(semantic, "_calls_by_name", None)
    if index is None:
        index = {}
        for call in semantic.nodes(ast.Call):
            func = call.func
            last = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if last is not None:
                index.setdefault(last, []).append(call)
        semantic._calls_by_name = index
    return index.get(name, [])


def module_callers(semantic: SemanticModel, function: ast.AST) -> list[tuple[ast.Call, Optional[dict]]]:
    """(call, parameter -> argument, or None for ``*args`` calls) for every call of the module
    that runs ``function``."""
    found = []
    for call in calls_named(semantic, getattr(function, "name", "")):
        target = resolve(semantic, call)
        if target is not None and target.function is function:
            found.append((call, bind_arguments(target, call)))
    return found


def flow_of(source: ModuleSource) -> ValueFlow:
    """The module's value flow, with its callers and its calls' returned values resolved here
    (in the module, or through the project's imports)."""
    return value_flow(source.semantic, source.path, module_callers, lambda call: returned_values(source, call))


def returned_values(source: ModuleSource, call: ast.Call) -> Optional[list[tuple[ValueFlow, Optional[ast.expr]]]]:
    """What the function ``call`` runs returns: its module's value flow and each ``return``'s
    value (None for a bare ``return``); None where the function is not known or returns nothing.
    A function of another project module is loaded whatever its text (a factory of optimizers
    and schedulers names no AMP API); asked only for the objects a rule asks about."""
    module, target = source, resolve(source.semantic, call)
    if target is None:
        project = getattr(source, "project", None)
        found = resolve_in_project(source, call, project, prefiltered=False) if project is not None else None
        if found is None:
            return None
        module, target = found.module, found.target
    own = list(own_nodes(target.function))
    returns = [node for node in own if isinstance(node, ast.Return)]
    if not returns or any(isinstance(node, (ast.Yield, ast.YieldFrom)) for node in own):
        return None  # a generator's call gives the generator
    flow = flow_of(module)
    return [(flow, node.value) for node in returns]
