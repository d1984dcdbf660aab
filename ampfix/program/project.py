"""The project index: other modules of the project, found by import, loaded only when asked.

A call into another file of the project (``from util.misc import NativeScaler``, ``import
engine; engine.train_one_epoch(...)``, a relative ``from .utils import step``) resolves to that
module's function or class here. The module is found as Python would find it from the importing
file: relative imports from the file's package; absolute ones from the file's own folder (a
script's ``sys.path[0]``), from the root of its package, and from the project root.

Only modules that pass the prefilter are loaded (the loader decides: the engine's loader reads
the bytes, runs the prefilter and parses), so a module with nothing AMP-related in it is never
parsed and calls into it stay unresolved (unknown to the rules). Loaded modules are memoized by
path and stat, a bounded number at a time, and every module a file's analysis used is recorded
with its content digest: the result cache of that file holds only while those digests do.
"""

from __future__ import annotations

import ast
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

from ampfix.program.module import ModuleSource
from ampfix.semantic import dotted_parts

# A loader reads one file: (module, content digest), the module None when the file cannot be a
# source of facts (rejected by the prefilter unless ``prefiltered`` is False, a syntax error);
# None when it cannot be read.
Loader = Callable[[str, "ProjectIndex", bool], Optional[tuple[Optional[ModuleSource], str]]]

_MAX_LOADED = 128  # modules kept parsed at once (a run over a monorepo stays bounded)
_MAX_HOPS = 3  # re-exports followed (``util/__init__.py``: ``from .misc import NativeScaler``)
_MAX_CALLER_FILES = 64  # files of a folder read when looking for a function's callers


@dataclass(frozen=True)
class Definition:
    module: ModuleSource
    node: ast.AST  # a FunctionDef / AsyncFunctionDef / ClassDef at the module's top level
    attribute: Optional[str] = None  # ``Class.attribute`` was named (a method, left to the caller)


class ProjectIndex:
    def __init__(self, loader: Loader, root: str = "."):
        self._loader = loader
        self.root = os.path.abspath(root)
        self._loaded: OrderedDict[tuple, tuple] = OrderedDict()  # (path, prefiltered) -> (stamp, module, digest)
        self._digests: dict[str, tuple] = {}  # path -> (stamp, digest) of every module loaded
        self._edges: dict[str, set[str]] = {}  # module path -> the files its facts were read from
        self._asking: Optional[str] = None  # the module whose import is being resolved
        self._imports: dict[str, dict] = {}  # path -> top-level imports, of modules not loaded
        self._roots: dict[str, list[str]] = {}  # folder -> where its absolute imports are found
        self._extensions: dict[str, Optional[str]] = {}  # project root -> a compiled extension
        self._callers: dict[tuple, tuple] = {}  # (path, function name, line) -> (files' stats, calls)
        self._sys_paths: dict[str, tuple] = {}  # path -> the relative folders its top level appends to sys.path

    # -- modules ----------------------------------------------------------------------------

    def load(self, path: str, prefiltered: bool = True) -> Optional[ModuleSource]:
        """The module at ``path`` (memoized while its stat holds), or None. Modules are loaded
        for their training facts only if they pass the prefilter; ``prefiltered=False`` loads
        any module (a caller, read for how it sets up what it passes)."""
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        key = (path, prefiltered)
        entry = self._loaded.get(key)
        if entry is None or entry[0] != stamp:
            loaded = self._loader(path, self, prefiltered)
            entry = (stamp, *(loaded or (None, None)))
            self._loaded[key] = entry
            if len(self._loaded) > _MAX_LOADED:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        if entry[2] is not None:
            self._digests[path] = (stamp, entry[2])
            if self._asking is not None:
                self.note_call(self._asking, path)  # read, even if it holds nothing: a dependency
        return entry[1]

    def note_call(self, caller: str, callee: str) -> None:
        """A call in ``caller``'s module was followed into ``callee``'s: its facts depend on it."""
        self._edges.setdefault(os.path.abspath(caller), set()).add(callee)

    def dependencies(self, path: str) -> list[list]:
        """[path, mtime_ns, size, digest] of every module the facts of ``path`` were read from
        (calls followed from it, and from those modules in turn)."""
        seen, stack = set(), [os.path.abspath(path)]
        while stack:
            for callee in self._edges.get(stack.pop(), ()):
                if callee not in seen:
                    seen.add(callee)
                    stack.append(callee)
        seen.discard(os.path.abspath(path))
        return [[p, *self._digests[p][0], self._digests[p][1]] for p in sorted(seen) if p in self._digests]

    def module_file(self, importer: str, module: str, level: int = 0) -> Optional[str]:
        """The file of ``module`` as imported from ``importer`` (``level`` dots of a relative import)."""
        folder = os.path.dirname(os.path.abspath(importer))
        if level:
            for _ in range(level - 1):
                folder = os.path.dirname(folder)
            return _module_in(folder, module) if module else _package_init(folder)
        for base in self._search_roots(folder) + self._appended_roots(importer, folder):
            found = _module_in(base, module)
            if found is not None:
                return found
        return None

    def _appended_roots(self, importer: str, folder: str) -> list[str]:
        """The folders the importer's top level adds to ``sys.path`` by a relative literal
        (``sys.path.append('./Configs/')``, Kaggle scripts' way to reach their configuration),
        taken from where the script may be run: its folder and the roots above it."""
        entries = self._sys_paths.get(importer)
        if entries is None:
            entries = self._sys_paths[importer] = _sys_path_literals(importer)
        roots = []
        for entry in entries:
            for base in self._search_roots(folder):
                candidate = os.path.normpath(os.path.join(base, entry))
                if self._under_root(candidate) and os.path.isdir(candidate):
                    roots.append(candidate)
        return list(dict.fromkeys(roots))

    def _search_roots(self, folder: str) -> list[str]:
        """Where an absolute import from a file in ``folder`` is looked for: the folder (a
        script's ``sys.path[0]``), the root of its package, the project's root (the nearest
        folder above with a ``pyproject.toml``, ``setup.py``, ``setup.cfg`` or ``.git``: an
        installed project imports its packages from there) and the configured root."""
        roots = self._roots.get(folder)
        if roots is None:
            package_root = _package_root(folder)
            roots = [folder, package_root]
            marked = _marked_root(package_root)
            if marked is not None:
                roots.append(marked)
            if self._under_root(folder):
                roots.append(self.root)
            roots = self._roots[folder] = list(dict.fromkeys(roots))
        return roots

    # -- definitions --------------------------------------------------------------------------

    def definition(self, source: ModuleSource, expr: ast.AST, prefiltered: bool = True) -> Optional[Definition]:
        """The function or class of another project module that ``expr`` (a name or a dotted
        chain as written in ``source``) refers to through an import (``prefiltered=False``: in
        a module with no training code too, for a question that is not about AMP calls)."""
        parts = dotted_parts(expr)
        if not parts:
            return None
        semantic = source.semantic
        nodes = semantic.binding_nodes(parts[0], semantic.scope_of(expr))
        if len(nodes) != 1 or not isinstance(nodes[0], (ast.Import, ast.ImportFrom)):
            return None
        outer, self._asking = self._asking, source.path
        try:
            return self._imported(source.path, nodes[0], parts, 0, prefiltered)
        finally:
            self._asking = outer

    def _imported(
        self, importer: str, stmt: ast.stmt, parts: list[str], hops: int, prefiltered: bool = True
    ) -> Optional[Definition]:
        alias = next((a for a in stmt.names if (a.asname or a.name.split(".", 1)[0]) == parts[0]), None)
        if alias is None or hops > _MAX_HOPS:
            return None
        if isinstance(stmt, ast.ImportFrom):
            # ``from pkg import mod`` may name a submodule; else a name defined in ``pkg``
            base = stmt.module or ""
            submodule = self.module_file(importer, f"{base}.{alias.name}" if base else alias.name, stmt.level)
            if submodule is not None:
                return self._member(submodule, parts[1:], hops, prefiltered)
            path = self.module_file(importer, base, stmt.level)
            return self._member(path, [alias.name, *parts[1:]], hops, prefiltered) if path else None
        if alias.asname:
            path = self.module_file(importer, alias.name)
            return self._member(path, parts[1:], hops, prefiltered) if path else None
        # ``import a.b`` binds ``a``: the longest prefix of the chain that is a module
        for cut in range(len(parts) - 1, 0, -1):
            path = self.module_file(importer, ".".join(parts[:cut]))
            if path is not None:
                return self._member(path, parts[cut:], hops, prefiltered)
        return None

    def _member(self, path: str, chain: list[str], hops: int, prefiltered: bool = True) -> Optional[Definition]:
        """``chain[0]`` at the top level of the module at ``path`` (a def or class), following
        one re-export by import; ``chain[1:]`` are left to the caller (a method of a class)."""
        if len(chain) not in (1, 2):
            return None
        module = self.load(path, prefiltered)
        if module is None:
            # a module without training code (the prefilter rejects it) may still re-export one:
            # ``util/__init__.py`` with ``from .misc import NativeScaler``
            stmt = self._reexport(path, chain[0])
            return self._imported(path, stmt, chain, hops + 1, prefiltered) if stmt is not None else None
        bindings = module.semantic.module_scope.bindings.get(chain[0], [])
        if len(bindings) != 1:
            return None
        node = bindings[0].node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if len(chain) == 1:
                return Definition(module, node)
            if isinstance(node, ast.ClassDef):
                return Definition(module, node, chain[1])
            return None
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return self._imported(path, node, chain, hops + 1, prefiltered)
        return None

    def _under_root(self, folder: str) -> bool:
        return folder == self.root or folder.startswith(self.root + os.sep)

    def callers(self, source: ModuleSource, function: ast.AST) -> list[tuple[ModuleSource, ast.Call]]:
        """The calls of ``function`` (a top-level def of ``source``) in the other modules of its
        folder and of its package's root folder that import it (``from utils import train``),
        where a training script calls its step functions from. Bounded: the files of those
        folders only, read only if they name the function. Memoized while those files' stats
        hold: every fix trial of a file asks again about the same functions."""
        here = os.path.abspath(source.path)
        folder = os.path.dirname(here)
        name = getattr(function, "name", None)
        if name is None:
            return []
        candidates = [c for c in python_files(folder, _package_root(folder)) if c != here]
        stamps = (_stamp(here), *map(_stamp, candidates))  # the callers, and this file as they import it
        key = (here, name, function.lineno)
        cached = self._callers.get(key)
        if cached is None or cached[0] != stamps or not self._still_loaded(cached[1]):
            if len(self._callers) >= _MAX_LOADED:
                self._callers.clear()
            cached = self._callers[key] = (stamps, self._find_callers(here, function, candidates))
        for candidate, _, _ in cached[1]:
            self.note_call(source.path, candidate)
        return [(module, call) for _, module, call in cached[1]]

    def _still_loaded(self, found: list[tuple[str, ModuleSource, ast.Call]]) -> bool:
        """Whether the caller modules of a memoized answer are the ones the index holds now
        (not evicted and parsed again): only then are its call nodes theirs."""
        return all(self.load(candidate, prefiltered=False) is module for candidate, module, _ in found)

    def _find_callers(self, here: str, function: ast.AST, candidates: list[str]) -> list[tuple[str, ModuleSource, ast.Call]]:
        name = function.name
        found = []
        for candidate in candidates:
            try:
                with open(candidate, "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            if name.encode() not in data or b"import" not in data:
                continue
            module = self.load(candidate, prefiltered=False)
            if module is None:
                continue
            for call in module.semantic.nodes(ast.Call):
                named = self.definition(module, call.func) if _names(call.func, name) else None
                # the callee as loaded by the index is another parse of the same file
                if named is not None and _same_definition(named, here, function):
                    found.append((candidate, module, call))
        return found

    def compiled_extension(self, path: str) -> Optional[str]:
        """A custom C++/CUDA extension of the project ``path`` belongs to (a ``.cu`` source, or a
        ``setup.py`` building a ``CUDAExtension``/``CppExtension``), if there is one: its kernels
        may have no float16 version. Found from file names and setup files only; once per root."""
        folder = os.path.dirname(os.path.abspath(path))
        root = _marked_root(folder)
        if root is None and self._under_root(folder):
            root = self.root
        if root is None:
            return None
        if root not in self._extensions:
            self._extensions[root] = _find_extension(root)
        return self._extensions[root]

    def _reexport(self, path: str, name: str) -> Optional[ast.stmt]:
        """The top-level import of ``path`` that binds ``name``, read from the imports alone."""
        if path not in self._imports:
            self._imports[path] = _top_level_imports(path)
        if self._asking is not None:
            self.note_call(self._asking, path)
        return self._imports[path].get(name)


_ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def _marked_root(folder: str) -> Optional[str]:
    current = folder
    while True:
        if any(os.path.exists(os.path.join(current, marker)) for marker in _ROOT_MARKERS):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


_SKIPPED_FOLDERS = frozenset({"node_modules", "site-packages", "__pycache__", "build", "dist", "venv", "env"})
_MAX_WALKED = 20_000  # entries looked at per project: a monorepo costs at most this


def _find_extension(root: str) -> Optional[str]:
    walked = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_FOLDERS)
        walked += len(dirs) + len(files)
        for name in sorted(files):
            full = os.path.join(folder, name)
            if name.endswith((".cu", ".cuh")):
                return full
            if name == "setup.py":
                try:
                    with open(full, "rb") as handle:
                        data = handle.read()
                except OSError:
                    continue
                if b"CUDAExtension" in data or b"CppExtension" in data:
                    return full
        if walked > _MAX_WALKED:
            return None
    return None


def _stamp(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _package_root(folder: str) -> str:
    """The folder above the outermost package holding ``folder`` (itself if not a package)."""
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder = os.path.dirname(folder)
    return folder


def python_files(*folders: str, limit: int = _MAX_CALLER_FILES) -> list[str]:
    """The ``.py`` files of each folder (not below it), the first ``limit`` by name in each."""
    files = []
    for folder in dict.fromkeys(folders):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        files += [os.path.join(folder, n) for n in names if n.endswith(".py")][:limit]
    return files


def _same_definition(named: Definition, path: str, function: ast.AST) -> bool:
    return (
        named.attribute is None and os.path.abspath(named.module.path) == path
        and getattr(named.node, "name", None) == function.name and named.node.lineno == function.lineno
    )


def _names(func: ast.AST, name: str) -> bool:
    return (isinstance(func, ast.Name) and func.id == name) or (isinstance(func, ast.Attribute) and func.attr == name)


def _top_level_imports(path: str) -> dict[str, ast.stmt]:
    """The names a module's top-level imports bind, parsed from those statements alone (a
    package's ``__init__.py`` can be large; its re-exports are all that is asked of it)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        tree = ast.parse(_import_statements(text), filename=path)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        try:
            tree = ast.parse(text, filename=path)  # an unusual layout: read the whole module
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return {}
    found: dict[str, ast.stmt] = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                found[alias.asname or alias.name.split(".", 1)[0]] = stmt
    return found


def _sys_path_literals(path: str) -> tuple:
    """The relative folders a module adds to ``sys.path``: string literals given to
    ``sys.path.append(...)`` / ``sys.path.insert(i, ...)``, and folders computed from the module's
    own place (``ROOT = Path(__file__).resolve().parents[1]`` then ``sys.path.append(str(ROOT))``,
    as yolov5 and ultralytics scripts reach their package; ``os.path.dirname(os.path.abspath(
    __file__))``). Each line is parsed alone: top-level assignments name the folders, and the
    appends may be indented (``if str(ROOT) not in sys.path:``)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return ()
    if "sys.path." not in text:
        return ()
    found = []
    levels: dict[str, int] = {}  # a top-level name -> how many folders above the module it is
    for line in text.splitlines():
        stripped = line.strip()
        if "__file__" in line or any(name in line for name in levels):
            assigned = _top_level_assignment(line)
            if assigned is not None:
                name, value = assigned
                level = _levels_above_file(value, levels)
                if level is not None:
                    levels[name] = level
                else:
                    levels.pop(name, None)
        if not stripped.startswith(("sys.path.append(", "sys.path.insert(")):
            continue
        try:
            call = ast.parse(stripped.split("#", 1)[0]).body[0].value
        except (SyntaxError, ValueError, IndexError, AttributeError):
            continue
        argument = call.args[-1] if isinstance(call, ast.Call) and call.args else None
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str) \
                and argument.value and not os.path.isabs(argument.value):
            found.append(argument.value)
        elif argument is not None:
            level = _levels_above_file(argument, levels)
            if level is not None and level >= 1:
                found.append(os.path.join(*([os.pardir] * (level - 1))) if level > 1 else os.curdir)
    return tuple(found)


def _top_level_assignment(line: str) -> Optional[tuple[str, ast.expr]]:
    """``NAME = value`` at column 0, parsed alone."""
    if not line[:1].isidentifier():
        return None
    try:
        stmt = ast.parse(line.split("  #", 1)[0]).body[0]
    except (SyntaxError, ValueError, IndexError):
        return None
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id, stmt.value
    return None


# calls that keep the path they are handed (as far as the folder is concerned)
_SAME_PATH = {"str", "Path", "pathlib.Path", "os.path.abspath", "os.path.realpath", "os.fspath"}


def _levels_above_file(expr: ast.AST, levels: dict[str, int]) -> Optional[int]:
    """How many folders above the module's file ``expr`` is (0: the file itself, 1: its folder),
    for ``__file__`` and what is computed from it; None for anything else."""
    if isinstance(expr, ast.Name):
        return 0 if expr.id == "__file__" else levels.get(expr.id)
    if isinstance(expr, ast.Call):
        parts = dotted_parts(expr.func)
        func = ".".join(parts) if parts else None
        if func in _SAME_PATH and len(expr.args) == 1 and not expr.keywords:
            return _levels_above_file(expr.args[0], levels)
        if func == "os.path.dirname" and len(expr.args) == 1:
            inner = _levels_above_file(expr.args[0], levels)
            return None if inner is None else inner + 1
        if isinstance(expr.func, ast.Attribute) and expr.func.attr in ("resolve", "absolute") and not expr.args:
            return _levels_above_file(expr.func.value, levels)
        return None
    if isinstance(expr, ast.Attribute) and expr.attr == "parent":
        inner = _levels_above_file(expr.value, levels)
        return None if inner is None else inner + 1
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Attribute) and expr.value.attr == "parents" \
            and isinstance(expr.slice, ast.Constant) and type(expr.slice.value) is int and expr.slice.value >= 0:
        inner = _levels_above_file(expr.value.value, levels)
        return None if inner is None else inner + expr.slice.value + 1
    return None


def _import_statements(text: str) -> str:
    """The statements at column 0 that start with ``import`` or ``from``, with their
    parenthesised or backslash-continued lines."""
    out: list[str] = []
    open_parens, continued, in_string = 0, False, None
    for line in text.splitlines():
        if in_string is None and not (open_parens or continued):
            for quote in ('"""', "'''"):
                if line.count(quote) % 2:  # a triple-quoted string starts here: not code below
                    in_string = quote
                    break
            if in_string is not None:
                continue
        elif in_string is not None:
            if line.count(in_string) % 2:
                in_string = None
            continue
        if open_parens or continued:
            out.append(line)
        elif line.startswith(("import ", "from ")):
            out.append(line)
        else:
            continue
        code = line.split("#", 1)[0]
        open_parens = max(0, open_parens + code.count("(") - code.count(")"))
        continued = code.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


def _module_in(base: str, module: str) -> Optional[str]:
    stem = os.path.join(base, *module.split("."))
    if os.path.isfile(stem + ".py"):
        return stem + ".py"
    return _package_init(stem)


def _package_init(folder: str) -> Optional[str]:
    init = os.path.join(folder, "__init__.py")
    return init if os.path.isfile(init) else None


def imported_project_files(ctx: ModuleSource) -> list[str]:
    """The files of the project modules that ``ctx`` imports (``from pkg import mod`` names the
    submodule's file too), itself left out."""
    files = []
    here = os.path.abspath(ctx.path)
    for stmt in ctx.semantic.nodes(ast.Import, ast.ImportFrom):
        if isinstance(stmt, ast.ImportFrom):
            names = [stmt.module or ""] + [f"{stmt.module}.{a.name}" if stmt.module else a.name for a in stmt.names]
            level = stmt.level
        else:
            names, level = [a.name for a in stmt.names], 0
        for name in names:
            path = ctx.project.module_file(ctx.path, name, level) if name or level else None
            if path is not None and os.path.abspath(path) != here:
                files.append(path)
    return files
