"""`deepreshape eval RUN`: test accuracy and counts of a trained run."""

from __future__ import annotations

import argparse

from deepreshape.cli.common import fmt_int, print_json
from deepreshape.evaluate import evaluate_run


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` sub-command."""
    p = sub.add_parser("eval", help="test accuracy and counts of a run directory")
    p.add_argument("run", help="run directory")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape eval`; returns the exit code."""
    r = evaluate_run(args.run, data_dir=args.data_dir, device=args.device)
    if args.json:
        print_json(r)
    else:
        print(f"{r['name']} on {r['dataset']}: test accuracy {r['test_acc']:.2f}%, "
              f"{fmt_int(r['relus'])} ReLUs, {fmt_int(r['macs'])} MACs, {fmt_int(r['params'])} params")
    return 0
