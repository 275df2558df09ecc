"""Calibrating the cost model: which networks, measuring them, resuming, fitting.

`calibrate` measures real two-party runs of the `CALIBRATION` networks (small, randomly
initialized: costs do not depend on weight values), fits `costmodel` on them and reports
its error on the `HELDOUT` networks. Measurements go to a JSONL cache as they complete,
so an interrupted calibration resumes (``deepreshape pi --calibrate``; about 45 minutes
on an idle 2-core machine).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from deepreshape.errors import UsageError
from deepreshape.fileio import append_jsonl
from deepreshape.pi.costs.costmodel import TARGET_REL_ERR, CostModel, Network, fit_measurements, setting
from deepreshape.pi.linkprofile import LinkProfile
from deepreshape.pi.measure import machine_info, measure_spec, now
from deepreshape.pi.protocols import PROTOCOLS, default_weights
from deepreshape.spec import NetSpec, relu_slots
from deepreshape.zoo import parse


def _net(arch: str, size: int, **slots: str) -> Network:
    return Network(arch, size, tuple(sorted((k.replace("__", "."), v) for k, v in slots.items())))


def _masked(arch: str, size: int, kept: int) -> Network:
    """Every ReLU slot keeps at most `kept` pixels (SNL-style), the layers stay."""
    spec = parse(arch, input_size=size, num_classes=10)
    return Network(arch, size, tuple(sorted(
        (s.address, f"mask:pixel:{min(kept, s.numel)}") for s in relu_slots(spec))))


CALIBRATION: tuple[Network, ...] = (
    _net("resnet18-m4-d1,1,1,1", 16),
    _net("resnet18-m8-d1,1,1,1", 16),
    _net("resnet18-m16-d1,1,1,1", 16),
    _net("resnet18-m4-d1,1,1,1", 32),
    _net("resnet18-m8-d1,1,1,1", 32),
    _net("resnet18-m8", 16),
    _net("resnet18-m8-d1,1,1,1", 32, **{"stage1.*": "identity", "stage2.*": "identity"}),
    _masked("resnet18-m16-d1,1,1,1", 16, 64),
    _net("hrn-4x4x2x-m4-d1,1,1,1", 32),
    _net("resnet18-m4", 32, **{"stage3.*": "identity", "stage4.*": "identity"}),
    _net("resnet18-m16-d1,1,1,1", 32),
    _net("resnet18-m24-d1,1,1,1", 32),
    _net("resnet18-m16", 16),
    _net("hrn-2x2x2x-m8-d1,1,1,1", 32),
    _masked("resnet18-m4-d1,1,1,1", 32, 1024),
    _net("hrn-2x5x2x-m8-d1,1,1,1", 32),
    _net("hrn-4x4x4x-m4-d1,1,1,1", 32),
    _net("hrn-5x7x2x-m4-d1,1,1,1", 32),
    _net("hrn-5x7x2x-m8-d1,1,1,1", 32),
    _net("hrn-7x7x7x-m4-d1,1,1,1", 32),
)
"""Different mixes of ReLUs and MACs: base widths 4-24 (stages up to 1372 channels),
16x16 and 32x32, culled stages and SNL-masked slots (ReLUs without their layers' MACs),
and wide late stages whose HE products have many inner blocks (many ciphertext products
per result), so the coefficients separate."""

HELDOUT: tuple[Network, ...] = (
    _net("resnet18-m12-d1,1,1,1", 16),
    _net("hrn-2x5x2x-m4", 32),
    _masked("resnet18-m8-d1,1,1,1", 32, 256),
    _net("resnet18-m8-d2,1,1,1", 32, **{"stage4.*": "identity"}),
    _net("resnet34-m4", 16),
    _net("hrn-5x7x2x-m4", 32),
    _net("resnet18-m32-d1,1,1,1", 32),
)
"""Networks not in the calibration set: the held-out error is measured on these."""

Measure = Callable[[NetSpec, str], dict[str, Any]]
"""`measure(spec, protocol)`: one measurement record (see `calibrate`)."""


def calibrate(
    protocols: Iterable[str] | None = None,
    networks: Sequence[Network] = CALIBRATION,
    heldout: Sequence[Network] = HELDOUT,
    *,
    repeats: int = 3,
    timeout_s: float = 900,
    measure: Measure | None = None,
    progress: Callable[[str], None] | None = None,
    cache: str | Path | None = None,
    link: LinkProfile | None = None,
    weights: str | None = None,
) -> CostModel:
    """Measure every network under each protocol, fit, and evaluate on `heldout`.

    `measure(spec, protocol)` returns a record with ``latency_s``, ``total_bytes`` and
    ``per_kind`` (default: `measure.measure_spec`, a real two-party run on loopback with
    random weights, the median of `repeats` warm runs). With `cache` (a JSONL file), each
    measurement is appended there as it completes and a later call with the same cache
    reuses the ones it finds (same protocol, network and repeats), so an interrupted
    calibration resumes instead of starting over. With `link`, the default measurement
    runs through that emulated network (`deepreshape.pi.link`), so the fit predicts it.
    `weights` is the weights mode of every protocol measured (default: each protocol's
    own, `default_weights`); the model keys its coefficients by `setting`. `protocols`
    defaults to every registered one (`PROTOCOLS`).
    """
    if measure is None:
        def measure(spec: NetSpec, protocol: str) -> dict[str, Any]:
            return measure_spec(spec, protocol, repeats=repeats, timeout_s=timeout_s,
                                    link=link, weights=weights or default_weights(protocol))

    protocols = PROTOCOLS.names() if protocols is None else [PROTOCOLS.check(p) for p in protocols]
    say = progress or (lambda _msg: None)
    done = _read_cache(cache)
    measured: dict[str, list[dict[str, Any]]] = {}
    for protocol in protocols:
        mode = weights or default_weights(protocol)
        name = setting(protocol, mode)
        measured[name] = []
        for part, nets in (("calibration", networks), ("heldout", heldout)):
            for i, net in enumerate(nets, 1):
                spec = net.spec()
                key = _cache_key(protocol, net, repeats, link, mode)
                row = done.get(key)
                if row is None:
                    rec = dict(measure(spec, protocol))
                    row = {k: rec[k] for k in _KEEP if k in rec}
                    row.update(network=net.to_dict(), arch=spec.describe(),
                               input_size=spec.input_size, weights=mode)
                    if cache is not None:
                        append_jsonl(cache, {"key": key, "record": row})
                    how = "measured"
                else:
                    how = "cached"
                measured[name].append({**row, "part": part})
                say(f"{name} {part} {i}/{len(nets)} {spec.describe()} @{spec.input_size}: "
                    f"{row['latency_s']:.3f} s, {row['total_bytes'] / 1e6:.2f} MB ({how})")
    mach = machine_info()
    meta = {
        "date": now(),
        "machine": mach,
        "machine_summary": f"{mach.get('cpu_count')} CPU cores ({mach.get('cpu', '?')}), "
                           "both parties on one host over "
                           + (f"an emulated link ({link.describe()})" if link else "loopback"),
        "link": link.to_dict() if link else None,
        "method": (f"two real SPU parties (spu {mach.get('spu', '?')}) in two processes over "
                   "brpc on 127.0.0.1 sharing the machine's cores; FM64, 18 fraction bits; "
                   "batch 1; randomly initialized weights, owned by the server (one HE product "
                   "per matrix product) or secret-shared (two) as the key of the coefficients "
                   "says (`setting`); per network one cold run then "
                   f"{repeats} warm runs, latency = median warm run, bytes = both directions "
                   "of one warm run incl. input/output shares; each part of SPU's profile "
                   "(ReLU ops, convolutions, the rest) fit by NNLS relative to the total, "
                   "columns chosen by leave-one-out error on the calibration networks"),
        "target_rel_err": TARGET_REL_ERR,
        "calibration_set": [n.to_dict() for n in networks],
        "heldout_set": [n.to_dict() for n in heldout],
    }
    return fit_measurements(measured, meta)


def _cache_key(protocol: str, net: Network, repeats: int, link: LinkProfile | None,
               weights: str) -> str:
    where = [link.rate_bps, link.rtt_s] if link else "loopback"
    return json.dumps([protocol, net.to_dict(), repeats, where, weights], sort_keys=True)


def _read_cache(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """Measurements stored by an earlier `calibrate` with the same cache file."""
    if path is None or not Path(path).exists():
        return {}
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            out[str(item["key"])] = dict(item["record"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UsageError(f"{path}:{n}: not a calibration cache line; delete the file to "
                             "measure again") from None
    return out


_KEEP = ("relus", "macs", "latency_s", "warm_latencies_s", "total_bytes", "bytes_sent",
         "bytes_recv", "setup_s", "cold_latency_s", "setup_bytes", "per_kind")
