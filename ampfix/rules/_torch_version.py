"""What a torch-version test evaluates to on every torch from the target on (AMP106, AMP107).

``VersionTestEvaluator(ctx).truth(test)`` is True or False when the test has that value on every torch
release >= ``settings.target_torch``, and None when it may depend on the release or on anything
else. Only forms whose meaning is known are evaluated:

- comparisons of the installed version with a literal release (``"2.4"``, ``"1.10.0"``,
  ``(2, 4)``): ``torch.__version__`` (a ``TorchVersion`` from torch 1.10, which compares as a
  version; before it, a plain string compared character by character), ``packaging.version``
  ``parse``/``Version`` and ``pkg_resources.parse_version`` of the version string,
  ``distutils`` ``LooseVersion`` (whose lists compare like release numbers against a literal of
  at most three numbers); the version string is ``torch.__version__``, ``torch.version.__version__``,
  ``importlib.metadata.version("torch")``, optionally ``.split("+")[0]`` or a parsed version's
  ``.base_version``/``.public``;
- ``hasattr`` of a modern AMP name (``hasattr(torch.amp, "GradScaler")``), true from the release
  that added it (the deprecated names are not evaluated: a name slated for removal may vanish);
- library helpers with a documented meaning: accelerate's ``is_torch_version(op, "X.Y")``,
  transformers' ``is_torch_greater_or_equal("X.Y")`` and ``is_torch_greater_or_equal_than_X_Y``,
  lightning's ``_TORCH_GREATER_EQUAL_X_Y``;
- a module-level name bound once to one of these (``_TORCH_GE_2_4 = version.parse(...) >= ...``,
  ``TORCH_VERSION = version.parse(torch.__version__)``);
- ``not``, ``and``, ``or`` and comparison chains of these, where the operands evaluated before the
  deciding one are known (an unknown operand after it is never evaluated, so dropping it is exact).

The installed version is taken to be a final release (local and post releases included) at or
above the target: a pre-release of the target release sorts below it and is not supported.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Optional

from ampfix.context import ModuleContext
from ampfix.rules._migration import MIGRATIONS

Release = tuple[int, ...]

# Modern AMP names and the torch release that added them (the floors AMP101-AMP104 use).
MODERN_FLOORS: dict[str, tuple[int, int]] = {
    "torch.amp": (1, 10),
    "torch.amp.autocast_mode": (1, 10),
    "torch.amp.autocast_mode.autocast": (1, 10),
    "torch.amp.grad_scaler": (2, 3),
    "torch.amp.grad_scaler.GradScaler": (2, 3),
    "torch.amp.grad_scaler.OptState": (2, 3),
    **{f"torch.{m.new}": m.min_torch for m in MIGRATIONS.values()},
}
MODERN_FLOORS["torch.amp.autocast"] = (1, 10)  # torch.autocast is torch.amp.autocast
MODERN_FLOORS["torch.GradScaler"] = (2, 3)

VERSION_PARSERS = frozenset({
    "packaging.version.parse", "packaging.version.Version",
    "pkg_resources.parse_version", "pkg_resources.packaging.version.parse",
    "pkg_resources.packaging.version.Version",
})
LOOSE_VERSIONS = frozenset({
    "distutils.version.LooseVersion", "setuptools._distutils.version.LooseVersion",
    "looseversion.LooseVersion",
})
_VERSION_STRINGS = frozenset({"torch.__version__", "torch.version.__version__"})
METADATA_VERSIONS = frozenset({"importlib.metadata.version", "importlib_metadata.version"})
ACCELERATE_HELPERS = frozenset({
    "accelerate.utils.is_torch_version", "accelerate.utils.versions.is_torch_version",
    "accelerate.utils.imports.is_torch_version",
})
TRANSFORMERS_HELPERS = frozenset({
    "transformers.utils.is_torch_greater_or_equal",
    "transformers.utils.import_utils.is_torch_greater_or_equal",
})
FLAG_NAMES = (
    re.compile(r"^(?:lightning|pytorch_lightning|lightning_fabric)(?:\.\w+)*\._TORCH_GREATER_EQUAL_(\d+)_(\d+)$"),
    re.compile(r"^transformers\.pytorch_utils\.is_torch_greater_or_equal_than_(\d+)_(\d+)$"),
)
_RELEASE = re.compile(r"^\d+(?:\.\d+){0,2}$")

# How a version value compares: "torch" (TorchVersion: with a string, a tuple or a Version),
# "packaging" (a Version: with a Version only), "loose" (LooseVersion: with a string or one).
TORCH, PACKAGING, LOOSE = "torch", "packaging", "loose"
_OPERATORS = {">=": ast.GtE, ">": ast.Gt, "<": ast.Lt, "<=": ast.LtE}
_FLIPPED = {ast.GtE: ast.LtE, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.Lt: ast.Gt}


def release_text(release: tuple) -> str:
    return ".".join(map(str, release))


def _padded(release: tuple) -> Release:
    return tuple(release) + (0,) * (3 - len(release))


def dead_comparison(op: type, literal: tuple, target: tuple) -> Optional[bool]:
    """``installed <op> literal`` on every release >= target: True, False, or None (it varies)."""
    floor, bound = _padded(target), _padded(literal)
    if op is ast.GtE:
        return True if floor >= bound else None
    if op is ast.Gt:
        return True if floor > bound else None
    if op is ast.Lt:
        return False if floor >= bound else None
    if op is ast.LtE:
        return False if floor > bound else None
    return None


class VersionTestEvaluator:
    """Evaluates torch-version tests of one module at its target torch."""

    def __init__(self, ctx: ModuleContext):
        self.ctx = ctx
        self.target: tuple = tuple(ctx.settings.target_torch)
        self._resolving: set[int] = set()
        self.reasons: list[str] = []  # the floors of the modern names a `hasattr` found (for the message)

    # -- the installed version ------------------------------------------------------------------

    def qualified(self, node: ast.AST) -> Optional[str]:
        qualified = self.ctx.semantic.qualified_name(node)
        if qualified is None and isinstance(node, ast.Name):
            return self._relative_import(node)  # a library's own helper: `from .versions import ...`
        return qualified

    def _relative_import(self, name: ast.Name) -> Optional[str]:
        """``accelerate.utils.versions.is_torch_version`` for ``is_torch_version`` bound by
        ``from .versions import is_torch_version`` in accelerate/utils/: the package is read from
        the ``__init__.py`` files above the module."""
        nodes = self.ctx.semantic.binding_nodes(name.id, self.ctx.semantic.scope_of(name))
        if len(nodes) != 1 or not isinstance(nodes[0], ast.ImportFrom) or not nodes[0].level:
            return None
        stmt = nodes[0]
        package = _package(self.ctx.path)
        if len(package) < stmt.level:
            return None
        base = package[: len(package) - stmt.level + 1]
        module = [*base, *(stmt.module.split(".") if stmt.module else [])]
        for alias in stmt.names:
            if (alias.asname or alias.name) == name.id:
                return ".".join([*module, alias.name])
        return None

    def _version_string(self, node: ast.AST) -> bool:
        """Whether node is the installed torch version as a string."""
        if isinstance(node, (ast.Name, ast.Attribute)) and self.qualified(node) in _VERSION_STRINGS:
            return True
        if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
            arg = node.args[0]
            if self.qualified(node.func) in METADATA_VERSIONS:
                return isinstance(arg, ast.Constant) and arg.value == "torch"
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == 0:
            split = node.value  # torch.__version__.split("+")[0]: the public part
            return (
                isinstance(split, ast.Call) and isinstance(split.func, ast.Attribute) and split.func.attr == "split"
                and len(split.args) == 1 and isinstance(split.args[0], ast.Constant) and split.args[0].value == "+"
                and not split.keywords and self._version_string(split.func.value)
            )
        if isinstance(node, ast.Attribute) and node.attr in ("base_version", "public"):
            return self.version_value(node.value) == PACKAGING
        return False

    def version_value(self, node: ast.AST) -> Optional[str]:
        """How node compares when it is the installed torch version (TORCH, PACKAGING, LOOSE), else None."""
        if isinstance(node, (ast.Name, ast.Attribute)) and self.qualified(node) == "torch.__version__":
            # a TorchVersion from 1.10; before, a str compared character by character
            return TORCH if self.target >= (1, 10) else None
        if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
            func = self.qualified(node.func)
            if func in VERSION_PARSERS and self._version_string(node.args[0]):
                return PACKAGING
            if func in LOOSE_VERSIONS and self._version_string(node.args[0]):
                return LOOSE
        if isinstance(node, ast.Name):
            value = self._module_constant(node)
            if value is not None:
                return self._resolved(value, self.version_value)
        return None

    def _literal(self, node: ast.AST, kind: str) -> Optional[Release]:
        """The release a literal version stands for, when values of ``kind`` compare with it."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and kind in (TORCH, LOOSE):
            return _release(node.value)
        if isinstance(node, ast.Tuple) and kind == TORCH and 1 <= len(node.elts) <= 3:
            if all(isinstance(e, ast.Constant) and type(e.value) is int for e in node.elts):
                return tuple(e.value for e in node.elts)
            return None
        if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
            arg = node.args[0]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                return None
            func = self.qualified(node.func)
            if (func in VERSION_PARSERS and kind in (TORCH, PACKAGING)) or (func in LOOSE_VERSIONS and kind == LOOSE):
                return _release(arg.value)
        return None

    # -- tests --------------------------------------------------------------------------------

    def truth(self, test: ast.AST) -> Optional[bool]:
        """The value of ``test`` on every torch >= target, or None."""
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            inner = self.truth(test.operand)
            return None if inner is None else not inner
        if isinstance(test, ast.BoolOp):
            return self._bool_op(test)
        if isinstance(test, ast.Compare):
            return self._compare(test)
        if isinstance(test, ast.Call):
            return self._call(test)
        if isinstance(test, (ast.Name, ast.Attribute)):
            return self._flag(test)
        return None

    def _bool_op(self, test: ast.BoolOp) -> Optional[bool]:
        deciding = isinstance(test.op, ast.Or)  # the value that ends an `or` (True) or an `and` (False)
        for operand in test.values:
            value = self.truth(operand)
            if value is None:
                return None  # evaluated at run time before anything known decides
            if value is deciding:
                return deciding
        return not deciding

    def _compare(self, test: ast.Compare) -> Optional[bool]:
        left = test.left
        for op, right in zip(test.ops, test.comparators):
            value = self._pair(left, type(op), right)
            if value is None:
                return None
            if value is False:
                return False  # a chain stops at its first false comparison
            left = right
        return True

    def _pair(self, left: ast.AST, op: type, right: ast.AST) -> Optional[bool]:
        kind = self.version_value(left)
        if kind is not None:
            literal = self._literal(right, kind)
        else:
            kind = self.version_value(right)
            literal = self._literal(left, kind) if kind is not None else None
            op = _FLIPPED.get(op, op)
        if literal is None or op not in _FLIPPED:
            return None
        return dead_comparison(op, literal, self.target)

    def _call(self, call: ast.Call) -> Optional[bool]:
        func = self.qualified(call.func)
        args = call.args
        if call.keywords or any(isinstance(a, ast.Starred) for a in args):
            return None
        if isinstance(call.func, ast.Name) and call.func.id == "hasattr" and func is None and len(args) == 2:
            return self._hasattr(args[0], args[1])
        strings = [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if len(strings) != len(args):
            return None
        if func in ACCELERATE_HELPERS and len(args) == 2 and strings[0] in _OPERATORS:
            literal = _release(strings[1])
            return None if literal is None else dead_comparison(_OPERATORS[strings[0]], literal, self.target)
        if func in TRANSFORMERS_HELPERS and len(args) == 1:
            literal = _release(strings[0])
            return None if literal is None else dead_comparison(ast.GtE, literal, self.target)
        return None

    def _hasattr(self, obj: ast.AST, attr: ast.AST) -> Optional[bool]:
        if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
            return None
        base = self.qualified(obj)
        floor = MODERN_FLOORS.get(f"{base}.{attr.value}") if base else None
        if floor is None or self.target < floor:
            return None
        self.reasons.append(f"`{base}.{attr.value}` exists from torch {release_text(floor)}")
        return True

    def _flag(self, node: ast.AST) -> Optional[bool]:
        qualified = self.qualified(node)
        for pattern in FLAG_NAMES:
            match = pattern.match(qualified or "")
            if match:
                floor = (int(match.group(1)), int(match.group(2)))
                return dead_comparison(ast.GtE, floor, self.target)
        if isinstance(node, ast.Name):
            value = self._module_constant(node)
            if value is not None:
                return self._resolved(value, self.truth)
        return None

    # -- module constants ---------------------------------------------------------------------

    def _module_constant(self, name: ast.Name) -> Optional[ast.expr]:
        """The value of a module-level name bound exactly once (``_TORCH_GE_2 = ...``), when the
        name read here is that binding (not shadowed, not reassigned through ``global``)."""
        semantic = self.ctx.semantic
        scope = semantic.scope_of(name)
        nodes = semantic.binding_nodes(name.id, scope)
        if len(nodes) != 1 or not isinstance(nodes[0], (ast.Assign, ast.AnnAssign)):
            return None
        stmt = nodes[0]
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        if len(targets) != 1 or not isinstance(targets[0], ast.Name) or stmt.value is None:
            return None
        if semantic.scope_of(stmt) is not semantic.module_scope or name.id in self._globals:
            return None
        if scope is semantic.module_scope and stmt.lineno >= name.lineno:
            return None  # read at import time before it is bound
        return stmt.value

    @property
    def _globals(self) -> set[str]:
        found = getattr(self, "_global_names", None)
        if found is None:
            found = self._global_names = {n for g in self.ctx.semantic.nodes(ast.Global) for n in g.names}
        return found

    def _resolved(self, value: ast.expr, evaluate):
        if id(value) in self._resolving:
            return None
        self._resolving.add(id(value))
        try:
            return evaluate(value)
        finally:
            self._resolving.discard(id(value))


def _package(path: str) -> list[str]:
    """The dotted package of the module at path (["accelerate", "utils"]), from ``__init__.py`` files."""
    found = _PACKAGES.get(path)
    if found is None:
        parts: list[str] = []
        folder = os.path.dirname(os.path.abspath(path))
        while os.path.isfile(os.path.join(folder, "__init__.py")) and len(parts) < 32:
            parts.insert(0, os.path.basename(folder))
            folder = os.path.dirname(folder)
        found = _PACKAGES[path] = parts
    return found


_PACKAGES: dict[str, list[str]] = {}


def _release(text: str) -> Optional[Release]:
    """(2, 4) for "2.4"; None for anything but one to three release numbers."""
    if not _RELEASE.match(text):
        return None
    return tuple(int(part) for part in text.split("."))
