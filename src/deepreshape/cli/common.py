"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys

from deepreshape.spec import DATASET_SHAPES


def add_shape_args(p: argparse.ArgumentParser) -> None:
    """--dataset or --input-size/--num-classes, as every command that builds a spec takes."""
    p.add_argument("--dataset", choices=sorted(DATASET_SHAPES), default=None,
                   help="fixes input size and classes (default: cifar100)")
    p.add_argument("--input-size", type=int, default=None, help="input resolution (pixels)")
    p.add_argument("--num-classes", type=int, default=None, help="number of classes")


def add_override_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depths", type=int_list, default=None, help="stage depths, e.g. 1,5,5,3")
    p.add_argument("--widths", type=int_list, default=None, help="stage widths, e.g. 16,80,560,1120")


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def spec_kwargs(args: argparse.Namespace) -> dict:
    kw = {"dataset": args.dataset, "input_size": args.input_size, "num_classes": args.num_classes}
    for key in ("depths", "widths"):
        if getattr(args, key, None) is not None:
            kw[key] = getattr(args, key)
    return kw


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def fmt_int(n: float) -> str:
    return f"{int(n):,}"


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A plain text table; `align` has one of '<' or '>' per column (default: first left)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    align = align or "<" + ">" * (len(headers) - 1)
    line = lambda r: "  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths, strict=True))  # noqa: E731
    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, cells)])
