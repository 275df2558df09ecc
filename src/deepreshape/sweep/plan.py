"""What a sweep will do, before it does it: exact counts, predicted latency, rough cost.

`dry_run_rows` gives every point with the exact ReLUs / MACs / params of the network it
trains or measures (the numbers `count` and `deepreshape count` give) and the Cheetah
latency the cost model predicts for it. `gpu_hours` is a rough estimate for
`deepreshape sweep --list`: 3 x forward MACs per training image (forward + backward) at
an assumed sustained rate (`MACS_PER_GPU_S`), which is an assumption, not a measurement.

Both price a grid's networks in bulk: BaseCh / StageCh / HRN networks through the
design space's array code (`design.space.counts_named`: one template per family, so a
27,000-HRN grid is priced in a fraction of a second), every other network (WRN, RegNet,
changed slots) by one `count` / `costmodel.predict` each, once per distinct network.
``bulk=False`` takes the one-by-one path for every point (what `benchmarks/sweep_plan.py`
and the tests hold the bulk path against).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

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
        nc = space.counts_named(archs, size, classes, [a in latency for a in archs])
        lat = [v if ok else None for v, ok in zip(nc.latency_s.tolist(), nc.priced.tolist(),
                                                    strict=True)]
        for a, r, m, p, la, covered, priced in zip(archs, nc.relus.tolist(), nc.macs.tolist(),
                                                   nc.params.tolist(), lat, nc.covered.tolist(),
                                                   nc.priced.tolist(), strict=True):
            if covered and (priced or a not in latency):
                out[a] = NetStats(a, r, m, p, la)
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


def dry_run_rows(sweep: Sweep, predict: bool = True, bulk: bool = True) -> list[dict[str, Any]]:
    """One row per point: id, method, experiment, arch, seed, deps, ReLUs, MACs, params of
    its network (for snl: the budget), trainings, and the predicted Cheetah latency.

    ``bulk=False`` counts and predicts point by point (the reference path); the rows are
    the same, latency to the last bits of a floating-point sum."""
    if not bulk:
        return _dry_run_rows_one_by_one(sweep, predict)
    methods = _methods()
    by_id = sweep.by_id()
    plan: list[tuple[int | None, bool]] = []  # per point: changed ReLUs, wants latency
    want: set[str] = set()
    specs: dict[str, LazySpec] = {}
    ds = sweep.dataset
    for p in sweep.points:
        if p.arch not in specs:
            specs[p.arch] = LazySpec(p.arch, ds)
        # a point that measures another point's run (pi, eval) has that point's network
        target = by_id.get(p.run, p) if p.run != p.id else p
        tm = methods[target.method]
        ch = tm.relus(target)  # SNL: the budget, not the architecture's
        lat = predict and ch is None and tm.implicit  # the architecture as named
        if lat:
            want.add(p.arch)
        plan.append((ch, lat))
    stats = network_stats(list(specs), ds, want)
    rows = []
    for p, (ch, lat) in zip(sweep.points, plan, strict=True):
        s = stats[p.arch]
        rows.append({"id": p.id, "method": p.method, "experiment": p.experiment, "arch": s.name,
                     "seed": p.seed, "deps": list(p.deps), "relus": s.relus if ch is None else ch,
                     "macs": s.macs, "params": s.params,
                     "trainings": methods[p.method].networks(p, specs[p.arch]),
                     "predicted_latency_s": s.latency_s if lat else None})
    return rows


def _dry_run_rows_one_by_one(sweep: Sweep, predict: bool) -> list[dict[str, Any]]:
    """`dry_run_rows` by one parse, `count` and prediction per point (cached by network)."""
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
                     "seed": p.seed, "deps": list(p.deps), "relus": relus, "macs": macs,
                     "params": c.params, "trainings": methods[p.method].networks(p, spec),
                     "predicted_latency_s": latency})
    return rows


def gpu_hours(sweep: Sweep, bulk: bool = True) -> float:
    """Rough GPU-hours of training the whole sweep (see the module docstring)."""
    images = DATASETS.get(sweep.dataset).train_size
    if sweep.limit:
        images = min(images, sweep.limit)
    methods = _methods()
    ds = sweep.dataset
    specs: dict[str, Any] = {}
    passes: dict[str, float] = {}  # arch -> training passes over all its points
    for p in sweep.points:
        if p.arch not in specs:
            specs[p.arch] = LazySpec(p.arch, ds) if bulk else _spec(p, ds)
        n = methods[p.method].trainings(p, specs[p.arch])
        if n:
            passes[p.arch] = passes.get(p.arch, 0.0) + n
    stats = network_stats(list(passes), ds, bulk=bulk)
    total = sum(n * images * 3 * stats[a].macs for a, n in passes.items())
    return total / MACS_PER_GPU_S / 3600
