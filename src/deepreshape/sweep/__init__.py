"""Sweeps: a grid of runs as one TOML file, run on this machine, on Ray or on Slurm.

    from deepreshape.sweep import load, run_sweep, sweep_report
    sw = load("paper:fig6", dataset="cifar100")       # or a path to a .toml file
    state = run_sweep(sw, "sweeps/fig6", backend="ray", max_parallel=4)
    sweep_report("sweeps/fig6")                        # results.csv/json, Pareto plots

Layers: `sweepfile` (parse, expand axes, dependency graph) -> `execute` (one point,
calling its method with one `RunOptions`) -> `backends` (local, Ray, submitit) ->
`runner` (the driver, sweep.json; `state`) -> `table` (results and plots). What a method
contributes (its table keys, points, run, "finished" check, result rows) comes from the
registry `deepreshape.methods.METHODS`; no module here names a method. The CLI
(`deepreshape sweep`) is thin.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from deepreshape.errors import UsageError
from deepreshape.sweep.sweepfile import (
    DEFAULT_MAX_POINTS,
    Point,
    Sweep,
    SweepError,
    SweepTooLarge,
    expand_pattern,
    load_sweep,
)

__all__ = ["DEFAULT_MAX_POINTS", "Point", "Sweep", "SweepError", "SweepTooLarge", "expand_pattern",
           "load", "load_sweep", "paper_names", "run_sweep", "sweep_report"]

PAPER_PREFIX = "paper:"


def paper_names() -> list[str]:
    """The shipped paper sweeps (``paper:fig4`` ...), in order."""
    folder = resources.files("deepreshape.resources") / "sweeps"
    names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))
    return [PAPER_PREFIX + n for n in sorted(names, key=lambda n: (not n.startswith("fig"), n))]


def load(target: str | Path, *, dataset: str | None = None, scale: str | None = None,
         data_dir: str | None = None, max_points: int | None = DEFAULT_MAX_POINTS) -> Sweep:
    """A sweep from a file path or a shipped ``paper:NAME``; one of more than `max_points`
    points (None: no limit) is refused at once (`SweepTooLarge`, before any point is made)."""
    text = str(target)
    if text.startswith(PAPER_PREFIX):
        if text not in paper_names():
            raise UsageError(f"unknown paper sweep {text!r}; valid: {', '.join(paper_names())}")
        res = resources.files("deepreshape.resources") / "sweeps" / f"{text[len(PAPER_PREFIX):]}.toml"
        with resources.as_file(res) as path:
            sw = load_sweep(path, dataset=dataset, scale=scale, data_dir=data_dir, source=text,
                            max_points=max_points)
        return sw
    return load_sweep(Path(text), dataset=dataset, scale=scale, data_dir=data_dir,
                      max_points=max_points)


def __getattr__(name: str) -> Any:
    if name == "run_sweep":
        from deepreshape.sweep.runner import run_sweep

        return run_sweep
    if name == "sweep_report":
        from deepreshape.sweep.table import sweep_report

        return sweep_report
    raise AttributeError(f"module 'deepreshape.sweep' has no attribute {name!r}")
