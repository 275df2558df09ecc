"""The link between the two parties: SPU's brpc link, its addresses, ports and messages.

Every receive waits at most the run's timeout, connecting gives up after it, and a port
this party cannot listen on is named as such (not blamed on the peer).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any

from deepreshape.errors import RunFailure, UsageError
from deepreshape.pi.protocols import ROLES, load_spu, role_name, spu_error_text

_LINK_ID = "deepreshape-pi"


def parse_parties(parties: list[str]) -> list[tuple[str, int]]:
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


def connect(parties: list[str], rank: int, timeout_s: float) -> Any:
    """A brpc link to the peer; gives up after about `timeout_s` if it never answers.

    Every receive waits at most `timeout_s`, so a peer that dies mid-run is noticed too.
    Connecting retries once a second (each try costs about 1.2 s with one send retry).
    """
    lib = load_spu().libspu
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
    check_port_free(parties[rank], rank)
    try:
        return lib.link.create_brpc(desc, rank)
    except RuntimeError as e:
        text = spu_error_text(e)
        if "server failed start" in text:
            check_port_free(parties[rank], rank)
            raise RunFailure(f"the {role_name(rank)} could not listen on {parties[rank]} "
                             f"(its own address): {text}") from e
        raise RunFailure(
            f"could not connect to the {role_name(peer)} at {parties[peer]} within about "
            f"{timeout_s:g} s: {text}"
        ) from e


def check_port_free(addr: str, rank: int) -> None:
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
                    f"the {role_name(rank)}'s port {port} ({addr}) is already in use by "
                    "another program: stop it or give this party another port") from None


def exchange(lctx: Any, msg: bytes) -> bytes:
    """Send `msg` to the peer and receive its message (sends are buffered by the peer)."""
    peer = 1 - lctx.rank
    lctx.send(peer, msg)
    return lctx.recv(peer)


def stop_link(lctx: Any) -> None:
    """Best effort: the result is already safe, a failing shutdown must not lose it."""
    with contextlib.suppress(Exception):
        lctx.stop_link()


def free_ports(n: int = 2) -> list[int]:
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
