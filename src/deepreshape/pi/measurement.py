"""What a secure inference returns to the client: logits, latency, bytes and per-op costs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepreshape.pi.profile import RunProfile
from deepreshape.pi.protocols import security_note


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
        d["security"] = security_note(self.protocol)
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


def client_result(
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
