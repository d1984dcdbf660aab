"""What a name or a field may hold: the assignments that can reach an expression, by identity.

Identities, not source text:
- ``self.x`` in a method of class ``C`` is the field ``x`` of ``C`` (and of its bases defined in
  the module): the ``self.scaler`` of class A is not the ``self.scaler`` of class B, even when
  both classes have the same name (version-dependent definitions);
- a plain name is the binding of its function when the function assigns it (a local), else the
  module's global;
- any other attribute (``obj.x``) is every ``.x`` assigned in the module: the object is unknown.
"""

from __future__ import annotations

import ast
from typing import Optional

from ampfix.semantic import SemanticModel

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def enclosing_class(semantic: SemanticModel, node: ast.AST) -> Optional[ast.ClassDef]:
    """The class whose method holds node (``self`` is an instance of it)."""
    for ancestor in semantic.ancestors(node):
        if isinstance(ancestor, ast.ClassDef):
            return ancestor
    return None


def enclosing_function(semantic: SemanticModel, node: ast.AST) -> Optional[ast.AST]:
    for ancestor in semantic.ancestors(node):
        if isinstance(ancestor, _FUNCTIONS + (ast.Lambda,)):
            return ancestor
    return None


def class_family(semantic: SemanticModel, cls: ast.ClassDef) -> list[ast.ClassDef]:
    """The class and its bases (and their bases) defined in this module, by name."""
    by_name: dict[str, list[ast.ClassDef]] = {}
    for node in semantic.nodes(ast.ClassDef):
        by_name.setdefault(node.name, []).append(node)
    family, todo = [], [cls]
    while todo:
        current = todo.pop()
        if any(current is c for c in family):
            continue
        family.append(current)
        for base in current.bases:
            if isinstance(base, ast.Name):
                todo.extend(by_name.get(base.id, []))
    return family


def _is_self_field(expr: ast.AST) -> bool:
    return isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "self"


def assignments(semantic: SemanticModel, expr: ast.AST) -> list[ast.stmt]:
    """The assignment statements (``=``, annotated, augmented) that may give ``expr`` its value."""
    if isinstance(expr, ast.Name):
        function = enclosing_function(semantic, expr)
        local = [s for s in _assigning(semantic, expr, function)] if function is not None else []
        if local and not _declared_global(semantic, function, expr.id):
            return local
        return [s for s in _assigning(semantic, expr, None) if enclosing_function(semantic, s) is None]
    if _is_self_field(expr):
        cls = enclosing_class(semantic, expr)
        if cls is not None:
            family = class_family(semantic, cls)
            return [
                s for s in _assigning(semantic, expr, None)
                if any(c is enclosing_class(semantic, s) for c in family)
            ]
    if isinstance(expr, ast.Attribute):
        return list(_assigning(semantic, expr, None))
    return []


def _declared_global(semantic: SemanticModel, function: ast.AST, name: str) -> bool:
    scope = semantic.scopes.get(function)
    return scope is not None and name in scope.global_names


def _assigning(semantic: SemanticModel, expr: ast.AST, within: Optional[ast.AST]):
    """Assignments whose target is ``expr``'s name (a Name) or attribute name, from an index built
    once per module (a file with many calls would otherwise scan every assignment per call)."""
    index = _assignment_index(semantic)
    if isinstance(expr, ast.Name):
        candidates = index.get(("name", expr.id), [])
    elif _is_self_field(expr):
        candidates = index.get(("self", expr.attr), [])
    else:
        candidates = index.get(("attr", expr.attr), []) + index.get(("self", expr.attr), [])
    for node in candidates:
        if within is not None and enclosing_function(semantic, node) is not within:
            continue
        yield node


def _assignment_index(semantic: SemanticModel) -> dict:
    cached = getattr(semantic, "_assignment_index", None)  # memoized on the module's semantic model
    if cached is not None:
        return cached
    index: dict[tuple, list] = {}
    for node in semantic.nodes(ast.Assign, ast.AnnAssign, ast.AugAssign):
        if node.value is None:
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in (e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])):
            if isinstance(target, ast.Name):
                index.setdefault(("name", target.id), []).append(node)
            elif _is_self_field(target):
                index.setdefault(("self", target.attr), []).append(node)
            elif isinstance(target, ast.Attribute):
                index.setdefault(("attr", target.attr), []).append(node)
    semantic._assignment_index = index
    return index
