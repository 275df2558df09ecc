"""What a sweep will do, before it does it: exact counts, predicted latency, rough cost.

`dry_run_rows` gives every point with the exact ReLUs / MACs / params of the network it
trains or measures (from `count`, the same numbers `deepreshape count` prints) and the
Cheetah latency the cost model predicts for it. `gpu_hours` is a rough estimate for
`deepreshape sweep --list`: 3 x forward MACs per training image (forward + backward) at
an assumed sustained rate (`MACS_PER_GPU_S`), which is an assumption, not a measurement.
"""

from __future__ import annotations

import warnings
from typing import Any

from deepreshape.count import count
from deepreshape.datasets import DATASETS
from deepreshape.spec import NetSpec
from deepreshape.sweep.sweepfile import Point, Sweep
from deepreshape.zoo import parse

# Training images per epoch of each data set (standard splits; digits: the 80% split).
# Assumed sustained training rate of one modern GPU in bf16 (MACs per second); rough.
MACS_PER_GPU_S = 4e12
SNL_MASK_OVERHEAD = 1.9  # a mask-phase epoch vs a plain one (benchmarks/snl.py measured 1.86x)
SNL_DEFAULT_EPOCHS = (300, 100)  # mask phase, fine-tune (snl()'s defaults)


def _spec(p: Point, dataset: str) -> NetSpec:
    return parse(p.arch, dataset=dataset)


def _networks(p: Point, spec: NetSpec) -> int:
    """How many trainings the point does."""
    if p.method == "train":
        return 1
    if p.method == "criticality":
        return len(spec.stages) * (2 if p.settings.get("plain", True) else 1)
    if p.method == "reduce":
        from deepreshape.optimize.deepreduce import plan

        kw = {k: p.settings[k] for k in ("pipeline", "steps", "reuse_factors", "scale", "reshape")
              if k in p.settings}
        order = p.settings.get("order") or tuple(range(1, len(spec.stages) + 1))
        with warnings.catch_warnings():  # skipped reuse factors: the run itself says so
            warnings.simplefilter("ignore")
            return sum(1 for n in plan(spec, order, **kw) if not n.baseline)
    if p.method == "snl":
        return 1
    return 0


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
        target = by_id.get(p.run) if p.method in ("pi", "eval") else p
        is_snl = target is not None and target.method == "snl"
        if is_snl:
            relus = target.settings["budget"]
        latency = None
        if predict and not is_snl and p.method in ("train", "pi", "eval"):
            if spec.name not in cache:
                try:
                    cache[spec.name] = costmodel.predict(spec, "cheetah")["latency_s"]
                except Exception:  # no coefficients for this shape: leave it out
                    cache[spec.name] = None
            latency = cache[spec.name]
        rows.append({"id": p.id, "method": p.method, "experiment": p.experiment, "arch": spec.name,
                     "seed": p.seed, "deps": list(p.deps), "relus": relus, "macs": macs,
                     "params": c.params, "trainings": _networks(p, spec),
                     "predicted_latency_s": latency})
    return rows


def gpu_hours(sweep: Sweep) -> float:
    """Rough GPU-hours of training the whole sweep (see the module docstring)."""
    images = DATASETS.get(sweep.dataset).train_size
    if sweep.limit:
        images = min(images, sweep.limit)
    total = 0.0
    for p in sweep.points:
        spec = _spec(p, sweep.dataset)
        macs = count(spec).macs
        if p.method in ("train", "criticality", "reduce"):
            epochs = p.settings["recipe"].get("epochs", 200)
            total += _networks(p, spec) * epochs * images * 3 * macs
        elif p.method == "snl":
            mask = p.settings.get("mask_recipe", {}).get("epochs", SNL_DEFAULT_EPOCHS[0])
            fine = p.settings.get("finetune", {}).get("epochs", SNL_DEFAULT_EPOCHS[1])
            total += (mask * SNL_MASK_OVERHEAD + fine) * images * 3 * macs
    return total / MACS_PER_GPU_S / 3600
