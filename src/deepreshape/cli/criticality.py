"""`deepreshape criticality RUN`: stagewise ReLU criticality C_k and the criticality order."""

from __future__ import annotations

import argparse

from deepreshape.cli.common import add_method_args, fmt_int, print_json, recipe_from, run_options, table
from deepreshape.errors import UsageError
from deepreshape.rundir import schema


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `criticality` sub-command."""
    p = sub.add_parser(
        "criticality", help="stagewise ReLU criticality (C_k) and the criticality order",
        description="For each stage, train the baseline with only that stage's ReLUs (the stem "
        "is in stage1), from scratch, with and without KD from the baseline; score C_k = "
        f"(A_k - min A) * (R_k/1000)^-0.07 with A the KD accuracy. Writes RUN/{schema.CRITICALITY.name}. "
        "With --accuracies, score given results without training.")
    p.add_argument("run", nargs="?", help="trained baseline run directory")
    p.add_argument("--accuracies", metavar="FILE",
                   help='score a JSON file {"stages": [{"name", "relus", "acc", "kd_acc"}, ...]}')
    p.add_argument("--out", default=None, help="where the stage runs go (default RUN/criticality)")
    p.add_argument("--no-plain", action="store_true", help="train only the KD runs")
    p.add_argument("--jobs", default="1", help="stages trained in parallel processes (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--order-only", action="store_true",
                   help="print only the order, e.g. 3,2,4,1 (for `design --order`)")
    add_method_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape criticality`; returns the exit code."""
    from deepreshape.optimize.criticality import criticality, load_accuracies

    if args.accuracies:
        if args.run:
            raise UsageError("give either RUN (to train) or --accuracies FILE (to score), not both")
        result = load_accuracies(args.accuracies)
    elif not args.run:
        raise UsageError("criticality needs a trained baseline RUN directory or --accuracies FILE")
    else:
        try:
            jobs = int(args.jobs)
        except ValueError:
            raise UsageError(f"--jobs must be a positive integer, got {args.jobs!r}") from None
        result = criticality(args.run, recipe=recipe_from(args), out=args.out,
                             plain=not args.no_plain, jobs=jobs, options=run_options(args))
    if args.order_only:
        print(result.order_text)
    elif args.json:
        print_json(result.to_dict())
    else:
        print(format_result(result))
    return 0


def format_result(result) -> str:
    """The criticality table and order as text, with the next command to run."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = [[s.name, fmt_int(s.relus), pct(s.acc), pct(s.kd_acc), f"{s.criticality:.2f}"]
            for s in result.stages]
    head = result.info.get("arch") or result.info.get("source", "")
    resolved = result.info.get("order_resolved")
    caveat = [] if resolved is not False else [
        "  (not resolved: some C_k gaps are within test-set noise; see the warning above)"]
    return "\n".join([
        f"stagewise ReLU criticality{f' of {head}' if head else ''} "
        "(C_k = (A_k - min A) * (R_k/1000)^-0.07, A = KD accuracy %)", "",
        table(["stage", "ReLUs", "acc %", "KD acc %", "C_k"], rows), "",
        f"criticality order (most to least critical): {result.order_text}", *caveat,
        f"next: deepreshape design --order {result.order_text}"])
