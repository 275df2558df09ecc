"""`deepreshape demo`: the whole path, small and offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepreshape.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `demo` sub-command."""
    p = sub.add_parser("demo", help="the whole paper's path on the embedded digits set, offline",
                       description="count, train a baseline, measure its criticality, design "
                       "HRNs for the measured order, train one, DeepReDuce + ReLU-reuse, SNL, "
                       "secure two-party inference, reports and a Pareto plot: under 10 minutes "
                       "on 2 CPU cores. A second run reuses finished steps.")
    p.add_argument("--out", default="deepreshape-demo", help="output folder")
    p.add_argument("--fast", action="store_true", help="a sub-minute smoke run on 256 images (what CI runs)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape demo`; returns the exit code."""
    from deepreshape.demo import run_demo

    summary = run_demo(args.out, fast=args.fast, quiet=args.quiet)
    if args.json:
        print_json(summary)
        return 0
    print(Path(summary["summary_md"]).read_text())
    print(f"Pareto plot {summary['pareto']}, run reports in RUN/report/, everything under "
          f"{summary['out']}/")
    print(f"summary: {summary['summary_md']}")
    return 0
