"""Secure two-party inference of a JAX function under SecretFlow SPU (0.9.5).

The engine runs any ``fn(params, x) -> logits`` written with jax.numpy/lax: the SERVER
(rank 0) holds ``params`` (a pytree of float32 arrays), the CLIENT (rank 1) holds the input
``x``, and only the client learns the logits. Each party needs only the other's SHAPES, so
both compile the same SPU executable; the handshake checks that they did.

Entry points (this module is the public face; each part has its own module):

- `run_simulated`: SPU's in-process simulator (threads, memory links), for fast tests.
- `run_party`: one party of a real deployment (two hosts, SPU's brpc link).
- `run_two_party`: both parties as two spawned processes on 127.0.0.1, with the measured
  latency (cold and warm), bytes per inference and a per-op profile.

Where things live:

- `protocols`: `PROTOCOLS` (each with its security note and `Engine`), weights modes
  (`WEIGHTS`), `runtime_config`;
- `program`: compiling `fn` into a `Program` both parties can run; simulator, plaintext;
- `channel`: the brpc link between the parties (addresses, ports, messages);
- `shares`: secret shares on the wire;
- `party`: one party's session, from handshake to revealed output;
- `processes`: parties as spawned processes, bounded waits, cleanup; `run_two_party`;
- `profile`: SPU's per-op profile, parsed from its log; `results`: `SecureResult`.

Protocols: ``cheetah`` is the secure one (HE for linear layers, OT for comparisons);
``semi2k`` is not secure, for debugging: party 0 is the trusted dealer. Weights: with
``owned`` (the default for cheetah) the server owns its weights inside SPU, so each
product with them is one HE product instead of two (docs/pi-costs.md).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from typing import Any

from deepreshape.errors import UsageError
from deepreshape.pi.channel import parse_parties
from deepreshape.pi.measurement import SecureResult
from deepreshape.pi.party import check_queries, json_settings, run_session, split_queries
from deepreshape.pi.processes import run_two_party, spawn, temp_dir
from deepreshape.pi.profile import CONV_OPS, RELU_OPS, RunProfile, op_kind, parse_profile, summarize_ops
from deepreshape.pi.program import Program, as_f32, compile_program, plain_logits, run_simulated
from deepreshape.pi.protocols import (
    FXP_BITS_RANGE,
    PROTOCOLS,
    ROLES,
    WEIGHTS,
    Engine,
    Protocol,
    check_run_args,
    checked_protocol,
    default_weights,
    runtime_config,
    security_note,
)

__all__ = [
    "CONV_OPS", "FXP_BITS_RANGE", "PROTOCOLS", "RELU_OPS", "ROLES", "WEIGHTS", "Engine",
    "Program", "Protocol", "RunProfile", "SecureResult", "compile_program", "default_weights",
    "op_kind", "parse_profile", "plain_logits", "run_party", "run_simulated", "run_two_party",
    "runtime_config", "security_note", "summarize_ops",
]


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
    queries: int = 1,
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

    `queries` > 1 runs that many queries in the one session: the client's `x` holds them
    as equal batches along its first axis (what the server passes for x is the shape of
    one), run i computes query i % queries (so 1 + `samples` must be at least `queries`),
    and the client's logits are the queries' outputs in order; costs are of one query.
    """
    if role not in ROLES:
        raise UsageError(f"role must be 'server' or 'client', got {role!r}")
    weights = weights or default_weights(checked_protocol(protocol))
    cfg = {**cfg, "weights": weights}
    check_run_args(protocol, samples, timeout_s, cfg)
    addrs = [f"{h}:{p}" for h, p in parse_parties(parties)]
    if role == "client" and x_or_none is not None:
        x_or_none = as_f32(x_or_none)
    check_queries(queries, samples, x_or_none if role == "client" else None)
    own = params_or_none if role == "server" else x_or_none
    if own is None:
        raise UsageError(f"the {role} must be given its input "
                         f"({'params' if role == 'server' else 'x'})")
    settings = json_settings(settings)
    if isolate:
        one = x_or_none if role == "server" else split_queries(x_or_none, queries)[0]
        program = _local_program(role, fn, params_or_none, one)
        job = (program, own, addrs, protocol, samples, float(timeout_s),
               {**cfg, "settings": settings, "queries": queries})
        res, rss = spawn({role: job}, float(timeout_s), log_path)[role]
        return None if res is None else dataclasses.replace(res, peak_rss_mb={role: rss})
    tmp = None if log_path else temp_dir()
    try:
        return run_session(role, fn, params_or_none, x_or_none, addrs, protocol, samples,
                           float(timeout_s), log_path=log_path or tmp / f"{role}.log",
                           settings=settings, queries=queries, **cfg)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
