"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from deepreshape.datasets import DATASETS
from deepreshape.errors import UsageError

if TYPE_CHECKING:
    from deepreshape.options import RunOptions
    from deepreshape.training.recipe import Recipe


def add_shape_args(p: argparse.ArgumentParser) -> None:
    """--dataset or --input-size/--num-classes, as every command that builds a spec takes."""
    p.add_argument("--dataset", choices=sorted(DATASETS.names()), default=None,
                   help="fixes input size and classes (default: cifar100)")
    p.add_argument("--input-size", type=int, default=None, help="input resolution (pixels)")
    p.add_argument("--num-classes", type=int, default=None, help="number of classes")


def add_override_args(p: argparse.ArgumentParser) -> None:
    """Add `--depths` / `--widths`, which override a zoo name's stages."""
    p.add_argument("--depths", type=int_list, default=None, help="stage depths, e.g. 1,5,5,3")
    p.add_argument("--widths", type=int_list, default=None, help="stage widths, e.g. 16,80,560,1120")


def int_list(text: str) -> list[int]:
    """argparse type for '1,5,5,3' -> [1, 5, 5, 3]."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def spec_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for `zoo.parse` from the shape and override options."""
    kw = {"dataset": args.dataset, "input_size": args.input_size, "num_classes": args.num_classes}
    for key in ("depths", "widths"):
        if getattr(args, key, None) is not None:
            kw[key] = getattr(args, key)
    return kw


def print_json(obj) -> None:
    """Pretty-print `obj` as JSON on stdout (the `--json` output of every command)."""
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def fmt_int(n: float) -> str:
    """An integer with thousands separators, for tables."""
    return f"{int(n):,}"


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A plain text table; `align` has one of '<' or '>' per column (default: first left)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    align = align or "<" + ">" * (len(headers) - 1)
    line = lambda r: "  ".join(  # noqa: E731
        f"{c:{a}{w}}" for c, a, w in zip(r, align, widths, strict=True)).rstrip()
    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, cells)])


# --------------------------------------------------------------------------- recipes

def add_recipe_args(p: argparse.ArgumentParser, epochs: int | None = None) -> None:
    """Recipe options; every method that trains takes the same ones (default: `Recipe`'s)."""
    from deepreshape.training.recipe import Recipe  # light: torch loads only to train

    _R = Recipe()  # noqa: N806
    epochs = _R.epochs if epochs is None else epochs
    p.add_argument("--dataset", default="digits",
                   help=f"one of {', '.join(DATASETS.names())} (default: digits, embedded, offline)")
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


def add_precision_args(p: argparse.ArgumentParser) -> None:
    """--amp and --channels-last (default: bf16 + channels_last on a GPU, fp32 on CPU)."""
    from deepreshape.options import AMP_MODES

    p.add_argument("--amp", choices=AMP_MODES, default="auto",
                   help="autocast dtype (default auto: bf16 on a GPU with bf16, fp32 on CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on a GPU only)")


def recipe_from(args: argparse.Namespace, **overrides) -> Recipe:
    """The training `Recipe` from the recipe options; `overrides` win."""
    from deepreshape.training.recipe import Recipe

    kw = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
              weight_decay=args.weight_decay, momentum=args.momentum,
              warmup_epochs=args.warmup_epochs, kd_temperature=args.kd_temperature,
              kd_weight=args.kd_weight, augment=not args.no_augment)
    kw.update(overrides)
    recipe = Recipe(**kw)
    recipe.validate()  # before any command writes anything
    limit, seed = getattr(args, "limit", None), getattr(args, "seed", 0)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be a positive number of images, got {limit}")
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed must be an integer in 0..2**63-1, got {seed}")
    return recipe


def add_method_args(p: argparse.ArgumentParser, epochs: int | None = None) -> None:
    """Recipe options for a method that trains from a baseline run. The data set is the
    baseline's, so --dataset defaults to it (and may only repeat it)."""
    add_recipe_args(p, epochs)
    for action in p._actions:
        if action.dest == "dataset":
            action.help = "the baseline's data set (default; another one is an error)"
    p.set_defaults(dataset=None)
    p.add_argument("--resume", action="store_true", help="continue (or reuse) existing runs")
    p.add_argument("--force", action="store_true", help="start existing run directories over")


def run_options(args: argparse.Namespace) -> RunOptions:
    """The `RunOptions` (seed, device, data, run control) of the parsed options: every
    field the command has an option for (`eval` has no --seed, so its default stays)."""
    from deepreshape.options import FIELDS, RunOptions

    return RunOptions(**{f: getattr(args, f) for f in FIELDS if hasattr(args, f)})

