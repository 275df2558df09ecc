"""Iso-ReLU pairs under Cheetah: does a HybReNet run faster than its equal-ReLU partners?

The journal version of the paper claims 5.2x lower PI runtime for HybReNets at equal
ReLUs. This builds such pairs and prices them with the shipped cost model (loopback and,
with the link term of `deepreshape.pi.costs.linkcost`, the WAN), then measures each network
(32x32, 100 classes, random weights: costs do not depend on weight values) as one query
under Cheetah with server-owned weights: two real SPU parties on this machine's loopback,
one cold run, then `--repeats` warm runs (latency = their median).

The pairs (the partners nearest in ReLUs; `deepreshape.design.costs.Explored.nearest`):
- `--hrn` (default hrn-5x7x2x) against the BaseCh ResNet18 `resnet18-mM` (m 1..128) and
  the StageCh `resnet18-mM-LxLxLx` (m 1..64, L 3..8);
- the `--deepreduce` network (default hrn-5x5x3x) through DeepReDuce for `--order`,
  the plan whose ReLUs are nearest `--budget` (default 180000), against ResNet18 with
  SNL pixel masks keeping exactly as many ReLUs, each slot its proportional share.

    python benchmarks/iso_relu.py --predict-only            # the predicted half, seconds
    python benchmarks/iso_relu.py --repeats 2               # measured too, ~25 min here
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from deepreshape.cli.common import table
from deepreshape.count import count
from deepreshape.design.costs import explore
from deepreshape.optimize.deepreduce import plan
from deepreshape.pi.costs import costmodel, linkcost
from deepreshape.reports import md_table
from deepreshape.slotkinds.mask import proportional_masks
from deepreshape.spec import NetSpec
from deepreshape.zoo import parse


def pairs(hrn: str = "hrn-5x7x2x", deepreduce: str = "hrn-5x5x3x", order: str = "3,2,4,1",
          budget: int = 180_000) -> list[tuple[str, NetSpec]]:
    """(label, spec) of the five networks; the first of each pair is the reference."""
    h = parse(hrn)
    ex = explore(range(1, 129), range(3, 9), families=["basech", "stagech"])
    base = parse(ex.name(ex.nearest(count(h).relus, "basech")))
    stage = parse(ex.name(ex.nearest(count(h).relus, "stagech", max_m=64)))
    planned = [p for p in plan(parse(deepreduce), order) if p.label != deepreduce]
    dr = min(planned, key=lambda p: abs(count(p.spec).relus - budget))
    snl = proportional_masks(parse("resnet18"), count(dr.spec).relus)
    return [(hrn.replace("hrn", "HRN", 1), h), (f"BaseCh {base.name}", base),
            (f"StageCh {stage.name}", stage),
            (f"{deepreduce.replace('hrn', 'HRN', 1)}, DeepReDuce {dr.label}", dr.spec),
            ("ResNet18, SNL pixel masks", snl)]


def predict(spec: NetSpec) -> dict[str, Any]:
    loop = linkcost.predict(spec)
    wan = linkcost.predict(spec, linkcost.parse_link("wan"))
    return {"relus": count(spec).relus, "macs": count(spec).macs,
            "predicted_latency_s": loop["latency_s"], "predicted_wan_latency_s": wan["latency_s"],
            "predicted_bytes": loop["bytes"],
            "delphi_online_s": costmodel.literature(spec)["online_latency_s"]}


def measure(spec: NetSpec, repeats: int, timeout_s: float) -> dict[str, Any]:
    from deepreshape.pi.measure import measure_spec

    rec = measure_spec(spec, "cheetah", repeats=repeats, timeout_s=timeout_s, weights="owned")
    return {"latency_s": rec["latency_s"], "warm_latencies_s": rec["warm_latencies_s"],
            "bytes": rec["total_bytes"], "argmax_equal": rec["argmax_equal_jax"]}


def render(rows: list[dict[str, Any]]) -> str:
    """The markdown table of docs/pi-costs.md; each pair's time ratio is against its first
    network (rows 0 and 3), measured where measured."""
    out = []
    for i, r in enumerate(rows):
        ref = rows[0 if i < 3 else 3]
        key = "latency_s" if "latency_s" in r and "latency_s" in ref else "predicted_latency_s"
        m = "latency_s" in r
        out.append([r["network"], f"{r['relus']:,}", f"{r['macs'] / 1e6:.1f}M",
                    f"{r['predicted_latency_s']:.2f}", f"{r['latency_s']:.2f}" if m else "-",
                    f"{r['predicted_bytes'] / 1e6:.1f}", f"{r['bytes'] / 1e6:.1f}" if m else "-",
                    f"{r['predicted_wan_latency_s']:.2f}", f"{r[key] / ref[key]:.2f}x",
                    f"{r['delphi_online_s']:.2f}"])
    return md_table(["network", "ReLUs", "MACs", "predicted s", "measured s", "predicted MB",
                     "measured MB", "predicted s, WAN", "time vs the first of its pair",
                     "Delphi-style online s"], out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hrn", default="hrn-5x7x2x")
    ap.add_argument("--deepreduce", default="hrn-5x5x3x")
    ap.add_argument("--order", default="3,2,4,1")
    ap.add_argument("--budget", type=int, default=180_000)
    ap.add_argument("--repeats", type=int, default=2, help="warm runs per network")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--predict-only", action="store_true", help="no secure runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    rows = []
    for label, spec in pairs(args.hrn, args.deepreduce, args.order, args.budget):
        row = {"network": label, "arch": spec.describe(), **predict(spec)}
        if not args.predict_only:
            t0 = time.monotonic()
            row.update(measure(spec, args.repeats, args.timeout))
            print(f"{label}: {row['latency_s']:.2f} s, {row['bytes'] / 1e6:.1f} MB "
                  f"({time.monotonic() - t0:.0f} s wall)", file=sys.stderr, flush=True)
        rows.append(row)
    if args.json:
        json.dump({"rows": rows, "load_average": os.getloadavg(),
                   "cost_model_date": costmodel.load().meta.get("date")}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(render(rows))
    if not args.predict_only:
        print(table(["network", "latency err", "bytes err", "argmax = plain"],
                    [[r["network"], f"{100 * (r['predicted_latency_s'] / r['latency_s'] - 1):+.0f}%",
                      f"{100 * (r['predicted_bytes'] / r['bytes'] - 1):+.0f}%",
                      "yes" if r["argmax_equal"] else "NO"] for r in rows]))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
