"""The layers import one way, type-only imports included: discovery, parsing, the program model
(ampfix.program: flow, values, calls), the training step model (ampfix.training), rules, fixing,
reporting. A cycle between modules of ampfix is a design error, not a style question."""

import ast
import os

import ampfix

ROOT = os.path.dirname(ampfix.__file__)


def _module_name(path):
    relative = os.path.relpath(path, os.path.dirname(ROOT))[: -len(".py")].replace(os.sep, ".")
    return relative[: -len(".__init__")] if relative.endswith(".__init__") else relative


def import_graph():
    graph = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py") or "verify" in folder.split(os.sep):
                continue
            path = os.path.join(folder, name)
            module = _module_name(path)
            edges = set()
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ampfix"):
                    edges.add(node.module)
                elif isinstance(node, ast.Import):
                    edges.update(a.name for a in node.names if a.name.startswith("ampfix"))
            graph[module] = {e for e in edges if e != module}
    return graph


def _cycle(graph):
    state = {}

    def visit(node, stack):
        state[node] = "active"
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == "active":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycles_type_only_imports_included():
    graph = import_graph()
    # the package's __init__ re-exports the API: it sits above everything
    graph = {m: {e for e in edges if e != "ampfix"} for m, edges in graph.items()}
    assert _cycle(graph) is None


def test_the_program_layer_knows_nothing_of_training_rules_or_context():
    graph = import_graph()
    for module, edges in graph.items():
        if module.startswith("ampfix.program"):
            assert all(e.startswith(("ampfix.program", "ampfix.semantic")) for e in edges), (module, edges)
        if module.startswith("ampfix.training"):
            assert not any(e.startswith(("ampfix.rules", "ampfix.context", "ampfix.engine")) for e in edges), (module, edges)
