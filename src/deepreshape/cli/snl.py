"""`deepreshape snl RUN --budget B`: Selective Network Linearization, pixel- or channel-wise."""

from __future__ import annotations

import argparse
import sys
import warnings

from deepreshape.cli.common import add_method_args, fmt_int, print_json, recipe_from, run_options
from deepreshape.errors import UsageError
from deepreshape.rundir import schema
from deepreshape.slotkinds.mask import GRANULARITIES


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `snl` sub-command."""
    from deepreshape.optimize.snlpresets import PRESETS, RULES

    presets = "; ".join(f"{p.name}: {p.about}" for p in PRESETS.values())
    p = sub.add_parser(
        "snl", help="SNL: learn which ReLUs to keep under a ReLU budget, then fine-tune",
        formatter_class=DefaultsFormatter,
        description="Mask phase (Adam, CE + KD + lambda*L1 on masks, lambda growing by a rule) "
        "until the ReLU count is under the budget; binarize to the budget exactly (pixel) or "
        "as close under as whole channels allow (channel); fine-tune with KD (--epochs, --lr: "
        "SGD, cosine). The budget counts every ReLU, the stem's included. Presets fill in "
        f"every mask-phase option left out -- {presets}.")
    p.add_argument("run", help="trained baseline run directory")
    p.add_argument("--budget", required=True, help="ReLU budget, e.g. 50000 or 50k (required)")
    p.add_argument("--granularity", choices=GRANULARITIES, default="pixel",
                   help="a mask per pixel (C,H,W) or per channel (C)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="auto",
                   help="mask-phase recipe for every option below whose default is 'preset'")
    p.add_argument("--mask-epochs", type=int, default=None,
                   help="cap on mask-phase epochs; if reached, masks are binarized to the budget "
                   f"anyway, with a warning (default: preset -- "
                   f"{', '.join(f'{q.name} {q.mask_epochs}' for q in PRESETS.values())})")
    p.add_argument("--mask-lr", type=float, default=1e-3,
                   help="Adam lr of the weights in the mask phase")
    p.add_argument("--alpha-lr", type=float, default=None,
                   help="Adam lr of the masks (default: preset -- auto 4/(steps in half the cap), "
                   "between --mask-lr and 0.05; paper --mask-lr)")
    p.add_argument("--lambda", dest="lam", type=float, default=None,
                   help="initial L1 weight per ReLU (default: preset -- auto 1e-5 x 491,520 / "
                   "maskable ReLUs; paper 1e-5)")
    p.add_argument("--lambda-factor", type=float, default=None,
                   help="lambda's growth factor (default: preset -- auto 2, paper 1.1)")
    p.add_argument("--lambda-after", type=int, default=None,
                   help="lambda may grow only after this many epochs (default: preset -- auto 0, "
                   "paper 5)")
    p.add_argument("--lambda-rule", choices=RULES, default=None,
                   help="when lambda grows: gap = while the count is above a straight path to "
                   "the budget at half the cap; stall = when the count stops falling (SNL) "
                   "(default: preset -- auto gap, paper stall)")
    p.add_argument("--threshold", type=float, default=1e-2, help="a mask above it needs its ReLU")
    p.add_argument("--keep-stem", action="store_true",
                   help="do not mask the stem ReLU (it still counts against the budget)")
    p.add_argument("--out", default=None, help="run directory (default: RUN/snl/GRANULARITY-B)")
    p.add_argument("--json", action="store_true", help=f"print {schema.SNL.name}")
    add_method_args(p, epochs=100)
    p.set_defaults(func=run, lr=1e-3)
    for action in p._actions:
        if action.dest == "epochs":
            action.help = "fine-tune epochs (SGD, cosine, KD from the baseline)"
        elif action.dest == "lr":
            action.help = "fine-tune lr"
        elif action.help is None:
            action.help = _PLAIN_HELP.get(action.dest, action.dest.replace("_", " "))


_PLAIN_HELP = {"weight_decay": "fine-tune weight decay (the mask phase uses none)",
               "momentum": "fine-tune SGD momentum",
               "warmup_epochs": "fine-tune warm-up epochs (the mask phase has none)",
               "kd_temperature": "KD temperature (both phases)",
               "kd_weight": "weight of the KD (soft) loss (both phases)", "seed": "random seed"}


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows every option's default (unless its help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or not action.option_strings
                or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)".strip()


def parse_budget(text: str) -> int:
    """'50000', '50,000', '50k', '1.5M' -> int; UsageError otherwise. Zero and negative
    numbers pass, for `check_budget` to refuse with the network's own range."""
    from deepreshape.design.costs import parse_amount

    value = parse_amount(text, "relus", option="--budget", signed=True)
    if value != int(value):
        raise UsageError(f"--budget must be a whole number of ReLUs, got {text!r}")
    return int(value)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape snl`; returns the exit code."""
    from deepreshape.optimize.snl import SNLSettings, snl
    from deepreshape.optimize.snlpresets import get_preset

    finetune = recipe_from(args)
    preset = get_preset(args.preset)
    epochs = preset.mask_epochs if args.mask_epochs is None else args.mask_epochs
    mask = recipe_from(args, epochs=epochs, lr=args.mask_lr, optimizer="adam",
                       weight_decay=0.0, warmup_epochs=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cap warning is printed below, once
        settings = SNLSettings(
            granularity=args.granularity, preset=args.preset, mask_recipe=mask,
            finetune=finetune, lam=args.lam, lam_factor=args.lambda_factor,
            lam_after=args.lambda_after, rule=args.lambda_rule, alpha_lr=args.alpha_lr,
            threshold=args.threshold, include_stem=not args.keep_stem)
        res = snl(args.run, parse_budget(args.budget), settings=settings, out=args.out,
                  options=run_options(args))
    phase = res.info["mask_phase"]
    if not res.budget_reached:
        print(f"deepreshape: warning: the mask phase stopped at its cap ({phase['epochs_run']} "
              "epochs) above the budget; masks were binarized to the budget anyway",
              file=sys.stderr)
    if args.json:
        print_json(res.info)
        return 0
    where = res.run.path if res.run is not None else "-"
    reached = "budget reached" if res.budget_reached else "budget NOT reached"
    print(f"SNL ({res.info['granularity']}) {res.spec.name}: test accuracy "
          f"{res.final_acc:.2f}%, {fmt_int(res.relus)} ReLUs (budget {fmt_int(res.budget)}), "
          f"mask phase {phase['epochs_run']} epochs ({reached}, preset {res.info['preset']}) "
          f"-> {where}")
    return 0
