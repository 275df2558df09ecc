"""ReLU optimization methods: stagewise criticality, DeepReDuce (+ ReLU-reuse), SNL.

Each method takes a *trained baseline run directory*, changes slot kinds (or widths) of
its spec, and trains every produced network through `deepreshape.training.train` (none owns
a training loop). Every produced network is a run directory of its own, whose
results.json carries exact ReLUs/MACs from `count(spec)`.

    from deepreshape.optimize.criticality import criticality
    from deepreshape.optimize.deepreduce import deepreduce
    from deepreshape.optimize.snl import SNLSettings, snl
    from deepreshape.options import RunOptions
    crit = criticality("runs/hrn-5x7x2x", recipe=Recipe(epochs=200))
    red = deepreduce("runs/hrn-5x7x2x", pipeline="hrn", options=RunOptions(seed=1))
    res = snl("runs/hrn-5x7x2x", budget=50_000, settings=SNLSettings(granularity="pixel"))

How to run (seed, device, data, resume, ...) is one `RunOptions` value, ``options=``.

The helpers below are shared by the three modules (submodules are loaded lazily, so
`import deepreshape.optimize` stays light, without torch, and the modules can import
these helpers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deepreshape.errors import CheckpointError, UsageError
from deepreshape.lazy import lazy_exports
from deepreshape.rundir import schema

if TYPE_CHECKING:  # torch: the helpers load these when called, so that the package and
    # its light modules (`snlpresets`, read by the command line) do not load torch
    from deepreshape.data import Dataset
    from deepreshape.rundir.run import Run

__all__ = [
    "alternate_slots", "baseline_data", "check_dataset", "criticality", "cull", "deepreduce",
    "load_baseline", "plan", "reuse", "scale_channels", "scale_depths", "scale_feature_maps",
    "score", "snl", "thin",
]

_LAZY = {
    "criticality": "deepreshape.optimize.criticality",
    "score": "deepreshape.optimize.criticality",
    "deepreduce": "deepreshape.optimize.deepreduce",
    "plan": "deepreshape.optimize.deepreduce",
    "alternate_slots": "deepreshape.optimize.deepreduce",
    "scale_depths": "deepreshape.optimize.deepreduce",
    "cull": "deepreshape.optimize.deepreduce",
    "thin": "deepreshape.optimize.deepreduce",
    "reuse": "deepreshape.optimize.deepreduce",
    "scale_channels": "deepreshape.optimize.deepreduce",
    "scale_feature_maps": "deepreshape.optimize.deepreduce",
    "snl": "deepreshape.optimize.snl",
}


lazy_exports(__name__, _LAZY)


def load_baseline(run: str | Path | Run) -> Run:
    """A trained baseline: a run directory that has its checkpoint (methods need weights).

    The checkpoint is loaded (and checked) once here, before a method writes anything.
    """
    from deepreshape.rundir.run import Run, load_run

    r = run if isinstance(run, Run) else load_run(run)
    if not schema.CHECKPOINT.exists(r.path):
        raise CheckpointError(f"{r.path}: no {schema.CHECKPOINT.name}; train the baseline first "
                              "(deepreshape train NAME --out DIR)")
    r.load_checkpoint()
    return r


def baseline_data(run: Run, data_dir: str | None = None, dataset: str | None = None,
                  limit: int | None = None) -> Dataset:
    """The baseline's data set at its input size: a method's networks and their KD teacher
    must see the same classes and resolution as the baseline did (`limit`: smoke runs)."""
    from deepreshape.data import load_dataset

    name = check_dataset(run, dataset)
    return load_dataset(name, data_dir, input_size=run.config["data"].get("input_size"),
                        limit=limit)


def check_dataset(run: Run, dataset: str | None = None) -> str:
    """The baseline's data set; UsageError if `dataset` names another one."""
    name = run.config.get("data", {}).get("dataset")
    if not name:
        raise CheckpointError(f"{run.path}: {schema.CONFIG.name} names no data set")
    if dataset is not None and dataset.strip().lower() != name:
        raise UsageError(f"the baseline {run.path} was trained on {name}, not {dataset}; "
                         "methods train on the baseline's data set (leave out --dataset)")
    return name
