"""Writes the rule catalog's table (ampfix/rules/catalog.py) from the rule classes:
``python -m ampfix.rules.write_catalog`` after adding a rule module or changing a rule's triggers,
tier or opportunity. Not imported by the checker."""

from __future__ import annotations

import os

_RULES_DIR = os.path.dirname(os.path.abspath(__file__))
CATALOG_PATH = os.path.join(_RULES_DIR, "catalog.py")
_BEGIN = "    # BEGIN GENERATED (python -m ampfix.rules.write_catalog)\n"
_END = "    # END GENERATED\n"


def generated_rows() -> str:
    """The table's rows, from the rule classes of every ``ampfix/rules/amp*.py`` module."""
    import importlib
    import pkgutil

    from ampfix.rules.base import Rule

    found: dict[str, tuple[str, type]] = {}
    for info in pkgutil.iter_modules([_RULES_DIR]):
        if not info.name.startswith("amp"):
            continue
        module = importlib.import_module(f"ampfix.rules.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Rule)
                and value.__module__ == module.__name__
                and "code" in vars(value)
            ):
                found[value.code] = (info.name, value)
    rows = []
    for code in sorted(found):
        name, cls = found[code]
        fields = (name, cls.__name__, tuple(cls.triggers), cls.stability, cls.opportunity)
        rows.append(f"    {code!r}: Entry{fields!r},\n".replace("'", '"'))
    return "".join(rows)


def regenerate(path: str) -> bool:
    """Rewrite the generated table in ``path``; True when it changed."""
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    head, rest = text.split(_BEGIN, 1)
    _, tail = rest.split(_END, 1)
    new = head + _BEGIN + generated_rows() + _END + tail
    if new == text:
        return False
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(new)
    return True


if __name__ == "__main__":
    print("updated" if regenerate(CATALOG_PATH) else "up to date")
