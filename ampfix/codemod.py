"""ampfix's fixes as a LibCST codemod command, for codebases that run their rewrites through
LibCST's tool:

    python -m libcst.tool codemod --no-format -x ampfix.codemod.AmpfixFix src/
    python -m libcst.tool codemod --no-format -x ampfix.codemod.AmpfixFix --unsafe-fixes src/

Each file gets exactly what ``ampfix check --apply`` would write (its nearest ampfix
configuration, the same fixes to a fixed point, the same refusals); a file that a fix would
break is skipped with the reason, as LibCST reports skips.
"""

from __future__ import annotations

import argparse
from typing import Optional

import libcst as cst
from libcst.codemod import CodemodCommand, CodemodContext, SkipFile

from ampfix.engine import FixError, fix_source
from ampfix.settings import CliOverrides, ConfigError, build_settings, find_config, validate_selectors


def _codes(value: Optional[str]) -> list[str]:
    return [code.strip() for code in value.split(",") if code.strip()] if value else []


class AmpfixFix(CodemodCommand):
    DESCRIPTION = "Apply ampfix's fixes (the safe ones; all with --unsafe-fixes) with each file's ampfix configuration."

    @staticmethod
    def add_args(arg_parser: argparse.ArgumentParser) -> None:
        arg_parser.add_argument("--unsafe-fixes", dest="unsafe_fixes", action="store_true",
                                help="Apply the fixes that change training too (ruff's unsafe fixes).")
        arg_parser.add_argument("--select", dest="select", default=None, help="Comma-separated rule codes or prefixes.")
        arg_parser.add_argument("--ignore", dest="ignore", default=None, help="Comma-separated rule codes or prefixes.")
        arg_parser.add_argument("--preview", dest="preview", action="store_true", help="Enable preview rules.")

    def __init__(self, context: CodemodContext, unsafe_fixes: bool = False, select: Optional[str] = None,
                 ignore: Optional[str] = None, preview: bool = False) -> None:
        super().__init__(context)
        self.unsafe_fixes = unsafe_fixes
        selected = _codes(select)
        self.overrides = CliOverrides(
            select=validate_selectors(selected, "--select") if selected else None,
            ignore=validate_selectors(_codes(ignore), "--ignore"),
            preview=preview or None,
        )

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        path = self.context.filename or "<stdin>"
        try:
            settings = build_settings(find_config(path if path != "<stdin>" else "."), self.overrides)
        except ConfigError as exc:
            raise SkipFile(f"ampfix: {exc}") from None
        if not settings.enabled(path):
            raise SkipFile("no ampfix rule is selected for this file (per-file-ignores)")
        try:
            result = fix_source(tree.code, path, settings, unsafe_fixes=self.unsafe_fixes)
        except FixError as exc:
            raise SkipFile(f"ampfix: {exc}") from None
        if not result.changed:
            return tree
        for diag in result.fixed:
            self.warn(f"fixed {diag.code}: {diag.fix.message if diag.fix else diag.message}")
        return cst.parse_module(result.source).with_changes(encoding=tree.encoding)
