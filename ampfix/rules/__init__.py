"""The rule registry: every rule, in code order, imported when first asked for.

The rules are listed in ``ampfix/rules/catalog.py`` (generated from their classes: add a rule by
adding its module ``ampfix/rules/ampNNN_*.py`` and running ``python -m ampfix.rules.write_catalog``).
Codes, tiers and the prefilter's first stage come from the catalog; a rule's module is imported
only when the rule itself is needed, so a check of files that name no AMP API imports none.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Iterator, Mapping

from ampfix.prefilter import FileBytes, Prefilter
from ampfix.rules.catalog import CATALOG

if TYPE_CHECKING:
    from ampfix.rules.base import Rule

ENGINE_CODES = frozenset({"AMP001", "AMP002"})


class _Registry(Mapping[str, "Rule"]):
    """Code -> rule instance, in code order; iterating codes or testing one imports nothing."""

    def __init__(self) -> None:
        self._loaded: dict[str, Rule] = {}
        self._lock = threading.Lock()  # the editor server asks from its analysis thread too

    def __getitem__(self, code: str) -> "Rule":
        rule = self._loaded.get(code)
        if rule is None:
            entry = CATALOG[code]
            with self._lock:
                rule = self._loaded.get(code)
                if rule is None:
                    module = importlib.import_module(f"ampfix.rules.{entry.module}")
                    rule = self._loaded[code] = getattr(module, entry.cls)()
        return rule

    def __contains__(self, code: object) -> bool:
        return code in CATALOG

    def __iter__(self) -> Iterator[str]:
        return iter(CATALOG)

    def __len__(self) -> int:
        return len(CATALOG)


RULES = _Registry()


def get_rule(code: str) -> "Rule | None":
    return RULES.get(code.upper())


class _CatalogRule:
    """A rule as the prefilter sees it: its triggers from the catalog, its own condition
    (``Rule.may_fire``, the second stage) imported only for a file one of its triggers is in."""

    __slots__ = ("code", "triggers")

    def __init__(self, code: str):
        self.code = code
        self.triggers = CATALOG[code].triggers

    def may_fire(self, file: FileBytes) -> bool:
        return RULES[self.code].may_fire(file)


_PREFILTERS: dict[frozenset, Prefilter] = {}


def prefilter_for(codes: frozenset) -> Prefilter:
    """The prefilter of these selected rules (built once per selection)."""
    found = _PREFILTERS.get(codes)
    if found is None:
        found = _PREFILTERS[codes] = Prefilter([_CatalogRule(code) for code in sorted(codes)])
    return found
