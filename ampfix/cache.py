"""A content-keyed result cache: `.ampfix_cache/` at the project root.

One JSON file per (ampfix version, effective settings):
``path -> [content hash, diagnostics, mtime_ns, size, dependencies]``. An unchanged stat means the entry holds
without reading the file; otherwise the file's *bytes* (BLAKE2b) decide, so `touch` or a
checkout that rewrites identical bytes costs a read, never a re-check. Files the prefilter
rejects are remembered by stat alone. The file is written atomically (temporary file + rename), so
concurrent runs leave one complete version; anything unreadable is an empty cache, never an
error. The dependencies are the other project files whose facts the analysis used (a call
followed into them: ampfix.program.project), each ``[path, mtime_ns, size, content hash]``; the
entry holds only while each is unchanged (same stat, or same bytes). A ``CACHEDIR.TAG`` and a ``.gitignore`` of ``*`` keep backups and git away from it.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from ampfix import __version__
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix, Note, Position
from ampfix.settings import Settings

CACHE_DIR = ".ampfix_cache"
# What an entry holds, beside the version: raised when results for the same settings change
# within a version (2: evidence cells of notebooks, AMP001 whatever the selection)
_FORMAT = 2
_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by ampfix.\n"


_CODE_STAMP: Optional[str] = None


def _code_stamp() -> str:
    """The size and modification time of every module of ampfix itself: results cached by one
    build of the rules are not those of another with the same version (an editable install, a
    rule changed in a checkout). A few dozen stats, once per process."""
    global _CODE_STAMP
    if _CODE_STAMP is None:
        package = os.path.dirname(os.path.abspath(__file__))
        stamps = []
        for folder, dirs, files in os.walk(package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(folder, name))
                    stamps.append(f"{os.path.relpath(os.path.join(folder, name), package)}:{st.st_size}:{st.st_mtime_ns}")
        _CODE_STAMP = _blake2b("|".join(stamps).encode(), 8)
    return _CODE_STAMP


def content_hash(data: bytes) -> str:
    return _blake2b(data, 16)


def _blake2b(data: bytes, size: int) -> str:
    import hashlib  # when first needed: loading it (OpenSSL) is 2 ms of a one-file run without a cache

    return hashlib.blake2b(data, digest_size=size).hexdigest()


class Cache:
    def __init__(self, settings: Settings, root: Optional[str] = None):
        self.root = os.path.join(os.path.abspath(root or settings.project_root), CACHE_DIR)
        identity = f"{__version__}|{_FORMAT}|{_code_stamp()}|{settings.cache_key()}"
        key = _blake2b(identity.encode(), 12)
        self.path = os.path.join(self.root, __version__, f"{key}.json")
        self.entries: dict[str, list] = {}
        self.changed = False

    def load(self) -> "Cache":
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            if isinstance(data, dict):
                self.entries = data
        except (OSError, ValueError):
            self.entries = {}  # missing or corrupt: a cold cache, never an error
        return self

    def lookup(self, path: str) -> Optional[list]:
        return self.entries.get(_key(path))

    def store(self, path: str, digest: Optional[str], diagnostics: list[Diagnostic], stamp=None, deps=()) -> None:
        entry = [digest, [to_dict(d) for d in diagnostics], *(stamp or [None, None]), list(deps)]
        key = _key(path)
        if self.entries.get(key) != entry:
            self.entries[key] = entry
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._mark()
            import tempfile  # a run that writes no cache (a hit, --no-cache) never needs it

            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.entries, handle, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only tree still gets checked, just not cached

    def _mark(self) -> None:
        for name, text in (("CACHEDIR.TAG", _TAG), (".gitignore", "# Automatically created by ampfix.\n*\n")):
            target = os.path.join(self.root, name)
            if not os.path.exists(target):
                with open(target, "w", encoding="utf-8") as handle:
                    handle.write(text)


def _key(path: str) -> str:
    """A file's entry: its absolute path. Discovery's paths are normalised already, so a relative
    one without ``.`` components is the working directory joined to it (``abspath`` normalises
    every path, a cost a warm run of thousands of files feels)."""
    if os.path.isabs(path) or path.startswith(".") or os.sep + "." in path or os.sep + os.sep in path:
        return os.path.abspath(path)
    return os.getcwd().rstrip(os.sep) + os.sep + path


def dependencies_hold(entry: list) -> bool:
    """Whether every file an entry's analysis read facts from is as it was then."""
    for path, mtime_ns, size, digest in entry[4] if len(entry) > 4 else ():
        try:
            st = os.stat(path)
            if (st.st_mtime_ns, st.st_size) == (mtime_ns, size):
                continue
            with open(path, "rb") as handle:
                if content_hash(handle.read()) == digest:
                    continue
        except OSError:
            pass
        return False
    return True


def to_dict(diag: Diagnostic) -> dict:
    fix = None
    if diag.fix is not None:
        fix = {
            "message": diag.fix.message,
            "applicability": diag.fix.applicability.value,
            "edits": [[e.start, e.end, e.content, *([list(e.rewrite)] if e.rewrite else [])] for e in diag.fix.edits],
            "orphans": sorted(diag.fix.orphaned_imports),
        }
    return {
        "code": diag.code,
        "name": diag.name,
        "message": diag.message,
        "range": [diag.start, diag.end],
        "location": [diag.location.row, diag.location.column, diag.end_location.row, diag.end_location.column],
        "edit_locations": [[s.row, s.column, e.row, e.column] for s, e in diag.edit_locations],
        "fix": fix,
        "cell": diag.cell,
        "evidence_cells": list(diag.evidence_cells),
        "edit_cells": list(diag.edit_cells),
        "fix_refused": diag.fix_refused,
        "no_fix_reason": diag.no_fix_reason,
        "evidence": [
            [n.start, n.end, n.message, s.row, s.column, e.row, e.column]
            for n, (s, e) in zip(diag.evidence, diag.evidence_locations)
        ],
    }


def from_dict(data: dict, filename: str) -> Diagnostic:
    fix = None
    if data["fix"] is not None:
        f = data["fix"]
        fix = Fix(
            f["message"],
            tuple(Edit(s, e, c, tuple(r[0]) if r else ()) for s, e, c, *r in f["edits"]),
            Applicability(f["applicability"]),
            frozenset(f["orphans"]),
        )
    row, column, end_row, end_column = data["location"]
    diag = Diagnostic(data["code"], data["name"], data["message"], data["range"][0], data["range"][1], fix)
    diag.filename = filename
    diag.location, diag.end_location = Position(row, column), Position(end_row, end_column)
    diag.edit_locations = tuple((Position(a, b), Position(c, d)) for a, b, c, d in data["edit_locations"])
    diag.cell = data.get("cell")
    diag.evidence_cells = tuple(data.get("evidence_cells", ()))
    diag.edit_cells = tuple(data.get("edit_cells", ()))
    diag.fix_refused = data.get("fix_refused")
    diag.no_fix_reason = data.get("no_fix_reason")
    evidence = data.get("evidence", [])
    diag.evidence = tuple(Note(a, b, message) for a, b, message, *_ in evidence)
    diag.evidence_locations = tuple((Position(r, c), Position(er, ec)) for *_, r, c, er, ec in evidence)
    return diag
