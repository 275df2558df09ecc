"""Pareto plots across runs: accuracy against ReLUs, MACs, latency or bytes, frontier marked.

Reads run directories only (`config.json`, `results.json`, and for latency and bytes one
secure-inference result per run over one (protocol, link): runs measured over another link
are skipped, never mixed in). Every point carries a number, a short display name and its
method (baseline, DeepReShape, criticality probe, DeepReDuce, ReLU-reuse, SNL, a plugin's:
one colour and marker each, from `deepreshape.methods.METHODS`); the key beside the plot
lists them. Criticality probes are drawn apart and never on the frontier: they measure
stages, they are not designs. Writes the PNG and the same table as CSV and JSON, atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from deepreshape import fileio
from deepreshape.errors import UsageError
from deepreshape.methods import METHODS
from deepreshape.pi.records import parse_link, pick
from deepreshape.reports.readers import (
    method_kind,
    num,
    pi_results,
    protocol_of,
    run_dataset,
    run_name,
)
from deepreshape.rundir import schema
from deepreshape.rundir.run import Run, load_run

PEER_SETS = ("cifar100", "cifar10", "tinyimagenet")
PEER_CHOICES = ("auto", *PEER_SETS, "none")
ACC_LABEL = "top-1 accuracy (%)"
OWN_CONVENTION = "stem counted"  # deepreshape counts every ReLU (stage1 includes the stem)
PROBE = METHODS.get("criticality").display  # probes are drawn apart, never on the frontier


@dataclass(frozen=True)
class XAxis:
    """One choice of --x: where its value comes from and how it is plotted."""

    name: str
    label: str  # axis label, with the unit plotted
    unit: str  # unit of the stored value (tables, CSV, JSON)
    scale: float = 1.0  # stored value / scale = plotted value


_PI_FILE = schema.PI.file("<protocol>", "<link>").name
X_AXES: dict[str, XAxis] = {
    "relus": XAxis("relus", "ReLUs (count)", f"ReLUs, {schema.RESULTS.name}"),
    "macs": XAxis("macs", "MACs", f"multiply-accumulates, {schema.RESULTS.name}"),
    "latency": XAxis("latency", "online latency (s)",
                     f"seconds per inference, {_PI_FILE} latency_s"),
    "bytes": XAxis("bytes", "communication (MB)",
                   f"bytes per inference, sent + received, {_PI_FILE}", scale=1e6),
}
PI_AXES = ("latency", "bytes")


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
        for res in sorted(p.rglob(schema.RESULTS.name)):
            d = res.parent
            if schema.CONFIG.exists(d):
                found.setdefault(d.resolve(), d)
    if not found:
        raise UsageError(f"no run directories ({schema.CONFIG.name} + {schema.RESULTS.name}) under "
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



# --------------------------------------------------------------------------- runs


@dataclass
class ParetoRow:
    """One run on the plot: its number in the key, where it lives (`run`, `label` relative to
    the folder it was found under), its display `name`, exact `arch`, method, cost `x`,
    final accuracy and whether it is on the frontier."""

    run: str
    label: str
    name: str
    arch: str
    dataset: str
    method: str
    x: int | float
    acc: float
    on_frontier: bool = False
    number: int = 0

    @property
    def probe(self) -> bool:
        """A criticality probe (kept apart from designs, never on the frontier)."""
        return self.method == PROBE


@dataclass
class ParetoResult:
    """Points, frontier, peers, the secure-inference result plotted, and the files written."""

    x: str
    rows: list[ParetoRow]
    peers_dataset: str | None
    peers: list[PeerSeries]
    skipped: list[tuple[str, str]]
    notes: list[str]
    png: Path
    csv: Path
    json: Path
    protocol: str | None = None  # latency / bytes: the one protocol and link plotted
    link: str | None = None

    @property
    def frontier(self) -> list[ParetoRow]:
        """The frontier runs, cheapest first."""
        return sorted((r for r in self.rows if r.on_frontier), key=lambda r: (r.x, -r.acc))

    @property
    def x_label(self) -> str:
        """The axis label, naming the link and protocol for latency and bytes."""
        label = X_AXES[self.x].label
        if self.link is None:
            return label
        name, _, unit = label.partition(" (")
        return f"{name} over {self.link}, {self.protocol} ({unit}"

    @property
    def datasets(self) -> list[str]:
        """The runs' data sets."""
        return sorted({r.dataset for r in self.rows})

    @property
    def peers_shown(self) -> bool:
        """Peers' points are drawn (ReLU axis only)."""
        return bool(self.peers) and self.x == "relus"

    @property
    def cross_dataset(self) -> bool:
        """Runs on one data set drawn against peers' points on another."""
        return self.peers_shown and self.datasets != [self.peers_dataset]

    def to_dict(self) -> dict:
        """A JSON-ready dict of the table, frontier, peers and files (pareto's --json and OUT.json)."""
        axis = X_AXES[self.x]
        return {
            "x": self.x, "x_label": self.x_label, "x_unit": axis.unit,
            "y": "final_acc", "y_label": ACC_LABEL, "relu_convention": OWN_CONVENTION,
            "protocol": self.protocol, "link": self.link,
            "runs": [asdict(r) for r in self.rows],
            "frontier": [r.run for r in self.frontier],
            "skipped": [{"run": r, "reason": why} for r, why in self.skipped],
            "peers": None if self.peers_dataset is None else {
                "dataset": self.peers_dataset, "shown": self.peers_shown,
                "cross_dataset": self.cross_dataset,
                "methods": [asdict(s) for s in self.peers]},
            "notes": self.notes,
            "files": {"png": str(self.png), "csv": str(self.csv), "json": str(self.json)},
        }


def _labels(paths: list[Path], roots: Sequence[Path]) -> list[str]:
    """Each run's path relative to the folder it was found under (the folder's own name
    for a run given directly), so labels carry no run-root prefix; runs found under two
    folders at the same relative path keep the folder's name in front."""
    roots = sorted({Path(r).resolve() for r in roots}, key=lambda r: -len(r.parts))
    labels, owners = [], []
    for p in paths:
        rp = p.resolve()
        root = next((r for r in roots if rp == r or r in rp.parents), rp.parent)
        labels.append(rp.name if rp == root else str(rp.relative_to(root)))
        owners.append(root)
    twice = {lab for lab, n in Counter(labels).items() if n > 1}
    return [f"{o.name}/{lab}" if lab in twice else lab
            for lab, o in zip(labels, owners, strict=True)]


def _load(paths: list[Path], labels: list[str]
          ) -> tuple[list[tuple[Run, str, float]], list[tuple[str, str]]]:
    """Readable, finished runs with their label and final accuracy; the rest skipped."""
    ok, skipped = [], []
    for path, label in zip(paths, labels, strict=True):
        try:
            run = load_run(path)
            results = run.results
        except (UsageError, KeyError, TypeError) as e:  # CheckpointError, or a spec from elsewhere
            why = str(e).partition(": ")[2] if str(e).startswith(str(path)) else str(e)
            skipped.append((str(path), why if isinstance(e, UsageError) else "unreadable spec"))
            continue
        acc = num(results.get("final_acc")) if isinstance(results, dict) else None
        if acc is None:
            skipped.append((str(path), f"no final_acc in {schema.RESULTS.name} (unfinished run?)"))
            continue
        ok.append((run, label, acc))
    return ok, skipped


def _choose_pi(found: list[dict[str, dict]], protocol: str | None, link: str | None
               ) -> tuple[str | None, list[str]]:
    """The one ``<protocol>-<link>`` to plot: the one asked for, else the one most runs have
    (ties: cheetah, then loopback). A note names the results left out."""
    have = Counter(k for results in found for k in results)
    cands = pick(have, protocol, link)
    if not cands:
        return None, []
    key = max(sorted(cands), key=lambda k: (have[k], k.startswith("cheetah-"),
                                            k.endswith("-loopback")))
    others = [f"{k} ({have[k]} run{'s' * (have[k] > 1)})" for k in sorted(have) if k != key]
    notes = [f"secure-inference results over other links or protocols left out: "
             f"{', '.join(others)} (choose with --link / --protocol)"] if others else []
    return key, notes


def _collect(loaded: list[tuple[Run, str, float]], x: str, key: str | None, want: str,
             pis: dict[Path, tuple[dict[str, dict], list[str]]]
             ) -> tuple[list[ParetoRow], list[tuple[str, str]], list[str]]:
    rows, skipped, notes = [], [], []
    for run, label, acc in loaded:
        if x in PI_AXES:
            results, bad = pis[run.path]
            notes += bad
            s = results.get(key) if key else None
            value = None if s is None else s["latency_s" if x == "latency" else "bytes"]
            why = (f"no secure-inference result {want}" if s is None
                   else f"its {want} result has no {'latency_s' if x == 'latency' else 'bytes'}")
        else:
            value, why = num(run.results.get(x)), f"no {x} in {schema.RESULTS.name}"
        if value is None:
            skipped.append((str(run.path), why))
            continue
        rows.append(ParetoRow(str(run.path), label, run_name(run),
                              str(run.results.get("arch", run.spec.describe())),
                              str(run.results.get("dataset") or run_dataset(run)),
                              method_kind(run), value, acc))
    return rows, skipped, notes


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


def skipped_note(skipped: list[tuple[str, str]], total: int, labels: dict[str, str],
                 show: int = 3) -> str | None:
    """One line for every skipped run: how many, grouped by reason, a few names each."""
    if not skipped:
        return None
    by_reason: dict[str, list[str]] = {}
    for run, why in skipped:
        by_reason.setdefault(why, []).append(labels.get(run, run))
    parts = []
    for why, names in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        more = f", +{len(names) - show} more" if len(names) > show else ""
        parts.append(f"{why} ({len(names)}: {', '.join(names[:show])}{more})")
    return f"skipped {len(skipped)} of {total} runs: " + "; ".join(parts)


def _out_paths(out: str | os.PathLike) -> tuple[Path, Path, Path]:
    png = Path(out)
    if png.is_dir():
        png = png / "pareto.png"
    if png.suffix.lower() != ".png":
        raise UsageError(f"--out must name a .png file (or a folder), got {str(out)!r}")
    return png, png.with_suffix(".csv"), png.with_suffix(".json")


def pareto(runs: Sequence[str | os.PathLike], x: str = "relus", peers: str = "auto",
           out: str | os.PathLike = "pareto.png", link: str | None = None,
           protocol: str | None = None) -> ParetoResult:
    """Accuracy against ReLUs, MACs, latency or bytes for many runs, frontier highlighted.

    runs: run directories or folders holding them (searched recursively). For latency and
    bytes one secure-inference result per run is plotted, all over the same `link` and
    `protocol` (default: the pair most runs have); runs without it are skipped with a note,
    never mixed in. Peers' published points are drawn for --x relus. Writes OUT (PNG) and
    the same table as OUT.csv and OUT.json.
    """
    runs = [runs] if isinstance(runs, str | os.PathLike) else runs
    key = str(x).strip().lower()
    if key not in X_AXES:
        raise UsageError(f"unknown --x {x!r}; valid: {', '.join(X_AXES)}")
    if (link or protocol) and key not in PI_AXES:
        raise UsageError(f"--link and --protocol choose a secure-inference result: they go with "
                         f"--x latency or --x bytes, not --x {key}")
    link = parse_link(link) if link else None
    protocol = str(protocol).strip().lower() if protocol else None
    png, csv_path, json_path = _out_paths(out)
    paths = find_runs(runs)
    loaded, skipped = _load(paths, labels := _labels(paths, [Path(r) for r in runs]))
    pi_key, notes = None, []
    pis = {r.path: pi_results(r.path) for r, _, _ in loaded} if key in PI_AXES else {}
    if key in PI_AXES:
        pi_key, notes = _choose_pi([found for found, _ in pis.values()], protocol, link)
    want = (f"over {pi_key.partition('-')[2]} ({protocol_of(pi_key)})" if pi_key else
            f"over {link or 'any link'}" + (f" ({protocol})" if protocol else ""))
    rows, more, bad = _collect(loaded, key, pi_key, want, pis)
    skipped += more
    notes += bad
    if not rows:
        why = "; ".join(sorted({w for _, w in skipped}))
        have = sorted({k for found, _ in pis.values() for k in found})
        measured = f"; measured: {', '.join(have)}" if have else ""
        raise UsageError(f"none of the {len(skipped)} runs found has what --x {key} needs "
                         f"({why}{measured})")
    _mark_frontier(rows)
    dataset, peer_notes = _resolve_peers(peers, rows, key)
    notes = peer_notes + notes
    note = skipped_note(skipped, len(paths), dict(zip(map(str, paths), labels, strict=True)))
    notes += [note] if note else []
    result = ParetoResult(key, rows, dataset, load_peers(dataset) if dataset else [], skipped,
                          notes, png, csv_path, json_path, protocol_of(pi_key) if pi_key else None,
                          pi_key.partition("-")[2] if pi_key else None)
    from deepreshape.reports.paretofigure import draw

    draw(result)
    fileio.write_text(csv_path, _pareto_csv(result))
    fileio.write_json(json_path, result.to_dict())
    return result


def _mark_frontier(rows: list[ParetoRow]) -> None:
    """Number the rows by cost and mark the frontier among designs (probes stay off it)."""
    rows.sort(key=lambda r: (r.x, -r.acc, r.label))
    for i, r in enumerate(rows, 1):
        r.number = i
    designs = [r for r in rows if not r.probe] or rows
    for r, on in zip(designs, pareto_frontier([r.x for r in designs], [r.acc for r in designs]),
                     strict=True):
        r.on_frontier = on


def _pareto_csv(res: ParetoResult) -> str:
    """One row per run (with the protocol and link of latency and bytes), then one per peer
    point (kind = peer; their x is always ReLUs)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "number", "run", "label", "name", "arch", "dataset", "method", res.x,
                "acc", "on_frontier", "protocol", "link", "convention", "source"])
    for r in res.rows:
        w.writerow(["run", r.number, r.run, r.label, r.name, r.arch, r.dataset, r.method, r.x,
                    r.acc, int(r.on_frontier), res.protocol or "", res.link or "", OWN_CONVENTION,
                    ""])
    for s in res.peers if res.peers_shown else []:  # ReLU counts: only under --x relus
        for relus, acc in s.points:
            w.writerow(["peer", "", "", s.method, s.method, s.network, res.peers_dataset, s.method,
                        relus, acc, "", "", "", s.convention, s.source])
    return buf.getvalue()
