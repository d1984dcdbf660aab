"""The control-flow graph (ampfix.program.flow): snapshots of small functions, as ruff snapshots
its CFG, and the branch-correlated path question with assignments that break the correlation."""

from __future__ import annotations

import ast
import textwrap

from ampfix.program.flow import bindings_of, build


def graph_of(source: str):
    function = ast.parse(textwrap.dedent(source)).body[0]
    return function, build(function)


def node_at(graph, line: int, kind: type) -> int:
    return next(i for i, n in enumerate(graph.nodes) if isinstance(n, kind) and n.lineno == line)


def test_snapshot_loop_if_with_try():
    _, graph = graph_of(
        """
        def f(use_amp, loader):
            for i, x in enumerate(loader):
                if use_amp:
                    a = 1
                else:
                    a = 2
                use_amp = i > 1
                if use_amp:
                    break
                continue
            with open(p) as fh, ctx():
                pass
            try:
                g()
            except E as e:
                raise
            finally:
                h()
            return a
        """
    )
    assert graph.dump() == textwrap.dedent(
        """\
        0: entry -> 2
        1: exit ->
        2: For@3 binds i,x -> 3 10
        3: If@4 -> +4 -5
        4: Assign@5 binds a -> 6
        5: Assign@7 binds a -> 6
        6: Assign@8 binds use_amp -> 7
        7: If@9 -> +8 -9
        8: Break@10 -> 10
        9: Continue@11 -> ~2
        10: With@12 binds fh -> 11
        11: Pass@13 -> 12
        12: Try@14 -> 13 14 16
        13: Expr@15 -> 14 16 16
        14: ExceptHandler@16 binds e -> 15
        15: Raise@17 -> 1
        16: Expr@19 -> 17
        17: Return@20 -> 1"""
    )


def test_snapshot_while_true_and_empty_else():
    _, graph = graph_of(
        """
        def f(n):
            while True:
                if n:
                    return 1
                n -= 1
            self.x: int = 3
        """
    )
    assert graph.dump() == textwrap.dedent(
        """\
        0: entry -> 2
        1: exit ->
        2: While@3 -> 3
        3: If@4 -> +4 -5
        4: Return@5 -> 1
        5: AugAssign@6 binds n -> ~2
        6: AnnAssign@7 binds self.x -> 1"""
    )


def test_bindings_pair_tuple_values_and_walrus():
    stmt = ast.parse("a, (b, c) = x, (y, z)").body[0]
    assert [(b.key, ast.unparse(b.value)) for b in bindings_of(stmt)] == [("a", "x"), ("b", "y"), ("c", "z")]
    stmt = ast.parse("a, b = pair").body[0]
    assert [(b.key, b.value) for b in bindings_of(stmt)] == [("a", None), ("b", None)]
    stmt = ast.parse("if (n := len(x)) > 1:\n    pass").body[0]
    assert [(b.key, b.kind) for b in bindings_of(stmt)] == [("n", "walrus")]
    stmt = ast.parse("import torch.nn as nn, os.path").body[0]
    assert [b.key for b in bindings_of(stmt)] == ["nn", "os"]


USE_AMP = """
def train(use_amp, i):
    if use_amp:
        scaled()
    else:
        plain()
    {between}
    if use_amp:
        scaler_step()
    else:
        optimizer_step()
"""


def _path(between: str, source_call: str, target_call: str):
    function, graph = graph_of(USE_AMP.format(between=between))
    calls = {n.value.func.id: n for n in ast.walk(function) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)}
    start, end = graph.node_of(calls[source_call]), graph.node_of(calls[target_call])
    test = function.body[0].test
    from ampfix.program.flow import branch_key

    return graph.path_exists(start, end, assumptions=[(branch_key(test), "body")])


def test_same_test_correlates_branches():
    assert _path("pass", "scaled", "optimizer_step") is False
    assert _path("pass", "scaled", "scaler_step") is True


def test_assignment_between_tests_breaks_the_correlation():
    assert _path("use_amp = i > 100", "scaled", "optimizer_step") is True
    assert _path("use_amp, other = i > 100, 1", "scaled", "optimizer_step") is True


def test_assignment_of_another_name_keeps_the_correlation():
    assert _path("amp = i > 100", "scaled", "optimizer_step") is False


def _reaches(source: str, start_call: str, end_call: str) -> bool:
    """Whether a branch-consistent path goes from ``start_call`` (having taken the branch of the
    ``if`` it sits in) to ``end_call``."""
    from ampfix.program.flow import branch_label

    function, graph = graph_of(source)
    calls = {n.value.func.id: n for n in ast.walk(function) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)}
    holder = next(s for s in function.body if isinstance(s, ast.If) and calls[start_call] in s.body + s.orelse)
    taken = branch_label(holder.test, "body" if calls[start_call] in holder.body else "orelse")
    return graph.path_exists(graph.node_of(calls[start_call]), graph.node_of(calls[end_call]), assumptions=[taken])


def test_a_negated_test_is_the_same_test_taken_the_other_way():
    source = """
    def f(scaler, amp, device):
        if scaler is None:
            plain()
        if scaler is not None:
            unscale()
        if not amp:
            fp32()
        if amp:
            autocast()
        if device != "cuda":
            cpu()
        if device == "cuda":
            cuda()
        else:
            elsewhere()
    """
    assert _reaches(source, "plain", "unscale") is False  # `scaler is None`, then `scaler is not None`
    assert _reaches(source, "fp32", "autocast") is False and _reaches(source, "cpu", "cuda") is False
    assert _reaches(source, "cpu", "elsewhere") is True and _reaches(source, "plain", "fp32") is True


def test_one_reference_equal_to_two_constants_is_not_one_path():
    """EfficientZero's switch: `amp_type == "none"` true, then `amp_type == "torch_amp"` cannot be;
    an assignment in between, or constants of different types (1 == 1.0), correlate nothing."""
    source = """
    def f(config, level):
        if config.amp_type == "none":
            plain()
        if config.amp_type == "torch_amp":
            scaler_step()
        else:
            optimizer_step()
        if level == 1:
            one()
        if level == 1.0:
            also_one()
        if "none" == config.amp_type:
            none_again()
    """
    assert _reaches(source, "plain", "scaler_step") is False
    assert _reaches(source, "plain", "optimizer_step") is True
    assert _reaches(source, "one", "also_one") is True
    rebound = source.replace('            plain()\n', '            plain()\n            config = load()\n')
    assert _reaches(rebound, "plain", "scaler_step") is True


def test_skipping_a_disjunction_decides_each_operand():
    source = """
    def f(world_size, clip):
        if world_size > 1 or clip > 0:
            unscale()
        else:
            skipped()
        if clip > 0:
            clipped()
        if world_size > 1 and clip > 0:
            both()
        else:
            not_both()
        if clip > 0:
            again()
    """
    assert _reaches(source, "skipped", "clipped") is False  # `clip > 0` is false on that path
    assert _reaches(source, "unscale", "clipped") is True
    assert _reaches(source, "not_both", "again") is True  # `not (a and b)` leaves `b` open
    assert _reaches(source, "both", "again") is True


def test_attribute_test_forgotten_when_its_base_is_rebound():
    source = """
    def train(cfg):
        if cfg.amp:
            scaled()
        cfg = load()
        if cfg.amp:
            pass
        else:
            optimizer_step()
    """
    function, graph = graph_of(source)
    from ampfix.program.flow import branch_key

    first, last = function.body[0], function.body[2].orelse[0]
    assumed = [(branch_key(first.test), "body")]
    assert graph.path_exists(graph.node_of(first.body[0]), graph.node_of(last), assumptions=assumed) is True
    function.body[1] = ast.parse("other = load()").body[0]
    graph = build(function)
    assert graph.path_exists(graph.node_of(first.body[0]), graph.node_of(last), assumptions=assumed) is False


def test_one_iteration_cuts_the_back_edge():
    function, graph = graph_of(
        """
        def f(loader):
            for x in loader:
                first()
                second()
        """
    )
    loop = function.body[0]
    first, second = (graph.node_of(s) for s in loop.body)
    header = graph.node_of(loop)
    assert graph.path_exists(second, first) is True
    assert graph.path_exists(second, first, one_iteration_of=[header]) is False
