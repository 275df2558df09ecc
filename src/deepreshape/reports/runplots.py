"""The figures of a one-run report: ReLU share per stage, Table 8 normalization, training
curves (with an SNL mask phase), criticality and secure-inference cost per kind.

Each function draws one PNG atomically and returns its path; every title names the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepreshape.count import Counts
from deepreshape.reports.figures import bar_labels, figure, log_if_wide, readable_ticks, save, si
from deepreshape.reports.paretoplot import ACC_LABEL
from deepreshape.reports.readers import nan, num


def _titled(fig: Any, who: str, what: str) -> None:
    """Every figure says which run (short name, data set) it shows, then what it shows."""
    fig.suptitle(f"{who}\n{what}", fontsize=10)


def plot_relu_share(c: Counts, who: str, path: Path) -> Path:
    """Share of ReLUs per stage (the paper's Figure 5), the stem's part of stage1 hatched."""
    fig = figure(figsize=(6.5, 4.2))
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
    _titled(fig, who, f"Stagewise ReLU distribution ({c.relus:,} ReLUs)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_normalized(norm: dict[str, list[float]], who: str, path: Path) -> Path:
    """Table 8 as bars: ReLUs, the idealized FLOPs model and exact MACs, stage1 = 64."""
    fig = figure(figsize=(7, 4.2))
    ax = fig.subplots()
    n = len(norm["relus"])
    series = [("relus", "ReLUs (no stem)"), ("flops_model", "FLOPs (Table 2 model)"),
              ("macs_exact", "MACs (exact, no stem)")]
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        pos = [k + (i - 1) * width for k in range(n)]
        bar_labels(ax, ax.bar(pos, norm[key], width, label=label, color=f"C{i}"),
                   lambda v: f"{v:.3g}")
    ax.set_xticks(range(n), [f"stage{k + 1}" for k in range(n)])
    values = [v for k, _ in series for v in norm[k]]
    log_if_wide(ax, values, axis="y")
    if ax.get_yscale() == "linear":
        ax.set_ylim(0, max(values) * 1.3)  # room for the legend above the bars
    ax.set_ylabel("normalized (stage1 = 64)")
    _titled(fig, who, "Stagewise ReLUs and MACs, normalized as in Table 8")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def _epoch_axis(ax: Any, ep: list[int]) -> None:
    """Whole-number epochs, every one ticked when there are few."""
    from matplotlib.ticker import MaxNLocator

    if ep and len(ep) <= 12:
        ax.set_xticks(ep)
        ax.set_xlim(min(ep) - 0.5, max(ep) + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def plot_training(metrics: list[dict], mask: dict | None, who: str, path: Path) -> Path:
    """Loss and accuracy per epoch. For an SNL run the mask phase comes first (its ReLUs
    against the budget, lambda, and its loss and accuracy), then the fine-tune, on one
    epoch axis with the boundary marked."""
    history = [h for h in (mask or {}).get("history", []) if isinstance(h, dict)]
    fig = figure(figsize=(15 if history else 10, 4))
    axes = fig.subplots(1, 3 if history else 2)
    if history:
        _plot_mask_phase(axes[0], history, mask or {})
    left, right = axes[-2], axes[-1]
    phases = [("mask phase", history, "--"), ("", metrics, "-")] if history else [("", metrics, "-")]
    ep_all: list[int] = []
    for phase, rows, ls in phases:
        ep = [len(ep_all) + k + 1 for k in range(len(rows))]
        style = {"marker": "o" if len(metrics) + len(history) < 30 else None, "ms": 3, "ls": ls}
        tag = f" ({phase})" if phase else (" (fine-tune)" if history else "")
        left.plot(ep, [nan(m.get("loss")) for m in rows], color="C3", label=f"loss{tag}", **style)
        for key, label, color in (("train_acc", "train", "C0"), ("test_acc", "test", "C1")):
            right.plot(ep, [nan(m.get(key)) for m in rows], label=f"{label}{tag}", color=color,
                       **style)
        ep_all += ep
    left.set(xlabel="epoch", ylabel="training loss", title="Loss")
    right.set(xlabel="epoch", ylabel=ACC_LABEL, title="Accuracy")
    for ax in (left, right):
        _epoch_axis(ax, ep_all)
        if history:
            ax.axvline(len(history) + 0.5, color="0.4", lw=0.8)
            ax.legend(fontsize=7)
    right.legend(fontsize=7)
    _titled(fig, who, "Training" + (f": SNL mask phase (epochs 1-{len(history)}), then "
                                    "fine-tune with the masks fixed" if history else ""))
    return save(fig, path)


def _plot_mask_phase(ax: Any, history: list[dict], mask: dict) -> None:
    from matplotlib.ticker import FuncFormatter

    ep = [int(h.get("epoch", k + 1)) for k, h in enumerate(history)]
    (relus,) = ax.plot(ep, [nan(h.get("relus")) for h in history], color="C2",
                       marker="o" if len(ep) < 30 else None, ms=3, label="ReLUs above the threshold")
    handles = [relus]
    budget = num(mask.get("budget"))
    if budget is not None:
        handles.append(ax.axhline(budget, color="k", ls="--", lw=1, label=f"budget {si(budget)}"))
    reached = mask.get("budget_reached")
    state = "" if reached is None else ("budget reached" if reached else "budget NOT reached")
    ax.set(xlabel="mask epoch", ylabel="ReLUs",
           title=f"SNL mask phase: {len(ep)} epoch{'s' * (len(ep) != 1)}"
           + (f", {state}" if state else ""))
    readable_ticks(ax, "y")
    lam = [nan(h.get("lambda")) for h in history]
    if any(v == v for v in lam):
        twin = ax.twinx()
        (line,) = twin.plot(ep, lam, color="0.5", lw=1, ls=":", label="lambda (right axis)")
        handles.append(line)
        twin.set_ylabel("lambda (weight of the mask L1)", color="0.4")
        twin.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    ax.legend(handles=handles, fontsize=7, loc="best")
    _epoch_axis(ax, ep)


def plot_criticality(crit: dict, who: str, path: Path) -> Path:
    fig = figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    rows = crit["stages"]
    vals = [r["C"] or 0.0 for r in rows]
    bars = ax.bar([r["name"] for r in rows], vals, color=[f"C{k}" for k in range(len(rows))])
    bar_labels(ax, bars, lambda v: f"{v:.2f}")
    order = " > ".join(f"stage{o}" for o in crit["order"])
    ax.set_ylabel("criticality C_k")
    _titled(fig, who, f"Stagewise criticality (most to least: {order or 'n/a'})")
    ax.grid(True, axis="y", alpha=0.3)
    return save(fig, path)


def pi_headline(pi: dict) -> str:
    """protocol, link and the totals of one secure-inference result, in one line."""
    lat, b = pi.get("latency_s"), pi.get("bytes")
    total = ", ".join(t for t in ("" if lat is None else f"{lat:.3g} s online",
                                  "" if b is None else f"{b / 1e6:,.3g} MB") if t)
    return (f"{pi.get('protocol') or '?'} over {pi.get('link_label') or pi.get('link') or '?'}: "
            f"{total or 'no totals'} per query")


def plot_pi(pi: dict, who: str, path: Path) -> Path:
    """Where secure inference spends its time and bytes, per kind of operation."""
    kinds = list(pi["per_kind"])
    fig = figure(figsize=(9, 4.2))
    left, right = fig.subplots(1, 2)
    colors = [f"C{k}" for k in range(len(kinds))]
    t = [pi["per_kind"][k]["time_s"] or 0.0 for k in kinds]
    b = [(pi["per_kind"][k]["bytes"] or 0) / 1e6 for k in kinds]
    bar_labels(left, left.bar(kinds, t, color=colors), lambda v: f"{v:.3g}")
    bar_labels(right, right.bar(kinds, b, color=colors), lambda v: f"{v:.3g}")
    left.set(ylabel="time (s)", title="Online time per kind")
    right.set(ylabel="communication (MB)", title="Bytes per kind (sent + received)")
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(0, max(ax.get_ylim()[1], 1e-9) * 1.12)  # room for the value labels
    _titled(fig, who, f"Secure inference, {pi_headline(pi)}")
    return save(fig, path)


# --------------------------------------------------------------------------- report
