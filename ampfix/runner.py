"""Running the engine over many files: read, prefilter, check or fix, write; in parallel.

Each file is independent, so a crash, an unreadable file or a fix that would break the code is
recorded for that file and the others go on. Results come back in path order whatever the
number of workers, so output is deterministic.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from ampfix.diagnostics import Diagnostic
from ampfix.engine import FixError, check_source, fix_source, may_fire
from ampfix.settings import Settings
from ampfix.source import SourceError, SourceText, write_atomic

CHECK, FIX, DIFF = "check", "fix", "diff"
# Below this many files a process pool costs more than it saves.
PARALLEL_THRESHOLD = 32


@dataclass
class FileResult:
    path: str
    diagnostics: list[Diagnostic] = field(default_factory=list)  # what remains
    fixed: list[Diagnostic] = field(default_factory=list)
    error: Optional[str] = None  # one line: the cause (the path is printed beside it)
    original: Optional[str] = None  # kept only when the text changed (for --diff)
    fixed_source: Optional[str] = None


@dataclass(frozen=True)
class Job:
    mode: str
    settings: Settings
    unsafe_fixes: bool


def process_file(path: str, job: Job) -> FileResult:
    result = FileResult(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        result.error = f"cannot read file: {exc.strerror or exc}"
        return result
    codes = job.settings.enabled(path)
    if not may_fire(data, codes):
        return result
    try:
        source = SourceText.decode(data)
        if job.mode == CHECK:
            result.diagnostics = check_source(source.text, path, job.settings)
            return result
        fixed = fix_source(source.text, path, job.settings, job.unsafe_fixes)
        result.diagnostics, result.fixed = fixed.remaining, fixed.fixed
        if fixed.changed:
            result.original, result.fixed_source = source.text, fixed.source
            if job.mode == FIX:
                write_atomic(path, source.encode(fixed.source))
    except (SourceError, FixError) as exc:
        result.error = str(exc)
    except RecursionError:
        result.error = "internal error: too deeply nested to analyse"
    except Exception as exc:  # a bug in a rule must not take the other files down
        result.error = f"internal error: {type(exc).__name__}: {exc}"
    return result


def _process_chunk(paths: list[str], job: Job) -> list[FileResult]:
    return [process_file(path, job) for path in paths]


def run(
    paths: list[str],
    job: Job,
    jobs: Optional[int] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> list[FileResult]:
    workers = jobs or os.cpu_count() or 1
    if workers <= 1 or len(paths) < PARALLEL_THRESHOLD:
        results = []
        for path in paths:
            results.append(process_file(path, job))
            if progress:
                progress(1)
        return results
    chunk = max(1, min(64, len(paths) // (workers * 4) or 1))
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    results: list[FileResult] = []
    context = _mp_context()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for batch in pool.map(_process_chunk, chunks, [job] * len(chunks)):
            results.extend(batch)
            if progress:
                progress(len(batch))
    results.sort(key=lambda r: r.path)
    return results


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
