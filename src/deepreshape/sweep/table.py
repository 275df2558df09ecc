"""A sweep's results: one row per network it produced, as CSV and JSON, and its plots.

Rows are read from the run directories themselves by each point's method (its results,
reduce and criticality summaries, one secure-inference result per protocol and link), so
they agree with what `deepreshape report` and `pareto` show for the same runs. The
Pareto plots come from `deepreshape.reports.runreport.pareto` (with the peers' published points);
a shipped paper sweep also gets its figure with the paper's own numbers, labelled as
published.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepreshape import fileio
from deepreshape.errors import UsageError
from deepreshape.rundir import schema
from deepreshape.sweep.state import SweepState

COLUMNS = ("point", "experiment", "network", "method", "seed", "budget", "relus", "macs", "params",
           "accuracy", "criticality", "latency_s", "bytes", "state", "run")


@dataclass
class SweepReport:
    """What `sweep_report` wrote: the rows and the files."""

    rows: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def result_rows(state: SweepState) -> list[dict[str, Any]]:
    """One row per network of the sweep, in file order: each point's method gives its rows
    (`Method.rows`: train and snl one row with its secure-inference results per (protocol,
    link), each reduce network one, a criticality point one per stage-only network, pi and
    eval none: their numbers are in the row of the run they measured)."""
    from deepreshape.methods import METHODS

    rows: list[dict[str, Any]] = []
    for r in state.records.values():
        base = {"point": r["id"], "experiment": r["experiment"], "method": r["method"],
                "seed": r["seed"], "state": r["state"], "budget": None, "latency_s": None,
                "bytes": None}
        rows.extend(METHODS.get(r["method"]).rows(state.root, r, base))
    return rows


def pi_keys(rows: list[dict]) -> list[str]:
    """Every ``<protocol>-<link>`` measured in `rows` (loopback first, then by name)."""
    keys = {k for r in rows for k in (r.get("pi") or {})}
    return sorted(keys, key=lambda k: (not k.endswith("-loopback"), k))


def columns(rows: list[dict]) -> list[str]:
    """The CSV's columns: `COLUMNS`, then latency and bytes per (protocol, link)."""
    keys = pi_keys(rows)
    return [*COLUMNS, *(f"latency_s[{k}]" for k in keys), *(f"bytes[{k}]" for k in keys)]


def _flat(row: dict) -> dict:
    out = dict(row)
    for k, v in (row.get("pi") or {}).items():
        out[f"latency_s[{k}]"], out[f"bytes[{k}]"] = v.get("latency_s"), v.get("bytes")
    return out


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    cols = columns(rows)
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in map(_flat, rows):
        w.writerow({k: "" if row.get(k) is None else row.get(k) for k in cols})
    return buf.getvalue()


def sweep_report(root: str | Path, plots: bool = True) -> SweepReport:
    """Write ROOT/results.csv, ROOT/results.json and the Pareto plots of a sweep root."""
    from deepreshape.reports import pareto

    state = SweepState.read(root)
    root = state.root
    rows = result_rows(state)
    rep = SweepReport(rows)
    rep.files.append(fileio.write_text(schema.SWEEP_CSV.path(root), _csv(rows)))
    rep.files.append(schema.SWEEP_TABLE.write(root, {"sweep": state.info, "rows": rows}))
    if not plots:
        return rep
    runs = [root / r["run"] for r in rows
            if r["accuracy"] is not None and r.get("run") and r.get("criticality") is None]
    # one latency plot per (protocol, link) measured: runs are compared over one link only
    plots = [("relus", None), ("macs", None)] + [("latency", k) for k in pi_keys(rows)]
    for x, key in plots if runs else []:
        protocol, _, link = key.partition("-") if key else (None, "", None)
        try:
            res = pareto(runs, x=x, peers="auto" if x == "relus" else "none",
                         protocol=protocol, link=link or None,
                         out=root / (f"pareto-{x}-{key}.png" if key else f"pareto-{x}.png"))
            rep.files.append(res.png)
        except UsageError as e:
            rep.notes.append(f"pareto --x {x}{f' ({key})' if key else ''}: {e}")
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
    return schema.SWEEP_TABLE.read(root)
