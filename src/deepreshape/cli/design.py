"""`deepreshape design`: DeepReShape's ReLU-equalized widths and/or depths for an order."""

from __future__ import annotations

import argparse

from deepreshape.cli.common import add_shape_args, fmt_int, print_json, table
from deepreshape.design import (
    DEFAULT_DEPTH_BOUNDS,
    DEFAULT_MULT_BOUNDS,
    VARY,
    DesignResult,
    Solution,
    design,
    parse_ints,
)
from deepreshape.errors import UsageError
from deepreshape.spec import DATASET_SHAPES, DEFAULT_DATASET


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `design` sub-command."""
    p = subparsers.add_parser(
        "design",
        help="DeepReShape: minimal ReLU-equalized multipliers/depths for a criticality order",
        description="Solve DeepReShape's compound inequalities (Algorithm 1) for a "
        "criticality order and print every componentwise-minimal solution with its exact "
        "ReLUs, MACs (multiply-accumulates) and parameters.",
    )
    p.add_argument("--order", required=True,
                   help="stages from most to least critical, e.g. 3,2,4,1")
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
    add_shape_args(p)
    p.add_argument("--json", action="store_true", help="print the solutions as one JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape design`; returns the exit code."""
    size, classes = DATASET_SHAPES[args.dataset or DEFAULT_DATASET]
    result = design(
        args.order,
        vary=args.vary,
        depths=parse_ints(args.depths, "--depths") if args.depths else None,
        multipliers=_multipliers(args.multipliers),
        mult_bounds=(args.mult_min, args.mult_max),
        depth_bounds=(args.depth_min, args.depth_max),
        base=args.base,
        input_size=size if args.input_size is None else args.input_size,
        num_classes=classes if args.num_classes is None else args.num_classes,
    )
    if args.json:
        print_json(result.to_list())
    else:
        print(format_result(result))
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


def format_result(result: DesignResult) -> str:
    """A header, one row per solution, and a footnote for exact-order violations."""
    order = " > ".join(f"stage{c}" for c in result.order)
    lines = [
        f"DeepReShape for {order} ({_free(result)}); base {result.base}, "
        f"{result.input_size}x{result.input_size} input, {result.num_classes} classes: "
        f"{len(result)} minimal solution{'s' * (len(result) != 1)}",
        "",
    ]
    headers = ["network", "mult", "depths",
               *(f"stage{k} ReLUs (share)" for k in range(1, len(result.order) + 1)),
               "ReLUs", "MACs", "params"]
    lines.append(table(headers, [_row(s) for s in result]))
    broken = [s for s in result if s.order_violations]
    if broken:
        lines += ["", "* exact counts break the order (the model leaves out the stem's ReLUs, "
                      "counted in stage1, and the downsampling blocks):"]
        lines += [f"  {s.name}: " + ", ".join(f"stage{a} > stage{b}" for a, b in
                                             s.order_violations) + " fail"
                  for s in broken]
    return "\n".join(lines)


def _free(result: DesignResult) -> str:
    mlo, mhi = result.mult_bounds
    dlo, dhi = result.depth_bounds
    return {"width": f"multipliers free in {mlo}..{mhi}",
            "depth": f"depths free in {dlo}..{dhi}",
            "both": f"multipliers in {mlo}..{mhi}, depths in {dlo}..{dhi}"}[result.vary]


def _row(s: Solution) -> list[str]:
    stages = [f"{fmt_int(r)} ({100 * f:.1f}%)"
              for r, f in zip(s.stage_relus, s.shares, strict=True)]
    return [s.name + (" *" if s.order_violations else ""),
            "x".join(map(str, s.multipliers)), ",".join(map(str, s.depths)),
            *stages, fmt_int(s.relus), fmt_int(s.macs), fmt_int(s.params)]
