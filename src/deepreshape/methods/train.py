"""`train`: a network trained from scratch (SGD + cosine, optional KD): the point every
other method of a sweep starts from. Its runs are labelled "baseline", or "DeepReShape"
when the network was designed by DeepReShape (config tag ``deepreshape``, as the demo's
HRN)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepreshape.methods.base import ExpandContext, Method, Style, recipe_values
from deepreshape.rundir import schema


class Train(Method):
    name = "train"
    display = "baseline"
    colour, marker = "#1f77b4", "o"
    entry = "deepreshape.training.loop:train"
    cli = "deepreshape.cli.train"
    keys: Mapping[str, str] = {}
    tags = ("baseline", "deepreshape")
    implicit = True
    makes_run = True
    result_file = schema.RESULTS
    ddp = True

    def styles(self) -> list[Style]:
        return [Style("baseline", self.colour, self.marker), Style("DeepReShape", "#17becf", "*")]

    def label(self, tag: Mapping[str, Any], spec: Any) -> str:
        return "DeepReShape" if str(tag.get("name", "")).lower() == "deepreshape" else "baseline"

    def expand(self, table: dict, ctx: ExpandContext) -> None:
        s = {"dataset": ctx.dataset, "limit": ctx.limit, "recipe": ctx.recipe, "teacher": ctx.teacher}
        tid = f"{ctx.arch}-s{ctx.seed}-{ctx.digest({'arch': ctx.arch, 'seed': ctx.seed, **s})}"
        ctx.train_id = ctx.add(self.name, s, (ctx.teacher,) if ctx.teacher else (), tid)

    def run(self, point: Any, root: Path, options: Any) -> dict:
        train = self.entry_function()
        s = point.settings
        res = train(point.arch, recipe=recipe_values(s["recipe"]), out=root / point.run,
                    teacher=root / s["teacher"] if s.get("teacher") else None,
                    options=options.replace(dataset=s["dataset"]))
        r = res.run.results if res.run is not None else {}
        return {k: r.get(k) for k in ("final_acc", "best_acc", "relus", "macs", "params", "epochs")}

    def trainings(self, point: Any, spec: Any) -> float:
        return float(point.settings["recipe"].get("epochs", 200))

    def networks(self, point: Any, spec: Any) -> int:
        return 1


METHOD = Train()
