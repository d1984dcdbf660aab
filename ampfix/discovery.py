"""Finding the files to check.

- ``.py``, ``.pyi`` and ``.ipynb`` files under the given directories, sorted;
- ``.gitignore`` files at every level (and ``.git/info/exclude``) are honoured, with git's
  pattern semantics (pathspec);
- default excludes (``.git``, virtual environments, ``build``, ``dist``, ``__pycache__``,
  ``site-packages`` ...) plus ``exclude``/``extend-exclude`` from the settings;
- a file named explicitly is always checked, unless ``--force-exclude`` (as pre-commit passes
  every staged file by name);
- symlinked directories are not followed (no loops); symlinked files are checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Optional

from ampfix.settings import Settings

if TYPE_CHECKING:
    import pathspec

SOURCE_SUFFIXES = (".py", ".pyi", ".ipynb")


@dataclass
class Discovery:
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _spec(patterns) -> Optional[pathspec.GitIgnoreSpec]:
    patterns = [p for p in patterns if p and not p.startswith("#")]
    if not patterns:
        return None
    import pathspec  # only trees with ignore patterns pay for the import (pre-commit start-up)

    return pathspec.GitIgnoreSpec.from_lines(patterns)


class _Excludes:
    """The ``exclude`` patterns. Plain names (all the defaults, ``build``) match any component of
    the path, as in gitignore, without pathspec; pathspec, slow to import, compiles the globs
    only if there are any (start-up time is what a pre-commit run on three files feels)."""

    def __init__(self, patterns):
        patterns = [p for p in patterns if p and not p.startswith("#")]
        self.names = frozenset(p for p in patterns if _is_plain_name(p))
        self.globs = _spec([p for p in patterns if not _is_plain_name(p)])

    def match(self, rel: str) -> bool:
        if any(part in self.names for part in rel.rstrip("/").split("/")):
            return True
        return self.globs is not None and self.globs.match_file(rel)


def _is_plain_name(pattern: str) -> bool:
    return pattern.strip() == pattern and not any(c in pattern for c in "*?[]!\\/")


class _Ignorer:
    def __init__(self, settings: Settings):
        self.root = os.path.abspath(settings.project_root)
        self._root_prefix = self.root.rstrip(os.sep) + os.sep
        self.excludes = _Excludes([*settings.exclude, *settings.extend_exclude])
        self._gitignores: dict[str, Optional[pathspec.GitIgnoreSpec]] = {}
        # directory -> the (directory, spec) pairs of the .gitignore files that apply in it, up to
        # its repository's root: computed once per directory, not once per file
        self._chains: dict[str, list[tuple[str, pathspec.GitIgnoreSpec]]] = {}

    def excluded(self, path: str, is_dir: bool) -> bool:
        path = os.path.abspath(path)
        if path.startswith(self._root_prefix):
            rel = path[len(self._root_prefix):]
        else:
            rel = "." if path == self.root else os.path.basename(path)
        suffix = "/" if is_dir else ""
        rel = (rel.replace(os.sep, "/") if os.sep != "/" else rel) + suffix
        if self.excludes.match(rel) or self.excludes.match(os.path.basename(path) + suffix):
            return True
        return self._gitignored(path, is_dir)

    def _gitignored(self, path: str, is_dir: bool) -> bool:
        for directory, spec in self._chain(os.path.dirname(path)):
            rel = path[len(directory.rstrip(os.sep)) + 1:]
            rel = (rel.replace(os.sep, "/") if os.sep != "/" else rel) + ("/" if is_dir else "")
            if spec.match_file(rel):
                return True
        return False

    def _chain(self, directory: str) -> list:
        chain = self._chains.get(directory)
        if chain is None:
            spec = self._gitignore(directory)
            chain = [(directory, spec)] if spec is not None else []
            parent = os.path.dirname(directory)
            # the repository's root: outer .gitignore files do not apply
            if not os.path.isdir(os.path.join(directory, ".git")) and parent != directory:
                chain = chain + self._chain(parent)
            self._chains[directory] = chain
        return chain

    def _gitignore(self, directory: str) -> Optional[pathspec.GitIgnoreSpec]:
        if directory not in self._gitignores:
            lines: list[str] = []
            for name in (".gitignore", os.path.join(".git", "info", "exclude")):
                try:
                    with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as handle:
                        lines.extend(handle.read().splitlines())
                except OSError:
                    pass
            self._gitignores[directory] = _spec(lines)
        return self._gitignores[directory]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def discover(paths: list[str], settings: Settings, force_exclude: bool = False) -> Discovery:
    ignorer = _Ignorer(settings)
    result = Discovery()
    seen: set[str] = set()
    for given in paths:
        if not os.path.lexists(given):
            result.missing.append(given)
            continue
        if os.path.isdir(given):
            candidates: Iterator[str] = _walk(given, ignorer)
        else:
            if force_exclude and ignorer.excluded(given, False):
                continue
            candidates = iter([given])
        for path in candidates:
            key = os.path.normpath(os.path.abspath(path))
            if key not in seen:
                seen.add(key)
                result.files.append(os.path.normpath(path))
    result.files.sort()
    return result


def _walk(top: str, ignorer: _Ignorer) -> Iterator[str]:
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = entry.is_file()
            except OSError:
                continue
            if is_dir:
                if not ignorer.excluded(entry.path, True):
                    stack.append(entry.path)
            elif is_file and entry.name.endswith(SOURCE_SUFFIXES):
                if not ignorer.excluded(entry.path, False):
                    yield entry.path
