"""Rewrites the script and runs original, AMP rewrite and fp32 reference under the harness."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Optional

from ampfix.engine import FixError, fix_source
from ampfix.settings import Settings
from ampfix.source import read_source

RUNS = ("original", "amp", "fp32")


@dataclass
class VerifyOptions:
    steps: int = 20
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float16 | bfloat16
    against: Optional[str] = None
    tolerance: float = 1e-3
    timeout: float = 600.0
    threads: int = 1
    seed: int = 0
    script_args: list[str] = field(default_factory=list)
    cuda_shim: bool = False
    flop_window: tuple[int, int] = (2, 4)
    count_flops: bool = True


@dataclass
class Prepared:
    original_path: str
    rewrite_text: str
    applied: list[str]  # rule codes whose fixes made the rewrite (empty with --against)
    device: str
    note: Optional[str] = None


class VerifyError(Exception):
    """Could not even start: exit 2."""


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import torch
    except ImportError:
        raise VerifyError("`ampfix verify` needs torch: pip install 'ampfix[verify]'") from None
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare(script: str, options: VerifyOptions) -> Prepared:
    device = resolve_device(options.device)
    try:
        if options.against:
            return Prepared(os.path.abspath(options.against), read_source(script).text, [], device)
        text = read_source(script).text
    except OSError as exc:
        raise VerifyError(f"{script}: {exc}") from None
    except Exception as exc:
        raise VerifyError(f"{script}: {exc}") from None
    settings = Settings(
        unsafe_fixes=True,
        default_device=device,
        amp_dtype=None if options.dtype == "auto" else options.dtype,
    )
    try:
        result = fix_source(text, script, settings, unsafe_fixes=True)
    except FixError as exc:
        raise VerifyError(f"{script}: {exc}") from None
    applied = sorted({d.code for d in result.fixed})
    note = None if result.fixed else "no fix applied: the rewrite is the original"
    return Prepared(os.path.abspath(script), result.source, applied, device, note)


def run_all(
    script: str, prepared: Prepared, options: VerifyOptions, progress: Optional[Callable[[str], None]] = None
) -> dict[str, dict]:
    workspace = tempfile.mkdtemp(prefix="ampfix-verify-")
    try:
        rewrite_dir = os.path.join(workspace, "rewrite")
        os.makedirs(rewrite_dir)
        rewrite_path = os.path.join(rewrite_dir, os.path.basename(script))
        with open(rewrite_path, "w", encoding="utf-8") as handle:
            handle.write(prepared.rewrite_text)
        import_dir = os.path.dirname(prepared.original_path)
        traces = {}
        for mode in RUNS:
            if progress:
                progress(mode)
            path = prepared.original_path if mode == "original" else rewrite_path
            traces[mode] = _run_one(mode, path, import_dir, workspace, prepared, options)
        return traces
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _run_one(mode: str, path: str, import_dir: str, workspace: str, prepared: Prepared, options: VerifyOptions) -> dict:
    workdir = os.path.join(workspace, f"run-{mode}")
    os.makedirs(workdir)
    trace_path = os.path.join(workspace, f"trace-{mode}.json")
    config = {
        "mode": mode,
        "script": path,
        "import_dir": import_dir,
        "args": options.script_args,
        "steps": options.steps,
        "seed": options.seed,
        "threads": options.threads,
        "workdir": workdir,
        "trace": trace_path,
        "cuda_shim": options.cuda_shim,
        "flop_window": list(options.flop_window),
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
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "ampfix.verify.harness", config_path],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=options.timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        return {"mode": mode, "status": "timeout", "error": f"timed out after {options.timeout:g} s",
                "stderr": _tail(exc.stderr)}
    try:
        with open(trace_path, encoding="utf-8") as handle:
            trace = json.load(handle)
    except (OSError, ValueError):
        return {"mode": mode, "status": "error", "error": "the harness wrote no trace (the process died)",
                "stderr": _tail(completed.stderr)}
    trace["stderr"] = _tail(completed.stderr)
    return trace


def _tail(text, lines: int = 15) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
