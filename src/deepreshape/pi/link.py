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
import re
import socket
import threading
import time
from dataclasses import dataclass

from deepreshape.errors import UsageError

_RATE_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_CHUNK = 1 << 16


@dataclass(frozen=True)
class LinkProfile:
    """Bandwidth per direction (bit/s; None = unlimited) and round-trip time (s)."""

    rate_bps: float | None
    rtt_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LinkProfile:
        """``lan``, ``wan``, or ``RATE:RTT`` such as ``400mbit:40ms``, ``1gbit:0.5ms``,
        ``inf:10ms`` (delay only)."""
        t = text.strip().lower()
        if t in PRESETS:
            return PRESETS[t]
        m = re.fullmatch(r"(inf|(\d+(?:\.\d+)?)\s*([kmg]?)bit)\s*:\s*(\d+(?:\.\d+)?)\s*(s|ms|us)", t)
        if not m:
            raise UsageError(f"link {text!r}: expected lan, wan or RATE:RTT such as "
                             "400mbit:40ms (rate in bit/kbit/mbit/gbit or inf; RTT in s/ms/us)")
        rate = None if m.group(1) == "inf" else float(m.group(2)) * _RATE_UNITS[m.group(3)]
        if rate is not None and rate <= 0:
            raise UsageError(f"link {text!r}: the rate must be positive")
        return cls(rate, float(m.group(4)) * _TIME_UNITS[m.group(5)])

    def describe(self) -> str:
        """E.g. '400 Mbit/s, 40 ms RTT'."""
        if self.rate_bps is None:
            rate = "unlimited"
        elif self.rate_bps >= 1e9:
            rate = f"{self.rate_bps / 1e9:g} Gbit/s"
        else:
            rate = f"{self.rate_bps / 1e6:g} Mbit/s"
        return f"{rate}, {self.rtt_s * 1e3:g} ms RTT"

    def to_dict(self) -> dict[str, float | None]:
        """JSON form, with the description."""
        return {"rate_bps": self.rate_bps, "rtt_s": self.rtt_s, "describe": self.describe()}


PRESETS = {"lan": LinkProfile(3e9, 0.3e-3), "wan": LinkProfile(400e6, 40e-3)}
"""The Cheetah paper's LAN and WAN settings."""


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
