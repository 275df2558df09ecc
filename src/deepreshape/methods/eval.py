"""`eval`: test accuracy and exact counts of a run (no file of its own: it only reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepreshape.methods.base import ExpandContext, Method, check_of, of_targets


class Eval(Method):
    name = "eval"
    display = "evaluation"
    entry = "deepreshape.training.evaluate:evaluate_run"
    cli = "deepreshape.cli.eval"
    measures = True
    keys = {"of": "which runs: train and run-making methods (default [train])"}

    def styles(self) -> list:
        return []  # it reads runs, it does not make them

    def check(self, table: dict, ctx: ExpandContext) -> None:
        check_of(table, ctx, "eval")

    def expand(self, table: dict, ctx: ExpandContext) -> None:
        for target in of_targets(table, ctx):
            ctx.add(self.name, {}, (target,), target, id=f"{target}#eval")

    def run(self, point: Any, root: Path, options: Any) -> dict:
        evaluate_run = self.entry_function()
        r = evaluate_run(root / point.run, options=options)
        return {k: r[k] for k in ("test_acc", "relus", "macs", "params")}


METHOD = Eval()
