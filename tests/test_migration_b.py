"""AMP106 (dead torch-version shims) and AMP107 (private AMP API): what fires, what stays silent,
and what the fixes produce."""

import textwrap

import pytest

import ampfix
from ampfix.settings import Settings
from conftest import run_ampfix


def found(source, code, **settings):
    settings.setdefault("select", frozenset({code}))
    settings.setdefault("target_torch_declared", True)  # as --target-torch or the project's floor
    diagnostics = ampfix.check_source(textwrap.dedent(source), "t.py", Settings(**settings))
    return [d for d in diagnostics if d.code == code]


def fixed(source, code, unsafe=False, **settings):
    settings.setdefault("select", frozenset({code}))
    settings.setdefault("target_torch_declared", True)
    return ampfix.fix_source(textwrap.dedent(source), "t.py", Settings(**settings), unsafe_fixes=unsafe).source


# -- AMP106: dead version shims ------------------------------------------------------------------

SHIM_INVALID = [
    # TorchVersion compares as a version
    'import torch\nif torch.__version__ >= "1.10":\n    a = torch.autocast\nelse:\n    a = torch.cuda.amp.autocast\n',
    'import torch\nif torch.__version__ >= (2, 3):\n    s = torch.amp.GradScaler("cuda")\n',
    'import torch\nif "2.3" <= torch.__version__:\n    s = torch.amp.GradScaler("cuda")\n',
    'import torch\nif torch.__version__ < "2.3":\n    s = torch.cuda.amp.GradScaler()\n',
    'import torch\nif not torch.__version__ >= "2.0":\n    s = torch.cuda.amp.GradScaler()\n',
    # packaging, pkg_resources, LooseVersion, importlib.metadata
    ('import torch\nfrom packaging import version\n'
    'if version.parse(torch.__version__) >= version.parse("2.4"):\n    from torch.amp import custom_fwd\n'),
    ('import torch\nimport packaging.version\nif packaging.version.Version(torch.__version__.split("+")[0]) < packaging.version.Version("1.10"):\n'
    '    from torch.cuda.amp import autocast\n'),
    ('import torch\nfrom pkg_resources import parse_version\nif parse_version(torch.__version__) >= parse_version("1.6"):\n'
    '    from torch.cuda.amp import autocast\n'),
    ('import torch\nfrom distutils.version import LooseVersion\nif LooseVersion(torch.__version__) >= "1.10.0":\n'
    '    from torch import autocast\n'),
    ('import importlib.metadata\nfrom packaging.version import parse\n'
    'if parse(importlib.metadata.version("torch")) >= parse("2.3"):\n    from torch.amp import GradScaler\n'),
    # hasattr of a modern name
    ('import torch\nif hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):\n    s = torch.amp.GradScaler("cuda")\n'
    'else:\n    s = torch.cuda.amp.GradScaler()\n'),
    'import torch\nif not hasattr(torch, "autocast"):\n    a = torch.cuda.amp.autocast\n',
    # library helpers
    ('from accelerate.utils import is_torch_version\nif is_torch_version(">=", "2.4.0"):\n    from torch.amp import GradScaler\n'
    'else:\n    from torch.cuda.amp import GradScaler\n'),
    ('from transformers.utils import is_torch_greater_or_equal\nif is_torch_greater_or_equal("2.3"):\n'
    '    from torch.amp import GradScaler\n'),
    ('from lightning.fabric.utilities.imports import _TORCH_GREATER_EQUAL_2_1\nif _TORCH_GREATER_EQUAL_2_1:\n'
    '    from torch.amp import GradScaler\n'),
    # a module constant
    ('import torch\nfrom packaging import version\n_TORCH_GE_1_10 = version.parse(torch.__version__) >= version.parse("1.10")\n'
    'def f():\n    if _TORCH_GE_1_10:\n        return torch.autocast("cuda")\n    return torch.cuda.amp.autocast()\n'),
    ('import torch\nfrom packaging import version\nTORCH_VERSION = version.parse(torch.__version__)\n'
    'if TORCH_VERSION >= version.parse("2.3"):\n    from torch.amp import GradScaler\n'),
    # a conditional expression
    'import torch\nac = torch.amp.autocast if hasattr(torch, "amp") else torch.cuda.amp.autocast\n',
    # try/except ImportError
    'try:\n    from torch.amp import GradScaler\nexcept ImportError:\n    from torch.cuda.amp import GradScaler\n',
    'try:\n    from torch import autocast\nexcept (ImportError, AttributeError):\n    from torch.cuda.amp import autocast\n',
]


@pytest.mark.parametrize("source", SHIM_INVALID)
def test_dead_shims_fire(source):
    assert len(found(source, "AMP106")) == 1


SHIM_VALID = [
    # live on some torch >= 2.4
    'import torch\nif torch.__version__ >= "2.5":\n    from torch.amp import GradScaler\n',
    'import torch\nif torch.__version__ > "2.4":\n    from torch.amp import GradScaler\n',
    'import torch\nif torch.__version__ <= "2.4.0":\n    from torch.cuda.amp import GradScaler\n',
    # not a known version test
    'import torch\nif torch.version.__version__ >= "1.10":\n    a = torch.autocast\n',  # a plain str
    'import torch\nif float(torch.__version__[:3]) >= 1.6:\n    from torch.cuda.amp import autocast\n',
    'import torch\nif check_version(torch.__version__, "1.10.0"):\n    a = torch.autocast\n',
    'import torch\nif torch.__version__ >= "2.0.0a0":\n    a = torch.autocast\n',  # a pre-release literal
    'import torch\nif torch.__version__ == "1.10":\n    a = torch.autocast\n',
    'import torch\nif hasattr(torch.cuda.amp, "autocast"):\n    a = torch.cuda.amp.autocast\n',  # deprecated
    'import torch\nif hasattr(torch.amp, "is_autocast_available"):\n    pass\n',
    # decided only with the unknown part
    'import torch\nif torch.__version__ >= "1.10" and use_amp:\n    a = torch.autocast\n',
    'import torch\nif cuda_ok() and torch.__version__ < "1.6":\n    a = torch.cuda.amp.autocast\n',
    # a constant bound twice, or read before it is bound
    'import torch\nGE = torch.__version__ >= "1.10"\nGE = False\nif GE:\n    a = torch.autocast\n',
    'import torch\nif GE:\n    a = torch.autocast\nGE = torch.__version__ >= "1.10"\n',
    'import torch\nGE = torch.__version__ >= "1.10"\ndef f():\n    global GE\n    GE = False\nif GE:\n    a = torch.autocast\n',
    # not about AMP
    'import torch\nif torch.__version__ < "1.10":\n    g = torch.meshgrid(x, y)\nelse:\n    g = torch.meshgrid(x, y, indexing="ij")\n',
    # `torch` is not torch
    'import mylib as torch\nif torch.__version__ >= "1.10":\n    a = torch.autocast\n',
    # a try that can fail at the target
    'try:\n    from torch.amp import GradScaler\nexcept ImportError:\n    from torch.cuda.amp import GradScaler\n',
    'try:\n    from torch.amp import GradScaler\n    import apex\nexcept ImportError:\n    apex = None\n',
    'try:\n    from torch.cuda.amp import GradScaler\nexcept ImportError:\n    from torch.amp import GradScaler\n',
]


@pytest.mark.parametrize("source", SHIM_VALID)
def test_live_or_unknown_shims_stay_silent(source):
    target = (2, 2) if source.startswith("try:\n    from torch.amp import GradScaler\nexcept") else (2, 4)
    assert found(source, "AMP106", target_torch=target) == []


def test_the_target_decides():
    source = 'import torch\nif torch.__version__ >= "2.3":\n    from torch.amp import GradScaler\n'
    assert found(source, "AMP106", target_torch=(2, 2)) == []
    assert len(found(source, "AMP106", target_torch=(2, 3))) == 1
    # below 1.10 torch.__version__ was a str: not evaluated
    old = 'import torch\nif torch.__version__ >= "1.6":\n    from torch.cuda.amp import autocast\n'
    assert found(old, "AMP106", target_torch=(1, 9)) == []


@pytest.mark.parametrize(
    "before, after",
    [
        (  # the live `if` branch, de-indented with its comments and nested blocks
            """\
            import torch
            from packaging import version

            if version.parse(torch.__version__) >= version.parse("1.10"):  # header comment goes
                # new API
                ctx = torch.autocast("cuda")
                if ctx:
                    x = '''a
              multi-line string'''
                # trailing comment of the live block
            # about the fallback
            else:
                ctx = torch.cuda.amp.autocast()  # dead
            y = 1
            """,
            """\
            import torch

            # new API
            ctx = torch.autocast("cuda")
            if ctx:
                x = '''a
              multi-line string'''
            # trailing comment of the live block
            y = 1
            """,
        ),
        (  # the live `else` branch, in a function
            """\
            import torch


            def make():
                if torch.__version__ < "2.3":
                    return torch.cuda.amp.GradScaler()
                else:
                    # the modern scaler
                    return torch.amp.GradScaler("cuda")
            """,
            """\
            import torch


            def make():
                # the modern scaler
                return torch.amp.GradScaler("cuda")
            """,
        ),
        (  # a false test without else: removed; `pass` where it was alone
            """\
            import torch


            def f():
                if torch.__version__ < "1.6":
                    from torch.cuda.amp import autocast


            def g():
                x = 1
                if not hasattr(torch, "autocast"):
                    torch.cuda.amp.autocast()
                return x
            """,
            """\
            import torch


            def f():
                pass


            def g():
                x = 1
                return x
            """,
        ),
        (  # a false test before elif: the elif becomes the if
            """\
            import torch
            if torch.__version__ < "2.3":
                from torch.cuda.amp import GradScaler
            elif use_amp:
                from torch.amp import GradScaler
            else:
                GradScaler = None
            """,
            """\
            import torch
            if use_amp:
                from torch.amp import GradScaler
            else:
                GradScaler = None
            """,
        ),
        (  # a true test before elif: the if body stays, the chain goes
            """\
            import torch
            if torch.__version__ >= "2.3":
                from torch.amp import GradScaler
            elif use_amp:
                from torch.cuda.amp import GradScaler
            """,
            """\
            import torch
            from torch.amp import GradScaler
            """,
        ),
        (  # a one-line if
            'import torch\nif torch.__version__ >= "2.3": from torch.amp import GradScaler\n',
            'import torch\nfrom torch.amp import GradScaler\n',
        ),
        (  # a conditional expression, its branch's parentheses kept
            ('import functools, torch\n'
            'ac = (functools.partial(torch.amp.autocast, "cuda")) if hasattr(torch, "amp") else torch.cuda.amp.autocast\n'),
            'import functools, torch\nac = (functools.partial(torch.amp.autocast, "cuda"))\n',
        ),
        (  # try/except/else
            """\
            try:
                from torch.amp import GradScaler, autocast
            except ImportError:  # torch < 2.3
                from torch.cuda.amp import GradScaler, autocast
            else:
                HAS_NEW = True
            """,
            """\
            from torch.amp import GradScaler, autocast
            HAS_NEW = True
            """,
        ),
        (  # the helper imports only the test used are removed, the others kept
            """\
            import torch
            from accelerate.utils import is_torch_version
            from packaging import version
            import warnings

            if is_torch_version("<", "2.3"):
                warnings.warn("old torch")
                from torch.cuda.amp import GradScaler
            else:
                from torch.amp import GradScaler
            V = version.parse(torch.__version__)
            """,
            """\
            import torch
            from packaging import version
            import warnings

            from torch.amp import GradScaler
            V = version.parse(torch.__version__)
            """,
        ),
    ],
)
def test_shim_fixes(before, after):
    assert fixed(before, "AMP106") == textwrap.dedent(after)


def test_the_fix_is_idempotent_and_clean():
    source = textwrap.dedent(SHIM_INVALID[0])
    once = fixed(source, "AMP106")
    assert fixed(once, "AMP106") == once
    assert found(once, "AMP106") == [] and found(once, "AMP101") == []


def test_comments_under_the_last_live_statement_move_with_it():
    source = 'import torch\nfor i in r:\n\tif torch.__version__ < "2.3":\n\t    s = None\n\telse:\n' \
             '\t    from torch.amp import GradScaler\n\t    # trailing\nz = 0\n# end'
    assert fixed(source, "AMP106") == 'import torch\nfor i in r:\n\tfrom torch.amp import GradScaler\n\t# trailing\nz = 0\n# end'


def test_tab_indented_and_crlf_sources_keep_their_form():
    source = 'import torch\r\nif torch.__version__ >= "2.3":\r\n\tfrom torch.amp import GradScaler\r\n\tS = GradScaler\r\n'
    assert fixed(source, "AMP106") == 'import torch\r\nfrom torch.amp import GradScaler\r\nS = GradScaler\r\n'


def test_a_fallback_reported_by_amp102_is_gone_after_the_collapse():
    source = textwrap.dedent(SHIM_INVALID[10])
    assert [d.message for d in found(source, "AMP102", select=frozenset({"AMP102"}))][0].endswith("not fixed)")
    assert found(fixed(source, "AMP106"), "AMP102") == []


ACCELERATE_SHIM = """\
from .utils import is_torch_version, load

if is_torch_version(">=", "2.4.0"):
    from torch.amp import GradScaler
else:
    from torch.cuda.amp import GradScaler
"""


def test_a_librarys_own_helper_is_resolved_through_its_package(tmp_path):
    package = tmp_path / "accelerate"
    (package / "utils").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "utils" / "__init__.py").write_text("")
    path = str(package / "checkpointing.py")
    result = ampfix.fix_source(ACCELERATE_SHIM, path, Settings(select=frozenset({"AMP106"}), target_torch_declared=True))
    assert result.source == "from .utils import load\n\nfrom torch.amp import GradScaler\n"
    # the same text outside the package: `.utils` is not accelerate's
    assert found(ACCELERATE_SHIM, "AMP106") == []


def test_an_init_module_keeps_its_imports(tmp_path):
    source = 'import torch\nfrom packaging import version\nif version.parse(torch.__version__) >= version.parse("2.3"):\n' \
             '    from torch.amp import GradScaler\n'
    result = ampfix.fix_source(source, str(tmp_path / "__init__.py"), Settings(select=frozenset({"AMP106"}), target_torch_declared=True))
    assert result.source == "import torch\nfrom packaging import version\nfrom torch.amp import GradScaler\n"

@pytest.mark.parametrize("source", SHIM_INVALID + SHIM_VALID)
def test_the_prefilter_never_hides_a_shim(source):
    source = textwrap.dedent(source)
    settings = Settings(select=frozenset({"AMP106"}), target_torch_declared=True)
    with_prefilter = [(d.code, d.start) for d in ampfix.check_source(source, "t.py", settings)]
    without = [(d.code, d.start) for d in ampfix.check_source(source, "t.py", settings, prefilter=False)]
    assert with_prefilter == without


# -- AMP107: private AMP API ---------------------------------------------------------------------

SCALER = 'import torch\nscaler = torch.amp.GradScaler("cuda")\n'

PRIVATE_INVALID = [
    "from torch.cuda.amp.grad_scaler import OptState\nstage = OptState.READY\n",
    "import torch\nstage = torch.cuda.amp.grad_scaler.OptState.UNSCALED\n",
    "import torch\ny = torch.cuda.amp.autocast_mode._cast(x, torch.float16)\n",
    "from torch.cuda.amp.autocast_mode import _cast\ny = _cast(x, dtype)\n",
    "import torch\ny = torch.amp.autocast_mode._cast(x, 'cuda', dtype)\n",
    "import torch\nr = torch.cuda.amp.grad_scaler._MultiDeviceReplicator(t)\n",
    "from torch.amp.grad_scaler import _refresh_per_optimizer_state\ns = _refresh_per_optimizer_state()\n",
    "import torch\nm = torch.amp._enter_autocast('cuda', None, True, None)\n",
    SCALER + "on = scaler._enabled\n",
    SCALER + "scaler._growth_interval = 100\n",
    SCALER + "print(scaler._scale.item())\n",
    SCALER + "t = scaler._growth_tracker\n",
    SCALER + "skipped = sum(v.item() for v in scaler._found_inf_per_device(opt).values())\n",
    SCALER + "scaler._unscale_grads_(opt, inv, found, True)\n",
    "def step(self):\n    return self.grad_scaler._per_optimizer_states\n",  # a name ending in `scaler`
    "def step(s, opt):\n    s.unscale_(opt)\n    return s._scale\n",  # a receiver of unscale_
]


@pytest.mark.parametrize("source", PRIVATE_INVALID)
def test_private_amp_api_fires(source):
    assert len(found(source, "AMP107")) == 1


PRIVATE_VALID = [
    # public names
    "import torch\nstage = torch.amp.grad_scaler.OptState.READY\n",
    "import torch\nok = torch.cuda.amp.common.amp_definitely_not_available()\n",
    "from torch.cuda.amp import amp_definitely_not_available\nok = amp_definitely_not_available()\n",
    SCALER + "s = scaler.get_scale()\nscaler.set_growth_factor(2.0)\n",
    # not a GradScaler
    "class Model:\n    def forward(self):\n        return self._scale * self._enabled\n",
    "def f(layer):\n    return layer._scale\n",
    "import torch\nclass MyScaler(torch.amp.GradScaler):\n    def bump(self):\n        self._scale *= 2\n",
    # not torch
    "import mylib as torch\ny = torch.cuda.amp.autocast_mode._cast(x, dtype)\n",
    "from mylib.grad_scaler import OptState\ns = OptState.READY\n",
]


@pytest.mark.parametrize("source", PRIVATE_VALID)
def test_public_or_unrelated_names_stay_silent(source):
    assert found(source, "AMP107") == []


@pytest.mark.parametrize(
    "before, after",
    [
        ("from torch.cuda.amp.grad_scaler import OptState\nstage = OptState.READY\n",
         "import torch\nstage = torch.amp.grad_scaler.OptState.READY\n"),
        ("import torch\nstage = torch.cuda.amp.grad_scaler.OptState\n",
         "import torch\nstage = torch.amp.grad_scaler.OptState\n"),
        ("import torch\ny = torch.cuda.amp.autocast_mode._cast(x, torch.float16)\n",
         'import torch\ny = torch.amp.autocast_mode._cast(x, "cuda", torch.float16)\n'),
        ("import torch\nfrom torch.cuda.amp.autocast_mode import _cast\ny = _cast(x, 'x' and dtype)\n",
         "import torch\ny = torch.amp.autocast_mode._cast(x, 'cuda', 'x' and dtype)\n"),
        (SCALER + "on = scaler._enabled\n", SCALER + "on = scaler.is_enabled()\n"),
        (SCALER + "f = (scaler\n     ._backoff_factor)\n", SCALER + "f = (scaler\n     .get_backoff_factor())\n"),
        (SCALER + "scaler._growth_factor = 2.0  # faster\n", SCALER + "scaler.set_growth_factor(2.0)  # faster\n"),
        (('import torch\nclass T:\n    def __init__(self):\n        self.scaler = torch.amp.GradScaler("cuda")\n'
         "    def on(self):\n        return self.scaler._enabled\n"),
         ('import torch\nclass T:\n    def __init__(self):\n        self.scaler = torch.amp.GradScaler("cuda")\n'
         "    def on(self):\n        return self.scaler.is_enabled()\n")),
    ],
)
def test_private_api_fixes(before, after):
    assert fixed(before, "AMP107") == after


@pytest.mark.parametrize(
    "source",
    [
        SCALER + "scaler._scale = torch.tensor(8.0)\n",  # no public equivalent
        SCALER + "scaler._growth_interval += 1\n",  # an augmented assignment
        SCALER + "scaler._growth_factor = 2.0, 3.0\n",  # a tuple
        "def f(scaler):\n    return scaler._enabled\n",  # a scaler by name only
        'import torch\nscaler = torch.amp.GradScaler("cuda")\nif x:\n    scaler = make()\non = scaler._enabled\n',
    ],
)
def test_private_api_reported_without_a_fix(source):
    [diag] = found(source, "AMP107")
    assert diag.fix is None


def test_the_target_gates_the_name_fixes():
    source = "import torch\ny = torch.cuda.amp.autocast_mode._cast(x, torch.float16)\n"
    [diag] = found(source, "AMP107", target_torch=(2, 3))
    assert diag.fix is None and "torch >= 2.4" in diag.no_fix_reason
    [diag] = found("import torch\ns = torch.cuda.amp.grad_scaler.OptState\n", "AMP107", target_torch=(2, 2))
    assert diag.fix is None


def test_a_fallback_is_reported_and_not_fixed():
    source = (
        "try:\n    from torch.amp.grad_scaler import OptState\nexcept ImportError:\n"
        "    OptState = None\nimport torch\nif hasattr(torch, 'amp'):\n    s = torch.amp.GradScaler('cuda')\n"
        "else:\n    s = torch.cuda.amp.grad_scaler.OptState\n"
    )
    [diag] = found(source, "AMP107")
    assert diag.fix is None


@pytest.mark.parametrize("source", PRIVATE_INVALID + PRIVATE_VALID)
def test_the_prefilter_never_hides_a_private_use(source):
    settings = Settings(select=frozenset({"AMP107"}))
    with_prefilter = [(d.code, d.start) for d in ampfix.check_source(source, "t.py", settings)]
    without = [(d.code, d.start) for d in ampfix.check_source(source, "t.py", settings, prefilter=False)]
    assert with_prefilter == without


def test_amp106_needs_a_declared_target(tmp_path):
    # ampfix's default floor (2.4) is a guess: a shim is dead only for a floor the user or the
    # project declared (--target-torch, `target-torch`, the project's torch requirement)
    source = 'import torch\nif torch.__version__ >= "2.3":\n    s = torch.amp.GradScaler("cuda")\n'
    assert found(source, "AMP106", target_torch_declared=False) == []
    assert len(found(source, "AMP106")) == 1
    (tmp_path / "t.py").write_text(source)
    plain = run_ampfix("check", "--no-cache", "--preview", "--select", "AMP106", "t.py", cwd=tmp_path)
    declared = run_ampfix("check", "--no-cache", "--preview", "--select", "AMP106", "--target-torch", "2.4", "t.py", cwd=tmp_path)
    assert "AMP106" not in plain.stdout and "AMP106" in declared.stdout
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["torch>=2.4"]\n')
    from_project = run_ampfix("check", "--no-cache", "--preview", "--select", "AMP106", "t.py", cwd=tmp_path)
    assert "AMP106" in from_project.stdout
