"""One party's session: handshake, program, input shares, timed runs, the revealed output.

The server (rank 0) holds the weights, the client (rank 1) the input, and only the
client learns the logits. Before anything secret moves, the two exchange hellos
(protocol, weights mode, settings, shapes) and verdicts, so a mismatch found by either
side ends both at once; then they compare compiled programs. Steps are `_Party`'s
methods, in order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepreshape.errors import DeepReshapeError, RunFailure, UsageError
from deepreshape.pi.channel import connect, exchange, stop_link
from deepreshape.pi.measurement import SecureResult, client_result
from deepreshape.pi.profile import RunProfile, SpuLog
from deepreshape.pi.program import (
    OUT_NAME,
    X_NAME,
    Program,
    as_f32,
    compile_program,
    decode_spec,
    encode_spec,
    flat_shapes,
    param_names,
)
from deepreshape.pi.protocols import ROLES, load_spu, role_name, runtime_config, spu_error_text
from deepreshape.pi.shares import pack_shares, unpack_shares

_HANDSHAKE_VERSION = 1


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
    queries: int = 1
    lctx: Any = None
    phase: str = "connecting"

    @property
    def rank(self) -> int:
        return ROLES[self.role]

    @property
    def peer_role(self) -> str:
        return role_name(1 - self.rank)

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
                 "samples": self.samples, "queries": self.queries, "spec": own_spec}
        try:
            peer = json.loads(exchange(self.lctx, json.dumps(hello).encode()))
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
        verdict = exchange(self.lctx, json.dumps({"refused": problem}).encode())
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
        if exchange(self.lctx, fp.encode()).decode(errors="replace") != fp:
            raise RunFailure(f"{self.role}: the two parties compiled different programs "
                             "(different fn, shapes or SPU version)")

    def share_inputs(self, rt: Any, program: Program, own: list[np.ndarray]) -> tuple[int, int]:
        """Secret-share own inputs, keep own share, swap the peer's; returns (sent, recvd) bytes.

        With owned weights the server's weights are a secret it owns: its share is the
        value and the client's is all zeros, which the client makes itself, so only the
        client's input share crosses the link.
        """
        self.phase = "sharing inputs"
        spu = load_spu()
        io = spu.Io(2, self.config)
        secret = spu.libspu.Visibility.VIS_SECRET
        params = param_names(len(program.param_shapes))
        owned = self.weights == "owned"
        names = params if self.rank == 0 else [X_NAME]
        peer_names = [X_NAME] if self.rank == 0 else ([] if owned else params)
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
        msg = pack_shares(to_peer)
        del to_peer
        reply = exchange(self.lctx, msg)
        try:
            got = unpack_shares(reply)
        except (ValueError, struct.error) as e:
            raise RunFailure(f"{self.role}: malformed input shares from the peer") from e
        if len(got) != len(peer_names):
            raise RunFailure(f"{self.role}: expected {len(peer_names)} shares, got {len(got)}")
        for name, share in zip(peer_names, got, strict=True):
            rt.set_var(name, share)
        return len(msg), len(reply)

    def run(self, rt: Any, exe: Any, log: SpuLog, inputs: list[np.ndarray] | None
            ) -> tuple[list[float], list[RunProfile], list[np.ndarray], int]:
        """One cold run, then `samples` warm runs; each starts together after a barrier.

        Run i computes query i % `queries`: before each run after the first, the client
        shares that query's input (`inputs`, the client's; None for the server), and after
        each query's first run its output is revealed to the client. Returns the run
        times, their profiles, the client's outputs per query and the bytes of one
        revealed output share."""
        times, profiles, outputs, out_bytes = [], [], [], 0
        for i in range(1 + self.samples):
            self.check_time()
            if i and self.queries > 1:
                self.share_query(rt, None if inputs is None else inputs[i % self.queries])
            self.phase = "cold run" if i == 0 else f"warm run {i}"
            self.lctx.barrier()
            mark = log.mark()
            t0 = time.perf_counter()
            rt.run(exe)
            times.append(time.perf_counter() - t0)
            profiles.append(log.profile_since(mark))
            if i < self.queries:
                out, out_bytes = self.reveal(rt)
                outputs.append(out)
        return times, profiles, outputs, out_bytes

    def share_query(self, rt: Any, x: np.ndarray | None) -> None:
        """Before a later query's run: the client secret-shares its input (as
        `share_inputs` did the first), the server takes its share; nothing else moves."""
        self.phase = "sharing the next query"
        spu = load_spu()
        io = spu.Io(2, self.config)
        mine: list[np.ndarray] = []
        if self.rank == 1:
            shares = io.make_shares(x, spu.libspu.Visibility.VIS_SECRET)
            rt.set_var(X_NAME, shares[1])
            mine = [shares[0]]
        reply = exchange(self.lctx, pack_shares(mine))
        if self.rank == 1:
            return
        try:
            got = unpack_shares(reply)
        except (ValueError, struct.error) as e:
            raise RunFailure("server: malformed query share from the client") from e
        if len(got) != 1:
            raise RunFailure(f"server: expected 1 query share, got {len(got)}")
        rt.set_var(X_NAME, got[0])

    def reveal(self, rt: Any) -> tuple[np.ndarray | None, int]:
        """The server sends its output share; only the client reconstructs the logits."""
        self.phase = "revealing the output to the client"
        own = rt.get_var(OUT_NAME)
        if self.rank == 0:
            msg = pack_shares([own])
            self.lctx.send(1, msg)
            return None, len(msg)
        reply = self.lctx.recv(0)
        try:
            (peer,) = unpack_shares(reply)
        except (ValueError, struct.error) as e:
            raise RunFailure("client: malformed output share from the server") from e
        logits = load_spu().Io(2, self.config).reconstruct([peer, own])
        return np.asarray(logits), len(reply)


_HELLO_KEYS = (("protocol", "protocol"), ("weights", "weights mode (--weights)"),
               ("samples", "number of warm runs"), ("settings", "settings"),
               ("queries", "number of queries"),
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


def check_queries(queries: int, samples: int, x: Any = None) -> None:
    """`queries` must be a positive integer no larger than the session's runs (one cold
    and `samples` warm), and split the client's `x` (if given) into equal batches."""
    if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
        raise UsageError(f"queries must be a positive integer, got {queries!r}")
    if queries > 1 + samples:
        raise UsageError(f"{queries} queries need at least {queries} runs; the session makes "
                         f"{1 + samples} (1 cold + {samples} warm)")
    if x is not None and (len(x.shape) == 0 or x.shape[0] % queries):
        raise UsageError(f"x of shape {tuple(x.shape)} does not split into {queries} "
                         "equal queries along its first axis")


def split_queries(x: Any, queries: int) -> list[np.ndarray]:
    """The client's `x` as `queries` equal batches along its first axis, float32."""
    return np.split(as_f32(x), queries)


def _own_inputs(role: str, program: Program, params: Any, x: Any) -> list[np.ndarray]:
    """This party's secret inputs, flattened as the program expects."""
    import jax

    if role == "server":
        leaves = [as_f32(a) for a in jax.tree_util.tree_leaves(params)]
        got = [a.shape for a in leaves]
        if got != program.param_shapes:
            raise UsageError(
                f"params have shapes {got}, the program expects {program.param_shapes}")
        return leaves
    x32 = as_f32(x)
    if x32.shape != program.x_shape:
        raise UsageError(f"x has shape {x32.shape}, the program expects {program.x_shape}")
    return [x32]


def _program_for(party: _Party, fn: Callable | Program, params: Any, x: Any) -> Program:
    """Handshake, then the program both compile from own data and the peer's shapes."""
    if isinstance(fn, Program):
        own_spec = fn.param_spec if party.rank == 0 else list(fn.x_shape)
    else:
        own_spec = encode_spec(params) if party.rank == 0 else [int(d) for d in x.shape]

    def check(peer: dict) -> None:
        if party.rank == 0:
            peer_x = peer["spec"]
            if not (isinstance(peer_x, list) and all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in peer_x)):
                raise ValueError("malformed input shape")
            _check_hint(x, tuple(peer_x), "x")
        else:
            decode_spec(peer["spec"])
            _check_hint(params, tuple(flat_shapes(peer["spec"])), "params")

    peer = party.handshake(own_spec, check)
    peer_params = None if party.rank == 0 else decode_spec(peer["spec"])
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


def json_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """`settings` as the handshake sends them: a dict of JSON values by name."""
    if settings is None:
        return {}
    try:
        return json.loads(json.dumps(dict(settings), sort_keys=True))
    except (TypeError, ValueError) as e:
        raise UsageError(f"settings must be JSON values by name: {e}") from None


def _steps(party: _Party, fn: Callable | Program, params: Any, x: Any,
           addrs: list[str], log: SpuLog) -> SecureResult | None:
    inputs = split_queries(x, party.queries) if party.rank == 1 else None
    party.lctx = connect(addrs, party.rank, party.timeout_s)
    try:
        program = _program_for(party, fn, params, x if inputs is None else inputs[0])
        party.agree_on(program)
        own = _own_inputs(party.role, program, params, x if inputs is None else inputs[0])
        rt = load_spu().Runtime(party.lctx, party.config)
        sent, recvd = party.share_inputs(rt, program, own)
        del own
        times, profiles, outputs, out_bytes = party.run(rt, program.load(), log, inputs)
    except DeepReshapeError:
        raise
    except Exception as e:
        raise RunFailure(
            f"{party.role}: failed while {party.phase} with the {party.peer_role} at "
            f"{addrs[1 - party.rank]} (dead peer or timeout after {party.timeout_s:g} s?): "
            f"{spu_error_text(e)}"
        ) from e
    stop_link(party.lctx)
    if party.rank == 0:
        return None
    return dataclasses.replace(
        client_result(party.protocol, np.concatenate(outputs), times, profiles,
                       io_sent=sent, io_recv=out_bytes, weight_bytes=recvd),
        weights=party.weights)


def run_session(role: str, fn: Callable | Program, params: Any, x: Any, addrs: list[str],
                protocol: str, samples: int, timeout_s: float, *, log_path: str | os.PathLike,
                weights: str, settings: dict[str, Any] | None = None, queries: int = 1,
                **cfg: Any) -> SecureResult | None:
    """One party's whole session in this process, its SPU log at `log_path`: connect,
    handshake, compile (or check) the program, share inputs, run, reveal to the client.

    Arguments are as `engine.run_party` takes them, already validated; `weights` and
    `settings` resolved. The client's `x` holds `queries` queries (`split_queries`), run
    one after another. Each wait on the peer is bounded by `timeout_s` (the link's receive
    timeout) and the session's deadline is checked between steps.
    """
    check_queries(queries, samples, x if role == "client" else None)
    config = runtime_config(protocol, **{**cfg, "weights": weights, "profile": True})
    party = _Party(role, protocol, config, samples, float(timeout_s),
                   time.monotonic() + float(timeout_s), weights, json_settings(settings),
                   queries)
    log = SpuLog(Path(log_path))
    try:
        return _steps(party, fn, params, x, addrs, log)
    finally:
        log.close()
