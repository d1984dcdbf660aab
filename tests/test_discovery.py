"""Which files are checked: gitignore, default excludes, explicit files, symlinks, order."""

import os

from ampfix.discovery import discover
from ampfix.settings import Settings
from conftest import run_ampfix

OLD = "import torch\nscaler = torch.cuda.amp.GradScaler()\n"


def names(tmp_path, paths=None, **kw):
    found = discover(paths or [str(tmp_path)], Settings(project_root=str(tmp_path)), **kw)
    return sorted(os.path.relpath(f, tmp_path) for f in found.files)


def make(tmp_path, *files):
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OLD)


def test_python_and_stub_files_only(tmp_path):
    make(tmp_path, "a.py", "b.pyi", "c.txt", "d.pyc")
    assert names(tmp_path) == ["a.py", "b.pyi"]


def test_default_excludes(tmp_path):
    make(tmp_path, "a.py", ".venv/x.py", "venv/x.py", "build/x.py", "dist/x.py", "__pycache__/x.py",
         "lib/site-packages/x.py", ".git/x.py")
    assert names(tmp_path) == ["a.py"]


def test_gitignore_at_every_level(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("ignored.py\n/out/\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / ".gitignore").write_text("*_gen.py\n!keep_gen.py\n")
    make(tmp_path, "a.py", "ignored.py", "out/x.py", "pkg/ignored.py", "pkg/b_gen.py", "pkg/keep_gen.py", "pkg/c.py")
    assert names(tmp_path) == ["a.py", "pkg/c.py", "pkg/keep_gen.py"]


def test_explicit_files_are_checked_unless_force_exclude(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("ignored.py\n")
    make(tmp_path, "ignored.py", "build/gen.py")
    explicit = [str(tmp_path / "ignored.py"), str(tmp_path / "build" / "gen.py")]
    assert names(tmp_path, explicit) == ["build/gen.py", "ignored.py"]
    assert names(tmp_path, explicit, force_exclude=True) == []


def test_symlinked_files_are_checked_and_directory_loops_are_not_followed(tmp_path):
    make(tmp_path, "real/a.py")
    os.symlink(tmp_path / "real" / "a.py", tmp_path / "link.py")
    os.symlink(tmp_path, tmp_path / "real" / "loop")
    assert names(tmp_path) == ["link.py", "real/a.py"]


def test_output_is_sorted_and_identical_for_any_number_of_jobs(tmp_path):
    for i in range(40):
        make(tmp_path, f"m{i:02d}/t.py")
    outputs = [
        run_ampfix("check", "--output-format", "concise", "--jobs", jobs, ".", cwd=tmp_path).stdout
        for jobs in ("1", "2")
    ]
    assert outputs[0] == outputs[1]
    lines = outputs[0].splitlines()[:-1]
    assert lines == sorted(lines) and len(lines) == 40


def test_apply_touches_nothing_but_fixed_files(tmp_path):
    make(tmp_path, "a.py")
    clean = tmp_path / "clean.py"
    clean.write_text("import torch\n")
    before = os.stat(clean).st_mtime_ns
    run_ampfix("check", "--apply", ".", cwd=tmp_path)
    assert os.stat(clean).st_mtime_ns == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".ampfix-")]


def test_plain_name_excludes_match_as_gitignore_does():
    """Plain names are matched by path component (no pathspec import); globs go to pathspec."""
    import pathspec

    from ampfix.discovery import _Excludes
    from ampfix.settings import DEFAULT_EXCLUDES

    patterns = [*DEFAULT_EXCLUDES, "generated", "legacy_*.py", "docs/conf.py"]
    excludes = _Excludes(patterns)
    reference = pathspec.GitIgnoreSpec.from_lines(patterns)
    paths = ["a.py", "venv/", "venv/x.py", "src/venv/x.py", "src/venvs/x.py", "generated/", "generated",
             "src/generated/m.py", "src/generated_m.py", "legacy_train.py", "src/legacy_train.py",
             "docs/conf.py", "src/docs/conf.py", ".git/", "x.git/y.py", "build/", "rebuild/a.py"]
    assert excludes.globs is not None and "venv" in excludes.names
    assert [excludes.match(p) for p in paths] == [reference.match_file(p) for p in paths]


def test_suffix_globs_match_as_gitignore_does_without_pathspec():
    """``*.egg-info`` (the default) and ``*.py`` are suffix tests: no pathspec compile for them."""
    import pathspec

    from ampfix.discovery import _Excludes
    from ampfix.settings import DEFAULT_EXCLUDES

    assert _Excludes(DEFAULT_EXCLUDES).globs is None
    patterns = ["*.egg-info", "*_pb2.py", "*.", "*x"]
    excludes = _Excludes(patterns)
    assert excludes.globs is None and excludes.suffixes == (".egg-info", "_pb2.py", ".", "x")
    reference = pathspec.GitIgnoreSpec.from_lines(patterns)
    paths = ["a.py", "pkg.egg-info/", "pkg.egg-info/x.py", "src/pkg.egg-info/PKG", "a.egg-info.py", "m_pb2.py",
             "src/m_pb2.py", "m_pb2.pyi", ".", "a./b.py", "box/", "box/a.py", "x", ".egg-info/"]
    assert [excludes.match(p) for p in paths] == [reference.match_file(p) for p in paths]


def test_gitignore_matcher_answers_as_pathspec_does():
    """The joined regex only rules out paths no pattern ignores; every other answer is pathspec's,
    negations and directory patterns included."""
    import pathspec

    from ampfix.discovery import _GitignoreMatcher

    lines = ["*.py[cod]", "build/", "/out/", "docs/_build/", "*.log", "!keep.log", "gen_*.py", "!gen_keep.py",
             "data/**/raw", "a?c.py", "[Tt]mp/", "/top.py", "**/deep/x.py", "\\#odd.py", "cache", "!cache/keep/"]
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    matcher = _GitignoreMatcher(spec)
    assert matcher.any_ignoring is not None
    paths = ["a.py", "a.pyc", "x/a.pyo", "build/", "x/build/", "build", "out/", "x/out/", "docs/_build/",
             "x/docs/_build/", "e.log", "keep.log", "x/keep.log", "gen_a.py", "gen_keep.py", "x/gen_b.py",
             "data/raw", "data/x/y/raw", "x/data/raw", "abc.py", "a/c.py", "Tmp/", "tmp/", "top.py", "x/top.py",
             "deep/x.py", "a/b/deep/x.py", "#odd.py", "cache", "cache/", "x/cache/a.py", "cache/keep/",
             "cache/keep/a.py"]
    assert [matcher.match(p) for p in paths] == [spec.match_file(p) for p in paths]


def test_walk_from_a_subdirectory_uses_the_outer_gitignore_and_excludes(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("pkg/gen/\n*_tmp.py\n")
    make(tmp_path, "pkg/a.py", "pkg/gen/b.py", "pkg/c_tmp.py", "pkg/sub/d.py", "pkg/x.egg-info/e.py",
         "build/f.py", "pkg/inner/.git/HEAD", "pkg/inner/g_tmp.py")
    (tmp_path / "pkg" / "inner" / ".gitignore").write_text("h.py\n")
    make(tmp_path, "pkg/inner/h.py", "pkg/inner/i.py")
    found = discover([str(tmp_path / "pkg"), str(tmp_path / "build")], Settings(project_root=str(tmp_path)))
    # build/ is excluded even when named (its files have an excluded component); pkg/inner is a
    # repository of its own: the outer *_tmp.py does not apply there
    assert sorted(os.path.relpath(f, tmp_path) for f in found.files) == [
        "pkg/a.py", "pkg/inner/g_tmp.py", "pkg/inner/i.py", "pkg/sub/d.py"]
