"""ampfix: find and fix PyTorch mixed-precision (AMP) mistakes.

The public Python API is small; the CLI is a thin layer over it::

    import ampfix
    diagnostics = ampfix.check_source(source, path="train.py")
    result = ampfix.fix_source(source, path="train.py", unsafe_fixes=True)
    result.source, result.fixed, result.remaining
"""

__version__ = "0.2.0"

from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix  # noqa: E402
from ampfix.engine import FixResult, check_source, fix_source  # noqa: E402
from ampfix.settings import Settings  # noqa: E402

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
