"""What a sweep will do, before it does it: exact counts, predicted latency, rough cost.

`dry_run_rows` gives every point with the exact ReLUs / MACs / params of the network it
trains or measures (from `count`, the same numbers `deepreshape count` prints) and the
Cheetah latency the cost model predicts for it. `gpu_hours` is a rough estimate for
`deepreshape sweep --list`: 3 x forward MACs per training image (forward + backward) at
an assumed sustained rate (`MACS_PER_GPU_S`), which is an assumption, not a measurement.
"""

from __future__ import annotations

from typing import Any

from deepreshape.count import count
from deepreshape.datasets import DATASETS
from deepreshape.spec import NetSpec
from deepreshape.sweep.sweepfile import Point, Sweep
from deepreshape.zoo import parse

# Training images per epoch of each data set (standard splits; digits: the 80% split).
# Assumed sustained training rate of one modern GPU in bf16 (MACs per second); rough.
MACS_PER_GPU_S = 4e12


def _spec(p: Point, dataset: str) -> NetSpec:
    return parse(p.arch, dataset=dataset)


def _method(p: Point):
    from deepreshape.methods import METHODS

    return METHODS.get(p.method)


def dry_run_rows(sweep: Sweep, predict: bool = True) -> list[dict[str, Any]]:
    """One row per point: id, method, experiment, arch, seed, deps, ReLUs, MACs, params of
    its network (for snl: the budget), trainings, and the predicted Cheetah latency."""
    from deepreshape.pi.costs import costmodel

    by_id = sweep.by_id()
    rows = []
    cache: dict[str, Any] = {}
    for p in sweep.points:
        spec = _spec(p, sweep.dataset)
        c = count(spec)
        relus, macs = c.relus, c.macs
        # a point that measures another point's run (pi, eval) has that point's network
        target = by_id.get(p.run, p) if p.run != p.id else p
        changed = _method(target).relus(target)  # SNL: the budget, not the architecture's
        if changed is not None:
            relus = changed
        latency = None
        if predict and changed is None and _method(target).implicit:  # the architecture as named
            if spec.name not in cache:
                try:
                    cache[spec.name] = costmodel.predict(spec, "cheetah")["latency_s"]
                except Exception:  # no coefficients for this shape: leave it out
                    cache[spec.name] = None
            latency = cache[spec.name]
        rows.append({"id": p.id, "method": p.method, "experiment": p.experiment, "arch": spec.name,
                     "seed": p.seed, "deps": list(p.deps), "relus": relus, "macs": macs,
                     "params": c.params, "trainings": _method(p).networks(p, spec),
                     "predicted_latency_s": latency})
    return rows


def gpu_hours(sweep: Sweep) -> float:
    """Rough GPU-hours of training the whole sweep (see the module docstring)."""
    images = DATASETS.get(sweep.dataset).train_size
    if sweep.limit:
        images = min(images, sweep.limit)
    total = 0.0
    for p in sweep.points:
        passes = _method(p).trainings(p, (spec := _spec(p, sweep.dataset)))
        if passes:
            total += passes * images * 3 * count(spec).macs
    return total / MACS_PER_GPU_S / 3600
