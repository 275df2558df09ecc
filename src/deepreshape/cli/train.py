"""`deepreshape train NAME`: train a baseline (optionally with KD), keep a run directory."""

from __future__ import annotations

import argparse
import os

from deepreshape.cli.common import (
    add_override_args,
    add_precision_args,
    add_recipe_args,
    fmt_int,
    recipe_from,
    run_options,
)
from deepreshape.datasets import DATASETS
from deepreshape.errors import UsageError
from deepreshape.rundir import schema
from deepreshape.zoo import parse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command."""
    p = sub.add_parser("train", help="train a network (SGD + cosine, optional KD)",
                       description="Train a zoo network; writes "
                       f"{', '.join(f.name for f in schema.TRAINING_FILES)} under --out. Works "
                       "under torchrun.")
    p.add_argument("name", help="architecture name (see `deepreshape list`), or with --resume a "
                   "run directory to continue as it was configured")
    add_recipe_args(p)
    add_override_args(p)
    p.add_argument("--teacher", default=None, help="run directory of a teacher for KD")
    p.add_argument("--out", default=None, help="run directory (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint "
                   "(`train --resume RUN` continues the run directory RUN)")
    p.add_argument("--force", action="store_true", help="start an existing run directory over")
    add_precision_args(p)
    p.set_defaults(func=run, defaults={a.dest: a.default for a in p._actions})


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape train`; returns the exit code."""
    from deepreshape.training import train

    if schema.CONFIG.exists(args.name) or os.sep in args.name:
        return _resume_run(args)
    info = DATASETS.get(args.dataset.lower())
    kw = {"input_size": info.input_size, "num_classes": info.num_classes}
    kw.update({k: getattr(args, k) for k in ("depths", "widths") if getattr(args, k) is not None})
    spec = parse(args.name, **kw)
    out = args.out or f"runs/{spec.name}"
    res = train(spec, recipe=recipe_from(args), out=out, teacher=args.teacher,
                amp=args.amp, channels_last=args.channels_last, options=run_options(args))
    _print(res, args.teacher, out)
    return 0


# Options that fix a run's identity: `--resume RUN` takes them from the run's config, and
# one given with another value is refused (a resumed run may only extend --epochs).
RECIPE_OPTIONS = ("batch_size", "lr", "weight_decay", "momentum", "warmup_epochs", "kd_temperature",
                  "kd_weight")


def _resume_run(args: argparse.Namespace) -> int:
    """`train --resume RUN`: continue the run directory RUN with its own configuration
    (architecture, data set and --limit, recipe, seed, teacher, method tag), as
    `train NAME --out RUN --resume` with the same options would."""
    import dataclasses

    from deepreshape.methods import METHODS, method_of_tag
    from deepreshape.rundir.run import load_run
    from deepreshape.training import Recipe, train

    run_dir = args.name
    if not schema.CONFIG.exists(run_dir):
        raise UsageError(f"{run_dir}: not a run directory (no {schema.CONFIG.name}); an architecture "
                         "name has no '/' (see `deepreshape list`)")
    if not args.resume:
        raise UsageError(f"{run_dir} is a run directory, not an architecture; continue it with "
                         f"`deepreshape train --resume {run_dir}` (or name an architecture)")
    run = load_run(run_dir)
    cfg = run.config
    made_by = method_of_tag(cfg.get("method"))
    if made_by is not None and made_by is not METHODS.get("train"):
        raise UsageError(f"{run_dir} was made by `{made_by.name}`, not `train`; continue it with "
                         f"`deepreshape {made_by.name} ... --resume`")
    defaults = args.defaults
    recipe = Recipe(**cfg["recipe"])
    data = cfg["data"]
    info = DATASETS.get(data["dataset"])
    limit = None if data.get("train_size") == info.train_size else data.get("train_size")
    given = {"dataset": (args.dataset, data["dataset"]), "seed": (args.seed, cfg.get("seed", 0)),
             "limit": (args.limit, limit), "teacher": (args.teacher, cfg.get("teacher")),
             "no_augment": (args.no_augment, not recipe.augment),
             **{opt: (getattr(args, opt), getattr(recipe, opt)) for opt in RECIPE_OPTIONS}}
    for opt, (value, stored) in given.items():
        if value != defaults.get(opt) and value != stored:
            flag = "--" + opt.replace("_", "-")
            raise UsageError(f"{run_dir} was trained with {flag} {stored}; --resume continues it as "
                             f"it was (only --epochs may change), so drop {flag} {value}")
    for opt in ("out", "depths", "widths", "force"):
        if getattr(args, opt, None) not in (None, False):
            raise UsageError(f"--{opt} does not go with `train --resume RUN`: RUN is the run directory")
    if args.epochs != defaults.get("epochs"):
        recipe = dataclasses.replace(recipe, epochs=args.epochs)
    opts = run_options(args).replace(dataset=data["dataset"], seed=cfg.get("seed", 0), limit=limit,
                                     resume=True)
    teacher = cfg.get("teacher")
    res = train(run.spec, recipe=recipe, out=run_dir, teacher=teacher, amp=args.amp,
                channels_last=args.channels_last, tag=cfg.get("method"), options=opts)
    _print(res, teacher, run_dir)
    return 0


def _print(res, teacher: str | None, out: str) -> None:
    if res.run is not None:
        r = res.run.results
        kd = f", KD from {teacher}" if teacher else ""
        print(f"{res.run.spec.short_name()}: test accuracy {r['final_acc']:.2f}% "
              f"(best {r['best_acc']:.2f}%), "
              f"{fmt_int(r['relus'])} ReLUs, {fmt_int(r['macs'])} MACs{kd} -> {out}")
