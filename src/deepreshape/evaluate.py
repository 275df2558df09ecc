"""Evaluate a run directory's checkpoint on its data set's test split."""

from __future__ import annotations

from pathlib import Path

from deepreshape.count import count
from deepreshape.data import BatchLoader, load_dataset
from deepreshape.options import with_run_options
from deepreshape.reports.readers import run_name
from deepreshape.rundir.run import load_run
from deepreshape.train import evaluate, resolve_device


@with_run_options
def evaluate_run(path: str | Path, data_dir: str | None = None, device: str | None = None,
                 limit: int | None = None) -> dict:
    """Test accuracy (%) and exact counts of a trained run (`limit`: the first N test images,
    as a run trained with that limit saw)."""
    run = load_run(path)
    dev = resolve_device(device)
    model = run.model().to(dev)
    data = load_dataset(run.dataset, data_dir, input_size=run.spec.input_size, limit=limit)
    loader = BatchLoader(data.test_x, data.test_y, 256, mean=data.mean, std=data.std, train=False,
                         device=dev)
    c = count(run.spec)
    return {"run": str(run.path), "name": run_name(run), "arch": run.spec.describe(),
            "dataset": data.name,
            "test_acc": evaluate(model, loader, dev), "relus": c.relus, "macs": c.macs,
            "params": c.params, "stem_relus": c.stem_relus,
            "stages": [{"name": s.name, "relus": s.relus, "macs": s.macs} for s in c.stages]}
