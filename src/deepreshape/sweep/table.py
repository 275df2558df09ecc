"""A sweep's results: one row per network it produced, as CSV and JSON, and its plots.

Rows are read from the run directories themselves (results.json, reduce.json, pi.json),
so they agree with what `deepreshape report` and `pareto` show for the same runs. The
Pareto plots come from `deepreshape.reports.runreport.pareto` (with the peers' published points);
a shipped paper sweep also gets its figure with the paper's own numbers, labelled as
published.
"""

from __future__ import annotations

import csv
import io as _io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepreshape import fileio
from deepreshape.errors import UsageError
from deepreshape.reports.readers import criticality_summary, pi_summary
from deepreshape.rundir.schema import read_optional
from deepreshape.sweep.state import SweepState

COLUMNS = ("point", "experiment", "network", "method", "seed", "budget", "relus", "macs", "params",
           "accuracy", "criticality", "latency_s", "bytes", "state", "run")


@dataclass
class SweepReport:
    """What `sweep_report` wrote: the rows and the files."""

    rows: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _results(run: Path) -> dict:
    data, _ = read_optional(run / "results.json")
    return data if isinstance(data, dict) else {}


def _pi(run: Path) -> dict:
    data, _ = read_optional(run / "pi.json")
    return pi_summary(data) or {}


def result_rows(state: SweepState) -> list[dict[str, Any]]:
    """One row per network of the sweep (train, snl, each reduce network; a criticality
    point is one row with its order), in file order."""
    root = state.root
    rows: list[dict[str, Any]] = []
    for r in state.records.values():
        base = {"point": r["id"], "experiment": r["experiment"], "method": r["method"],
                "seed": r["seed"], "state": r["state"], "budget": None, "latency_s": None,
                "bytes": None}
        if r["method"] in ("train", "snl"):
            run = root / r["run"]
            res = _results(run)
            pi = _pi(run)
            rows.append({**base, "network": r["arch"], "relus": res.get("relus"),
                         "macs": res.get("macs"), "params": res.get("params"),
                         "accuracy": res.get("final_acc"), "budget": r["settings"].get("budget"),
                         "latency_s": pi.get("latency_s"), "bytes": pi.get("bytes"), "run": r["run"]})
        elif r["method"] == "reduce":
            data, _ = read_optional(root / r["run"] / "reduce.json")
            for n in (data or {}).get("networks", []):
                if n.get("baseline"):
                    continue
                run = Path(n["run"]) if n.get("run") else None
                rel = str(run.relative_to(root)) if run and run.is_relative_to(root) else n.get("run")
                rows.append({**base, "network": n.get("arch"), "relus": n.get("relus"),
                             "macs": n.get("macs"), "params": n.get("params"),
                             "accuracy": n.get("accuracy"), "run": rel})
        elif r["method"] == "criticality":  # one row per stage-only network (KD accuracy)
            data, _ = read_optional(root / r["run"] / "criticality.json")
            crit = criticality_summary(data) or {"stages": [], "order": []}
            for k, s in enumerate(crit["stages"], 1):
                rows.append({**base, "network": f"{r['arch']} {s['name']} only", "relus": s["relus"],
                             "macs": None, "params": None, "accuracy": s["kd_acc"],
                             "criticality": s["C"], "order": crit["order"],
                             "run": f"{r['run']}/stage{k}-kd"})
    return rows


def _csv(rows: list[dict]) -> str:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
    return buf.getvalue()


def sweep_report(root: str | Path, plots: bool = True) -> SweepReport:
    """Write ROOT/results.csv, ROOT/results.json and the Pareto plots of a sweep root."""
    from deepreshape.reports import pareto

    state = SweepState.read(root)
    root = state.root
    rows = result_rows(state)
    rep = SweepReport(rows)
    rep.files.append(fileio.write_text(root / "results.csv", _csv(rows)))
    rep.files.append(fileio.write_json(root / "results.json", {"sweep": state.info, "rows": rows}))
    if not plots:
        return rep
    runs = [root / r["run"] for r in rows
            if r["accuracy"] is not None and r.get("run") and r["method"] != "criticality"]
    axes = ["relus", "macs"] + (["latency"] if any(r["latency_s"] is not None for r in rows) else [])
    for x in axes if runs else []:
        try:
            res = pareto(runs, x=x, peers="auto" if x == "relus" else "none",
                         out=root / f"pareto-{x}.png")
            rep.files.append(res.png)
        except UsageError as e:
            rep.notes.append(f"pareto --x {x}: {e}")
    paper = _paper_figure(state, rows)
    if paper is not None:
        rep.files.append(paper)
    return rep


def _paper_figure(state: SweepState, rows: list[dict]) -> Path | None:
    """A shipped paper experiment's figure (or any sweep with published points): our
    accuracy vs ReLUs per experiment and method, beside the paper's published points from
    the sweep file's ``[paper]`` table when it has them."""
    info = state.info
    published = _published(info)
    ours = [r for r in rows if r["accuracy"] is not None and r["relus"]]
    shipped = str(info.get("file", "")).startswith("paper:")
    if not ours or not (published or shipped):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group in dict.fromkeys((r["experiment"], r["method"]) for r in ours):
        pts = sorted((r["relus"], r["accuracy"]) for r in ours if (r["experiment"], r["method"]) == group)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", label=f"{' '.join(group)} (this sweep)")
    for series in published:
        pts = sorted(series["points"])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "x", color="grey",
                label=f"{series['label']} (published: {series.get('source', 'the paper')})")
    ax.set_xscale("log")
    ax.set_xlabel("ReLUs")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{info.get('file')} on {info.get('dataset')}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = state.root / "paper-figure.png"
    fileio.atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)
    return path


def _published(info: dict) -> list[dict]:
    """The published series for the sweep's data set, from sweep.json's copy of ``[paper]``."""
    paper = info.get("paper") or {}
    series = paper.get(info.get("dataset"), [])
    return [s for s in series if isinstance(s, dict) and s.get("points")]


def results_json(root: str | Path) -> dict:
    """ROOT/results.json as written by `sweep_report`."""
    return json.loads((Path(root) / "results.json").read_text())
