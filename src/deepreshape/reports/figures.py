"""Plot helpers shared by `pareto` and `report`: figures, atomic PNGs, readable ticks.

matplotlib's object API only (`Figure`, no pyplot): figures render headless with Agg and
leave the caller's backend alone. Tick labels are plain numbers with K/M/G suffixes
(``400``, ``2K``, ``1.5M``), never ``4x10^2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deepreshape import fileio
from deepreshape.methods.base import OTHER_STYLE


def method_styles() -> dict[str, tuple[str, str]]:
    """One colour and marker per method label, the same in every plot, in legend order:
    each method's `Method.styles` (`deepreshape.methods.METHODS`, plugins included)."""
    from deepreshape.methods import styles

    return styles()


def method_style(label: str) -> tuple[str, str]:
    """(colour, marker) of a method label; `OTHER_STYLE` for one no method claims."""
    return method_styles().get(label, OTHER_STYLE)


def __getattr__(name: str) -> Any:
    if name == "METHOD_STYLE":  # the registry's styles, read when asked (plugins included)
        return method_styles()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def figure(**kw: Any) -> Any:
    """A constrained-layout `Figure` (no pyplot)."""
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kw)


def save(fig: Any, path: Path) -> Path:
    """PNG, atomically (matplotlib is told the format since the temporary name is .tmp)."""
    return fileio.atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))


def si(v: float) -> str:
    """400, 2K, 1.5M, 3G: a tick label a person reads at a glance."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else ""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def readable_ticks(ax: Any, axis: str = "x") -> None:
    """Plain tick labels with K/M/G on `axis` (log or linear), no scientific notation."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    class _SI(LogFormatter):
        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
            return si(x)

    target = ax.xaxis if axis == "x" else ax.yaxis
    if (ax.get_xscale() if axis == "x" else ax.get_yscale()) == "log":
        target.set_major_formatter(_SI(labelOnlyBase=False))
        target.set_minor_formatter(_SI(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    else:
        target.set_major_formatter(FuncFormatter(lambda v, _pos: si(v)))


def log_if_wide(ax: Any, values: Sequence[float], axis: str = "x") -> None:
    """Log scale when the positive values span more than 10x (ReLU counts usually do);
    either way the ticks are plain numbers."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if vals and min(vals) > 0 and max(vals) / min(vals) > 10:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    readable_ticks(ax, axis)


def bar_labels(ax: Any, bars: Any, fmt: Callable[[float], str]) -> None:
    """The value above each bar."""
    for b in bars:
        ax.annotate(fmt(b.get_height()), (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=7, textcoords="offset points", xytext=(0, 2))


def clip(text: str, width: int) -> str:
    """`text` cut to `width` characters in its middle, an ellipsis marking the cut: the
    start (the architecture, the run's folder) and the end (the method's tags, the run's
    own name) are what tell rows apart."""
    if len(text) <= width:
        return text
    head = max(width // 3, 1) if width > 4 else max(width - 1, 0)
    return text[:head] + "…" + text[len(text) - (width - head - 1):] if width > head + 1 \
        else text[:head] + "…"
