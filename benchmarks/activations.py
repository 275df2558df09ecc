"""ReLU or polynomial: what one activation costs under secure inference, measured.

For each protocol (Cheetah, SEMI2K) and size n (activations per query), this runs four
element-wise functions of a client input x (1 x n) and server weights as two real SPU
parties over loopback (`pi.processes.run_two_party`, weights owned by the server where
the protocol allows it), one cold run then `--repeats` warm runs (latency: their median):

- ``x * b``: the linear baseline (one weight-by-secret product per element);
- ``relu(x) * b``: a ReLU (one secure comparison) on the baseline;
- ``x * x * b``: a square (one secret-by-secret product) on the baseline;
- ``(a*x + b)*x + c``: the degree-2 polynomial as the ``poly2`` slot kind computes it
  (Horner: one weight-by-secret and one secret-by-secret product).

It prints each function's latency and bytes, and what each activation adds over the
baseline per element (seconds and bytes per activation), with the square's and the
polynomial's cost as a ratio of the ReLU's. All in one invocation, so the ratios compare
like with like on this machine.

    python benchmarks/activations.py                         # 3 sizes x 2 protocols, ~5 min here
    python benchmarks/activations.py --sizes 65536 --protocols cheetah --repeats 3 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import numpy as np

FUNCTIONS = ("linear", "relu", "square", "poly2")


def function(name: str):
    """The JAX function ``fn(params, x)`` of one row of the table."""
    import jax.numpy as jnp

    return {
        "linear": lambda p, x: x * p["b"],
        "relu": lambda p, x: jnp.maximum(x, 0) * p["b"],
        "square": lambda p, x: x * x * p["b"],
        "poly2": lambda p, x: (p["a"] * x + p["b"]) * x + p["c"],
    }[name]


def measure(protocol: str, n: int, repeats: int, timeout_s: float) -> list[dict[str, Any]]:
    """The four functions at size `n` under `protocol`; one row each."""
    from deepreshape.pi.processes import run_two_party
    from deepreshape.pi.protocols import PROTOCOLS

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, n)).astype(np.float32)
    params = {k: rng.normal(0.5, 0.1, size=(n,)).astype(np.float32) for k in ("a", "b", "c")}
    rows = []
    for name in FUNCTIONS:
        res = run_two_party(function(name), params, x, protocol, samples=repeats,
                            timeout_s=timeout_s, weights=PROTOCOLS.get(protocol).default_weights)
        rows.append({"protocol": protocol, "n": n, "function": name,
                     "latency_s": statistics.median(res.warm_latencies_s),
                     "bytes": res.total_bytes, "max_abs_err": res.max_abs_err})
    base = rows[0]
    relu = rows[1]
    for r in rows:
        r["extra_s_per_activation"] = (r["latency_s"] - base["latency_s"]) / n
        r["extra_bytes_per_activation"] = (r["bytes"] - base["bytes"]) / n
    for r in rows[2:]:
        r["time_vs_relu"] = r["extra_s_per_activation"] / relu["extra_s_per_activation"]
        r["bytes_vs_relu"] = r["extra_bytes_per_activation"] / relu["extra_bytes_per_activation"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocols", nargs="+", default=["cheetah", "semi2k"])
    p.add_argument("--sizes", nargs="+", type=int, default=[4096, 16384, 65536],
                   help="activations per query")
    p.add_argument("--repeats", type=int, default=2, help="warm runs (the median is kept)")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from deepreshape.cli.common import table

    rows = [r for proto in args.protocols for n in args.sizes
            for r in measure(proto, n, args.repeats, args.timeout)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    ratio = lambda r, k: "-" if k not in r else f"{r[k]:.2f}x"  # noqa: E731
    print(table(["protocol", "n", "function", "latency s", "MB", "+us / act.", "+B / act.",
                 "time vs ReLU", "bytes vs ReLU"],
                [[r["protocol"], f"{r['n']:,}", r["function"], f"{r['latency_s']:.3f}",
                  f"{r['bytes'] / 1e6:.2f}", f"{1e6 * r['extra_s_per_activation']:.2f}",
                  f"{r['extra_bytes_per_activation']:.1f}", ratio(r, "time_vs_relu"),
                  ratio(r, "bytes_vs_relu")] for r in rows]))
    worst = max(r["max_abs_err"] or 0.0 for r in rows)
    print(f"secure vs plaintext: max abs error {worst:.2e} over every run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
