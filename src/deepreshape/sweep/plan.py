"""What a sweep will do, before it does it: exact counts, predicted latency, rough cost.

`dry_run` gives every point with the exact ReLUs / MACs / params of the network it
trains or measures (the numbers `count` and `deepreshape count` give) and the Cheetah
latency the cost model predicts for it, and with them the rough GPU-hours of the training
that `gpu_hours` gives alone (for `deepreshape sweep --list`): 3 x forward MACs per
training image (forward + backward) at an assumed sustained rate (`MACS_PER_GPU_S`), which
is an assumption, not a measurement.

Both price a grid's networks in bulk, `dry_run` in one pass for its rows and its hours:
BaseCh / StageCh / HRN networks through the design space's array code
(`design.space.counts_named`: one template per family, so a 27,000-HRN grid is priced in a
fraction of a second), every other network (WRN, RegNet, changed slots) by one `count` /
`costmodel.predict` each, once per distinct network. ``bulk=False`` takes the one-by-one
path for every point (what `benchmarks/sweep_plan.py` and the tests hold the bulk path
against).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from deepreshape.count import count
from deepreshape.datasets import DATASETS
from deepreshape.spec import NetSpec, input_shape
from deepreshape.sweep.sweepfile import Point, Sweep
from deepreshape.zoo import parse

# Assumed sustained training rate of one modern GPU in bf16 (MACs per second); rough.
MACS_PER_GPU_S = 4e12


def _spec(p: Point, dataset: str) -> NetSpec:
    return parse(p.arch, dataset=dataset)


@lru_cache(maxsize=4096)
def _parsed(arch: str, dataset: str) -> NetSpec:
    return parse(arch, dataset=dataset)


class LazySpec:
    """A network's `NetSpec`, parsed only when a method reads it: most methods' `networks`
    and `trainings` read only the point's settings, so a grid's specs are never built."""

    __slots__ = ("_arch", "_dataset")

    def __init__(self, arch: str, dataset: str) -> None:
        self._arch = arch
        self._dataset = dataset

    def __getattr__(self, attr: str) -> Any:
        return getattr(_parsed(self._arch, self._dataset), attr)


def _methods() -> dict[str, Any]:
    from deepreshape.methods import METHODS

    return {m.name: m for m in METHODS}


class NetStats(NamedTuple):
    """One network's exact counts, its canonical name and (when asked) predicted latency."""

    name: str
    relus: int
    macs: int
    params: int
    latency_s: float | None


def network_stats(archs: list[str], dataset: str, latency: set[str] | None = None,
                  bulk: bool = True) -> dict[str, NetStats]:
    """Counts of each distinct network of `archs` (names as sweep points carry them) and
    the Cheetah latency `costmodel.predict` gives for those in `latency` (None where the
    model has no coefficients for it). `bulk`: families at array speed, the rest (and
    everything with ``bulk=False``) one by one."""
    from deepreshape.pi.costs import costmodel

    latency = latency or set()
    out: dict[str, NetStats] = {}
    if bulk and archs:
        from deepreshape.design import space

        size, classes = input_shape(dataset, None, None)
        wanted = np.fromiter((a in latency for a in archs), dtype=bool, count=len(archs))
        nc = space.counts_named(archs, size, classes, wanted)
        done = nc.covered & (nc.priced | ~wanted)  # the rest: one by one, below
        lat = np.where(nc.priced, nc.latency_s, np.nan).tolist()
        stats = map(NetStats._make, zip(archs, nc.relus.tolist(), nc.macs.tolist(),
                                        nc.params.tolist(), [v if v == v else None for v in lat],
                                        strict=True))
        if done.all():  # the usual grid: one C-level pass, no Python loop per network
            out = dict(zip(archs, stats, strict=True))
        else:
            out = {a: st for a, st, ok in zip(archs, stats, done.tolist(), strict=True) if ok}
    for a in archs:
        if a in out:
            continue
        spec = parse(a, dataset=dataset)
        c = count(spec)
        pred = None
        if a in latency:
            try:
                pred = costmodel.predict(spec, "cheetah")["latency_s"]
            except Exception:  # no coefficients for this shape: leave it out
                pred = None
        out[a] = NetStats(spec.name, c.relus, c.macs, c.params, pred)
    return out


class DryRun(NamedTuple):
    """What `dry_run` found: one row per point and the rough GPU-hours of the whole sweep."""

    rows: list[dict[str, Any]]
    gpu_hours: float


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a grid is priced: its rows and specs hold no
    cycles, and without the pause most of the time of a 27,000-point dry run goes to
    collections that walk every object of the process (torch's included) again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def dry_run(sweep: Sweep, predict: bool = True, bulk: bool = True) -> DryRun:
    """One row per point (id, method, experiment, arch, seed, deps, ReLUs, MACs, params of
    its network (for snl: the budget), trainings, and the predicted Cheetah latency) and
    the sweep's rough GPU-hours (`gpu_hours`), from one pricing pass over its networks.

    ``bulk=False`` counts and predicts point by point (the reference path); the rows are
    the same, latency to the last bits of a floating-point sum."""
    if not bulk:
        return DryRun(_dry_run_rows_one_by_one(sweep, predict), gpu_hours(sweep, bulk=False))
    with _gc_paused():
        methods = _methods()
        by_id = sweep.by_id()
        points = sweep.points
        ds = sweep.dataset
        specs = {a: LazySpec(a, ds) for a in dict.fromkeys(p.arch for p in points)}
        # a point that measures another point's run (pi, eval) has that point's network
        targets = [by_id.get(p.run, p) if p.run != p.id else p for p in points]
        changed = [methods[t.method].relus(t) for t in targets]  # SNL: the budget
        implicit = {name for name, m in methods.items() if m.implicit}  # the network as named
        wants = [predict and ch is None and t.method in implicit
                 for t, ch in zip(targets, changed, strict=True)]
        stats = network_stats(list(specs), ds, {p.arch for p, w in zip(points, wants, strict=True)
                                                if w})
        net = [stats[p.arch] for p in points]
        macs = [s.macs for s in net]
        # built column by column and zipped into rows: no Python loop body per point
        rows = [{"id": a, "method": b, "experiment": c, "arch": d, "seed": e, "deps": f,
                 "relus": g, "macs": h, "params": i, "trainings": j, "predicted_latency_s": k}
                for a, b, c, d, e, f, g, h, i, j, k in zip(
                    [p.id for p in points], [p.method for p in points],
                    [p.experiment for p in points], [s.name for s in net],
                    [p.seed for p in points], [p.deps for p in points],
                    [s.relus if ch is None else ch for s, ch in zip(net, changed, strict=True)],
                    macs, [s.params for s in net],
                    [methods[p.method].networks(p, specs[p.arch]) for p in points],
                    [s.latency_s if w else None for s, w in zip(net, wants, strict=True)],
                    strict=True)]
        return DryRun(rows, _gpu_hours(sweep, specs, macs))


def _dry_run_rows_one_by_one(sweep: Sweep, predict: bool) -> list[dict[str, Any]]:
    """`dry_run`'s rows by one parse, `count` and prediction per point (cached by network)."""
    from deepreshape.pi.costs import costmodel

    methods = _methods()
    by_id = sweep.by_id()
    rows = []
    cache: dict[str, Any] = {}
    for p in sweep.points:
        spec = _spec(p, sweep.dataset)
        c = count(spec)
        relus, macs = c.relus, c.macs
        target = by_id.get(p.run, p) if p.run != p.id else p
        ch = methods[target.method].relus(target)
        if ch is not None:
            relus = ch
        latency = None
        if predict and ch is None and methods[target.method].implicit:
            if spec.name not in cache:
                try:
                    cache[spec.name] = costmodel.predict(spec, "cheetah")["latency_s"]
                except Exception:  # no coefficients for this shape: leave it out
                    cache[spec.name] = None
            latency = cache[spec.name]
        rows.append({"id": p.id, "method": p.method, "experiment": p.experiment, "arch": spec.name,
                     "seed": p.seed, "deps": p.deps, "relus": relus, "macs": macs,
                     "params": c.params, "trainings": methods[p.method].networks(p, spec),
                     "predicted_latency_s": latency})
    return rows


def gpu_hours(sweep: Sweep, bulk: bool = True) -> float:
    """Rough GPU-hours of training the whole sweep (see the module docstring); `dry_run`
    gives the same figure beside its rows, from its one pricing pass."""
    ds = sweep.dataset
    points = sweep.points
    specs = {a: LazySpec(a, ds) if bulk else _parsed(a, ds)
             for a in dict.fromkeys(p.arch for p in points)}
    stats = network_stats(list(specs), ds, bulk=bulk)
    return _gpu_hours(sweep, specs, [stats[p.arch].macs for p in points])


def _gpu_hours(sweep: Sweep, specs: dict[str, Any], macs: list[int]) -> float:
    """`gpu_hours` from the networks' specs and each point's MACs: the training passes
    each point costs times its network's MACs, summed exactly (`math.fsum`), so the
    figure does not depend on the order of the points."""
    images = DATASETS.get(sweep.dataset).train_size
    if sweep.limit:
        images = min(images, sweep.limit)
    methods = _methods()
    passes = [methods[p.method].trainings(p, specs[p.arch]) for p in sweep.points]
    total = math.fsum(n * m for n, m in zip(passes, macs, strict=True)) * images * 3
    return total / MACS_PER_GPU_S / 3600
