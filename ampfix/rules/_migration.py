"""Table-driven migration of deprecated AMP APIs (AMP101-AMP104), as TorchFix does it, but with
every trap of ../shared/reference/amp-api.md handled:

- positional arguments become keywords (``GradScaler(1024.0)`` would otherwise become
  ``device=1024.0``; ``autocast(False)`` would become ``dtype=False``);
- the device is always explicit (``torch.amp.GradScaler()`` defaults to "cuda", so a CPU scaler
  must say "cpu");
- ``custom_fwd``/``custom_bwd`` must be *called* with ``device_type=`` in their new form;
- the target torch version decides whether a rewrite exists at all;
- compatibility code (a probe's primary path) is left alone, its fallback is reported unfixed.

Each deprecated symbol maps to a ``Migration``; the rules only choose which symbols are theirs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterator, Optional

from ampfix.context import FALLBACK, GUARDED, ModuleContext, Reference
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.prefilter import FileBytes, names_amp_module
from ampfix.rules.base import STABLE, Rule
from ampfix.semantic import ALIAS, dotted_parts


@dataclass(frozen=True)
class Migration:
    old: str  # canonical deprecated name
    new: str  # replacement, relative to the torch module ("amp.GradScaler")
    leading: tuple[str, ...] = ()  # positional arguments the new API needs first ('"cuda"',)
    trailing_keywords: tuple[str, ...] = ()  # keywords the new API needs ('device_type="cuda"',)
    # Names of the old API's positional parameters; None keeps positional arguments as they are.
    positional: Optional[tuple[str, ...]] = None
    min_torch: tuple[int, int] = (1, 10)
    decorator_needs_call: bool = False  # bare @old must become @new(...)
    takes_arguments: bool = True  # whether the old API takes arguments (for the message)

    def example(self, quote: str = '"') -> str:
        args = [a.replace('"', quote) for a in (*self.leading, *self.trailing_keywords)]
        if self.takes_arguments:
            args.append("...")
        return f"torch.{self.new}({', '.join(args)})"


def _autocast(device: str) -> Migration:
    # dtype is left unset: the new API's dtype=None picks the same per-device default
    # (float16 on CUDA, bfloat16 on CPU) as the old classes.
    return Migration(
        old=f"torch.{device}.amp.autocast",
        new="autocast",
        leading=(f'"{device}"',),
        positional=("enabled", "dtype", "cache_enabled"),
        min_torch=(1, 10),
    )


def _grad_scaler(device: str) -> Migration:
    return Migration(
        old=f"torch.{device}.amp.GradScaler",
        new="amp.GradScaler",
        leading=(f'"{device}"',),
        positional=("init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled"),
        min_torch=(2, 3),
    )


def _custom(kind: str) -> Migration:
    return Migration(
        old=f"torch.cuda.amp.custom_{kind}",
        new=f"amp.custom_{kind}",
        trailing_keywords=('device_type="cuda"',),
        min_torch=(2, 4),
        decorator_needs_call=True,
    )


def _state_function(old: str, new: str, device: str) -> Migration:
    return Migration(
        old=f"torch.{old}",
        new=new,
        leading=(f'"{device}"',),
        min_torch=(2, 4),
        takes_arguments=old.startswith("set_"),
    )


MIGRATIONS: dict[str, Migration] = {
    m.old: m
    for m in [
        _autocast("cuda"),
        _autocast("cpu"),
        _grad_scaler("cuda"),
        _grad_scaler("cpu"),
        _custom("fwd"),
        _custom("bwd"),
        *(
            _state_function(f"{verb}_autocast_{dev}_enabled", f"{verb}_autocast_enabled", dev)
            for verb in ("is", "set")
            for dev in ("cpu", "xla", "ipu")
        ),
        *(
            _state_function(f"{verb}_autocast_{dev}_dtype", f"{verb}_autocast_dtype", new_dev)
            for verb in ("get", "set")
            for dev, new_dev in (("cpu", "cpu"), ("gpu", "cuda"), ("xla", "xla"), ("ipu", "ipu"))
        ),
    ]
}

# Other spellings of the same objects (a checker's name table needs every one: alias
# resolution does not follow re-exports).
SPELLINGS: dict[str, str] = {
    "torch.cuda.amp.autocast_mode.autocast": "torch.cuda.amp.autocast",
    "torch.cpu.amp.autocast_mode.autocast": "torch.cpu.amp.autocast",
    "torch.cuda.amp.grad_scaler.GradScaler": "torch.cuda.amp.GradScaler",
    "torch.cpu.amp.grad_scaler.GradScaler": "torch.cpu.amp.GradScaler",
    "torch.cuda.amp.autocast_mode.custom_fwd": "torch.cuda.amp.custom_fwd",
    "torch.cuda.amp.autocast_mode.custom_bwd": "torch.cuda.amp.custom_bwd",
}

_PARTIAL = {"functools.partial"}


class MigrationRule(Rule):
    stability = STABLE
    """Reports every reference to this rule's deprecated symbols and rewrites calls to them."""

    symbols: tuple[str, ...] = ()

    @classmethod
    def may_fire(cls, file: FileBytes) -> bool:
        if not super().may_fire(file):
            return False
        return not all(".amp." in symbol for symbol in cls.symbols) or names_amp_module(file)

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        for ref in ctx.references(self.symbols, SPELLINGS):
            if _is_alias_use(ctx, ref):
                continue  # `ac = torch.cuda.amp.autocast` is reported at its right-hand side
            compat = ctx.compat_context(ref.node)
            if compat == GUARDED:
                continue
            migration = MIGRATIONS[ref.qualified]
            message = self.message(migration, ctx)
            fix, why_not = _plan_fix(ctx, ref, migration, compat)
            if why_not:
                message = f"{message} ({why_not})"
            yield ctx.diagnostic(self, ref.node, message, fix)

    def message(self, migration: Migration, ctx: ModuleContext) -> str:
        return f"`{migration.old}` is deprecated; use `{migration.example(ctx.quote)}`"


def _is_alias_use(ctx: ModuleContext, ref: Reference) -> bool:
    if not isinstance(ref.node, ast.Name):
        return False
    scope = ref.scope
    while scope is not None:
        bindings = scope.bindings.get(ref.node.id)
        if bindings:
            return any(b.kind == ALIAS for b in bindings)
        scope = scope.parent
    return False


def _plan_fix(
    ctx: ModuleContext, ref: Reference, migration: Migration, compat: Optional[str]
) -> tuple[Optional[Fix], Optional[str]]:
    """The fix for one reference, or the reason there is none."""
    if compat == FALLBACK:
        return None, "in a compatibility fallback; not fixed"
    target = ctx.settings.target_torch
    if target < migration.min_torch:
        floor = ".".join(map(str, migration.min_torch))
        return None, (
            f"not fixed: `torch.{migration.new}` needs torch >= {floor}, "
            f"target is {'.'.join(map(str, target))}"
        )
    site = _call_site(ctx, ref)
    if site is None:
        return None, None  # a plain reference (e.g. passed as a value): report only
    torch = ctx.torch_module(ref.node)
    if torch is None:
        return None, "not fixed: the name `torch` is bound to something else here"
    torch_name, import_edits = torch
    edits = site.rewrite(ctx, migration, f"{torch_name}.{migration.new}")
    if edits is None:
        return None, "not fixed: starred arguments or too many positional arguments"
    base = dotted_parts(ref.node)
    orphans = frozenset([base[0]]) if base and base[0] != torch_name else frozenset()
    example = migration.example(ctx.quote)
    fix = Fix(
        message=f"Replace with `{example}`",
        edits=tuple(edits) + import_edits,
        applicability=Applicability.SAFE,
        orphaned_imports=orphans,
    )
    return fix, None


@dataclass
class _CallSite:
    """Where the callee and the arguments of a (possibly indirect) call are."""

    callee: ast.expr
    call: Optional[ast.Call]  # None for a bare decorator
    args: list[ast.expr]
    keywords: list[ast.keyword]
    via_partial: bool = False

    def rewrite(self, ctx: ModuleContext, migration: Migration, new_callee: str) -> Optional[list[Edit]]:
        loc = ctx.locator
        quote = ctx.quote
        leading = [a.replace('"', quote) for a in migration.leading]
        keywords = [k.replace('"', quote) for k in migration.trailing_keywords]
        callee_start, callee_end = loc.node_range(self.callee)
        edits = [Edit(callee_start, callee_end, new_callee)]
        if self.call is None:  # bare decorator: @torch.cuda.amp.custom_fwd
            edits[0] = Edit(callee_start, callee_end, f"{new_callee}({', '.join(leading + keywords)})")
            return edits
        if any(isinstance(a, ast.Starred) for a in self.args):
            return None
        if migration.positional is not None and len(self.args) > len(migration.positional):
            return None
        # Insertions at one offset apply in list order: the device goes before `enabled=`.
        everything = sorted(
            [*self.args, *self.keywords], key=lambda n: (n.lineno, n.col_offset)
        )
        if leading:
            text = ", ".join(leading)
            if everything:
                edits.append(Edit.insert(loc.node_range(everything[0])[0], text + ", "))
            elif self.via_partial:
                edits.append(Edit.insert(callee_end, ", " + text))
            else:
                edits.append(Edit.insert(loc.node_range(self.call)[1] - 1, text))
        if migration.positional is not None:
            for arg, name in zip(self.args, migration.positional):
                edits.append(Edit.insert(loc.node_range(arg)[0], f"{name}="))
        if keywords:
            text = ", ".join(keywords)
            if self.keywords:
                first_kw = min(self.keywords, key=lambda n: (n.lineno, n.col_offset))
                edits.append(Edit.insert(loc.node_range(first_kw)[0], text + ", "))
            elif self.args:
                edits.append(Edit.insert(loc.node_range(self.args[-1])[1], ", " + text))
            elif self.via_partial:
                edits.append(Edit.insert(callee_end, ", " + text))
            else:
                edits.append(Edit.insert(loc.node_range(self.call)[1] - 1, text))
        return edits


def _call_site(ctx: ModuleContext, ref: Reference) -> Optional[_CallSite]:
    parent = ctx.semantic.parent(ref.node)
    if isinstance(parent, ast.Call):
        if parent.func is ref.node:
            return _CallSite(ref.node, parent, list(parent.args), list(parent.keywords))
        if parent.args and parent.args[0] is ref.node:
            if ctx.semantic.qualified_name(parent.func) in _PARTIAL:
                return _CallSite(
                    ref.node, parent, list(parent.args[1:]), list(parent.keywords), via_partial=True
                )
        return None
    migration = MIGRATIONS[ref.qualified]
    if migration.decorator_needs_call and isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
        if ref.node in parent.decorator_list:
            return _CallSite(ref.node, None, [], [])
    return None
