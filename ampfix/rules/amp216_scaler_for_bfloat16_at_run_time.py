"""AMP216: a GradScaler left on when the run chooses bfloat16 autocast."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from ampfix.context import ModuleContext
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix
from ampfix.rules._loop import at
from ampfix.rules.base import FIX_SOMETIMES, Rule
from ampfix.training.config import (
    flag_formula,
    float16_condition,
    negated,
    region_dtypes,
    region_flag,
    regions_of_scaler,
    same_value_at,
    satisfiable,
    scaler_always_off,
    scaler_flag,
)

class ScalerForBfloat16AtRunTime(Rule):
    code = "AMP216"
    name = "scaler-for-bfloat16-at-run-time"
    summary = "`GradScaler` enabled whatever the autocast dtype that the run chooses (bfloat16 or float16)"
    triggers = (b"GradScaler",)
    requires = (b"bfloat16", b"autocast")
    fix_safety = FIX_SOMETIMES

    def check(self, ctx: ModuleContext) -> Iterator[Diagnostic]:
        model = ctx.training
        for create in model.creations:
            if scaler_always_off(create):
                continue
            regions = regions_of_scaler(model, create)
            choices = [region_dtypes(model, r) for r in regions or []]
            if not choices or any(c is None or not c.chosen_at_run_time for c in choices):
                continue  # a step whose precision is fixed (AMP207 for bfloat16) or unknown
            tests = {ast.dump(c.choice.test) if c.choice is not None else None for c in choices}
            choice = choices[0] if len(tests) == 1 else None
            enabled = scaler_flag(model, create)
            if enabled is not None and not self._on_in_every_bfloat16_run(model, regions, enabled):
                continue  # the scaler follows the choice (or may)
            if choice is not None and choice.choice is not None:
                test = ctx.segment(choice.choice.test)
                float16_when = test if choice.float16_in_body else f"not {_grouped(ctx, choice.choice.test)}"
                chooser = f", which `{test}` chooses at run time"
                remedy = f" (`enabled={float16_when}`)"
                where = [(choice.choice, "bfloat16 or float16, chosen here")]
            else:
                float16_when, chooser, remedy, where = None, " (bfloat16 or float16, chosen at run time)", "", []
            message = (
                f"`GradScaler` enabled whatever the autocast dtype{chooser}: with bfloat16 loss scaling changes "
                f"nothing and only costs time; enable the scaler for float16 only{remedy}"
            )
            evidence = [at(regions[0].entry, "autocast region in the chosen dtype"), *where]
            fix = None
            if enabled is None and float16_when is not None:
                fix = self._fix(ctx, create, choice.choice, float16_when)
            yield ctx.diagnostic(self, create.call, message, fix, evidence)

    @staticmethod
    def _on_in_every_bfloat16_run(model, regions: list, enabled: ast.expr) -> bool:
        """Whether no configuration runs a region in bfloat16 with the scaler off (``enabled=args.amp``
        beside ``dtype = torch.bfloat16 if args.bf16 else ...``), while some runs one in bfloat16."""
        scaler_off = negated(flag_formula(model, enabled))
        for region in regions:
            flag = region_flag(model, region)
            region_on = flag_formula(model, flag) if flag is not None else ("const", True)
            in_bfloat16 = negated(float16_condition(model, region))
            if satisfiable(region_on, in_bfloat16) is not True:
                return False
            if satisfiable(region_on, in_bfloat16, scaler_off) is not False:
                return False
        return True

    @staticmethod
    def _fix(ctx: ModuleContext, create, choice: ast.IfExp, float16_when: str) -> Optional[Fix]:
        call = create.call
        if len(call.args) >= 5 or any(k.arg is None or k.arg == "enabled" for k in call.keywords):
            return None
        if not same_value_at(ctx.training, choice.test, choice, call):
            return None  # the test's names hold other values (or none) where the scaler is created
        keyword = f"enabled={float16_when}"
        if call.args or call.keywords:
            last = max([*call.args, *call.keywords], key=lambda n: (n.end_lineno, n.end_col_offset))
            edit = Edit.insert(ctx.locator.node_range(last)[1], f", {keyword}")
        else:
            edit = Edit.insert(ctx.locator.node_range(call)[1] - 1, keyword)
        return Fix(f"Enable the scaler for float16 only (`{keyword}`)", (edit,), Applicability.UNSAFE)


def _grouped(ctx: ModuleContext, test: ast.expr) -> str:
    text = ctx.segment(test)
    return text if isinstance(test, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)) else f"({text})"
