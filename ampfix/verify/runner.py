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

from ampfix.engine import FixError, check_source, fix_source
from ampfix.rules import RULES
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
    # steps a run may take past a phase's limit to reach the next training loop (unrecorded)
    max_through_steps: int = 300


@dataclass
class Prepared:
    original_path: str
    rewrite_text: str  # the entry script's rewrite
    applied: list[str]  # rule codes whose fixes made the rewrite (with --against: only when it is ampfix's)
    device: str
    note: Optional[str] = None
    rewrite_path: Optional[str] = None  # with --against: the rewrite, run in place
    root: str = ""  # the folder mirrored for the rewrite
    modules: dict[str, str] = field(default_factory=dict)  # root-relative path -> rewritten text
    diff: str = ""  # what was changed, as a unified diff per module
    watched: dict[str, list] = field(default_factory=dict)  # code -> [(original file, line)] its fixes change
    phases_expected: int = 1  # training loops (a backward and a step inside) in the original's code
    # with --against a rewrite that is not ampfix's: the behaviour-changing rules whose findings on
    # the original it removes; each one's predicted effect judges it, as for ampfix's own fix
    mended: list[str] = field(default_factory=list)

    @property
    def intended(self) -> list[str]:
        """The rules whose changes to training are intended (and predicted, and measured)."""
        return self.applied or self.mended


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
    settings = verify_settings(device, options.dtype)
    if options.against:
        applied = _codes_of_our_rewrite(options.against, original_text, text, settings)
        prepared = Prepared(os.path.abspath(options.against), text, applied, device, rewrite_path=os.path.abspath(script))
        if not applied:
            prepared.mended = _mended_findings(options.against, original_text, script, text, settings)
        prepared.watched = _watched_lines({os.path.abspath(options.against): original_text}, prepared.intended, settings)
        prepared.phases_expected = count_training_loops([original_text])
        return prepared
    root = project_root(script)
    entry = os.path.relpath(os.path.abspath(script), root)
    modules, applied, diffs, originals = {}, set(), [], {}
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
            originals[path] = source
            applied |= {d.code for d in result.fixed}
            diffs.append(_diff(relative, source, result.source))
    if not modules:
        raise VerifyError(
            f"{script}: no fix applies to it or to its folder's modules, so there is nothing to verify "
            "(`ampfix check` shows what it found; compare two scripts with --against)"
        )
    return Prepared(os.path.abspath(script), modules.get(entry, text), sorted(applied), device, root=root, modules=modules,
                    diff="".join(diffs), watched=_watched_lines(originals, sorted(applied), settings),
                    phases_expected=count_training_loops(list({os.path.abspath(script): text, **originals}.values())))


def verify_settings(device: str, dtype: str) -> Settings:
    """Every rule selected and fixable, unsafe fixes included, whatever `check` selects by
    default: verify proves the conversions (AMP501) too, and says which fixes it applied; preview
    rules are selected explicitly, and a script verified under a `tests/` folder is checked too."""
    return Settings(
        select=frozenset(RULES),
        fixable=frozenset(RULES),
        unsafe_fixes=True,
        default_device=device,
        amp_dtype=None if dtype == "auto" else dtype,
        preview=True,
        check_tests=True,
    )


def _watched_lines(originals: dict[str, str], applied: list[str], settings: Settings) -> dict[str, list]:
    """For each applied fix, the lines of the original it flags: if none of them runs
    in the original run, the fix is "not exercised by this run"."""
    watched: dict[str, list] = {}
    for path, text in originals.items():
        try:
            diagnostics = check_source(text, path, settings)
        except Exception:  # the fix already succeeded; without its lines a fix counts as exercised
            continue
        for diagnostic in diagnostics:
            if diagnostic.code not in applied or not diagnostic.fix_applies(True):
                continue
            # the flagged code's own lines (an edit may be an insertion before the next statement)
            rows = range(diagnostic.location.row, diagnostic.end_location.row + 1)
            watched.setdefault(diagnostic.code, []).extend((path, row) for row in rows)
    return watched


def count_training_loops(texts: list[str]) -> int:
    """Loops that hold a backward() and a step() call (innermost ones), outside `range(0)`
    loops that never run: the phases a run may have. Read, never executed."""
    import ast

    def calls(node, name):
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == name
                   for n in ast.walk(node))

    def never_runs(node):
        it = getattr(node, "iter", None)
        return (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
                and len(it.args) == 1 and isinstance(it.args[0], ast.Constant) and it.args[0].value == 0)

    count = 0
    for text in texts:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.AsyncFor))
                 and calls(n, "backward") and calls(n, "step")]
        dead = [n for n in loops if never_runs(n)]
        live = [n for n in loops if not any(d is n or _inside(n, d) for d in dead)]
        count += sum(1 for n in live if not any(o is not n and _inside(o, n) for o in live))
    return max(1, count)


def _inside(inner, outer) -> bool:
    return outer.lineno <= inner.lineno and inner.end_lineno <= outer.end_lineno


def _codes_of_our_rewrite(path: str, original: str, rewrite: str, settings: Settings) -> list[str]:
    """With --against: when the rewrite is exactly what ampfix makes of the original, the codes
    of its fixes (so that a bug fix is reported as the intended change it is); else none."""
    try:
        ours = fix_source(original, path, settings, unsafe_fixes=True)
    except FixError:
        return []
    return sorted({d.code for d in ours.fixed}) if ours.fixed and ours.source == rewrite else []


def _mended_findings(original_path: str, original: str, rewrite_path: str, rewrite: str, settings: Settings) -> list[str]:
    """With --against a rewrite of your own: the behaviour-changing rules (a loss division, an
    unscale before the clip) with fewer findings on the rewrite than on the original. The rewrite
    mends what they report, so it must change training as their fixes predict: a double
    division is then a FAIL that names AMP301, not an accepted change."""
    from collections import Counter

    try:
        before = Counter(d.code for d in check_source(original, original_path, settings))
        after = Counter(d.code for d in check_source(rewrite, rewrite_path, settings))
    except Exception:  # noqa: BLE001 - without findings nothing is named: the rewrite must train identically
        return []
    return sorted(code for code, count in before.items() if RULES[code].changes_training and after[code] < count)


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
    """The runs' traces (fewer than three when one did not run: fail fast), with what the runner
    learnt under ``"_runner"``, and the kept work folder (with --keep-workdir).

    On a machine without CUDA, a rewrite whose autocast is enabled only on CUDA (a conversion
    of a device-agnostic script) equals its original here: the runs start again under the CUDA
    shim, saying so; where the shim cannot run them, the verdict is "cannot verify on this
    device" (exit 2), never a failure of the script."""
    workspace = tempfile.mkdtemp(prefix="ampfix-verify-")
    try:
        if prepared.rewrite_path is not None:
            rewrite_path = prepared.rewrite_path  # --against: in place, with its own siblings
        else:
            rewrite_path = mirror(prepared, os.path.join(workspace, "rewrite"))
        traces = _three_runs(prepared, options, rewrite_path, workspace, progress)
        runner = traces["_runner"]
        if not options.cuda_shim and prepared.device == "cpu" and _needs_cuda(traces):
            reason = _needs_cuda(traces)
            options.cuda_shim = True
            traces = _three_runs(prepared, options, rewrite_path, workspace, progress)
            runner = traces["_runner"]
            runner["shim"] = "auto"
            runner["shim_note"] = (f"{reason} on this CPU machine: ran under the CUDA shim automatically (CUDA mapped to "
                                   "the CPU, CUDA autocast as CPU autocast)")
            failed = next((m for m in RUNS if m in traces and traces[m].get("status") not in ("stopped", "finished")), None)
            if failed is not None:
                runner["cannot_verify"] = (f"{reason}, and under the CUDA shim the {failed} run does not run here: "
                                           f"{_one_line(traces[failed].get('error') or traces[failed].get('stderr'))} "
                                           "(verify on a GPU)")
            elif _autocast_still_off(traces.get("amp", {})):
                # the script chose its device some way the shim does not reach: the AMP run was the
                # fp32 program again, and nothing was tested (never a failure of the rewrite)
                runner["cannot_verify"] = (f"{reason}, and under the CUDA shim too the script stays on its CPU branch "
                                           "(its autocast never turns on): verify on a GPU")
        elif options.cuda_shim:
            runner["shim"] = "asked"
            failed = next((m for m in ("amp", "fp32") if m in traces and traces[m].get("status") == "error"), None)
            if failed is not None and _shim_gap(traces[failed]):
                runner["cannot_verify"] = (f"the {failed} run fails under the CUDA shim for want of a CPU kernel "
                                           f"({_one_line(traces[failed].get('error'), 1)}): verify on a GPU")
        return traces, workspace if options.keep_workdir else None
    finally:
        if not options.keep_workdir:
            shutil.rmtree(workspace, ignore_errors=True)


def _three_runs(prepared: Prepared, options: VerifyOptions, rewrite_path: str, workspace: str,
                progress: Optional[Callable[[str, int, float], None]]) -> dict:
    cwd = os.path.abspath(options.cwd or os.getcwd())
    traces: dict[str, dict] = {}
    watch: dict[str, list] = {}
    for places in prepared.watched.values():
        for path, row in places:
            watch.setdefault(path, []).append(row)
    for mode in RUNS:
        path = prepared.original_path if mode == "original" else rewrite_path
        extra = {
            "replay_skips": traces["amp"].get("skip_keys", []) if mode == "fp32" else [],
            "watch_lines": watch if mode == "original" else {},
            "phases_expected": prepared.phases_expected,
        }
        traces[mode] = _run_one(mode, path, cwd, workspace, options, extra, progress)
        if traces[mode].get("status") not in ("stopped", "finished"):
            break  # the next runs would not tell more
    ran_lines = traces["original"].get("exercised") or {}
    traces["_runner"] = {"watched": prepared.watched, "ran_lines": ran_lines}
    return traces


def _needs_cuda(traces: dict) -> Optional[str]:
    """Why the runs must use the CUDA shim on this machine, or None."""
    original, amp = traces.get("original", {}), traces.get("amp", {})
    error = (original.get("error") or "") + (original.get("stderr") or "")
    if original.get("status") == "error" and ("not compiled with CUDA" in error or "CUDA" in error and "available" in error):
        return "the original needs CUDA"
    if amp.get("disabled_autocast") and not _low_precision_ran(amp):
        # `enabled=device.type == "cuda"` (a conversion of a device-agnostic script): the shim makes it CUDA
        return "the rewrite's autocast is enabled only on CUDA (`enabled=` is false here)"
    return None


def _autocast_still_off(amp: dict) -> bool:
    return bool(amp.get("disabled_autocast")) and not amp.get("autocast_entered") and not _low_precision_ran(amp)


def _low_precision_ran(trace: dict) -> bool:
    flops = trace.get("flops") or {}
    total = sum(flops.values())
    return bool(total) and sum(v for k, v in flops.items() if k in ("torch.float16", "torch.bfloat16")) >= total / 2


def _shim_gap(trace: dict) -> bool:
    """A failure of the shim rather than of the script: a low-precision kernel the CPU lacks."""
    error = trace.get("error") or ""
    return "not implemented for 'Half'" in error or "not implemented for 'BFloat16'" in error


def _run_one(mode: str, path: str, cwd: str, workspace: str, options: VerifyOptions, extra: dict,
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
        "cuda_shim": options.cuda_shim,
        "max_through_steps": options.max_through_steps,
        **extra,
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


def _one_line(text, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in _tail(text, lines).splitlines() if line.strip())


def _tail(text, lines: int = 15) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
