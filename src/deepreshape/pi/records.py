"""Secure-inference result records: their (protocol, link) key, the one writer and reader
of a run's results, and the text people read about a prediction.

A latency means nothing without the link it was measured over (loopback, an emulated LAN
or WAN, two real hosts), so every measurement is kept under its own (protocol, link) key
(``cheetah-loopback``, ``cheetah-wan``, ``semi2k-100mbit-10ms``), in the file
`rundir.schema.PI` names for it, and measuring over one link never overwrites another.
Readers take every such file, plus an older single-result file (its link read from
``deployment``), and pick one (protocol, link) at a time: nothing here mixes links.

Light on purpose (no numpy, no SPU): reports and plots import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from deepreshape import fileio
from deepreshape.errors import RunFailure, UsageError
from deepreshape.rundir import schema

LOOPBACK = "loopback"
HOSTS = "hosts"  # two parties on two hosts: the real network between them


def _g(v: float) -> str:
    return f"{v:g}".replace("+", "")


def link_key(link: Mapping[str, Any] | None, mode: str | None = None) -> str:
    """A short file-safe name of the link a measurement ran over.

    None is loopback (or ``hosts`` when `mode` says two hosts); the Cheetah presets are
    ``lan`` and ``wan``; any other emulated link is ``<rate>-<rtt>`` (``100mbit-10ms``).
    """
    if not link:
        return HOSTS if mode == "two hosts" else LOOPBACK
    from deepreshape.pi.linkprofile import PRESETS

    rate, rtt = link.get("rate_bps"), float(link.get("rtt_s") or 0.0)
    for name, p in PRESETS.items():
        if p.rate_bps == rate and abs(p.rtt_s - rtt) < 1e-12:
            return name
    if rate is None:
        r = "inf"
    elif rate >= 1e9:
        r = f"{_g(rate / 1e9)}gbit"
    else:
        r = f"{_g(rate / 1e6)}mbit"
    return f"{r}-{_g(rtt * 1e3)}ms"


def record_link(record: Mapping[str, Any]) -> str:
    """The link key of a result: its own ``link`` field, else read from ``deployment``."""
    if isinstance(record.get("link"), str):
        return record["link"]
    dep = record.get("deployment") if isinstance(record.get("deployment"), dict) else {}
    return link_key(dep.get("link"), dep.get("mode"))


def record_protocol(record: Mapping[str, Any]) -> str:
    """The protocol of a result, lower case (``cheetah``, ``semi2k``; ``?`` if unknown)."""
    p = record.get("protocol")
    return str(p).lower() if p else "?"


def link_label(record: Mapping[str, Any]) -> str:
    """How a person reads the link: ``loopback``, ``wan (400 Mbit/s, 40 ms RTT)``,
    ``two hosts``."""
    key = record_link(record)
    dep = record.get("deployment") if isinstance(record.get("deployment"), dict) else {}
    link = dep.get("link") if isinstance(dep.get("link"), dict) else None
    if key == HOSTS:
        return "two hosts"
    if link and link.get("describe") and key in ("lan", "wan"):
        return f"{key} ({link['describe']})"
    return key


def result_key(record: Mapping[str, Any]) -> str:
    """``<protocol>-<link>``, the name a result is stored and selected under."""
    return f"{record_protocol(record)}-{record_link(record)}"


def result_path(run_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Where `record` is stored in `run_dir` (one file per protocol and link)."""
    return schema.PI.path(run_dir, record_protocol(record), record_link(record))


def write_result(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Store `record` (atomically) under its protocol and link; other links are kept.

    The one writer of a secure-inference result. If the run directory cannot be written
    (disk full, read-only), the measurement is kept in a file under the temporary folder
    and the error says where, rather than lose minutes of two-party work.
    """
    record.setdefault("link", record_link(record))
    path = result_path(run_dir, record)
    try:
        return schema.PI.write(run_dir, record_protocol(record), record_link(record), record)
    except OSError as e:
        import os
        import tempfile

        fd, spare = tempfile.mkstemp(prefix="deepreshape-pi-", suffix=".json")
        os.close(fd)
        try:
            fileio.write_json(spare, record)
        except OSError:
            raise RunFailure(f"could not write {path} ({e.strerror}) nor a copy in {spare}; the "
                             "measurement is lost") from None
        raise RunFailure(f"could not write {path} ({e.strerror}); the measurement is saved in "
                         f"{spare}") from None


def read_results(run_dir: str | Path) -> tuple[dict[str, dict], list[str]]:
    """Every result in `run_dir` by ``<protocol>-<link>`` (sorted: loopback first), and
    notes for files that could not be read. A legacy single-result file counts unless a
    newer file holds the same protocol and link."""
    found: dict[str, dict] = {}
    notes: list[str] = []
    for path, data, note in schema.PI.read_all(run_dir):
        if data is None:
            notes.append(note)
            continue
        found.setdefault(result_key(data), {**data, "_file": path.name})
    order = sorted(found, key=lambda k: (not k.endswith(f"-{LOOPBACK}"), k))
    return {k: found[k] for k in order}, notes


def has_result(run_dir: str | Path, protocol: str, link: str) -> bool:
    """Whether `run_dir` holds a readable result of `protocol` over `link` (a link key)."""
    return f"{protocol}-{link}" in read_results(run_dir)[0]


def pick(keys: Iterable[str], protocol: str | None = None, link: str | None = None
         ) -> list[str]:
    """The keys that match `protocol` and `link` (None matches any)."""
    out = []
    for k in keys:
        p, _, ln = k.partition("-")
        if (protocol is None or p == protocol.lower()) and (link is None or ln == link.lower()):
            out.append(k)
    return out


def parse_link(text: str) -> str:
    """The key of a link a user names: ``loopback``, ``hosts``, ``lan``, ``wan`` or
    ``RATE:RTT`` as `deepreshape pi --link` takes it (``100mbit:10ms``) or as stored
    (``100mbit-10ms``)."""
    from deepreshape.pi.linkprofile import LinkProfile

    t = str(text).strip().lower()
    if t in (LOOPBACK, HOSTS):
        return t
    if re.fullmatch(r"[a-z0-9.]+-[0-9.]+(s|ms|us)", t):
        t = t.replace("-", ":", 1)
    try:
        return link_key(LinkProfile.parse(t).to_dict())
    except UsageError:
        raise UsageError(f"unknown link {text!r}; valid: loopback, hosts, lan, wan or RATE:RTT "
                         "such as 100mbit:10ms") from None


FAR = 0.25  # a measurement this far (relative) from the cost model's prediction is flagged


def prediction_check(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cost model's prediction stored with a measurement, against it: the link the
    model was calibrated over, the relative differences, and whether either is beyond 25%
    (None when the result holds no prediction)."""
    pred = (record.get("predicted") or {}).get("spu") if isinstance(record.get("predicted"), dict) else None
    if not isinstance(pred, dict) or not isinstance(pred.get("latency_s"), int | float):
        return None
    cal = pred.get("link") if isinstance(pred.get("link"), dict) else None
    over = link_key(cal)
    off: dict[str, float | None] = {}
    for what, measured in (("latency_s", record.get("latency_s")),
                           ("bytes", record.get("total_bytes", record.get("bytes")))):
        p = pred.get(what)
        ok = isinstance(measured, int | float) and isinstance(p, int | float) and p > 0
        off[what] = (measured / p - 1) if ok else None
    label = over if not cal else f"{over} ({cal.get('describe', '')})"
    if isinstance(pred.get("link_s"), int | float) and pred["link_s"] > 0:
        label += f", plus the link model's {pred['link_s']:.2f} s for {pred.get('target_link')}"
    return {"calibrated_over": over, "calibrated_label": label,
            "measured_over": record_link(record), "latency_s": pred["latency_s"],
            "bytes": pred.get("bytes"), "latency_off": off["latency_s"], "bytes_off": off["bytes"],
            "far": any(v is not None and abs(v) > FAR for v in off.values())}


def prediction_text(record: Mapping[str, Any]) -> str | None:
    """What the cost model predicted and over which link it was calibrated; a second line
    when the measurement is more than 25% away from it (and how to refit for its link)."""
    c = prediction_check(record)
    if c is None:
        return None
    mb = "" if c["bytes"] is None else f", {c['bytes'] / 1e6:.2f} MB"
    text = (f"predicted by the cost model (calibrated over {c['calibrated_label']}): "
            f"{c['latency_s']:.3f} s{mb}")
    offs = [f"{what} {100 * v:+.0f}%" for what, v in (("latency", c["latency_off"]),
                                                      ("bytes", c["bytes_off"])) if v is not None]
    if c["far"]:
        text += f"\nthe measurement is more than 25% away from it ({', '.join(offs)})"
        measured = c["measured_over"]
        if c["calibrated_over"] != measured:
            text += f": measured over {measured}, calibrated over {c['calibrated_over']}"
            if measured != HOSTS:
                flag = "" if measured == LOOPBACK else f" --link {measured.replace('-', ':', 1)}"
                text += f" (refit with `deepreshape pi --calibrate{flag}`)"
    elif offs:
        text += f" (measurement {', '.join(offs)})"
    return text
