"""`deepreshape count NAME`: exact ReLUs / MACs / params per stage."""

from __future__ import annotations

import argparse

from deepreshape.cli.common import (
    add_override_args,
    add_shape_args,
    fmt_int,
    print_json,
    spec_kwargs,
    table,
)
from deepreshape.count import count
from deepreshape.zoo import parse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `count` sub-command."""
    p = sub.add_parser("count", help="exact ReLUs, MACs and parameters per stage",
                       description="Exact ReLU / MAC / parameter counts from the spec alone. "
                       "Stage1 includes the stem; MACs are conv+linear multiply-accumulates.")
    p.add_argument("name", help="architecture name, e.g. hrn-5x7x2x (see `deepreshape list`)")
    add_shape_args(p)
    add_override_args(p)
    p.add_argument("--layers", action="store_true", help="also list every layer")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape count`; returns the exit code."""
    spec = parse(args.name, **spec_kwargs(args))
    c = count(spec, layers=args.layers)
    if args.json:
        print_json(c.to_dict(layers=args.layers))
        return 0
    print(f"{spec.describe()}  (input {spec.input_size}x{spec.input_size}, "
          f"{spec.num_classes} classes; MACs = multiply-accumulates)")
    # a network with polynomial activations shows them beside its ReLUs: never as free
    poly = ["polys"] if c.polys else []
    if args.layers:
        rows = [[r.name, r.kind, "x".join(map(str, r.shape)), fmt_int(r.relus),
                 *([fmt_int(r.polys)] if poly else []), fmt_int(r.macs), fmt_int(r.params)]
                for r in c.layers]
        print(table(["layer", "kind", "output", "ReLUs", *poly, "MACs", "params"], rows,
                    "<<>>>>" + ">" * len(poly)))
        print()
    rows = [[s.name, fmt_int(s.relus), f"{100 * s.relus / max(c.relus, 1):.1f}%",
             *([fmt_int(s.polys)] if poly else []), fmt_int(s.macs), fmt_int(s.params)]
            for s in (*c.stages, c.head)]
    rows.append(["total", fmt_int(c.relus), "100.0%", *([fmt_int(c.polys)] if poly else []),
                 fmt_int(c.macs), fmt_int(c.params)])
    print(table(["stage", "ReLUs", "share", *poly, "MACs", "params"], rows))
    print(f"stem ReLUs (included in stage1): {fmt_int(c.stem_relus)}; "
          f"without the stem: {fmt_int(c.relus - c.stem_relus)}")
    if c.polys:
        print(f"polynomial activations: {fmt_int(c.polys)} (each costs secure products under "
              "2PC: not free; `deepreshape pi` measures them)")
    return 0
