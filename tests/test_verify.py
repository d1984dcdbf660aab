"""`ampfix verify`: every fixture's rewrite passes on CPU; deliberately broken rewrites fail for the
right reason; scripts that crash, hang or need CUDA get a clear exit-2 verdict."""

import glob
import json
import os

import pytest

from conftest import FIXTURES, run_ampfix

pytestmark = [pytest.mark.torch, pytest.mark.slow]
torch = pytest.importorskip("torch")

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verify_cases")
CUDA_STYLE = {"deprecated_cuda_amp.py", "autocast_scope.py"}  # AMP only when CUDA is there
# AMP501 conversions on a device known only at run time enable float16 on CUDA alone
CUDA_ONLY_REWRITES = {
    "convert_accumulation_clipping.py", "convert_cnn_dataloader.py", "convert_train_one_epoch.py",
    "convert_trainer_class.py", "convert_tutorial_loop.py",
}
ORIGINALS = sorted(
    os.path.basename(p) for p in glob.glob(os.path.join(FIXTURES, "*.py")) if not p.endswith(".fixed.py")
)


def verify(*args, timeout=900):
    result = run_ampfix("verify", "--steps", "6", *args)
    return result


@pytest.mark.parametrize("name", ORIGINALS)
def test_every_fixture_passes_after_its_rewrite_on_cpu(name):
    path = os.path.join(FIXTURES, name)
    args = [path]
    if name in CUDA_STYLE | CUDA_ONLY_REWRITES:
        args.append("--cuda-shim")
    if name == "convert_apex_o1.py":
        # the original needs apex; its rewrite needs only torch and must pass on its own
        args = [os.path.join(FIXTURES, "convert_apex_o1.fixed.py")]
    result = verify(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: PASS" in result.stdout


def test_behaviour_changing_fixes_are_reported_not_failed():
    result = verify(os.path.join(FIXTURES, "accumulation.py"))
    assert result.returncode == 0
    assert "changed on purpose by AMP201" in result.stdout and "AMP301: the accumulated loss is now divided" in result.stdout


def test_a_correct_rewrite_passes_against_its_original():
    result = verify(os.path.join(CASES, "good_rewrite.py"), "--against", os.path.join(CASES, "base.py"))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "case, reason",
    [
        ("clip_before_unscale", "clipping on still-scaled gradients"),
        ("no_division", "differs from the original"),
        ("update_per_microbatch", "scaler.update() without a scaler.step()"),
        ("scaler_per_step", "a GradScaler is created"),
        ("step_bypasses_scaler", "bypassing scaler.step"),
        ("discarded_scaled_loss", "backward of an unscaled loss while a scaled one was discarded"),
        ("autocast_misses_forward", "autocast does not cover the forward pass"),
    ],
)
def test_broken_rewrites_fail_with_the_right_reason(case, reason):
    result = verify(os.path.join(CASES, f"broken_{case}.py"), "--against", os.path.join(CASES, "base.py"))
    assert result.returncode == 1, result.stdout
    assert reason in result.stdout


def test_a_rewrite_for_cuda_only_says_so_on_a_cpu():
    result = verify(os.path.join(FIXTURES, "convert_tutorial_loop.py"))
    assert result.returncode == 1
    assert "present but disabled on this device (cpu" in result.stdout and "--cuda-shim" in result.stdout
    assert "Failed to initialize NumPy" not in result.stdout + result.stderr  # the verify extra brings numpy


def test_json_report(tmp_path):
    result = verify(os.path.join(FIXTURES, "convert_tutorial_loop.py"), "--cuda-shim", "--format", "json")
    document = json.loads(result.stdout)
    assert document["exit_code"] == 0 and document["applied"] == ["AMP501"]
    names = {c["name"]: c["status"] for c in document["checks"]}
    assert names["low precision"] == "pass" and names["trains like fp32"] == "pass"
    assert document["metrics"]["low_precision_fraction"] > 0.9
    assert len(document["runs"]["amp"]["losses"]) == 6


def test_a_crashing_script_cannot_be_verified(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text("import torch\nraise ValueError('broken data path')\n")
    result = verify(str(script))
    assert result.returncode == 2
    assert "the original script failed" in result.stdout and "broken data path" in result.stdout


def test_a_hanging_script_is_killed_at_the_timeout(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text("import time\nimport torch\ntime.sleep(600)\n")
    result = verify(str(script), "--timeout", "15")
    assert result.returncode == 2
    assert "timed out after 15 s" in result.stdout


def test_a_cuda_only_script_on_a_cpu_machine_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    script = tmp_path / "cuda_only.py"
    script.write_text("import torch\nmodel = torch.nn.Linear(2, 2).cuda()\n")
    result = verify(str(script))
    assert result.returncode == 2
    assert "needs CUDA" in result.stdout and "--cuda-shim" in result.stdout


def test_stop_passes_through_broad_except_blocks(tmp_path):
    script = tmp_path / "swallow.py"
    script.write_text(
        "import torch\nmodel = torch.nn.Linear(4, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for i in range(1000):\n    try:\n        model(torch.randn(8, 4)).sum().backward()\n        opt.step()\n"
        "    except Exception:\n        pass\n"
    )
    result = verify(str(script), "--format", "json")
    document = json.loads(result.stdout)
    assert document["runs"]["original"]["status"] == "stopped"
    assert len(document["runs"]["original"]["losses"]) == 6


def test_help_says_user_code_runs_only_in_subprocesses():
    text = run_ampfix("verify", "--help").stdout
    assert "subprocesses" in text and "timeout" in text


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fixture_passes_on_a_gpu():
    result = verify(os.path.join(FIXTURES, "convert_tutorial_loop.py"), "--device", "cuda", "--steps", "20")
    assert result.returncode == 0, result.stdout


def test_the_json_report_is_strict_json_even_with_nan_losses():
    import io
    import math

    from ampfix.verify.report import _finite

    document = {"metrics": {"drift": float("nan")}, "runs": {"amp": {"losses": [[1.0], [float("inf")], [math.nan]]}}}
    out = io.StringIO()
    json.dump(_finite(document), out, allow_nan=False)
    assert json.loads(out.getvalue()) == {"metrics": {"drift": None}, "runs": {"amp": {"losses": [[1.0], [None], [None]]}}}
