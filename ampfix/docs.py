"""Rule documents: ``rules/<CODE>.md`` in a checkout, ``ampfix/_rule_docs`` in a wheel."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_CANDIDATES = (
    os.path.join(_PACKAGE_DIR, "_rule_docs"),  # installed wheel (force-included)
    os.path.join(os.path.dirname(_PACKAGE_DIR), "rules"),  # source checkout / editable install
)


def docs_dir() -> Optional[str]:
    for candidate in _CANDIDATES:
        if os.path.isdir(candidate):
            return candidate
    return None


def _doc_path(code: str) -> Optional[str]:
    directory = docs_dir()
    return os.path.join(directory, f"{code.upper()}.md") if directory is not None else None


@lru_cache(maxsize=None)
def rule_doc(code: str) -> Optional[str]:
    path = _doc_path(code)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


@lru_cache(maxsize=None)
def rule_doc_url(code: str) -> Optional[str]:
    """Where the rule's document is, as a URL (the installed file: no network needed)."""
    path = _doc_path(code)
    if path is None or not os.path.isfile(path):
        return None
    from pathlib import Path  # only where a document's link is shown

    return Path(path).as_uri()
