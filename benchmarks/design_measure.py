"""Cost-aware design held against reality: the designs `deepreshape design` ranks by
predicted Cheetah latency, measured under SPU.

Runs the solver for `--order` with a ReLU budget (`--relus`, as `deepreshape design
--order 3,2,4,1 --relus 180k`), takes `--picks` of its ranked solutions spread over the
ranking (first, last and evenly between), and measures each as one query under Cheetah
with server-owned weights: two real SPU parties on this machine's loopback, 32x32, 100
classes, random weights (costs do not depend on weight values), one cold run then
`--repeats` warm runs (latency = their median). Prints predicted against measured
latency and bytes, and whether the measured order is the predicted one and each
prediction within 15%.

    python benchmarks/design_measure.py --order 3,2,4,1 --relus 180k   # ~15 min here
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from deepreshape.cli.common import table
from deepreshape.design.costs import Budget, design_for_cost, parse_amount

TARGET = 0.15


def picks(ranked: list, n: int) -> list:
    """`n` of the ranked solutions spread over the ranking, in rank order."""
    if n >= len(ranked):
        return list(ranked)
    return [ranked[int(i)] for i in np.unique(np.round(np.linspace(0, len(ranked) - 1, n)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--order", default="3,2,4,1")
    ap.add_argument("--relus", default="180k", help="ReLU budget, e.g. 180k")
    ap.add_argument("--picks", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="warm runs per network")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from deepreshape.pi.measure import measure_spec

    found = design_for_cost(args.order, budget=Budget(relus=int(parse_amount(args.relus, "relus"))),
                            rank="latency")
    rows = []
    for p in picks(found.priced, args.picks):
        spec = p.solution.spec
        rec = measure_spec(spec, "cheetah", repeats=args.repeats, timeout_s=args.timeout,
                           weights="owned")
        rows.append({"network": spec.name, "relus": p.solution.relus, "macs": p.solution.macs,
                     "predicted_latency_s": p.latency_s, "latency_s": rec["latency_s"],
                     "warm_latencies_s": rec["warm_latencies_s"],
                     "predicted_bytes": p.bytes, "bytes": rec["total_bytes"],
                     "argmax_equal": rec["argmax_equal_jax"]})
        print(f"{spec.name}: {rec['latency_s']:.2f} s measured, {p.latency_s:.2f} s predicted",
              file=sys.stderr, flush=True)
    for r in rows:
        r["latency_err"] = r["predicted_latency_s"] / r["latency_s"] - 1
        r["bytes_err"] = r["predicted_bytes"] / r["bytes"] - 1
    measured = [r["latency_s"] for r in rows]
    verdict = {"same_order": measured == sorted(measured),
               "within_target": all(abs(r["latency_err"]) <= TARGET for r in rows)}
    if args.json:
        json.dump({"rows": rows, **verdict, "load_average": os.getloadavg()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"DeepReShape for order {args.order}, budget {args.relus} ReLUs, ranked by predicted "
          f"Cheetah latency (owned weights, loopback); median of {args.repeats} warm runs")
    print(table(["network", "ReLUs", "MACs", "pred s", "meas s", "err", "pred MB", "meas MB",
                 "err", "argmax = plain"],
                [[r["network"], f"{r['relus']:,}", f"{r['macs'] / 1e6:.0f}M",
                  f"{r['predicted_latency_s']:.2f}", f"{r['latency_s']:.2f}",
                  f"{100 * r['latency_err']:+.0f}%", f"{r['predicted_bytes'] / 1e6:.1f}",
                  f"{r['bytes'] / 1e6:.1f}", f"{100 * r['bytes_err']:+.0f}%",
                  "yes" if r["argmax_equal"] else "NO"] for r in rows]))
    print(f"measured order = predicted order: {'yes' if verdict['same_order'] else 'NO'}; "
          f"every latency within {100 * TARGET:.0f}%: "
          f"{'yes' if verdict['within_target'] else 'NO'} "
          f"(load average at the end {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
