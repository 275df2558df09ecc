"""`deepreshape report RUN`: plots and a Markdown summary of one run directory."""

from __future__ import annotations

import argparse
import sys

from deepreshape.cli.common import fmt_int, print_json
from deepreshape.report import report

_WHAT = {
    "relu_distribution": "share of ReLUs per stage (the paper's Figure 5)",
    "stagewise_normalized": "stage ReLUs and MACs normalized as in Table 8",
    "training": "loss and train/test accuracy per epoch",
    "criticality": "C_k per stage and the criticality order",
    "pi_breakdown": "secure-inference time and bytes per kind of operation",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` sub-command."""
    p = sub.add_parser(
        "report", help="plots and a Markdown summary of one run",
        description="Write OUT/report.md and PNG plots for a run directory: network, exact "
        "counts per stage, ReLU distribution, Table 8 normalization, results, training curves, "
        "and criticality (criticality.json) and secure inference (pi.json) when present.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--out", default=None, help="report folder (default RUN/report)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape report`; returns the exit code."""
    res = report(args.run, out=args.out)
    if args.json:
        print_json(res.to_dict())
        return 0
    s = res.summary
    acc = s.get("final_acc")
    acc_text = f"final accuracy {acc:.2f}%" if isinstance(acc, int | float) else "no results yet"
    print(f"{s['arch']} on {s.get('dataset')}: {acc_text}, {fmt_int(s['relus'])} ReLUs, "
          f"{fmt_int(s['macs'])} MACs, {fmt_int(s['params'])} params")
    print(f"wrote {res.markdown}")
    for name, path in res.plots.items():
        print(f"  {path.name:<26} {_WHAT.get(name, '')}")
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
