"""The dry run of a large grid: the bulk path (design.space arrays) against the per-point
path (one parse, `count` and cost-model prediction per point), on the same grid, in one run.

The grid is a sweep file of one experiment whose `arch` is `--pattern` (default the
27,000 HRNs ``hrn-{1..30}x{1..30}x{1..30}x`` on CIFAR-100, one training point each). The
file is expanded once (`load_sweep`, timed on its own: it parses every distinct name).
Then `dry_run` (every point with exact counts and predicted Cheetah latency, and the
sweep's GPU-hours) runs in bulk over the whole grid (best of `--repeats`, after one warm-up on a
small grid so imports and family templates are not counted), and one by one
(``bulk=False``) over the first `--sample` points of the same grid (the per-point path
costs the same per point at any size). Points per second of each (by wall and by this
process's CPU seconds: on a shared machine the CPU seconds leave out the time other jobs
held the cores), their ratio and the 100,000 points/s target are printed; the bulk rows
are checked against the per-point rows on the sample (counts equal, latency to 1e-9).

    python benchmarks/sweep_plan.py                      # 27,000 HRNs, 1,000-point sample
    python benchmarks/sweep_plan.py --pattern "hrn-{1..10}x{1..10}x{1..10}x" --sample 200 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

from deepreshape.cli.common import table
from deepreshape.sweep import load_sweep
from deepreshape.sweep.plan import dry_run
from deepreshape.sweep.sweepfile import Sweep

TARGET = 100_000  # points a second (issue 21)


def sweep_text(pattern: str, dataset: str) -> str:
    """A sweep file of one experiment over `pattern` (one training point per network)."""
    return f'name = "plan"\ndataset = "{dataset}"\n[recipe]\nepochs = 200\n' \
           f'[[experiment]]\nname = "grid"\narch = ["{pattern}"]\n'


def _load(text: str) -> tuple[Sweep, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.toml"
        path.write_text(text)
        t0 = time.perf_counter()
        sw = load_sweep(path, max_points=None)
        return sw, time.perf_counter() - t0


def _plan(sw: Sweep, bulk: bool) -> tuple[list[dict], float, float]:
    """Rows, wall seconds and CPU seconds of this process (on a shared machine the CPU
    seconds leave out the time other jobs held the cores)."""
    t0, c0 = time.perf_counter(), time.process_time()
    rows = dry_run(sw, bulk=bulk).rows
    return rows, time.perf_counter() - t0, time.process_time() - c0


def measure(pattern: str, dataset: str, sample: int, repeats: int) -> dict:
    """Load the grid, time both paths, and check them against each other on the sample."""
    warm, _ = _load(sweep_text("hrn-{2..3}x2x2x", dataset))
    _plan(warm, True)
    _plan(warm, False)
    sw, load_s = _load(sweep_text(pattern, dataset))
    n = len(sw.points)
    bulk_s = bulk_cpu = math.inf
    for _ in range(max(1, repeats)):
        rows, s, c = _plan(sw, True)
        bulk_s, bulk_cpu = min(bulk_s, s), min(bulk_cpu, c)
    part = Sweep(sw.name, sw.source, sw.dataset, sw.data_dir, sw.limit, sw.points[:sample])
    slow_rows, slow_s, slow_cpu = _plan(part, False)
    for a, b in zip(rows, slow_rows, strict=False):
        la, lb = a["predicted_latency_s"], b["predicted_latency_s"]
        same = {k: v for k, v in a.items() if k != "predicted_latency_s"} == \
               {k: v for k, v in b.items() if k != "predicted_latency_s"}
        if not same or (la is None) != (lb is None) or (la is not None
                                                          and not math.isclose(la, lb, rel_tol=1e-9)):
            raise SystemExit(f"bulk and per-point rows differ at {a['id']}: {a} vs {b}")
    bulk_rate, slow_rate = n / bulk_s, len(part.points) / slow_s
    return {"pattern": pattern, "dataset": dataset, "points": n, "load_s": load_s,
            "bulk_s": bulk_s, "bulk_cpu_s": bulk_cpu, "bulk_points_per_s": bulk_rate,
            "bulk_points_per_cpu_s": n / bulk_cpu, "sample": len(part.points),
            "per_point_s": slow_s, "per_point_cpu_s": slow_cpu,
            "per_point_points_per_s": slow_rate,
            "per_point_points_per_cpu_s": len(part.points) / slow_cpu,
            "ratio": bulk_rate / slow_rate, "target_points_per_s": TARGET,
            "meets_target": bulk_rate >= TARGET, "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pattern", default="hrn-{1..30}x{1..30}x{1..30}x", help="the grid's arch pattern")
    p.add_argument("--dataset", default="cifar100")
    p.add_argument("--sample", type=int, default=1000, help="points the per-point path prices")
    p.add_argument("--repeats", type=int, default=3, help="bulk runs (the best is kept)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = measure(args.pattern, args.dataset, args.sample, args.repeats)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"grid {r['pattern']} on {r['dataset']}: {r['points']:,} points; expanding the file "
          f"took {r['load_s']:.1f} s ({r['cpus']} CPUs, load average {r['load_average']:.1f})")
    print(table(["dry run + GPU-hours", "points", "seconds", "points/s", "CPU s", "points/CPU s"], [
        ["bulk (design.space arrays)", f"{r['points']:,}", f"{r['bulk_s']:.3f}",
         f"{r['bulk_points_per_s']:,.0f}", f"{r['bulk_cpu_s']:.3f}",
         f"{r['bulk_points_per_cpu_s']:,.0f}"],
        ["per point (parse, count, predict)", f"{r['sample']:,}", f"{r['per_point_s']:.3f}",
         f"{r['per_point_points_per_s']:,.0f}", f"{r['per_point_cpu_s']:.3f}",
         f"{r['per_point_points_per_cpu_s']:,.0f}"]]))
    print(f"bulk / per point: {r['ratio']:,.0f}x; target {TARGET:,} points/s (wall): "
          f"{'met' if r['meets_target'] else 'NOT met'}; rows equal on the sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
