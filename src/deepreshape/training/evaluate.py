"""Test accuracy: of a model on a loader (what the training loop reports every epoch), and
of a run directory's checkpoint on its data set's test split (`deepreshape eval`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deepreshape.count import count
from deepreshape.data import BatchLoader, load_dataset
from deepreshape.options import RunOptions, takes_run_options
from deepreshape.training.distributed import Dist
from deepreshape.training.precision import Precision, resolve_device, resolve_precision


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, device: torch.device, dist: Dist | None = None,
             precision: Precision | None = None) -> float:
    """Top-1 accuracy (%) over the whole test split (summed over the ranks of `dist`, a
    single process by default); `precision` defaults to the device's (`resolve_precision`)."""
    dist = dist or Dist()
    precision = precision or resolve_precision(device)
    model.eval()
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in loader:
        with precision.autocast(device):
            out = model(x)
        correct += (out.argmax(1) == y).sum()
        seen += y.numel()
    if dist.world_size > 1:
        import torch.distributed as tdist

        both = torch.stack([correct, seen])
        tdist.all_reduce(both)
        correct, seen = both[0], both[1]
    return float(100.0 * correct / seen.clamp(min=1))


@takes_run_options
def evaluate_run(path: str | Path, *, options: RunOptions | None = None) -> dict:
    """Test accuracy (%) and exact counts of a trained run. Of `options`, evaluation reads
    device, data_dir and limit (the first N test images, as a run trained with that limit
    saw); the rest does not apply."""
    from deepreshape.rundir.run import load_run

    opts = RunOptions.of(options)
    run = load_run(path)
    dev = resolve_device(opts.device)
    model = run.model().to(dev)
    data = load_dataset(run.dataset, opts.data_dir, input_size=run.spec.input_size,
                        limit=opts.limit)
    loader = BatchLoader(data.test_x, data.test_y, 256, mean=data.mean, std=data.std, train=False,
                         device=dev)
    c = count(run.spec)
    return {"run": str(run.path), "name": run.spec.short_name(), "arch": run.spec.describe(),
            "dataset": data.name,
            "test_acc": evaluate(model, loader, dev), "relus": c.relus, "macs": c.macs,
            "params": c.params, "stem_relus": c.stem_relus,
            "stages": [{"name": s.name, "relus": s.relus, "macs": s.macs} for s in c.stages]}
