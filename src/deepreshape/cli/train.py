"""`deepreshape train NAME`: train a baseline (optionally with KD), keep a run directory."""

from __future__ import annotations

import argparse

from deepreshape.cli.common import (
    add_override_args,
    add_precision_args,
    add_recipe_args,
    fmt_int,
    recipe_from,
    run_options,
)
from deepreshape.datasets import DATASETS
from deepreshape.rundir import schema
from deepreshape.training import train
from deepreshape.zoo import parse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command."""
    p = sub.add_parser("train", help="train a network (SGD + cosine, optional KD)",
                       description="Train a zoo network; writes "
                       f"{', '.join(f.name for f in schema.TRAINING_FILES)} under --out. Works "
                       "under torchrun.")
    p.add_argument("name", help="architecture name (see `deepreshape list`)")
    add_recipe_args(p)
    add_override_args(p)
    p.add_argument("--teacher", default=None, help="run directory of a teacher for KD")
    p.add_argument("--out", default=None, help="run directory (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--force", action="store_true", help="start an existing run directory over")
    add_precision_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape train`; returns the exit code."""
    info = DATASETS.get(args.dataset.lower())
    kw = {"input_size": info.input_size, "num_classes": info.num_classes}
    kw.update({k: getattr(args, k) for k in ("depths", "widths") if getattr(args, k) is not None})
    spec = parse(args.name, **kw)
    out = args.out or f"runs/{spec.name}"
    res = train(spec, recipe=recipe_from(args), out=out, teacher=args.teacher,
                amp=args.amp, channels_last=args.channels_last, options=run_options(args))
    if res.run is not None:
        r = res.run.results
        kd = f", KD from {args.teacher}" if args.teacher else ""
        print(f"{res.run.spec.short_name()}: test accuracy {r['final_acc']:.2f}% "
              f"(best {r['best_acc']:.2f}%), "
              f"{fmt_int(r['relus'])} ReLUs, {fmt_int(r['macs'])} MACs{kd} -> {out}")
    return 0
