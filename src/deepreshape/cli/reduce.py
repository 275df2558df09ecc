"""`deepreshape reduce RUN`: DeepReDuce (culling, thinning, reshaping) and ReLU-reuse, with KD."""

from __future__ import annotations

import argparse

from deepreshape.cli.common import add_method_args, fmt_int, print_json, recipe_from, run_options, table
from deepreshape.errors import UsageError
from deepreshape.rundir import schema


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `reduce` sub-command."""
    p = sub.add_parser(
        "reduce", help="DeepReDuce / Algorithm 2: cull, thin, reshape, ReLU-reuse (with KD)",
        description="Produce and train (KD from the baseline, init from its weights) the "
        "networks of a ReLU-reduction pipeline. deepreduce: D-1 iterations culling the least "
        "critical stages, each thinned and reshaped (channels x0.5, feature maps /2); hrn "
        "(the paper's Algorithm 2): cull the least critical stage only if it holds most ReLUs, "
        "thin, channels x0.5 and ReLU-reuse 4, 8, 16. The order comes from "
        f"RUN/{schema.CRITICALITY.name} or --order. Writes OUT/{schema.REDUCE.name} (default "
        "OUT = RUN/reduce). --dry-run only plans, "
        "with exact counts, and takes a network name (with --dataset and --order) as well.")
    p.add_argument("run", help="trained baseline run directory (with --dry-run also a network "
                   "name, e.g. resnet18)")
    p.add_argument("--pipeline", "--method", dest="pipeline", choices=("deepreduce", "hrn"),
                   default="deepreduce", help="default deepreduce")
    p.add_argument("--steps", default=None,
                   help="subset of cull,thin,reshape,reuse (default: deepreduce cull,thin,reshape; "
                   "hrn all four)")
    p.add_argument("--reuse", default="4,8,16", help="ReLU-reuse factors (default 4,8,16)")
    p.add_argument("--scale", default="0.5", help="channel scale of the reshape step (default 0.5)")
    p.add_argument("--reshape", default=None,
                   help="reshapes, comma-separated; join kinds with + to apply them together: "
                   "channel, fmap, depth (e.g. channel,fmap,channel+fmap,depth+channel+fmap; "
                   "default: deepreduce channel,fmap; hrn channel)")
    p.add_argument("--depths", default=None,
                   help="stage depths of the depth reshape, e.g. 2,1,1,1 (first blocks kept)")
    p.add_argument("--thin", default="relu2", choices=("relu2", "relu1"),
                   help="the ReLU thinning drops in a basic block: relu2, after the residual "
                   "add, as DeepReDuce's released models (default), or relu1, between the "
                   "convolutions (same counts, another network)")
    p.add_argument("--order", default=None,
                   help="stages from most to least critical, e.g. 3,2,4,1 (default: "
                   f"RUN/{schema.CRITICALITY.name})")
    p.add_argument("--out", default=None, help="where the runs go (default RUN/reduce)")
    p.add_argument("--dry-run", action="store_true",
                   help="only list the networks with their exact counts")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_method_args(p)
    for action in p._actions:
        if action.dest == "dataset":
            action.help = ("the baseline's data set (default; another one is an error); for a "
                           "network name with --dry-run, its input size and classes "
                           "(default cifar100)")
    p.set_defaults(func=run)


def _words(text: str | None) -> list[str] | None:
    return None if text is None else [w for w in text.split(",") if w.strip()]


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape reduce`; returns the exit code."""
    from deepreshape.design.solver import parse_ints
    from deepreshape.optimize.deepreduce import deepreduce

    try:
        scale = float(args.scale)
    except ValueError:
        raise UsageError(f"--scale must be a number like 0.5, got {args.scale!r}") from None
    result = deepreduce(
        args.run, pipeline=args.pipeline, order=args.order, steps=_words(args.steps),
        reuse_factors=parse_ints(args.reuse, "--reuse"), scale=scale,
        reshape=_words(args.reshape), thinning=args.thin, recipe=recipe_from(args), out=args.out,
        depths=None if args.depths is None else parse_ints(args.depths, "--depths"),
        dry_run=args.dry_run, options=run_options(args))
    if args.json:
        print_json(result.to_dict())
        return 0
    rows = [[r["label"], ", ".join(r["steps"]), fmt_int(r["relus"]), fmt_int(r["macs"]),
             "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}"] for r in result.rows]
    info = result.info
    print(f"{info['pipeline']} on {info['baseline']} ({info['dataset']}), order "
          f"{','.join(map(str, info['order']))} (from {info['order_source']}); "
          "MACs = multiply-accumulates")
    print(table(["network", "steps", "ReLUs", "MACs", "acc %"], rows, "<<>>>"))
    if not info.get("dry_run"):
        print(f"summary: {schema.REDUCE.path(info['runs'])}")
    return 0
