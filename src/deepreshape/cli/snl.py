"""`deepreshape snl RUN --budget B`: Selective Network Linearization, pixel- or channel-wise."""

from __future__ import annotations

import argparse
import re
import sys
import warnings

from deepreshape.cli.common import add_method_args, common_kwargs, fmt_int, print_json, recipe_from
from deepreshape.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `snl` sub-command."""
    p = sub.add_parser(
        "snl", help="SNL: learn which ReLUs to keep under a ReLU budget, then fine-tune",
        description="Mask phase (Adam, CE + KD + lambda*L1 on masks, lambda x1.1 whenever the "
        "ReLU count stops falling) until the count is under the budget; binarize to the budget "
        "exactly (pixel) or as close under as whole channels allow (channel); fine-tune with KD "
        "(--epochs, --lr: SGD, cosine). The budget counts every ReLU, the stem's included.")
    p.add_argument("run", help="trained baseline run directory")
    p.add_argument("--budget", required=True, help="ReLU budget, e.g. 50000 or 50k")
    p.add_argument("--granularity", choices=("pixel", "channel"), default="pixel")
    p.add_argument("--mask-epochs", type=int, default=300, help="cap on mask-phase epochs")
    p.add_argument("--mask-lr", type=float, default=1e-3, help="Adam lr of the mask phase")
    p.add_argument("--lambda", dest="lam", type=float, default=1e-5, help="initial L1 weight")
    p.add_argument("--lambda-factor", type=float, default=1.1)
    p.add_argument("--lambda-after", type=int, default=5,
                   help="lambda may grow only after this many epochs (default 5)")
    p.add_argument("--threshold", type=float, default=1e-2, help="a mask above it needs its ReLU")
    p.add_argument("--keep-stem", action="store_true",
                   help="do not mask the stem ReLU (it still counts against the budget)")
    p.add_argument("--out", default=None, help="run directory (default RUN/snl/GRANULARITY-B)")
    p.add_argument("--json", action="store_true", help="print snl.json")
    add_method_args(p, epochs=100)
    p.set_defaults(func=run, lr=1e-3)


def parse_budget(text: str) -> int:
    """'50000', '50,000', '50k', '1.5M' -> int; UsageError otherwise."""
    m = re.fullmatch(r"\s*(-?[\d,]*\.?\d+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise UsageError(f"--budget must be a number of ReLUs like 50000 or 50k, got {text!r}")
    value = float(m.group(1).replace(",", "")) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    if value != int(value):
        raise UsageError(f"--budget must be a whole number of ReLUs, got {text!r}")
    return int(value)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape snl`; returns the exit code."""
    from deepreshape.optimize.snl import snl

    finetune = recipe_from(args)
    mask = recipe_from(args, epochs=args.mask_epochs, lr=args.mask_lr, optimizer="adam",
                       weight_decay=0.0, warmup_epochs=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = snl(args.run, parse_budget(args.budget), granularity=args.granularity, out=args.out,
                  mask_recipe=mask, finetune=finetune, lam=args.lam, lam_factor=args.lambda_factor,
                  lam_after=args.lambda_after, threshold=args.threshold,
                  include_stem=not args.keep_stem, **common_kwargs(args))
    phase = res.info["mask_phase"]
    if not res.budget_reached:
        print(f"deepreshape: warning: the mask phase stopped at its cap ({phase['epochs_run']} "
              "epochs) above the budget; masks were binarized to the budget anyway",
              file=sys.stderr)
    if args.json:
        print_json(res.info)
        return 0
    where = res.run.path if res.run is not None else "-"
    print(f"SNL ({res.info['granularity']}) {res.spec.name}: test accuracy "
          f"{res.final_acc:.2f}%, {fmt_int(res.relus)} ReLUs (budget {fmt_int(res.budget)}), "
          f"mask phase {phase['epochs_run']} epochs -> {where}")
    return 0
