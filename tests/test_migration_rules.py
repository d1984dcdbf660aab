"""AMP101-AMP105: every spelling of the deprecated APIs, the rewrite traps, compat code."""

import pytest

from conftest import codes, fixed


# -- every spelling is found -------------------------------------------------------------------

@pytest.mark.parametrize(
    "source",
    [
        "import torch\nwith torch.cuda.amp.autocast():\n    pass\n",
        "import torch as t\nwith t.cuda.amp.autocast():\n    pass\n",
        "import torch.cuda.amp as A\nwith A.autocast():\n    pass\n",
        "from torch.cuda import amp\nwith amp.autocast():\n    pass\n",
        "from torch import cuda\nwith cuda.amp.autocast():\n    pass\n",
        "from torch.cuda.amp import autocast as ac\nwith ac():\n    pass\n",
        "from torch.cuda.amp.autocast_mode import autocast\nwith autocast():\n    pass\n",
        "import torch\n@torch.cuda.amp.autocast()\ndef f():\n    pass\n",
        "import torch\nwith torch.no_grad(), torch.cuda.amp.autocast():\n    pass\n",
        "import functools, torch\nctx = functools.partial(torch.cuda.amp.autocast, enabled=True)\n",
        "from functools import partial\nfrom torch.cuda.amp import autocast\nctx = partial(autocast, enabled=True)\n",
        "import torch\nac = torch.cuda.amp.autocast\n",
        "import torch\nwith torch.cpu.amp.autocast():\n    pass\n",
    ],
)
def test_deprecated_autocast_spellings_fire(source):
    assert codes(source) == ["AMP101"]


def test_a_simple_rebinding_is_reported_once_at_its_right_hand_side():
    source = "import torch\nac = torch.cuda.amp.autocast\nwith ac():\n    pass\n"
    assert codes(source) == ["AMP101"]


@pytest.mark.parametrize(
    "source",
    [
        # shadowed by a parameter, an assignment, a local def
        "from torch.cuda.amp import autocast\ndef f(autocast):\n    with autocast():\n        pass\n",
        "from torch.cuda.amp import autocast\ndef f():\n    autocast = make()\n    with autocast():\n        pass\n",
        "from torch.cuda import amp\ndef amp_ctx():\n    amp = object()\n    return amp.autocast()\n",
        # not torch at all
        "import mylib as torch\nwith torch.cuda.amp.autocast():\n    pass\n",
        "from mylib.cuda.amp import autocast\nwith autocast():\n    pass\n",
        "from .amp_utils import autocast\nwith autocast():\n    pass\n",
        # the modern API
        "import torch\nwith torch.autocast('cuda'):\n    pass\n",
        "import torch\ns = torch.amp.GradScaler('cuda')\n",
        # an import that is never used is not a use (LAVIS hard case)
        "from torch.cuda.amp import autocast as autocast\n",
        # torch.is_autocast_enabled() without a device is current API (it means CUDA)
        "import torch\nx = torch.is_autocast_enabled()\n",
    ],
)
def test_silent(source):
    assert codes(source) == []


def test_all_deprecated_symbols_have_a_code():
    source = """\
    import torch
    torch.cuda.amp.GradScaler()
    torch.cpu.amp.GradScaler()
    torch.cuda.amp.custom_fwd
    torch.cuda.amp.custom_bwd
    torch.is_autocast_cpu_enabled()
    torch.set_autocast_cpu_enabled(True)
    torch.get_autocast_cpu_dtype()
    torch.get_autocast_gpu_dtype()
    torch.set_autocast_gpu_dtype(torch.float16)
    torch.is_autocast_xla_enabled()
    torch.get_autocast_ipu_dtype()
    """
    assert codes(source) == ["AMP102", "AMP102", "AMP103", "AMP103"] + ["AMP104"] * 7


# -- rewrites ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "before, after",
    [
        ("torch.cuda.amp.autocast()", 'torch.autocast("cuda")'),
        ("torch.cuda.amp.autocast(False)", 'torch.autocast("cuda", enabled=False)'),
        ("torch.cpu.amp.autocast(True, torch.float16)", 'torch.autocast("cpu", enabled=True, dtype=torch.float16)'),
        ("torch.cuda.amp.autocast(enabled=use_amp)", 'torch.autocast("cuda", enabled=use_amp)'),
        ("torch.cuda.amp.autocast(dtype=torch.bfloat16, cache_enabled=False)",
         'torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)'),
        ("torch.cuda.amp.autocast(**kw)", 'torch.autocast("cuda", **kw)'),
        ("torch.cuda.amp.GradScaler(1024.0)", 'torch.amp.GradScaler("cuda", init_scale=1024.0)'),
        ("torch.cuda.amp.GradScaler(2.0**16, 2.0, 0.5, 100, False)",
         'torch.amp.GradScaler("cuda", init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, '
         'growth_interval=100, enabled=False)'),
        ("torch.cpu.amp.GradScaler()", 'torch.amp.GradScaler("cpu")'),
        ("torch.cuda.amp.GradScaler(**loss_scale)", 'torch.amp.GradScaler("cuda", **loss_scale)'),
        ("torch.get_autocast_gpu_dtype()", 'torch.get_autocast_dtype("cuda")'),
        ("torch.set_autocast_cpu_dtype(torch.bfloat16)", 'torch.set_autocast_dtype("cpu", torch.bfloat16)'),
        ("torch.set_autocast_cpu_enabled(flag)", 'torch.set_autocast_enabled("cpu", flag)'),
        ("torch.cuda.amp.custom_fwd(fn)", 'torch.amp.custom_fwd(fn, device_type="cuda")'),
        ("torch.cuda.amp.custom_fwd(fn, cast_inputs=torch.float32)",
         'torch.amp.custom_fwd(fn, device_type="cuda", cast_inputs=torch.float32)'),
    ],
)
def test_call_rewrites(before, after):
    assert fixed(f"import torch\nx = {before}\n") == f"import torch\nx = {after}\n"


def test_multiline_call_keeps_comments_and_layout():
    source = """\
    import torch

    scaler = torch.cuda.amp.GradScaler(  # the scale
        2.0**10,  # initial
        growth_interval=10,
    )
    """
    assert fixed(source) == (
        "import torch\n\n"
        "scaler = torch.amp.GradScaler(  # the scale\n"
        '    "cuda", init_scale=2.0**10,  # initial\n'
        "    growth_interval=10,\n"
        ")\n"
    )


def test_bare_decorators_become_calls():
    source = "import torch\n@torch.cuda.amp.custom_fwd\ndef f(ctx, x):\n    return x\n"
    assert fixed(source) == 'import torch\n@torch.amp.custom_fwd(device_type="cuda")\ndef f(ctx, x):\n    return x\n'


def test_partial_gets_device_after_the_callee():
    source = "import functools, torch\nc = functools.partial(torch.cuda.amp.autocast)\n"
    assert fixed(source) == 'import functools, torch\nc = functools.partial(torch.autocast, "cuda")\n'


def test_file_quote_style_is_kept():
    source = "import torch\nname = 'x'\nwith torch.cuda.amp.autocast():\n    pass\n"
    assert "torch.autocast('cuda')" in fixed(source)


def test_torch_alias_is_reused():
    source = "import torch as t\nfrom torch.cuda.amp import GradScaler\ns = GradScaler()\n"
    assert fixed(source) == 'import torch as t\ns = t.amp.GradScaler("cuda")\n'


def test_import_torch_is_added_after_leading_imports_and_docstring():
    source = '"""Doc."""\nimport os\nfrom torch.cuda.amp import autocast\n\nwith autocast():\n    pass\n'
    assert fixed(source) == '"""Doc."""\nimport os\nimport torch\n\nwith torch.autocast("cuda"):\n    pass\n'


def test_unused_import_is_removed_but_used_names_stay():
    source = """\
    import torch
    from torch.cuda.amp import autocast, GradScaler  # amp
    with autocast():
        pass
    keep = GradScaler
    """
    assert fixed(source) == (
        "import torch\nfrom torch.cuda.amp import GradScaler  # amp\n"
        'with torch.autocast("cuda"):\n    pass\nkeep = GradScaler\n'
    )


def test_parenthesised_import_keeps_its_layout():
    source = """\
    import torch
    from torch.cuda.amp import (
        autocast,  # context
        custom_fwd,
    )
    with autocast():
        pass
    keep = custom_fwd
    """
    assert fixed(source) == (
        "import torch\nfrom torch.cuda.amp import (\n    custom_fwd,\n)\n"
        'with torch.autocast("cuda"):\n    pass\nkeep = custom_fwd\n'
    )


def test_import_inside_a_function_is_tidied_too():
    source = """\
    import torch
    def run_step(self):
        from torch.cuda.amp import autocast
        with autocast(dtype=self.precision):
            pass
    """
    assert fixed(source) == (
        "import torch\ndef run_step(self):\n    pass\n".replace("    pass\n", "")
        + '    with torch.autocast("cuda", dtype=self.precision):\n        pass\n'
    )


def test_only_statement_of_a_block_becomes_pass():
    source = """\
    import torch
    try:
        from torch.cuda.amp import autocast
    except ImportError:
        pass
    with autocast():
        pass
    """
    assert fixed(source).startswith("import torch\ntry:\n    pass\nexcept ImportError:\n")


def test_fix_is_idempotent_and_reaches_a_fixed_point():
    source = "from torch.cuda.amp import autocast, GradScaler\ns = GradScaler()\nwith autocast():\n    pass\n"
    once = fixed(source)
    assert fixed(once) == once
    assert codes(once) == []


# -- version floors --------------------------------------------------------------------------

def test_below_the_floor_is_reported_with_a_note_and_not_fixed():
    import ampfix
    from ampfix.settings import Settings

    source = "import torch\ns = torch.cuda.amp.GradScaler()\n"
    diag, = ampfix.check_source(source, "t.py", Settings(target_torch=(2, 1)))
    assert diag.fix is None
    assert "needs torch >= 2.3, target is 2.1" in diag.message
    assert fixed(source, target_torch=(2, 1)) == source
    # autocast's floor (1.10) is met
    assert fixed("import torch\nwith torch.cuda.amp.autocast():\n    pass\n", target_torch=(2, 1)) != ""
    assert ampfix.check_source(source, "t.py", Settings(target_torch=(2, 3)))[0].fix is not None


def test_custom_fwd_needs_torch_2_4():
    source = "import torch\n@torch.cuda.amp.custom_fwd\ndef f(c, x):\n    return x\n"
    assert fixed(source, target_torch=(2, 3)) == source


# -- compatibility code ------------------------------------------------------------------------

def test_fallback_in_except_is_reported_but_not_fixed():
    source = """\
    import torch
    def scaler(device):
        try:
            return torch.amp.GradScaler(device=device)
        except (AttributeError, TypeError):
            return torch.cuda.amp.GradScaler()
    """
    import ampfix

    diag, = ampfix.check_source(__import__("textwrap").dedent(source), "t.py")
    assert diag.code == "AMP102" and diag.fix is None
    assert "compatibility fallback" in diag.message


def test_old_api_tried_first_in_a_probe_is_not_reported():
    source = "import torch\ntry:\n    s = torch.cuda.amp.GradScaler()\nexcept AttributeError:\n    s = torch.amp.GradScaler('cuda')\n"
    assert codes(source) == []


@pytest.mark.parametrize(
    "source",
    [
        "import torch\nif not hasattr(torch.amp, 'GradScaler'):\n    s = torch.cuda.amp.GradScaler()\nelse:\n    s = torch.amp.GradScaler('cuda')\n",
        "import torch\nif TORCH_VERSION < (2, 3):\n    s = torch.cuda.amp.GradScaler()\nelse:\n    s = torch.GradScaler('cuda')\n",
        "import torch\nif hasattr(torch, 'get_autocast_dtype'):\n    d = torch.get_autocast_dtype('cpu')\nelse:\n    d = torch.get_autocast_cpu_dtype()\n",
    ],
)
def test_old_api_in_the_branch_for_old_torch_is_a_fallback(source):
    import ampfix

    diag, = [d for d in ampfix.check_source(source, "t.py") if d.code != "AMP106"]  # a dead shim at 2.4
    assert diag.fix is None and "compatibility fallback" in diag.message


def test_version_check_without_modern_alternative_is_ordinary_code():
    source = """\
    from torch.cuda.amp import autocast
    if digit_version(TORCH_VERSION) >= digit_version('1.6.0'):
        with autocast(enabled=True):
            pass
    else:
        pass
    """
    assert codes(source) == ["AMP101"]


# -- apex ------------------------------------------------------------------------------------

def test_apex_uses_are_reported_with_guidance_and_an_unsafe_migration():
    source = """\
    import torch
    try:
        from apex import amp
    except ImportError:
        amp = None
    model, optimizer = amp.initialize(model, optimizer, opt_level="O1")
    for x in loader:
        loss = model(x).sum()
        with amp.scale_loss(loss, optimizer) as scaled_loss:
            scaled_loss.backward()
        optimizer.step()
    """
    import ampfix

    diags = ampfix.check_source(__import__("textwrap").dedent(source), "t.py")
    assert [d.code for d in diags] == ["AMP105", "AMP105"]
    assert "scaler.scale(loss).backward()" in diags[1].message
    assert all(d.fix is not None and d.fix.applicability.value == "unsafe" for d in diags)
    assert fixed(source) == __import__("textwrap").dedent(source)  # unsafe only
    assert fixed(source, unsafe=True) == (
        'import torch\ntry:\n    pass\nexcept ImportError:\n    amp = None\n'
        'scaler = torch.amp.GradScaler("cuda")\nfor x in loader:\n'
        '    with torch.autocast(device_type="cuda", dtype=torch.float16):\n        loss = model(x).sum()\n'
        '    scaler.scale(loss).backward()\n    scaler.step(optimizer)\n    scaler.update()\n'
    )


@pytest.mark.parametrize("level", ["O0", "O3"])
def test_apex_levels_without_a_native_equivalent_are_report_only(level):
    import ampfix

    source = f"from apex import amp\nmodel, opt = amp.initialize(model, opt, opt_level={level!r})\n"
    diag, = ampfix.check_source(source, "t.py")
    assert diag.fix is None and f"opt_level '{level}' has no direct native equivalent" in diag.message
