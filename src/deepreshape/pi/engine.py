"""Secure two-party inference of a JAX function under SecretFlow SPU (0.9.5).

The engine runs any ``fn(params, x) -> logits`` written with jax.numpy/lax: the SERVER
(rank 0) holds ``params`` (a pytree of float32 arrays), the CLIENT (rank 1) holds the input
``x``, and only the client learns the logits. Each party needs only the other's SHAPES, so
both compile the same SPU executable; the handshake checks that they did.

Entry points:

- `run_simulated`: SPU's in-process simulator (threads, memory links), for fast tests.
- `run_party`: one party of a real deployment (two hosts, SPU's brpc link).
- `run_two_party`: both parties as two spawned processes on 127.0.0.1, with the measured
  latency (cold and warm), bytes per inference and a per-op profile.

Protocols (`PROTOCOLS`, `SECURITY_NOTE`): ``cheetah`` is the secure one (HE for linear
layers, OT for comparisons); ``semi2k`` is not secure, for debugging: party 0 is the
trusted dealer.

Measurements come from SPU itself: with ``enable_pphlo_profile`` each `Runtime.run` logs
per-op time and bytes and a "Link details" line with the bytes and messages ("actions")
of the run. SPU 0.9.5 exposes no link statistics to Python, so the party points SPU's
C++ logger at a file (`spu.libspu.logging.setup_logging`) and parses the lines it wrote
during each run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import multiprocessing
import os
import pickle
import queue as queue_mod
import re
import resource
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepreshape.errors import DeepReshapeError, RunFailure, UsageError
from deepreshape.pi.link import LinkProfile, Relay

PROTOCOLS: dict[str, str] = {"cheetah": "CHEETAH", "semi2k": "SEMI2K"}
"""Protocol name -> `spu.libspu.ProtocolKind` member. semi2k: not secure, for debugging:
party 0 is the trusted dealer."""

SECURITY_NOTE: dict[str, str] = {
    "cheetah": "secure against a semi-honest peer: linear layers by homomorphic encryption, "
    "ReLU comparisons by oblivious transfer (Cheetah, USENIX Security 2022)",
    "semi2k": "not secure, for debugging: party 0 is the trusted dealer (SPU's two-party "
    "SEMI2K uses TrustedFirstParty Beaver triples, so the server could learn the input)",
}

ROLES: dict[str, int] = {"server": 0, "client": 1}

WEIGHTS: dict[str, str] = {
    "owned": "the server's weights enter SPU as a secret it owns (SPU's experimental colocated "
    "optimization): each product with them is one HE product, its other operand's share "
    "encrypted by the client; the client's share of the weights is all zeros",
    "shared": "the server's weights are secret-shared like the input: each product with them "
    "is two HE products, one per direction of the cross terms",
}
"""How the server's weights enter the secure computation (`--weights`); see docs/pi-costs.md."""


def default_weights(protocol: str) -> str:
    """Owned weights for Cheetah (its own setting: the server holds its model in the
    clear); shared for semi2k, the debugging mode."""
    return "owned" if protocol == "cheetah" else "shared"


def _check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise UsageError(f"unknown weights mode {weights!r}; choose from {sorted(WEIGHTS)}")
FXP_BITS_RANGE = (8, 26)
"""Fraction bits allowed in the 64-bit ring: below 8 the resolution ruins the logits,
above 26 a product (2x the fraction bits before truncation) leaves too little headroom."""

RELU_OPS = frozenset({
    "pphlo.less", "pphlo.greater", "pphlo.less_equal", "pphlo.greater_equal",
    "pphlo.maximum", "pphlo.minimum", "pphlo.max", "pphlo.min", "pphlo.select",
    "pphlo.sign", "pphlo.clamp",
})
CONV_OPS = frozenset({"pphlo.convolution", "pphlo.dot", "pphlo.dot_general"})

_LINK_ID = "deepreshape-pi"
_OUT_NAME = "logits"
_X_NAME = "x"
_HANDSHAKE_VERSION = 1


def _param_names(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


# --------------------------------------------------------------------------- config


def _spu() -> Any:
    """Import spu lazily so this module (and PROTOCOLS) load without the `pi` extra."""
    try:
        import spu
    except ImportError as e:
        raise UsageError(
            "secure inference needs the `pi` extra: pip install 'deepreshape[pi]'"
        ) from e
    return spu


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")


def _checked(protocol: str) -> str:
    _check_protocol(protocol)
    return protocol


def runtime_config(
    protocol: str = "cheetah",
    fxp_fraction_bits: int = 18,
    profile: bool = False,
    weights: str | None = None,
    **overrides: Any,
) -> Any:
    """SPU runtime config: two-party `protocol` over the 64-bit ring (FM64).

    Fixed point: reals are encoded as ``round(v * 2**fxp_fraction_bits)`` in Z_2^64. With
    18 bits the resolution is 2**-18 (about 4e-6) and a product, which carries 36 fraction
    bits until it is truncated, still has about 2**27 of integer headroom, far above CNN
    activations; measured logit errors against plain JAX are 2e-5 to 4e-4. FM32 has no
    room for a product at useful precision, and FM128 would double all communication.

    `profile` turns on SPU's per-op profile (needed for bytes and per-op times);
    `weights` "owned" (default for cheetah, `default_weights`) turns on SPU's colocated
    optimization, which lets a secret have an owner; `overrides` set other `RuntimeConfig`
    fields by name.
    """
    _check_protocol(protocol)
    weights = weights or default_weights(protocol)
    _check_weights(weights)
    lo, hi = FXP_BITS_RANGE
    if isinstance(fxp_fraction_bits, bool) or not isinstance(fxp_fraction_bits, int) or not (
        lo <= fxp_fraction_bits <= hi
    ):
        raise UsageError(f"fxp_fraction_bits must be an integer in [{lo}, {hi}], "
                         f"got {fxp_fraction_bits!r}")
    lib = _spu().libspu
    cfg = lib.RuntimeConfig(
        protocol=getattr(lib.ProtocolKind, PROTOCOLS[protocol]), field=lib.FieldType.FM64
    )
    cfg.fxp_fraction_bits = fxp_fraction_bits
    cfg.enable_pphlo_profile = bool(profile)
    cfg.experimental_enable_colocated_optimization = weights == "owned"
    for name, value in overrides.items():
        if name.startswith("_") or not hasattr(cfg, name):
            raise UsageError(f"unknown SPU runtime option {name!r}")
        setattr(cfg, name, value)
    return cfg


# --------------------------------------------------------------------------- specs


def _as_f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _encode_spec(tree: Any) -> Any:
    """A params pytree (nested dicts/lists of arrays or shape structs) as JSON-able shapes."""
    if isinstance(tree, dict):
        if not all(isinstance(k, str) for k in tree):
            raise UsageError("params dict keys must be strings")
        return {"dict": {k: _encode_spec(tree[k]) for k in sorted(tree)}}
    if isinstance(tree, list | tuple):
        return {"list": [_encode_spec(v) for v in tree]}
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        return {"shape": [int(d) for d in tree.shape]}
    raise UsageError(f"params must be nested dicts/lists of arrays, found {type(tree).__name__}")


def _decode_spec(obj: Any, depth: int = 0) -> Any:
    """Inverse of `_encode_spec`, into `jax.ShapeDtypeStruct`s; validates a peer's message."""
    import jax

    if depth > 64 or not isinstance(obj, dict) or len(obj) != 1:
        raise ValueError("malformed shape spec")
    (kind, body), = obj.items()
    if kind == "dict" and isinstance(body, dict):
        return {str(k): _decode_spec(v, depth + 1) for k, v in body.items()}
    if kind == "list" and isinstance(body, list):
        return [_decode_spec(v, depth + 1) for v in body]
    if kind == "shape" and isinstance(body, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in body
    ):
        return jax.ShapeDtypeStruct(tuple(body), np.float32)
    raise ValueError("malformed shape spec")


def _flat_shapes(spec: Any) -> list[tuple[int, ...]]:
    """Leaf shapes of an encoded spec in JAX's flattening order (dicts by sorted key)."""
    if "shape" in spec:
        return [tuple(spec["shape"])]
    children = spec["list"] if "list" in spec else [spec["dict"][k] for k in sorted(spec["dict"])]
    return [s for c in children for s in _flat_shapes(c)]


@dataclass(frozen=True)
class Program:
    """A compiled SPU executable plus the input shapes both parties must agree on.

    Plain bytes and tuples, so it pickles: `run_two_party` compiles once and hands this to
    the spawned parties instead of pickling `fn`, which is often a closure.
    """

    executable: bytes  # libspu.Executable.SerializeToString()
    param_spec: Any  # `_encode_spec` of the params
    x_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def param_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the flattened parameters, in the order the executable takes them."""
        return _flat_shapes(self.param_spec)

    def fingerprint(self) -> str:
        """Hash of the code and shapes; equal in both parties iff they run the same thing."""
        h = hashlib.sha256(self.executable)
        h.update(json.dumps([self.param_spec, list(self.x_shape)], sort_keys=True).encode())
        return h.hexdigest()

    def load(self) -> Any:
        """The executable as a `libspu.Executable`, ready to run."""
        exe = _spu().libspu.Executable()
        exe.ParseFromString(self.executable)
        return exe


def _named(fn: Callable) -> Callable:
    """SPU's compiler names the executable after `fn.__name__`, which not every callable has."""

    def secure_inference(params: Any, x: Any) -> Any:
        return fn(params, x)

    return secure_inference


def compile_program(fn: Callable, params: Any, x: Any) -> Program:
    """Compile `fn(params, x)` for SPU; `params`/`x` may be arrays or shape structs.

    All inputs are secret (VIS_SECRET: CHEETAH rejects VIS_PRIVATE) and float32.
    """
    import jax

    spu = _spu()
    from spu.utils import frontend

    param_spec = _encode_spec(params)
    p_abs = _decode_spec(param_spec)
    x_shape = x.shape if hasattr(x, "shape") else np.shape(x)
    x_abs = jax.ShapeDtypeStruct(tuple(int(d) for d in x_shape), np.float32)
    n = len(jax.tree_util.tree_leaves(p_abs))
    names = [*_param_names(n), _X_NAME]
    vis = [spu.libspu.Visibility.VIS_SECRET] * len(names)
    try:
        exe, out = frontend.compile(
            frontend.Kind.JAX, _named(fn), (p_abs, x_abs), {}, names, vis,
            lambda flat: [f"{_OUT_NAME}{i}" if i else _OUT_NAME for i in range(len(flat))],
        )
    except DeepReshapeError:
        raise
    except Exception as e:
        raise UsageError(f"could not compile fn for SPU: {type(e).__name__}: {e}") from e
    logits = _single_output(out)
    return Program(exe.SerializeToString(), param_spec, tuple(x_abs.shape),
                   tuple(int(d) for d in logits.shape))


def _single_output(out: Any) -> Any:
    """The one array `fn` must return (the logits)."""
    import jax

    outs = jax.tree_util.tree_leaves(out)
    if len(outs) != 1:
        raise UsageError(f"fn must return one array (the logits), it returns {len(outs)}")
    return outs[0]


# --------------------------------------------------------------------------- simulator


def run_simulated(
    fn: Callable, params: Any, x: Any, protocol: str = "cheetah", **cfg: Any
) -> np.ndarray:
    """`fn(params, x)` in SPU's in-process simulator (two threads, memory links).

    Same protocol and fixed point as a real run, so it checks accuracy quickly; it measures
    nothing. `cfg` goes to `runtime_config`.
    """
    import jax

    _spu()
    from spu.utils import simulation

    config = runtime_config(protocol, **cfg)
    params32 = jax.tree_util.tree_map(_as_f32, params)
    try:
        out = simulation.sim_jax(simulation.Simulator(2, config), _named(fn))(params32, _as_f32(x))
    except DeepReshapeError:
        raise
    except Exception as e:
        raise RunFailure(f"simulated SPU run failed: {_spu_error_text(e)}") from e
    return np.asarray(_single_output(out))


def plain_logits(fn: Callable, params: Any, x: Any) -> np.ndarray:
    """The reference: `fn` in plain JAX on float32 inputs."""
    import jax

    return np.asarray(fn(jax.tree_util.tree_map(_as_f32, params), _as_f32(x)))


# --------------------------------------------------------------------------- profile


_OP_RE = re.compile(
    r"- (?P<op>pphlo\.\w+), executed (?P<count>\d+) times, duration (?P<time>[0-9.eE+-]+)s"
    r"(?:, send bytes (?P<sent>\d+) recv bytes (?P<recv>\d+))?"
)
_LINK_RE = re.compile(
    r"Link details: total send bytes (?P<sent>\d+), recv bytes (?P<recv>\d+)"
    r"(?:, send actions (?P<sa>\d+), recv actions (?P<ra>\d+))?"
)


@dataclass
class RunProfile:
    """What SPU's pphlo profile says about one `Runtime.run`, from this party's side."""

    ops: dict[str, dict] = field(default_factory=dict)
    bytes_sent: int | None = None
    bytes_recv: int | None = None
    messages_sent: int | None = None
    messages_recv: int | None = None


def parse_profile(text: str) -> RunProfile:
    """Parse the last profile block in `text` (SPU's log lines for one run)."""
    prof = RunProfile()
    for line in text.splitlines():
        if m := _OP_RE.search(line):
            entry: dict[str, Any] = {"time_s": float(m["time"]), "count": int(m["count"])}
            if m["sent"] is not None:
                entry["bytes_sent"], entry["bytes_recv"] = int(m["sent"]), int(m["recv"])
                entry["bytes"] = entry["bytes_sent"] + entry["bytes_recv"]
            prof.ops[m["op"]] = entry
        elif m := _LINK_RE.search(line):
            prof.bytes_sent, prof.bytes_recv = int(m["sent"]), int(m["recv"])
            if m["sa"] is not None:
                prof.messages_sent, prof.messages_recv = int(m["sa"]), int(m["ra"])
    return prof


def op_kind(op: str) -> str:
    """"relu" for comparisons and selects, "conv" for convolutions/matmuls, else "other".

    SPU 0.9.5 lowers ``jnp.maximum(y, 0)`` to ``pphlo.less`` (the secure comparison: almost
    all of a ReLU's cost) and a ``pphlo.multiply`` by the comparison bit; that multiply is
    counted in "other", since the profile aggregates all multiplies under one name.
    """
    if op in RELU_OPS:
        return "relu"
    if op in CONV_OPS:
        return "conv"
    return "other"


def summarize_ops(per_op: dict[str, dict]) -> dict[str, dict]:
    """Group per-op stats into "relu", "conv" and "other" (see `op_kind`).

    Each group has time_s, count, ops (names) and, where every op reported them, bytes.
    """
    groups = {k: {"time_s": 0.0, "count": 0, "bytes": 0, "ops": []}
              for k in ("relu", "conv", "other")}
    missing: set[str] = set()
    for op, st in sorted(per_op.items()):
        g = groups[op_kind(op)]
        g["time_s"] += float(st.get("time_s", 0.0))
        g["count"] += int(st.get("count", 0))
        g["ops"].append(op)
        if "bytes" in st:
            g["bytes"] += int(st["bytes"])
        else:
            missing.add(op_kind(op))
    for kind in missing:
        del groups[kind]["bytes"]
    return groups


class _SpuLog:
    """SPU's C++ logger pointed at a file, so the profile lines it prints can be read back.

    `spu.libspu.logging.setup_logging` is process-wide; `close` turns the console back on.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._setup(console=False)

    def _setup(self, console: bool) -> None:
        lib = _spu().libspu
        opts = lib.logging.LogOptions()
        opts.system_log_path = str(self.path)
        opts.enable_console_logger = console
        opts.log_level = lib.logging.LogLevel.INFO
        lib.logging.setup_logging(opts)

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def profile_since(self, mark: int, wait_s: float = 2.0) -> RunProfile:
        """Profile of the run that started at `mark`; waits briefly for the log to flush."""
        end = time.monotonic() + wait_s
        while True:
            text = ""
            if self.path.exists():
                with open(self.path, "rb") as f:
                    f.seek(mark)
                    text = f.read().decode("utf-8", "replace")
            if "Link details" in text or time.monotonic() > end:
                return parse_profile(text)
            time.sleep(0.05)

    def close(self) -> None:
        self._setup(console=True)


# --------------------------------------------------------------------------- results


@dataclass
class SecureResult:
    """The client's view of a secure inference, with what it cost.

    Bytes are per inference and seen from the client, whose traffic with the one peer is
    all traffic: ``bytes_sent + bytes_recv`` is both directions together. They include the
    client's input share and the output share (`io_bytes`); the server's one-time share of
    the weights is `weight_share_bytes`.
    """

    logits: np.ndarray
    protocol: str
    latency_s: float  # mean of the warm runs
    cold_latency_s: float  # first run: adds one-time OT/HE setup
    setup_s: float  # cold minus warm
    bytes_sent: int | None  # by the client, per warm inference
    bytes_recv: int | None
    setup_bytes: int | None  # extra bytes of the cold run over a warm one
    rounds: int | None  # SPU 0.9.5 counts messages, not rounds: None (see messages_*)
    per_op: dict[str, dict]  # pphlo op -> time_s, count, bytes(_sent/_recv), warm mean
    max_abs_err: float | None = None  # vs plain JAX, where both inputs were known
    samples: int = 1
    warm_latencies_s: list[float] = field(default_factory=list)
    messages_sent: int | None = None  # SPU's "send actions" of a warm run
    messages_recv: int | None = None
    io_bytes: int = 0  # input share sent + output share received, per inference
    weight_share_bytes: int = 0  # the server's share of params, once per session
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    weights: str = "shared"  # how the weights entered: "owned" or "shared" (`WEIGHTS`)

    @property
    def total_bytes(self) -> int | None:
        """Both directions, per inference."""
        if self.bytes_sent is None or self.bytes_recv is None:
            return None
        return self.bytes_sent + self.bytes_recv

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (logits as nested lists)."""
        d = dataclasses.asdict(self)
        d["logits"] = np.asarray(self.logits).tolist()
        d["total_bytes"] = self.total_bytes
        d["security"] = SECURITY_NOTE.get(self.protocol, "")
        return d


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs))


def _mean_int(xs: list[int | None]) -> int | None:
    return None if not xs or any(v is None for v in xs) else int(round(_mean(xs)))


def _mean_ops(profiles: list[RunProfile]) -> dict[str, dict]:
    """Per-op stats averaged over the warm runs."""
    out: dict[str, dict] = {}
    for op in profiles[0].ops:
        rows = [p.ops[op] for p in profiles if op in p.ops]
        out[op] = {k: (_mean([r[k] for r in rows]) if k == "time_s"
                       else int(round(_mean([r[k] for r in rows]))))
                   for k in rows[0] if all(k in r for r in rows)}
    return out


def _total(p: RunProfile) -> int | None:
    return None if p.bytes_sent is None or p.bytes_recv is None else p.bytes_sent + p.bytes_recv


def _client_result(
    protocol: str, logits: np.ndarray, times: list[float], profiles: list[RunProfile],
    io_sent: int, io_recv: int, weight_bytes: int,
) -> SecureResult:
    warm_t, warm_p = times[1:], profiles[1:]
    latency = _mean(warm_t)
    sent = _mean_int([p.bytes_sent for p in warm_p])
    recv = _mean_int([p.bytes_recv for p in warm_p])
    warm_total = _mean_int([_total(p) for p in warm_p])
    cold_total = _total(profiles[0])
    return SecureResult(
        logits=logits,
        protocol=protocol,
        latency_s=latency,
        cold_latency_s=times[0],
        setup_s=max(0.0, times[0] - latency),
        bytes_sent=None if sent is None else sent + io_sent,
        bytes_recv=None if recv is None else recv + io_recv,
        setup_bytes=None if cold_total is None or warm_total is None
        else max(0, cold_total - warm_total),
        rounds=None,
        per_op=_mean_ops(warm_p),
        samples=len(warm_t),
        warm_latencies_s=warm_t,
        messages_sent=_mean_int([p.messages_sent for p in warm_p]),
        messages_recv=_mean_int([p.messages_recv for p in warm_p]),
        io_bytes=io_sent + io_recv,
        weight_share_bytes=weight_bytes,
    )


# --------------------------------------------------------------------------- wire format


def _pack(parts: list[bytes]) -> bytes:
    """Length-prefixed parts: peers exchange only bytes and JSON, never pickles."""
    return struct.pack("<I", len(parts)) + b"".join(
        struct.pack("<Q", len(p)) + p for p in parts
    )


def _unpack(data: bytes) -> list[bytes]:
    (n,), pos, parts = struct.unpack_from("<I", data), 4, []
    for _ in range(n):
        (size,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        if pos + size > len(data):
            raise ValueError("truncated message")
        parts.append(data[pos:pos + size])
        pos += size
    return parts


def _pack_shares(shares: list[Any]) -> bytes:
    return _pack([_pack([bytes(s.meta), *map(bytes, s.share_chunks)]) for s in shares])


def _unpack_shares(data: bytes) -> list[Any]:
    lib = _spu().libspu
    out = []
    for blob in _unpack(data):
        meta, *chunks = _unpack(blob)
        share = lib.Share()
        share.meta, share.share_chunks = meta, chunks
        out.append(share)
    return out


# --------------------------------------------------------------------------- link


def _spu_error_text(e: BaseException) -> str:
    """The message of an SPU/yacl error without its C++ stack trace."""
    text = str(e).split("stacktrace:")[0].replace("what:", " ")
    return " ".join(text.split())[:500] or type(e).__name__


def _parse_parties(parties: list[str]) -> list[tuple[str, int]]:
    if not isinstance(parties, list | tuple) or len(parties) != 2:
        raise UsageError(
            f"parties must be two 'HOST:PORT' strings (server, client), got {parties!r}")
    out = []
    for p in parties:
        host, _, port = str(p).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"party address must be 'HOST:PORT', got {p!r}")
        out.append((host, int(port)))
    return out


def _connect(parties: list[str], rank: int, timeout_s: float) -> Any:
    """A brpc link to the peer; gives up after about `timeout_s` if it never answers.

    Every receive waits at most `timeout_s`, so a peer that dies mid-run is noticed too.
    Connecting retries once a second (each try costs about 1.2 s with one send retry).
    """
    lib = _spu().libspu
    desc = lib.link.Desc()
    desc.id = _LINK_ID
    desc.recv_timeout_ms = int(timeout_s * 1000)
    desc.http_timeout_ms = max(1000, int(timeout_s * 1000))
    desc.connect_retry_interval_ms = 1000
    desc.connect_retry_times = max(1, int(timeout_s / 1.2))
    desc.retry_opts.max_retry = 1
    desc.retry_opts.retry_interval_ms = 200
    desc.retry_opts.retry_interval_incr_ms = 0
    for name, addr in zip(ROLES, parties, strict=True):
        desc.add_party(name, addr)
    peer = 1 - rank
    _check_port_free(parties[rank], rank)
    try:
        return lib.link.create_brpc(desc, rank)
    except RuntimeError as e:
        text = _spu_error_text(e)
        if "server failed start" in text:
            _check_port_free(parties[rank], rank)
            raise RunFailure(f"the {_role_name(rank)} could not listen on {parties[rank]} "
                             f"(its own address): {text}") from e
        raise RunFailure(
            f"could not connect to the {_role_name(peer)} at {parties[peer]} within about "
            f"{timeout_s:g} s: {text}"
        ) from e


def _check_port_free(addr: str, rank: int) -> None:
    """RunFailure naming the port when another program already listens on this party's own
    port (brpc would only say that its server failed to start)."""
    port = int(addr.rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        try:
            s.bind(("", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise RunFailure(
                    f"the {_role_name(rank)}'s port {port} ({addr}) is already in use by "
                    "another program: stop it or give this party another port") from None


def _role_name(rank: int) -> str:
    return next(k for k, v in ROLES.items() if v == rank)


def _exchange(lctx: Any, msg: bytes) -> bytes:
    """Send `msg` to the peer and receive its message (sends are buffered by the peer)."""
    peer = 1 - lctx.rank
    lctx.send(peer, msg)
    return lctx.recv(peer)


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, because ru_maxrss survives exec, so a spawned
    child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- one party


@dataclass
class _Party:
    """State of one party's session; methods are the protocol steps in order."""

    role: str
    protocol: str
    config: Any
    samples: int
    timeout_s: float
    deadline: float
    weights: str = "shared"
    settings: dict[str, Any] = field(default_factory=dict)
    lctx: Any = None
    phase: str = "connecting"

    @property
    def rank(self) -> int:
        return ROLES[self.role]

    @property
    def peer_role(self) -> str:
        return _role_name(1 - self.rank)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RunFailure(f"{self.role}: gave up after {self.timeout_s:g} s ({self.phase})")

    def handshake(self, own_spec: Any, check: Callable[[dict], None] | None = None) -> dict:
        """Exchange shapes and settings; both must agree before anything secret moves.

        Each side checks the peer's hello (settings, then `check` on its shapes) and the
        two swap verdicts, so a mismatch found by either side ends both at once, each
        with the reason.
        """
        self.phase = "handshake"
        digest = hashlib.sha256(self.config.SerializeToString()).hexdigest()
        hello = {"v": _HANDSHAKE_VERSION, "role": self.role, "protocol": self.protocol,
                 "weights": self.weights, "settings": self.settings, "config": digest,
                 "samples": self.samples, "spec": own_spec}
        try:
            peer = json.loads(_exchange(self.lctx, json.dumps(hello).encode()))
        except (ValueError, UnicodeDecodeError) as e:
            raise RunFailure(f"{self.role}: unreadable handshake from the peer") from e
        if not isinstance(peer, dict) or peer.get("v") != _HANDSHAKE_VERSION:
            raise RunFailure(f"{self.role}: the peer speaks another handshake version")
        problem = _mismatch(hello, peer, self.peer_role)
        if problem is None and check is not None:
            try:
                check(peer)
            except (RunFailure, KeyError, TypeError, ValueError) as e:
                problem = f"bad shapes from the {self.peer_role}: {e}"
        verdict = _exchange(self.lctx, json.dumps({"refused": problem}).encode())
        if problem is not None:
            raise RunFailure(f"{self.role}: refused the {self.peer_role}: {problem}")
        try:
            theirs = json.loads(verdict).get("refused")
        except (ValueError, UnicodeDecodeError, AttributeError):
            theirs = "unreadable verdict"
        if theirs is not None:
            raise RunFailure(f"{self.role}: the {self.peer_role} refused this party: {theirs}")
        return peer

    def agree_on(self, program: Program) -> None:
        self.phase = "comparing compiled programs"
        fp = program.fingerprint()
        if _exchange(self.lctx, fp.encode()).decode(errors="replace") != fp:
            raise RunFailure(f"{self.role}: the two parties compiled different programs "
                             "(different fn, shapes or SPU version)")

    def share_inputs(self, rt: Any, program: Program, own: list[np.ndarray]) -> tuple[int, int]:
        """Secret-share own inputs, keep own share, swap the peer's; returns (sent, recvd) bytes.

        With owned weights the server's weights are a secret it owns: its share is the
        value and the client's is all zeros, which the client makes itself, so only the
        client's input share crosses the link.
        """
        self.phase = "sharing inputs"
        spu = _spu()
        io = spu.Io(2, self.config)
        secret = spu.libspu.Visibility.VIS_SECRET
        params = _param_names(len(program.param_shapes))
        owned = self.weights == "owned"
        names = params if self.rank == 0 else [_X_NAME]
        peer_names = [_X_NAME] if self.rank == 0 else ([] if owned else params)
        to_peer = []
        for name, a in zip(names, own, strict=True):
            if owned and self.rank == 0:
                rt.set_var(name, io.make_shares(a, secret, 0)[0])
                continue
            shares = io.make_shares(a, secret)
            rt.set_var(name, shares[self.rank])
            to_peer.append(shares[1 - self.rank])
        if owned and self.rank == 1:
            for name, shape in zip(params, program.param_shapes, strict=True):
                rt.set_var(name, io.make_shares(np.zeros(shape, np.float32), secret, 0)[1])
        msg = _pack_shares(to_peer)
        del to_peer
        reply = _exchange(self.lctx, msg)
        try:
            got = _unpack_shares(reply)
        except (ValueError, struct.error) as e:
            raise RunFailure(f"{self.role}: malformed input shares from the peer") from e
        if len(got) != len(peer_names):
            raise RunFailure(f"{self.role}: expected {len(peer_names)} shares, got {len(got)}")
        for name, share in zip(peer_names, got, strict=True):
            rt.set_var(name, share)
        return len(msg), len(reply)

    def run(self, rt: Any, exe: Any, log: _SpuLog) -> tuple[list[float], list[RunProfile]]:
        """One cold run, then `samples` warm runs; each starts together after a barrier."""
        times, profiles = [], []
        for i in range(1 + self.samples):
            self.check_time()
            self.phase = "cold run" if i == 0 else f"warm run {i}"
            self.lctx.barrier()
            mark = log.mark()
            t0 = time.perf_counter()
            rt.run(exe)
            times.append(time.perf_counter() - t0)
            profiles.append(log.profile_since(mark))
        return times, profiles

    def reveal(self, rt: Any) -> tuple[np.ndarray | None, int]:
        """The server sends its output share; only the client reconstructs the logits."""
        self.phase = "revealing the output to the client"
        own = rt.get_var(_OUT_NAME)
        if self.rank == 0:
            msg = _pack_shares([own])
            self.lctx.send(1, msg)
            return None, len(msg)
        reply = self.lctx.recv(0)
        try:
            (peer,) = _unpack_shares(reply)
        except (ValueError, struct.error) as e:
            raise RunFailure("client: malformed output share from the server") from e
        logits = _spu().Io(2, self.config).reconstruct([peer, own])
        return np.asarray(logits), len(reply)


_HELLO_KEYS = (("protocol", "protocol"), ("weights", "weights mode (--weights)"),
               ("samples", "number of warm runs"), ("settings", "settings"),
               ("config", "SPU runtime config"))


def _mismatch(mine: dict, peer: dict, peer_role: str) -> str | None:
    """What differs between two hellos, in words, or None when they agree."""
    if peer.get("role") != peer_role:
        return f"the peer says it is {peer.get('role')!r}, expected the {peer_role}"
    for key, what in _HELLO_KEYS:
        ours, theirs = mine.get(key), peer.get(key)
        if key == "settings" and isinstance(theirs, dict) and isinstance(ours, dict):
            for k in sorted(set(ours) | set(theirs)):
                if ours.get(k) != theirs.get(k):
                    return (f"the {peer_role} uses {k} {theirs.get(k)!r}, this party "
                            f"{ours.get(k)!r}")
        elif theirs != ours:
            return f"the {peer_role} uses another {what} ({theirs!r} vs {ours!r} here)"
    return None


def _own_inputs(role: str, program: Program, params: Any, x: Any) -> list[np.ndarray]:
    """This party's secret inputs, flattened as the program expects."""
    import jax

    if role == "server":
        leaves = [_as_f32(a) for a in jax.tree_util.tree_leaves(params)]
        got = [a.shape for a in leaves]
        if got != program.param_shapes:
            raise UsageError(
                f"params have shapes {got}, the program expects {program.param_shapes}")
        return leaves
    x32 = _as_f32(x)
    if x32.shape != program.x_shape:
        raise UsageError(f"x has shape {x32.shape}, the program expects {program.x_shape}")
    return [x32]


def _program_for(party: _Party, fn: Callable | Program, params: Any, x: Any) -> Program:
    """Handshake, then the program both compile from own data and the peer's shapes."""
    if isinstance(fn, Program):
        own_spec = fn.param_spec if party.rank == 0 else list(fn.x_shape)
    else:
        own_spec = _encode_spec(params) if party.rank == 0 else [int(d) for d in x.shape]

    def check(peer: dict) -> None:
        if party.rank == 0:
            peer_x = peer["spec"]
            if not (isinstance(peer_x, list) and all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in peer_x)):
                raise ValueError("malformed input shape")
            _check_hint(x, tuple(peer_x), "x")
        else:
            _decode_spec(peer["spec"])
            _check_hint(params, tuple(_flat_shapes(peer["spec"])), "params")

    peer = party.handshake(own_spec, check)
    peer_params = None if party.rank == 0 else _decode_spec(peer["spec"])
    if isinstance(fn, Program):
        return fn
    party.phase = "compiling"
    if party.rank == 0:
        import jax

        return compile_program(fn, params, jax.ShapeDtypeStruct(tuple(peer["spec"]), np.float32))
    return compile_program(fn, peer_params, x)


def _check_hint(hint: Any, peer: tuple, what: str) -> None:
    """If this party was told the peer's shapes (arrays or shape structs), they must match."""
    if hint is None:
        return
    import jax

    mine = (tuple(hint.shape) if what == "x"
            else tuple(tuple(a.shape) for a in jax.tree_util.tree_leaves(hint)))
    if mine != peer:
        raise RunFailure(f"the peer's {what} have shapes {peer}, this party expects {mine}")


def _check_run_args(protocol: str, samples: int, timeout_s: float, cfg: dict) -> None:
    _check_protocol(protocol)
    runtime_config(protocol, **cfg)  # validates the options, `weights` among them
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UsageError(f"samples must be a positive integer, got {samples!r}")
    if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
        raise UsageError(f"timeout_s must be a positive number, got {timeout_s!r}")


def _json_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """`settings` as the handshake sends them: a dict of JSON values by name."""
    if settings is None:
        return {}
    try:
        return json.loads(json.dumps(dict(settings), sort_keys=True))
    except (TypeError, ValueError) as e:
        raise UsageError(f"settings must be JSON values by name: {e}") from None


def _local_program(role: str, fn: Callable | Program, params: Any, x: Any) -> Program:
    """Compile without the peer, from own input and the peer's shapes given here."""
    if isinstance(fn, Program):
        return fn
    if params is None or x is None:
        peer_input = "x" if role == "server" else "params"
        raise UsageError(f"isolate=True needs a Program, or the {role} must be given the shapes "
                         f"of {peer_input} (arrays or jax.ShapeDtypeStruct) to compile locally")
    return compile_program(fn, params, x)


def run_party(
    role: str,
    fn: Callable | Program,
    params_or_none: Any,
    x_or_none: Any,
    parties: list[str],
    protocol: str = "cheetah",
    samples: int = 1,
    timeout_s: float = 300,
    *,
    isolate: bool = False,
    log_path: str | os.PathLike | None = None,
    weights: str | None = None,
    settings: dict[str, Any] | None = None,
    **cfg: Any,
) -> SecureResult | None:
    """One party of a two-host deployment over SPU's brpc link.

    role "server" (rank 0) holds `params_or_none` and may pass None for x (its shape comes
    from the client); role "client" (rank 1) holds `x_or_none`, may pass None for params,
    and returns the `SecureResult`; the server returns None. What a party passes for the
    other's input serves only as shapes. `parties` = ["HOST:PORT" of the server,
    "HOST:PORT" of the client]; both parties must use the same `fn` (or `Program`),
    protocol, `cfg` and `samples`. `protocol` "semi2k" is not secure, for debugging: party
    0 is the trusted dealer.

    `timeout_s` bounds connecting, every wait for the peer, and (checked between steps)
    the whole session; an absent peer raises `RunFailure`. But SPU 0.9.5 crashes
    (SIGSEGV) a party whose peer vanishes in the middle of a run: `isolate=True` runs the
    session in a spawned child, kills it after `timeout_s`, and turns its death into a
    `RunFailure`. A child cannot be sent a closure, so `isolate` needs `fn` to be a
    `Program` or the peer's shapes given here. `log_path` keeps SPU's log (the profile is
    parsed from it) instead of a temporary file. `weights` is "owned" or "shared"
    (`WEIGHTS`; default `default_weights(protocol)`), the same on both hosts. `settings`
    (JSON values by name) are what else both hosts must agree on, such as how many
    images a measurement checks: the handshake refuses a peer with other settings.
    """
    if role not in ROLES:
        raise UsageError(f"role must be 'server' or 'client', got {role!r}")
    weights = weights or default_weights(_checked(protocol))
    cfg = {**cfg, "weights": weights}
    _check_run_args(protocol, samples, timeout_s, cfg)
    addrs = [f"{h}:{p}" for h, p in _parse_parties(parties)]
    if role == "client" and x_or_none is not None:
        x_or_none = _as_f32(x_or_none)
    own = params_or_none if role == "server" else x_or_none
    if own is None:
        raise UsageError(f"the {role} must be given its input "
                         f"({'params' if role == 'server' else 'x'})")
    settings = _json_settings(settings)
    if isolate:
        program = _local_program(role, fn, params_or_none, x_or_none)
        job = (program, own, addrs, protocol, samples, float(timeout_s),
               {**cfg, "settings": settings})
        res, rss = _spawn({role: job}, float(timeout_s), log_path)[role]
        return None if res is None else dataclasses.replace(res, peak_rss_mb={role: rss})
    config = runtime_config(protocol, **{**cfg, "profile": True})
    party = _Party(role, protocol, config, samples, float(timeout_s),
                   time.monotonic() + float(timeout_s), weights, settings)
    tmp = None if log_path else _temp_dir()
    log = _SpuLog(Path(log_path) if log_path else tmp / f"{role}.log")
    try:
        return _session(party, fn, params_or_none, x_or_none, addrs, log)
    finally:
        log.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _session(party: _Party, fn: Callable | Program, params: Any, x: Any,
             addrs: list[str], log: _SpuLog) -> SecureResult | None:
    party.lctx = _connect(addrs, party.rank, party.timeout_s)
    try:
        program = _program_for(party, fn, params, x)
        party.agree_on(program)
        own = _own_inputs(party.role, program, params, x)
        rt = _spu().Runtime(party.lctx, party.config)
        sent, recvd = party.share_inputs(rt, program, own)
        del own
        times, profiles = party.run(rt, program.load(), log)
        logits, out_bytes = party.reveal(rt)
    except DeepReshapeError:
        raise
    except Exception as e:
        raise RunFailure(
            f"{party.role}: failed while {party.phase} with the {party.peer_role} at "
            f"{addrs[1 - party.rank]} (dead peer or timeout after {party.timeout_s:g} s?): "
            f"{_spu_error_text(e)}"
        ) from e
    _stop_link(party.lctx)
    if party.rank == 0:
        return None
    return dataclasses.replace(
        _client_result(party.protocol, logits, times, profiles,
                       io_sent=sent, io_recv=out_bytes, weight_bytes=recvd),
        weights=party.weights)


def _stop_link(lctx: Any) -> None:
    """Best effort: the result is already safe, a failing shutdown must not lose it."""
    with contextlib.suppress(Exception):
        lctx.stop_link()


# --------------------------------------------------------------------------- two processes


def _free_ports(n: int = 2) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _party_entry(role: str, job_path: str, log_path: str, results: Any) -> None:
    """Body of a spawned party process: run it and report (result or error) on the queue.

    The job (program, own input, addresses, settings) comes in a file the parent wrote
    into its private temporary folder, not through the start-up pipe: the parent writes
    that pipe before the child reads it, and a child that dies first would leave the
    parent blocked on a full pipe (tens of kB fill it; the weights are megabytes).
    """
    _die_with_parent()
    try:
        with open(job_path, "rb") as f:
            program, own, parties, protocol, samples, timeout_s, cfg = pickle.load(f)
        params, x = (own, None) if role == "server" else (None, own)
        del own
        res = run_party(role, program, params, x, parties, protocol, samples, timeout_s,
                        log_path=log_path, **cfg)
        results.put(("ok", role, res, _peak_rss_mb()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        kind = "UsageError" if isinstance(e, UsageError) else "RunFailure"
        results.put(("error", role, kind, f"{type(e).__name__}: {e}", _peak_rss_mb()))


def _die_with_parent() -> None:
    """Linux: have the kernel kill this party if its parent dies (even by SIGKILL), so no
    party outlives the run that started it. Best effort elsewhere."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl
            os._exit(1)


_TEMP_PREFIX = "deepreshape-spu-"


def _temp_dir() -> Path:
    """A private temporary folder named after this process; folders left by processes that
    no longer exist (killed with SIGKILL, which no cleanup survives) are removed first."""
    root = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for d in root.glob(f"{_TEMP_PREFIX}*-*"):
            pid = d.name[len(_TEMP_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)) and d.stat().st_uid == os.getuid():
                shutil.rmtree(d, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


@contextlib.contextmanager
def _terminations_raise() -> Any:
    """SIGTERM and SIGHUP raise `RunFailure` here (main thread only), so a run killed that
    way still stops its parties and removes its temporary folder on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise RunFailure(f"stopped by {signal.Signals(signum).name}")

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _spawn(jobs: dict[str, tuple], timeout_s: float,
           log_path: str | os.PathLike | None = None) -> dict[str, tuple]:
    """Run each role's `_party_entry` in its own spawned process; wait at most `timeout_s`.

    Returns role -> (SecureResult or None, peak RSS in MiB). Any failure, death or the
    deadline kills all of them and raises. Every wait here is bounded: a process start
    writes only a few hundred bytes to the child (its job is a file), and the parties'
    reports are awaited against the deadline. The parties' jobs and SPU logs go to a
    temporary folder owned here (the log to `log_path` if given, one party), removed on
    every way out, SIGTERM included; the parties die with this process.
    """
    deadline = time.monotonic() + timeout_s
    ctx = multiprocessing.get_context("spawn")
    got = None
    with _terminations_raise():
        tmp = _temp_dir()
        results = ctx.Queue()
        procs: dict[str, Any] = {}
        try:
            for role, job in jobs.items():
                job_path = tmp / f"{role}.job"
                with open(job_path, "wb") as f:
                    pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
                procs[role] = ctx.Process(
                    target=_party_entry, name=f"deepreshape-pi-{role}", daemon=True,
                    args=(role, str(job_path), str(log_path or tmp / f"{role}.log"), results))
            for p in procs.values():
                p.start()
            got = _collect(procs, results, deadline, timeout_s)
        finally:
            _stop(procs, grace_s=min(10.0, timeout_s) if got is not None else 0.0)
            results.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return got


def _death(role: str, code: int | None) -> RunFailure:
    try:
        how = (f"killed by {signal.Signals(-code).name}" if code and code < 0
               else f"exit code {code}")
    except ValueError:
        how = f"exit code {code}"
    return RunFailure(f"the {role} process died ({how}) without a result; SPU 0.9.5 crashes a "
                      "party whose peer disconnects mid-run, so the peer may be the cause")


def _stop(procs: dict[str, Any], grace_s: float) -> None:
    """Reap the party processes: give them `grace_s` to exit, then kill what still runs."""
    procs = {role: p for role, p in procs.items() if p.pid is not None}  # started ones only
    end = time.monotonic() + grace_s
    for p in procs.values():
        p.join(max(0.0, end - time.monotonic()))
    for p in procs.values():
        if p.is_alive():
            p.terminate()
    for p in procs.values():
        p.join(2)
        if p.is_alive():
            p.kill()
            p.join(2)


def _collect(procs: dict[str, Any], results: Any, deadline: float, timeout_s: float) -> dict:
    """Wait for every party's report; the first error, a death or the deadline ends it."""
    got: dict[str, tuple] = {}
    while len(got) < len(procs):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunFailure(f"the secure run did not finish within {timeout_s:g} s")
        try:
            msg = results.get(timeout=min(0.5, left))
        except queue_mod.Empty:
            dead = [r for r, p in procs.items() if r not in got and not p.is_alive()]
            if dead:
                try:  # its last report may still be in the pipe
                    msg = results.get(timeout=1.0)
                except queue_mod.Empty:
                    raise _death(dead[0], procs[dead[0]].exitcode) from None
            else:
                continue
        status, role, *rest = msg
        if status == "error":
            kind, text, _ = rest
            raise (UsageError if kind == "UsageError" else RunFailure)(f"{role}: {text}")
        got[role] = tuple(rest)
    return got


def run_two_party(
    fn: Callable,
    params: Any,
    x: Any,
    protocol: str = "cheetah",
    samples: int = 1,
    timeout_s: float = 300,
    base_port: int | None = None,
    link: LinkProfile | None = None,
    weights: str | None = None,
    **cfg: Any,
) -> SecureResult:
    """Secure inference with server and client as two real processes on 127.0.0.1.

    Compiles once here, spawns both parties (each calls `run_party` with the `Program`),
    and returns the client's `SecureResult` with `max_abs_err` against plain JAX and each
    party's peak RSS. `timeout_s` bounds the whole run (process start included): past it,
    or when a party fails or dies, both are killed and `RunFailure` is raised. Ports are
    `base_port` and `base_port + 1`, or free ones. With `link`, each party reaches the
    other through a `deepreshape.pi.link.Relay` that emulates that bandwidth and
    round-trip time. `protocol` "semi2k" is not secure, for debugging: party 0 is the
    trusted dealer. `weights`: "owned" or "shared" (`WEIGHTS`, default per protocol).
    """
    import jax

    cfg = {**cfg, "weights": weights or default_weights(_checked(protocol))}
    _check_run_args(protocol, samples, timeout_s, cfg)
    if base_port is not None and not (isinstance(base_port, int) and 1024 <= base_port < 65535):
        raise UsageError(f"base_port must be in [1024, 65534], got {base_port!r}")
    deadline = time.monotonic() + float(timeout_s)
    params32 = jax.tree_util.tree_map(_as_f32, params)
    x32 = _as_f32(x)
    program = compile_program(fn, params32, x32)
    ports = [base_port, base_port + 1] if base_port else _free_ports(2)
    parties = [f"127.0.0.1:{p}" for p in ports]
    common = (protocol, samples, float(timeout_s), cfg)
    with contextlib.ExitStack() as stack:
        views = {"server": parties, "client": parties}
        if link is not None:  # each party listens on its own port, reaches the peer's relay
            fronts = stack.enter_context(Relay(parties, link))
            views = {"server": [parties[0], fronts[1]], "client": [fronts[0], parties[1]]}
        got = _spawn({"server": (program, params32, views["server"], *common),
                      "client": (program, x32, views["client"], *common)},
                     max(1.0, deadline - time.monotonic()))
    (res, client_rss), (_, server_rss) = got["client"], got["server"]
    plain = plain_logits(fn, params32, x32)
    err = float(np.max(np.abs(res.logits - plain))) if plain.shape == res.logits.shape else None
    return dataclasses.replace(res, max_abs_err=err,
                               peak_rss_mb={"server": server_rss, "client": client_rss})
