"""Measure what secure inference of a trained run costs, and write it beside the run.

One result per (protocol, link): ``pi-<protocol>-<link>.json`` (`deepreshape.pi.records`),
so a WAN measurement never overwrites the loopback one.

ReLU counts are a proxy; a PI user pays latency and bytes. `measure_run` exports a run's
network (`pi.export`), runs it under SPU between a server (weights) and a client (image)
and records what one query costs, next to whether the secure logits agree with the
plaintext torch model.

One session of queries of one image each (batch 1: batching amortizes HE, under Cheetah a
batch of 4 tiny images costs about 1.7x one image, not 4x, so a batch would understate
what one query costs): one cold run (one-time OT/HE setup) then max(`repeats`,
`samples` - 1) warm runs, run i on test image i % `samples`. The warm runs' figures are
the per-query costs recorded, and the secure logits of all `samples` images, each from
the real two-party run, are compared with the plaintext model's. (One session, not a cost
session and a check session: the parties start, connect and set up once.)

`measure_spec` does the cost session alone for a randomly initialized network: costs do
not depend on weight values, so the cost model calibrates without training anything.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deepreshape.count import count
from deepreshape.errors import UsageError
from deepreshape.options import RunOptions, takes_run_options
from deepreshape.pi import engine
from deepreshape.pi.costs import costmodel, linkcost
from deepreshape.pi.linkprofile import LinkProfile
from deepreshape.pi.protocols import PROTOCOLS
from deepreshape.pi.records import link_key, write_result
from deepreshape.spec import NetSpec

DEFAULT_FXP_BITS = 18
FIELD = "FM64"
FXP_NOTE = ("FM64: values in the ring Z_2^64 as fixed point round(v * 2^f) with f fraction "
            "bits (default 18: resolution 2^-18, about 4e-6; a product keeps 2f bits until "
            "truncated, leaving about 2^27 of integer headroom)")
KINDS = ("relu", "conv", "other")


# --------------------------------------------------------------------------- environment


def machine_info() -> dict[str, Any]:
    """Where a measurement was taken: timings are only comparable on the same machine class."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "machine": platform.machine(), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except (OSError, ValueError, IndexError):
        pass
    try:
        from importlib.metadata import version

        info["spu"] = version("spu")
        info["jax"] = version("jax")
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def now() -> str:
    """The current UTC time, to the second, ISO 8601."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- results


def per_kind(per_op: dict[str, dict]) -> dict[str, dict]:
    """ReLU / convolution / other time and bytes with their shares of the per-op totals."""
    groups = engine.summarize_ops(per_op)
    t_all = sum(g["time_s"] for g in groups.values()) or 1.0
    b_all = sum(g.get("bytes", 0) for g in groups.values()) or 1
    out = {}
    for kind in KINDS:
        g = groups[kind]
        row = {"time_s": g["time_s"], "time_share": g["time_s"] / t_all, "ops": g["ops"]}
        if "bytes" in g:
            row.update(bytes=g["bytes"], bytes_share=g["bytes"] / b_all)
        out[kind] = row
    return out


def cost_record(res: engine.SecureResult) -> dict[str, Any]:
    """The per-query costs of a `SecureResult` as JSON.

    `latency_s` is the median of the warm runs (robust on a shared machine); the mean is
    `latency_mean_s`.
    """
    warm = res.warm_latencies_s or [res.latency_s]
    return {
        "protocol": res.protocol,
        "security": PROTOCOLS.get(res.protocol).security,
        "weights": res.weights,
        "latency_s": statistics.median(warm),
        "latency_mean_s": res.latency_s,
        "warm_latencies_s": list(warm),
        "cold_latency_s": res.cold_latency_s,
        "setup_s": res.setup_s,
        "bytes_sent": res.bytes_sent,
        "bytes_recv": res.bytes_recv,
        "total_bytes": res.total_bytes,
        "setup_bytes": res.setup_bytes,
        "rounds": res.rounds,
        "messages": {"sent": res.messages_sent, "recv": res.messages_recv},
        "io_bytes": res.io_bytes,
        "weight_share_bytes": res.weight_share_bytes,
        "per_kind": per_kind(res.per_op),
        "per_op": res.per_op,
        "peak_rss_mb": res.peak_rss_mb,
    }


def _counts(spec: NetSpec) -> dict[str, Any]:
    c = count(spec)
    return {"arch": spec.describe(), "name": spec.short_name(), "input_size": spec.input_size,
            "relus": c.relus,
            "macs": c.macs, "stages": [{"name": s.name, "relus": s.relus, "macs": s.macs}
                                       for s in c.stages]}


def _predicted(spec: NetSpec, protocol: str, cost_model: Any, weights: str | None = None,
               link: LinkProfile | None = None) -> dict[str, Any] | None:
    """The cost model's prediction for what was measured: over an emulated `link`, the
    loopback model plus the link's rounds and wire time (`linkcost`), as `design` does."""
    try:
        model = cost_model if isinstance(cost_model, costmodel.CostModel) else costmodel.load(cost_model)
        out = (linkcost.predict(spec, link, protocol, model, weights)
               if model.has(protocol, weights) else None)
    except UsageError:  # e.g. a model calibrated over another link than the one measured
        out = None
    return {"spu": out, "literature": costmodel.literature(spec)}


# --------------------------------------------------------------------------- random networks


def random_network(spec: NetSpec, seed: int = 0) -> tuple[Callable, dict[str, np.ndarray], np.ndarray]:
    """Exported randomly initialized network and one random input (for cost measurements)."""
    import torch

    from deepreshape.build import build
    from deepreshape.pi.export import export_model

    torch.manual_seed(seed)
    fn, params = export_model(build(spec).eval())
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, spec.in_channels, spec.input_size, spec.input_size)).astype(np.float32)
    return fn, params, x


def measure_spec(spec: NetSpec, protocol: str = "cheetah", repeats: int = 3,
                 timeout_s: float = 900, seed: int = 0,
                 fxp_fraction_bits: int = DEFAULT_FXP_BITS,
                 link: LinkProfile | None = None, weights: str | None = None) -> dict[str, Any]:
    """Costs of one query (batch 1) of `spec` with random weights, both parties on loopback
    (through an emulated `link` if given); `weights` "owned" or "shared" (`engine.WEIGHTS`)."""
    proto = PROTOCOLS.get(protocol)
    fn, params, x = random_network(spec, seed)
    res = proto.engine.run_local(proto, fn, params, x, repeats=repeats, timeout_s=timeout_s,
                                 link=link, fxp_fraction_bits=fxp_fraction_bits,
                                 weights=weights or proto.default_weights)
    plain = engine.plain_logits(fn, params, x)
    return {**_counts(spec), **cost_record(res), "max_abs_err_jax": res.max_abs_err,
            "argmax_equal_jax": bool(np.array_equal(np.argmax(res.logits, 1), np.argmax(plain, 1))),
            "link": link.to_dict() if link else None}


# --------------------------------------------------------------------------- runs


def load_test_images(run: Any, n: int, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` test images of the run's data set, normalized as evaluation does."""
    from deepreshape.data import BatchLoader, load_dataset

    data = load_dataset(run.dataset, data_dir, input_size=run.spec.input_size, limit=n)
    if len(data.test_y) < n:
        raise UsageError(f"{data.name} has only {len(data.test_y)} test images, asked for {n}")
    loader = BatchLoader(data.test_x[:n], data.test_y[:n], n, mean=data.mean, std=data.std,
                         train=False)
    x, y = next(iter(loader))
    return x.numpy().astype(np.float32), y.numpy()


def _agreement(secure: np.ndarray, plain: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    s, p = np.argmax(secure, axis=1), np.argmax(plain, axis=1)
    return {"images": int(len(s)), "argmax_agree": float(np.mean(s == p)),
            "argmax_agree_count": int(np.sum(s == p)),
            "max_abs_err": float(np.max(np.abs(secure - plain))),
            "secure_correct": int(np.sum(s == labels)), "plain_correct": int(np.sum(p == labels))}


def _check_args(protocol: str, samples: int, repeats: int, parties: Any, role: Any) -> None:
    PROTOCOLS.check(protocol)
    for name, v in (("samples", samples), ("repeats", repeats)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UsageError(f"{name} must be a positive integer, got {v!r}")
    if (parties is None) != (role is None):
        raise UsageError("--parties and --role go together: each host runs one role")
    if role is not None and role not in engine.ROLES:
        raise UsageError(f"role must be 'server' or 'client', got {role!r}")


@takes_run_options
def measure_run(
    path: str | Path,
    *,
    protocol: str = "cheetah",
    samples: int = 2,
    repeats: int = 1,
    parties: list[str] | None = None,
    role: str | None = None,
    timeout_s: float = 900,
    fxp_fraction_bits: int = DEFAULT_FXP_BITS,
    cost_model: Any = None,
    write: bool = True,
    link: LinkProfile | None = None,
    weights: str | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any] | None:
    """Measure secure inference of the run at `path`; returns (and writes) the result,
    ``RUN/pi-<protocol>-<link>.json`` (results over other links stay).

    Both parties start locally on loopback, each in its own process, unless `parties`
    ("HOST:PORT" of the server, of the client) and `role` are given: then this process
    is that one party, and the other host runs the same call with the other role. The
    server holds the weights and returns None (it learns nothing, so it writes nothing);
    the client holds the images, learns the logits and writes the result. Its copy of
    the run directory supplies the architecture and the public SNL mask positions (the
    compiled program must match the server's) and the plaintext reference; its weights
    never enter the secure computation. `cost_model` is a `CostModel`, a path, or None
    for the shipped coefficients. `link` (local runs only) puts an emulated network
    between the two processes (`deepreshape.pi.link`). `weights` is "owned" (the default
    for cheetah: the server owns its weights) or "shared" (`engine.WEIGHTS`); both hosts
    must use the same, and the same `samples` and `repeats` (the handshake refuses
    otherwise).
    """
    from deepreshape.pi.export import export_model
    from deepreshape.rundir.run import load_run

    _check_args(protocol, samples, repeats, parties, role)
    proto = PROTOCOLS.get(protocol)  # its engine runs the sessions (`protocols.Engine`)
    weights = weights or proto.default_weights
    proto.engine.check(proto, {"weights": weights})  # validates the mode
    if link is not None and role is not None:
        raise UsageError("--link emulates a network between two local parties; with --parties "
                         "and --role the network is the real one")
    run = load_run(path)
    spec = run.spec
    model = run.model()
    fn, params = export_model(model)
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    # One session: each image is one query (batch 1), run i computes image i % samples, so
    # the warm runs are at least samples - 1 and every image checked went through the real
    # two-party run that was timed.
    warm = max(repeats, samples - 1)
    cfg = {"fxp_fraction_bits": fxp_fraction_bits, "weights": weights, "queries": samples}
    agreed = {"images": samples, "repeats": repeats}  # both hosts must run the same session
    if role == "server":
        import jax

        proto.engine.run_party(proto, "server", fn, params,
                               jax.ShapeDtypeStruct((1, *shape), np.float32), parties,
                               repeats=warm, timeout_s=timeout_s, settings=agreed, **cfg)
        return None

    x, y = load_test_images(run, samples, RunOptions.of(options).data_dir)
    import torch

    with torch.no_grad():
        plain = model(torch.from_numpy(x)).numpy()
    if role == "client":
        cost = proto.engine.run_party(proto, "client", fn, params, x, parties, repeats=warm,
                                      timeout_s=timeout_s, settings=agreed, **cfg)
    else:
        cost = proto.engine.run_local(proto, fn, params, x, repeats=warm, timeout_s=timeout_s,
                                      link=link, **cfg)
    agree = _agreement(np.asarray(cost.logits), plain, y)
    record: dict[str, Any] = {
        "run": str(run.path), "dataset": run.dataset, **_counts(spec),
        **cost_record(cost),
        "field": FIELD, "fxp_fraction_bits": fxp_fraction_bits, "fixed_point": FXP_NOTE,
        "batch": 1, "repeats": warm,
        "deployment": {"mode": "two hosts" if role else "loopback, two local processes",
                       "role": role or "both", "parties": parties,
                       "link": link.to_dict() if link else None},
        "link": link_key(link.to_dict() if link else None, "two hosts" if role else None),
        **agree,
        "predicted": _predicted(spec, protocol, cost_model, weights, link),
        "machine": machine_info(),
        "created": now(),
    }
    if write:
        write_result(run.path, record)
    return record
