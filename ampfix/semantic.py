"""A light semantic model: scopes, import aliases and qualified names, on CPython's `ast`.

LibCST's ScopeProvider/QualifiedNameProvider cost ~11x a parse per file (see
../shared/reference/linter-conventions.md); what AMP rules need is much less. This module builds,
in one walk, a table of which names each scope binds and how:

- ``import torch.cuda.amp as A``          A       -> torch.cuda.amp       (import)
- ``from torch.cuda import amp``          amp     -> torch.cuda.amp       (import)
- ``from torch.cuda.amp import autocast`` autocast -> torch.cuda.amp.autocast (import)
- ``ac = torch.cuda.amp.autocast``        ac      -> whatever the value resolves to (alias)
- ``amp = None`` (the usual except-ImportError fallback) binds nothing that shadows
- any other binding (a def, a parameter, an assignment, a loop target) shadows the name

``qualified_name(expr)`` resolves a Name/Attribute chain with Python's scoping rules (class
bodies are skipped for nested functions, ``global`` is honoured). A name bound to different
things in one scope resolves to nothing: the checker stays silent rather than guess.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator, Optional

IMPORT, ALIAS, NONE, OTHER = "import", "alias", "none", "other"


@dataclass
class Binding:
    kind: str
    qualified: Optional[str]  # for imports
    node: ast.AST  # the statement that binds
    value: Optional[ast.expr] = None  # for aliases
    scope: Optional["Scope"] = None


@dataclass(eq=False)
class Scope:
    node: ast.AST
    kind: str  # module | function | class | comprehension
    parent: Optional["Scope"]
    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    global_names: set[str] = field(default_factory=set)

    def bind(self, name: str, binding: Binding) -> None:
        binding.scope = self
        self.bindings.setdefault(name, []).append(binding)


_SCOPE_NODES = frozenset({
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.Lambda,
    ast.ClassDef,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
})


def _position(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def dotted_parts(expr: ast.AST) -> Optional[list[str]]:
    """['torch', 'cuda', 'amp'] for ``torch.cuda.amp``; None for anything but a Name chain."""
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    parts.append(expr.id)
    parts.reverse()
    return parts


def own_nodes(scope: ast.AST):
    """The nodes of a function's (or module's) own code, not of the functions, classes and
    lambdas defined in it."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def dotted_name(expr: ast.AST) -> Optional[str]:
    parts = dotted_parts(expr)
    return ".".join(parts) if parts else None


class SemanticModel:
    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.module_scope = Scope(tree, "module", None)
        self.scopes: dict[ast.AST, Scope] = {tree: self.module_scope}
        self.parents: dict[ast.AST, ast.AST] = {}
        self.by_type: dict[type, list[ast.AST]] = defaultdict(list)
        self._sorted: set[type] = set()
        self._scope_cache: dict[int, Scope] = {}
        _Binder(self).visit_module(tree)

    def release(self) -> None:
        """Break the links from bindings back to their scopes, the model's own cycles, so that
        reference counting frees it (and the tree) at once: a file analysed in parts drops
        each piece's model before the next is built."""
        for scope in self.scopes.values():
            for bindings in scope.bindings.values():
                for binding in bindings:
                    binding.scope = None
        # and what rules memoized on it (a module's value flow points back at the model)
        self.__dict__.clear()

    # -- structure --------------------------------------------------------------------------

    def nodes(self, *types: type) -> list:
        """Every node of the given types, in source order: one walk serves every rule."""
        for kind in types:
            if kind not in self._sorted:
                self.by_type[kind].sort(key=_position)
                self._sorted.add(kind)
        if len(types) == 1:
            return self.by_type[types[0]]
        found = [n for t in types for n in self.by_type[t]]
        found.sort(key=_position)
        return found

    def parent(self, node: ast.AST) -> Optional[ast.AST]:
        return self.parents.get(node)

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        node = self.parents.get(node)
        while node is not None:
            yield node
            node = self.parents.get(node)

    def scope_of(self, node: ast.AST) -> Scope:
        """The scope in which node is evaluated (decorators and defaults: the enclosing one)."""
        cached = self._scope_cache.get(id(node))
        if cached is not None:
            return cached
        child = node
        scope = self.module_scope
        for ancestor in self.ancestors(node):
            candidate = self.scopes.get(ancestor)
            if candidate is not None and _evaluated_inside(ancestor, child):
                scope = candidate
                break
            child = ancestor
        self._scope_cache[id(node)] = scope
        return scope

    # -- names ------------------------------------------------------------------------------

    def lookup(self, name: str, scope: Scope, _seen: Optional[set] = None) -> Optional[str]:
        """Qualified name that ``name`` refers to in ``scope``, or None (unknown or shadowed)."""
        current: Optional[Scope] = scope
        first = True
        while current is not None:
            if current.kind == "class" and not first:
                current = current.parent
                continue
            if name in current.global_names:
                current = self.module_scope
            bindings = current.bindings.get(name)
            if bindings:
                return self._resolve_bindings(bindings, _seen or set())
            first = False
            current = current.parent
        return None

    def binding_nodes(self, name: str, scope: Scope) -> list[ast.AST]:
        """The statements that bind ``name`` in the first scope (innermost out) that binds it."""
        return [b.node for b in self._first_bindings(name, scope)]

    def is_bound(self, name: str, scope: Scope) -> bool:
        current: Optional[Scope] = scope
        while current is not None:
            if name in current.bindings:
                return True
            current = current.parent
        return False

    def _resolve_bindings(self, bindings: list[Binding], seen: set) -> Optional[str]:
        names: set[str] = set()
        for binding in bindings:
            if binding.kind == NONE:
                continue
            if binding.kind == IMPORT:
                if binding.qualified is None:
                    return None
                names.add(binding.qualified)
            elif binding.kind == ALIAS:
                if id(binding) in seen:
                    return None
                seen.add(id(binding))
                target = self.qualified_name(binding.value, binding.scope, seen)
                if target is None:
                    return None
                names.add(target)
            else:
                return None
        return names.pop() if len(names) == 1 else None

    def qualified_name(
        self, expr: ast.AST, scope: Optional[Scope] = None, _seen: Optional[set] = None
    ) -> Optional[str]:
        parts = dotted_parts(expr)
        if parts is None:
            return None
        base = self.lookup(parts[0], scope or self.scope_of(expr), _seen)
        if base is None:
            return None
        return ".".join([base, *parts[1:]])

    def qualified_name_where_imported(self, expr: ast.AST) -> Optional[str]:
        """``qualified_name``, reading a name that a ``try`` body imports and one of its ``except``
        handlers defines as a fallback (``class GradScaler: ...`` for a PyTorch without AMP, RAFT's
        shim) as the import: the fallback runs only where the import fails."""
        found = self.qualified_name(expr)
        parts = dotted_parts(expr)
        if found is not None or parts is None:
            return found
        bindings = self._first_bindings(parts[0], self.scope_of(expr))
        imports = [b for b in bindings if b.kind == IMPORT]
        if not imports or len({b.qualified for b in imports}) != 1 or imports[0].qualified is None:
            return None
        fallbacks = [b for b in bindings if b.kind != IMPORT]
        if not all(self._fallback_of(b.node, imports) for b in fallbacks):
            return None
        return ".".join([imports[0].qualified, *parts[1:]])

    def _first_bindings(self, name: str, scope: Scope) -> list[Binding]:
        """The bindings of ``name`` in the first scope (innermost out) that binds it."""
        current: Optional[Scope] = scope
        first = True
        while current is not None:
            if not (current.kind == "class" and not first) and name in current.bindings:
                return list(current.bindings[name])
            first = False
            current = current.parent
        return []

    def _fallback_of(self, node: ast.AST, imports: list[Binding]) -> bool:
        """Whether ``node`` sits in an ``except`` handler of a ``try`` whose body holds one of ``imports``."""
        for ancestor in self.ancestors(node):
            if isinstance(ancestor, ast.ExceptHandler):
                try_node = self.parent(ancestor)
                body = set(map(id, (n for stmt in getattr(try_node, "body", ()) for n in ast.walk(stmt))))
                return any(id(b.node) in body for b in imports)
        return False

    def module_alias(self, module: str, scope: Scope) -> Optional[str]:
        """A local name that refers to ``module`` at scope (``torch`` for ``import torch``)."""
        short = module.rsplit(".", 1)[-1]
        if self.lookup(short, scope) == module:
            return short
        for name, bindings in self.module_scope.bindings.items():
            if any(b.kind == IMPORT and b.qualified == module for b in bindings):
                if self.lookup(name, scope) == module:
                    return name
        return None

    def import_bindings(self, name: str) -> list[Binding]:
        """Every import statement, in any scope, that binds ``name``."""
        found = []
        for scope in self.scopes.values():
            found.extend(b for b in scope.bindings.get(name, ()) if b.kind == IMPORT)
        return found


# Nodes that bind names; every other node type skips _bind entirely.
_BINDING_NODES = frozenset(
    {
        ast.Import,
        ast.ImportFrom,
        ast.Assign,
        ast.AnnAssign,
        ast.AugAssign,
        ast.For,
        ast.AsyncFor,
        ast.comprehension,
        ast.withitem,
        ast.ExceptHandler,
        ast.NamedExpr,
        ast.Global,
        ast.Nonlocal,
        *(getattr(ast, name) for name in ("MatchAs", "MatchStar") if hasattr(ast, name)),
    }
)


def _inside_children(scope_node: ast.AST) -> set[int]:
    """ids of the direct children of a scope node that are evaluated inside its scope."""
    if isinstance(scope_node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {id(stmt) for stmt in scope_node.body}
    if isinstance(scope_node, ast.Lambda):
        return {id(scope_node.body)}
    children = set(map(id, ast.iter_child_nodes(scope_node)))
    if scope_node.generators:
        children.discard(id(scope_node.generators[0].iter))
    return children


def _evaluated_inside(scope_node: ast.AST, child: ast.AST) -> bool:
    """Whether ``child`` (a direct child of a scope-creating node) runs inside its scope."""
    if isinstance(scope_node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return child in scope_node.body
    if isinstance(scope_node, ast.ClassDef):
        return child in scope_node.body
    if isinstance(scope_node, ast.Lambda):
        return child is scope_node.body
    if isinstance(scope_node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        # The first iterable is evaluated outside; close enough to treat all generators alike.
        return not (scope_node.generators and child is scope_node.generators[0].iter)
    return True


# ``Load``/``Store``, operators and comparison operators: one shared instance per kind in a
# tree, with nothing below them and nothing to ask of them; a third of all nodes, not walked.
_SHARED_LEAVES = frozenset(
    kind
    for base in (ast.expr_context, ast.operator, ast.boolop, ast.unaryop, ast.cmpop)
    for kind in base.__subclasses__()
)


class _Binder:
    """Fills scopes and parent links in one walk."""

    def __init__(self, model: SemanticModel):
        self.model = model

    def visit_module(self, tree: ast.Module) -> None:
        self._walk(tree, self.model.module_scope)

    def _walk(self, root: ast.AST, scope: Scope) -> None:
        # ast.iter_child_nodes, inlined: this loop visits every node of every parsed file.
        parents = self.model.parents
        by_type = self.model.by_type
        bind = self._bind
        AST = ast.AST
        skipped = _SHARED_LEAVES
        stack: list[tuple[ast.AST, Scope]] = [(root, scope)]
        pop, push = stack.pop, stack.append
        while stack:
            node, scope = pop()
            kind = type(node)
            by_type[kind].append(node)
            if kind in _BINDING_NODES:
                bind(node, scope)
            inner = None
            if kind in _SCOPE_NODES and node is not root:
                inner = self._open_scope(node, scope)
                inside = _inside_children(node)
            for name in node._fields:
                value = getattr(node, name, None)
                if isinstance(value, list):
                    for item in value:
                        if isinstance(item, AST) and type(item) not in skipped:
                            parents[item] = node
                            push((item, inner if inner is not None and id(item) in inside else scope))
                elif isinstance(value, AST) and type(value) not in skipped:
                    parents[value] = node
                    push((value, inner if inner is not None and id(value) in inside else scope))

    def _open_scope(self, node: ast.AST, outer: Scope) -> Scope:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            outer.bind(node.name, Binding(OTHER, None, node))
        kind = (
            "class"
            if isinstance(node, ast.ClassDef)
            else "function"
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            else "comprehension"
        )
        scope = Scope(node, kind, outer)
        self.model.scopes[node] = scope
        args = getattr(node, "args", None)
        if isinstance(args, ast.arguments):
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if arg is not None:
                    scope.bind(arg.arg, Binding(OTHER, None, node))
        return scope

    def _bind(self, node: ast.AST, scope: Scope) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    scope.bind(alias.asname, Binding(IMPORT, alias.name, node))
                else:
                    top = alias.name.split(".", 1)[0]
                    scope.bind(top, Binding(IMPORT, top, node))
        elif isinstance(node, ast.ImportFrom):
            module = None if node.level else node.module
            for alias in node.names:
                if alias.name == "*":
                    continue
                qualified = f"{module}.{alias.name}" if module else None
                scope.bind(alias.asname or alias.name, Binding(IMPORT, qualified, node))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            for target in targets:
                if isinstance(target, ast.Name):
                    scope.bind(target.id, self._assignment_binding(node, value, len(targets)))
                else:
                    self._bind_targets(target, scope, node)
        elif isinstance(node, (ast.AugAssign,)):
            self._bind_targets(node.target, scope, node)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self._bind_targets(node.target, scope, node)
        elif isinstance(node, ast.comprehension):
            self._bind_targets(node.target, scope, node)
        elif isinstance(node, ast.withitem):
            if node.optional_vars is not None:
                self._bind_targets(node.optional_vars, scope, node)
        elif isinstance(node, ast.ExceptHandler):
            if node.name:
                scope.bind(node.name, Binding(OTHER, None, node))
        elif isinstance(node, ast.NamedExpr):
            self._bind_targets(node.target, scope, node)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            if isinstance(node, ast.Global):
                scope.global_names.update(node.names)
        elif type(node).__name__ in ("MatchAs", "MatchStar") and getattr(node, "name", None):
            scope.bind(node.name, Binding(OTHER, None, node))

    def _assignment_binding(self, node: ast.AST, value: Optional[ast.expr], n_targets: int):
        if isinstance(value, ast.Constant) and value.value is None:
            return Binding(NONE, None, node)
        if n_targets == 1 and isinstance(value, (ast.Name, ast.Attribute)):
            if dotted_parts(value) is not None:
                return Binding(ALIAS, None, node, value=value)
        return Binding(OTHER, None, node)

    def _bind_targets(self, target: ast.AST, scope: Scope, node: ast.AST) -> None:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                scope.bind(sub.id, Binding(OTHER, None, node))
