"""Analytic ReLU/MAC counting vs forward hooks vs `torch.utils.flop_counter.FlopCounterMode`.

For every concrete zoo network (plus a few suffixed forms) this times the analytic
`count(spec)`, the hook count `count_module(model, spec)` on a model built on the "meta"
device, and `FlopCounterMode` running the same meta model; it checks that the three agree
(analytic == hooks on ReLUs, MACs and parameters; FlopCounter flops == 2 * MACs) and
reports whether every analytic count stays under the 10 ms target.

    python benchmarks/count.py [--size 64] [--repeats 7] [--arch resnet18 ...] [--json]

Exits 1 if any count disagrees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from deepreshape.build import build
from deepreshape.count import count, count_module
from deepreshape.errors import UsageError
from deepreshape.spec import NetSpec
from deepreshape.zoo import list_models, parse

EXTRA = ("resnet34-m32", "resnet50-m16-3x3x3x")
TARGET_MS = 10.0


def zoo_names() -> list[str]:
    """The zoo's names that parse as they are (concrete networks), plus `EXTRA`."""
    names = []
    for name in [*list_models(), *EXTRA]:
        try:
            parse(name)
        except UsageError:
            continue
        if name not in names:
            names.append(name)
    return names


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `fn()` in ms over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def flop_count(model: torch.nn.Module, spec: NetSpec) -> int:
    """Total flops of one forward pass of a 1-image batch, as FlopCounterMode counts them."""
    x = torch.zeros(1, spec.in_channels, spec.input_size, spec.input_size, device="meta")
    mode = FlopCounterMode(display=False)
    with mode, torch.no_grad():
        model(x)
    return int(mode.get_total_flops())


def bench(name: str, size: int, repeats: int) -> dict[str, Any]:
    """Time and cross-check the three counters for one network."""
    spec = parse(name, input_size=size)
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = build(spec)
    build_ms = (time.perf_counter() - t0) * 1e3
    model.eval()
    ana, hooks, flops = count(spec), count_module(model, spec), flop_count(model, spec)
    analytic_ms = median_ms(lambda: count(spec), repeats)
    hooks_ms = median_ms(lambda: count_module(model, spec), repeats)
    flop_ms = median_ms(lambda: flop_count(model, spec), repeats)
    checks = {
        "relus": ana.relus == hooks.relus,
        "macs": ana.macs == hooks.macs,
        "params": ana.params == hooks.params,
        "stages": ana.stages == hooks.stages and ana.head == hooks.head,
        "flops": flops == 2 * ana.macs,
    }
    return {
        "name": spec.describe(), "input_size": size, "relus": ana.relus, "macs": ana.macs,
        "params": ana.params, "flopcounter_flops": flops, "meta_build_ms": build_ms,
        "analytic_ms": analytic_ms, "hooks_ms": hooks_ms, "flopcounter_ms": flop_ms,
        "hooks_over_analytic": hooks_ms / analytic_ms, "flopcounter_over_analytic": flop_ms / analytic_ms,
        "agree": all(checks.values()), "mismatch": [k for k, ok in checks.items() if not ok],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'network':<22}{'ReLUs':>10}{'MACs':>14}{'analytic ms':>13}{'hooks ms':>10}"
            f"{'FlopCtr ms':>12}{'hooks/ana':>11}{'flopctr/ana':>13}  agree")
    print(head)
    print("-" * len(head))
    for r in rows:
        agree = "yes" if r["agree"] else "NO (" + ",".join(r["mismatch"]) + ")"
        print(f"{r['name']:<22}{r['relus']:>10,}{r['macs']:>14,}{r['analytic_ms']:>13.3f}"
              f"{r['hooks_ms']:>10.2f}{r['flopcounter_ms']:>12.2f}{r['hooks_over_analytic']:>10.0f}x"
              f"{r['flopcounter_over_analytic']:>12.0f}x  {agree}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32, help="input resolution (default 32)")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per counter (median)")
    ap.add_argument("--arch", nargs="+", default=None, help="networks (default: the zoo)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # counting is single-threaded work; keep timings comparable
    rows = [bench(n, args.size, max(1, args.repeats)) for n in (args.arch or zoo_names())]
    worst = max(rows, key=lambda r: r["analytic_ms"])
    ok_target = worst["analytic_ms"] < TARGET_MS
    all_agree = all(r["agree"] for r in rows)
    if args.json:
        print(json.dumps({"rows": rows, "target_ms": TARGET_MS, "max_analytic_ms": worst["analytic_ms"],
                          "under_target": ok_target, "all_agree": all_agree}, indent=2))
    else:
        print(f"input {args.size}x{args.size}, median of {args.repeats} calls, torch {torch.__version__}")
        print_table(rows)
        print(f"analytic count under the {TARGET_MS:g} ms target for every network: "
              f"{'yes' if ok_target else 'NO'} (max {worst['analytic_ms']:.3f} ms, {worst['name']}); "
              f"all counters agree: {'yes' if all_agree else 'NO'}")
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
