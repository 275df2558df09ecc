"""`deepreshape design`: DeepReShape's ReLU-equalized widths and/or depths, priced for PI.

Every solution shows its predicted Cheetah latency and bytes over a link beside its ReLUs
and MACs; `--relus/--latency/--bytes` size the base width to a budget; `--explore` prices
whole BaseCh/StageCh/HRN design spaces.
"""

from __future__ import annotations

import argparse
import sys

from deepreshape.cli.common import add_shape_args, fmt_int, print_json, table
from deepreshape.datasets import DATASETS
from deepreshape.design.costs import (
    DEFAULT_M,
    FAMILIES,
    RANKS,
    Budget,
    CostDesign,
    Explored,
    Priced,
    design_for_cost,
    explore,
    parse_amount,
    plot_explored,
)
from deepreshape.design.solver import (
    DEFAULT_DEPTH_BOUNDS,
    DEFAULT_MULT_BOUNDS,
    VARY,
    DesignResult,
    parse_ints,
)
from deepreshape.design.space import span
from deepreshape.errors import UsageError
from deepreshape.spec import DEFAULT_DATASET

EXPLORE_M = "8,16,32,64"
EXPLORE_MULT = "2:8"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `design` sub-command."""
    p = subparsers.add_parser(
        "design",
        help="DeepReShape: ReLU-equalized networks for a criticality order, priced for PI",
        description="Solve DeepReShape's compound inequalities (Algorithm 1) for a "
        "criticality order and print every componentwise-minimal solution with its exact "
        "ReLUs, MACs (multiply-accumulates) and parameters, and its Cheetah latency and "
        "bytes per query as the cost model predicts them over --link. A budget (--relus, "
        "--latency, --bytes) gives each solution the largest base width m that meets it; "
        "--explore prices whole BaseCh/StageCh/HRN design spaces instead.",
    )
    p.add_argument("--order", default=None,
                   help="stages from most to least critical, e.g. 3,2,4,1 (required unless "
                   "--explore, which marks the networks equalized for it; default there 3,2,4,1)")
    p.add_argument("--vary", choices=VARY, default="width",
                   help="free variables: stage multipliers, stage depths, or both")
    p.add_argument("--base", default="hrn-2x2x2x",
                   help="network to reshape (default: ResNet18 with m=16, named as HybReNets)")
    p.add_argument("--depths", help="fixed stage depths when width varies (default: base's)")
    p.add_argument("--multipliers",
                   help="fixed stage multipliers when depth varies, e.g. 2,2,2 (default: base's)")
    p.add_argument("--mult-min", type=int, default=DEFAULT_MULT_BOUNDS[0],
                   help="smallest free multiplier (default %(default)s)")
    p.add_argument("--mult-max", type=int, default=DEFAULT_MULT_BOUNDS[1],
                   help="largest free multiplier (default %(default)s)")
    p.add_argument("--depth-min", type=int, default=DEFAULT_DEPTH_BOUNDS[0],
                   help="smallest free stage depth (default %(default)s)")
    p.add_argument("--depth-max", type=int, default=DEFAULT_DEPTH_BOUNDS[1],
                   help="largest free stage depth (default %(default)s)")
    p.add_argument("--exact", action="store_true",
                   help="solve on the base's exact stage ReLUs (the stem counted in stage1) "
                   "instead of Algorithm 1's model, which leaves the stem out as the paper's "
                   "HRNs do")
    add_shape_args(p)
    cost = p.add_argument_group("PI cost (predicted by the cost model, no secure run)")
    cost.add_argument("--link", default="loopback", metavar="loopback|lan|wan|RATE:RTT",
                      help="network between the parties: the shipped cost model's loopback, or "
                      "the Cheetah paper's lan (3 Gbit/s, 0.3 ms) / wan (400 Mbit/s, 40 ms) "
                      "(default %(default)s)")
    cost.add_argument("--rank", choices=RANKS, default=None,
                      help="sort solutions by this, cheapest first (default: latency with "
                      "--relus, else relus)")
    cost.add_argument("--relus", default=None, metavar="N",
                      help="budget: at most N ReLUs, e.g. 180k")
    cost.add_argument("--latency", default=None, metavar="T",
                      help="budget: at most T predicted latency per query, e.g. 30s")
    cost.add_argument("--bytes", default=None, metavar="B",
                      help="budget: at most B predicted bytes per query, e.g. 60MB")
    cost.add_argument("--m", default=None, metavar="RANGE",
                      help="base widths m to choose from: A:B, A:B:STEP or a list (default "
                      f"{DEFAULT_M[0]}:{DEFAULT_M[-1]} for a budget, "
                      f"{EXPLORE_M} for --explore)")
    cost.add_argument("--cost-model", default=None, metavar="PATH",
                      help="cost model to predict with (default: the shipped costmodel.json)")
    ex = p.add_argument_group("--explore: a whole design space")
    ex.add_argument("--explore", action="store_true",
                    help="price BaseCh (m), StageCh (m, one multiplier) and HRN (m, a multiplier "
                    "per stage) networks over --m and --mult")
    ex.add_argument("--mult", default=EXPLORE_MULT, metavar="RANGE",
                    help="multipliers of StageCh and HRN networks (default %(default)s)")
    ex.add_argument("--families", default=",".join(FAMILIES),
                    help="which of basech,stagech,hrn (default all)")
    ex.add_argument("--top", type=int, default=16,
                    help="ReLU ranges (log-spaced) in the table (default %(default)s)")
    ex.add_argument("--plot", default=None, metavar="PNG",
                    help="write predicted latency against ReLUs to this PNG")
    p.add_argument("--json", action="store_true", help="print the solutions as one JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape design`; returns the exit code."""
    info = DATASETS.get(args.dataset or DEFAULT_DATASET)
    size, classes = info.input_size, info.num_classes
    size = size if args.input_size is None else args.input_size
    classes = classes if args.num_classes is None else args.num_classes
    if args.explore:
        return _explore(args, size, classes)
    if args.order is None:
        raise UsageError("--order is required (stages from most to least critical, e.g. "
                         "3,2,4,1), unless --explore")
    if args.plot:
        raise UsageError("--plot applies to --explore")
    budget = Budget(
        relus=None if args.relus is None else int(parse_amount(args.relus, "relus")),
        latency_s=None if args.latency is None else parse_amount(args.latency, "latency"),
        bytes=None if args.bytes is None else parse_amount(args.bytes, "bytes"))
    if args.m is not None and not budget:
        raise UsageError("--m chooses base widths for a budget (--relus, --latency, --bytes) "
                         "or --explore")
    ms = span(args.m, "--m") if args.m else DEFAULT_M
    res = design_for_cost(
        args.order, budget=budget, link=args.link, rank=args.rank,
        m_values=ms, model=args.cost_model,
        vary=args.vary,
        depths=parse_ints(args.depths, "--depths") if args.depths else None,
        multipliers=_multipliers(args.multipliers),
        mult_bounds=(args.mult_min, args.mult_max),
        depth_bounds=(args.depth_min, args.depth_max),
        base=args.base, input_size=size, num_classes=classes, exact=args.exact,
    )
    if args.json:
        print_json(res.to_list())
    else:
        print(format_result(res))
    return 0


def _multipliers(text: str | None) -> tuple[int, ...] | None:
    """'2,2,2' or '2x2x2x' -> (2, 2, 2)."""
    if not text:
        return None
    values = parse_ints(text.lower().replace("x", ",").rstrip(","), "--multipliers")
    if not values:
        raise UsageError(f"--multipliers must list integers like 2,2,2, got {text!r}")
    return values


# --------------------------------------------------------------------------- table


def format_result(res: CostDesign) -> str:
    """Header lines, one row per solution (fits 100 columns), and the `*` footnote."""
    result = res.result
    order = " > ".join(f"stage{c}" for c in result.order)
    n = len(res.priced)
    how = "exact stage ReLUs" if result.exact else "Algorithm 1's model"
    lines = [f"DeepReShape for {order} ({_free(result)}; {how})",
             f"base {result.base}, {result.input_size}x{result.input_size} input, "
             f"{result.num_classes} classes: {n} solution{'s' * (n != 1)}, ranked by {res.rank}"]
    if res.budget:
        lines.append(f"budget {res.budget.describe()}: each takes the largest base width m in "
                     f"{_span_text(list(res.m_values))} that meets it")
    lines += [_cost_line(res), ""]
    rows = [_row(p) for p in res.priced]
    headers = ["network", "ReLUs", "MACs", "params", "latency s", "MB", "stage ReLUs %"]
    lines.append(table(headers, rows, align="<>>>>><"))
    if res.dropped:
        lines.append(f"no base width in {_span_text(list(res.m_values))} meets the budget for: "
                     + ", ".join(res.dropped))
    if res.capped:
        lines.append(f"m reached the top of the range for {', '.join(res.capped)}: "
                     "raise --m to use more of the budget")
    if any(p.solution.order_violations for p in res.priced):
        lines += ["", STAR_NOTE]
    return "\n".join(lines)


STAR_NOTE = ("* exact ReLUs break the order (Alg. 1 omits the stem, in stage1; the paper's HRNs "
             "too): try --exact")
"""The footnote under a table with marked solutions (one line)."""


def _cost_line(res: CostDesign) -> str:
    """Two lines: what the latency and bytes columns are, and how far to trust them."""
    from deepreshape.pi.costs import linkcost

    p = res.priced[0].prediction if res.priced else {}
    err = (p.get("heldout_error") or {}).get("latency_s", {}).get("mean_abs")
    berr = (p.get("heldout_error") or {}).get("bytes", {}).get("mean_abs")
    errs = (f"held-out error {100 * err:.0f}% latency, {100 * berr:.0f}% bytes"
            if err is not None and berr is not None else "no held-out error recorded")
    extra = (f"; link adds {linkcost.ROUNDS_PER_RELU_LAYER} RTTs per ReLU layer, "
             f"{linkcost.ROUNDS_PER_LINEAR_LAYER} per conv" if p.get("link_model") else "")
    return (f"latency, MB: predicted Cheetah cost per query over {res.link}\n"
            f"  (cost model: {errs}{extra})")


def _free(result: DesignResult) -> str:
    mlo, mhi = result.mult_bounds
    dlo, dhi = result.depth_bounds
    return {"width": f"multipliers free in {mlo}..{mhi}",
            "depth": f"depths free in {dlo}..{dhi}",
            "both": f"multipliers in {mlo}..{mhi}, depths in {dlo}..{dhi}"}[result.vary]


def short(n: float) -> str:
    """A large count in a few characters: 35.1M, 1.05G, 48.7K."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.3g}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return str(int(n))


def _row(p: Priced) -> list[str]:
    s = p.solution
    shares = "/".join(f"{100 * f:.1f}" for f in s.shares)
    return [s.name + (" *" if s.order_violations else ""), fmt_int(s.relus), short(s.macs),
            short(s.params), f"{p.latency_s:.2f}", f"{p.bytes / 1e6:.1f}", shares]


# --------------------------------------------------------------------------- explore


def _explore(args: argparse.Namespace, size: int, classes: int) -> int:
    for opt in ("relus", "latency", "bytes", "rank"):
        if getattr(args, opt) is not None:
            raise UsageError(f"--{opt} applies to solutions of --order, not to --explore")
    if args.vary != "width" or args.multipliers or args.base != "hrn-2x2x2x" or args.exact:
        raise UsageError("--explore spans ResNet18-style BaseCh/StageCh/HRN networks: it takes "
                         "--m, --mult, --depths, --families, not --vary/--base/--multipliers/"
                         "--exact")
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    ex = explore(span(args.m or EXPLORE_M, "--m"), span(args.mult, "--mult"),
                 families=[f.strip() for f in args.families.split(",") if f.strip()],
                 order=args.order or "3,2,4,1",
                 depths=parse_ints(args.depths, "--depths") if args.depths else (2, 2, 2, 2),
                 input_size=size, num_classes=classes, link=args.link, model=args.cost_model)
    if args.plot:
        plot_explored(ex, args.plot)
    if args.json:
        print_json(ex.to_list())
    else:
        print(format_explored(ex, args.top))
    if args.plot:
        print(f"-> {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def format_explored(ex: Explored, bins: int) -> str:
    """Header lines and, per ReLU bin, the fastest network and each family's fastest."""
    kinds = [k for k in FAMILIES if (ex.family == k).any()]
    m = sorted(set(ex.m.tolist()))
    lines = [
        "Design space: " + ", ".join(f"{int((ex.family == k).sum()):,} {_FAMILY_NAMES[k]}"
                                     for k in kinds)
        + f" (m {_span_text(m)}, depths {','.join(map(str, ex.depths))})",
        f"{len(ex):,} networks at {ex.input_size}x{ex.input_size}, {ex.num_classes} classes, "
        f"priced in {ex.seconds:.2f} s",
        f"latency, MB: predicted Cheetah cost per query over {ex.link}",
        "per ReLU range: the fastest network, and each family's fastest (s); --json has all",
        "",
    ]
    rows = []
    for lo, hi, best in ex.fastest(bins):
        i = min(best.values(), key=lambda j: ex.latency_s[j])
        rows.append([f"{short(lo)}-{short(hi)}", ex.name(i), short(ex.macs[i]),
                     f"{ex.latency_s[i]:.2f}", f"{ex.bytes[i] / 1e6:.1f}",
                     *(f"{ex.latency_s[best[k]]:.2f}" if k in best else "-" for k in kinds)])
    lines.append(table(["ReLUs", "fastest", "MACs", "latency s", "MB",
                        *(f"{_FAMILY_NAMES[k]} s" for k in kinds)], rows,
                       align="<<>>>" + ">" * len(kinds)))
    return "\n".join(lines)


_FAMILY_NAMES = {"basech": "BaseCh", "stagech": "StageCh", "hrn": "HRN"}


def _span_text(values: list[int]) -> str:
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ",".join(map(str, values))
