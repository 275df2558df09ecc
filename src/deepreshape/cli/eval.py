"""`deepreshape eval RUN`: test accuracy and counts of a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepreshape.cli.common import fmt_int, print_json, run_options
from deepreshape.errors import CheckpointError
from deepreshape.rundir import schema


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` sub-command."""
    p = sub.add_parser("eval", help="test accuracy and counts of a run directory")
    p.add_argument("run", help="run directory")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def check_run_dir(path: str | Path) -> None:
    """Fail fast, before torch is imported, when RUN is not a trained run directory."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such run directory")
    if not schema.CONFIG.exists(p):
        raise CheckpointError(f"{schema.CONFIG.path(p)}: no {schema.CONFIG.name} here (is this "
                              "a deepreshape run directory?)")
    if not schema.CHECKPOINT.exists(p):
        raise CheckpointError(f"{schema.CHECKPOINT.path(p)}: no checkpoint (train the run first)")


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape eval`; returns the exit code."""
    check_run_dir(args.run)
    from deepreshape.reports.readers import run_name
    from deepreshape.rundir.run import load_run
    from deepreshape.training.evaluate import evaluate_run  # torch: only once RUN looks like a run

    r = evaluate_run(args.run, options=run_options(args))
    r["name"] = run_name(load_run(args.run))  # the display name people read (a probe says so)
    if args.json:
        print_json(r)
    else:
        print(f"{r['name']} on {r['dataset']}: test accuracy {r['test_acc']:.2f}%, "
              f"{fmt_int(r['relus'])} ReLUs, {fmt_int(r['macs'])} MACs, {fmt_int(r['params'])} params")
    return 0
