"""`deepreshape pi`: measure, predict or calibrate the cost of secure two-party inference.

    deepreshape pi RUN [--protocol P] [--samples N] [--link lan|wan|RATE:RTT] [--json]
    deepreshape pi RUN --role server|client --parties HOST:PORT,HOST:PORT   (one party per host)
    deepreshape pi --estimate NAME [--dataset D] [--protocol P] [--json]
    deepreshape pi --calibrate [--protocol P] [--link L] [--out costmodel.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deepreshape.cli.common import add_shape_args, fmt_int, print_json, spec_kwargs, table
from deepreshape.errors import UsageError
from deepreshape.pi.protocols import (
    DEFAULT_PROTOCOL,
    PROTOCOLS,
    WEIGHTS,
    insecure_warning,
    protocol_help,
)
from deepreshape.rundir.schema import PI


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `pi` sub-command."""
    p = sub.add_parser(
        "pi", help="secure two-party inference (SPU): measure a run, predict or calibrate costs",
        description="Measure latency and communication of secure two-party inference of a "
        "trained run (server: weights, client: image; only the client learns the logits) and "
        f"write RUN/{PI.file('<protocol>', '<link>').name} (one per protocol and link: other "
        "links' results stay); or predict them from counts (--estimate), or "
        "refit the cost model on this machine (--calibrate).")
    p.add_argument("run", nargs="?", help="run directory to measure")
    p.add_argument("--estimate", metavar="NAME", help="predict costs of a zoo network, no run")
    p.add_argument("--calibrate", action="store_true",
                   help="measure the calibration networks here and refit the cost model")
    p.add_argument("--protocol", choices=PROTOCOLS.names(), default=None, help=protocol_help())
    p.add_argument("--weights", choices=tuple(WEIGHTS), default=None,
                   help="owned (default for cheetah): the server owns its weights, one HE "
                        "product per layer; shared (default for semi2k): the weights are "
                        "secret-shared too, two HE products per layer (the older, slower mode)")
    p.add_argument("--samples", type=int, default=2,
                   help="test images, one query each in one session, checked against "
                   "plaintext (default 2); costs are per query")
    p.add_argument("--repeats", type=int, default=None,
                   help="warm runs for latency, at least --samples - 1 (default 1; 3 for "
                   "--calibrate)")
    p.add_argument("--parties", default=None, metavar="HOST:PORT,HOST:PORT",
                   help="server and client addresses, to run one party per host (with --role)")
    p.add_argument("--role", choices=("server", "client"), default=None,
                   help="the party this process is (with --parties)")
    p.add_argument("--link", default=None, metavar="lan|wan|RATE:RTT",
                   help="put an emulated network between the two local parties (measuring or "
                        "--calibrate; --estimate adds the link's rounds and wire time to the "
                        "loopback prediction): lan (3 Gbit/s, 0.3 ms RTT), wan (400 Mbit/s, "
                        "40 ms RTT) or e.g. 100mbit:10ms")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds before an absent or silent peer is an error (default 900)")
    p.add_argument("--fxp-bits", type=int, default=18,
                   help="fixed-point fraction bits in the 64-bit ring FM64 (default 18)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cost-model", default=None, metavar="PATH",
                   help="coefficients to predict with (default: the shipped costmodel.json)")
    p.add_argument("--out", default="costmodel.json",
                   help="--calibrate: where to save the fit (a cost model already there keeps "
                        "the settings not measured now)")
    add_shape_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _mode(args: argparse.Namespace) -> str:
    modes = [m for m, on in (("measure", args.run), ("estimate", args.estimate),
                             ("calibrate", args.calibrate)) if on]
    if len(modes) != 1:
        raise UsageError("give exactly one of RUN, --estimate NAME or --calibrate")
    if modes[0] != "measure" and (args.parties or args.role):
        raise UsageError("--parties and --role apply only to measuring a RUN")
    if modes[0] != "estimate" and any(getattr(args, k) is not None
                                      for k in ("dataset", "input_size", "num_classes")):
        raise UsageError("--dataset, --input-size and --num-classes apply only to --estimate")
    return modes[0]


def _parties(text: str | None) -> list[str] | None:
    if text is None:
        return None
    parts = [t.strip() for t in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"--parties must be 'HOST:PORT,HOST:PORT' (server, client), got {text!r}")
    return parts


def _warn_insecure(protocol: str) -> None:
    warning = insecure_warning(protocol)
    if warning:
        print(f"deepreshape: warning: {warning}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run `deepreshape pi` (measure, --estimate or --calibrate); returns the exit code."""
    mode = _mode(args)
    if mode == "estimate":
        return _estimate(args)
    if mode == "calibrate":
        return _calibrate(args)
    return _measure(args)


# --------------------------------------------------------------------------- estimate


def _estimate(args: argparse.Namespace) -> int:
    from deepreshape.pi.costs import costmodel, linkcost
    from deepreshape.zoo import parse

    protocol = args.protocol or DEFAULT_PROTOCOL
    spec = parse(args.estimate, **spec_kwargs(args))
    pred = linkcost.predict(spec, linkcost.parse_link(args.link), protocol,
                            costmodel.load(args.cost_model), args.weights)
    lit = costmodel.literature(spec)
    if args.json:
        print_json({"predicted": pred, "literature": lit})
        return 0
    _warn_insecure(protocol)
    over = (pred.get("link") or {}).get("describe") or "loopback"
    carried = (f"; over {pred['target_link']} about {pred['rounds']:,} rounds and the wire "
               f"time add {pred['link_s']:.2f} s" if pred["link_s"] else "")
    print(f"{spec.short_name()} at {spec.input_size}x{spec.input_size}, {protocol} with "
          f"{pred['weights']} weights (cost model calibrated over {over}{carried}): predicted "
          f"{pred['latency_s']:.2f} s and {pred['bytes'] / 1e6:.1f} MB per query; ReLUs "
          f"{100 * pred['relu_share_latency_s']:.0f}% of the time, "
          f"{100 * pred['relu_share_bytes']:.0f}% of the bytes")
    print(_stage_table(pred))
    print(f"literature (Delphi HE+GC, not measured here): online {lit['online_latency_s']:.2f} s "
          f"and {lit['online_bytes'] / 1e6:.1f} MB, offline {lit['offline_latency_s']:.0f} s "
          f"and {lit['offline_bytes'] / 1e9:.2f} GB")
    return 0


def _stage_table(pred: dict[str, Any]) -> str:
    rows = [[r["stage"], fmt_int(r["relus"]), fmt_int(r["macs"]), f"{r['latency_s']:.3f}",
             f"{100 * r['relu_latency_s'] / r['latency_s']:.0f}%" if r["latency_s"] else "-",
             f"{r['bytes'] / 1e6:.2f}"] for r in pred["per_stage"]]
    if pred.get("link_s"):
        rows.append(["link", "", "", f"{pred['link_s']:.3f}", "-", ""])
    rows.append(["total", fmt_int(pred["relus"]), fmt_int(pred["macs"]),
                 f"{pred['latency_s']:.3f}", f"{100 * pred['relu_share_latency_s']:.0f}%",
                 f"{pred['bytes'] / 1e6:.2f}"])
    return table(["stage", "ReLUs", "MACs", "latency s", "ReLU time", "MB"], rows)


# --------------------------------------------------------------------------- calibrate


def _calibrate(args: argparse.Namespace) -> int:
    from deepreshape.pi import calibration
    from deepreshape.pi.costs import costmodel
    from deepreshape.pi.linkprofile import LinkProfile

    protocols = [args.protocol] if args.protocol else PROTOCOLS.names()
    link = LinkProfile.parse(args.link) if args.link else None
    say = (lambda m: print(m, file=sys.stderr)) if not args.json else None
    cache = Path(args.out).with_suffix(".measurements.jsonl")
    # an existing model keeps the settings not measured now; read it before measuring
    existing = costmodel.load(args.out) if Path(args.out).exists() else None
    if say:
        say(f"measurements go to {cache} as they complete; rerun the same command to resume")
        if existing:
            say(f"{args.out} exists: its other settings "
                f"({', '.join(sorted(existing.coefficients))}) are kept, the measured ones replaced")
    model = calibration.calibrate(protocols, repeats=args.repeats or 3, timeout_s=args.timeout,
                                  progress=say, cache=cache, link=link, weights=args.weights)
    saved = costmodel.merge(existing, model) if existing else model
    path = saved.save(args.out)
    if args.json:
        print_json(saved.to_dict())
        return 0
    for p in model.meta["report"]:
        rep = model.meta["report"][p]
        h = rep["heldout_error"]
        print(f"{p}: held-out error latency mean {100 * h['latency_s']['mean_abs']:.1f}% "
              f"(max {100 * h['latency_s']['max_abs']:.1f}%), bytes mean "
              f"{100 * h['bytes']['mean_abs']:.1f}% (max {100 * h['bytes']['max_abs']:.1f}%)")
    print(f"-> {path} (use it with --cost-model {path})")
    return 0


# --------------------------------------------------------------------------- measure


def _measure(args: argparse.Namespace) -> int:
    from deepreshape.options import RunOptions
    from deepreshape.pi.linkprofile import LinkProfile
    from deepreshape.pi.measure import measure_run

    protocol = args.protocol or DEFAULT_PROTOCOL
    link = LinkProfile.parse(args.link) if args.link else None
    _warn_insecure(protocol)
    rec = measure_run(args.run, protocol=protocol, samples=args.samples,
                      repeats=args.repeats or 1, options=RunOptions(data_dir=args.data_dir),
                      parties=_parties(args.parties), role=args.role, timeout_s=args.timeout,
                      fxp_fraction_bits=args.fxp_bits, cost_model=args.cost_model, link=link,
                      weights=args.weights)
    if rec is None:  # the server learns nothing
        print(f"server: served {args.samples} image(s) to the client at "
              f"{_parties(args.parties)[1]}; the client writes {PI.file(protocol, 'hosts').name}")
        return 0
    if args.json:
        print_json(rec)
        return 0
    print(_measure_text(rec))
    return 0


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}"


def _measure_text(rec: dict[str, Any]) -> str:
    from deepreshape.pi.records import link_label, prediction_text, result_path

    lines = [
        f"{rec.get('name', rec['arch'])} on {rec['dataset']}, {rec['protocol']} ({rec['security']}) with "
        f"{rec['weights']} weights, "
        f"{rec['field']} with {rec['fxp_fraction_bits']} fraction bits, {rec['deployment']['mode']}"
        + (f" over an emulated link ({rec['deployment']['link']['describe']})"
           if rec["deployment"].get("link") else ""),
        f"  online latency {rec['latency_s']:.3f} s per query over {link_label(rec)}, warm "
        f"(median of {rec['repeats']}); "
        f"one-time setup {rec['setup_s']:.2f} s (cold run {rec['cold_latency_s']:.2f} s)",
        f"  communication {_mb(rec['total_bytes'])} MB per query (client sent "
        f"{_mb(rec['bytes_sent'])}, received {_mb(rec['bytes_recv'])}), setup "
        f"{_mb(rec['setup_bytes'])} MB, {rec['messages']['sent']} messages sent",
    ]
    rows = [[k, f"{v['time_s']:.3f}", f"{100 * v['time_share']:.0f}%", _mb(v.get("bytes")),
             f"{100 * v['bytes_share']:.0f}%" if "bytes_share" in v else "-"]
            for k, v in rec["per_kind"].items()]
    lines += ["  " + ln for ln in table(["kind", "time s", "share", "MB", "share"], rows).split("\n")]
    pred = prediction_text(rec)
    if pred:
        lines += [f"  {line}" for line in pred.split("\n")]
    lines.append(f"  secure vs plaintext on {rec['images']} test image(s): argmax agrees on "
                 f"{rec['argmax_agree_count']}/{rec['images']}, max abs error "
                 f"{rec['max_abs_err']:.2e}")
    lines.append(f"-> {result_path(rec['run'], rec)}")
    return "\n".join(lines)
