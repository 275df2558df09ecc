"""`deepreshape sweep FILE`: a grid of runs from a TOML file (or a shipped paper sweep),
on this machine, a Ray cluster or Slurm; `sweep status ROOT`, `sweep report ROOT`,
`sweep --list`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepreshape.cli.common import fmt_int, print_json, table
from deepreshape.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `sweep` sub-command."""
    p = sub.add_parser(
        "sweep", help="run a grid of experiments from a TOML sweep file (local, Ray, Slurm)",
        description="Run every point of a sweep file (or paper:fig4 ... paper:table6) under "
        "--out; `sweep status ROOT` and `sweep report ROOT` read a sweep root; `sweep --list` "
        "shows the shipped paper sweeps. See docs/sweeps.md.")
    p.add_argument("target", nargs="*", metavar="FILE | status ROOT | report ROOT",
                   help="a sweep file, paper:NAME, or status/report and a sweep root")
    p.add_argument("--list", action="store_true", help="list the shipped paper sweeps")
    p.add_argument("--dataset", default=None, help="override the file's data set "
                   "(cifar100, tinyimagenet, ...)")
    p.add_argument("--scale", default=None, help="apply the file's [scale.NAME] patch "
                   "(`tiny`: the same grid on digits, minutes on a laptop)")
    p.add_argument("--data-dir", default=None, help="data root (default: $DEEPRESHAPE_DATA)")
    p.add_argument("--out", default=None, help="sweep root (default: sweeps/<name>)")
    p.add_argument("--max-points", type=int, default=None, metavar="N",
                   help="refuse a sweep of more than N points before building it (default 10,000)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the points with exact counts and predicted latency; run nothing")
    from deepreshape.sweep.backends import BACKENDS, CONNECT_TIMEOUT_S

    p.add_argument("--backend", choices=BACKENDS.names(), default=None,
                   help="default: ray when the `cluster` extra is installed, else local "
                   "(slurm-local: submitit's local executor, for testing)")
    p.add_argument("--address", default=None, help="Ray cluster HOST:PORT (default: $RAY_ADDRESS "
                   "or a local Ray)")
    p.add_argument("--connect-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up joining the Ray cluster at --address after this long "
                   f"(default: {CONNECT_TIMEOUT_S:g})")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="GPUs per point (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-run", type=int, default=1, help="CPUs (torch threads) per point")
    p.add_argument("--procs-per-run", type=int, default=None,
                   help="DDP processes per training point (default: --gpus-per-run when above 1, "
                   "else 1; gloo on CPU)")
    p.add_argument("--max-parallel", type=int, default=None, help="at most this many points at once")
    p.add_argument("--partition", default=None, help="Slurm partition")
    p.add_argument("--time", type=int, default=None, help="Slurm time limit per point (minutes)")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when the point has a GPU)")
    p.add_argument("--retry-failed", action="store_true", help="run failed points again")
    p.add_argument("--no-report", action="store_true", help="skip results and plots at the end")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--json", action="store_true", help="JSON output (dry run, status, list)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape sweep`; returns the exit code."""
    t = args.target
    if args.list:
        return _list(args)
    if not t:
        raise UsageError("give a sweep file (or paper:NAME), `status ROOT`, `report ROOT` or --list")
    if t[0] in ("status", "report"):
        if len(t) != 2:
            raise UsageError(f"usage: deepreshape sweep {t[0]} ROOT")
        return _status(args, Path(t[1])) if t[0] == "status" else _report(args, Path(t[1]))
    if len(t) != 1:
        raise UsageError(f"give one sweep file, got {len(t)}: {' '.join(t)}")
    return _run(args, t[0])


def _load(args: argparse.Namespace, target: str):
    from deepreshape.sweep import DEFAULT_MAX_POINTS, load

    if args.max_points is not None and args.max_points < 1:
        raise UsageError(f"--max-points must be a positive integer, got {args.max_points}")
    return load(target, dataset=args.dataset, scale=args.scale, data_dir=args.data_dir,
                max_points=args.max_points or DEFAULT_MAX_POINTS)


def _default_root(args: argparse.Namespace, target: str, name: str, dataset: str) -> Path:
    if target.startswith("paper:"):
        return Path("sweeps") / f"paper-{name}-{args.scale or dataset}"
    return Path("sweeps") / name


def _run(args: argparse.Namespace, target: str) -> int:
    sw = _load(args, target)
    if args.dry_run:
        return _dry_run(args, sw)
    from deepreshape.sweep.backends import default_backend
    from deepreshape.sweep.runner import run_sweep

    root = Path(args.out) if args.out else _default_root(args, target, sw.name, sw.dataset)
    backend = args.backend or default_backend()
    for opt in ("max_parallel", "cpus_per_run", "procs_per_run", "time"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            raise UsageError(f"--{opt.replace('_', '-')} must be a positive integer, got {v}")
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        raise UsageError(f"--gpus-per-run must be >= 0, got {args.gpus_per_run}")
    if args.connect_timeout is not None and not args.connect_timeout > 0:
        raise UsageError("--connect-timeout must be a positive number of seconds, "
                         f"got {args.connect_timeout:g}")
    state = run_sweep(sw, root, backend, retry_failed=args.retry_failed, quiet=args.quiet,
                      address=args.address, connect_timeout=args.connect_timeout,
                      gpus_per_run=args.gpus_per_run,
                      cpus_per_run=args.cpus_per_run, procs_per_run=args.procs_per_run,
                      max_parallel=args.max_parallel,
                      partition=args.partition, time_min=args.time, device=args.device)
    if not args.no_report:
        from deepreshape.sweep.table import sweep_report

        rep = sweep_report(root)
        for note in rep.notes:
            print(f"note: {note}", file=sys.stderr)
    c = state.counts()
    total = len(state.records)
    if c["failed"]:
        print(f"deepreshape: error: {c['failed']} of {total} points failed ({c['skipped']} dependents "
              f"skipped); see `deepreshape sweep status {root}`", file=sys.stderr)
        return 1
    print(f"{sw.name}: {c['done']}/{total} points done -> {root}")
    return 0


STATUS_ROWS = 500
"""`sweep status` and `sweep --dry-run` show at most this many points in their tables (a
100,000-point table is no help on a terminal, and formatting it takes seconds); --json
gives every one."""


def _dry_run(args: argparse.Namespace, sw) -> int:
    from deepreshape.sweep.plan import dry_run

    plan = dry_run(sw)
    rows = plan.rows
    if args.json:
        print_json({"name": sw.name, "dataset": sw.dataset, "points": rows,
                    "gpu_hours": plan.gpu_hours})
        return 0
    lat = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    print(table(["point", "method", "needs", "ReLUs", "MACs", "trainings", "Cheetah s (pred.)"],
                [[r["id"], r["method"], len(r["deps"]), fmt_int(r["relus"]), fmt_int(r["macs"]),
                  r["trainings"], lat(r["predicted_latency_s"])] for r in rows[:STATUS_ROWS]]))
    if len(rows) > STATUS_ROWS:
        print(f"... {len(rows) - STATUS_ROWS:,} more points not shown; the same command with "
              "--json lists every one")
    print(f"{len(rows)} points on {sw.dataset}, about {plan.gpu_hours:.2g} GPU-hours of training "
          "(rough; docs/sweeps.md); nothing run (--dry-run)")
    return 0


def _status(args: argparse.Namespace, root: Path) -> int:
    from deepreshape.sweep.runner import summary_line
    from deepreshape.sweep.state import SweepState

    state = SweepState.read(root)
    if args.json:
        print_json({"sweep": state.info, "counts": state.counts(),
                    "points": list(state.records.values())})
        return 0
    records = list(state.records.values())
    if len(records) > STATUS_ROWS:  # a large sweep: what needs attention first, then the rest
        rank = {"running": 0, "failed": 1, "skipped": 2, "pending": 3, "done": 4}
        records = sorted(records, key=lambda r: rank[r["state"]])[:STATUS_ROWS]
    rows = []
    for r in records:
        res = r.get("result") or {}
        acc = res.get("final_acc", res.get("test_acc"))
        what = (r.get("error") or "") if r["state"] in ("failed", "skipped") else (
            f"{acc:.2f}%" if isinstance(acc, float) else
            f"order {','.join(map(str, res['order']))}" if res.get("order") else "")
        rows.append([r["id"], r["method"], r["state"],
                     "-" if r.get("seconds") is None else f"{r['seconds']:.1f}", what])
    print(table(["point", "method", "state", "seconds", "accuracy / reason"], rows))
    if len(state.records) > len(rows):
        print(f"... {len(state.records) - len(rows)} more points not shown (running, failed, skipped "
              f"and pending first); `deepreshape sweep status {root} --json` lists every one")
    print(summary_line(state))
    return 0


def _report(args: argparse.Namespace, root: Path) -> int:
    from deepreshape.sweep.table import sweep_report

    rep = sweep_report(root)
    if args.json:
        print_json({"rows": rep.rows, "files": [str(f) for f in rep.files], "notes": rep.notes})
        return 0
    for note in rep.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(rep.rows)} result rows; wrote " + ", ".join(str(f) for f in rep.files))
    return 0


def _list(args: argparse.Namespace) -> int:
    from deepreshape.sweep import load, paper_names
    from deepreshape.sweep.plan import gpu_hours

    rows = []
    for name in paper_names():
        sw = load(name, dataset=args.dataset, scale=args.scale)
        rows.append({"name": name, "title": sw.name, "dataset": sw.dataset, "points": len(sw.points),
                     "gpu_hours": gpu_hours(sw)})
    if args.json:
        print_json(rows)
        return 0
    print(table(["sweep", "data set", "points", "GPU-hours (est.)"],
                [[r["name"], r["dataset"], r["points"], _hours(r["gpu_hours"])] for r in rows]))
    return 0


def _hours(h: float) -> str:
    return f"{h:.3g}" if h >= 0.01 else "<0.01"
