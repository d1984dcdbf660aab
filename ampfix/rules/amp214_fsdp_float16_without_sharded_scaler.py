"""AMP214: FSDP in float16 with a plain GradScaler instead of `ShardedGradScaler`."""

from __future__ import annotations

import ast
from typing import Iterator

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.prefilter import FileBytes
from ampfix.rules.base import FIX_UNSAFE, Rule
from ampfix.training.frameworks import FSDP1_WRAPS, PLAIN_SCALERS, disabled, float16_autocast, float16_policy, fsdp_wraps

_SHARDED = "torch.distributed.fsdp.sharded_grad_scaler.ShardedGradScaler"
_IMPORT = "from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler"
# what ShardedGradScaler takes by keyword (its positional order differs from GradScaler's after `device`)
_KEYWORDS = frozenset({"device", "init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled"})


class FsdpFloat16WithoutShardedScaler(Rule):
    code = "AMP214"
    name = "fsdp-float16-without-sharded-scaler"
    summary = "FSDP trains in float16 with a plain `GradScaler` instead of `ShardedGradScaler`"
    triggers = (b"FullyShardedDataParallel",)
    fix_safety = FIX_UNSAFE
    changes_training = "the inf check and unscaling now see every rank's gradient shards"

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        return file.has(b"GradScaler")

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        wraps = [w for w in fsdp_wraps(ctx, FSDP1_WRAPS) if not _unsharded(w)]
        if not wraps:
            return  # FSDP2 (its DTensor gradients reduce the inf check), NO_SHARD, or no FSDP
        evidence = next(((w, p) for w in wraps for p in [float16_policy(ctx, w)] if p is not None), None)
        if evidence is None:
            autocast = float16_autocast(ctx)
            if autocast is None:
                return  # bfloat16 or float32 FSDP, or a policy this module does not show: no scaler needed
            evidence = (wraps[0], autocast)
        wrap, precision = evidence
        creations = ctx.training.creations
        if any(ctx.semantic.qualified_name(c.call.func) == _SHARDED for c in creations):
            return  # `ShardedGradScaler() if fsdp else GradScaler()`: the plain one is for the other path
        for create in creations:
            qualified = ctx.semantic.qualified_name(create.call.func)
            if qualified not in PLAIN_SCALERS or disabled(create.call):
                continue
            message = (
                f"`{ctx.segment(create.call.func)}` with FSDP in float16: each rank checks only its own gradient "
                f"shards for inf/NaN, so ranks can disagree on skipping a step and their scales drift apart "
                f"(and float16 or CPU-offloaded shards fail to unscale); use "
                f"`torch.distributed.fsdp.sharded_grad_scaler.ShardedGradScaler`"
            )
            notes = [(wrap, "the model is sharded by FSDP here"), (precision, "in float16 here")]
            # ShardedGradScaler all-reduces over the default process group: a scaler that also
            # serves a path without FSDP (`if world_size > 1: model = FSDP(model)`) would raise there
            fix = None if _conditional(ctx, wrap) else self._fix(ctx, create.call, qualified)
            yield ctx.diagnostic(self, create.call, message, fix, notes)

    def _fix(self, ctx, call: ast.Call, qualified: str):
        positional = 1 if qualified.startswith(("torch.amp.", "torch.GradScaler")) else 0  # `device` first
        if len(call.args) > positional or any(k.arg not in _KEYWORDS for k in call.keywords):
            return None
        scope = ctx.semantic.scope_of(call)
        bound = ctx.semantic.is_bound("ShardedGradScaler", scope)
        if bound and ctx.semantic.lookup("ShardedGradScaler", scope) != _SHARDED:
            return None  # the name means something else here
        start, end = ctx.locator.node_range(call.func)
        edits = [Edit(start, end, "ShardedGradScaler")]
        if not bound:
            edits.append(ctx.import_edit(_IMPORT))
        return Fix("Use `ShardedGradScaler`", tuple(sorted(edits)), Applicability.UNSAFE)


def _unsharded(wrap: ast.Call) -> bool:
    """``sharding_strategy=ShardingStrategy.NO_SHARD``: every rank holds the whole gradient."""
    strategy = next((k.value for k in wrap.keywords if k.arg == "sharding_strategy"), None)
    return isinstance(strategy, ast.Attribute) and strategy.attr == "NO_SHARD"


def _conditional(ctx: ModuleContext, node: ast.AST) -> bool:
    """Whether ``node`` runs only under a condition of its function (an ``if`` or a conditional expression)."""
    for ancestor in ctx.semantic.ancestors(node):
        if isinstance(ancestor, (ast.If, ast.IfExp, ast.Try)):
            return True
        if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
            return False
    return False
