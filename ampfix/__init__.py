"""ampfix: find and fix PyTorch mixed-precision (AMP) mistakes.

The public Python API is small; the CLI is a thin layer over it::

    import ampfix
    diagnostics = ampfix.check_source(source, path="train.py")
    result = ampfix.fix_source(source, path="train.py", unsafe_fixes=True)
    result.source, result.fixed, result.remaining
"""

__version__ = "0.2.0"

# The API is imported on first use (PEP 562): `python -m ampfix` and the console script import
# this package first, and a run on files that the prefilter rejects needs little of it.
_API = {
    "Applicability": "ampfix.diagnostics",
    "Diagnostic": "ampfix.diagnostics",
    "Edit": "ampfix.diagnostics",
    "Fix": "ampfix.diagnostics",
    "FixResult": "ampfix.engine",
    "check_source": "ampfix.engine",
    "fix_source": "ampfix.engine",
    "Settings": "ampfix.settings",
}


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ampfix' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])

__all__ = [
    "Applicability",
    "Diagnostic",
    "Edit",
    "Fix",
    "FixResult",
    "Settings",
    "__version__",
    "check_source",
    "fix_source",
]
