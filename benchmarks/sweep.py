"""The same grid of tiny runs, sequentially (`--backend local`) vs on a local Ray with two
workers, in one run: the sweep layer's scheduling overhead per point and the speed-up.

Every point trains a tiny network on digits (`--points` networks, `--epochs` epochs on
`--limit` images, one torch thread each). For each backend the script times the whole
sweep (wall) and sums the seconds the points themselves took (`work`, from sweep.json).
The overhead per point is what the workers spent on anything but the points:

    overhead = (wall x workers - work) / points

Each backend runs the grid twice in fresh roots and times the second run, so one-time
costs (imports, Ray's worker processes) are left out; starting the local Ray is shown on
its own. The overhead's share of a point's own time is the figure to keep under 5%. The
speed-up is sequential wall over Ray wall; with two workers on two cores it can reach 2x
only on an idle machine.

    python benchmarks/sweep.py                       # 8 points, 3 epochs, 400 images
    python benchmarks/sweep.py --points 4 --epochs 2 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from deepreshape.cli.common import table
from deepreshape.sweep import load_sweep, run_sweep
from deepreshape.sweep.state import SweepState


def sweep_text(points: int, epochs: int, limit: int) -> str:
    """A grid of `points` tiny trainings (widths 2, 3, ...)."""
    return f"""
name = "bench"
dataset = "digits"
limit = {limit}
[recipe]
epochs = {epochs}
batch_size = 64
lr = 0.05
[[experiment]]
name = "grid"
arch = "resnet18-m{{2..{points + 1}}}-d1,1,1,1"
"""


def _run(backend: str, sweep, **kw) -> tuple[float, list[dict]]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    try:
        t0 = time.perf_counter()
        run_sweep(sweep, root, backend, quiet=True, **kw)
        wall = time.perf_counter() - t0
        recs = list(SweepState.read(root).records.values())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if any(r["state"] != "done" for r in recs):
        raise SystemExit(f"{backend}: not every point finished")
    return wall, recs


def measure(backend: str, path: Path, workers: int) -> dict:
    """Run the sweep at `path` on `backend` twice, each in a fresh root: the first run warms
    up (imports, Ray's worker processes), the second is timed. Wall, work, overhead."""
    sweep = load_sweep(path)
    init_s = 0.0
    kw = {}
    if backend == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        init_s = time.perf_counter() - t0
        kw = {"max_parallel": workers}
    try:
        _run(backend, sweep, **kw)
        wall, recs = _run(backend, sweep, **kw)
    finally:
        if backend == "ray":
            ray.shutdown()
    work = sum(r["seconds"] for r in recs)
    n = len(recs)
    overhead = (wall * workers - work) / n
    return {"backend": backend, "workers": workers, "points": n, "wall_s": wall,
            "ray_init_s": init_s, "work_s": work, "point_s": work / n,
            "overhead_per_point_s": overhead, "overhead_share": overhead / (work / n),
            "accs": {r["id"]: r["result"]["final_acc"] for r in recs}}


def main() -> int:
    """Run both backends on the same grid and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.toml"
        path.write_text(sweep_text(args.points, args.epochs, args.limit))
        seq = measure("local", path, 1)
        par = measure("ray", path, 2)
    same = seq.pop("accs") == par.pop("accs")
    rows = [seq, par]
    if args.json:
        print(json.dumps({"rows": rows, "speedup": seq["wall_s"] / par["wall_s"],
                          "same_results": same}, indent=2))
        return 0
    print(table(["backend", "workers", "points", "wall s", "Ray start s", "s per point",
                 "overhead s/point", "overhead share"],
                [[r["backend"], r["workers"], r["points"], f"{r['wall_s']:.1f}",
                  f"{r['ray_init_s']:.1f}", f"{r['point_s']:.2f}",
                  f"{r['overhead_per_point_s']:.2f}", f"{100 * r['overhead_share']:.1f}%"]
                 for r in rows]))
    print(f"speed-up of Ray (2 workers) over sequential: {seq['wall_s'] / par['wall_s']:.2f}x; "
          f"same accuracies on both: {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
