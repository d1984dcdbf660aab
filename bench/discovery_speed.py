#!/usr/bin/env python3
"""File discovery against a plain ``os.walk`` on the same tree (medians of ``--rounds``).

    python bench/discovery_speed.py /work/eco/checkouts
    python bench/discovery_speed.py /work/eco/checkouts --gitignore-mirror /tmp/eco-gitignored

``--gitignore-mirror DIR`` builds (once) a hard-linked copy of the tree in DIR in which every
top-level directory is a repository (an empty ``.git/``) with a typical Python ``.gitignore``, and
measures that too: a tree without any ``.gitignore`` never exercises the gitignore matchers.
Run it in-process (``PYTHONPATH`` set to the checkout to measure); the first round warms the OS's
directory cache and is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

# The usual patterns of GitHub's Python .gitignore template, plus a negation and anchored ones.
PYTHON_GITIGNORE = """\
__pycache__/
*.py[cod]
*$py.class
*.so
.Python
build/
develop-eggs/
dist/
downloads/
eggs/
.eggs/
lib64/
parts/
sdist/
var/
wheels/
*.egg-info/
.installed.cfg
*.egg
MANIFEST
*.manifest
*.spec
pip-log.txt
htmlcov/
.tox/
.coverage
.coverage.*
.cache
nosetests.xml
coverage.xml
*.cover
.hypothesis/
.pytest_cache/
*.mo
*.pot
*.log
local_settings.py
db.sqlite3
instance/
.webassets-cache
.scrapy
docs/_build/
target/
.ipynb_checkpoints
profile_default/
ipython_config.py
.env
.venv
env/
venv/
ENV/
.spyderproject
.ropeproject
/site
.mypy_cache/
.dmypy.json
/outputs/
/wandb/
*.ckpt
!keep_me.py
"""


def plain_walk(top: str) -> list[str]:
    found = []
    for directory, _, files in os.walk(top):
        found.extend(os.path.join(directory, f) for f in files if f.endswith((".py", ".pyi", ".ipynb")))
    return found


def ampfix_discover(top: str) -> list[str]:
    from ampfix import discovery
    from ampfix.discovery import discover
    from ampfix.settings import Settings

    if hasattr(discovery, "_compiled_pattern"):
        discovery._compiled_pattern.cache_clear()  # each round as a fresh process would run it
    return discover([top], Settings(project_root=top)).files


def make_mirror(source: str, mirror: str) -> None:
    if os.path.isdir(mirror):
        return
    subprocess.run(["cp", "-al", source, mirror], check=True)
    for name in os.listdir(mirror):
        repo = os.path.join(mirror, name)
        if os.path.isdir(repo):
            os.makedirs(os.path.join(repo, ".git", "info"), exist_ok=True)
            with open(os.path.join(repo, ".gitignore"), "w") as handle:
                handle.write(PYTHON_GITIGNORE)


def measure(label: str, function, top: str, rounds: int) -> None:
    function(top)  # warms the directory cache (and imports)
    times, count = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        count = len(function(top))
        times.append(time.perf_counter() - start)
    print(f"{label:<28} {statistics.median(times) * 1000:8.1f} ms  (min {min(times) * 1000:.1f})  {count} files")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--gitignore-mirror")
    args = parser.parse_args()
    trees = [("", os.path.abspath(args.tree))]
    if args.gitignore_mirror:
        make_mirror(os.path.abspath(args.tree), args.gitignore_mirror)
        trees.append((" (.gitignore)", os.path.abspath(args.gitignore_mirror)))
    for suffix, top in trees:
        measure("os.walk" + suffix, plain_walk, top, args.rounds)
        measure("ampfix discover" + suffix, ampfix_discover, top, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
