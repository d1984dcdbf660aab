"""Everything rules may ask about one module, computed lazily and at most once per check.

A rule receives a ``ModuleContext`` and asks it questions instead of re-walking syntax:

- ``ctx.semantic``            scopes, import aliases, qualified names (ampfix.semantic)
- ``ctx.references(names)``   every reference to those qualified names, in source order
- ``ctx.compat_context(node)`` whether node sits in version-compatibility code
- ``ctx.training``            the training-loop model (ampfix.training.model)
- ``ctx.steps``               its training steps, one per step loop (ampfix.training.step)
- ``ctx.torch_module(node)``  how to spell ``torch`` at node, with the import edit if missing
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Iterable, Optional

from ampfix.diagnostics import Diagnostic, Edit, Fix, Note
from ampfix.semantic import Scope, SemanticModel
from ampfix.source import Locator

if TYPE_CHECKING:
    from typing import Protocol

    class Reporting(Protocol):
        """What a diagnostic needs of the rule that reports it (a rule of ampfix.rules)."""

        code: str
        name: str

    class RuleSettings(Protocol):
        """The settings rules read (ampfix.settings.Settings is one; typed here because the
        settings validate rule codes, so they import the rules, which import this module)."""

        default_device: str
        amp_dtype: Optional[str]
        target_torch: tuple
        target_torch_declared: bool

    from ampfix.training.model import (
        TrainingModel,  # built lazily: context -> training -> program
    )
    from ampfix.training.step import TrainingStep


@dataclass(frozen=True)
class Reference:
    node: ast.expr  # the Name or Attribute chain as written
    qualified: str  # canonical qualified name
    scope: Scope


# Exceptions whose handlers mark a try as a feature probe for an optional or newer API.
_PROBE_EXCEPTIONS = {"ImportError", "ModuleNotFoundError", "AttributeError", "TypeError", "NameError"}
_FALLBACK_EXCEPTIONS = _PROBE_EXCEPTIONS | {"Exception", "BaseException"}
# Tests like `hasattr(torch, "amp")`, `torch.__version__ >= ...`, `if TORCH_VERSION >= (2, 3)`.
_VERSION_NAME = re.compile(r"version|torch_ge|torch_lt|_ge_\d|_lt_\d|is_torch_greater|is_torch_less", re.I)

# The current AMP API: a branch that uses one of these makes its sibling a compat fallback.
MODERN_AMP_NAMES = frozenset(
    {
        "torch.autocast",
        "torch.amp",
        "torch.amp.autocast",
        "torch.amp.autocast_mode.autocast",
        "torch.GradScaler",
        "torch.amp.GradScaler",
        "torch.amp.grad_scaler.GradScaler",
        "torch.amp.custom_fwd",
        "torch.amp.custom_bwd",
        "torch.get_autocast_dtype",
        "torch.set_autocast_dtype",
        "torch.is_autocast_enabled",
        "torch.set_autocast_enabled",
    }
)
_MODERN_ATTRIBUTE_STRINGS = frozenset(
    {"amp", "GradScaler", "custom_fwd", "custom_bwd", "get_autocast_dtype", "set_autocast_dtype"}
)

GUARDED = "guarded"  # primary path of a compat probe: not reported
FALLBACK = "fallback"  # the old-API fallback of a probe: reported, never fixed


class ModuleContext:
    def __init__(self, path: str, text: str, tree: ast.Module, settings: "RuleSettings", project=None):
        self.path = path
        self.text = text
        self.tree = tree
        self.settings = settings
        self.project = project  # ampfix.program.project.ProjectIndex: other files, loaded on demand
        self.locator = Locator(text)
        self._reference_cache: dict[frozenset, list[Reference]] = {}
        self._torch_import_edit: Optional[Edit] = None

    @cached_property
    def semantic(self) -> SemanticModel:
        return SemanticModel(self.tree)

    def release(self) -> None:
        """Let reference counting free this context's models when its analysis ends: the
        training model points back at the context (and its step functions at the model), and
        bindings at their scopes (SemanticModel.release), so without this every analysed file
        would wait for the cyclic collector, which re-scans all that is alive to find it."""
        if "semantic" in self.__dict__:
            self.semantic.release()
        if "training" in self.__dict__:
            self.training.release()
        for name in ("steps", "training", "semantic", "quote", "_import_or_alias_names"):
            self.__dict__.pop(name, None)
        self._reference_cache.clear()

    @cached_property
    def quote(self) -> str:
        """The file's preferred string quote, so that inserted literals match (ruff's Stylist)."""
        counts = {'"': 0, "'": 0}
        for node in self.semantic.nodes(ast.Constant):
            if not isinstance(node.value, str):
                continue
            text = self.segment(node).lstrip("rRbBuUfF")
            if text[:3] in ('"""', "'''") or text[:1] not in counts:
                continue
            counts[text[:1]] += 1
            if sum(counts.values()) >= 50:
                break
        return "'" if counts["'"] > counts['"'] else '"'

    @cached_property
    def training(self) -> "TrainingModel":
        from ampfix.training.model import (
            TrainingModel,  # built lazily: context -> training -> program
        )

        return TrainingModel.build(self)

    @cached_property
    def steps(self) -> list["TrainingStep"]:
        from ampfix.training.step import steps_of

        return steps_of(self.training)

    def references(self, names: Iterable[str], aliases: Optional[dict[str, str]] = None) -> list[Reference]:
        """References to any of ``names`` (maximal Name/Attribute chains in load context, in
        source order); ``aliases`` maps other spellings to a canonical name.

        Only chains that can possibly resolve to a wanted name are resolved: those ending in a
        wanted last component (``...autocast``) or starting with a name bound by an import or a
        simple alias (``ac`` for ``from torch.cuda.amp import autocast as ac``).
        """
        wanted = frozenset(names)
        aliases = aliases or {}
        key = wanted | frozenset(aliases)
        if key in self._reference_cache:
            return self._reference_cache[key]
        semantic = self.semantic
        lasts = {name.rsplit(".", 1)[-1] for name in (*wanted, *aliases)}
        bound = self._import_or_alias_names
        parents = semantic.parents
        refs = []
        for node in semantic.nodes(ast.Name, ast.Attribute):
            if not isinstance(node.ctx, ast.Load):
                continue
            last = node.attr if isinstance(node, ast.Attribute) else node.id
            if last not in lasts and not (isinstance(node, ast.Name) and last in bound):
                continue
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                continue  # only the longest chain
            qualified = semantic.qualified_name(node)
            if qualified is None:
                continue
            canonical = aliases.get(qualified, qualified)
            if canonical in wanted:
                refs.append(Reference(node, canonical, semantic.scope_of(node)))
        self._reference_cache[key] = refs
        return refs

    @cached_property
    def _import_or_alias_names(self) -> set[str]:
        return {
            name
            for scope in self.semantic.scopes.values()
            for name, bindings in scope.bindings.items()
            if any(b.kind in ("import", "alias") for b in bindings)
        }

    # -- compatibility code -----------------------------------------------------------------

    def compat_context(self, node: ast.AST) -> Optional[str]:
        """GUARDED inside a feature probe's primary path, FALLBACK in its fallback, else None.

        A probe is a try/except (ImportError, AttributeError, ...) or an ``if`` on ``hasattr`` or
        a torch version whose other branch uses the modern AMP API: only then is the old spelling
        there on purpose. (A version check that merely gates AMP as a whole, with no modern
        alternative beside it, is ordinary code and is reported and fixed.)
        """
        child = node
        for ancestor in self.semantic.ancestors(node):
            if isinstance(ancestor, ast.ExceptHandler):
                try_node = self.semantic.parent(ancestor)
                if _handler_catches(ancestor, _FALLBACK_EXCEPTIONS) and self._uses_modern_api(try_node.body):
                    return FALLBACK
            elif isinstance(ancestor, ast.Try) or type(ancestor).__name__ == "TryStar":
                if child in ancestor.body and any(
                    _handler_catches(h, _PROBE_EXCEPTIONS) and self._uses_modern_api(h.body)
                    for h in ancestor.handlers
                ):
                    return GUARDED
            elif isinstance(ancestor, (ast.If, ast.IfExp)):
                if child is not ancestor.test and _is_version_probe(ancestor.test):
                    in_body = child in ancestor.body if isinstance(ancestor, ast.If) else child is ancestor.body
                    other = ancestor.orelse if in_body else ancestor.body
                    other = other if isinstance(other, list) else [other]
                    if self._uses_modern_api([ancestor.test, *other]):
                        return FALLBACK if _is_newer_first(ancestor.test, in_body) else GUARDED
            child = ancestor
        return None

    def _uses_modern_api(self, nodes: list) -> bool:
        for root in nodes:
            for sub in ast.walk(root):
                if isinstance(sub, (ast.Name, ast.Attribute)):
                    if self.semantic.qualified_name(sub) in MODERN_AMP_NAMES:
                        return True
                elif isinstance(sub, ast.Constant) and sub.value in _MODERN_ATTRIBUTE_STRINGS:
                    return True  # hasattr(torch, "get_autocast_dtype")
        return False

    # -- fix helpers ------------------------------------------------------------------------

    def torch_module(self, node: ast.AST) -> Optional[tuple[str, tuple[Edit, ...]]]:
        """How to spell the torch module at node: (name, edits adding ``import torch`` if needed).

        None when ``torch`` is bound to something else there and no alias exists.
        """
        scope = self.semantic.scope_of(node)
        name = self.semantic.module_alias("torch", scope)
        if name is not None:
            return name, ()
        if self.semantic.is_bound("torch", scope):
            return None
        return "torch", (self.import_edit("import torch"),)

    def import_edit(self, statement: str) -> Edit:
        """An edit adding ``statement`` after the module's leading imports (or docstring)."""
        body = self.tree.body
        anchor = None
        index = 0
        if body and _is_docstring(body[0]):
            anchor, index = body[0], 1
        while index < len(body) and isinstance(body[index], (ast.Import, ast.ImportFrom)):
            anchor, index = body[index], index + 1
        newline = self.locator.newline()
        if anchor is None:
            return Edit.insert(0, statement + newline)
        end_row = anchor.end_lineno
        if end_row < len(self.locator.line_starts):
            return Edit.insert(self.locator.line_starts[end_row], statement + newline)
        return Edit.insert(len(self.text), newline + statement)

    def diagnostic(
        self, rule: "Reporting", node: ast.AST, message: str, fix: Optional[Fix] = None,
        evidence: Iterable[tuple[ast.AST, str]] = (),
    ) -> Diagnostic:
        """A finding at node; ``evidence`` is (node, note) for each event that makes it true."""
        start, end = self.locator.node_range(node)
        notes = []
        for where, note in evidence:
            if where is not None:
                a, b = self.locator.node_range(where)
                notes.append(Note(a, b, note))
        notes.sort(key=lambda n: n.start)
        return Diagnostic(rule.code, rule.name, message, start, end, fix, evidence=tuple(notes))

    def segment(self, node: ast.AST) -> str:
        start, end = self.locator.node_range(node)
        return self.text[start:end]


def _handler_catches(handler: ast.ExceptHandler, names: set[str]) -> bool:
    if handler.type is None:
        return "BaseException" in names
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for exc in types:
        parts = exc.attr if isinstance(exc, ast.Attribute) else getattr(exc, "id", None)
        if parts in names:
            return True
    return False


def _is_version_probe(test: ast.AST) -> bool:
    for sub in ast.walk(test):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
            if sub.func.id in ("hasattr", "getattr"):
                return True
        name = sub.id if isinstance(sub, ast.Name) else sub.attr if isinstance(sub, ast.Attribute) else None
        if name and _VERSION_NAME.search(name):
            return True
    return False


def _is_newer_first(test: ast.AST, in_body: bool) -> bool:
    """Whether the branch holding the old API is the one taken on older torch.

    ``if hasattr(torch.amp, "GradScaler"): new else: old`` and ``if version >= X: new else: old``
    put the old API in the else branch: a fallback. The mirrored forms make it the primary path.
    """
    negated = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
    less_than = any(
        isinstance(op, (ast.Lt, ast.LtE)) for sub in ast.walk(test) if isinstance(sub, ast.Compare) for op in sub.ops
    )
    new_in_body = not (negated or less_than)
    return new_in_body == (not in_body)


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )
