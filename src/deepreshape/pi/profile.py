"""SPU's per-op profile of a run: where its lines come from and what they say.

With ``enable_pphlo_profile`` each `Runtime.run` logs per-op time and bytes and a "Link
details" line with the bytes and messages ("actions") of the run. SPU 0.9.5 exposes no
link statistics to Python, so the party points SPU's C++ logger at a file (`SpuLog`)
and parses the lines it wrote during each run (`parse_profile`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepreshape.pi.protocols import load_spu

RELU_OPS = frozenset({
    "pphlo.less", "pphlo.greater", "pphlo.less_equal", "pphlo.greater_equal",
    "pphlo.maximum", "pphlo.minimum", "pphlo.max", "pphlo.min", "pphlo.select",
    "pphlo.sign", "pphlo.clamp",
})


CONV_OPS = frozenset({"pphlo.convolution", "pphlo.dot", "pphlo.dot_general"})


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


class SpuLog:
    """SPU's C++ logger pointed at a file, so the profile lines it prints can be read back.

    `spu.libspu.logging.setup_logging` is process-wide; `close` turns the console back on.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._setup(console=False)

    def _setup(self, console: bool) -> None:
        lib = load_spu().libspu
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
