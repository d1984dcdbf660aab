"""Value flow (ampfix.program.values): reaching definitions per function and object identity."""

from __future__ import annotations

import ast
import textwrap

from ampfix.program.calls import module_callers
from ampfix.program.values import value_flow
from ampfix.semantic import SemanticModel


def module(source: str):
    tree = ast.parse(textwrap.dedent(source))
    semantic = SemanticModel(tree)
    return tree, value_flow(semantic, "m.py", module_callers)


def receivers(tree, method: str) -> list:
    """The receivers of ``.method(...)`` calls, in source order."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    return [c.func.value for c in sorted(calls, key=lambda c: c.lineno) if c.func.attr == method]


def test_reaching_definitions_follow_the_graph():
    tree, flow = module(
        """
        def f(x, flag):
            a = 1
            if flag:
                a = 2
            use(a)
            a = 3
            use(a)
        """
    )
    function = tree.body[0]
    graph = flow.graph(function)
    first_use, second_use = function.body[2], function.body[4]
    lines = lambda stmt: sorted(d.stmt.lineno for d in flow.reaching(function, "a", graph.node_of(stmt)))  # noqa: E731
    assert lines(first_use) == [3, 5]
    assert lines(second_use) == [7]
    assert [d.kind for d in flow.reaching(function, "x", graph.node_of(first_use))] == ["param"]


def test_reaching_definitions_round_a_loop():
    tree, flow = module(
        """
        def f(loader):
            s = make()
            for x in loader:
                use(s)
                s = other()
        """
    )
    function = tree.body[0]
    use = function.body[1].body[0]
    found = flow.reaching(function, "s", flow.graph(function).node_of(use))
    assert sorted(d.stmt.lineno for d in found) == [3, 6]


def test_a_prefix_binding_kills_a_field():
    tree, flow = module(
        """
        def f(a):
            a.b = make()
            a = other()
            use(a.b)
        """
    )
    function = tree.body[0]
    assert flow.reaching(function, "a.b", flow.graph(function).node_of(function.body[2])) == []


def test_alias_is_the_same_object():
    tree, flow = module(
        """
        import torch

        def train(optimizer):
            scaler = torch.amp.GradScaler()
            s = scaler
            s.unscale_(optimizer)
            scaler.step(optimizer)
        """
    )
    unscale, step = receivers(tree, "unscale_")[0], receivers(tree, "step")[0]
    assert flow.object_of(unscale) == flow.object_of(step)
    obj = flow.object_of(step)
    assert (obj.kind, obj.callee, obj.line) == ("call", "torch.amp.GradScaler", 5)


def test_constructor_resolved_through_imports():
    tree, flow = module(
        """
        from torch.cuda.amp import GradScaler as GS
        from torch import optim

        gs = GS()
        opt = optim.AdamW(params)

        def train():
            gs.step(opt)
        """
    )
    step = receivers(tree, "step")[0]
    assert flow.object_of(step).callee == "torch.cuda.amp.GradScaler"
    call = step.parent if hasattr(step, "parent") else next(
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "step"
    )
    assert flow.object_of(call.args[0]).callee == "torch.optim.AdamW"


def test_reassignment_gives_the_later_object():
    tree, flow = module(
        """
        import torch

        def train():
            scaler = torch.amp.GradScaler()
            scaler.update()
            scaler = torch.amp.GradScaler()
            scaler.update()
        """
    )
    first, second = receivers(tree, "update")
    assert flow.object_of(first).line == 5 and flow.object_of(second).line == 7


def test_branches_give_a_phi_that_aliases_compare_equal():
    tree, flow = module(
        """
        import torch

        def train(resume):
            if resume:
                scaler = load()
            else:
                scaler = torch.amp.GradScaler()
            alias = scaler
            alias.update()
            scaler.update()
        """
    )
    alias, scaler = receivers(tree, "update")
    assert flow.object_of(alias) == flow.object_of(scaler)
    assert flow.object_of(alias).kind == "phi"
    assert {o.callee for o in flow.origins(flow.object_of(alias))} == {"load", "torch.amp.GradScaler"}


def test_parameter_is_what_every_caller_passes():
    tree, flow = module(
        """
        import torch

        def step(gs, opt):
            gs.step(opt)

        def main():
            grad_scaler = torch.amp.GradScaler()
            step(grad_scaler, torch.optim.SGD([], lr=1))
        """
    )
    obj = flow.object_of(receivers(tree, "step")[0])
    assert (obj.kind, obj.callee) == ("call", "torch.amp.GradScaler")


def test_parameter_without_callers_stays_a_parameter():
    tree, flow = module(
        """
        def step(gs, opt):
            gs.step(opt)

        def main(x):
            step(x[0], None)
            step(x, None)
        """
    )
    obj = flow.object_of(receivers(tree, "step")[0])
    assert obj.kind == "phi"  # the parameter (a caller passes something unknown) or main's x
    assert sorted(o.label for o in obj.site) == ["gs", "x"]


def test_self_field_is_one_object_per_class_family_and_holds_its_assignments():
    tree, flow = module(
        """
        import torch

        class Base:
            def __init__(self):
                self.scaler = torch.amp.GradScaler()

        class Child(Base):
            def step(self):
                self.scaler.update()

        class Other:
            def step(self):
                self.scaler.update()
        """
    )
    child, other = receivers(tree, "update")
    assert flow.object_of(child) != flow.object_of(other)
    assert flow.object_of(child).kind == "field"
    assert {o.callee for o in flow.origins(flow.object_of(child))} == {"torch.amp.GradScaler"}
    assert {o.kind for o in flow.origins(flow.object_of(other))} == {"field"}


def test_attribute_of_a_local_class_instance_is_its_field():
    tree, flow = module(
        """
        import torch

        class Trainer:
            def __init__(self):
                self.scaler = torch.amp.GradScaler()

        trainer = Trainer()
        trainer.scaler.update()
        """
    )
    obj = flow.object_of(receivers(tree, "update")[0])
    assert obj.kind == "field"
    assert {o.callee for o in flow.origins(obj)} == {"torch.amp.GradScaler"}


def test_with_as_and_loop_targets_are_objects_of_their_own():
    tree, flow = module(
        """
        def f(optimizers):
            with amp.scale_loss(loss, opt) as scaled_loss:
                scaled_loss.backward()
            for opt in optimizers:
                opt.step()
        """
    )
    assert flow.object_of(receivers(tree, "backward")[0]).kind == "with"
    assert flow.object_of(receivers(tree, "step")[0]).kind == "loop"


def test_object_at_reads_a_dotted_reference_at_a_call():
    tree, flow = module(
        """
        import torch

        def main():
            s = torch.amp.GradScaler()
            helper(s)
        """
    )
    call = tree.body[1].body[1].value
    assert flow.object_at("s", call).callee == "torch.amp.GradScaler"


def used(tree, name: str) -> list:
    """The arguments of ``use(...)`` calls, in source order."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]
    return [c.args[0] for c in sorted(calls, key=lambda c: (c.lineno, c.col_offset))]


def test_literal_values_of_names_and_configuration_classes():
    tree, flow = module(
        """
        ACC = 1
        SWITCHED = 1


        class CFG:
            acc_steps = 2
            lr = 1e-3


        class Moved:
            acc_steps = 1


        Moved.acc_steps = 4


        def f(flag, args):
            n = 2
            if flag:
                n = 4
            use(ACC, CFG.acc_steps, n, args.accum, SWITCHED, Moved.acc_steps)


        def g():
            global SWITCHED
            SWITCHED = 8
        """
    )
    [call] = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "use"]
    acc, cfg, n, accum, switched, moved = call.args
    assert flow.constants(acc) == {1}
    assert flow.constants(cfg) == {2}  # the class body's one assignment
    assert flow.constants(n) == {2, 4}  # every reaching assignment
    assert flow.constants(accum) is None  # a run-time configuration entry
    assert flow.constants(switched) is None  # a function rebinds the module name
    assert flow.constants(moved) is None  # assigned through the class too


def flow_with_returns(source: str):
    """A module's value flow that follows calls into the functions of the module they run."""
    from types import SimpleNamespace

    from ampfix.program.calls import flow_of

    tree = ast.parse(textwrap.dedent(source))
    return tree, flow_of(SimpleNamespace(semantic=SemanticModel(tree), path="m.py", project=None))


def test_an_unpacked_factory_result_is_what_the_factory_returns_at_that_position():
    tree, flow = flow_with_returns(
        """
        import torch

        def fetch_optimizer(model):
            optimizer = torch.optim.AdamW(model.parameters())
            return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, 100)

        def train(model):
            optimizer, scheduler = fetch_optimizer(model)
            other_optimizer, other_scheduler = fetch_optimizer(model)
            scheduler.step()
            other_scheduler.step()
            optimizer.step()
        """
    )
    scheduler, other, optimizer = receivers(tree, "step")
    assert {o.callee for o in flow.origins(flow.object_of(scheduler))} == {"torch.optim.lr_scheduler.OneCycleLR"}
    assert {o.callee for o in flow.origins(flow.object_of(optimizer))} == {"torch.optim.AdamW"}
    # one factory, two calls: two schedulers, each its own object (made at the same place)
    assert flow.object_of(scheduler) != flow.object_of(other)
    assert flow.origins(flow.object_of(scheduler)) == flow.origins(flow.object_of(other))


def test_a_call_result_is_what_the_function_returns_and_unknown_where_some_return_is_not_known():
    tree, flow = flow_with_returns(
        """
        import torch

        def make_scaler():
            return torch.amp.GradScaler("cuda")

        def maybe_scaler(flag):
            if flag:
                return None
            return torch.amp.GradScaler("cuda")

        def scalers():
            yield torch.amp.GradScaler("cuda")

        def train():
            made = make_scaler()
            maybe = maybe_scaler(True)
            generated = scalers()
            made.update()
            maybe.update()
            generated.update()
        """
    )
    made, maybe, generated = receivers(tree, "update")
    assert {o.callee for o in flow.origins(flow.object_of(made))} == {"torch.amp.GradScaler"}
    assert {o.callee for o in flow.origins(flow.object_of(maybe))} == {"torch.amp.GradScaler", "maybe_scaler"}
    assert {o.callee for o in flow.origins(flow.object_of(generated))} == {"scalers"}


def test_fields_assigned_by_unpacking_are_each_their_own_position():
    tree, flow = flow_with_returns(
        """
        import torch

        class Trainer:
            def __init__(self, model):
                self.optimizer, self.scheduler = self.build(model)

            def build(self, model):
                opt = torch.optim.SGD(model.parameters(), lr=0.1)
                return opt, torch.optim.lr_scheduler.StepLR(opt, 10)

            def step(self):
                self.scheduler.step()
                self.optimizer.step()
        """
    )
    scheduler, optimizer = receivers(tree, "step")[-2:]
    assert {o.callee for o in flow.origins(flow.object_of(scheduler))} == {"torch.optim.lr_scheduler.StepLR"}
    assert {o.callee for o in flow.origins(flow.object_of(optimizer))} == {"torch.optim.SGD"}
