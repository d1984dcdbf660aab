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
STEPS = {"accumulation.py": "2", "autocast_scope.py": "3", "deprecated_cuda_amp.py": "3"}  # all their data
# AMP213 is report-only: the rewrite keeps the scaler on an fp32 loop, which verify fails on purpose
NO_AUTOCAST = {"scaler_without_autocast.py"}
ORIGINALS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(FIXTURES, "*.py")) if not p.endswith(".fixed.py"))


def verify(*args, steps="4", cwd=None):
    return run_ampfix("verify", "--steps", steps, *args, cwd=cwd)


def _unchanged(name):
    """A fixture whose findings have no fix: its rewrite is the original."""
    with open(os.path.join(FIXTURES, name)) as a, open(os.path.join(FIXTURES, name[:-3] + ".fixed.py")) as b:
        return a.read() == b.read()


@pytest.mark.parametrize("name", ORIGINALS)
def test_every_fixture_passes_after_its_rewrite_on_cpu(name):
    path = os.path.join(FIXTURES, name)
    args = [path]
    if name in CUDA_STYLE | CUDA_ONLY_REWRITES:
        args.append("--cuda-shim")
    if name == "convert_apex_o1.py":
        # the original needs apex; its rewrite needs only torch and must pass on its own
        fixed = os.path.join(FIXTURES, "convert_apex_o1.fixed.py")
        args = [fixed, "--against", fixed]
    result = verify(*args, steps=STEPS.get(name, "4"))
    if _unchanged(name):
        assert result.returncode == 2 and "nothing to verify" in result.stderr, result.stdout + result.stderr
        return
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: PASS" in result.stdout


def test_behaviour_changing_fixes_are_reported_not_failed():
    result = verify(os.path.join(FIXTURES, "accumulation.py"), steps="2")
    assert result.returncode == 0
    # AMP303's move of zero_grad divides the window's loss too (AMP301's change, in the same fix)
    assert "changed on purpose by AMP201" in result.stdout and "AMP303: gradients now accumulate" in result.stdout


def test_a_correct_rewrite_passes_against_its_original():
    result = verify(os.path.join(CASES, "good_rewrite.py"), "--against", os.path.join(CASES, "base.py"))
    assert result.returncode == 0, result.stdout


def test_a_scaler_subclass_is_followed_through_its_overrides():
    # ShardedGradScaler overrides scale, unscale_ and update; a user's subclass may call super()
    result = verify(os.path.join(CASES, "scaler_subclass.py"), "--against", os.path.join(CASES, "base.py"))
    assert result.returncode == 0, result.stdout
    assert "not exactly once" not in result.stdout


@pytest.mark.parametrize(
    "case, reason",
    [
        ("clip_before_unscale", "clipping on still-scaled gradients"),
        ("no_division", "differs from the original"),
        ("update_per_microbatch", "scaler.update() without a scaler.step()"),
        ("scaler_per_step", "a GradScaler is created"),
        ("deprecated_scaler_per_step", "a GradScaler is created 10× at broken_deprecated_scaler_per_step.py:13 "),
        ("step_after_unscale", "4× optimizer.step() after scaler.unscale_(): the step bypasses scaler.step"),
        ("step_bypasses_scaler", "bypassing scaler.step"),
        ("discarded_scaled_loss", "backward of an unscaled loss while a scaled one was discarded"),
        ("autocast_misses_forward", "autocast does not cover the forward pass"),
    ],
)
def test_broken_rewrites_fail_with_the_right_reason(case, reason):
    result = verify(os.path.join(CASES, f"broken_{case}.py"), "--against", os.path.join(CASES, "base.py"))
    assert result.returncode == 1, result.stdout
    assert reason in result.stdout
    assert "update per micro-batch" not in result.stdout or case == "update_per_microbatch"


def test_a_rewrite_for_cuda_only_runs_under_the_shim_on_a_cpu_and_says_so():
    """The conversion of a device-agnostic script enables autocast on CUDA only: on a CPU it
    equals its original, so verify starts again under the CUDA shim instead of failing."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = verify(os.path.join(FIXTURES, "convert_tutorial_loop.py"))
    assert result.returncode == 0, result.stdout
    assert "ran under the CUDA shim automatically" in result.stdout and "cuda shim)" in result.stdout
    assert "not a GPU figure" in result.stdout  # the speed line says what it measured
    assert "Failed to initialize NumPy" not in result.stdout + result.stderr  # the verify extra brings numpy


def _alone(tmp_path, case):
    """The case copied into a folder of its own (its siblings' `train`/`main` would make the
    call graph ambiguous, and AMP501 would then only suggest its fix)."""
    path = tmp_path / case
    path.write_text(open(os.path.join(CASES, case)).read())
    return str(path)


def test_a_device_chosen_through_torch_accelerator_is_cuda_under_the_shim(tmp_path):
    """pytorch/examples pick ``torch.accelerator.current_accelerator()``: under the shim that is
    CUDA, so the rewrite's autocast turns on and low precision really runs (not a FAIL, and not
    a PASS that compared the fp32 program with itself)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = verify(_alone(tmp_path, "accelerator_device.py"), "--format", "json")
    document = json.loads(result.stdout)
    assert result.returncode == 0, document["verdict"]
    names = {c["name"]: c["status"] for c in document["checks"]}
    assert names["low precision"] == "pass" and document["metrics"]["low_precision_fraction"] > 0.9
    assert any("ran under the CUDA shim automatically" in c["detail"] for c in document["checks"])


@pytest.mark.parametrize("flops", [[], ["--no-flops"]])
def test_a_rewrite_whose_autocast_stays_off_under_the_shim_cannot_be_verified_here(tmp_path, flops):
    """The shim cannot reach a device read from the environment: the AMP run is the fp32 program
    again, so verify says it cannot verify here (exit 2), neither FAIL nor a vacuous PASS."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = verify(_alone(tmp_path, "device_from_environment.py"), "--format", "json", *flops)
    document = json.loads(result.stdout)
    assert result.returncode == 2, document["verdict"]
    assert document["verdict"].startswith("cannot verify on this device") and "stays on its CPU branch" in \
        document["verdict"]
    assert "speed" not in {c["name"] for c in document["checks"]}


def test_json_report(tmp_path):
    result = verify(os.path.join(FIXTURES, "convert_tutorial_loop.py"), "--cuda-shim", "--format", "json")
    document = json.loads(result.stdout)
    assert document["exit_code"] == 0 and document["applied"] == ["AMP501"]
    names = {c["name"]: c["status"] for c in document["checks"]}
    assert names["low precision"] == "pass" and names["trains like fp32"] == "pass"
    assert document["metrics"]["low_precision_fraction"] > 0.9
    assert len(document["runs"]["amp"]["losses"]) == 4


FIXABLE = "import torch\nscaler = torch.cuda.amp.GradScaler(enabled=False)  # AMP102: something to verify\n"


def test_a_crashing_script_cannot_be_verified_and_nothing_else_runs(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(FIXABLE + "raise ValueError('broken data path')\n")
    result = verify(str(script), "--format", "json")
    document = json.loads(result.stdout)
    assert result.returncode == 2
    assert "the original script failed" in document["verdict"] and "broken data path" in document["verdict"]
    assert list(document["runs"]) == ["original"]  # fail fast: the rewrite never started


def test_a_hanging_script_is_killed_at_the_timeout_and_says_where(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(
        FIXABLE + "import time\nmodel = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for i in range(3):\n    model(torch.ones(1, 2)).sum().backward()\n    opt.step()\ntime.sleep(600)\n"
    )
    result = verify(str(script), "--timeout", "15", "--format", "json")
    document = json.loads(result.stdout)
    assert result.returncode == 2
    assert "timed out after 15 s (at step 2 of 4)" in document["verdict"]
    assert list(document["runs"]) == ["original"]


def test_a_cuda_only_script_the_shim_cannot_run_cannot_be_verified_here(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    script = tmp_path / "cuda_only.py"
    script.write_text(
        FIXABLE + "model = torch.nn.Linear(2, 2).cuda()\nbuffer = torch.cuda.FloatTensor(2)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for i in range(8):\n    model(torch.ones(1, 2).cuda()).sum().backward()\n    opt.step()\n"
    )
    result = verify(str(script), "--format", "json")
    document = json.loads(result.stdout)
    assert result.returncode == 2, document["verdict"]
    assert document["verdict"].startswith("cannot verify on this device: the original needs CUDA, and under the CUDA "
                                          "shim the original run does not run here")
    assert "speed" not in {c["name"] for c in document["checks"]}
    asked = verify(str(script), "--device", "cuda")
    assert asked.returncode == 2 and "this machine has no CUDA device" in asked.stderr


def test_the_stop_cannot_be_swallowed_by_a_bare_except(tmp_path):
    script = tmp_path / "swallow.py"
    script.write_text(
        FIXABLE + "model = torch.nn.Linear(4, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for i in range(1000):\n    try:\n        model(torch.randn(8, 4)).sum().backward()\n        opt.step()\n"
        "    except:\n        pass\n"
    )
    result = verify(str(script), "--format", "json")
    document = json.loads(result.stdout)
    assert document["runs"]["original"]["status"] == "stopped"
    assert len(document["runs"]["original"]["losses"]) == 4


def test_a_pass_on_float32_steps_says_the_amp_path_did_not_run(tmp_path):
    """A fix verified on a device where neither run uses low precision (nanoGPT with
    --device=cpu) passes, and its verdict says that only float32 behaviour was verified."""
    script = tmp_path / "fp32_here.py"
    script.write_text(
        FIXABLE + "model = torch.nn.Linear(4, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for i in range(8):\n    model(torch.randn(8, 4)).sum().backward()\n    opt.step()\n    opt.zero_grad()\n"
    )
    result = verify(str(script), "--format", "json")
    document = json.loads(result.stdout)
    assert result.returncode == 0, document["verdict"]
    assert document["verdict"].endswith("no step ran in low precision on this device, so only the float32 "
                                        "behaviour of the fixes was verified")


def test_nothing_to_verify_when_no_fix_applies(tmp_path):
    script = tmp_path / "modern.py"
    script.write_text("import torch\nscaler = torch.amp.GradScaler('cpu')\n")
    result = verify(str(script))
    assert result.returncode == 2 and "no fix applies" in result.stderr and "nothing to verify" in result.stderr
    assert result.stdout == ""  # no run started, no verdict


def test_help_says_user_code_runs_only_in_subprocesses():
    text = run_ampfix("verify", "--help").stdout
    assert "subprocesses" in text and "timeout" in text


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fixture_passes_on_a_gpu():
    result = verify(os.path.join(FIXTURES, "convert_tutorial_loop.py"), "--device", "cuda", steps="20")
    assert result.returncode == 0, result.stdout


def test_the_json_report_is_strict_json_even_with_nan_losses():
    import io
    import math

    from ampfix.verify.report import _finite

    document = {"metrics": {"drift": float("nan")}, "runs": {"amp": {"losses": [[1.0], [float("inf")], [math.nan]]}}}
    out = io.StringIO()
    json.dump(_finite(document), out, allow_nan=False)
    assert json.loads(out.getvalue()) == {"metrics": {"drift": None}, "runs": {"amp": {"losses": [[1.0], [None], [None]]}}}


def test_a_two_optimizer_loop_with_one_scaler_passes():
    """One training step is one round of optimizer steps: the two `scaler.step` calls and the
    one `update()` of an iteration (the AMP docs' pattern) keep the protocol."""
    result = verify(os.path.join(CASES, "two_optimizers_amp.py"), "--against", os.path.join(CASES, "two_optimizers_fp32.py"),
                    steps="6")
    assert result.returncode == 0, result.stdout
    assert "2 optimizer step(s) and 2 backward(s) per step" in result.stdout


def test_warm_up_skips_are_aligned_and_the_later_steps_compared():
    result = verify(os.path.join(CASES, "warmup_skips_amp.py"), "--against", os.path.join(CASES, "warmup_fp32.py"),
                    "--format", "json", steps="8")
    document = json.loads(result.stdout)
    assert document["exit_code"] == 0, document["verdict"]
    assert document["runs"]["amp"]["skipped"] == document["runs"]["fp32"]["skipped"] == [0, 1, 2]
    checks = {c["name"]: c["detail"] for c in document["checks"]}
    assert checks["trains like fp32"].startswith("5 steps compared")


def test_a_loop_in_an_imported_module_is_rewritten_and_verified():
    result = verify(os.path.join(CASES, "two_module", "train.py"), steps="6")
    assert result.returncode == 0, result.stdout
    assert "fixes applied: AMP101 (in trainlib.py)" in result.stdout
    assert "100.0% of matmul/conv FLOPs in bfloat16" in result.stdout


def test_paths_relative_to_the_script_and_to_the_working_directory_resolve(tmp_path):
    import shutil

    shutil.copy(os.path.join(CASES, "file_relative_data.py"), tmp_path / "train.py")
    (tmp_path / "data").mkdir()
    torch.save([(torch.randn(16, 16), torch.randn(16, 4)) for _ in range(6)], tmp_path / "data" / "batches.pt")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lr.txt").write_text("0.1\n")
    result = verify(str(tmp_path / "train.py"), steps="6", cwd=str(run_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    elsewhere = verify(str(tmp_path / "train.py"), "--cwd", str(run_dir), steps="6")
    assert elsewhere.returncode == 0, elsewhere.stdout


def test_a_script_with_two_steps_verifies_two_and_never_passes_on_fewer_than_asked():
    script = os.path.join(CASES, "two_steps.py")
    two = verify(script, steps="2")
    assert two.returncode == 0 and "2 steps compared" in two.stdout
    assert "low precision          pass" in two.stdout  # the FLOP window moved forward
    three = verify(script, steps="3")
    assert three.returncode == 2 and "only 2 of the 3 steps asked for ran" in three.stdout


def test_ampfix_own_manual_scaling_rewrite_trains_like_its_original():
    """Moving the scaling factor into a GradScaler keeps training: the loss the criterion
    returns and the parameters are compared, not the tensor handed to backward()."""
    result = verify(os.path.join(FIXTURES, "convert_manual_grad_scaling.fixed.py"),
                    "--against", os.path.join(FIXTURES, "convert_manual_grad_scaling.py"))
    assert result.returncode == 0, result.stdout
    assert "behaviour vs original  pass" in result.stdout


def test_the_report_shows_the_steps_the_diff_and_the_kept_work_folder():
    result = verify(os.path.join(CASES, "two_steps.py"), "--show-diff", "--keep-workdir", steps="2")
    assert "-    with torch.cpu.amp.autocast(dtype=torch.bfloat16):" in result.stdout
    assert "  step   loss AMP    loss fp32" in result.stdout
    kept = next(line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("work folder kept"))
    assert os.path.isfile(os.path.join(kept, "trace-amp.json")) and os.path.isfile(os.path.join(kept, "rewrite", "two_steps.py"))
    import shutil

    shutil.rmtree(kept)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_benchmark_rewrite_passes_and_runs_in_low_precision():
    script = os.path.join(os.path.dirname(FIXTURES), "bench", "gpu", "matmul_mlp.py")
    result = run_ampfix("verify", script, "--device", "cuda", "--steps", "20", "--format", "json")
    document = json.loads(result.stdout)
    assert document["exit_code"] == 0, document["verdict"]
    assert document["metrics"]["low_precision_fraction"] > 0.9


def test_the_plot_shows_the_loss_curves(tmp_path):
    pytest.importorskip("matplotlib")
    image = tmp_path / "verify.png"
    result = verify(os.path.join(CASES, "two_steps.py"), "--plot", str(image), steps="2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 10_000


def test_a_ddp_script_with_no_sync_accumulation_verifies_on_two_processes():
    result = verify(os.path.join(CASES, "ddp_no_sync.py"), "--nproc", "2", "--format", "json")
    document = json.loads(result.stdout)
    assert document["exit_code"] == 0, document["verdict"]
    for mode in ("original", "amp", "fp32"):
        assert document["runs"][mode]["ranks"] == [{"status": "stopped", "steps": 4}] * 2
    assert document["applied"] == ["AMP101"]


@pytest.mark.parametrize("name", [n for n in ORIGINALS if n != "convert_apex_o1.py"])  # that original needs apex
def test_every_fixed_fixture_passes_against_its_original(name):
    """ampfix's own rewrites, given as files: the same training where the fixes keep it, the
    intended change reported (not failed) where a bug fix changes it."""
    original = os.path.join(FIXTURES, name)
    fixed = original[:-3] + ".fixed.py"
    args = [fixed, "--against", original] + (["--cuda-shim"] if name in CUDA_STYLE | CUDA_ONLY_REWRITES else [])
    result = verify(*args, steps=STEPS.get(name, "4"))
    if name in NO_AUTOCAST:
        assert result.returncode == 1 and "the rewrite never enters autocast" in result.stdout, result.stdout
        return
    assert result.returncode == 0, result.stdout + result.stderr
    [behaviour] = [line for line in result.stdout.splitlines() if line.strip().startswith("behaviour vs original")]
    assert "  pass  " in behaviour or ("  info  " in behaviour and "changed on purpose by AMP" in behaviour), behaviour


def test_an_untouched_two_optimizer_fp32_loop_is_not_a_behaviour_change_and_has_no_autocast():
    script = os.path.join(CASES, "two_optimizers_fp32.py")
    result = verify(script, "--against", script, steps="6")
    assert result.returncode == 1
    assert "behaviour vs original  pass" in result.stdout and "trains like fp32       pass" in result.stdout
    assert "the rewrite never enters autocast" in result.stdout


# -- issue 22: sensitive numerics, phases, predicted changes, the device --------------------


def _checks(result):
    document = json.loads(result.stdout)
    return document, {c["name"]: (c["status"], c["detail"]) for c in document["checks"]}


def test_a_clamp_on_still_scaled_gradients_fails_on_the_updates():
    """No clip function runs, so no protocol event sees it; the weights barely move (each
    gradient clamped to 0.05 / 65536): one global parameter norm hid it, the updates do not."""
    result = verify(os.path.join(CASES, "broken_clamp_scaled_gradients.py"), "--against",
                    os.path.join(CASES, "clamp_fp32.py"), "--format", "json", steps="20")
    document, checks = _checks(result)
    assert result.returncode == 1, document["verdict"]
    status, detail = checks["trains like fp32"]
    assert status == "fail" and "the parameters' updates differ from the fp32 reference's by 1.00e+00" in detail
    assert "most in 0.weight" in detail and "the AMP update is 3.2e-05× the fp32 one" in detail
    assert checks["scaler protocol"][0] == "pass" and checks["behaviour vs original"][0] == "pass"


def test_a_two_percent_learning_rate_change_is_a_behaviour_change():
    result = verify(os.path.join(CASES, "broken_lr_change.py"), "--against", os.path.join(CASES, "base.py"),
                    "--format", "json", steps="8")
    document, checks = _checks(result)
    assert result.returncode == 1
    assert checks["trains like fp32"][0] == "pass"
    assert checks["behaviour vs original"] == (
        "fail", "the fp32 reference differs from the original by up to 2.00e-02 relative (updates at step 0), but the "
                "rewrite should train identically")


def test_a_missing_loss_division_fails_clearly():
    result = verify(os.path.join(CASES, "broken_no_division.py"), "--against", os.path.join(CASES, "base.py"),
                    "--format", "json", steps="8")
    document, checks = _checks(result)
    assert result.returncode == 1
    status, detail = checks["behaviour vs original"]
    assert status == "fail" and "differs from the original by up to 1.00e+00 relative (gradients at step" in detail


def test_real_bfloat16_differences_pass_over_twenty_steps():
    """A conv + BatchNorm model under Adam, bfloat16 against float32: rounding noise, not a bug."""
    result = verify(os.path.join(CASES, "adam_cnn_bf16.py"), "--against", os.path.join(CASES, "adam_cnn_fp32.py"),
                    "--format", "json", steps="20")
    document, checks = _checks(result)
    assert result.returncode == 0, document["verdict"]
    assert document["verdict"] == "PASS (rests on 20 non-skipped step(s) compared)"
    assert 1e-4 < document["metrics"]["max_update_difference"] < 0.078 / 2
    assert "updates within 0.078 of the fp32 update (bfloat16)" in checks["trains like fp32"][1]


def test_the_official_amp_recipe_shape_is_verified_phase_by_phase():
    """An fp32 baseline loop, then an AMP loop (and loops of zero epochs): two phases, the
    baseline run through to reach the AMP loop, each compared with the same phase."""
    result = verify(os.path.join(CASES, "amp_recipe.py"), "--format", "json")
    document, checks = _checks(result)
    assert result.returncode == 0, document["verdict"]
    assert document["verdict"] == "PASS (rests on 8 non-skipped step(s) compared in 2 phases, 1 of them measured in low precision)"
    assert [p["steps"] for p in document["metrics"]["phases"]] == [4, 4]
    assert "2 phases of training steps" in checks["runs"][1] and "14 more step(s) ran through" in checks["runs"][1]
    assert "stays float32, as in the original" in checks["low precision"][1]
    assert "ran under the CUDA shim automatically" in checks["device"][1]  # torch.cuda memory statistics work there
    assert checks["behaviour vs original"][0] == "pass"
    assert "fixes" not in checks  # the scaler line between the loops ran: every fix exercised


def test_a_scaler_warm_up_is_a_warm_up_and_a_pass_needs_steps_that_trained():
    warm = verify(os.path.join(CASES, "warmup_skips_amp.py"), "--against", os.path.join(CASES, "warmup_fp32.py"),
                  "--format", "json", steps="8")
    document, checks = _checks(warm)
    assert warm.returncode == 0 and document["verdict"] == "PASS (rests on 5 non-skipped step(s) compared)"
    assert "3 scaler warm-up skip(s) skipped in both" in checks["trains like fp32"][1]
    only_warm_up = verify(os.path.join(CASES, "warmup_skips_amp.py"), "--against", os.path.join(CASES, "warmup_fp32.py"),
                          "--format", "json", steps="3")
    document, _ = _checks(only_warm_up)
    assert only_warm_up.returncode == 2
    assert document["verdict"].startswith("every step the AMP run took was a scaler warm-up skip")


def test_an_accumulation_fix_is_predicted_and_measured_and_an_unrun_fix_is_not_exercised():
    result = verify(os.path.join(CASES, "accumulation_undivided.py"), "--format", "json")
    document, checks = _checks(result)
    assert result.returncode == 0, document["verdict"]
    assert checks["AMP301 prediction"] == (
        "pass", "the first step's gradients are the original's / 4 (the accumulation factor), as predicted: measured "
                "ratio 0.25")
    assert checks["behaviour vs original"][0] == "info"
    assert checks["fixes"] == ("info", "not exercised by this run: AMP101 (line 22) never ran with these arguments")
    assert checks["low precision"][0] == "info"  # a float32 bug fix is not an AMP rewrite that failed


@pytest.mark.parametrize("division, verdict", [
    ("loss = loss / accum_steps / accum_steps", 1),  # twice: the rewrite mends AMP301's finding, too much
    ("loss = loss / accum_steps", 0),  # once, written otherwise than ampfix would
])
def test_a_hand_rewrite_that_mends_a_finding_is_judged_by_its_prediction(tmp_path, division, verdict):
    original = os.path.join(CASES, "accumulation_undivided.py")
    with open(original, encoding="utf-8") as handle:
        text = handle.read()
    rewrite = tmp_path / "divided.py"
    rewrite.write_text(text.replace("    loss.backward()\n", f"    {division}\n    loss.backward()\n"))
    result = verify(str(rewrite), "--against", original, "--format", "json")
    document, checks = _checks(result)
    assert result.returncode == verdict, document["verdict"]
    assert document["mended"] == ["AMP301"]
    status, detail = checks["AMP301 prediction"]
    if verdict:
        assert status == "fail" and detail.endswith("measured 0.0625: the loss is divided more than the accumulation factor")
    else:
        assert status == "pass"


def _step(grad, update, backwards=1):
    return {"criterion": [1.0], "backwards": backwards, "updates": 0, "optimizer_steps": 1, "phase": 0,
            "grad": [grad], "clip": [], "params": {"norm": 10.0, "update": update, "updates": [update],
                                                     "tensors": [10.0]}}


def _trace(steps, **extra):
    trace = {"status": "stopped", "steps": steps, "phases": [{"key": "t.py:3", "steps": len(steps), "tensors": ["w"]}],
             "events": {}, "flops": {}, "skipped": []}
    trace.update(extra)
    return trace


def test_a_double_division_fails_naming_amp301():
    """The fix divided the loss by the factor twice (the first step's gradients are the
    original's / 4 with 2 micro-batches): larger than the intended change, so it fails."""
    from ampfix.verify.checks import evaluate

    original = _trace([_step(1.0, 0.1, 2), _step(1.0, 0.2, 2)])
    rewrite = _trace([_step(0.25, 0.025, 2), _step(0.25, 0.05, 2)])
    verdict = evaluate({"original": original, "amp": rewrite, "fp32": rewrite}, ["AMP301"], 2)
    assert verdict.exit_code == 1
    [prediction] = [c for c in verdict.checks if c.name == "AMP301 prediction"]
    assert prediction.status == "fail" and prediction.detail == (
        "AMP301 predicts the first step's gradients = the original's / 2 (ratio 0.5); measured 0.25: the loss is "
        "divided more than the accumulation factor")
    halved = _trace([_step(0.5, 0.05, 2), _step(0.5, 0.1, 2)])
    assert evaluate({"original": original, "amp": halved, "fp32": halved}, ["AMP301"], 2).exit_code == 0


def test_a_one_step_loss_spike_is_judged_by_the_parameters():
    from ampfix.verify.checks import evaluate

    steps = [_step(1.0, 0.1 * (i + 1)) for i in range(4)]
    spiky = [dict(s, criterion=[1.2 if i == 2 else 1.0]) for i, s in enumerate(steps)]
    verdict = evaluate({"original": _trace(steps), "amp": _trace(spiky), "fp32": _trace(steps)}, [], 4, against=True)
    [check] = [c for c in verdict.checks if c.name == "trains like fp32"]
    assert check.status == "warn" and "the loss jumps by 2.00e-01 at step 2" in check.detail
    assert "judged by the parameters" in check.detail


def test_an_lstm_under_the_cuda_shim_runs_in_bfloat16_and_says_so():
    result = verify(os.path.join(CASES, "lstm_cuda.py"), "--format", "json", steps="6")
    document, checks = _checks(result)
    assert result.returncode == 0, document["verdict"]
    assert document["metrics"]["dtype"] == "bfloat16"
    assert any("bfloat16 instead of float16 on the CPU, for the model's recurrent (LSTM/GRU/RNN) layers" in c["detail"]
               for c in document["checks"])


def test_verify_selects_every_rule_whatever_check_selects_by_default():
    from ampfix.rules import RULES
    from ampfix.verify.runner import verify_settings

    settings = verify_settings("cpu", "auto")
    assert settings.select == frozenset(RULES) and "AMP501" in settings.select and settings.unsafe_fixes


def test_mp_spawn_children_get_the_harness_and_the_shim():
    result = verify(os.path.join(CASES, "spawn_cuda.py"), "--format", "json")
    document, checks = _checks(result)
    assert result.returncode == 0, document["verdict"]
    assert len(document["runs"]["amp"]["losses"]) == 4 and document["cuda_shim"]
    assert checks["low precision"][0] == "pass"


def test_a_multiprocessing_process_trainer_gets_the_harness_a_forked_one_is_named():
    """mnist_hogwild trains in ``mp.Process`` children: a spawned child is verified like an
    ``mp.spawn`` one; a forked child is not followed, and the verdict says so instead of "the
    original took no optimizer step (is this a training script?)"."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spawned = verify(os.path.join(CASES, "process_trainer.py"), "--format", "json")
    document, checks = _checks(spawned)
    assert spawned.returncode == 0, document["verdict"]
    assert len(document["runs"]["amp"]["losses"]) == 4 and checks["low precision"][0] == "pass"
    assert document["metrics"]["dtype"] == "bfloat16"  # the parent's CNN: no float16 convolutions on the CPU
    forked = verify(os.path.join(CASES, "process_trainer.py"), "--format", "json", "--", "fork")
    document = json.loads(forked.stdout)
    assert forked.returncode == 2, document["verdict"]
    assert "trains in 1 forked child process(es)" in document["verdict"]


def test_training_loops_are_counted_without_the_loops_that_never_run():
    from ampfix.verify.runner import count_training_loops

    with open(os.path.join(CASES, "amp_recipe.py")) as handle:
        recipe = handle.read()
    assert count_training_loops([recipe]) == 2  # the baseline and the AMP loop; not the range(0) one
    with open(os.path.join(CASES, "two_optimizers_amp.py")) as handle:
        assert count_training_loops([handle.read()]) == 1  # two optimizers, one loop
