"""The pre-commit hooks, through the real `pre-commit try-repo` on a temporary git repository."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

OLD = "import torch\n\nscaler = torch.cuda.amp.GradScaler()\n"
CLEAN = 'import torch\n\nscaler = torch.amp.GradScaler("cuda")\n'


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                            GIT_COMMITTER_EMAIL="t@t"))


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory):
    """A committed copy of this project, as pre-commit would clone it from a tag."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    pytest.importorskip("pre_commit")
    repo = tmp_path_factory.mktemp("hookrepo")
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(os.path.join(ROOT, name), repo / name)
    for name in ("ampfix", "rules"):
        shutil.copytree(os.path.join(ROOT, name), repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "hooks")
    return repo


def _try_repo(hook_repo, work, hook):
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), hook, "--all-files"],
        cwd=work, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PRE_COMMIT_HOME=str(hook_repo.parent / "pre-commit-home")),
    )


@pytest.fixture
def work(tmp_path):
    _git(tmp_path, "init", "-q")
    return tmp_path


def test_manifest_is_valid():
    pytest.importorskip("pre_commit")
    result = subprocess.run([sys.executable, "-m", "pre_commit", "validate-manifest",
                             os.path.join(ROOT, ".pre-commit-hooks.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_findings_fail_the_check_hook(hook_repo, work):
    (work / "train.py").write_text(OLD)
    _git(work, "add", "-A")
    result = _try_repo(hook_repo, work, "ampfix")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "AMP102" in result.stdout
    assert (work / "train.py").read_text() == OLD


def test_fix_hook_modifies_the_file(hook_repo, work):
    (work / "train.py").write_text(OLD)
    _git(work, "add", "-A")
    result = _try_repo(hook_repo, work, "ampfix-fix")
    assert result.returncode == 1  # pre-commit fails a hook that modified files
    assert "files were modified by this hook" in result.stdout
    assert (work / "train.py").read_text() == CLEAN


def test_clean_file_passes(hook_repo, work):
    (work / "train.py").write_text(CLEAN)
    _git(work, "add", "-A")
    result = _try_repo(hook_repo, work, "ampfix")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_docs_ship_in_a_non_editable_install(hook_repo, tmp_path):
    """pre-commit installs the hook repository as a wheel: `ampfix rule` must still work there."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(hook_repo)],
                   check=True, capture_output=True, timeout=600)
    wheel, = wheels.glob("ampfix-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    assert (target / "ampfix" / "_rule_docs" / "AMP101.md").is_file()
    result = subprocess.run([sys.executable, "-m", "ampfix", "rule", "AMP101"], capture_output=True, text=True,
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(target)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# deprecated-autocast (AMP101)")
    assert str(target) in subprocess.run(
        [sys.executable, "-c", "import ampfix; print(ampfix.__file__)"], capture_output=True, text=True,
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(target))).stdout
