"""The Pareto figure: accuracy against ReLUs, MACs, latency or bytes, one colour and
marker per method, the peers' published points beside ours, numbered points and a key.

`draw` renders what `paretoplot.pareto` collected (a `ParetoResult`) to its PNG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from deepreshape.reports.figures import (
    OTHER_STYLE,
    clip,
    figure,
    log_if_wide,
    method_styles,
    readable_ticks,
    save,
)
from deepreshape.reports.paretoplot import (
    ACC_LABEL,
    OWN_CONVENTION,
    PROBE,
    X_AXES,
    ParetoResult,
    ParetoRow,
)

_PEER_MARKERS = ("s", "^", "v", "D", "P", "X", "<", ">", "*", "h")
KEY_WIDTH = 56  # characters of a key line beside the plot


def title(res: ParetoResult) -> str:
    """What is plotted against what, on which data sets; says so when peers' points come
    from another data set than the runs'."""
    what = res.x_label.split(" (")[0]
    runs = f"{len(res.rows)} run{'s' * (len(res.rows) != 1)}"
    text = f"Accuracy vs {what}: {runs} on {', '.join(res.datasets)}"
    if res.cross_dataset:
        text += (f"\nagainst published points on {res.peers_dataset}: a different data set, "
                 "not a like-for-like comparison")
    elif res.peers_shown:
        text += f"; published points on {res.peers_dataset}"
    return text


def _key_lines(res: ParetoResult) -> list[str]:
    lines = []
    for r in res.rows:
        mark = "*" if r.on_frontier else " "
        name = clip(r.name, KEY_WIDTH - 5)
        lines.append(f"{r.number:>2}{mark} {name}")
        if r.label != r.name and r.label not in r.name:
            lines.append(f"     {clip(r.label, KEY_WIDTH - 5)}")
    return lines


# Where a point's number may go, in points from the marker: right-up first, then around it.
_OFFSETS = ((4, 3), (4, -10), (-11, 3), (-11, -10), (4, 12), (-11, 12), (4, -19), (-11, -19),
            (13, 3), (-20, 3), (13, -10), (-20, -10))


def _number_points(ax: Any, rows: list[ParetoRow], scale: float) -> None:
    """Each point's key number beside it, moved around the marker so that no two numbers
    overlap (the first free place of `_OFFSETS`; the last one if none is free)."""
    ax.figure.draw_without_rendering()  # runs the layout: data -> pixels is final
    pt = ax.figure.dpi / 72  # pixels per point
    where = [ax.transData.transform((r.x / scale, r.acc)) for r in rows]
    m = 3.5 * pt  # half a marker
    taken = [(px - m, py - m, px + m, py + m) for px, py in where]  # numbers avoid markers too
    for r, (px, py) in zip(rows, where, strict=True):
        w, h = (4.5 * len(str(r.number)) + 1) * pt, 8 * pt
        for dx, dy in _OFFSETS:
            box = (px + dx * pt, py + dy * pt, px + dx * pt + w, py + dy * pt + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in taken):
                break
        taken.append(box)
        ax.annotate(str(r.number), (r.x / scale, r.acc), textcoords="offset points",
                    xytext=(dx, dy), fontsize=7, color="0.45" if r.probe else "k", zorder=5)


def draw(res: ParetoResult) -> Path:
    from matplotlib.lines import Line2D

    axis = X_AXES[res.x]
    key = _key_lines(res)
    entries = 1 + len({r.method for r in res.rows}) + (len(res.peers) if res.peers_shown else 0)
    legend_h = 0.2 * math.ceil(entries / 2) + 0.3  # the legend below gets its own room
    fig = figure(figsize=(13, max(5.5, 1.6 + 0.15 * len(key)) + legend_h))
    ax, side = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.3, 1.0]})
    designs = [r for r in res.rows if not r.probe]
    front = res.frontier
    handles = []
    if front:
        fx, fy = [r.x / axis.scale for r in front], [r.acc for r in front]
        right = max(r.x / axis.scale for r in designs or res.rows)
        ax.step([*fx, right], [*fy, fy[-1]], where="post", color="k", lw=1.2, alpha=0.6, zorder=2)
        handles.append(Line2D([], [], color="k", lw=1.2, alpha=0.6,
                              label=f"Pareto frontier of the designs ({len(front)}, numbers "
                                    "starred in the key)"))
    style = method_styles()
    kinds = sorted({r.method for r in res.rows}, key=lambda m: (m not in style,
                   list(style).index(m) if m in style else 0, m))
    for kind in kinds:
        color, marker = style.get(kind, OTHER_STYLE)
        pts = [r for r in res.rows if r.method == kind]
        probe = kind == PROBE
        ax.scatter([r.x / axis.scale for r in pts], [r.acc for r in pts], s=36 if probe else 44,
                   marker=marker, color=color, alpha=0.75 if probe else 0.9, zorder=3,
                   edgecolors=["k" if r.on_frontier else color for r in pts] if not probe else None,
                   linewidths=1.0)
        handles.append(Line2D([], [], ls="", marker=marker, color=color, ms=7,
                              label=f"{kind} ({len(pts)})" + (": probes, not designs"
                                                              if probe else "")))
    xs = [r.x / axis.scale for r in res.rows]
    if res.peers_shown:
        for i, s in enumerate(res.peers):
            px, py = [p[0] for p in s.points], [p[1] for p in s.points]
            (line,) = ax.plot(px, py, ls="--" if s.like_for_like else ":", lw=0.9,
                              marker=_PEER_MARKERS[i % 10], ms=4, mfc="none",
                              color=f"C{(i + 4) % 10}", alpha=0.7, label=f"published: {s.label}",
                              zorder=1)
            handles.append(line)
            xs += px
    log_if_wide(ax, xs)
    readable_ticks(ax, "y")
    ax.set_xlabel(res.x_label + (f" [{OWN_CONVENTION}]" if res.x == "relus" else ""))
    ax.set_ylabel(ACC_LABEL)
    ax.set_title(title(res), fontsize=10)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    side.axis("off")
    side.set_title("key (* = on the frontier)", fontsize=9, loc="left")
    size = 7 if len(key) <= 40 else 6
    side.text(0.0, 1.0, "\n".join(key), va="top", ha="left", family="monospace", fontsize=size,
              transform=side.transAxes)
    fig.legend(handles=handles, loc="outside lower center", ncol=2 if len(handles) > 3 else
               len(handles), fontsize=7, frameon=False)
    _number_points(ax, res.rows, axis.scale)  # last: the layout is final
    return save(fig, res.png)
