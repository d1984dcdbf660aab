"""AMP206: a training checkpoint that saves the optimizer but not the GradScaler's state."""

from __future__ import annotations

import ast
import re
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.edits import insert_after
from ampfix.prefilter import FileBytes, may_call_scaler
from ampfix.program.flow import branch_label
from ampfix.program.values import assignments, enclosing_class, enclosing_function, parameter_names
from ampfix.rules.base import FIX_UNSAFE, STABLE, Rule
from ampfix.semantic import dotted_name

_SCALER_KEY = re.compile(r"scaler|amp", re.I)
_MODEL_KEY = re.compile(r"model|net|state|ema|student|teacher|generator|weights", re.I)


class CheckpointWithoutScaler(Rule):
    code = "AMP206"
    name = "checkpoint-without-scaler"
    summary = "A checkpoint saves model and optimizer state but not `scaler.state_dict()`"
    triggers = (b"caler", b"CALER", b"unscale_")  # GradScaler, scaler, loss_scaler, x.unscale_()
    fix_safety = FIX_UNSAFE
    # earned on the ecosystem's scoring half, 2026-12-02: 15 findings, 15 true, no harmful fix
    stability = STABLE

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return file.has(b"state_dict") and may_call_scaler(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        if not model.uses_scaler():
            return
        for node in ctx.semantic.nodes(ast.Dict, ast.Call):
            entries = _entries(node)
            if entries is None:
                continue
            states = [_state_owner(value) for _, value in entries]
            if not any(owner and model.is_optimizer(owner) for owner in states):
                continue
            if any(owner and model.is_scaler(owner) for owner in states):
                continue
            keys = [k.value if isinstance(k, ast.Constant) and isinstance(k.value, str) else k for k, _ in entries]
            keys = [k for k in keys if isinstance(k, str)]
            if any(_SCALER_KEY.search(k) for k in keys) or self._scaler_added_later(ctx, node) \
                    or _merged_with_scaler(ctx, node):
                continue
            others = [o for o in states if o and not model.is_optimizer(o)]
            if not others and not any(_MODEL_KEY.search(k) for k in keys):
                continue  # optimizer state without a model: metadata, not a training checkpoint
            in_scope = _scalers_in_scope(ctx, node)
            if in_scope and all(_none_on_the_path(ctx, node, candidate) for candidate in in_scope):
                continue  # the `else` of `if loss_scaler is not None:` (RETFound): no scaler there to save
            scaler = in_scope[0] if in_scope else None
            several = len(in_scope) > 1
            what = "each GradScaler's `state_dict()`" if several else f"`{scaler or 'scaler'}.state_dict()`"
            message = (
                "checkpoint saves the optimizer but not the GradScaler: a resumed fp16 run restarts at the "
                f"initial scale (skipped steps, a loss spike); save {what} and restore it with `load_state_dict` on resume"
            )
            reason = _no_fix_reason(ctx, scaler, several, node)
            diag = ctx.diagnostic(self, node, message, None if reason else self._fix(ctx, node, scaler))
            diag.no_fix_reason = reason
            yield diag
        yield from self._check_loads(ctx)

    def _check_loads(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        """The matching resume: `optimizer.load_state_dict(ckpt["optimizer"])` with no scaler load."""
        model = ctx.training
        loads = [
            n for n in ctx.semantic.nodes(ast.Call)
            if isinstance(n.func, ast.Attribute) and n.func.attr == "load_state_dict" and len(n.args) == 1
        ]
        if any(model.is_scaler(dotted_name(n.func.value)) for n in loads):
            return
        for call in loads:
            receiver = dotted_name(call.func.value)
            arg = call.args[0]
            if not model.is_optimizer(receiver) or not isinstance(arg, ast.Subscript):
                continue
            checkpoint = dotted_name(arg.value)
            if checkpoint is None:
                continue
            scaler = self._scaler_bound_before(ctx, call)
            several = len(_scalers_in_scope(ctx, call)) > 1
            what = "the state of the GradScaler that steps it" if several else f"`{scaler or 'scaler'}.load_state_dict(...)`"
            message = (
                f"resuming restores `{receiver}` but not the GradScaler: the loss scale restarts at its initial "
                f"value; restore {what} too"
            )
            reason = _no_fix_reason(ctx, scaler, several, call)
            diag = ctx.diagnostic(self, call, message, None if reason else self._load_fix(ctx, call, scaler, checkpoint))
            diag.no_fix_reason = reason
            yield diag

    @staticmethod
    def _scaler_bound_before(ctx: ModuleContext, call: ast.Call) -> Optional[str]:
        scope = ctx.semantic.scope_of(call)
        for candidate in sorted(ctx.training.scalers):
            if candidate.startswith("self.") and scope.kind == "function":
                if _field_exists_at(ctx, candidate, call):
                    return candidate
                continue
            bindings = scope.bindings.get(candidate, [])
            if any(getattr(b.node, "lineno", 10**9) < call.lineno for b in bindings):
                return candidate
        return None

    def _load_fix(self, ctx: ModuleContext, call: ast.Call, scaler: Optional[str], checkpoint: str) -> Optional[Fix]:
        stmt = ctx.semantic.parent(call)
        if scaler is None or not isinstance(stmt, ast.Expr):
            return None
        quote = ctx.quote
        key = f"{quote}scaler{quote}"
        newline = ctx.locator.newline()
        # a disabled scaler saves `{}`, which an enabled one refuses: restore only a real state
        guard = f"{scaler} is not None and " if _may_be_none(ctx, scaler, call) else ""
        code = (
            f"if {guard}{key} in {checkpoint} and {checkpoint}[{key}]:{newline}"
            f"    {scaler}.load_state_dict({checkpoint}[{key}])"
        )
        edit = insert_after(ctx, stmt, code)
        if edit is None:
            return None
        return Fix(f"Restore `{scaler}` from `{checkpoint}[{key}]` when it holds a state", (edit,), Applicability.UNSAFE)

    @staticmethod
    def _scaler_added_later(ctx: ModuleContext, node: ast.AST) -> bool:
        """`ckpt = {...}` followed by `ckpt["scaler"] = scaler.state_dict()` (dino)."""
        assign = ctx.semantic.parent(node)
        if not isinstance(assign, ast.Assign) or len(assign.targets) != 1:
            return False
        name = dotted_name(assign.targets[0])
        scope = ctx.semantic.scope_of(node).node
        for sub in ast.walk(scope):
            if isinstance(sub, ast.Assign):
                for target in sub.targets:
                    if isinstance(target, ast.Subscript) and dotted_name(target.value) == name:
                        owner = _state_owner(sub.value)
                        key = target.slice.value if isinstance(target.slice, ast.Constant) else None
                        if (owner and ctx.training.is_scaler(owner)) or (isinstance(key, str) and _SCALER_KEY.search(key)):
                            return True
        return False

    def _fix(self, ctx: ModuleContext, node: ast.AST, scaler: Optional[str]) -> Optional[Fix]:
        """Add the key to a dict literal, on a line of its own when the dict has one entry per line."""
        if scaler is None or not isinstance(node, ast.Dict) or not node.values or None in node.keys:
            return None
        quote = ctx.quote
        state = f"{scaler}.state_dict()"
        if _may_be_none(ctx, scaler, node):  # `GradScaler() if use_amp else None`: a run without AMP saves None
            state = f"{state} if {scaler} is not None else None"
        key = f"{quote}scaler{quote}: {state}"
        loc = ctx.locator
        last_end = loc.node_range(node.values[-1])[1]
        close = loc.node_range(node)[1] - 1
        between = ctx.text[last_end:close]
        comma = between.lstrip().startswith(",")
        one_per_line = len({k.lineno for k in node.keys}) == len(node.keys) and node.keys[-1].lineno != node.lineno
        if one_per_line and ("\n" in between or "\r" in between):
            row = node.values[-1].end_lineno
            row_end = loc.line_end(row)
            line = f"{loc.newline()}{loc.indentation(node.keys[-1].lineno)}{key},"
            edits = [Edit.insert(row_end, line)]
            if not comma:
                edits.insert(0, Edit.insert(last_end, ","))
        elif comma:
            edits = [Edit.insert(last_end + between.index(",") + 1, f" {key}")]
        else:
            edits = [Edit.insert(last_end, f", {key}")]
        return Fix(f"Add `{key}` to the checkpoint", tuple(edits), Applicability.UNSAFE)


# several scalers in scope: a fix naming one of them (under one "scaler" key) would save or
# restore the wrong one for the other optimizer
_SEVERAL_SCALERS = (
    "several GradScalers are in scope (one per optimizer, as for a GAN's generator and discriminator): "
    "which state goes under which key is not known"
)


def _merged_with_scaler(ctx: ModuleContext, node: ast.AST) -> bool:
    """``{...} | ({} if scaler is None else {"grad_scaler": scaler.state_dict()})`` (tabm), or
    ``state.update({...})`` where every value of ``state`` holds ``"amp": scaler.state_dict()``
    (fairchem): a dict merged with another that holds the scaler's state saves it too."""
    merge = ctx.semantic.parent(node)
    if isinstance(merge, ast.Call) and isinstance(merge.func, ast.Attribute) and merge.func.attr == "update" \
            and merge.args == [node] and isinstance(merge.func.value, ast.Name):
        values = [getattr(s, "value", None) for s in assignments(ctx.semantic, merge.func.value)]
        return bool(values) and all(v is not None and _holds_scaler_state(ctx, v) for v in values)
    if not (isinstance(merge, ast.BinOp) and isinstance(merge.op, ast.BitOr)):
        return False
    other = merge.right if merge.left is node else merge.left
    return _holds_scaler_state(ctx, other)


def _holds_scaler_state(ctx: ModuleContext, expr: ast.AST) -> bool:
    """Whether ``expr`` names a scaler key or a scaler's ``state_dict()`` anywhere in it."""
    for sub in ast.walk(expr):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and _SCALER_KEY.search(sub.value):
            return True
        owner = _state_owner(sub) if isinstance(sub, ast.Call) else None
        if owner and ctx.training.is_scaler(owner):
            return True
    return False


def _scalers_in_scope(ctx: ModuleContext, node: ast.AST) -> list[str]:
    """The module's scalers bound where ``node`` is (``self.x`` only inside a method), by name."""
    scope = ctx.semantic.scope_of(node)
    return [
        candidate for candidate in sorted(ctx.training.scalers)
        if ctx.semantic.is_bound(candidate.split(".", 1)[0], scope)
        and (candidate.split(".", 1)[0] != "self" or scope.kind == "function")
    ]


def _none_on_the_path(ctx: ModuleContext, node: ast.AST, scaler: str) -> bool:
    """Whether ``node`` runs only where ``scaler`` is None (or false): in the body of ``if scaler
    is None:`` or ``if not scaler:``, or the ``else`` of their negations, in its function."""
    child, parent = node, ctx.semantic.parent(node)
    while parent is not None and not isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
        if isinstance(parent, ast.If) and child is not parent.test:
            key, branch = branch_label(parent.test, "body" if child in parent.body else "orelse")
            test = key.test
            if branch == "body" and isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.Is) \
                    and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None:
                test = test.left  # `scaler is None` holds here
            elif branch != "orelse":
                test = None  # `scaler` is true here (or the test is about something else)
            if test is not None and dotted_name(test) == scaler:
                return True
        child, parent = parent, ctx.semantic.parent(parent)
    return False


def _no_fix_reason(ctx: ModuleContext, scaler: Optional[str], several: bool, anchor: ast.AST) -> Optional[str]:
    """Why a fix naming ``scaler`` at ``anchor`` is not offered; None when it may be."""
    if several:
        return _SEVERAL_SCALERS
    if scaler is not None and not _always_bound(ctx, scaler, anchor):
        return (
            f"`{scaler}` is created only on some paths (under a condition, in a loop or a handler): "
            "a fix that names it would raise where it is not"
        )
    return None


# Statements whose body may not run (a loop's may run no time, a handler only on an error).
_CONDITIONAL = (ast.For, ast.AsyncFor, ast.While, ast.ExceptHandler, ast.Match)


def _always_bound(ctx: ModuleContext, scaler: str, anchor: ast.AST) -> bool:
    """Whether ``scaler`` is bound on every path to ``anchor``, as far as the module shows: a
    parameter, a reference the module never assigns (an attribute of an object made elsewhere:
    ``accel.scaler``), or one assigned by a statement that runs on every path (under no loop or
    ``except``, and under an ``if`` only when the other branch assigns it too), earlier in the
    anchor's function or at the module's top level, or, for ``self.x``, in a method of the
    anchor's class (FourCastNet creates ``self.gscaler`` only under ``if params.enable_amp``)."""
    semantic = ctx.semantic
    function = enclosing_function(semantic, anchor)
    field = scaler.startswith("self.")
    if not field and function is not None and scaler in parameter_names(function):
        return True
    cls = enclosing_class(semantic, anchor) if field else None
    assigned = [node for node in semantic.nodes(ast.Assign, ast.AnnAssign) if node.value is not None and _assigns(node, scaler)]
    if not assigned:
        return True
    for node in assigned:
        owner = enclosing_function(semantic, node)
        if field:
            if enclosing_class(semantic, node) is not cls:
                continue
        elif not ((owner is function and node.lineno < anchor.lineno) or owner is None):
            continue
        if _on_every_path(semantic, node, owner, scaler, anchor):
            return True
    return False


def _assigns(node: ast.AST, name: str) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return name in {dotted_name(t) for t in targets}


def _on_every_path(semantic, node: ast.AST, owner: Optional[ast.AST], name: str, anchor: ast.AST) -> bool:
    """Whether ``node`` (an assignment of ``name``) runs on every path through ``owner`` that
    reaches ``anchor``: the statements around both (a loop whose iteration makes the scaler, then
    saves it) do not count; an ``if`` around the assignment alone counts unless its other branch
    assigns ``name`` too (``scaler = None`` there)."""
    around_anchor = {id(a) for a in semantic.ancestors(anchor)}
    child = node
    for ancestor in semantic.ancestors(node):
        if ancestor is owner or isinstance(ancestor, ast.Module) or id(ancestor) in around_anchor:
            return True
        if isinstance(ancestor, _CONDITIONAL):
            return False
        if isinstance(ancestor, ast.If):
            other = ancestor.orelse if child in ancestor.body else ancestor.body
            if not any(_assigns(n, name) for stmt in other for n in ast.walk(stmt) if isinstance(n, (ast.Assign, ast.AnnAssign))):
                return False
        child = ancestor
    return True


def _may_be_none(ctx: ModuleContext, scaler: str, anchor: ast.AST) -> bool:
    """Whether an assignment of ``scaler`` (of the anchor's class, for ``self.x``) may give it
    None: ``None`` itself, or a conditional whose other branch is None."""
    cls = enclosing_class(ctx.semantic, anchor) if scaler.startswith("self.") else None
    for node in ctx.semantic.nodes(ast.Assign, ast.AnnAssign):
        if node.value is None or not _assigns(node, scaler):
            continue
        if cls is not None and enclosing_class(ctx.semantic, node) is not cls:
            continue
        if _none_possible(node.value):
            return True
    return False


def _none_possible(value: ast.expr) -> bool:
    if isinstance(value, ast.Constant):
        return value.value is None
    if isinstance(value, ast.IfExp):
        return _none_possible(value.body) or _none_possible(value.orelse)
    if isinstance(value, ast.BoolOp):  # `use_amp and GradScaler()`
        return True
    return False


def _field_exists_at(ctx: ModuleContext, field: str, call: ast.Call) -> bool:
    """Whether ``self.<field>`` is a scaler by the time ``call`` runs: created in ``__init__`` of
    this class, or earlier in the same method. A scaler made in a later method (YOLOv6's
    ``before_train_loop``) does not exist at the resume, and would overwrite what it restored."""
    model = ctx.training
    function = next((f for f in model.functions if f.node is enclosing_function(ctx.semantic, call)), None)
    create = model.created_at(function, field) if function is not None else None
    if create is None:
        return False
    owner = enclosing_function(ctx.semantic, create.call)
    if owner is function.node:
        return create.call.lineno < call.lineno
    return getattr(owner, "name", None) == "__init__"


def _entries(node: ast.AST):
    """(key, value) pairs of a dict literal, dict(...) or a call with keyword arguments."""
    if isinstance(node, ast.Dict):
        return list(zip(node.keys, node.values))
    if isinstance(node, ast.Call) and node.keywords and not isinstance(node.func, ast.Attribute) or (
        isinstance(node, ast.Call) and dotted_name(node.func) == "dict"
    ):
        return [(k.arg, k.value) for k in node.keywords if k.arg is not None]
    return None


def _state_owner(value: ast.AST) -> Optional[str]:
    """`optimizer` for `optimizer.state_dict()`."""
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr == "state_dict"
        and not value.args
    ):
        return dotted_name(value.func.value)
    return None
