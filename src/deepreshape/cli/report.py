"""`deepreshape report RUN`: plots and a Markdown summary of one run directory."""

from __future__ import annotations

import argparse
import sys

from deepreshape.cli.common import fmt_int, print_json
from deepreshape.reports.runreport import report
from deepreshape.rundir import schema

_WHAT = {
    "relu_distribution": "share of ReLUs per stage (the paper's Figure 5)",
    "stagewise_normalized": "stage ReLUs and MACs normalized as in Table 8",
    "training": "loss and train/test accuracy per epoch",
    "criticality": "C_k per stage and the criticality order",
    "pi_breakdown": "secure-inference time and bytes per kind, one protocol and link",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` sub-command."""
    p = sub.add_parser(
        "report", help="plots and a Markdown summary of one run",
        description="Write OUT/report.md and PNG plots for a run directory: network, exact "
        "counts per stage, ReLU distribution, Table 8 normalization, results, training curves, "
        f"and criticality ({schema.CRITICALITY.name}), secure inference (one result per protocol "
        f"and link) and the SNL mask phase ({schema.SNL.name}) when present.")
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
    print(f"{s['name']} on {s.get('dataset')}: {acc_text}, {fmt_int(s['relus'])} ReLUs, "
          f"{fmt_int(s['macs'])} MACs, {fmt_int(s['params'])} params")
    for pi in s.get("pi", {}).values():
        lat = "n/a" if pi["latency_s"] is None else f"{pi['latency_s']:.3g} s"
        mb = "n/a" if pi["bytes"] is None else f"{pi['bytes'] / 1e6:,.3g} MB"
        print(f"secure inference, {pi['protocol']} over {pi['link']}: {lat} online, {mb}")
    print(f"wrote {res.markdown}")
    pad = max((len(p.name) for p in res.plots.values()), default=0)
    for name, path in res.plots.items():
        print(f"  {path.name:<{pad}}  {_WHAT.get(name.split('-')[0], '')}")
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
