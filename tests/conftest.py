import os
import subprocess
import sys
import textwrap

import pytest

import ampfix
from ampfix.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
RULE_DOCS = os.path.join(ROOT, "rules")


def codes(source, **settings):
    """The codes ampfix reports for a dedented source, in order."""
    return [d.code for d in ampfix.check_source(textwrap.dedent(source), "t.py", Settings(**settings))]


def fixed(source, unsafe=False, **settings):
    return ampfix.fix_source(textwrap.dedent(source), "t.py", Settings(**settings), unsafe_fixes=unsafe).source


def run_ampfix(*args, cwd=None, input=None, env=None):
    """Run the CLI in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AMPFIX_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ampfix", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=isinstance(input, str) or input is None,
        env=full_env,
        timeout=120,
    )


@pytest.fixture
def write(tmp_path):
    """write("name.py", source) -> path, dedented."""

    def _write(name, source, mode="w"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            path.write_bytes(source)
        else:
            path.write_text(textwrap.dedent(source))
        return path

    return _write
