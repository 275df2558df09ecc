"""`deepreshape list`: the zoo."""

from __future__ import annotations

import argparse

from deepreshape.cli.common import print_json, table
from deepreshape.zoo import OVERRIDE_FORMS, list_models


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `list` sub-command."""
    p = sub.add_parser("list", help="the network zoo", description="Names that `count`, "
                       "`train` and the other commands accept.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape list`; returns the exit code."""
    models = list_models()
    if args.json:
        print_json(models)
        return 0
    print(table(["name", "what it is"], [[k, v] for k, v in models.items()], "<<"))
    print(f"\nAny name takes {OVERRIDE_FORMS}; e.g. resnet50-m32-3x3x3x, hrn-5x7x2x-d2,2,2,2.")
    return 0
