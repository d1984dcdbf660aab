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
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Callable, Optional

from ampfix.program.flow import bindings_of, dotted_key
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
    """The class and its bases (and their bases) defined in this module, by name (memoized on
    the module's semantic model: fields and methods ask it per reference)."""
    families = getattr(semantic, "_class_families", None)
    if families is None:
        families = semantic._class_families = {}
    found = families.get(id(cls))
    if found is None:
        found = families[id(cls)] = _class_family(semantic, cls)
    return found


def _class_family(semantic: SemanticModel, cls: ast.ClassDef) -> list[ast.ClassDef]:
    by_name = getattr(semantic, "_classes_by_name", None)
    if by_name is None:
        by_name = semantic._classes_by_name = {}
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
        return list(_assignment_index(semantic)[1].get((("name", expr.id), None), ()))  # the module's own
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
    once per module (a file with many calls would otherwise scan every assignment per call);
    ``within``: only those whose enclosing function is that one, from the same index by owner
    (a file of many functions with the same local names would otherwise walk the ancestors of
    every same-named assignment of the module per lookup)."""
    index, by_owner = _assignment_index(semantic)
    if isinstance(expr, ast.Name):
        keys = (("name", expr.id),)
    elif _is_self_field(expr):
        keys = (("self", expr.attr),)
    else:
        keys = (("attr", expr.attr), ("self", expr.attr))
    for key in keys:
        yield from index.get(key, ()) if within is None else by_owner.get((key, within), ())


def _assignment_index(semantic: SemanticModel) -> tuple[dict, dict]:
    """(target key -> assignments, (target key, enclosing function) -> assignments), each list in
    source order."""
    cached = getattr(semantic, "_assignment_index", None)  # memoized on the module's semantic model
    if cached is not None:
        return cached
    index: dict[tuple, list] = {}
    by_owner: dict[tuple, list] = {}
    for node in semantic.nodes(ast.Assign, ast.AnnAssign, ast.AugAssign):
        if node.value is None:
            continue
        owner = None
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in (e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])):
            if isinstance(target, ast.Name):
                key = ("name", target.id)
            elif _is_self_field(target):
                key = ("self", target.attr)
            elif isinstance(target, ast.Attribute):
                key = ("attr", target.attr)
            else:
                continue
            if owner is None:
                owner = (enclosing_function(semantic, node),)
            index.setdefault(key, []).append(node)
            by_owner.setdefault((key, owner[0]), []).append(node)
    semantic._assignment_index = index, by_owner
    return index, by_owner


# -- value flow: reaching definitions and object identity ------------------------------------
#
# A reference (``scaler``, ``self.scaler``, ``cfg.amp``) at a statement has the definitions that
# reach it on the function's control-flow graph (ampfix.program.flow records what each node
# binds); each definition's value is another expression, read at its own statement. Following
# them ends at an *object*: a call that creates one (``GradScaler(...)``, ``torch.optim.AdamW(...)``),
# a parameter (or, when every module-local call binds it, what the callers pass), a field of a
# class (``self.x`` is one object per class family), a loop variable, a ``with ... as`` target.
# Aliases (``s = scaler``) are the same object; a name with several reaching definitions holds any
# of their objects (``objects``) and has one identity for all of them (``object_of``).

_MAX_DEPTH = 8  # alias chains followed (a = b; b = c; ...), through callers and fields


@dataclass(frozen=True)
class ObjectId:
    """An abstract object. ``kind``: ``call`` (created or returned by the call at ``site``;
    ``callee`` its qualified name), ``param``, ``field`` (``self.x`` of a class family), ``loop``
    (a ``for`` target), ``with`` (a ``with ... as`` target), ``global`` (a module name with no one
    value), ``attr`` (an attribute of another object), ``phi`` (one of several), ``import``."""

    kind: str
    site: tuple  # what makes it one object: (path, line, column, ...) of where it comes from
    callee: Optional[str] = None
    label: str = dc_field(default="", compare=False)  # how messages name it

    @property
    def line(self) -> Optional[int]:
        return self.site[1] if len(self.site) > 1 and isinstance(self.site[1], int) else None


@dataclass(frozen=True)
class Definition:
    """A binding that reaches a use: its flow node (0 is a parameter's, at entry), statement
    and value (None when the binding has no one expression: a loop target, an unpacking);
    ``element``: (the value unpacked, the position) for ``opt, sched = build(model)``."""

    key: str
    kind: str
    node: int
    stmt: Optional[ast.AST]
    value: Optional[ast.expr]
    element: Optional[tuple] = None


class ValueFlow:
    """Reaching definitions and objects for one module, computed on demand and memoized: one
    control-flow graph per function, one forward pass per (function, reference)."""

    def __init__(
        self, semantic: SemanticModel, path: str = "<module>", callers: Optional[Callable] = None,
        returns: Optional[Callable] = None,
    ):
        self.semantic = semantic
        self.path = path
        # callers(semantic, function) -> [(call, parameter -> argument or None)]: the module's
        # calls that run the function (ampfix.program.calls.module_callers; calls imports values)
        self._find_callers = callers
        # returns(call) -> [(the callee module's ValueFlow, each `return`'s value or None)], or
        # None where the call's function is not known (ampfix.program.calls.returned_values)
        self._find_returns = returns
        self._call_nodes: dict[tuple, ast.Call] = {}  # a call object's site -> its call
        self._elements: dict[tuple, tuple] = {}  # an element object's site -> (value unpacked, position)
        self._origins: dict[ObjectId, frozenset] = {}
        self._graphs: dict[int, object] = {}
        self._reaching: dict[tuple, list] = {}
        self._defining: dict[int, dict] = {}
        self._objects: dict[int, frozenset] = {}
        self._callers_memo: dict[int, list] = {}
        self._bound_by: dict[int, dict] = {}  # id(assignment) -> its bindings by key

    # -- graphs and reaching definitions ---------------------------------------------------

    def graph(self, function: ast.AST):
        """The control-flow graph of a function or of the module's top level (built once)."""
        from ampfix.program.flow import build  # flow knows nothing of values

        found = self._graphs.get(id(function))
        if found is None:
            found = self._graphs[id(function)] = build(function, walrus=bool(self.semantic.nodes(ast.NamedExpr)))
        return found

    def reaching(self, function: ast.AST, key: str, node: int) -> list[Definition]:
        """The definitions of ``key`` (a dotted reference) that reach the entry of ``node``."""
        per_node = self._reaching.get((id(function), key))
        if per_node is None:
            per_node = self._reaching[(id(function), key)] = self._solve(function, key)
        return per_node.get(node, [])

    def _defining_nodes(self, function: ast.AST) -> dict:
        """key -> [(node, Binding)] of every binding in the graph, and the parameters at entry."""
        found = self._defining.get(id(function))
        if found is None:
            graph = self.graph(function)
            found = {}
            for index, bound in graph.bindings.items():
                for binding in bound:
                    found.setdefault(binding.key, []).append((index, binding))
            self._defining[id(function)] = found
        return found

    def _solve(self, function: ast.AST, key: str) -> dict:
        """A forward may-analysis for one reference: the definitions live at each node's entry.
        A binding of ``key`` replaces them; a binding of a prefix (``a = ...`` for ``a.b``) kills
        them (the field of another object); a parameter is defined at entry."""
        graph = self.graph(function)
        defining = self._defining_nodes(function)
        gen: dict[int, list[Definition]] = {}
        for index, binding in defining.get(key, ()):
            gen.setdefault(index, []).append(
                Definition(key, binding.kind, index, graph.nodes[index], binding.value, binding.element)
            )
        parts = key.split(".")
        kills = {
            index for i in range(1, len(parts))
            for index, _ in defining.get(".".join(parts[:i]), ())
        }
        entry: list[Definition] = []
        if len(parts) == 1 and key in parameter_names(function):
            entry = [Definition(key, "param", graph.ENTRY, function, None)]
        if not gen and not entry:
            return {}
        preds = graph.predecessors()
        live_in: dict[int, frozenset] = {}
        live_out: dict[int, frozenset] = {graph.ENTRY: frozenset(entry)}
        work = list(graph.succ.get(graph.ENTRY, ()))
        work = [target for target, _ in work]
        while work:
            index = work.pop()
            incoming = frozenset().union(*(live_out.get(p, frozenset()) for p in preds.get(index, ())))
            live_in[index] = incoming
            if index in gen:
                out = frozenset(gen[index])
            elif index in kills:
                out = frozenset()
            else:
                out = incoming
            if live_out.get(index) != out or index not in live_out:
                live_out[index] = out
                work.extend(target for target, _ in graph.succ.get(index, ()))
        return {index: sorted(defs, key=lambda d: d.node) for index, defs in live_in.items() if defs}

    def definitions_at(self, expr: ast.AST) -> list[Definition]:
        """The definitions of the reference ``expr`` (a name or a dotted field, read or, for an
        augmented assignment's target, read before it is rebound) that reach where it is."""
        key = dotted_key(expr)
        owner, stmt = self._owner_and_statement(expr)
        if key is None or owner is None or isinstance(owner, ast.Lambda) or stmt is None:
            return []
        node = self.graph(owner).node_of(stmt)
        return self.reaching(owner, key, node) if node is not None else []

    # -- literal values ------------------------------------------------------------------------

    def constants(self, expr: ast.AST, depth: int = 0) -> Optional[frozenset]:
        """The literal values ``expr`` may have, when every one is a literal: a constant, a name
        whose every reaching assignment (a module name's every one) is one, an attribute of a
        class of this module assigned once in its body and never through the class (``CFG.accum``
        of a Kaggle configuration class); None when some value is not known."""
        if depth > _MAX_DEPTH:
            return None
        if isinstance(expr, ast.Constant):
            return frozenset({expr.value})
        if isinstance(expr, ast.Name):
            definitions = self.definitions_at(expr) or self._module_definitions(expr)
            if not definitions:
                return None
            found: set = set()
            for definition in definitions:
                elements = _literal_loop_elements(definition, expr.id)
                if elements is None:
                    if definition.kind not in ("assign", "annassign") or definition.value is None:
                        return None
                    elements = [definition.value]
                values = self._union_of_constants(elements, depth)
                if values is None:
                    return None
                found |= values
            return frozenset(found)
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            bindings = self.semantic.module_scope.bindings.get(expr.value.id, [])
            if len(bindings) != 1 or not isinstance(bindings[0].node, ast.ClassDef) or assigned_through(self.semantic, expr):
                return None
            return class_constants(bindings[0].node, expr.attr)
        if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name):
            key = expr.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return self._configuration_entry(expr.value, key.value, depth)
        return None

    def _union_of_constants(self, expressions: list, depth: int) -> Optional[frozenset]:
        found: set = set()
        for expression in expressions:
            values = self.constants(expression, depth + 1)
            if values is None:
                return None
            found |= values
        return frozenset(found)

    def _entry_written(self, name: str, key: str) -> bool:
        """Whether the module may write the entry ``key`` of the dict named ``name`` anywhere, in
        any function: ``name[k] = v`` or ``del name[k]`` with a ``k`` that may be ``key`` (one
        known to be another key does not count), or ``name.update(...)`` and its kin."""
        for node in self.semantic.nodes(ast.Subscript):
            if isinstance(node.value, ast.Name) and node.value.id == name and isinstance(node.ctx, (ast.Store, ast.Del)):
                keys = self.constants(node.slice)
                if keys is None or key in keys:
                    return True
        for node in self.semantic.nodes(ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == name and node.attr in _WRITES_ENTRIES:
                return True
        return False

    def _configuration_entry(self, name: ast.Name, key: str, depth: int) -> Optional[frozenset]:
        """The literal values of ``CFG["accum_iter"]`` where the module binds ``CFG`` only to a
        dict literal or to ``dict(vars(C))``/``vars(C)`` of a configuration class of this
        module (Kaggle notebooks: ``class CFG: accum_iter = 1`` then ``CFG = dict(vars(CFG))``),
        and never writes an entry of it (``CFG["accum_iter"] = 2``, ``CFG.update(...)``). A
        class binding of the same name is passed over: a string key does not index a class."""
        if self._entry_written(name.id, key):
            return None
        definitions = self.definitions_at(name) or self._module_definitions(name, besides_classes=True)
        if not definitions or any(d.kind not in ("assign", "annassign") or d.value is None for d in definitions):
            return None
        found: set = set()
        for definition in definitions:
            entry = self._entry_of(definition.value, key, depth)
            if entry is None:
                return None
            found |= entry
        return frozenset(found)

    def _entry_of(self, value: ast.AST, key: str, depth: int) -> Optional[frozenset]:
        if isinstance(value, ast.Dict):
            entries = [v for k, v in zip(value.keys, value.values) if isinstance(k, ast.Constant) and k.value == key]
            if len(entries) != 1 or any(k is None for k in value.keys):
                return None  # absent, repeated, or `**other` that may hold it
            return self.constants(entries[0], depth + 1)
        if isinstance(value, ast.Call) and not value.keywords and len(value.args) == 1 and isinstance(value.func, ast.Name):
            if value.func.id == "dict":
                return self._entry_of(value.args[0], key, depth)
            if value.func.id == "vars" and isinstance(value.args[0], ast.Name):
                bound = self.semantic.module_scope.bindings.get(value.args[0].id, [])
                classes = [b.node for b in bound if isinstance(b.node, ast.ClassDef)]
                if len(classes) != 1:
                    return None
                cls = classes[0]
                attribute = ast.Attribute(value=ast.Name(id=cls.name, ctx=ast.Load()), attr=key, ctx=ast.Load())
                if assigned_through(self.semantic, attribute):
                    return None  # `CFG.accum_iter = 2` before the copy
                return class_constants(cls, key)
        return None

    def _module_definitions(self, name: ast.Name, besides_classes: bool = False) -> list[Definition]:
        """For a module name read in a function that does not bind it: its module-level plain
        assignments (the function may run after any of them); none when some function rebinds it
        (``global``) or it has another kind of binding (``besides_classes``: a class of that name,
        which the caller's use rules out, such as a string key, is passed over)."""
        owner, _ = self._owner_and_statement(name)
        scope = self.semantic.scopes.get(owner) if owner is not None else None
        if owner is None or owner is self.semantic.tree or scope is None or name.id in scope.bindings:
            return []
        bound = self.semantic.module_scope.bindings.get(name.id, [])
        if besides_classes:
            bound = [b for b in bound if not isinstance(b.node, ast.ClassDef)]
        everywhere = _assignment_index(self.semantic)[0].get(("name", name.id), [])
        if not bound or len(everywhere) != len(bound):
            return []  # also assigned in a function (a `global`, or a local of the same name)
        found = []
        for binding in bound:
            definition = self._single_definition(self.semantic.tree, name.id, binding.node)
            if definition is None:
                return []
            found.append(definition)
        return found

    # -- objects -------------------------------------------------------------------------------

    def objects(self, expr: ast.AST, depth: int = 0) -> frozenset:
        """The objects ``expr`` may evaluate to (empty when nothing is known: a constant, an
        arithmetic result, a subscript)."""
        if depth == 0:
            cached = self._objects.get(id(expr))
            if cached is not None:
                return cached
        found = self._objects_of(expr, depth)
        if depth == 0:
            self._objects[id(expr)] = found
        return found

    def object_of(self, expr: ast.AST) -> Optional[ObjectId]:
        """One identity for ``expr``: its object, or one ``phi`` for several (two aliases of the
        same choice compare equal); None when nothing is known."""
        return _one(self.objects(expr), _label(expr))

    def object_at(self, dotted: str, at: ast.AST) -> Optional[ObjectId]:
        """The identity of the reference ``dotted`` (``scaler``, ``self.scaler``) read where
        ``at`` is (a call of the caller, for a callee's object read in the caller's names)."""
        parts = dotted.split(".")
        if parts[0] == "self" and len(parts) > 1 and enclosing_class(self.semantic, at) is not None:
            field_id = self._field_at(at, parts[1])
            found = frozenset({field_id}) if field_id is not None else frozenset()
            parts = parts[1:]
        else:
            found = self._name_objects(parts[0], at, 0)
        for attr in parts[1:]:
            found = self._attribute(found, attr, at, 0, dotted)
        return _one(found, dotted)

    def _objects_of(self, expr: ast.AST, depth: int) -> frozenset:
        if depth > _MAX_DEPTH:
            return frozenset()
        if isinstance(expr, ast.Name):
            return self._name_objects(expr.id, expr, depth)
        if isinstance(expr, ast.Attribute):
            if _is_self_field(expr):
                field_id = self._field(expr)
                if field_id is not None:
                    return frozenset({field_id})
            base = self._objects_of(expr.value, depth + 1)
            return self._attribute(base, expr.attr, expr, depth, dotted_key(expr) or expr.attr)
        if isinstance(expr, ast.Call):
            return frozenset({self._call_object(expr)})
        if isinstance(expr, ast.IfExp):
            return self._objects_of(expr.body, depth + 1) | self._objects_of(expr.orelse, depth + 1)
        if isinstance(expr, ast.BoolOp):  # `scaler or GradScaler()`: either operand
            return frozenset().union(*(self._objects_of(v, depth + 1) for v in expr.values))
        if isinstance(expr, ast.NamedExpr):
            return self._objects_of(expr.value, depth + 1)
        return frozenset()

    def _call_object(self, call: ast.Call) -> ObjectId:
        callee = self.semantic.qualified_name(call.func) or dotted_key(call.func)
        site = (self.path, call.lineno, call.col_offset)
        self._call_nodes[site] = call
        return ObjectId("call", site, callee, f"{callee or 'a call'}(...)")

    def _element_object(self, where: tuple, element: tuple, label: str) -> ObjectId:
        """The object bound at position ``element[1]`` of unpacking ``element[0]``: one object per
        unpacking statement and target (``opt, sched = build(m)`` twice gives two schedulers)."""
        self._elements[where] = element
        return ObjectId("element", where, label=label)

    def _name_objects(self, name: str, at: ast.AST, depth: int) -> frozenset:
        owner, stmt = self._owner_and_statement(at)
        if owner is None or isinstance(owner, ast.Lambda):
            return frozenset()
        scope = self.semantic.scopes.get(owner)
        bindings = scope.bindings.get(name) if scope is not None else None
        if not bindings or (owner is not self.semantic.tree and name in scope.global_names):
            return self._global_objects(name, depth)  # a module name (or one bound nowhere: a builtin)
        if bindings is not None and len(bindings) == 1:
            # bound once in its function (most names): that binding is the only one that can
            # reach, no graph needed
            single = self._single_definition(owner, name, bindings[0].node)
            if single is not None:
                return self._definition_objects(owner, single, depth)
        graph = self.graph(owner)
        node = graph.node_of(stmt) if stmt is not None else None
        if node is None:
            return frozenset()
        return self._from_definitions(owner, self.reaching(owner, name, node), depth)

    def _single_definition(self, owner: ast.AST, name: str, node: ast.AST) -> Optional[Definition]:
        """The Definition of ``name`` by its one binding ``node`` (a statement or, for a
        parameter, the function), when it is a parameter or a plain assignment."""
        if node is owner:
            return Definition(name, "param", 0, owner, None)
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            bound = self._bound_by.get(id(node))
            if bound is None:
                bound = self._bound_by[id(node)] = {b.key: b for b in bindings_of(node, walrus=False)}
            binding = bound.get(name)
            if binding is not None:
                return Definition(name, binding.kind, -1, node, binding.value, binding.element)
        return None

    def _owner_and_statement(self, at: ast.AST) -> tuple:
        """(the function, lambda or module whose flow holds ``at``, the flow node's statement);
        (None, None) in a class body. A decorator or default is evaluated where the ``def`` is."""
        parents = self.semantic.parents
        stmt = None
        child, node = None, at
        while node is not None:
            if child is not None:
                if isinstance(node, _FUNCTIONS) and child in node.body:
                    return node, stmt
                if isinstance(node, ast.Lambda) and child is node.body:
                    return node, stmt
                if isinstance(node, ast.ClassDef) and child in node.body:
                    return None, None
            if stmt is None and isinstance(node, (ast.stmt, ast.ExceptHandler)):
                stmt = node
            child, node = node, parents.get(node)
        return self.semantic.tree, stmt

    def _from_definitions(self, owner: ast.AST, definitions: list, depth: int) -> frozenset:
        found: set = set()
        for definition in definitions:
            found |= self._definition_objects(owner, definition, depth)
        return frozenset(found)

    def _definition_objects(self, owner: ast.AST, definition: Definition, depth: int) -> frozenset:
        kind, stmt = definition.kind, definition.stmt
        where = (self.path, getattr(stmt, "lineno", 0), getattr(stmt, "col_offset", 0), definition.key)
        if kind == "param":
            return self._parameter_objects(owner, definition.key, depth)
        if kind in ("assign", "annassign", "walrus") and definition.value is not None:
            return self._objects_of(definition.value, depth + 1)
        if kind in ("assign", "annassign") and definition.element is not None:
            return frozenset({self._element_object(where, definition.element, definition.key)})
        if kind == "with":
            return frozenset({ObjectId("with", where, label=definition.key)})
        if kind == "for":
            return frozenset({ObjectId("loop", where, label=definition.key)})
        if kind == "import":
            return frozenset({ObjectId("import", where, label=definition.key)})
        return frozenset()  # augmented assignment, unpacking, except, del: not one known object

    def _global_objects(self, name: str, depth: int) -> frozenset:
        """A module name read in a function: what every module-level binding of it gives (the
        function may run after any of them); a name bound nowhere is one ``global``."""
        tree = self.semantic.tree
        found: set = set()
        for binding in self.semantic.module_scope.bindings.get(name, ()):
            single = self._single_definition(tree, name, binding.node)
            if single is not None:
                found |= self._definition_objects(tree, single, depth)
            elif binding.kind == "import":
                node = binding.node
                found.add(ObjectId("import", (self.path, node.lineno, node.col_offset, name), label=name))
        if not found:
            return frozenset({ObjectId("global", (self.path, name), label=name)})
        return frozenset(found)

    def _parameter_objects(self, function: ast.AST, name: str, depth: int) -> frozenset:
        """A parameter is what every module-local call binds it to (when each one does, to
        something known); otherwise the parameter itself, with what the known callers pass."""
        param = ObjectId("param", (self.path, function.lineno, function.col_offset, name), label=name)
        if not isinstance(function, _FUNCTIONS):
            return frozenset({param})
        passed: set = set()
        complete = True
        callers = self._callers(function)
        for call, bound in callers:
            argument = bound.get(name) if bound is not None else None
            if argument is None:
                complete = False
                continue
            objects = self._objects_of(argument, depth + 1)
            if not objects:
                complete = False
            passed |= objects
        if callers and complete and passed:
            return frozenset(passed)
        return frozenset({param} | passed)

    def callers(self, function: ast.AST) -> list:
        """(call, parameter -> argument or None) for the calls of this module that run ``function``."""
        return self._callers(function)

    def owner_and_statement(self, at: ast.AST) -> tuple:
        """(the function, lambda or module whose flow holds ``at``, its statement there)."""
        return self._owner_and_statement(at)

    def _callers(self, function: ast.AST) -> list:
        """(call, parameter -> argument or None) for the calls of this module that run ``function``."""
        if self._find_callers is None:
            return []
        found = self._callers_memo.get(id(function))
        if found is None:
            found = self._callers_memo[id(function)] = self._find_callers(self.semantic, function)
        return found

    def _field(self, expr: ast.Attribute) -> Optional[ObjectId]:
        return self._field_at(expr, expr.attr)

    def _field_at(self, at: ast.AST, attr: str) -> Optional[ObjectId]:
        """``self.attr`` in the method holding ``at``: the field of the class family's member that
        assigns it (the base-most), so a subclass's ``self.x`` is its base's."""
        cls = enclosing_class(self.semantic, at)
        if cls is None:
            return None
        family = class_family(self.semantic, cls)
        assigning = {
            id(enclosing_class(self.semantic, s)) for s in _assignment_index(self.semantic)[0].get(("self", attr), [])
        }
        owner = next((c for c in reversed(family) if id(c) in assigning), cls)
        return ObjectId("field", (self.path, owner.lineno, owner.col_offset, attr), label=f"self.{attr}")

    def _attribute(self, base: frozenset, attr: str, at: ast.AST, depth: int, label: str) -> frozenset:
        """``obj.attr`` for each object ``obj`` may be: a field of a module class it instantiates,
        else an attribute of that object."""
        found = set()
        for obj in base:
            cls = self._instantiated_class(obj)
            if cls is not None:
                found.add(ObjectId("field", (self.path, cls.lineno, cls.col_offset, attr), label=label))
            else:
                found.add(ObjectId("attr", (obj, attr), label=label))
        return frozenset(found)

    def _instantiated_class(self, obj: ObjectId) -> Optional[ast.ClassDef]:
        if obj.kind != "call" or obj.callee is None or "." in obj.callee:
            return None
        nodes = self.semantic.binding_nodes(obj.callee, self.semantic.module_scope)
        return nodes[0] if len(nodes) == 1 and isinstance(nodes[0], ast.ClassDef) else None

    # -- what an object holds ----------------------------------------------------------------

    def origins(self, obj: Optional[ObjectId], depth: int = 0) -> frozenset:
        """The objects ``obj`` may have been created as: itself for a call, what every
        assignment of a field gives, the members of a ``phi``; a parameter nobody is seen
        passing stays itself."""
        if obj is None or depth > _MAX_DEPTH:
            return frozenset()
        if obj.kind == "phi":
            return frozenset().union(*(self.origins(o, depth + 1) for o in obj.site))
        if obj.kind == "field":
            values = self._field_values(obj)
            return frozenset().union(*(self.origins(o, depth + 1) for o in values)) if values else frozenset({obj})
        if obj.kind in ("call", "element"):
            found = self._origins.get(obj)
            if found is None:
                self._origins[obj] = frozenset({obj})  # a function that returns its own call
                found = self._origins[obj] = self._returned_origins(obj, depth)
            return found
        return frozenset({obj})

    def _returned_origins(self, obj: ObjectId, depth: int) -> frozenset:
        """What a call's result (or one position of it, unpacked) was created as: the origins of
        what the function it runs returns, in the callee's module (``sched = build_scheduler(opt)``
        is the ``OneCycleLR(...)`` that ``build_scheduler`` returns). Where some return gives
        nothing known (a bare ``return``, an expression, a position the return does not show),
        the object itself is among them, so that no rule takes a partly known value as known."""
        if obj.kind == "element":
            value, position = self._elements.get(obj.site, (None, None))
            calls = list(self.objects(value)) if value is not None else []
            if len(calls) != 1 or calls[0].kind != "call":
                return frozenset({obj})
            call = self._call_nodes.get(calls[0].site)
        else:
            call, position = self._call_nodes.get(obj.site), None
        returned = self._find_returns(call) if call is not None and self._find_returns is not None else None
        if not returned:
            return frozenset({obj})
        found: set = set()
        unknown = False
        for flow, value in returned:
            if position is not None:
                value = _at_position(value, position)
            objects = flow.objects(value) if value is not None else frozenset()
            unknown = unknown or not objects
            for returned_obj in objects:
                found |= flow.origins(returned_obj, depth + 1)
        if unknown:
            found.add(obj)
        return frozenset(found)

    def _assigned_objects(self, stmt: ast.stmt, target: ast.expr) -> frozenset:
        """The objects ``stmt`` gives ``target``, one of its targets: the whole value, the paired
        element of a tuple display, or a position of an unpacked value."""
        for binding in bindings_of(stmt, walrus=False):
            if binding.key == dotted_key(target):
                if binding.value is not None:
                    return self.objects(binding.value)
                if binding.element is not None:
                    where = (self.path, stmt.lineno, stmt.col_offset, binding.key)
                    return frozenset({self._element_object(where, binding.element, binding.key)})
                return frozenset()
        return frozenset()

    def _field_values(self, obj: ObjectId) -> frozenset:
        cached = self._objects.get(("field", obj.site))
        if cached is not None:
            return cached
        self._objects[("field", obj.site)] = frozenset()  # a field assigned from itself
        attr = obj.site[-1]
        found: set = set()
        for stmt in _assignment_index(self.semantic)[0].get(("self", attr), []):
            cls = enclosing_class(self.semantic, stmt)
            if cls is None or isinstance(stmt, ast.AugAssign):
                continue
            target = _self_target(stmt, attr)
            family_owner = self._field(target)
            if family_owner is not None and family_owner.site == obj.site:
                found |= self._assigned_objects(stmt, target)
        for stmt in _assignment_index(self.semantic)[0].get(("attr", attr), []):
            target = _attr_target(stmt, attr)
            if target is not None and not isinstance(stmt, ast.AugAssign) and obj in self.objects(target):
                found |= self.objects(stmt.value)
        result = frozenset(found)
        self._objects[("field", obj.site)] = result
        return result


def value_flow(
    semantic: SemanticModel, path: str = "<module>", callers: Optional[Callable] = None, returns: Optional[Callable] = None,
) -> ValueFlow:
    """The module's ValueFlow, built once and kept on its semantic model."""
    found = getattr(semantic, "_value_flow", None)
    if found is None:
        found = semantic._value_flow = ValueFlow(semantic, path, callers, returns)
    return found


def _at_position(value: Optional[ast.expr], position: int) -> Optional[ast.expr]:
    """The element at ``position`` of a returned tuple or list display (``return opt, sched``)."""
    if not isinstance(value, (ast.Tuple, ast.List)) or any(isinstance(e, ast.Starred) for e in value.elts):
        return None
    return value.elts[position] if position < len(value.elts) else None


def _one(objects: frozenset, label: str) -> Optional[ObjectId]:
    if not objects:
        return None
    if len(objects) == 1:
        return next(iter(objects))
    return ObjectId("phi", tuple(sorted(objects, key=repr)), label=label)


def _label(expr: ast.AST) -> str:
    return dotted_key(expr) or type(expr).__name__


def assigned_through(semantic: SemanticModel, expr: ast.Attribute) -> bool:
    """Whether the module assigns ``expr`` (``CFG.acc_steps``) as written: through the same base name."""
    base = dotted_key(expr.value)
    for stmt in assignments(semantic, expr):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Attribute) and node.attr == expr.attr and dotted_key(node.value) == base:
                    return True
    return False


_WRITES_ENTRIES = frozenset({"update", "setdefault", "pop", "popitem", "clear", "__setitem__"})


def _literal_loop_elements(definition: Definition, name: str) -> Optional[list]:
    """The elements of ``for name in [a, b, c]`` when ``definition`` is that loop's target."""
    stmt = definition.stmt
    if definition.kind != "for" or not isinstance(stmt, (ast.For, ast.AsyncFor)):
        return None
    if not (isinstance(stmt.target, ast.Name) and stmt.target.id == name and isinstance(stmt.iter, (ast.List, ast.Tuple))):
        return None
    return list(stmt.iter.elts)


def class_constants(cls: ast.ClassDef, attr: str) -> Optional[frozenset]:
    """The literal ``attr`` of ``cls``'s body when one plain assignment there gives it (None else)."""
    values = [
        stmt.value for stmt in cls.body
        if isinstance(stmt, (ast.Assign, ast.AnnAssign))
        and any(isinstance(t, ast.Name) and t.id == attr for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]))
    ]
    if len(values) != 1 or not isinstance(values[0], ast.Constant):
        return None
    return frozenset({values[0].value})


def parameter_names(function: ast.AST) -> set:
    """The names a function's (or lambda's) parameters bind."""
    if not isinstance(function, _FUNCTIONS + (ast.Lambda,)):
        return set()
    args = function.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return {a.arg for a in every if a is not None}


def _self_target(stmt: ast.stmt, attr: str) -> Optional[ast.Attribute]:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    for target in (e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])):
        if _is_self_field(target) and target.attr == attr:
            return target
    return None


def _attr_target(stmt: ast.stmt, attr: str) -> Optional[ast.Attribute]:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    for target in targets:
        if isinstance(target, ast.Attribute) and not _is_self_field(target) and target.attr == attr:
            return target
    return None
