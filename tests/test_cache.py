"""The content-keyed cache: same output warm or cold, invalidation by bytes and settings, and a
broken cache is a cold cache, never an error."""

import os

from conftest import run_ampfix

OLD = "import torch\nscaler = torch.cuda.amp.GradScaler()\n"


def cache_files(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(root / ".ampfix_cache") for f in fs if f.endswith(".json")]


def test_warm_run_gives_the_same_output(tmp_path):
    (tmp_path / "a.py").write_text(OLD)
    (tmp_path / "b.py").write_text("import torch\nx = 1\n")
    cold = run_ampfix("check", "--output-format", "json", ".", cwd=tmp_path)
    assert cache_files(tmp_path)
    warm = run_ampfix("check", "--output-format", "json", ".", cwd=tmp_path)
    assert warm.stdout == cold.stdout and warm.returncode == cold.returncode == 1


def test_cache_dir_is_tagged_and_ignored(tmp_path):
    (tmp_path / "a.py").write_text(OLD)
    run_ampfix("check", ".", cwd=tmp_path)
    assert (tmp_path / ".ampfix_cache" / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    assert (tmp_path / ".ampfix_cache" / ".gitignore").read_text().strip().endswith("*")


def test_changed_bytes_are_rechecked_but_touch_is_free(tmp_path):
    path = tmp_path / "a.py"
    path.write_text(OLD)
    run_ampfix("check", ".", cwd=tmp_path)
    os.utime(path, None)  # touch: same bytes, still a hit, same answer
    assert "AMP102" in run_ampfix("check", "--output-format", "concise", ".", cwd=tmp_path).stdout
    path.write_text("import torch\nscaler = torch.amp.GradScaler('cuda')\n")
    result = run_ampfix("check", ".", cwd=tmp_path)
    assert result.returncode == 0


def test_settings_change_uses_another_cache(tmp_path):
    (tmp_path / "a.py").write_text(OLD + "with torch.autocast('cuda'):\n    pass\n")
    run_ampfix("check", ".", cwd=tmp_path)
    assert run_ampfix("check", "--select", "AMP101", ".", cwd=tmp_path).returncode == 0
    assert len(cache_files(tmp_path)) == 2


def test_corrupt_cache_is_a_miss(tmp_path):
    (tmp_path / "a.py").write_text(OLD)
    run_ampfix("check", ".", cwd=tmp_path)
    for path in cache_files(tmp_path):
        with open(path, "w") as handle:
            handle.write('{"truncated": [')
    result = run_ampfix("check", "--output-format", "concise", ".", cwd=tmp_path)
    assert result.returncode == 1 and "AMP102" in result.stdout and not result.stderr


def test_no_cache_writes_nothing(tmp_path):
    (tmp_path / "a.py").write_text(OLD)
    run_ampfix("check", "--no-cache", ".", cwd=tmp_path)
    assert not (tmp_path / ".ampfix_cache").exists()


def test_apply_after_a_cached_check_still_fixes(tmp_path):
    path = tmp_path / "a.py"
    path.write_text(OLD)
    run_ampfix("check", ".", cwd=tmp_path)
    assert run_ampfix("check", "--apply", ".", cwd=tmp_path).returncode == 0
    assert "torch.amp.GradScaler" in path.read_text()
    assert run_ampfix("check", ".", cwd=tmp_path).returncode == 0


def test_clean_removes_the_caches_below(tmp_path):
    (tmp_path / "a.py").write_text(OLD)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text(OLD)
    run_ampfix("check", ".", cwd=tmp_path)
    run_ampfix("check", ".", cwd=tmp_path / "sub")
    assert (tmp_path / ".ampfix_cache").is_dir() and (tmp_path / "sub" / ".ampfix_cache").is_dir()
    result = run_ampfix("clean", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.count("Removing cache at:") == 2
    assert not (tmp_path / ".ampfix_cache").exists() and not (tmp_path / "sub" / ".ampfix_cache").exists()
    assert (tmp_path / "a.py").read_text() == OLD  # only caches go


def test_another_build_of_ampfix_uses_another_cache(tmp_path, monkeypatch):
    """Results cached by one build of the rules (an editable install before a change) are not
    read by another of the same version: the cache is keyed by ampfix's own modules too."""
    from ampfix import cache
    from ampfix.settings import Settings

    settings = Settings(project_root=str(tmp_path))
    this_build = cache.Cache(settings).path
    monkeypatch.setattr(cache, "_CODE_STAMP", "another-build")
    assert cache.Cache(settings).path != this_build
    monkeypatch.setattr(cache, "_CODE_STAMP", None)
    assert cache.Cache(settings).path == this_build  # the same modules: the same cache
