"""`deepreshape pareto RUNS...`: accuracy vs ReLUs / MACs / latency / bytes, frontier marked."""

from __future__ import annotations

import argparse
import sys
import textwrap

from deepreshape.cli.common import fmt_int, print_json, table
from deepreshape.pi.protocols import PROTOCOLS
from deepreshape.reports.figures import clip
from deepreshape.reports.paretoplot import PEER_CHOICES, X_AXES, ParetoResult, pareto

WIDTH = 100  # every table fits a 100-column terminal


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `pareto` sub-command."""
    p = sub.add_parser(
        "pareto", help="accuracy vs ReLUs/MACs/latency/bytes over many runs, with peers",
        description="Plot final top-1 accuracy against a cost for every run found under RUNS "
        "(searched recursively), mark the Pareto frontier of the designs (least cost, most "
        "accuracy; criticality probes are shown apart) and, for --x relus, draw the peers' "
        "published points with their ReLU conventions. Writes OUT (PNG) and the same table as "
        "OUT.csv and OUT.json.")
    p.add_argument("runs", nargs="+", metavar="RUNS", help="run directories or folders of runs")
    p.add_argument("--x", default="relus", help=f"cost axis: {', '.join(X_AXES)} (latency and "
                   "bytes come from the runs' secure-inference results; runs without one are "
                   "skipped); default relus")
    p.add_argument("--link", default=None, metavar="loopback|lan|wan|RATE:RTT|hosts",
                   help="with --x latency/bytes: plot the results measured over this link only "
                   "(default: the link most runs were measured over; links are never mixed)")
    p.add_argument("--protocol", default=None, choices=PROTOCOLS.names(),
                   help="with --x latency/bytes: the protocol's results only (default: the one "
                   "most runs have, cheetah on a tie)")
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


def fit_table(headers: list[str], rows: list[list[str]], align: str, shrink: list[int],
              width: int = WIDTH) -> str:
    """`table` cut to `width` columns: the `shrink` columns give up the excess in proportion
    to what they have above 12 characters, an ellipsis marking each cut."""
    cells = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    over = sum(widths) + 2 * (len(widths) - 1) - width
    spare = {i: max(widths[i] - max(len(headers[i]), 12), 0) for i in shrink}
    total = sum(spare.values())
    if over > 0 and total:
        cuts = {i: min(spare[i], -(-over * spare[i] // total)) for i in shrink}  # ceil
        for i, cut in cuts.items():
            widths[i] -= cut
            for r in cells:
                r[i] = clip(r[i], widths[i])
    return table(headers, cells, align)


_SHORT_METHOD = {"criticality probe": "probe"}


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape pareto`; returns the exit code."""
    res = pareto(args.runs, x=args.x, peers=args.peers, out=args.out, link=args.link,
                 protocol=args.protocol)
    for note in res.notes:  # one note each, wrapped to the terminal's 100 columns
        print(textwrap.fill(f"note: {note}", WIDTH, subsequent_indent="  ",
                            break_on_hyphens=False), file=sys.stderr)
    if args.json:
        print_json(res.to_dict())
        return 0
    rows = [[f"{r.number}{'*' if r.on_frontier else ''}", r.name,
             _SHORT_METHOD.get(r.method, r.method), r.label,
             _fmt_x(res, r.x), f"{r.acc:.2f}%"] for r in res.rows]
    data = ", ".join(res.datasets)
    runs = f"{len(res.rows)} run{'s' * (len(res.rows) != 1)}"
    print(textwrap.fill(f"{runs} on {data}: final top-1 accuracy vs {res.x_label}; "
                        "* = Pareto frontier", WIDTH))
    head = X_AXES[res.x].label.split(" (")[0]
    print(fit_table(["#", "network", "method", "run", head, "acc"], rows,
                    "<<<<>>", shrink=[1, 3]))
    if res.peers_shown:
        where = (f"{res.peers_dataset}, not {data}: a different data set"
                 if res.cross_dataset else res.peers_dataset)
        print(f"\npublished points on {where} (ReLUs as each peer counts them):")
        print(fit_table(["method", "points", "stem", "source"],
                        [[s.method, len(s.points), s.convention.replace("stem ", ""), s.source]
                         for s in res.peers], "<><<", shrink=[3]))
    print(f"wrote {res.png} (and {res.csv.name}, {res.json.name} beside it)")
    return 0
