"""Secure two-party inference under Cheetah on loopback: measured vs predicted, and overhead.

For each network (32x32, 100 classes, random weights: costs do not depend on weight
values) this measures one query (batch 1) with `deepreshape.pi.measure.measure_spec`: two
real SPU parties in two processes over brpc on 127.0.0.1, one cold run, then `--repeats`
warm runs (latency = their median). Beside it, the cost model's prediction and the
ReLU vs convolution shares of time and bytes from SPU's per-op profile, in one table.

SNL versions: `--snl-budget B` adds, for each network, the same network with SNL pixel
masks keeping B ReLUs in all (each slot keeps its proportional share; which positions
are kept does not change the cost). `--run DIR` adds trained runs (e.g. from
`deepreshape snl`), measured with their own weights and masks.

Overhead: the same exported function as a bare SPU program (spu's frontend.compile,
spu.Io shares, spu.Runtime.run with profiling off, two processes over brpc, nothing
else) against the toolkit's `run_two_party`, alternating, in the same invocation;
overhead = toolkit / bare - 1 on the median warm latency.

Weights (`--weights owned shared`): measures each network with the server owning its
weights (one HE product per layer, the default for Cheetah) and with them secret-shared
(two), alternating network by network in the same invocation, and prints the speedup
and the bytes saved.

Emulated links (`--link lan wan`, or RATE:RTT such as 100mbit:10ms): reruns the table
with the two parties talking through `deepreshape.pi.link.Relay`, a user-space relay that
delays and rate-limits each direction (the Cheetah paper's LAN is 3 Gbit/s and 0.3 ms
RTT, its WAN 400 Mbit/s and 40 ms RTT). It needs no privileges, unlike `tc netem`.

    python benchmarks/pi.py                                 # the three networks, ~30 min here
    python benchmarks/pi.py --arch resnet18-m16 --repeats 2 --overhead-repeats 5
    python benchmarks/pi.py --arch resnet18-m16 --snl-budget 50000 --link lan wan --json
    python benchmarks/pi.py --arch resnet18-m16 hrn-2x5x2x --weights shared owned --no-overhead
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import statistics
import sys
import time
from typing import Any

import numpy as np

from deepreshape.cli.common import table
from deepreshape.count import count
from deepreshape.pi import engine
from deepreshape.pi.channel import free_ports
from deepreshape.pi.costs import costmodel, linkcost
from deepreshape.pi.linkprofile import LinkProfile
from deepreshape.pi.measure import machine_info, measure_spec, random_network
from deepreshape.slotkinds.mask import proportional_masks
from deepreshape.spec import NetSpec
from deepreshape.zoo import parse

DEFAULT_ARCHS = ("resnet18-m16", "hrn-2x5x2x", "hrn-5x7x2x")
OVERHEAD_TARGET = 0.05


# --------------------------------------------------------------------------- the table


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the two parties, once they exit)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure_row(label: str, spec: NetSpec, repeats: int, timeout_s: float,
                model: costmodel.CostModel, run_dir: str | None = None,
                link: LinkProfile | None = None, weights: str = "owned") -> dict[str, Any]:
    cpu0 = _children_cpu_s()
    if run_dir is None:
        rec = measure_spec(spec, "cheetah", repeats=repeats, timeout_s=timeout_s, link=link,
                           weights=weights)
    else:
        from deepreshape.pi.measure import measure_run

        rec = measure_run(run_dir, samples=1, repeats=repeats, timeout_s=timeout_s, write=False,
                          link=link, weights=weights)
    # over an emulated link: the loopback model plus the link model's rounds and wire time
    pred = (linkcost.predict(spec, link, "cheetah", model, weights)
            if model.has("cheetah", weights) else None)
    k = rec["per_kind"]
    row = {"network": label, "weights": weights, "arch": spec.describe(),
           "relus": rec["relus"], "macs": rec["macs"],
           "weight_share_bytes": rec["weight_share_bytes"],
           "argmax_equal": rec.get("argmax_equal_jax", rec.get("argmax_agree") == 1.0),
           "latency_s": rec["latency_s"], "warm_latencies_s": rec["warm_latencies_s"],
           "setup_s": rec["setup_s"], "bytes": rec["total_bytes"],
           "setup_bytes": rec["setup_bytes"],
           "relu_time_share": k["relu"]["time_share"], "conv_time_share": k["conv"]["time_share"],
           "relu_bytes_share": k["relu"].get("bytes_share"),
           "conv_bytes_share": k["conv"].get("bytes_share"),
           "peak_rss_mb": rec["peak_rss_mb"],
           # both parties' CPU time (user + system) over the whole session: start-up,
           # compile, sharing, the cold run and the warm runs; the latencies are wall time
           "parties_cpu_s": _children_cpu_s() - cpu0}
    if pred:
        row.update(predicted_latency_s=pred["latency_s"], predicted_bytes=pred["bytes"],
                   latency_err=pred["latency_s"] / rec["latency_s"] - 1,
                   bytes_err=pred["bytes"] / rec["total_bytes"] - 1,
                   predicted_relu_time_share=pred["relu_share_latency_s"])
    row["literature"] = costmodel.literature(spec)
    return row


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.0f}%" if abs(v) < 10 else f"{v:+.1f}x"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def render(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        p = "predicted_latency_s" in r
        out.append([r["network"], r["weights"], f"{r['relus']:,}", f"{r['macs'] / 1e6:.1f}M",
                    f"{r['latency_s']:.2f}", f"{r['predicted_latency_s']:.2f}" if p else "-",
                    _pct(r.get("latency_err")), f"{r['bytes'] / 1e6:.1f}",
                    f"{r['predicted_bytes'] / 1e6:.1f}" if p else "-", _pct(r.get("bytes_err")),
                    _share(r["relu_time_share"]), _share(r["conv_time_share"]),
                    _share(r["relu_bytes_share"]), _share(r["conv_bytes_share"]),
                    f"{r['setup_s']:.1f}"])
    return table(["network", "weights", "ReLUs", "MACs", "lat s", "pred s", "err", "MB", "pred MB", "err",
                  "ReLU t", "conv t", "ReLU B", "conv B", "setup s"], out)


# --------------------------------------------------------------------------- bare SPU


def _bare_party(rank: int, exe_bytes: bytes, names: list[str], shares: list[bytes],
                addrs: list[str], protocol: str, repeats: int, results: Any) -> None:
    """One party of the bare program: link, runtime, own shares, timed runs; nothing else."""
    try:
        import spu
        from spu import libspu

        opts = libspu.logging.LogOptions()  # SPU logs each HE matmul at INFO: keep it quiet
        opts.enable_console_logger = False
        opts.system_log_path = os.devnull
        libspu.logging.setup_logging(opts)
        spu_kind = engine.PROTOCOLS.get(protocol).spu_kind
        cfg = libspu.RuntimeConfig(protocol=getattr(libspu.ProtocolKind, spu_kind),
                                   field=libspu.FieldType.FM64)
        cfg.fxp_fraction_bits = 18
        desc = libspu.link.Desc()
        desc.recv_timeout_ms = 600_000
        for i, a in enumerate(addrs):
            desc.add_party(f"p{i}", a)
        lctx = libspu.link.create_brpc(desc, rank)
        rt = spu.Runtime(lctx, cfg)
        for name, blob in zip(names, shares, strict=True):
            rt.set_var(name, pickle.loads(blob))
        exe = libspu.Executable()
        exe.ParseFromString(exe_bytes)
        times = []
        for _ in range(1 + repeats):
            lctx.barrier()
            t0 = time.perf_counter()
            rt.run(exe)
            times.append(time.perf_counter() - t0)
        out = pickle.dumps(rt.get_var("logits"))
        lctx.stop_link()
        results.put((rank, times, out))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        results.put((rank, None, repr(e)))


def bare_spu(fn: Any, params: dict, x: np.ndarray, protocol: str, repeats: int,
             timeout_s: float) -> dict[str, Any]:
    """The exported function as a plain SPU program; warm latencies and the logits."""
    import jax
    import spu
    from spu import libspu
    from spu.utils import frontend

    leaves = [np.asarray(a, np.float32) for a in jax.tree_util.tree_leaves(params)]
    names = [f"p{i}" for i in range(len(leaves))] + ["x"]
    vis = [libspu.Visibility.VIS_SECRET] * len(names)

    def secure_inference(p: Any, xx: Any) -> Any:
        return fn(p, xx)

    exe, _ = frontend.compile(frontend.Kind.JAX, secure_inference, (params, x), {}, names, vis,
                              lambda flat: ["logits"])
    spu_kind = engine.PROTOCOLS.get(protocol).spu_kind
    cfg = libspu.RuntimeConfig(protocol=getattr(libspu.ProtocolKind, spu_kind),
                               field=libspu.FieldType.FM64)
    cfg.fxp_fraction_bits = 18
    io = spu.Io(2, cfg)
    per_party: list[list[bytes]] = [[], []]
    for a in [*leaves, np.asarray(x, np.float32)]:
        for rank, s in enumerate(io.make_shares(a, libspu.Visibility.VIS_SECRET)):
            per_party[rank].append(pickle.dumps(s))
    addrs = [f"127.0.0.1:{p}" for p in free_ports(2)]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_bare_party, daemon=True,
                         args=(r, exe.SerializeToString(), names, per_party[r], addrs, protocol,
                               repeats, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in procs:
            rank, times, out = results.get(timeout=timeout_s)
            if times is None:
                raise RuntimeError(f"bare SPU party {rank} failed: {out}")
            got[rank] = (times, pickle.loads(out))
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    logits = io.reconstruct([got[0][1], got[1][1]])
    return {"warm_latencies_s": got[1][0][1:], "cold_latency_s": got[1][0][0],
            "logits": np.asarray(logits)}


def overhead(spec: NetSpec, rounds: int, repeats: int, timeout_s: float) -> dict[str, Any]:
    """Toolkit vs bare SPU on the same function and input, alternating `rounds` times."""
    fn, params, x = random_network(spec)
    bare, kit = [], []
    agree = True
    for _ in range(rounds):
        b = bare_spu(fn, params, x, "cheetah", repeats, timeout_s)
        r = engine.run_two_party(fn, params, x, "cheetah", samples=repeats, timeout_s=timeout_s,
                                 weights="shared")  # as the bare program shares them
        bare += b["warm_latencies_s"]
        kit += r.warm_latencies_s
        agree &= bool(np.argmax(b["logits"]) == np.argmax(r.logits))
    mb, mk = statistics.median(bare), statistics.median(kit)
    return {"arch": spec.describe(), "input_size": spec.input_size, "rounds": rounds,
            "repeats": repeats, "bare_latency_s": mb, "toolkit_latency_s": mk,
            "overhead": mk / mb - 1, "target": OVERHEAD_TARGET, "bare_warm_s": bare,
            "toolkit_warm_s": kit, "same_argmax": agree}


# --------------------------------------------------------------------------- main


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure_all(jobs: list[tuple[str, NetSpec, str | None]], args: argparse.Namespace,
                model: costmodel.CostModel, link: LinkProfile | None) -> list[dict[str, Any]]:
    """One table's rows, each network under each weights mode in turn (so a change of
    load hits the modes alike); a failing one is reported in its row, the others go on."""
    rows = []
    where = f" over {link.describe()}" if link else ""
    for label, spec, run_dir in jobs:
        for weights in args.weights:
            t0 = time.monotonic()
            try:
                rows.append(measure_row(label, spec, args.repeats, args.timeout, model, run_dir,
                                        link, weights))
                say(f"{label} ({weights} weights){where}: {rows[-1]['latency_s']:.2f} s, "
                    f"{rows[-1]['bytes'] / 1e6:.1f} MB ({time.monotonic() - t0:.0f} s wall)")
            except Exception as e:  # noqa: BLE001 - one failing network must not lose the others
                say(f"{label} ({weights} weights){where}: failed: {e}")
                rows.append({"network": label, "weights": weights, "arch": spec.describe(),
                             "error": str(e)})
    return rows


def compare_weights(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per network measured both ways: shared against owned latency, bytes and the one-time
    weights' share, in the same run."""
    by = {(r["network"], r["weights"]): r for r in rows if "error" not in r}
    out = []
    for (name, weights), old in by.items():
        new = by.get((name, "owned"))
        if weights != "shared" or new is None:
            continue
        out.append({"network": name, "shared_latency_s": old["latency_s"],
                    "owned_latency_s": new["latency_s"],
                    "speedup": old["latency_s"] / new["latency_s"],
                    "shared_bytes": old["bytes"], "owned_bytes": new["bytes"],
                    "bytes_saved": 1 - new["bytes"] / old["bytes"],
                    "shared_setup_s": old["setup_s"], "owned_setup_s": new["setup_s"],
                    "weight_share_bytes_saved": old["weight_share_bytes"]
                    - new["weight_share_bytes"],
                    "peak_rss_mb": {"shared": old["peak_rss_mb"], "owned": new["peak_rss_mb"]},
                    "parties_cpu_s": {"shared": old["parties_cpu_s"],
                                      "owned": new["parties_cpu_s"]},
                    "argmax_equal": bool(old["argmax_equal"] and new["argmax_equal"])})
    return out


def render_comparison(rows: list[dict[str, Any]]) -> str:
    return table(["network", "shared s", "owned s", "speedup", "shared MB", "owned MB",
                  "bytes saved", "weights' share saved MB", "argmax = plain"],
                 [[c["network"], f"{c['shared_latency_s']:.2f}", f"{c['owned_latency_s']:.2f}",
                   f"{c['speedup']:.2f}x", f"{c['shared_bytes'] / 1e6:.1f}",
                   f"{c['owned_bytes'] / 1e6:.1f}", f"{100 * c['bytes_saved']:.0f}%",
                   f"{c['weight_share_bytes_saved'] / 1e6:.1f}",
                   "yes" if c["argmax_equal"] else "NO"] for c in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", nargs="+", default=list(DEFAULT_ARCHS))
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--num-classes", type=int, default=100)
    ap.add_argument("--snl-budget", type=int, default=None,
                    help="also measure SNL-masked versions keeping this many ReLUs")
    ap.add_argument("--run", nargs="*", default=[], help="trained run directories to add")
    ap.add_argument("--repeats", type=int, default=2, help="warm runs per network")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--overhead-arch", default="resnet18-m8-d1,1,1,1")
    ap.add_argument("--overhead-rounds", type=int, default=3)
    ap.add_argument("--overhead-repeats", type=int, default=3)
    ap.add_argument("--no-overhead", action="store_true")
    ap.add_argument("--link", nargs="*", default=[], metavar="lan|wan|RATE:RTT",
                    help="also measure through these emulated links, e.g. lan wan 100mbit:10ms")
    ap.add_argument("--weights", nargs="+", choices=("owned", "shared"), default=["owned"],
                    help="weights modes to measure each network with (owned: the default)")
    ap.add_argument("--cost-model", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    model = costmodel.load(args.cost_model)
    links = [LinkProfile.parse(t) for t in args.link]
    jobs: list[tuple[str, NetSpec, str | None]] = []
    for name in args.arch:
        spec = parse(name, input_size=args.input_size, num_classes=args.num_classes)
        jobs.append((name, spec, None))
        if args.snl_budget:
            kept = min(args.snl_budget, count(spec).relus)
            jobs.append((f"{name} SNL {args.snl_budget // 1000}K", proportional_masks(spec, kept),
                         None))
    for d in args.run:
        from deepreshape.rundir.run import load_run

        run = load_run(d)
        jobs.append((f"{run.spec.describe()} (run)", run.spec, d))

    rows = measure_all(jobs, args, model, None)
    ok = [r for r in rows if "error" not in r]
    result: dict[str, Any] = {"protocol": "cheetah", "link": "loopback", "rows": rows,
                              "weights_comparison": compare_weights(rows),
                              "load_average": os.getloadavg(), "machine": machine_info()}
    if not args.no_overhead:
        spec = parse(args.overhead_arch, input_size=args.input_size, num_classes=args.num_classes)
        result["overhead"] = overhead(spec, args.overhead_rounds, args.overhead_repeats,
                                      args.timeout)
    result["emulated"] = [{"link": link.to_dict(), "rows": measure_all(jobs, args, model, link)}
                          for link in links]
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print("Cheetah, loopback, batch 1, both parties on this machine "
          f"({result['machine'].get('cpu_count')} cores); latency = median warm run")
    print(render(ok))
    for r in rows:
        if "error" in r:
            print(f"{r['network']} ({r['weights']} weights): failed: {r['error']}")
    if result["weights_comparison"]:
        print("shared against owned weights, measured in turn in this run "
              f"(load average at the end {result['load_average'][0]:.1f}):")
        print(render_comparison(result["weights_comparison"]))
    if "overhead" in result:
        o = result["overhead"]
        print(f"toolkit overhead vs bare SPU ({o['arch']} at {o['input_size']}x{o['input_size']}): "
              f"{o['toolkit_latency_s']:.3f} s vs {o['bare_latency_s']:.3f} s median warm = "
              f"{100 * o['overhead']:+.1f}% (target < {100 * OVERHEAD_TARGET:.0f}%)")
    for e in result["emulated"]:
        print(f"through an emulated link ({e['link']['describe']}, user-space relay):")
        print(render([r for r in e["rows"] if "error" not in r]))
        for r in e["rows"]:
            if "error" in r:
                print(f"{r['network']}: failed: {r['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
