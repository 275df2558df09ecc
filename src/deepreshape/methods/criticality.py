"""`criticality`: stagewise criticality C_k of a trained network and the order it gives
(one probe network per stage); its rows are the stage-only networks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepreshape.methods.base import ExpandContext, Method, recipe_values
from deepreshape.rundir import schema


class Criticality(Method):
    name = "criticality"
    display = "criticality probe"
    colour, marker = "#7f7f7f", "x"
    entry = "deepreshape.optimize.criticality:criticality"
    cli = "deepreshape.cli.criticality"
    keys = {"recipe": "the probes' training recipe (over the experiment's)",
            "plain": "also train each probe without KD (default true)"}
    result_file = schema.CRITICALITY
    ddp = True

    def expand(self, table: dict, ctx: ExpandContext) -> None:
        rec = {**ctx.recipe, **ctx.recipe_table(table.get("recipe", {}), "criticality.recipe")}
        ctx.check_recipe(rec, "criticality.recipe")
        s = {"recipe": rec, "plain": bool(table.get("plain", True))}
        ctx.add(self.name, s, (ctx.train_id,), f"{ctx.train_id}/criticality-{ctx.digest(s)}")

    def run(self, point: Any, root: Path, options: Any) -> dict:
        criticality = self.entry_function()
        s = point.settings
        crit = criticality(root / point.deps[0], recipe=recipe_values(s["recipe"]), out=root / point.run,
                           plain=s["plain"], options=options)
        d = crit.to_dict()
        return {"order": d.get("order"), "stages": d.get("stages")}

    def rows(self, root: Path, record: dict, base: dict) -> list[dict]:
        from deepreshape.reports.readers import criticality_summary

        data, _ = schema.CRITICALITY.read_optional(root / record["run"])
        crit = criticality_summary(data) or {"stages": [], "order": []}
        return [{**base, "network": f"{record['arch']} {s['name']} only", "relus": s["relus"],
                 "macs": None, "params": None, "accuracy": s["kd_acc"], "criticality": s["C"],
                 "order": crit["order"], "run": f"{record['run']}/stage{k}-kd"}
                for k, s in enumerate(crit["stages"], 1)]

    def networks(self, point: Any, spec: Any) -> int:
        return len(spec.stages) * (2 if point.settings.get("plain", True) else 1)

    def trainings(self, point: Any, spec: Any) -> float:
        return self.networks(point, spec) * point.settings["recipe"].get("epochs", 200)


METHOD = Criticality()
