"""`pi`: secure two-party inference of a run (latency and communication under SPU) over
one protocol and link; one ``pi-<protocol>-<link>`` result per point. Its numbers go into
the results row of the run it measured, per (protocol, link)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from deepreshape.methods.base import ExpandContext, Method, check_of, of_targets
from deepreshape.rundir import schema


def link_key(link: str | None) -> str:
    """The stored key of a sweep's ``link`` value (None: loopback), as the pi writer
    names its result file."""
    from deepreshape.pi.records import parse_link

    return parse_link(link or "loopback")


def _axis(value: Any) -> list:
    """A table value that may be one value or a list of them (an axis)."""
    return list(value) if isinstance(value, list) else [value]


def protocol_names() -> list[str]:
    """The registered PI protocols' names."""
    from deepreshape.pi.protocols import PROTOCOLS

    return PROTOCOLS.names()


class Pi(Method):
    name = "pi"
    display = "secure inference"
    entry = "deepreshape.pi.measure:measure_run"
    cli = "deepreshape.cli.pi"
    measures = True
    keys = {"protocol": "a registered PI protocol (cheetah, semi2k, ...), or a list of them",
            "link": "loopback, lan, wan or RATE:RTT, or a list of them",
            "samples": "test images checked against plaintext", "repeats": "timed repeats",
            "of": "which runs: train and run-making methods (default [train])"}

    def styles(self) -> list:
        return []  # it measures runs, it does not make them

    def check(self, table: dict, ctx: ExpandContext) -> None:
        check_of(table, ctx, "pi")
        valid = protocol_names()
        for protocol in _axis(table.get("protocol", "cheetah")):
            if protocol not in valid:
                raise ctx.fail("pi.protocol", f"must be one of {', '.join(valid)} (or a list of them)")
        for link in _axis(table.get("link")):
            from deepreshape.errors import UsageError

            try:
                link_key(link)
            except UsageError as e:
                raise ctx.fail("pi.link", str(e)) from None

    def expand(self, table: dict, ctx: ExpandContext) -> None:
        """One point per measured run and (protocol, link): `protocol` and `link` may be
        lists, measured as a product."""
        for protocol, link in itertools.product(_axis(table.get("protocol", "cheetah")),
                                                _axis(table.get("link"))):
            link = None if link == "loopback" else link
            s = {"protocol": protocol, "link": link, "samples": table.get("samples", 2),
                 "repeats": table.get("repeats", 1)}
            for target in of_targets(table, ctx):
                ctx.add(self.name, s, (target,), target,
                        id=f"{target}#pi-{s['protocol']}-{s['link'] or 'loopback'}")

    def run(self, point: Any, root: Path, options: Any) -> dict:
        measure_run = self.entry_function()
        from deepreshape.pi.linkprofile import LinkProfile

        s = point.settings
        link = LinkProfile.parse(s["link"]) if s.get("link") else None
        rec = measure_run(root / point.run, protocol=s["protocol"], samples=s["samples"],
                          repeats=s["repeats"], link=link, options=options) or {}
        return {k: rec.get(k) for k in ("latency_s", "total_bytes", "setup_s", "argmax_agree_count",
                                         "link")}

    def finished(self, root: Path, point: Any) -> bool:
        s = point.settings
        return schema.PI.exists(root / point.run, s["protocol"], link_key(s.get("link")))


METHOD = Pi()
