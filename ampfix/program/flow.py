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

Paths are *branch-correlated*: a path that took the ``body`` of ``if use_amp:`` cannot take the
``else`` of a later ``if use_amp:`` (the same test text). That is what lets ``if use_amp:
<scaled backward>`` ... ``if use_amp: scaler.step(...)`` read as one protocol. Assumptions made
inside a loop are dropped when the path goes round it (the test may change per iteration).
Searches are bounded; a search that runs out answers ``None`` (unknown) and rules stay silent.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_MAX_STATES = 20000

Label = Optional[tuple]  # (test key, "body" | "orelse") on an edge into an if branch


def branch_key(test: ast.AST) -> str:
    return ast.dump(test)


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

    ENTRY = 0
    EXIT = 1

    def node_of(self, stmt: ast.AST) -> Optional[int]:
        return self.index.get(id(stmt))

    def loops_holding(self, *indices: int) -> list[int]:
        """Headers of the loops that contain every one of ``indices`` (as body nodes or header)."""
        return [h for h, members in self.inside.items() if all(i in members or i == h for i in indices)]

    # -- path questions ------------------------------------------------------------------------

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
        start = (source, frozenset(assumptions))
        seen = {start}
        stack = [start]
        while stack:
            node, assumed = stack.pop()
            for nxt, label in self.succ.get(node, ()):
                if (node, nxt) in self.back_edges:
                    if nxt in cut:
                        continue
                    inside = self.inside.get(nxt, ())
                    next_assumed = frozenset(a for a in assumed if not (self.if_nodes.get(a[0], set()) & inside))
                else:
                    next_assumed = assumed
                if label is not None:
                    key, branch = label
                    if (key, "orelse" if branch == "body" else "body") in next_assumed:
                        continue  # contradicts a test this path already took the other way
                    next_assumed = next_assumed | {label}
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


def build(function: ast.AST) -> FlowGraph:
    """The graph of a function's body (or a module's top level)."""
    graph = FlowGraph()
    builder = _Builder(graph)
    out = builder.block(function.body, [(FlowGraph.ENTRY, None)])
    builder.link(out, FlowGraph.EXIT)
    return graph


@dataclass
class _Loop:
    header: int
    breaks: list = field(default_factory=list)


class _Builder:
    def __init__(self, graph: FlowGraph):
        self.graph = graph
        self.loops: list[_Loop] = []
        self.handlers: list[list[int]] = []  # per enclosing try: handler entry nodes (filled later)
        self.raisers: list[list[int]] = []  # per enclosing try body: nodes that may raise into it

    def node(self, stmt: ast.AST) -> int:
        graph = self.graph
        index = len(graph.nodes)
        graph.nodes.append(stmt)
        graph.index[id(stmt)] = index
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
        key = branch_key(stmt.test)
        self.graph.if_nodes.setdefault(key, set()).add(header)
        body = self.block(stmt.body, [(header, (key, "body"))])
        if stmt.orelse:
            return body + self.block(stmt.orelse, [(header, (key, "orelse"))])
        return body + [(header, (key, "orelse"))]

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
