"""The sweep driver at scale: a 2,000-point sweep of cheap points on a local Ray, with its
scheduling overhead per point, the driver's peak memory and the time `deepreshape sweep
status` takes on the root, each against its target (docs/sweeps.md, "At scale").

Each point runs a no-op method (`benchnoop`, written here as a plugin in a temporary site
directory that the Ray workers see through PYTHONPATH, as docs/extending.md describes), so
the figures are the driver's and the backend's, not training's. A quarter of the points
are roots and each has three dependents, the shape of a real sweep (a training, then
methods on it). A short warm-up sweep first starts Ray's workers (and their imports).

    overhead per point = (wall - work / slots) / points

is the wall time the sweep layer adds per point beyond the points' own work spread over
the backend's slots. Peak memory is this process's maximum resident set (the driver runs
here; on Ray the points run in workers). `sweep status` runs as the user runs it, a fresh
`python -m deepreshape.cli.main sweep status ROOT` (start-up and imports included).

    python benchmarks/sweep.py                               # 2,000 points, local Ray (~1 min)
    python benchmarks/sweep.py --points 100000 --backend local   # the driver alone at 100k
    python benchmarks/sweep.py --points 50 --backend local --json

`--trainings` runs the older comparison instead: the same grid of tiny trainings
sequentially (`--backend local`) and on a local Ray with two workers, timing the second of
two runs in fresh roots; overhead = (wall x workers - work) / points, and the speed-up.

    python benchmarks/sweep.py --trainings                   # 8 points, 3 epochs, 400 images
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepreshape.cli.common import table
from deepreshape.sweep import Point, Sweep, load_sweep, run_sweep
from deepreshape.sweep.state import SweepState

TARGETS = {"overhead_ms_per_point": 20.0, "driver_peak_mb": 500.0, "status_s": 1.0}

PLUGIN = '''"""A no-op deepreshape method for benchmarks/sweep.py: the point does nothing."""
from deepreshape.methods import Method


class BenchNoop(Method):
    name = "benchnoop"
    display = "no-op (benchmark)"

    def run(self, point, root, options):
        return {"i": point.settings["i"]}


METHOD = BenchNoop()
'''


def install_plugin(site: Path) -> None:
    """Write the `benchnoop` plugin (module and entry point) into `site` and put it on this
    process's path and on PYTHONPATH (inherited by Ray's workers and `sweep status`)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "deepreshape_benchnoop.py").write_text(PLUGIN)
    info = site / "deepreshape_benchnoop-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: deepreshape-benchnoop\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[deepreshape.methods]\nbenchnoop = deepreshape_benchnoop:METHOD\n")
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    from deepreshape.methods import METHODS

    METHODS.reload_plugins()
    METHODS.get("benchnoop")


def cheap_sweep(n: int, name: str = "bench") -> Sweep:
    """`n` no-op points: every fourth a root, the three after it depending on it."""
    points = []
    for i in range(n):
        root = i - i % 4
        deps = () if i == root else (f"p{root:06d}",)
        points.append(Point(f"p{i:06d}", "benchnoop", "grid", "resnet18-m2-d1,1,1,1", 0, {"i": i},
                            deps, f"p{i:06d}"))
    return Sweep(name, "benchmarks/sweep.py", "digits", None, None, points)


def start_ray(workers: int) -> float:
    """Start a local Ray of `workers` CPUs (the sweep backend reuses it); seconds it took."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    return time.perf_counter() - t0


def peak_mb() -> float:
    """This process's peak resident memory so far (MB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale(points: int, backend: str, workers: int, keep: Path | None = None) -> dict:
    """Run `points` no-op points on `backend` and measure the driver (see the docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        install_plugin(tmp / "site")
        kw: dict = {}
        init_s = 0.0
        if backend == "ray":
            init_s = start_ray(workers)
            kw = {"max_parallel": workers}
        try:
            run_sweep(cheap_sweep(4 * workers, "warm-up"), tmp / "warm", backend, quiet=True, **kw)
            writes = [0]
            real_write = SweepState.write

            def counted(self: SweepState) -> None:
                writes[0] += 1
                real_write(self)

            SweepState.write = counted  # type: ignore[method-assign]
            base_mb = peak_mb()
            root = keep or tmp / "root"
            t0 = time.perf_counter()
            state = run_sweep(cheap_sweep(points), root, backend, quiet=True, **kw)
            wall = time.perf_counter() - t0
            SweepState.write = real_write  # type: ignore[method-assign]
            slots = workers if backend == "ray" else 1
        finally:
            if backend == "ray":
                import ray

                ray.shutdown()
        t0 = time.perf_counter()
        status = subprocess.run([sys.executable, "-m", "deepreshape.cli.main", "sweep", "status",
                                 str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, timeout=600)
        status_s = time.perf_counter() - t0
        if status.returncode != 0:
            raise SystemExit(f"sweep status failed: {status.stderr.strip()}")
        recs = state.records.values()
        work = sum(r["seconds"] or 0.0 for r in recs)
        return {"backend": backend, "slots": slots, "points": points,
                "done": state.counts()["done"], "wall_s": wall, "ray_init_s": init_s,
                "work_s": work,
                "overhead_ms_per_point": 1000 * (wall - work / slots) / points,
                "driver_peak_mb": peak_mb(), "driver_mb_before": base_mb,
                "status_s": status_s, "sweep_json_writes": writes[0],
                "sweep_json_mb": (root / "sweep.json").stat().st_size / 1e6}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def scale_main(args: argparse.Namespace) -> int:
    """The driver at scale: one table of figures against their targets."""
    res = scale(args.points or 2000, args.backend, args.workers)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    rows = []
    for key, label, fmt in [("overhead_ms_per_point", "scheduling overhead per point (ms)", "{:.2f}"),
                            ("driver_peak_mb", "driver peak memory (MB)", "{:.0f}"),
                            ("status_s", "`sweep status` on the root (s)", "{:.2f}")]:
        rows.append([label, fmt.format(res[key]), f"{TARGETS[key]:g}",
                     f"{res[key] / TARGETS[key]:.2f}"])
    print(table(["measure", "measured", "target", "ratio"], rows))
    print(f"{res['done']}/{res['points']} points done on {res['backend']} ({res['slots']} slots) in "
          f"{res['wall_s']:.1f} s (points' own work {res['work_s']:.1f} s; Ray start "
          f"{res['ray_init_s']:.1f} s, not counted); sweep.json written {res['sweep_json_writes']} "
          f"times, {res['sweep_json_mb']:.1f} MB; driver {res['driver_mb_before']:.0f} MB before "
          "the sweep")
    ok = all(res[k] <= v for k, v in TARGETS.items()) and res["done"] == res["points"]
    return 0 if ok else 1


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
        init_s = start_ray(workers)
        kw = {"max_parallel": workers}
    try:
        _run(backend, sweep, **kw)
        wall, recs = _run(backend, sweep, **kw)
    finally:
        if backend == "ray":
            import ray

            ray.shutdown()
    work = sum(r["seconds"] for r in recs)
    n = len(recs)
    overhead = (wall * workers - work) / n
    return {"backend": backend, "workers": workers, "points": n, "wall_s": wall,
            "ray_init_s": init_s, "work_s": work, "point_s": work / n,
            "overhead_per_point_s": overhead, "overhead_share": overhead / (work / n),
            "accs": {r["id"]: r["result"]["final_acc"] for r in recs}}


def trainings_main(args: argparse.Namespace) -> int:
    """Run both backends on the same grid of tiny trainings and print the comparison."""
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


def main() -> int:
    """Parse the options and run the chosen benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=None,
                    help="points (default: 2000; with --trainings 8)")
    ap.add_argument("--backend", choices=["ray", "local"], default="ray",
                    help="where the cheap points run (default: a local Ray)")
    ap.add_argument("--workers", type=int, default=2, help="Ray CPUs, one point each (default 2)")
    ap.add_argument("--trainings", action="store_true",
                    help="the older comparison of tiny trainings, local vs Ray")
    ap.add_argument("--epochs", type=int, default=3, help="with --trainings")
    ap.add_argument("--limit", type=int, default=400, help="with --trainings")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.trainings:
        args.points = args.points or 8
        return trainings_main(args)
    return scale_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
