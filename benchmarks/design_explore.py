"""Pricing a whole design space at once vs one network at a time.

The space is every HRN (three stage multipliers, each in --mult, default 2..16) at every
base width m in --m (default 8..64) at 32x32: 57 x 15^3 = 192,375 networks. The array
path (`deepreshape.design.space`) counts them all, with and without the Cheetah HE counts
the cost model needs, and predicts their latency and bytes; the reference, timed in the
same run, is what `design` did before: `count(spec)` and `costmodel.predict(spec)` per
network, on a random sample, extrapolated to the space. Sampled networks must agree
exactly (counts) and to 1e-12 (predictions), else exit 1. Timings are the fastest of
--repeats runs, as wall time and as this process's CPU time (what the single-threaded work
takes on an idle core; on a shared machine the wall time also waits for a core). The
target is the whole space priced in under 1 s; the load average is printed too.

    python benchmarks/design_explore.py [--m 8:64] [--mult 2:16] [--sample 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

from deepreshape.count import count
from deepreshape.design import space as ds
from deepreshape.pi.costs import costmodel

TARGET_S = 1.0


def timed(fn: Any, repeats: int = 1) -> tuple[Any, float, float]:
    """(fn(), wall s, CPU s of this process), each the fastest of `repeats` runs.

    On a shared machine the wall time includes waiting for a core; the CPU time is what
    the same single-threaded work takes on an idle core.
    """
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return out, wall, cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--m", default="8:64", help="base widths (default %(default)s)")
    p.add_argument("--mult", default="2:16", help="stage multipliers (default %(default)s)")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--sample", type=int, default=200, help="networks timed one at a time")
    p.add_argument("--repeats", type=int, default=3, help="array timings: fastest of N")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    family = ds.Family("hrn-2x2x2x", (2, 2, 2, 2), args.input_size, 100)
    ms = ds.span(args.m, "--m")
    mults = ds.span(args.mult, "--mult")
    g = ds.grid(ms, mults, mults, mults)
    m, mult = g[:, 0], g[:, 1:]
    model = costmodel.load()

    _, first, _ = timed(lambda: ds.counts(family, m[:1], mult[:1]))  # template + its check
    relu_only, t_counts, c_counts = timed(lambda: ds.counts(family, m, mult, he=False),
                                          args.repeats)
    space, t_features, c_features = timed(lambda: ds.counts(family, m, mult), args.repeats)
    pred, t_predict, c_predict = timed(lambda: ds.predict(space, model=model), args.repeats)
    t_total, c_total = t_features + t_predict, c_features + c_predict

    rng = np.random.default_rng(0)
    idx = rng.choice(len(m), size=min(args.sample, len(m)), replace=False)
    bad = 0
    (per, t_ref, c_ref) = timed(lambda: [(count(s := space.spec(i)), model.predict(s))
                                          for i in idx])
    t_ref, c_ref = t_ref / len(idx), c_ref / len(idx)
    for i, (c, pr) in zip(idx, per, strict=True):
        same = ((space.relus[i], space.macs[i]) == (c.relus, c.macs)
                and relu_only.relus[i] == c.relus and relu_only.macs[i] == c.macs
                and abs(pred["latency_s"][i] - pr["latency_s"]) <= 1e-12 * pr["latency_s"]
                and abs(pred["bytes"][i] - pr["bytes"]) <= 1e-12 * pr["bytes"])
        bad += not same
    ref_space, ref_cpu = t_ref * len(m), c_ref * len(m)
    rows = [
        ("per network: count + costmodel.predict (reference)", ref_space, ref_cpu),
        ("array: ReLUs, MACs, params", t_counts, c_counts),
        ("array: + Cheetah HE counts (all cost features)", t_features, c_features),
        ("array: + predicted latency and bytes (whole job)", t_total, c_total),
    ]
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"networks": len(m), "first_call_s": first, "mismatches": bad,
                          "load_avg_1min": load, "cpus": os.cpu_count(),
                          "rows": [{"path": r[0], "wall_s": r[1], "cpu_s": r[2],
                                    "speedup_cpu": ref_cpu / r[2]} for r in rows]}, indent=2))
    else:
        print(f"{len(m):,} HRNs (m {ms[0]}..{ms[-1]}, multipliers {mults[0]}..{mults[-1]}) at "
              f"{args.input_size}x{args.input_size}; reference on {len(idx)} sampled networks; "
              f"load average {load:.1f} on {os.cpu_count()} CPUs")
        print(f"{'path':<52} {'wall s':>9} {'CPU s':>9} {'CPU us/net':>11} {'vs ref.':>8}")
        for i, (name, wall, cpu) in enumerate(rows):
            note = " (extrapolated)" if i == 0 else ""
            print(f"{name:<52} {wall:>9.2f} {cpu:>9.2f} {cpu / len(m) * 1e6:>11.2f} "
                  f"{ref_cpu / cpu:>7.0f}x{note}")
        print(f"first call (template from two probe networks, checked on a third): {first:.3f} s")
        print(f"sampled networks that disagree: {bad} of {len(idx)}")
        print(f"whole space priced in {c_total:.2f} s of CPU ({t_total:.2f} s wall under this "
              f"load): target under {TARGET_S:.0f} s {'met' if c_total < TARGET_S else 'NOT met'}"
              " on an idle core")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
