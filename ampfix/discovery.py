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

import functools
import os
import re
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

    return pathspec.GitIgnoreSpec.from_lines(patterns, _compiled_pattern)


@functools.lru_cache(maxsize=4096)
def _compiled_pattern(line: str):
    """A gitignore line compiled once per run: the .gitignore files of a monorepo's packages (and
    of the repositories of a workspace) repeat the same lines, and compiling is most of their cost.
    Patterns are immutable, so sharing one between specs is safe."""
    from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

    return GitIgnoreSpecPattern(line)


class _Excludes:
    """The ``exclude`` patterns. Plain names (most defaults, ``build``) match any component of the
    path, as in gitignore, and ``*`` + a plain suffix (``*.egg-info``) any component ending so,
    both without pathspec; pathspec, slow to import, compiles the other globs only if there are
    any (start-up time is what a pre-commit run on three files feels)."""

    def __init__(self, patterns):
        patterns = [p for p in patterns if p and not p.startswith("#")]
        self.names = frozenset(p for p in patterns if _is_plain_name(p))
        self.suffixes = tuple(p[1:] for p in patterns if _is_suffix_glob(p))
        self.globs = _spec([p for p in patterns if not _is_plain_name(p) and not _is_suffix_glob(p)])

    def name_matches(self, name: str) -> bool:
        """Whether a path whose component is ``name`` is excluded by a plain name or suffix."""
        return name in self.names or (bool(self.suffixes) and name.endswith(self.suffixes))

    def match(self, rel: str) -> bool:
        if any(self.name_matches(part) for part in rel.rstrip("/").split("/")):
            return True
        return self.globs is not None and self.globs.match_file(rel)


def _is_plain_name(pattern: str) -> bool:
    return pattern.strip() == pattern and not any(c in pattern for c in "*?[]!\\/")


def _is_suffix_glob(pattern: str) -> bool:
    """``*.egg-info``: one leading star then a plain name; in gitignore, with no slash, it matches
    a component of any directory that ends with that name."""
    return pattern.startswith("*") and len(pattern) > 1 and _is_plain_name(pattern[1:])


class _GitignoreMatcher:
    """One ``.gitignore`` (with ``.git/info/exclude``). Its ignoring patterns joined into one regex
    answer "no pattern ignores this path" (almost every path) in one search instead of one per
    pattern; a path that regex matches goes to pathspec, which applies git's precedence (negations,
    directory patterns), so the answer is pathspec's in every case."""

    def __init__(self, spec: pathspec.GitIgnoreSpec):
        self.spec = spec
        self.any_ignoring = _joined([p.regex for p in spec.patterns if p.include and p.regex is not None])

    def match(self, rel: str) -> bool:
        if self.any_ignoring is not None and self.any_ignoring.match(rel) is None:
            return False
        return self.spec.match_file(rel)


_GROUP_NAME = re.compile(r"\(\?P<[^>]*>")


def _joined(regexes: list) -> Optional[re.Pattern]:
    """One regex, matched at the path's start, that matches wherever one of ``regexes`` (pathspec's,
    each anchored with ``^``) finds a match; None when they cannot be joined (then each path goes to
    pathspec). The patterns for a name at any depth share their ``^(?:.+/)?`` prefix, so the path's
    components are tried once for all of them, not once per pattern."""
    if not regexes:
        return re.compile(r"(?!)")  # nothing ignores: never matches
    plain_flags = re.compile("").flags
    texts = []
    for regex in regexes:
        text = regex.pattern
        if not isinstance(text, str) or regex.flags != plain_flags or "(?P=" in text or not text.startswith("^"):
            return None
        # named groups would collide once joined; they only mark directory matches for pathspec
        texts.append(_GROUP_NAME.sub("(?:", text[1:]))
    anywhere = [t[len(_ANY_DEPTH):] for t in texts if t.startswith(_ANY_DEPTH)]
    anchored = [t for t in texts if not t.startswith(_ANY_DEPTH)]
    alternatives = [f"(?:{t})" for t in anchored]
    if anywhere:
        alternatives.append(_ANY_DEPTH + "(?:" + "|".join(f"(?:{t})" for t in anywhere) + ")")
    return re.compile("^(?:" + "|".join(alternatives) + ")")


_ANY_DEPTH = "(?:.+/)?"


class _Ignorer:
    def __init__(self, settings: Settings):
        self.root = os.path.abspath(settings.project_root)
        self._root_prefix = self.root.rstrip(os.sep) + os.sep
        self.excludes = _Excludes([*settings.exclude, *settings.extend_exclude])
        self._gitignores: dict[str, Optional[_GitignoreMatcher]] = {}
        # directory -> the (directory, matcher) pairs of the .gitignore files that apply in it, up
        # to its repository's root: computed once per directory, not once per file
        self._chains: dict[str, list[tuple[str, _GitignoreMatcher]]] = {}

    def excluded(self, path: str, is_dir: bool) -> bool:
        path = os.path.abspath(path)
        suffix = "/" if is_dir else ""
        rel = self.relative(path) + suffix
        if self.excludes.match(rel) or self.excludes.match(os.path.basename(path) + suffix):
            return True
        return self._gitignored(path, is_dir)

    def relative(self, path: str) -> str:
        """An absolute path as the excludes see it: relative to the project root, with ``/``
        (outside the root, its name alone)."""
        if path.startswith(self._root_prefix):
            rel = path[len(self._root_prefix):]
        else:
            rel = "." if path == self.root else os.path.basename(path)
        return rel.replace(os.sep, "/") if os.sep != "/" else rel

    def _gitignored(self, path: str, is_dir: bool) -> bool:
        for directory, matcher in self._chain(os.path.dirname(path)):
            rel = path[len(directory.rstrip(os.sep)) + 1:]
            rel = (rel.replace(os.sep, "/") if os.sep != "/" else rel) + ("/" if is_dir else "")
            if matcher.match(rel):
                return True
        return False

    def _chain(self, directory: str) -> list:
        chain = self._chains.get(directory)
        if chain is None:
            matcher = self._gitignore(directory)
            chain = [(directory, matcher)] if matcher is not None else []
            parent = os.path.dirname(directory)
            # the repository's root: outer .gitignore files do not apply
            if not os.path.isdir(os.path.join(directory, ".git")) and parent != directory:
                chain = chain + self._chain(parent)
            self._chains[directory] = chain
        return chain

    def _gitignore(self, directory: str, names: Optional[set] = None) -> Optional[_GitignoreMatcher]:
        """``names``: the directory's entries when known (a walk), so that a directory without a
        ``.gitignore`` or ``.git`` costs no failed open."""
        if directory not in self._gitignores:
            lines: list[str] = []
            for name in (".gitignore", os.path.join(".git", "info", "exclude")):
                if names is not None and name.split(os.sep)[0] not in names:
                    continue
                try:
                    with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as handle:
                        lines.extend(handle.read().splitlines())
                except OSError:
                    pass
            spec = _spec(lines)
            self._gitignores[directory] = _GitignoreMatcher(spec) if spec is not None else None
        return self._gitignores[directory]

    def top_chain(self, top: str) -> list[tuple[_GitignoreMatcher, str]]:
        """The gitignore matchers that apply in the directory ``top`` (absolute), each with the
        prefix (``top`` relative to that .gitignore's directory) that makes a walk's paths relative
        to it."""
        chain = []
        for directory, matcher in self._chain(top):
            rel = top[len(directory.rstrip(os.sep)) + 1:] if top != directory else ""
            chain.append((matcher, (rel.replace(os.sep, "/") + "/") if rel else ""))
        return chain


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
            absolute, shown = os.path.abspath(given), os.path.normpath(given)
            shown_prefix = "" if shown == "." else shown if shown.endswith(os.sep) else shown + os.sep
            absolute_prefix = absolute if absolute.endswith(os.sep) else absolute + os.sep
            for rel in _walk(given, absolute, ignorer):
                key = absolute_prefix + rel
                if key not in seen:
                    seen.add(key)
                    result.files.append(shown_prefix + rel)
        else:
            if force_exclude and ignorer.excluded(given, False):
                continue
            key = os.path.normpath(os.path.abspath(given))
            if key not in seen:
                seen.add(key)
                result.files.append(os.path.normpath(given))
    result.files.sort()
    return result


def _walk(top: str, absolute_top: str, ignorer: _Ignorer) -> Iterator[str]:
    """The source files under ``top``, as paths relative to it (``os.sep``), in no set order.

    Paths stay relative during the walk (no ``abspath`` per entry): an entry is excluded by its
    name alone (its directories passed already, the top's own were tested once), by the globs on
    its path from the project root, or by a gitignore matcher on its path from that .gitignore's
    directory, a prefix carried down with the walk."""
    excludes = ignorer.excludes
    top_rel = ignorer.relative(absolute_top)
    inside_root = absolute_top == ignorer.root or absolute_top.startswith(ignorer._root_prefix)
    if inside_root and top_rel != "." and any(excludes.name_matches(part) for part in top_rel.split("/")):
        return  # every path below has an excluded component
    root_prefix = "" if top_rel == "." else top_rel + "/"
    globs = excludes.globs
    # (directory as walked, relative to top with os.sep, the same with "/", the chain of the
    # .gitignore matchers of the directories above it, each with the directory's path from it)
    stack: list[tuple[str, str, str, Optional[list]]] = [(top, "", "", None)]
    while stack:
        directory, rel_dir, slash_dir, inherited = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        if inherited is None:
            chain = ignorer.top_chain(absolute_top)
        else:
            chain = _directory_chain(ignorer, os.path.join(absolute_top, rel_dir.rstrip(os.sep)), entries, inherited)
        for entry in entries:
            name = entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = entry.is_file()
            except OSError:
                continue
            if not is_dir and not (is_file and name.endswith(SOURCE_SUFFIXES)):
                continue
            mark = "/" if is_dir else ""
            if excludes.name_matches(name):
                continue
            if globs is not None:
                from_root = (root_prefix + slash_dir + name if inside_root else name) + mark
                if globs.match_file(from_root) or globs.match_file(name + mark):
                    continue
            if any(matcher.match(prefix + name + mark) for matcher, prefix in chain):
                continue
            if is_dir:
                below = [(matcher, prefix + name + "/") for matcher, prefix in chain]
                stack.append((entry.path, rel_dir + name + os.sep, slash_dir + name + "/", below))
            else:
                yield rel_dir + name


def _directory_chain(ignorer: _Ignorer, absolute: str, entries: list, inherited: list) -> list:
    """The matchers that apply to a directory's entries: its own .gitignore's, then, unless it is
    a repository's root (outer .gitignore files do not apply there), its parent's."""
    names = {entry.name for entry in entries}
    if ".gitignore" not in names and ".git" not in names:
        return inherited
    own = ignorer._gitignore(absolute, names)
    chain = [(own, "")] if own is not None else []
    if ".git" in names and os.path.isdir(os.path.join(absolute, ".git")):
        return chain
    return chain + inherited
