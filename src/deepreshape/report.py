"""Pareto plots across runs and a report per run: the figures and tables a PI paper shows.

Both read run directories only (`config.json`, `results.json`, `metrics.jsonl`, and when
present `pi.json`, `criticality.json`, `snl.json`). Files that other commands add are read
defensively: every key is optional, a missing or broken file becomes a note, not an error.
Figures use matplotlib's object API (`Figure`, no pyplot): they render headless with Agg
and leave the caller's backend alone. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from deepreshape import io
from deepreshape.count import Counts, count, normalized_stagewise
from deepreshape.errors import CheckpointError, UsageError
from deepreshape.runs import CONFIG, RESULTS, Run, load_run

PI_JSON, CRITICALITY_JSON, SNL_JSON, REDUCE_JSON = "pi.json", "criticality.json", "snl.json", "reduce.json"
PEER_SETS = ("cifar100", "cifar10", "tinyimagenet")
PEER_CHOICES = ("auto", *PEER_SETS, "none")
ACC_LABEL = "top-1 accuracy (%)"
OWN_CONVENTION = "stem counted"  # deepreshape counts every ReLU (stage1 includes the stem)


@dataclass(frozen=True)
class XAxis:
    """One choice of --x: where its value comes from and how it is plotted."""

    name: str
    label: str  # axis label, with the unit plotted
    unit: str  # unit of the stored value (tables, CSV, JSON)
    scale: float = 1.0  # stored value / scale = plotted value


X_AXES: dict[str, XAxis] = {
    "relus": XAxis("relus", "ReLUs (count)", "ReLUs, results.json"),
    "macs": XAxis("macs", "MACs", "multiply-accumulates, results.json"),
    "latency": XAxis("latency", "online latency (s)", "seconds per inference, pi.json latency_s"),
    "bytes": XAxis("bytes", "communication (MB)",
                   "bytes per inference, sent + received, pi.json", scale=1e6),
}


# --------------------------------------------------------------------------- small readers


def _num(v: Any) -> int | float | None:
    """`v` if it is a finite number (not a bool), else None: JSON from others may hold anything."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return v if math.isfinite(v) else None


def _nan(v: Any) -> float:
    """A number for plotting: missing values become gaps (NaN)."""
    n = _num(v)
    return math.nan if n is None else float(n)


def read_optional(path: Path) -> tuple[Any, str | None]:
    """(parsed JSON, None), or (None, why) for a missing or broken file."""
    if not path.exists():
        return None, None
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path}: unreadable ({e.__class__.__name__}); left out"


def pi_summary(data: Any) -> dict | None:
    """protocol, latency_s, bytes_sent/recv, bytes (both directions), per_kind from a pi.json.

    Looks at the top level first, then at nested objects (a summary may be wrapped).
    """
    if not isinstance(data, dict):
        return None
    for d in (data, *(v for v in data.values() if isinstance(v, dict))):
        sent, recv = _num(d.get("bytes_sent")), _num(d.get("bytes_recv"))
        total = _num(d.get("total_bytes"))
        if total is None and sent is not None and recv is not None:
            total = sent + recv
        total = total if total is not None else _num(d.get("bytes"))
        latency = _num(d.get("latency_s"))
        if latency is None and total is None:
            continue
        kinds = d.get("per_kind") if isinstance(d.get("per_kind"), dict) else {}
        per_kind = {str(k): {"time_s": _num(v.get("time_s")), "bytes": _num(v.get("bytes"))}
                    for k, v in kinds.items() if isinstance(v, dict)}
        protocol = d.get("protocol", data.get("protocol"))
        return {"protocol": str(protocol) if protocol is not None else None, "latency_s": latency,
                "bytes_sent": sent, "bytes_recv": recv, "bytes": total, "per_kind": per_kind}
    return None


def criticality_summary(data: Any) -> dict | None:
    """Stages (name, relus, acc, kd_acc, C) and the order from a criticality.json."""
    stages = data.get("stages") if isinstance(data, dict) else data
    if not isinstance(stages, list):
        return None
    rows = []
    for k, s in enumerate(stages, 1):
        if not isinstance(s, dict):
            continue
        c = _num(s.get("C", s.get("criticality")))
        rows.append({"name": str(s.get("name", f"stage{k}")), "relus": _num(s.get("relus")),
                     "acc": _num(s.get("acc")), "kd_acc": _num(s.get("kd_acc")), "C": c})
    if not rows:
        return None
    order = data.get("order") if isinstance(data, dict) else None
    order = [int(o) for o in order if _num(o) is not None] if isinstance(order, list) else []
    if not order and all(r["C"] is not None for r in rows):  # most critical first
        order = [k + 1 for k in sorted(range(len(rows)), key=lambda k: (-rows[k]["C"], k))]
    return {"stages": rows, "order": order}


# --------------------------------------------------------------------------- peers


@dataclass(frozen=True)
class PeerSeries:
    """One peer method's published points, under its own ReLU-count convention."""

    method: str
    network: str
    convention: str  # "stem counted" | "stem not counted"
    source: str
    points: tuple[tuple[int, float], ...]  # (ReLUs, top-1 %)
    approximate: bool = False
    like_for_like: bool = True
    convention_note: str = ""

    @property
    def label(self) -> str:
        """Legend text: method, citation, caveats and ReLU convention."""
        extra = ", approx." if self.approximate else ""
        extra += ", not like-for-like" if not self.like_for_like else ""
        cite = ", ".join(self.source.split(", ")[:2]).split(" (")[0]
        return f"{self.method} ({cite}{extra}) [{self.convention}]"


def _peer_data() -> dict:
    return json.loads(resources.files("deepreshape.resources").joinpath("peers.json").read_text())


def load_peers(dataset: str) -> list[PeerSeries]:
    """The published points for `dataset` (cifar100, cifar10, tinyimagenet; none = [])."""
    key = dataset.strip().lower()
    if key == "none":
        return []
    if key not in PEER_SETS:
        raise UsageError(f"unknown --peers {dataset!r}; valid: {', '.join(PEER_CHOICES)}")
    return [PeerSeries(method=s["method"], network=s.get("network", ""),
                       convention=s["convention"], source=s["source"],
                       points=tuple((int(r), float(a)) for r, a in s["points"]),
                       approximate=bool(s.get("approximate", False)),
                       like_for_like=bool(s.get("like_for_like", True)),
                       convention_note=s.get("convention_note", ""))
            for s in _peer_data()["datasets"][key]]


# --------------------------------------------------------------------------- runs


def find_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Run directories (config.json + results.json) at or anywhere below each path.

    Nested runs count too: method outputs live inside their baseline (RUN/reduce/...).
    """
    if not paths:
        raise UsageError("give at least one run directory or folder of runs")
    found: dict[Path, Path] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"{p}: no such file or directory")
        p = p.parent if p.is_file() else p
        for res in sorted(p.rglob(RESULTS)):
            d = res.parent
            if (d / CONFIG).is_file():
                found.setdefault(d.resolve(), d)
    if not found:
        raise UsageError(f"no run directories (config.json + results.json) under "
                         f"{', '.join(map(str, paths))}")
    return sorted(found.values(), key=str)


def pareto_frontier(xs: Sequence[float], ys: Sequence[float]) -> list[bool]:
    """True for every point that no other point dominates (x no larger and y no smaller,
    one of them strictly): the least-cost, most-accurate points. Equal points share it."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    on = [False] * len(xs)
    best_before = -math.inf  # best y among strictly smaller x
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and xs[order[j]] == xs[order[i]]:
            j += 1
        top = ys[order[i]]  # the group's best y (sorted by -y)
        for k in order[i:j]:
            on[k] = ys[k] == top and ys[k] > best_before
        best_before = max(best_before, top)
        i = j
    return on


@dataclass
class ParetoRow:
    """One run on the Pareto plot: its cost `x`, final accuracy and whether it is on the frontier."""

    run: str
    label: str
    arch: str
    dataset: str
    method: str
    x: int | float
    acc: float
    on_frontier: bool = False


@dataclass
class ParetoResult:
    """Points, frontier, peers and the files written (png, csv, json)."""

    x: str
    rows: list[ParetoRow]
    peers_dataset: str | None
    peers: list[PeerSeries]
    skipped: list[tuple[str, str]]
    notes: list[str]
    png: Path
    csv: Path
    json: Path

    @property
    def frontier(self) -> list[ParetoRow]:
        """The frontier runs, cheapest first."""
        return sorted((r for r in self.rows if r.on_frontier), key=lambda r: (r.x, -r.acc))

    def to_dict(self) -> dict:
        """A JSON-ready dict of the table, frontier, peers and files (pareto's --json and OUT.json)."""
        axis = X_AXES[self.x]
        return {
            "x": self.x, "x_label": axis.label, "x_unit": axis.unit,
            "y": "final_acc", "y_label": ACC_LABEL, "relu_convention": OWN_CONVENTION,
            "runs": [asdict(r) for r in self.rows],
            "frontier": [r.run for r in self.frontier],
            "skipped": [{"run": r, "reason": why} for r, why in self.skipped],
            "peers": None if self.peers_dataset is None else {
                "dataset": self.peers_dataset, "shown": bool(self.peers) and self.x == "relus",
                "methods": [asdict(s) for s in self.peers]},
            "notes": self.notes,
            "files": {"png": str(self.png), "csv": str(self.csv), "json": str(self.json)},
        }


def _x_value(x: str, run: Run) -> tuple[int | float | None, str]:
    """The run's x, or None and why not."""
    if x in ("relus", "macs"):
        return _num(run.results.get(x)), f"no {x} in results.json"
    data, bad = read_optional(run.path / PI_JSON)
    if data is None:
        return None, bad or "no pi.json (run `deepreshape pi` on it first)"
    s = pi_summary(data)
    key = "latency_s" if x == "latency" else "bytes"
    return (s or {}).get(key), f"pi.json has no {'latency_s' if x == 'latency' else 'bytes_sent/recv'}"


def _labels(paths: list[Path]) -> list[str]:
    """Short names for the plot: paths relative to the runs' common parent."""
    if len(paths) == 1:
        return [paths[0].resolve().name]
    root = Path(os.path.commonpath([p.resolve().parent for p in paths]))
    return [str(p.resolve().relative_to(root)) for p in paths]


def _collect(paths: list[Path], x: str) -> tuple[list[ParetoRow], list[tuple[str, str]]]:
    rows, skipped = [], []
    for path, label in zip(paths, _labels(paths), strict=True):
        try:
            run = load_run(path)
            results = run.results
        except (UsageError, KeyError, TypeError) as e:  # CheckpointError, or a spec from elsewhere
            skipped.append((str(path), str(e) if isinstance(e, UsageError) else "unreadable spec"))
            continue
        results = results if isinstance(results, dict) else {}
        acc = _num(results.get("final_acc"))
        if acc is None:
            skipped.append((str(path), "no final_acc in results.json (unfinished run?)"))
            continue
        value, why = _x_value(x, run)
        if value is None:
            skipped.append((str(path), why))
            continue
        method = run.config.get("method")
        rows.append(ParetoRow(str(path), label, str(results.get("arch", run.spec.describe())),
                              str(results.get("dataset", run.config.get("data", {}).get("dataset", ""))),
                              str(method.get("name", "")) if isinstance(method, dict) else "",
                              value, acc))
    return rows, skipped


def _resolve_peers(peers: str, rows: list[ParetoRow], x: str) -> tuple[str | None, list[str]]:
    """The peers' data set ("auto": the runs' own when there are published points for it)."""
    key = str(peers).strip().lower()
    if key not in PEER_CHOICES:
        raise UsageError(f"unknown --peers {peers!r}; valid: {', '.join(PEER_CHOICES)}")
    datasets = sorted({r.dataset for r in rows})
    notes = []
    if key == "auto":
        key = datasets[0] if len(datasets) == 1 and datasets[0] in PEER_SETS else "none"
        if key == "none" and x == "relus":
            notes.append(f"no published peer points for {', '.join(datasets)}; pass --peers "
                         f"{'|'.join(PEER_SETS)} to show one set anyway")
    if key == "none":
        return None, notes
    if x != "relus":
        notes.append(f"peer points are ReLU counts: shown only with --x relus, not --x {x}")
    elif datasets != [key]:
        notes.append(f"runs are on {', '.join(datasets)}, peer points on {key}: "
                     "not a like-for-like comparison")
    return key, notes


def _out_paths(out: str | os.PathLike) -> tuple[Path, Path, Path]:
    png = Path(out)
    if png.is_dir():
        png = png / "pareto.png"
    if png.suffix.lower() != ".png":
        raise UsageError(f"--out must name a .png file (or a folder), got {str(out)!r}")
    return png, png.with_suffix(".csv"), png.with_suffix(".json")


def pareto(runs: Sequence[str | os.PathLike], x: str = "relus", peers: str = "auto",
           out: str | os.PathLike = "pareto.png") -> ParetoResult:
    """Accuracy against ReLUs, MACs, latency or bytes for many runs, frontier highlighted.

    runs: run directories or folders holding them (searched recursively). Runs without the
    needed x (no pi.json for latency/bytes) are skipped with a note. Peers' published points
    are drawn for --x relus. Writes OUT (PNG) and the same table as OUT.csv and OUT.json.
    """
    runs = [runs] if isinstance(runs, str | os.PathLike) else runs
    key = str(x).strip().lower()
    if key not in X_AXES:
        raise UsageError(f"unknown --x {x!r}; valid: {', '.join(X_AXES)}")
    png, csv_path, json_path = _out_paths(out)
    rows, skipped = _collect(find_runs(runs), key)
    if not rows:
        why = "; ".join(sorted({w for _, w in skipped}))
        raise UsageError(f"none of the {len(skipped)} runs found has what --x {key} needs ({why})")
    for r, on in zip(rows, pareto_frontier([r.x for r in rows], [r.acc for r in rows]), strict=True):
        r.on_frontier = on
    dataset, notes = _resolve_peers(peers, rows, key)
    series = load_peers(dataset) if dataset else []
    notes += [f"skipped {r}: {why}" for r, why in skipped]
    result = ParetoResult(key, rows, dataset, series, skipped, notes, png, csv_path, json_path)
    _plot_pareto(result)
    io.write_text(csv_path, _pareto_csv(result))
    io.write_json(json_path, result.to_dict())
    return result


def _pareto_csv(res: ParetoResult) -> str:
    """One row per run, then one per peer point (kind = peer; their x is always ReLUs)."""
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "run", "label", "arch", "dataset", "method", res.x, "acc", "on_frontier",
                "convention", "source"])
    for r in res.rows:
        w.writerow(["run", r.run, r.label, r.arch, r.dataset, r.method, r.x, r.acc,
                    int(r.on_frontier), OWN_CONVENTION, ""])
    for s in res.peers:
        for relus, acc in s.points:
            w.writerow(["peer", "", s.method, s.network, res.peers_dataset, s.method, relus, acc, "",
                        s.convention, s.source])
    return buf.getvalue()


# --------------------------------------------------------------------------- figures

_MARKERS = ("s", "^", "v", "D", "P", "X", "<", ">", "*", "h")


def _figure(**kw: Any) -> Any:
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kw)


def _save(fig: Any, path: Path) -> Path:
    """PNG, atomically (matplotlib is told the format since the temporary name is .tmp)."""
    return io.atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))


def _log_if_wide(ax: Any, values: Sequence[float], axis: str = "x") -> None:
    """Log scale when the positive values span more than 10x (ReLU counts usually do)."""
    vals = [v for v in values if v is not None]
    if vals and min(vals) > 0 and max(vals) / min(vals) > 10:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _plot_pareto(res: ParetoResult) -> Path:
    axis = X_AXES[res.x]
    fig = _figure(figsize=(11, 6))
    ax = fig.subplots()
    conv = f" [{OWN_CONVENTION}]" if res.x == "relus" else ""
    off = [r for r in res.rows if not r.on_frontier]
    if off:
        ax.scatter([r.x / axis.scale for r in off], [r.acc for r in off], s=24, color="0.55",
                   alpha=0.45, label=f"other runs ({len(off)})", zorder=2)
    front = res.frontier
    fx, fy = [r.x / axis.scale for r in front], [r.acc for r in front]
    right = max(r.x / axis.scale for r in res.rows)  # the staircase runs to the costliest run
    ax.step([*fx, right], [*fy, fy[-1]], where="post", color="C0", lw=1.8, zorder=3)
    ax.scatter(fx, fy, s=46, color="C0", edgecolor="k", lw=0.6, zorder=4,
               label=f"runs: Pareto frontier ({len(front)}){conv}")
    for r, px, py in zip(front, fx, fy, strict=True):
        ax.annotate(r.label, (px, py), textcoords="offset points", xytext=(5, 5), fontsize=7)
    xs = [r.x / axis.scale for r in res.rows]
    if res.x == "relus":
        for i, s in enumerate(res.peers):
            px, py = [p[0] for p in s.points], [p[1] for p in s.points]
            ax.plot(px, py, ls="--" if s.like_for_like else ":", lw=0.9, marker=_MARKERS[i % 10],
                    ms=5, color=f"C{(i + 1) % 10}", alpha=0.85, label=s.label, zorder=2)
            xs += px
    _log_if_wide(ax, xs)
    ax.set_xlabel(axis.label)
    ax.set_ylabel(ACC_LABEL)
    data = ", ".join(sorted({r.dataset for r in res.rows}))
    shown = res.peers_dataset if res.peers and res.x == "relus" else None
    ax.set_title(f"Accuracy vs {axis.label.split(' (')[0]}: {len(res.rows)} runs on {data}"
                 + (f"; published points on {shown}" if shown else ""))
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, res.png)


def _bar_labels(ax: Any, bars: Any, fmt: Callable[[float], str]) -> None:
    for b in bars:
        ax.annotate(fmt(b.get_height()), (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=7, textcoords="offset points", xytext=(0, 2))


def _plot_relu_share(c: Counts, path: Path) -> Path:
    """Share of ReLUs per stage (the paper's Figure 5), the stem's part of stage1 hatched."""
    fig = _figure(figsize=(6.5, 4))
    ax = fig.subplots()
    total = max(c.relus, 1)
    names = [s.name for s in c.stages]
    shares = [100 * s.relus / total for s in c.stages]
    stem = 100 * c.stem_relus / total
    body = [shares[0] - stem, *shares[1:]]
    ax.bar(names, body, color=[f"C{k}" for k in range(len(names))], label="stage body")
    if c.stem_relus:
        ax.bar(names[:1], [stem], bottom=body[:1], color="white", edgecolor="C0", hatch="///",
               label="stem (counted in stage1)")
    for k, v in enumerate(shares):
        ax.annotate(f"{v:.1f}%", (k, v), ha="center", va="bottom", fontsize=8,
                    textcoords="offset points", xytext=(0, 2))
    ax.set_ylabel("share of the network's ReLUs (%)")
    ax.set_ylim(0, max(shares, default=0) * 1.15 + 1)
    ax.set_title(f"Stagewise ReLU distribution: {c.arch} ({c.relus:,} ReLUs)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_normalized(norm: dict[str, list[float]], path: Path) -> Path:
    """Table 8 as bars: ReLUs, the idealized FLOPs model and exact MACs, stage1 = 64."""
    fig = _figure(figsize=(7, 4))
    ax = fig.subplots()
    n = len(norm["relus"])
    series = [("relus", "ReLUs (no stem)"), ("flops_model", "FLOPs (Table 2 model)"),
              ("macs_exact", "MACs (exact, no stem)")]
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        pos = [k + (i - 1) * width for k in range(n)]
        _bar_labels(ax, ax.bar(pos, norm[key], width, label=label, color=f"C{i}"),
                    lambda v: f"{v:.3g}")
    ax.set_xticks(range(n), [f"stage{k + 1}" for k in range(n)])
    values = [v for k, _ in series for v in norm[k]]
    _log_if_wide(ax, values, axis="y")
    if ax.get_yscale() == "linear":
        ax.set_ylim(0, max(values) * 1.3)  # room for the legend above the bars
    ax.set_ylabel("normalized (stage1 = 64)")
    ax.set_title("Stagewise ReLUs and MACs, normalized as in Table 8", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_training(metrics: list[dict], path: Path) -> Path:
    fig = _figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    ep = [m.get("epoch", k + 1) for k, m in enumerate(metrics)]
    style = {"marker": "o" if len(ep) < 30 else None, "ms": 3}
    left.plot(ep, [_nan(m.get("loss")) for m in metrics], color="C3", **style)
    left.set(xlabel="epoch", ylabel="training loss", title="Loss")
    for key, label, color in (("train_acc", "train", "C0"), ("test_acc", "test", "C1")):
        right.plot(ep, [_nan(m.get(key)) for m in metrics], label=label, color=color, **style)
    right.set(xlabel="epoch", ylabel=ACC_LABEL, title="Accuracy")
    right.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):  # epochs are whole numbers
        if len(ep) <= 12:
            ax.set_xticks(ep)
            ax.set_xlim(min(ep) - 0.5, max(ep) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _plot_criticality(crit: dict, path: Path) -> Path:
    fig = _figure(figsize=(6.5, 4))
    ax = fig.subplots()
    rows = crit["stages"]
    vals = [r["C"] or 0.0 for r in rows]
    bars = ax.bar([r["name"] for r in rows], vals, color=[f"C{k}" for k in range(len(rows))])
    _bar_labels(ax, bars, lambda v: f"{v:.2f}")
    order = " > ".join(f"stage{o}" for o in crit["order"])
    ax.set_ylabel("criticality C_k")
    ax.set_title(f"Stagewise criticality (most to least: {order or 'n/a'})", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def _plot_pi(pi: dict, path: Path) -> Path:
    """Where secure inference spends its time and bytes, per kind of operation."""
    kinds = list(pi["per_kind"])
    fig = _figure(figsize=(9, 3.8))
    left, right = fig.subplots(1, 2)
    colors = [f"C{k}" for k in range(len(kinds))]
    t = [pi["per_kind"][k]["time_s"] or 0.0 for k in kinds]
    b = [(pi["per_kind"][k]["bytes"] or 0) / 1e6 for k in kinds]
    _bar_labels(left, left.bar(kinds, t, color=colors), lambda v: f"{v:.3g}")
    _bar_labels(right, right.bar(kinds, b, color=colors), lambda v: f"{v:.3g}")
    left.set(ylabel="time (s)", title=f"Online time per kind ({pi.get('protocol') or '?'})")
    right.set(ylabel="communication (MB)", title="Bytes per kind (sent + received)")
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- report


@dataclass
class ReportResult:
    """Where the report went, which plots it has, and what was left out and why."""

    run: Path
    out: Path
    markdown: Path
    plots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict of what was written (`report --json`)."""
        return {"run": str(self.run), "out": str(self.out), "markdown": str(self.markdown),
                "plots": {k: str(v) for k, v in self.plots.items()}, "notes": self.notes,
                "summary": self.summary}


def _md_table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in [headers, sep, *rows])


def _pct(v: Any) -> str:
    return "n/a" if _num(v) is None else f"{v:.2f}%"


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if _num(v) is None else format(v, spec)


def _int(v: Any) -> str:
    return "n/a" if _num(v) is None else f"{int(v):,}"


def _network_md(run: Run) -> str:
    spec, cfg = run.spec, run.config
    data = cfg.get("data", {}) if isinstance(cfg.get("data"), dict) else {}
    method = cfg.get("method") if isinstance(cfg.get("method"), dict) else {}
    recipe = cfg.get("recipe") if isinstance(cfg.get("recipe"), dict) else {}
    stem = (f"3x3 conv, {spec.stem.width} channels, stride {spec.stem.stride}"
            + (", BN + ReLU" if spec.stem.bn_relu else " (bare: pre-activation)"))
    facts = [["architecture", f"`{spec.describe()}`"], ["family", spec.family],
             ["data set", f"{data.get('dataset', '?')} ({spec.input_size}x{spec.input_size}, "
                          f"{spec.num_classes} classes)"],
             ["stem", stem], ["stage multipliers", " x ".join(f"{m:g}" for m in spec.multipliers)],
             ["changed ReLU slots", str(len(spec.slots))],
             ["method", ", ".join(f"{k}={v}" for k, v in method.items() if not isinstance(v, dict | list))
              or "baseline"],
             ["teacher (KD)", str(cfg.get("teacher") or "none")],
             ["recipe", ", ".join(f"{k} {recipe[k]}" for k in ("epochs", "batch_size", "lr",
                                                              "weight_decay", "optimizer") if k in recipe)],
             ["seed", str(cfg.get("seed", "?"))]]
    stages = [[f"stage{k}", s.block, s.depth, s.width, s.stride]
              for k, s in enumerate(spec.stages, 1)]
    return "\n\n".join([_md_table(["network", ""], facts, "ll"),
                        _md_table(["stage", "block", "depth", "width", "stride"], stages)])


def _counts_md(c: Counts) -> str:
    total = max(c.relus, 1)
    rows = [[s.name, f"{s.relus:,}", f"{100 * s.relus / total:.1f}%", f"{s.macs:,}", f"{s.params:,}"]
            for s in (*c.stages, c.head)]
    rows.append(["**total**", f"**{c.relus:,}**", "100.0%", f"**{c.macs:,}**", f"**{c.params:,}**"])
    return (_md_table(["stage", "ReLUs", "share", "MACs", "params"], rows)
            + f"\n\nStem ReLUs (included in stage1): {c.stem_relus:,}; without the stem: "
            f"{c.relus - c.stem_relus:,} (SNL's convention).")


def _normalized_md(norm: dict[str, list[float]]) -> str:
    rows = [[f"stage{k + 1}", f"{r:.2f}", f"{f:.2f}", f"{m:.2f}"] for k, (r, f, m)
            in enumerate(zip(norm["relus"], norm["flops_model"], norm["macs_exact"], strict=True))]
    return ("ReLUs and MACs without the stem, scaled so that stage1 = 64; FLOPs (model) is the "
            "paper's idealized per-stage formula (Table 2).\n\n"
            + _md_table(["stage", "ReLUs", "FLOPs (model)", "MACs (exact)"], rows))


def _results_md(results: dict, metrics: list[dict]) -> str:
    if not results:
        return "No results.json yet (training unfinished?)."
    wall = _num(results.get("wall_time_s"))
    rows = [["final accuracy (last epoch)", f"**{_pct(results.get('final_acc'))}**"],
            ["best accuracy (information only)", _pct(results.get("best_acc"))],
            ["epochs", str(results.get("epochs", len(metrics)))],
            ["stopped early", str(results.get("stopped_early", False))],
            ["wall time", "n/a" if wall is None else f"{wall:.1f} s"],
            ["ReLUs / MACs / params", " / ".join(_int(results.get(k)) for k in ("relus", "macs", "params"))]]
    return _md_table(["result", ""], rows, "ll")


def _training_md(metrics: list[dict], keep: int = 10) -> str:
    shown = metrics[-keep:]
    rows = [[m.get("epoch", "?"), _fmt(m.get("loss"), ".4f"), _pct(m.get("train_acc")),
             _pct(m.get("test_acc")), _fmt(m.get("lr"), ".4g"), _fmt(m.get("images_per_s"), ",.0f")]
            for m in shown]
    head = "" if len(shown) == len(metrics) else f"Last {keep} of {len(metrics)} epochs.\n\n"
    return head + _md_table(["epoch", "loss", "train acc", "test acc", "lr", "images/s"], rows)


def _criticality_md(crit: dict) -> str:
    rows = [[r["name"], _int(r["relus"]), _pct(r["acc"]), _pct(r["kd_acc"]),
             "n/a" if r["C"] is None else f"{r['C']:.3f}"] for r in crit["stages"]]
    order = ", ".join(map(str, crit["order"])) or "n/a"
    return (_md_table(["stage", "ReLUs", "acc", "KD acc", "C_k"], rows)
            + f"\n\nCriticality order (most to least critical stage): **{order}**")


def _pi_md(pi: dict) -> str:
    def mb(v: Any) -> str:
        return "n/a" if _num(v) is None else f"{v / 1e6:,.3f} MB"

    lat = pi["latency_s"]
    text = _md_table(["protocol", "online latency", "sent", "received", "total (both ways)"],
                     [[pi["protocol"] or "?", "n/a" if lat is None else f"{lat:.4g} s",
                       mb(pi["bytes_sent"]), mb(pi["bytes_recv"]), mb(pi["bytes"])]])
    if pi["per_kind"]:
        rows = [[k, "n/a" if v["time_s"] is None else f"{v['time_s']:.4g} s", mb(v["bytes"])]
                for k, v in pi["per_kind"].items()]
        text += "\n\nPer kind of operation:\n\n" + _md_table(["kind", "time", "bytes"], rows)
    return text


def _method_md(run: Run) -> tuple[str | None, list[str]]:
    """Scalar facts from a method summary in the run directory (snl.json, reduce.json)."""
    parts, notes = [], []
    for name in (SNL_JSON, REDUCE_JSON):
        data, bad = read_optional(run.path / name)
        notes += [bad] if bad else []
        if isinstance(data, dict):
            rows = [[k, str(v)] for k, v in data.items() if isinstance(v, str | int | float | bool)][:20]
            parts.append(f"From `{name}`:\n\n" + _md_table(["key", "value"], rows, "ll"))
    return ("\n\n".join(parts) or None), notes


def _image(title: str, name: str) -> str:
    return f"![{title}]({name})"


def report(run: str | os.PathLike | Run, out: str | os.PathLike | None = None) -> ReportResult:
    """Plots and a Markdown summary of one run, in OUT (default RUN/report).

    Always: network, exact counts per stage, ReLU distribution, Table 8 normalization,
    results. When the files exist: training curves (metrics.jsonl), criticality
    (criticality.json), secure-inference cost (pi.json), method summary (snl.json).
    """
    run = run if isinstance(run, Run) else load_run(run)
    out_dir = Path(out) if out is not None else run.path / "report"
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder for the report")
    res = ReportResult(run.path, out_dir, out_dir / "report.md")
    c = count(run.spec)
    results, metrics = run.results, _metrics(run, res)
    data = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    res.summary = {"arch": run.spec.describe(), "dataset": data.get("dataset"),
                   "final_acc": results.get("final_acc"), "best_acc": results.get("best_acc"),
                   "relus": c.relus, "macs": c.macs, "params": c.params, "stem_relus": c.stem_relus}
    md = [f"# Report: {run.spec.describe()}", f"Run directory: `{run.path}`",
          "## Network", _network_md(run),
          "## Counts", "Exact, from the spec: stage1 includes the stem; MACs are multiply-"
          "accumulates of conv and linear layers (a \"FLOP\" in the paper's tables).",
          _counts_md(c), _image("Stagewise ReLU distribution", _add_plot(
              res, "relu_distribution", lambda p: _plot_relu_share(c, p)))]
    if _num(results.get("relus")) not in (None, c.relus):
        res.notes.append(f"results.json says {results['relus']:,} ReLUs, the spec counts {c.relus:,}")
    md += ["## Stagewise ReLUs and MACs (Table 8 normalization)", *_normalized_section(run, res)]
    md += ["## Results", _results_md(results, metrics)]
    md += ["## Training", *_training_section(metrics, res)]
    md += _optional_sections(run, res)
    if res.notes:
        md += ["## Notes", "\n".join(f"- {n}" for n in res.notes)]
    io.write_text(res.markdown, "\n\n".join(md) + "\n")
    return res


def _not_what_it_says(data: Any, summary: Any, path: Path, maker: str) -> str | None:
    """A note for a file that is valid JSON but not the result `maker` writes (so the report
    names the real problem instead of calling it missing)."""
    if data is None or summary:
        return None
    return (f"{path}: present but not a {maker} result (a {type(data).__name__} without its "
            "fields); left out, rerun the command to rewrite it")


def _metrics(run: Run, res: ReportResult) -> list[dict]:
    try:
        return [m for m in run.metrics if isinstance(m, dict)]
    except CheckpointError:  # a broken line
        res.notes.append(f"{run.path / 'metrics.jsonl'}: broken line(s); no training curves")
        return []


def _add_plot(res: ReportResult, name: str, draw: Callable[[Path], Path]) -> str:
    path = res.out / f"{name}.png"
    draw(path)
    res.plots[name] = path
    return path.name


def _normalized_section(run: Run, res: ReportResult) -> list[str]:
    try:
        norm = normalized_stagewise(run.spec)
    except (ZeroDivisionError, IndexError):
        res.notes.append("Table 8 normalization needs ReLUs and MACs in stage1 (beyond the stem)")
        return ["Not available: stage1 has no ReLUs or MACs beyond the stem."]
    png = _add_plot(res, "stagewise_normalized", lambda p: _plot_normalized(norm, p))
    return [_normalized_md(norm), _image("Normalized stagewise ReLUs and MACs", png)]


def _training_section(metrics: list[dict], res: ReportResult) -> list[str]:
    if not metrics:
        res.notes.append("no metrics.jsonl: no training curves")
        return ["No per-epoch metrics (metrics.jsonl) in this run."]
    png = _add_plot(res, "training", lambda p: _plot_training(metrics, p))
    return [_training_md(metrics), _image("Training curves", png)]


def _optional_sections(run: Run, res: ReportResult) -> list[str]:
    md: list[str] = []
    data, bad = read_optional(run.path / CRITICALITY_JSON)
    crit = criticality_summary(data)
    bad = bad or _not_what_it_says(data, crit, run.path / CRITICALITY_JSON, "criticality")
    if crit:
        png = _add_plot(res, "criticality", lambda p: _plot_criticality(crit, p))
        md += ["## Stagewise criticality", _criticality_md(crit), _image("Criticality", png)]
        res.summary["criticality_order"] = crit["order"]
    else:
        res.notes.append(bad or "no criticality.json (`deepreshape criticality` adds C_k per stage)")
    data, bad = read_optional(run.path / PI_JSON)
    pi = pi_summary(data)
    bad = bad or _not_what_it_says(data, pi, run.path / PI_JSON, "deepreshape pi")
    if pi:
        md += ["## Secure inference", _pi_md(pi)]
        res.summary["pi"] = {k: pi[k] for k in ("protocol", "latency_s", "bytes")}
        if pi["per_kind"]:
            md.append(_image("Secure inference cost per kind", _add_plot(
                res, "pi_breakdown", lambda p: _plot_pi(pi, p))))
    else:
        res.notes.append(bad or "no pi.json (`deepreshape pi` measures latency and communication)")
    method, notes = _method_md(run)
    res.notes += notes
    if method:
        md += ["## Method summary", method]
    return md
