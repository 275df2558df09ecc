"""`snl`: Selective Network Linearization at one ReLU budget per point (pixel- or
channel-wise masks, then fine-tuning); one run per budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepreshape.methods.base import ExpandContext, Method, recipe_values
from deepreshape.rundir import schema
from deepreshape.slotkinds.mask import GRANULARITIES

SNL_MASK_OVERHEAD = 1.9  # a mask-phase epoch vs a plain one (benchmarks/snl.py measured 1.86x)
SNL_DEFAULT_EPOCHS = (300, 100)  # mask phase, fine-tune (snl()'s defaults)


class Snl(Method):
    name = "snl"
    display = "SNL"
    colour, marker = "#d62728", "D"
    entry = "deepreshape.optimize.snl:snl"
    cli = "deepreshape.cli.snl"
    keys = {"budgets": "ReLU budgets, one point each", "granularity": "pixel or channel",
            "mask_recipe": "the mask phase's recipe", "finetune": "the fine-tuning recipe",
            "lambda": "initial L1 weight", "lambda_factor": "its growth factor",
            "lambda_after": "epochs before it grows", "threshold": "mask threshold",
            "include_stem": "also mask the stem's ReLUs"}
    makes_run = True
    result_file = schema.SNL
    ddp = True

    def check(self, table: dict, ctx: ExpandContext) -> None:
        b = table.get("budgets")
        if not isinstance(b, list) or not b or not all(isinstance(v, int) and v > 0 for v in b):
            raise ctx.fail("snl.budgets", f"must be a list of positive integers, got {b!r}")
        if table.get("granularity", "pixel") not in GRANULARITIES:
            raise ctx.fail("snl.granularity", f"must be {' or '.join(GRANULARITIES)}")

    def expand(self, table: dict, ctx: ExpandContext) -> None:
        base = {k: v for k, v in table.items() if k != "budgets"}
        for key in ("mask_recipe", "finetune"):
            if key in base:
                ctx.recipe_table(base[key], f"snl.{key}")
        base.setdefault("granularity", "pixel")
        for budget in table["budgets"]:
            s = {**base, "budget": budget}
            ctx.add(self.name, s, (ctx.train_id,),
                    f"{ctx.train_id}/snl-{s['granularity']}-{budget}-{ctx.digest(s)}")

    def run(self, point: Any, root: Path, options: Any) -> dict:
        snl = self.entry_function()
        s = dict(point.settings)
        kw: dict[str, Any] = {"granularity": s.pop("granularity", "pixel")}
        if "mask_recipe" in s:
            kw["mask_recipe"] = recipe_values(s.pop("mask_recipe"), epochs=300, lr=1e-3,
                                              optimizer="adam", weight_decay=0.0)
        if "finetune" in s:
            kw["finetune"] = recipe_values(s.pop("finetune"), epochs=100, lr=1e-3)
        for key, arg in (("lambda", "lam"), ("lambda_factor", "lam_factor"),
                         ("lambda_after", "lam_after"), ("threshold", "threshold"),
                         ("include_stem", "include_stem")):
            if key in s:
                kw[arg] = s.pop(key)
        from deepreshape.optimize.snl import SNLSettings

        res = snl(root / point.deps[0], s.pop("budget"), settings=SNLSettings(**kw),
                  out=root / point.run, options=options)
        return {"final_acc": res.final_acc, "relus": res.relus, "budget": res.budget,
                "budget_reached": res.budget_reached}

    def relus(self, point: Any) -> int | None:
        return point.settings["budget"]

    def networks(self, point: Any, spec: Any) -> int:
        return 1

    def trainings(self, point: Any, spec: Any) -> float:
        mask = point.settings.get("mask_recipe", {}).get("epochs", SNL_DEFAULT_EPOCHS[0])
        fine = point.settings.get("finetune", {}).get("epochs", SNL_DEFAULT_EPOCHS[1])
        return mask * SNL_MASK_OVERHEAD + fine


METHOD = Snl()
