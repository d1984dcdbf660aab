"""The runner's warm path: cache hits decided in this process, a pool only for enough misses."""

import os

import pytest

from ampfix import runner
from ampfix.cache import Cache
from ampfix.runner import CHECK, FIX, Job, run
from ampfix.settings import Settings

OLD = "import torch\nscaler = torch.cuda.amp.GradScaler()\n"
# enough bytes per file that 40 misses are worth a pool
PADDING = "# " + "x" * 78 + "\n"


@pytest.fixture
def pools(monkeypatch):
    """The number of process pools started (each run in this process instead)."""
    started = []

    def in_this_process(items, job, workers, progress):
        started.append(len(items))
        return [runner.process_file(path, job, cached) for path, cached in items]

    monkeypatch.setattr(runner, "_run_in_pool", in_this_process)
    return started


def make_tree(tmp_path, count, padding_lines=100):
    paths = []
    for i in range(count):
        path = tmp_path / f"m{i:02d}.py"
        path.write_text(OLD + PADDING * padding_lines)
        paths.append(str(path))
    return paths


def check(paths, tmp_path, mode=CHECK):
    settings = Settings(project_root=str(tmp_path))
    cache = Cache(settings).load()
    return run(paths, Job(mode, settings, False, use_cache=True), jobs=2, cache=cache)


def test_a_warm_run_starts_no_pool_and_gives_the_cold_findings(tmp_path, pools):
    paths = make_tree(tmp_path, 40)
    cold = check(paths, tmp_path)
    assert pools == [40]  # 40 misses of 8 KB: worth a pool
    warm = check(paths, tmp_path)
    assert pools == [40]  # every file a hit: decided here, no pool
    assert all(r.cached for r in warm)
    assert [[d.code for d in r.diagnostics] for r in warm] == [[d.code for d in r.diagnostics] for r in cold]


def test_only_the_misses_are_processed(tmp_path, pools, monkeypatch):
    paths = make_tree(tmp_path, 40)
    check(paths, tmp_path)
    with open(paths[3], "a") as handle:
        handle.write("x = 1\n")
    processed = []
    real = runner.process_file
    monkeypatch.setattr(runner, "process_file", lambda path, job, cached=None: processed.append(path) or real(path, job, cached))
    results = check(paths, tmp_path)
    assert processed == [paths[3]] and pools == [40]  # one miss: processed here, no pool
    assert [r.path for r in results] == sorted(paths)
    assert not results[3].cached and all(r.cached for i, r in enumerate(results) if i != 3)


def test_few_or_small_files_never_start_a_pool(tmp_path, pools):
    check(make_tree(tmp_path, 1), tmp_path)  # one file (pre-commit, an editor)
    small = tmp_path / "small"
    small.mkdir()
    check(make_tree(small, 40, padding_lines=0), tmp_path)  # 40 files of 56 bytes
    assert pools == []


def test_a_hit_with_a_fix_to_apply_is_processed(tmp_path, pools):
    paths = make_tree(tmp_path, 2)
    check(paths, tmp_path)
    fixed = check(paths, tmp_path, mode=FIX)
    assert all(not r.cached and r.fixed for r in fixed)
    with open(paths[0]) as handle:
        assert "torch.amp.GradScaler" in handle.read()
    assert os.path.exists(paths[1])
