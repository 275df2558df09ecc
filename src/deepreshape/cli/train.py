"""`deepreshape train NAME`: train a baseline (optionally with KD), keep a run directory."""

from __future__ import annotations

import argparse

from deepreshape.cli.common import add_override_args, fmt_int
from deepreshape.data import DATASETS, load_dataset
from deepreshape.spec import parse
from deepreshape.train import Recipe, train

_R = Recipe()


def add_recipe_args(p: argparse.ArgumentParser, epochs: int = _R.epochs) -> None:
    """Recipe options; every method that trains takes the same ones."""
    p.add_argument("--dataset", default="digits",
                   help=f"one of {', '.join(DATASETS)} (default: digits, embedded, offline)")
    p.add_argument("--data-dir", default=None, help="data root (default: $DEEPRESHAPE_DATA "
                   "or ~/.cache/deepreshape); nothing is downloaded")
    p.add_argument("--epochs", type=int, default=epochs, help=f"default {epochs}")
    p.add_argument("--batch-size", type=int, default=_R.batch_size, help="global batch size")
    p.add_argument("--lr", type=float, default=_R.lr)
    p.add_argument("--weight-decay", type=float, default=_R.weight_decay)
    p.add_argument("--momentum", type=float, default=_R.momentum)
    p.add_argument("--warmup-epochs", type=int, default=_R.warmup_epochs)
    p.add_argument("--kd-temperature", type=float, default=_R.kd_temperature)
    p.add_argument("--kd-weight", type=float, default=_R.kd_weight)
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N train and N test images (smoke runs)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def recipe_from(args: argparse.Namespace, **overrides) -> Recipe:
    kw = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
              weight_decay=args.weight_decay, momentum=args.momentum,
              warmup_epochs=args.warmup_epochs, kd_temperature=args.kd_temperature,
              kd_weight=args.kd_weight, augment=not args.no_augment)
    kw.update(overrides)
    return Recipe(**kw)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network (SGD + cosine, optional KD)",
                       description="Train a zoo network; writes config.json, checkpoint.pt, "
                       "metrics.jsonl and results.json under --out. Works under torchrun.")
    p.add_argument("name", help="architecture name (see `deepreshape list`)")
    add_recipe_args(p)
    add_override_args(p)
    p.add_argument("--teacher", default=None, help="run directory of a teacher for KD")
    p.add_argument("--out", default=None, help="run directory (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--force", action="store_true", help="start an existing run directory over")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = DATASETS.get(args.dataset.lower())
    kw = {"input_size": info.input_size, "num_classes": info.num_classes} if info else {}
    kw.update({k: getattr(args, k) for k in ("depths", "widths") if getattr(args, k) is not None})
    spec = parse(args.name, **kw)
    out = args.out or f"runs/{spec.name}"
    data = load_dataset(args.dataset, args.data_dir, limit=args.limit) if args.limit else args.dataset
    res = train(spec, data, recipe=recipe_from(args), out=out, teacher=args.teacher,
                seed=args.seed, device=args.device, data_dir=args.data_dir, resume=args.resume,
                force=args.force, compile=args.compile, quiet=args.quiet)
    if res.run is not None:
        r = res.run.results
        print(f"{r['arch']}: test accuracy {r['final_acc']:.2f}% (best {r['best_acc']:.2f}%), "
              f"{fmt_int(r['relus'])} ReLUs, {fmt_int(r['macs'])} MACs -> {out}")
    return 0
