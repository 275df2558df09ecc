"""A network link as data: bandwidth per direction and round-trip time, with the Cheetah
paper's presets (``lan`` = 3 Gbit/s and 0.3 ms RTT, ``wan`` = 400 Mbit/s and 40 ms RTT).

Light (standard library only): the cost model prices a link from it, and `pi.link`
emulates one between two local parties.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deepreshape.errors import UsageError

_RATE_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


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
