"""`reduce`: DeepReDuce (culling, thinning, reshaping) and ReLU-reuse on a trained
network, with KD; its runs are labelled "DeepReDuce", or "ReLU-reuse" when the network
reuses ReLUs."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepreshape.methods.base import ExpandContext, Method, Style, recipe_values
from deepreshape.rundir import schema


class Reduce(Method):
    name = "reduce"
    display = "DeepReDuce"
    colour, marker = "#ff7f0e", "s"
    entry = "deepreshape.optimize.deepreduce:deepreduce"
    cli = "deepreshape.cli.reduce"
    keys = {"recipe": "the reduced networks' recipe", "pipeline": "deepreduce or hrn",
            "steps": "which DeepReDuce steps", "reuse_factors": "ReLU-reuse factors",
            "scale": "reshaping scale", "reshape": "reshape the channels",
            "order": "criticality order (else the experiment's criticality point)"}
    tags = ("deepreduce",)
    result_file = schema.REDUCE
    ddp = True

    def styles(self) -> list[Style]:
        return [Style("DeepReDuce", self.colour, self.marker), Style("ReLU-reuse", "#2ca02c", "^")]

    def label(self, tag: Mapping[str, Any], spec: Any) -> str:
        reuse = any(spec.slot_kind(a).kind == "reuse" for a, _ in spec.slots)
        return "ReLU-reuse" if reuse else "DeepReDuce"

    def check(self, table: dict, ctx: ExpandContext) -> None:
        if "order" not in table and ctx.tables.get("criticality") is None:
            raise ctx.fail("reduce.order", "reduce needs an order: give reduce.order "
                           "(e.g. [3, 2, 4, 1]) or a [criticality] table in this experiment")

    def expand(self, table: dict, ctx: ExpandContext) -> None:
        rec = {**ctx.recipe, **ctx.recipe_table(table.get("recipe", {}), "reduce.recipe")}
        ctx.check_recipe(rec, "reduce.recipe")
        s = {**{k: v for k, v in table.items() if k != "recipe"}, "recipe": rec}
        s.setdefault("pipeline", "deepreduce")
        crit = ctx.produced.get("criticality", [None])[-1]
        deps = (ctx.train_id,) if "order" in table else (ctx.train_id, crit)
        ctx.add(self.name, s, deps, f"{ctx.train_id}/reduce-{s['pipeline']}-{ctx.digest(s)}")

    def run(self, point: Any, root: Path, options: Any) -> dict:
        deepreduce = self.entry_function()
        s = dict(point.settings)
        recipe = recipe_values(s.pop("recipe"))
        red = deepreduce(root / point.deps[0], recipe=recipe, out=root / point.run, options=options, **s)
        return {"networks": red.to_dict()["networks"]}

    def rows(self, root: Path, record: dict, base: dict) -> list[dict]:
        from deepreshape.methods.base import pi_fields

        data, _ = schema.REDUCE.read_optional(root / record["run"])
        out = []
        for n in (data or {}).get("networks", []):
            if n.get("baseline"):
                continue
            run = Path(n["run"]) if n.get("run") else None
            rel = str(run.relative_to(root)) if run and run.is_relative_to(root) else n.get("run")
            out.append({**base, "network": n.get("arch"), "relus": n.get("relus"),
                        "macs": n.get("macs"), "params": n.get("params"),
                        "accuracy": n.get("accuracy"), **(pi_fields(run) if run else {}),
                        "run": rel})
        return out

    def networks(self, point: Any, spec: Any) -> int:
        from deepreshape.optimize.deepreduce import plan

        kw = {k: point.settings[k] for k in ("pipeline", "steps", "reuse_factors", "scale", "reshape")
              if k in point.settings}
        order = point.settings.get("order") or tuple(range(1, len(spec.stages) + 1))
        with warnings.catch_warnings():  # skipped reuse factors: the run itself says so
            warnings.simplefilter("ignore")
            return sum(1 for n in plan(spec, order, **kw) if not n.baseline)

    def trainings(self, point: Any, spec: Any) -> float:
        return self.networks(point, spec) * point.settings["recipe"].get("epochs", 200)


METHOD = Reduce()
