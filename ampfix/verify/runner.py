"""Rewrites the project and runs original, AMP rewrite and fp32 reference under the harness.

The runs are started as the user starts the script: from the user's working directory (or
``--cwd``), the script's folder first on ``sys.path``. The original runs in place; the rewrite
runs from a temporary mirror of the script's folder (of the folder that holds its top package)
in which the script and every module of the tree it imports are rewritten where ampfix fixes
them, the other Python files are copied and everything else (data folders whole) is linked, so ``__file__``-relative paths, sibling imports and data resolve
as they do for the original. With ``--against`` both scripts run in place, each with its own
siblings.

Fail fast: when the original does not run, nothing else starts; when the AMP run does not, the
fp32 reference does not either. The fp32 reference skips the optimizer steps the AMP run's
scaler skipped, so the two stay aligned step for step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ampfix.engine import FixError, fix_source
from ampfix.settings import Settings
from ampfix.source import read_source

RUNS = ("original", "amp", "fp32")
_NOT_MIRRORED = {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache", ".pytest_cache",
                 "node_modules", ".ampfix_cache", "build", "dist"}
_MAX_MIRRORED_MODULES = 2000


@dataclass
class VerifyOptions:
    steps: int = 20
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float16 | bfloat16
    against: Optional[str] = None
    tolerance: Optional[float] = None  # None: derived from the dtype and the step
    timeout: float = 600.0
    threads: int = 1
    seed: int = 0
    script_args: list[str] = field(default_factory=list)
    cuda_shim: bool = False
    flop_window: tuple[int, int] = (2, 4)
    count_flops: bool = True
    cwd: Optional[str] = None  # the runs' working directory (default: the current one)
    keep_workdir: bool = False
    nproc: int = 1  # > 1: each run under torchrun with this many processes (DDP scripts)


@dataclass
class Prepared:
    original_path: str
    rewrite_text: str  # the entry script's rewrite
    applied: list[str]  # rule codes whose fixes made the rewrite (empty with --against)
    device: str
    note: Optional[str] = None
    rewrite_path: Optional[str] = None  # with --against: the rewrite, run in place
    root: str = ""  # the folder mirrored for the rewrite
    modules: dict[str, str] = field(default_factory=dict)  # root-relative path -> rewritten text
    diff: str = ""  # what was changed, as a unified diff per module


class VerifyError(Exception):
    """Could not even start: exit 2."""


def resolve_device(requested: str, cuda_shim: bool = False) -> str:
    if requested == "cuda" and not cuda_shim:
        import torch

        if not torch.cuda.is_available():
            raise VerifyError("--device cuda: this machine has no CUDA device (--cuda-shim maps CUDA to the CPU)")
    if requested != "auto":
        return requested
    try:
        import torch
    except ImportError:
        raise VerifyError("`ampfix verify` needs torch: pip install 'ampfix[verify]'") from None
    return "cuda" if torch.cuda.is_available() else "cpu"


def project_root(script: str) -> str:
    """The folder whose tree the rewrite mirrors: the script's, or the one that holds its top
    package (``pkg/train.py`` importing ``pkg.data``)."""
    root = os.path.dirname(os.path.abspath(script))
    while os.path.isfile(os.path.join(root, "__init__.py")) and os.path.dirname(root) != root:
        root = os.path.dirname(root)
    return root


def prepare(script: str, options: VerifyOptions) -> Prepared:
    if options.against and options.dtype != "auto":
        raise VerifyError("--dtype chooses the dtype of ampfix's rewrite; with --against the rewrite is yours")
    try:
        device = resolve_device(options.device, options.cuda_shim)
        text = read_source(script).text
        original_text = read_source(options.against).text if options.against else None
    except OSError as exc:
        raise VerifyError(f"{script}: {exc}") from None
    except VerifyError:
        raise
    except Exception as exc:
        raise VerifyError(f"{script}: {exc}") from None
    settings = Settings(
        unsafe_fixes=True,
        default_device=device,
        amp_dtype=None if options.dtype == "auto" else options.dtype,
    )
    if options.against:
        return Prepared(os.path.abspath(options.against), text, _codes_of_our_rewrite(options.against, original_text, text, settings),
                        device, rewrite_path=os.path.abspath(script))
    root = project_root(script)
    entry = os.path.relpath(os.path.abspath(script), root)
    modules, applied, diffs = {}, set(), []
    for relative in _python_files(root, entry):
        path = os.path.join(root, relative)
        try:
            source = text if relative == entry else read_source(path).text
            result = fix_source(source, path, settings, unsafe_fixes=True)
        except FixError as exc:
            if relative == entry:
                raise VerifyError(f"{script}: {exc}") from None
            continue  # another module ampfix cannot fix stays as it is
        except Exception:
            if relative == entry:
                raise
            continue
        if result.fixed:
            modules[relative] = result.source
            applied |= {d.code for d in result.fixed}
            diffs.append(_diff(relative, source, result.source))
    if not modules:
        raise VerifyError(
            f"{script}: no fix applies to it or to its folder's modules, so there is nothing to verify "
            "(`ampfix check` shows what it found; compare two scripts with --against)"
        )
    return Prepared(os.path.abspath(script), modules.get(entry, text), sorted(applied), device, root=root, modules=modules,
                    diff="".join(diffs))


def _codes_of_our_rewrite(path: str, original: str, rewrite: str, settings: Settings) -> list[str]:
    """With --against: when the rewrite is exactly what ampfix makes of the original, the codes
    of its fixes (so that a bug fix is reported as the intended change it is); else none."""
    try:
        ours = fix_source(original, path, settings, unsafe_fixes=True)
    except FixError:
        return []
    return sorted({d.code for d in ours.fixed}) if ours.fixed and ours.source == rewrite else []


def _python_files(root: str, entry: str) -> list[str]:
    """The entry script, then the modules of the tree it imports, directly or not (bounded):
    what the rewrite runs. Imports are read, never executed."""
    import ast

    from ampfix.program.project import ProjectIndex

    index = ProjectIndex(lambda *args: None, root)
    found, queue = [entry], [entry]
    while queue and len(found) < _MAX_MIRRORED_MODULES:
        path = os.path.join(root, queue.pop())
        try:
            tree = ast.parse(read_source(path).text)
        except Exception:  # unreadable or unparsable: its imports are not followed
            continue
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [(a.name, 0) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "", node.level)]
                names += [(f"{node.module}.{a.name}" if node.module else a.name, node.level) for a in node.names]
            for name, level in names:
                target = index.module_file(path, name, level) if name or level else None
                if target is None:
                    continue
                relative = os.path.relpath(target, root)
                if relative.startswith(os.pardir) or relative in found:
                    continue
                found.append(relative)
                queue.append(relative)
    return found


def _diff(relative: str, before: str, after: str) -> str:
    import difflib

    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"a/{relative}", tofile=f"b/{relative}"))


def mirror(prepared: Prepared, destination: str) -> str:
    """The rewrite's tree: folders recreated, Python files copied (rewritten where ampfix fixed
    them), anything else linked. Returns the entry script's path in it."""
    root = prepared.root
    for folder, dirs, files in os.walk(root):
        relative_folder = os.path.relpath(folder, root)
        target = os.path.normpath(os.path.join(destination, relative_folder))
        os.makedirs(target, exist_ok=True)
        linked = [d for d in dirs if d in _NOT_MIRRORED or d.startswith(".") or not _holds_python(os.path.join(folder, d))]
        for name in linked:
            _link(os.path.join(folder, name), os.path.join(target, name))
        dirs[:] = [d for d in dirs if d not in linked]
        for name in files:
            source = os.path.join(folder, name)
            relative = os.path.normpath(os.path.join(relative_folder, name))
            if relative in prepared.modules:
                with open(os.path.join(target, name), "w", encoding="utf-8", newline="") as handle:
                    handle.write(prepared.modules[relative])
            elif name.endswith(".py"):
                shutil.copy2(source, os.path.join(target, name))
            else:
                _link(source, os.path.join(target, name))
    return os.path.join(destination, os.path.relpath(prepared.original_path, root))


def _holds_python(folder: str) -> bool:
    """A folder of code (it has Python files of its own), not of data: a data folder is
    linked whole, never walked."""
    try:
        return any(name.endswith(".py") for name in os.listdir(folder))
    except OSError:
        return False


def _link(source: str, target: str) -> None:
    try:
        os.symlink(source, target)
    except OSError:
        if os.path.isfile(source):
            shutil.copy2(source, target)


def run_all(
    script: str, prepared: Prepared, options: VerifyOptions,
    progress: Optional[Callable[[str, int, float], None]] = None,
) -> tuple[dict[str, dict], Optional[str]]:
    """The runs' traces (fewer than three when one did not run: fail fast) and the kept
    work folder (with --keep-workdir)."""
    workspace = tempfile.mkdtemp(prefix="ampfix-verify-")
    try:
        if prepared.rewrite_path is not None:
            rewrite_path = prepared.rewrite_path  # --against: in place, with its own siblings
        else:
            rewrite_path = mirror(prepared, os.path.join(workspace, "rewrite"))
        cwd = os.path.abspath(options.cwd or os.getcwd())
        traces: dict[str, dict] = {}
        for mode in RUNS:
            path = prepared.original_path if mode == "original" else rewrite_path
            replay = traces["amp"].get("skipped", []) if mode == "fp32" else []
            traces[mode] = _run_one(mode, path, cwd, workspace, options, replay, progress)
            if traces[mode].get("status") not in ("stopped", "finished"):
                break  # the next runs would not tell more
        return traces, workspace if options.keep_workdir else None
    finally:
        if not options.keep_workdir:
            shutil.rmtree(workspace, ignore_errors=True)


def _run_one(mode: str, path: str, cwd: str, workspace: str, options: VerifyOptions, replay_skips: list,
             progress: Optional[Callable[[str, int, float], None]]) -> dict:
    trace_path = os.path.join(workspace, f"trace-{mode}.json")
    progress_path = os.path.join(workspace, f"progress-{mode}.txt")
    config = {
        "mode": mode,
        "script": path,
        "import_dir": os.path.dirname(os.path.abspath(path)),
        "args": options.script_args,
        "steps": options.steps,
        "seed": options.seed,
        "threads": options.threads,
        "workdir": cwd,
        "trace": trace_path,
        "progress": progress_path,
        "replay_skips": replay_skips,
        "cuda_shim": options.cuda_shim,
        "flop_window": list(flop_window(options)),
        "count_flops": options.count_flops,
    }
    config_path = os.path.join(workspace, f"config-{mode}.json")
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    env = dict(os.environ)
    env.update(
        PYTHONHASHSEED="0",
        TORCH_COMPILE_DISABLE="1",
        OMP_NUM_THREADS=str(options.threads),
        MKL_NUM_THREADS=str(options.threads),
        CUBLAS_WORKSPACE_CONFIG=":4096:8",
    )
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    stderr_path = os.path.join(workspace, f"stderr-{mode}.txt")
    command = [sys.executable, "-m", "ampfix.verify.harness", config_path]
    if options.nproc > 1:
        # torchrun: a rendezvous on this machine, one harness per rank (each writes its trace)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={options.nproc}",
                   "-m", "ampfix.verify.harness", config_path]
    started = time.monotonic()
    with open(stderr_path, "w+", encoding="utf-8", errors="replace") as stderr:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL,
            start_new_session=True,  # a timeout kills every rank, not only torchrun
        )
        while process.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > options.timeout:
                _kill(process)
                reached = _reached(progress_path)
                return {"mode": mode, "status": "timeout", "reached": reached,
                        "error": f"timed out after {options.timeout:g} s (at step {reached} of {options.steps})",
                        "stderr": _tail(_read(stderr_path))}
            if progress:
                progress(mode, _reached(progress_path), elapsed)
            time.sleep(0.1)
    traces = []
    for rank in range(options.nproc):
        path = trace_path if rank == 0 else f"{trace_path}.rank{rank}"
        try:
            with open(path, encoding="utf-8") as handle:
                traces.append(json.load(handle))
        except (OSError, ValueError):
            reached = _reached(progress_path)
            where = f" (rank {rank})" if options.nproc > 1 else ""
            return {"mode": mode, "status": "error", "reached": reached,
                    "error": f"the process died at step {reached}{where} (exit code {process.returncode}) and wrote no trace",
                    "stderr": _tail(_read(stderr_path))}
    trace = traces[0]  # rank 0 speaks for the run; a rank that failed makes the run fail
    failed = next((t for t in traces if t.get("status") not in ("stopped", "finished")), None)
    if failed is not None and failed is not trace:
        trace = dict(trace, status=failed["status"], error=failed.get("error"))
    if options.nproc > 1:
        trace["ranks"] = [{"status": t.get("status"), "steps": len(t.get("steps", []))} for t in traces]
    trace["stderr"] = _tail(_read(stderr_path))
    return trace


def _kill(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()
    process.wait()


def flop_window(options: VerifyOptions) -> tuple[int, int]:
    """The steps whose FLOPs are counted: 2-3 by default (past the first steps' warm-up), moved
    forward for a script with fewer steps so that it still opens."""
    start, end = options.flop_window
    if options.steps >= end:
        return start, end
    return max(0, options.steps - (end - start)), options.steps


def _reached(progress_path: str) -> int:
    try:
        with open(progress_path, encoding="utf-8") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _tail(text, lines: int = 15) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
