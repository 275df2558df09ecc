"""Design for what PI costs: DeepReShape's solutions priced, ranked and sized to a budget.

Every solution of `design.design` gets the cost model's predicted Cheetah latency and
bytes over a link (`deepreshape.pi.costs.linkcost.predict`: the shipped loopback model plus the
link's rounds and wire time), and the solutions can be ranked by ReLUs, MACs, latency or
bytes. With a budget (ReLUs, latency, bytes) each solution keeps its equalizing
multipliers/depths and takes the largest base width m whose network meets every bound
(all m in the range are evaluated at once, `deepreshape.design.space`), which answers "the
HRN with about 180K ReLUs that runs fastest". `explore` prices whole BaseCh, StageCh and
HRN spaces the same way. This module sits above `pi` (it prices with the cost model);
`design`, the solver, stays below it and knows nothing of PI costs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepreshape.design import space as ds
from deepreshape.design.solver import DesignResult, Solution, design, validate_order, with_base_width
from deepreshape.errors import UsageError

RANKS = ("relus", "macs", "latency", "bytes")
FAMILIES = ("basech", "stagech", "hrn")
DEFAULT_M = tuple(range(1, 257))
"""Base widths a budget chooses from by default."""

_UNITS = {
    "relus": {"": 1, "k": 1e3, "m": 1e6},
    "latency": {"": 1, "s": 1, "ms": 1e-3, "min": 60},
    "bytes": {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9},
}


def parse_amount(text: str | float, what: str, option: str | None = None,
                 signed: bool = False) -> float:
    """'180k' ReLUs, '30s' / '500ms' / '2min' latency, '50MB' / '1.5GB' bytes -> a number.

    Errors name `option` (default ``--<what>``). Zero and negative amounts are refused
    unless `signed`, for a caller whose own check gives the better message.
    """
    flag = option or f"--{what}"
    m = re.fullmatch(r"\s*(-?[\d,]*\.?\d+)\s*([a-zA-Z]*)\s*", str(text))
    units = _UNITS[what]
    unit = m.group(2).lower() if m else ""
    if not m or unit not in units or (m.group(1).startswith("-") and not signed):
        examples = {"relus": "180000, 180k or 1.5M", "latency": "30s, 500ms or 2min",
                    "bytes": "50MB, 1.5GB or 800kB"}[what]
        raise UsageError(f"{flag} must be an amount like {examples}, got {text!r}")
    value = float(m.group(1).replace(",", "")) * units[unit]
    if value <= 0 and not signed:
        raise UsageError(f"{flag} must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class Budget:
    """Upper bounds a design must meet; None = unbounded."""

    relus: int | None = None
    latency_s: float | None = None
    bytes: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.relus, self.latency_s, self.bytes))

    def bounds(self) -> list[tuple[str, str, float]]:
        """(metric key, option, bound) of each bound that is set."""
        return [(k, o, v) for k, o, v in (("relus", "--relus", self.relus),
                                          ("latency_s", "--latency", self.latency_s),
                                          ("bytes", "--bytes", self.bytes)) if v is not None]

    def describe(self) -> str:
        """E.g. '180,000 ReLUs, 30 s'."""
        return ", ".join(fmt_metric(k, v) for k, _, v in self.bounds())


def fmt_metric(key: str, value: float) -> str:
    """A metric for a sentence: '180,000 ReLUs', '30.00 s', '46.5 MB'."""
    if key == "relus":
        return f"{int(value):,} ReLUs"
    if key == "latency_s":
        return f"{value:.2f} s"
    return f"{value / 1e6:.1f} MB"


@dataclass(frozen=True)
class Priced:
    """A solution with its predicted PI cost over the link."""

    solution: Solution
    latency_s: float
    bytes: float
    prediction: dict[str, Any]

    def metric(self, rank: str) -> float:
        """The value `rank` sorts by."""
        return {"relus": self.solution.relus, "macs": self.solution.macs,
                "latency": self.latency_s, "bytes": self.bytes}[rank]

    def to_dict(self) -> dict[str, Any]:
        """The solution's JSON plus the prediction."""
        p = self.prediction
        return {**self.solution.to_dict(), "base_width": self.solution.spec.stem.width,
                "predicted": {"latency_s": self.latency_s, "bytes": self.bytes,
                              "link": p["target_link"], "link_s": p["link_s"],
                              "rounds": p["rounds"], "heldout_error": p.get("heldout_error"),
                              "relu_share_latency_s": p["relu_share_latency_s"],
                              "source": p["source"], "link_model": p.get("link_model")}}


@dataclass
class CostDesign:
    """`design` priced over a link, ranked, and (with a budget) sized."""

    result: DesignResult
    priced: list[Priced]
    link: str
    rank: str
    budget: Budget
    m_values: tuple[int, ...]  # the base widths a budget chose from
    capped: list[str] = field(default_factory=list)  # solutions whose m hit the range's top
    dropped: list[str] = field(default_factory=list)  # solutions no m of the range fits

    def to_list(self) -> list[dict[str, Any]]:
        """Every priced solution as a JSON-ready dict, in rank order."""
        return [p.to_dict() for p in self.priced]


def _link(link: str | None) -> Any:
    from deepreshape.pi.costs.linkcost import parse_link

    return parse_link(link)


def price(solution: Solution, link: str | None = "loopback", model: Any = None,
          protocol: str = "cheetah") -> Priced:
    """Predicted latency and bytes of one solution (`pi.linkcost.predict`)."""
    from deepreshape.pi.costs import linkcost

    p = linkcost.predict(solution.spec, _link(link), protocol, model)
    return Priced(solution, float(p["latency_s"]), float(p["bytes"]), p)


def design_for_cost(order: Sequence[int] | str, *, budget: Budget | None = None,
                    link: str | None = "loopback", rank: str | None = None,
                    m_values: Sequence[int] = DEFAULT_M, model: Any = None,
                    **kwargs: Any) -> CostDesign:
    """`design.design(order, **kwargs)` priced over `link` and sorted by `rank`.

    With a `budget`, each solution takes the largest base width m in `m_values` whose
    network meets every bound (its multipliers/depths stay the equalizing ones);
    solutions no m fits are dropped, and when none is left a UsageError names the bound
    that stops them. `rank` defaults to latency with a ReLU budget, else ReLUs.
    """
    from deepreshape.pi.costs.costmodel import CostModel, load

    budget = budget or Budget()
    rank = rank or ("latency" if budget.relus is not None else "relus")
    if rank not in RANKS:
        raise UsageError(f"rank must be one of {', '.join(RANKS)}, got {rank!r}")
    ms = tuple(sorted({int(v) for v in m_values}))
    if not ms or ms[0] < 1:
        raise UsageError(f"base widths must be positive integers, got {list(m_values)[:5]}")
    cm = model if isinstance(model, CostModel) else load(model)
    lk = _link(link)
    result = design(order, **kwargs)
    sols, capped, dropped = list(result.solutions), [], []
    if budget:
        sols, capped, dropped = _fit(result, budget, lk, cm, ms)
    priced = [price(s, link, cm) for s in sols]
    priced.sort(key=lambda p: (p.metric(rank), p.solution.relus, p.solution.multipliers,
                               p.solution.depths))
    from deepreshape.pi.costs.linkcost import describe

    return CostDesign(result, priced, describe(lk), rank, budget, ms, capped, dropped)


def _fit(result: DesignResult, budget: Budget, link: Any, model: Any, m_values: tuple[int, ...]
         ) -> tuple[list[Solution], list[str], list[str]]:
    """Each solution at the largest m meeting the budget; UsageError if none can."""
    ms = np.asarray(m_values, dtype=np.int64)
    fitted, capped, dropped, smallest = [], [], [], []
    for sol in result.solutions:
        fam = ds.Family(result.base, sol.depths, result.input_size, result.num_classes)
        space = ds.counts_any(fam, ms, np.tile(sol.multipliers, (len(ms), 1)))
        pred = ds.predict(space, link, model=model)
        metrics = {"relus": space.relus.astype(np.float64), **pred}
        ok = np.ones(len(ms), dtype=bool)
        for key, _, bound in budget.bounds():
            ok &= _meets(metrics[key], bound)
        smallest.append((sol, {k: float(v[0]) for k, v in metrics.items()}))
        if not ok.any():
            dropped.append(sol.name)
            continue
        best = int(ms[np.flatnonzero(ok)[-1]])
        fitted.append(with_base_width(result, sol, best))
        if best == m_values[-1]:
            capped.append(fitted[-1].name)
    if not fitted:
        raise UsageError(_no_fit(result, budget, smallest, m_values[0]))
    return fitted, capped, dropped


def _meets(value: Any, bound: float) -> Any:
    """value <= bound, allowing for the last bits in which array sums and
    `CostModel.predict`'s per-stage sums differ."""
    return value <= bound * (1 + 1e-12)


def _no_fit(result: DesignResult, budget: Budget,
            smallest: list[tuple[Solution, dict[str, float]]], m: int) -> str:
    """Which bound stops every solution at the smallest base width."""
    lower = f" or start --m below {m}" if m > 1 else ""
    for key, opt, bound in budget.bounds():
        sol, vals = min(smallest, key=lambda sv: sv[1][key])  # noqa: B023
        if not _meets(vals[key], bound):
            name = with_base_width(result, sol, m).name
            return (f"no solution meets {opt} {fmt_metric(key, bound)}: the lowest, at base "
                    f"width m={m}, is {name} with {fmt_metric(key, vals[key])}; raise {opt}{lower}")
    opts = " and ".join(o for _, o, _ in budget.bounds())
    return (f"no solution meets {opts} together ({budget.describe()}) at any base width from "
            f"m={m}, though each bound alone can be met; relax one of them")


# --------------------------------------------------------------------------- explore


@dataclass
class Explored:
    """A priced design space: one row per network (arrays), families side by side."""

    family: np.ndarray  # 'basech' | 'stagech' | 'hrn'
    m: np.ndarray
    multipliers: np.ndarray  # (n, D-1)
    relus: np.ndarray
    macs: np.ndarray
    latency_s: np.ndarray
    bytes: np.ndarray
    model_order: np.ndarray  # Algorithm 1's model follows the order
    exact_order: np.ndarray  # the exact stage counts follow the order
    order: tuple[int, ...]
    depths: tuple[int, ...]
    input_size: int
    num_classes: int
    link: str
    seconds: float

    def __len__(self) -> int:
        return len(self.m)

    def name(self, i: int) -> str:
        """The zoo name of network `i` (resnet18-m16-3x3x3x, hrn-5x7x2x-m32, ...)."""
        return _family(str(self.family[i]), self.depths, self.input_size, self.num_classes
                       ).spec(int(self.m[i]), self.multipliers[i]).name

    def envelope(self) -> np.ndarray:
        """Rows no other row beats at equal or more ReLUs: the fastest network for its ReLU
        count (lower envelope of latency against ReLUs), by increasing ReLUs."""
        idx = np.lexsort((self.latency_s, -self.relus))  # most ReLUs first, fastest first
        lat = self.latency_s[idx]
        best = np.minimum.accumulate(lat)
        keep = np.ones(len(idx), dtype=bool)
        keep[1:] = lat[1:] <= best[:-1]  # ties: neither is faster
        return idx[keep][::-1]

    def fastest(self, bins: int) -> list[tuple[int, int, dict[str, int]]]:
        """Per log-spaced ReLU bin (lo, hi): the fastest row of each family in it."""
        lo, hi = float(self.relus.min()), float(self.relus.max())
        edges = np.unique(np.geomspace(lo, hi * (1 + 1e-9), bins + 1).round().astype(np.int64))
        where = np.searchsorted(edges, self.relus, side="right") - 1
        out = []
        for b in range(len(edges) - 1):
            rows = np.flatnonzero(where == b)
            if len(rows):
                best = {k: int(rows[self.family[rows] == k][np.argmin(
                    self.latency_s[rows[self.family[rows] == k]])])
                    for k in FAMILIES if (self.family[rows] == k).any()}
                out.append((int(edges[b]), int(edges[b + 1]), best))
        return out

    def nearest(self, relus: int, family: str, max_m: int | None = None) -> int:
        """The row of `family` (with base width at most `max_m`) whose ReLUs are nearest
        `relus`: an iso-ReLU partner for a network of that count."""
        ok = (self.family == family) & (self.m <= (max_m or self.m.max()))
        rows = np.flatnonzero(ok)
        if not len(rows):
            raise UsageError(f"no {family} network in this design space"
                             + (f" with m <= {max_m}" if max_m else ""))
        return int(rows[np.argmin(np.abs(self.relus[rows] - relus))])

    def to_list(self, rows: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Rows as JSON-ready dicts (all by default)."""
        rows = range(len(self)) if rows is None else rows
        return [{"family": str(self.family[i]), "name": self.name(i), "base_width": int(self.m[i]),
                 "multipliers": [int(v) for v in self.multipliers[i]], "relus": int(self.relus[i]),
                 "macs": int(self.macs[i]), "latency_s": float(self.latency_s[i]),
                 "bytes": float(self.bytes[i]), "model_order": bool(self.model_order[i]),
                 "exact_order": bool(self.exact_order[i])} for i in rows]


def _family(kind: str, depths: tuple[int, ...], size: int, classes: int) -> ds.Family:
    return ds.Family("hrn-2x2x2x" if kind == "hrn" else "resnet18", depths, size, classes)


def explore(m_values: Sequence[int], mult_values: Sequence[int], *,
            families: Sequence[str] = FAMILIES, order: Sequence[int] | str = (3, 2, 4, 1),
            depths: Sequence[int] = (2, 2, 2, 2), input_size: int = 32, num_classes: int = 100,
            link: str | None = "loopback", model: Any = None) -> Explored:
    """Price the BaseCh (m), StageCh (m, one multiplier; 2 is BaseCh) and HRN (m, one
    multiplier per stage, not all equal) networks of ResNet18-style `depths` over `m_values` x `mult_values`.

    Each row: exact ReLUs and MACs, predicted latency and bytes over `link`, and whether
    Algorithm 1's model and the exact stage counts follow `order`.
    """
    from deepreshape.pi.costs.costmodel import CostModel, load

    t0 = time.perf_counter()
    order = validate_order(order)
    depths = tuple(int(v) for v in depths)
    if len(order) != len(depths):
        raise UsageError(f"order {','.join(map(str, order))} has {len(order)} stages, the depths "
                         f"{','.join(map(str, depths))} {len(depths)}")
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise UsageError(f"families must be among {', '.join(FAMILIES)}, got {', '.join(bad)}")
    cm = model if isinstance(model, CostModel) else load(model)
    lk = _link(link)
    d = len(depths)
    m_values = np.asarray(sorted(set(m_values)), dtype=np.int64)
    mults = np.asarray(sorted(set(mult_values)), dtype=np.int64)
    parts = []
    for kind in dict.fromkeys(families):
        if kind == "basech":
            pts = np.concatenate([m_values[:, None], np.full((len(m_values), d - 1), 2)], axis=1)
        elif kind == "stagech":  # multiplier 2 everywhere is BaseCh
            g = ds.grid(m_values, mults[mults != 2] if "basech" in families else mults)
            pts = np.concatenate([g[:, :1], np.repeat(g[:, 1:], d - 1, axis=1)], axis=1)
        else:  # heterogeneous: all-equal multipliers are StageCh (BaseCh at 2)
            pts = ds.grid(m_values, *([mults] * (d - 1)))
            pts = pts[(pts[:, 1:] != pts[:, 1:2]).any(axis=1)] if d > 2 else pts
        if len(pts) > 5_000_000:
            raise UsageError(f"{kind}: {len(pts):,} networks; narrow --m or --mult")
        space = ds.counts_any(_family(kind, depths, input_size, num_classes), pts[:, 0], pts[:, 1:])
        pred = ds.predict(space, lk, model=cm)
        parts.append((kind, space, pred,
                      ds.model_order(order, ds.model_stage_relus(depths, space.multipliers)),
                      ds.model_order(order, space.stage_relus)))
    from deepreshape.pi.costs.linkcost import describe

    cat = np.concatenate
    return Explored(
        family=cat([np.full(len(s), k) for k, s, *_ in parts]),
        m=cat([s.m for _, s, *_ in parts]), multipliers=cat([s.multipliers for _, s, *_ in parts]),
        relus=cat([s.relus for _, s, *_ in parts]), macs=cat([s.macs for _, s, *_ in parts]),
        latency_s=cat([p["latency_s"] for _, _, p, *_ in parts]),
        bytes=cat([p["bytes"] for _, _, p, *_ in parts]),
        model_order=cat([mo for *_, mo, _ in parts]), exact_order=cat([eo for *_, eo in parts]),
        order=order, depths=depths, input_size=input_size, num_classes=num_classes,
        link=describe(lk), seconds=time.perf_counter() - t0)


def plot_explored(ex: Explored, path: str) -> str:
    """PNG of predicted latency against ReLUs, one marker per family, the front as a line."""
    from matplotlib.figure import Figure

    from deepreshape.fileio import atomic_write

    fig = Figure(figsize=(9, 6), layout="constrained")
    ax = fig.subplots()
    styles = {"hrn": ("HRN (multipliers per stage)", "o", "tab:blue", 6),
              "stagech": ("StageCh (one multiplier)", "s", "tab:orange", 28),
              "basech": ("BaseCh (base width m)", "^", "tab:green", 28)}
    for kind in ("hrn", "stagech", "basech"):
        sel = ex.family == kind
        if not sel.any():
            continue
        label, marker, color, size = styles[kind]
        if kind == "hrn":
            eq = sel & ex.model_order
            ax.scatter(ex.relus[sel & ~eq], ex.latency_s[sel & ~eq], s=size, marker=marker,
                       color="0.7", alpha=0.4, linewidths=0, rasterized=True,
                       label=f"HRN, not equalized for {_order(ex.order)} ({int((sel & ~eq).sum()):,})")
            sel = eq
            label = f"HRN, ReLU-equalized for {_order(ex.order)} ({int(sel.sum()):,})"
        ax.scatter(ex.relus[sel], ex.latency_s[sel], s=size, marker=marker, color=color,
                   alpha=0.8 if kind != "hrn" else 0.5, linewidths=0, rasterized=True,
                   label=label if kind == "hrn" else f"{label} ({int(sel.sum()):,})")
    f = ex.envelope()
    ax.step(ex.relus[f], ex.latency_s[f], where="pre", color="black", lw=1,
            label="fastest network with at least these ReLUs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ReLUs (exact count, stem in stage1)")
    ax.set_ylabel(f"predicted Cheetah latency per query, s ({ex.link})")
    ax.set_title(f"Design space at {ex.input_size}x{ex.input_size}, {ex.num_classes} classes: "
                 f"predicted PI latency against ReLUs ({len(ex):,} networks)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    return str(path)


def _order(order: Sequence[int]) -> str:
    return ",".join(map(str, order))
