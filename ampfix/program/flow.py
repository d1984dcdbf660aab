"""A control-flow graph per function, and the path questions the training step model asks.

Nodes are statements: each simple statement is one node; a compound statement is one node for
what its header evaluates (an ``if`` test, a loop's iterator or test, a ``with``'s items, a
``try``'s entry, a handler's match) and its blocks are nodes of their own. Edges follow Python:

- ``if``: the test to the first statement of each branch (an empty ``else`` falls through);
  the edges into a branch carry a *branch label* (the test's text, ``"body"``/``"orelse"``);
- loops: the header to the body and to the ``else``/exit; the end of the body and ``continue``
  back to the header (a *back edge*); ``break`` to after the loop; ``while True`` exits only by
  ``break``;
- ``try``: every statement of the body may raise into each handler; body then ``else``; the
  ``finally`` after body/else/handlers (and after any statement of the body, which may raise);
- ``return``/``raise``: to the exit (a ``raise`` in a ``try`` body also to its handlers).

A training step is one iteration of its loop: ``reaches(a, b)`` follows no back edge of a loop
that holds both a and b, so the next iteration's events never come "after" this one's.

Every node records what it *binds* (``bindings``: Pyright's assignment flow nodes): the names and
fields an assignment, a loop target, a ``with ... as``, an ``except ... as``, an import, a ``def``
or a walrus in a header gives a value, with that value where there is one expression for it.
ampfix.program.values computes reaching definitions from them.

Paths are *branch-correlated*: a path that took the ``body`` of ``if use_amp:`` cannot take the
``else`` of a later ``if use_amp:`` (the same test text). That is what lets ``if use_amp:
<scaled backward>`` ... ``if use_amp: scaler.step(...)`` read as one protocol. What a path
assumed about a test is forgotten when it passes a node that binds a name the test reads
(``use_amp = i > 100`` between the two tests, ``cfg = load()`` before ``if cfg.amp:``), and when
it goes round a loop that holds an ``if`` on a test with a call or a subscript in it (``if
ready():`` may change per iteration; ``if self.device.type == "cuda":`` does not unless rebound).
A negated test is its positive form taken the other way (``scaler is None`` / ``scaler is not
None``), and taking a branch decides what it implies: the ``else`` of ``a or b`` is the ``else``
of ``a`` and of ``b``, the body of ``a and b`` the body of each.
Searches are bounded; a search that runs out answers ``None`` (unknown) and rules stay silent.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_MAX_STATES = 20000

Label = Optional[tuple]  # (TestKey, "body" | "orelse") on an edge into an if branch


class TestKey:
    """An ``if`` test's identity on a path: its text (``ast.dump``), with the references it
    reads (what an assignment must bind to make the path forget it)."""

    __slots__ = ("text", "reads", "test", "stable", "equality", "_implied")

    def __init__(self, test: ast.AST):
        self.text = ast.dump(test)
        self.reads = read_keys(test)
        self.test = test
        # made of names, fields and constants only: its value changes only where one of them is
        # rebound (which the path sees), not by going round a loop (a call's may: `if ready():`)
        self.stable = all(isinstance(n, _STABLE_NODES) for n in ast.walk(test))
        self._implied: dict = {}  # branch -> its implied labels (asked on every edge a path takes)
        # `x == "none"`: (the text of x, the constant), so that the body of `x == "torch_amp"`
        # contradicts it on one path (EfficientZero's `amp_type` switch)
        self.equality = _equality(test) if self.stable else None

    def implied(self, branch: str) -> tuple:
        """What taking ``branch`` decides about the operands: the ``else`` of ``a or b`` is the
        ``else`` of each (``if world_size > 1 or clip > 0: unscale_`` skipped means no clip
        later under ``if clip > 0:``), the body of ``a and b`` the body of each."""
        found = self._implied.get(branch)
        if found is None:
            found = self._implied[branch] = self._operand_labels(branch)
        return found

    def _operand_labels(self, branch: str) -> tuple:
        test = self.test
        wanted = ast.Or if branch == "orelse" else ast.And
        if not (isinstance(test, ast.BoolOp) and isinstance(test.op, wanted)):
            return ()
        found = []
        for operand in test.values:
            label = branch_label(operand, branch)
            found += [label, *label[0].implied(label[1])]
        return tuple(found)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TestKey) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"TestKey({self.text})"


def _equality(test: ast.AST) -> Optional[tuple]:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    left, right = test.left, test.comparators[0]
    if isinstance(left, ast.Constant) and not isinstance(right, ast.Constant):
        left, right = right, left
    if not isinstance(right, ast.Constant) or isinstance(left, ast.Constant):
        return None
    return ast.dump(left), type(right.value), right.value


def _excluded(assumed: frozenset, key: TestKey) -> bool:
    """Whether a path that assumed ``x == c`` true takes the body of ``x == d``, d another constant."""
    equality = key.equality
    if equality is None:
        return False
    return any(
        branch == "body" and other.equality is not None and other.equality[:2] == equality[:2]
        and other.equality[2] != equality[2]  # the same reference and type of constant, another value
        for other, branch in assumed
    )


def branch_key(test: ast.AST) -> TestKey:
    return TestKey(test)


_FLIPPED = {"body": "orelse", "orelse": "body"}
_STABLE_NODES = (ast.Name, ast.Attribute, ast.Constant, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp,
                 ast.cmpop, ast.boolop, ast.unaryop, ast.operator, ast.expr_context)
_NEGATED_OPS = {ast.IsNot: ast.Is, ast.NotEq: ast.Eq, ast.NotIn: ast.In}


def take(assumed: frozenset, label: tuple) -> Optional[frozenset]:
    """The assumptions of a path after it takes ``label`` (with what that implies about the
    test's operands); None when that contradicts a test the path already took the other way."""
    labels = (label, *label[0].implied(label[1]))
    if any((key, _FLIPPED[branch]) in assumed for key, branch in labels):
        return None
    if any(branch == "body" and _excluded(assumed, key) for key, branch in labels):
        return None
    return assumed | frozenset(labels)


def take_all(assumed: frozenset, labels: Iterable[tuple]) -> Optional[frozenset]:
    """The assumptions after a path takes each of ``labels`` in turn (None: one contradicts them)."""
    for label in labels:
        assumed = take(assumed, label)
        if assumed is None:
            return None
    return assumed


def branch_label(test: ast.AST, branch: str) -> tuple:
    """The (test, branch) a path takes, a negated test as its positive form with the other
    branch: the ``else`` of ``if scaler is None:`` is the body of ``if scaler is not None:``
    (and ``not amp`` of ``amp``, ``!=`` of ``==``), so the two tests correlate."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return branch_label(test.operand, _FLIPPED[branch])
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _NEGATED_OPS:
        positive = ast.Compare(left=test.left, ops=[_NEGATED_OPS[type(test.ops[0])]()], comparators=test.comparators)
        return TestKey(positive), _FLIPPED[branch]
    return TestKey(test), branch


@dataclass(frozen=True)
class Binding:
    """One name or field a node gives a value: ``key`` is its dotted text (``scaler``,
    ``self.scaler``); ``value`` the expression assigned, when one expression is (``a, b = x, y``
    binds ``a`` to ``x``); ``element``: for an unpacking of another value (``opt, sched =
    build(model)``), that value and the position taken from it (``(build(model), 1)`` for ``sched``)."""

    key: str
    kind: str  # assign | augassign | annassign | for | with | except | import | def | walrus | delete
    value: Optional[ast.expr] = None
    element: Optional[tuple] = None


def dotted_key(expr: ast.AST) -> Optional[str]:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    parts.append(expr.id)
    return ".".join(reversed(parts))


def read_keys(expr: ast.AST) -> frozenset:
    """The dotted references an expression reads, with their prefixes (``cfg.amp`` reads ``cfg``
    and ``cfg.amp``): a binding of any of them changes its value."""
    found = set()
    for sub in ast.walk(expr):
        if isinstance(sub, (ast.Name, ast.Attribute)):
            key = dotted_key(sub)
            if key is not None:
                found.add(key)
    return frozenset(found)


def bindings_of(stmt: ast.AST, walrus: bool = True) -> tuple:
    """What a flow node binds: a simple statement, or the header of a compound one (its blocks
    are nodes of their own). ``walrus=False``: the caller knows the module has no ``:=``."""
    found: list[Binding] = []
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            _targets(target, stmt.value, "assign", found)
    elif isinstance(stmt, ast.AnnAssign):
        if stmt.value is not None:
            _targets(stmt.target, stmt.value, "annassign", found)
    elif isinstance(stmt, ast.AugAssign):
        _targets(stmt.target, None, "augassign", found)
    elif isinstance(stmt, (ast.For, ast.AsyncFor)):
        _targets(stmt.target, None, "for", found)
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        for item in stmt.items:
            if item.optional_vars is not None:
                _targets(item.optional_vars, item.context_expr, "with", found)
    elif isinstance(stmt, ast.ExceptHandler):
        if stmt.name:
            found.append(Binding(stmt.name, "except"))
    elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
        for alias in stmt.names:
            name = alias.asname or alias.name.split(".", 1)[0]
            if name != "*":
                found.append(Binding(name, "import"))
    elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        found.append(Binding(stmt.name, "def"))
    elif isinstance(stmt, ast.Delete):
        for target in stmt.targets:
            _targets(target, None, "delete", found)
    for header in _header_expressions(stmt) if walrus else ():
        for sub in ast.walk(header):
            if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                found.append(Binding(sub.target.id, "walrus", sub.value))
    return tuple(found)


def _header_expressions(stmt: ast.AST) -> list:
    """The expressions a node evaluates itself (a walrus in them binds at this node)."""
    if isinstance(stmt, (ast.If, ast.While)):
        return [stmt.test]
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return [stmt.iter]
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return [item.context_expr for item in stmt.items]
    if isinstance(stmt, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return)):
        return [stmt.value] if stmt.value is not None else []
    return []


def _targets(target: ast.AST, value: Optional[ast.expr], kind: str, found: list, element: Optional[tuple] = None) -> None:
    if isinstance(target, (ast.Tuple, ast.List)):
        paired = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts)
        # positions are known up to the first starred target; a nested unpacking is not followed
        positional = value is not None and not paired and element is None and kind in ("assign", "annassign")
        starred = next((i for i, e in enumerate(target.elts) if isinstance(e, ast.Starred)), len(target.elts))
        for i, sub in enumerate(target.elts):
            taken = (value, i) if positional and i < starred else None
            _targets(sub, value.elts[i] if paired else None, kind, found, taken)
    elif isinstance(target, ast.Starred):
        _targets(target.value, None, kind, found)
    else:
        key = dotted_key(target)
        if key is not None:
            found.append(Binding(key, kind, value, element))


@dataclass
class FlowGraph:
    """Statement nodes (index 0 is the entry, 1 the exit) and labelled edges."""

    nodes: list = field(default_factory=lambda: [None, None])
    succ: dict = field(default_factory=dict)  # index -> list[(index, label)]
    back_edges: set = field(default_factory=set)  # (source, loop header index)
    index: dict = field(default_factory=dict)  # id(stmt) -> index
    loop_of_header: dict = field(default_factory=dict)  # header index -> loop statement
    inside: dict = field(default_factory=dict)  # loop header index -> set of node indices in the loop
    if_nodes: dict = field(default_factory=dict)  # test key -> set of indices of ifs with that test
    bindings: dict = field(default_factory=dict)  # index -> tuple[Binding], for nodes that bind

    ENTRY = 0
    EXIT = 1

    def node_of(self, stmt: ast.AST) -> Optional[int]:
        return self.index.get(id(stmt))

    def loops_holding(self, *indices: int) -> list[int]:
        """Headers of the loops that contain every one of ``indices`` (as body nodes or header)."""
        return [h for h, members in self.inside.items() if all(i in members or i == h for i in indices)]

    # -- path questions ------------------------------------------------------------------------

    def forget_round_loop(self, assumed: frozenset, header: int) -> frozenset:
        """The assumptions that still hold after going round the loop at ``header``: a test that
        the loop holds an ``if`` on is forgotten unless it is stable (names and fields, which a
        binding on the path would have made the path forget already)."""
        inside = self.inside.get(header, ())
        return frozenset(a for a in assumed if a[0].stable or not (self.if_nodes.get(a[0], set()) & inside))

    def path_exists(
        self,
        source: int,
        target: int,
        avoid: Callable[[int], bool] = lambda index: False,
        assumptions: Iterable[tuple] = (),
        one_iteration_of: Iterable[int] = (),
    ) -> Optional[bool]:
        """Whether some branch-consistent path leads from ``source`` (after it) to ``target``
        without passing a node for which ``avoid`` holds, following no back edge into the loops
        whose headers are in ``one_iteration_of``. None when the search was cut short."""
        cut = set(one_iteration_of)
        assumed = take_all(frozenset(), assumptions)
        if assumed is None:
            return False  # the assumptions contradict each other: no such path
        start = (source, assumed)
        seen = {start}
        stack = [start]
        while stack:
            node, assumed = stack.pop()
            for nxt, label in self.succ.get(node, ()):
                if (node, nxt) in self.back_edges:
                    if nxt in cut:
                        continue
                    next_assumed = self.forget_round_loop(assumed, nxt)
                else:
                    next_assumed = assumed
                if next_assumed and nxt in self.bindings:
                    next_assumed = self._forget_rebound(next_assumed, nxt)
                if label is not None:
                    next_assumed = take(next_assumed, label)
                    if next_assumed is None:
                        continue  # contradicts a test this path already took the other way
                if nxt == target:
                    return True
                if avoid(nxt):
                    continue
                state = (nxt, next_assumed)
                if state in seen:
                    continue
                if len(seen) >= _MAX_STATES:
                    return None
                seen.add(state)
                stack.append(state)
        return False

    def _forget_rebound(self, assumed: frozenset, node: int) -> frozenset:
        """``assumed`` less what it knew of tests reading a reference that ``node`` binds."""
        bound = {b.key for b in self.bindings[node]}
        kept = frozenset(a for a in assumed if not (a[0].reads & bound))
        return kept if len(kept) != len(assumed) else assumed

    def predecessors(self) -> dict:
        """index -> list of predecessor indices (computed on first use)."""
        preds = getattr(self, "_preds", None)
        if preds is None:
            preds = {}
            for source, edges in self.succ.items():
                for target, _ in edges:
                    preds.setdefault(target, []).append(source)
            self._preds = preds
        return preds

    def dump(self, source: Optional[str] = None) -> str:
        """A readable listing of nodes and edges (the snapshot tests compare it): each node with
        its line and kind, what it binds, then its successors (``~`` a back edge, ``+``/``-`` the
        body/else branch of an if)."""
        lines = []
        for index, stmt in enumerate(self.nodes):
            if index == self.ENTRY:
                head = "entry"
            elif index == self.EXIT:
                head = "exit"
            else:
                head = f"{type(stmt).__name__}@{stmt.lineno}"
                if index in self.bindings:
                    head += " binds " + ",".join(b.key for b in self.bindings[index])
            edges = []
            for target, label in self.succ.get(index, ()):
                mark = "~" if (index, target) in self.back_edges else ""
                if label is not None:
                    mark += "+" if label[1] == "body" else "-"
                edges.append(f"{mark}{target}")
            lines.append(f"{index}: {head} -> {' '.join(edges)}".rstrip())
        return "\n".join(lines)


def build(function: ast.AST, walrus: bool = True) -> FlowGraph:
    """The graph of a function's body (or a module's top level); ``walrus=False`` when the
    module has no ``:=`` (no expression need be searched for one)."""
    graph = FlowGraph()
    builder = _Builder(graph, walrus)
    out = builder.block(function.body, [(FlowGraph.ENTRY, None)])
    builder.link(out, FlowGraph.EXIT)
    return graph


@dataclass
class _Loop:
    header: int
    breaks: list = field(default_factory=list)


class _Builder:
    def __init__(self, graph: FlowGraph, walrus: bool = True):
        self.graph = graph
        self.walrus = walrus
        self.loops: list[_Loop] = []
        self.handlers: list[list[int]] = []  # per enclosing try: handler entry nodes (filled later)
        self.raisers: list[list[int]] = []  # per enclosing try body: nodes that may raise into it

    def node(self, stmt: ast.AST) -> int:
        graph = self.graph
        index = len(graph.nodes)
        graph.nodes.append(stmt)
        graph.index[id(stmt)] = index
        bound = bindings_of(stmt, self.walrus)
        if bound:
            graph.bindings[index] = bound
        for loop in self.loops:
            graph.inside.setdefault(loop.header, set()).add(index)
        if self.raisers:
            self.raisers[-1].append(index)
        return index

    def link(self, preds, target: int, back: bool = False) -> None:
        for source, label in preds:
            self.graph.succ.setdefault(source, []).append((target, label))
            if back:
                self.graph.back_edges.add((source, target))

    def block(self, stmts: list, preds: list) -> list:
        for stmt in stmts:
            preds = self.statement(stmt, preds)
        return preds

    def statement(self, stmt: ast.stmt, preds: list) -> list:
        if isinstance(stmt, ast.If):
            return self._if(stmt, preds)
        if isinstance(stmt, _LOOPS):
            return self._loop(stmt, preds)
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            header = self.node(stmt)
            self.link(preds, header)
            return self.block(stmt.body, [(header, None)])
        if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            return self._try(stmt, preds)
        if type(stmt).__name__ == "Match":
            header = self.node(stmt)
            self.link(preds, header)
            out = [(header, None)]
            for case in stmt.cases:
                out += self.block(case.body, [(header, None)])
            return out
        index = self.node(stmt)
        self.link(preds, index)
        if isinstance(stmt, ast.Break) and self.loops:
            self.loops[-1].breaks.append((index, None))
            return []
        if isinstance(stmt, ast.Continue) and self.loops:
            self.link([(index, None)], self.loops[-1].header, back=True)
            return []
        if isinstance(stmt, (ast.Return, ast.Raise)):
            self.link([(index, None)], FlowGraph.EXIT)
            return []
        return [(index, None)]

    def _if(self, stmt: ast.If, preds: list) -> list:
        header = self.node(stmt)
        self.link(preds, header)
        taken, skipped = branch_label(stmt.test, "body"), branch_label(stmt.test, "orelse")
        for label in (taken, *taken[0].implied(taken[1]), *skipped[0].implied(skipped[1])):
            self.graph.if_nodes.setdefault(label[0], set()).add(header)  # forgotten round a loop
        body = self.block(stmt.body, [(header, taken)])
        if stmt.orelse:
            return body + self.block(stmt.orelse, [(header, skipped)])
        return body + [(header, skipped)]

    def _loop(self, stmt: ast.AST, preds: list) -> list:
        header = self.node(stmt)
        self.link(preds, header)
        self.graph.loop_of_header[header] = stmt
        self.graph.inside.setdefault(header, set())
        loop = _Loop(header)
        self.loops.append(loop)
        body = self.block(stmt.body, [(header, None)])
        self.link(body, header, back=True)
        self.loops.pop()
        infinite = isinstance(stmt, ast.While) and isinstance(stmt.test, ast.Constant) and bool(stmt.test.value)
        exit_preds = [] if infinite else [(header, None)]
        return self.block(stmt.orelse, exit_preds) + loop.breaks if stmt.orelse else exit_preds + loop.breaks

    def _try(self, stmt: ast.AST, preds: list) -> list:
        entry = self.node(stmt)
        self.link(preds, entry)
        self.raisers.append([entry])
        body = self.block(stmt.body, [(entry, None)])
        raisers = self.raisers.pop()
        if self.raisers:
            self.raisers[-1].extend(raisers)  # what the body raises may also escape outward
        out = []
        for handler in stmt.handlers:
            start = self.node(handler)
            self.link([(r, None) for r in raisers], start)
            out += self.block(handler.body, [(start, None)])
        out += self.block(stmt.orelse, body) if stmt.orelse else body
        if stmt.finalbody:
            final_preds = out + [(r, None) for r in raisers]
            out = self.block(stmt.finalbody, final_preds)
        return out
