"""Emulated network links between two local parties: a delaying, rate-limiting TCP relay.

Measuring on loopback hides what a real network adds: every round of the protocol pays
the round-trip time, every byte the bandwidth. The usual tool, ``tc netem`` inside a
network namespace, needs root and a kernel with ``sch_netem`` (this project's machine has
neither). `Relay` does the same in user space: each party connects to the other through a
relay port that holds every chunk of bytes for its serialization time at `rate_bps` (one
queue per direction, shared by the direction's connections, like a full-duplex link) plus
half the round-trip time, then forwards it. The relay's own cost (a thread hop, about
0.1 ms per message) adds to the emulated delay, so sub-millisecond RTTs are approximate.

Presets are the Cheetah paper's settings: ``lan`` = 3 Gbit/s and 0.3 ms RTT, ``wan`` =
400 Mbit/s and 40 ms RTT.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time

from deepreshape.errors import UsageError
from deepreshape.pi.linkprofile import LinkProfile

_CHUNK = 1 << 16


class _Direction:
    """One direction of the link: when its wire is free again."""

    def __init__(self, profile: LinkProfile) -> None:
        self.profile = profile
        self.free_at = 0.0
        self.lock = threading.Lock()

    def schedule(self, nbytes: int) -> float:
        """When a chunk of `nbytes` that arrives now reaches the far end."""
        now = time.monotonic()
        with self.lock:
            start = max(now, self.free_at)
            rate = self.profile.rate_bps
            self.free_at = start + (nbytes * 8 / rate if rate else 0.0)
            return self.free_at + self.profile.rtt_s / 2


def _pump(src: socket.socket, dst: socket.socket, way: _Direction) -> None:
    """Copy src -> dst, each chunk held until its scheduled arrival; EOF closes dst's side."""
    pending: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def deliver() -> None:
        with contextlib.suppress(OSError):
            while True:
                at, data = pending.get()
                if not data:
                    break
                wait = at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    out = threading.Thread(target=deliver, daemon=True)
    out.start()
    with contextlib.suppress(OSError):
        while data := src.recv(_CHUNK):
            pending.put((way.schedule(len(data)), data))
    pending.put((0.0, b""))
    out.join()


class Relay:
    """Relay ports in front of each party's address; use as a context manager.

    ``with Relay(["127.0.0.1:9100", "127.0.0.1:9101"], profile) as fronts:`` gives one
    relay address per target; a party that connects to ``fronts[i]`` reaches target i
    through the emulated link. Traffic towards target i shares one direction of the link,
    traffic from it the other (two parties).
    """

    def __init__(self, targets: list[str], profile: LinkProfile) -> None:
        if len(targets) != 2:
            raise UsageError("the link emulator joins exactly two parties")
        self.targets = [_split(t) for t in targets]
        self.profile = profile
        self._to = [_Direction(profile), _Direction(profile)]  # traffic towards party i
        self._servers: list[socket.socket] = []
        self._socks: list[socket.socket] = []
        self._closed = threading.Event()

    def __enter__(self) -> list[str]:
        fronts = []
        for i, target in enumerate(self.targets):
            srv = socket.create_server(("127.0.0.1", 0))
            self._servers.append(srv)
            threading.Thread(target=self._accept, args=(srv, i, target), daemon=True).start()
            fronts.append(f"127.0.0.1:{srv.getsockname()[1]}")
        return fronts

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        for s in [*self._servers, *self._socks]:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self, srv: socket.socket, i: int, target: tuple[str, int]) -> None:
        while not self._closed.is_set():
            try:
                near, _ = srv.accept()
            except OSError:
                return  # closed
            try:
                far = socket.create_connection(target)
            except OSError:
                near.close()  # the party behind `target` is not up yet: the caller retries
                continue
            for s in (near, far):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks += [near, far]
            threading.Thread(target=_pump, args=(near, far, self._to[i]), daemon=True).start()
            threading.Thread(target=_pump, args=(far, near, self._to[1 - i]), daemon=True).start()


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"address {addr!r}: expected HOST:PORT")
    return host, int(port)
