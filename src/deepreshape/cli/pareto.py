"""`deepreshape pareto RUNS...`: accuracy vs ReLUs / MACs / latency / bytes, frontier marked."""

from __future__ import annotations

import argparse
import sys

from deepreshape.cli.common import fmt_int, print_json, table
from deepreshape.report import PEER_CHOICES, X_AXES, ParetoResult, pareto


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `pareto` sub-command."""
    p = sub.add_parser(
        "pareto", help="accuracy vs ReLUs/MACs/latency/bytes over many runs, with peers",
        description="Plot final top-1 accuracy against a cost for every run found under RUNS "
        "(searched recursively), mark the Pareto frontier (least cost, most accuracy) and, for "
        "--x relus, draw the peers' published points with their ReLU conventions. Writes OUT "
        "(PNG) and the same table as OUT.csv and OUT.json.")
    p.add_argument("runs", nargs="+", metavar="RUNS", help="run directories or folders of runs")
    p.add_argument("--x", default="relus", help=f"cost axis: {', '.join(X_AXES)} (latency and "
                   "bytes come from pi.json; runs without one are skipped); default relus")
    p.add_argument("--peers", default="auto", help=f"published points to show: "
                   f"{', '.join(PEER_CHOICES)} (auto: the runs' data set, if peers report it)")
    p.add_argument("--out", default="pareto.png", help="PNG to write (default pareto.png); "
                   ".csv and .json go beside it")
    p.add_argument("--json", action="store_true", help="print the table as one JSON object")
    p.set_defaults(func=run)


def _fmt_x(res: ParetoResult, v: float) -> str:
    if res.x == "latency":
        return f"{v:.4g} s"
    if res.x == "bytes":
        return f"{v / 1e6:,.3f} MB"
    return fmt_int(v)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape pareto`; returns the exit code."""
    res = pareto(args.runs, x=args.x, peers=args.peers, out=args.out)
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print_json(res.to_dict())
        return 0
    axis = X_AXES[res.x]
    rows = [[r.label, r.arch, _fmt_x(res, r.x), f"{r.acc:.2f}%", "*" if r.on_frontier else ""]
            for r in sorted(res.rows, key=lambda r: (r.x, -r.acc))]
    print(f"{len(res.rows)} runs; x = {axis.label}, y = final top-1 accuracy; * = Pareto frontier")
    print(table(["run", "arch", axis.label.split(" (")[0], "acc", "frontier"], rows, "<<>><"))
    if res.peers and res.x == "relus":
        print(f"\npublished points on {res.peers_dataset} (ReLUs as each peer counts them):")
        print(table(["method", "points", "convention", "source"],
                    [[s.method, len(s.points), s.convention, s.source] for s in res.peers], "<><<"))
    print(f"wrote {res.png}, {res.csv}, {res.json}")
    return 0
