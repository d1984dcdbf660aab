"""Running the engine over many files: read, prefilter, check or fix, write; in parallel.

Each file is independent, so a crash, an unreadable file or a fix that would break the code is
recorded for that file and the others go on. Results come back in path order whatever the
number of workers, so output is deterministic.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from ampfix.cache import Cache, content_hash, dependencies_hold, from_dict
from ampfix.diagnostics import Diagnostic
from ampfix.rules import prefilter_for
from ampfix.settings import Settings
from ampfix.source import SourceError, SourceText, write_atomic

CHECK, FIX, DIFF = "check", "fix", "diff"
# Below this many files to process (cache misses), or this many of their bytes, a process pool
# costs more than it saves.
PARALLEL_THRESHOLD = 32
PARALLEL_MIN_BYTES = 256 * 1024


@dataclass
class FileResult:
    path: str
    diagnostics: list[Diagnostic] = field(default_factory=list)  # what remains
    fixed: list[Diagnostic] = field(default_factory=list)
    error: Optional[str] = None  # one line: the cause (the path is printed beside it)
    original: Optional[str] = None  # kept only when the text changed (for --diff)
    fixed_source: Optional[str] = None
    cache_entry: Optional[tuple] = None  # (content hash, diagnostics, stat, dependencies) to remember
    cached: bool = False


@dataclass(frozen=True)
class Job:
    mode: str
    settings: Settings
    unsafe_fixes: bool
    use_cache: bool = False


def process_file(path: str, job: Job, cached: Optional[list] = None) -> FileResult:
    """Check or fix one file. ``cached`` is this path's cache entry, [content hash, diagnostics]."""
    result = FileResult(path)
    stamp = None
    if job.use_cache:
        stamp = _stamp(path)
        hit = cached_result(path, job, cached, stamp)  # unchanged since cached: not even read
        if hit is not None:
            return hit
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        result.error = f"cannot read file: {exc.strerror or exc}"
        return result
    codes = job.settings.enabled(path)
    candidates = prefilter_for(codes).candidates(data)
    if not candidates:
        if stamp is not None:
            result.cache_entry = (None, [], stamp)  # nothing to see: remembered by stat alone
        return result
    # Imported here, not at the top: a run whose files the prefilter rejects (a pre-commit hook,
    # an editor on most files) never pays for the analysis's modules.
    from ampfix.engine import FixError, RuleCrash, check_source, dependencies, fix_source

    digest = content_hash(data) if job.use_cache else None
    if cached is not None and cached[0] == digest:
        hit = _from_cache(path, job, cached, result)  # touched, same bytes
        if hit is not None:
            hit.cache_entry = (digest, hit.diagnostics, stamp, cached[4] if len(cached) > 4 else [])
            return hit
    try:
        source = SourceText.decode(data)
        if path.endswith(".ipynb"):
            return _process_notebook(path, job, source, result, digest)
        # the prefilter's answer holds for the text when the text is these bytes (UTF-8, no BOM)
        same_bytes = source.encoding == "utf-8" and not source.bom
        candidates = candidates if same_bytes else None
        if job.mode == CHECK:
            result.diagnostics = check_source(source.text, path, job.settings, candidates=candidates)
            if digest:
                result.cache_entry = (digest, result.diagnostics, stamp, dependencies(path, job.settings))
            return result
        fixed = fix_source(source.text, path, job.settings, job.unsafe_fixes, candidates=candidates)
        result.diagnostics, result.fixed = fixed.remaining, fixed.fixed
        if not fixed.changed and digest:
            result.cache_entry = (digest, result.diagnostics, stamp, dependencies(path, job.settings))
        if fixed.changed:
            result.original, result.fixed_source = source.text, fixed.source
            if job.mode == FIX:
                written = source.encode(fixed.source)
                try:
                    write_atomic(path, written)
                except SourceError as exc:
                    # the write failed (the message says what is on disk): none counts as fixed,
                    # and the file's findings are those of the text it had
                    result.fixed, result.original, result.fixed_source = [], None, None
                    result.diagnostics = check_source(source.text, path, job.settings)
                    result.error = str(exc)
                    return result
                if digest:
                    result.cache_entry = (content_hash(written), result.diagnostics, None, dependencies(path, job.settings))
    except RuleCrash as exc:
        result.diagnostics, result.error = exc.diagnostics, str(exc)  # the other rules' findings stay
    except (SourceError, FixError) as exc:
        result.error = str(exc)
    except RecursionError:
        result.error = "internal error: too deeply nested to analyse"
    except Exception as exc:  # a bug in a rule must not take the other files down
        result.error = f"internal error: {type(exc).__name__}: {exc}"
    return result


def _stamp(path: str) -> Optional[list]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def cached_result(path: str, job: Job, cached: Optional[list], stamp: Optional[list]) -> Optional[FileResult]:
    """The file's result from its cache entry when the file is as it was then (same stat, same
    dependencies) and there is nothing to fix; None: it has to be processed."""
    if cached is None or stamp is None or cached[2:4] != stamp:
        return None
    return _from_cache(path, job, cached, FileResult(path))


def _from_cache(path: str, job: Job, cached: list, result: FileResult) -> Optional[FileResult]:
    if not dependencies_hold(cached):
        return None  # a file it read facts from has changed: check it again
    diagnostics = [from_dict(d, path) for d in cached[1]]
    if job.mode != CHECK and any(d.fix_applies(job.unsafe_fixes) for d in diagnostics):
        return None  # there is something to fix: do it for real
    result.diagnostics, result.cached = diagnostics, True
    return result


def _process_notebook(path: str, job: Job, source: SourceText, result: FileResult, digest) -> FileResult:
    """Notebooks: the code cells as one program; positions per cell; fixes written into the cells.
    What remains after fixes is positioned in the fixed program, so it is located in the fixed
    notebook's cells (a fix that removed a line moves the findings below it)."""
    from ampfix.engine import RuleCrash, check_source, fix_source
    from ampfix.notebook import Notebook

    notebook = Notebook.parse(source.text)
    remaining_in = notebook
    if job.mode == CHECK:
        try:
            diagnostics = check_source(notebook.program, path, job.settings)
        except RuleCrash as exc:
            for diag in exc.diagnostics:
                notebook.locate(diag)
            raise
    else:
        fixed = fix_source(notebook.program, path, job.settings, job.unsafe_fixes)
        diagnostics, result.fixed = fixed.remaining, fixed.fixed
        if fixed.changed:
            rendered = notebook.render(fixed.source)
            result.original, result.fixed_source = source.text, rendered
            remaining_in = Notebook.parse(rendered)
            if job.mode == FIX:
                try:
                    write_atomic(path, source.encode(rendered))
                except SourceError as exc:
                    result.fixed, result.original, result.fixed_source = [], None, None
                    result.error = str(exc)  # nothing written: the notebook keeps all its findings
                    diagnostics = check_source(notebook.program, path, job.settings)
                    remaining_in = notebook
            digest = None
    for diag in result.fixed:
        notebook.locate(diag)
    for diag in diagnostics:
        remaining_in.locate(diag)
    result.diagnostics = diagnostics
    result.cache_entry = (digest, diagnostics, None) if digest else None
    return result


def _process_chunk(items: list[tuple[str, Optional[list]]], job: Job) -> list[FileResult]:
    return [process_file(path, job, cached) for path, cached in items]


def run(
    paths: list[str],
    job: Job,
    jobs: Optional[int] = None,
    progress: Optional[Callable[[int], None]] = None,
    cache: Optional[Cache] = None,
) -> list[FileResult]:
    """Every file's result, in path order. Cache hits are decided here, in this process (a stat
    each); only the misses are processed, in a pool only when they are enough work to pay for it."""
    results, misses = _cache_hits(paths, job, cache)
    if progress and results:
        progress(len(results))
    workers = jobs or os.cpu_count() or 1
    if workers <= 1 or not _worth_a_pool(misses):
        for path, cached, _ in misses:
            results.append(process_file(path, job, cached))
            if progress:
                progress(1)
    else:
        results += _run_in_pool([(path, cached) for path, cached, _ in misses], job, workers, progress)
    results.sort(key=lambda r: r.path)
    if cache is not None:
        for result in results:
            if result.cache_entry is not None and not result.error:
                cache.store(result.path, *result.cache_entry)
        cache.save()
    return results


def _cache_hits(paths: list[str], job: Job, cache: Optional[Cache]) -> tuple[list[FileResult], list[tuple]]:
    """(the results of the cache hits, the misses as (path, cache entry, size in bytes or None))."""
    if cache is None or not job.use_cache:
        return [], [(path, None, None) for path in paths]
    hits, misses = [], []
    for path in paths:
        cached, stamp = cache.lookup(path), _stamp(path)
        hit = cached_result(path, job, cached, stamp)
        if hit is not None:
            hits.append(hit)
        else:
            misses.append((path, cached, stamp[1] if stamp else None))
    return hits, misses


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _worth_a_pool(misses: list[tuple]) -> bool:
    """A process pool costs its start (fork, workers, pickling results back): worth it for many
    files with enough bytes to analyse, never for a few (pre-commit, an editor's one file)."""
    if len(misses) < PARALLEL_THRESHOLD:
        return False
    total = 0
    for path, _, size in misses:
        total += _size(path) if size is None else size
        if total >= PARALLEL_MIN_BYTES:
            return True
    return False


def _run_in_pool(items: list[tuple[str, Optional[list]]], job: Job, workers: int, progress) -> list[FileResult]:
    from concurrent.futures import (
        ProcessPoolExecutor,  # imported only when a pool is worth it
    )

    chunk = max(1, min(64, len(items) // (workers * 4) or 1))
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    context = _mp_context()
    if context is not None and context.get_start_method() == "fork":
        _import_the_analysis()
    results = []
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
        for batch in pool.map(_process_chunk, chunks, [job] * len(chunks)):
            results.extend(batch)
            if progress:
                progress(len(batch))
    return results


def _import_the_analysis() -> None:
    """Import, once in this process, what the workers' analyses import lazily: forked workers
    then share these modules instead of each importing them again. Worth it only before a pool,
    which runs only for enough files that some of them reach the analysis. LibCST is not among
    them: a check builds the moves it validates from their lines (ampfix/rewrite.py), and the
    few that need LibCST import it where they run."""
    import ampfix.engine  # noqa: F401
    from ampfix.rules import RULES

    for code in RULES:
        RULES[code]  # each rule's module, imported on first access


def _mp_context():
    import multiprocessing

    # fork is cheapest (workers inherit the imported rules); elsewhere use the default.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return None


def all_diagnostics(results: Iterable[FileResult]) -> list[Diagnostic]:
    out = [d for r in results for d in r.diagnostics]
    out.sort(key=Diagnostic.sort_key)
    return out
