"""DeepReShape: ReLU equalization by solving the compound inequalities of Algorithm 1.

Model (paper, Sec. 3 and App. B.1). A network of D stages has stage compute ratios
(depths) phi_1..phi_D and stagewise channel multipliers lambda_1..lambda_{D-1}
(alpha, beta, gamma for D = 4). Stage k has base-width times prod_{j<k} lambda_j
channels on a feature map 4^{k-1} times smaller in area than Stage1's, so its ReLUs are
proportional to

    R_k = phi_k * prod_{j<k} lambda_j / 4^{k-1}.

A criticality order (c_1, ..., c_D), most to least critical, asks for
R_{c_1} > R_{c_2} > ... > R_{c_D} (strictly). We multiply through by 4^{D-1}, so every
comparison is exact integer arithmetic; no floats are involved in deciding feasibility.

Erratum. Algorithm 1 (line 5) prints the denominator as 2^{k-1}; the derivation in
App. B.1 (phi_3 * alpha*beta/16 > phi_2 * alpha/4 > ...) and Table 2 use 4^{k-1}, which is
right because the spatial *area* shrinks 4x per stage. This module uses 4^{k-1}.

Solutions. The free variables (multipliers, depths or both, each in integer bounds) span a
grid. `solve` returns every componentwise-minimal feasible point. The feasible set is not
upward closed (for order 3,2,4,1, beta*gamma < 16 caps beta and gamma), so minimality is
decided by a real dominance filter, not by checking the neighbours one step below.

Reproduced from the paper (ResNet18, all phi = 2, order 3,2,4,1): (alpha, beta, gamma) in
{(7,5,2), (5,5,3), (6,6,2), (5,7,2)}, i.e. HRN-7x5x2x, HRN-5x5x3x, HRN-6x6x2x, HRN-5x7x2x;
order 3,4,2,1 (App. D.6): {(5,9,2), (5,6,3)}.

Note on App. C.1 (equalization through depth, alpha = beta = gamma = 2, order 3,2,4,1).
The inequalities are phi_3/4 > phi_2/2 > phi_4/8 > phi_1, i.e. 2 phi_3 > 4 phi_2 > phi_4 >
8 phi_1. With phi_1 >= 1 this needs phi_4 >= 9, then phi_2 >= 3, then phi_3 >= 7: the unique
minimal solution is (1, 3, 7, 9). The paper's list (1,5,5,3), (1,5,7,2), (1,6,6,2),
(1,7,5,2) does not satisfy its own inequalities: phi_4/8 > phi_1 fails for every one of
them (they read as (1, alpha, beta, gamma) of the width solutions).

The model ignores the stem's ReLUs (counted in Stage1) and the downsampling blocks, so
`design` also checks each solution against its exact counts and reports the pairs of the
requested order that the exact stage ReLUs break (`order_violations`; ties count as broken).
For example HRN-5x7x2x on 32x32 has exact stage ReLUs 81,920 / 81,920 / 143,360 / 71,680,
so Stage2 > Stage1 and Stage4 > Stage1 do not hold exactly.

One module on purpose (about 680 lines, a sixth of them the derivation above): the model,
its exact-integer inequalities and the vectorized search for their minimal solutions are
one algorithm, read top to bottom.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepreshape.count import Counts, count
from deepreshape.errors import UsageError
from deepreshape.spec import NetSpec
from deepreshape.zoo import parse

VARY = ("width", "depth", "both")
DEFAULT_MULT_BOUNDS = (2, 16)
DEFAULT_DEPTH_BOUNDS = (1, 12)

_CHUNK = 1 << 21  # grid points evaluated at once (bounded memory)
_POOL = 1 << 16  # candidate points kept before they are reduced to their minima
_CMP = 1 << 22  # elements of one vectorized dominance comparison
_MAX_GRID = 4 * 10**9  # refuse grids we could not enumerate in reasonable time
_MAX_VALUE = 1 << 62  # int64 headroom for the scaled model counts


# --------------------------------------------------------------------------- the model


def model_relus(depths: Sequence[int], multipliers: Sequence[int],
                coef: Coefficients | None = None) -> tuple[int, ...]:
    """Model stage ReLUs times 4^{D-1}: phi_k * prod_{j<k} lambda_j * 4^{D-k} (exact ints).

    With `coef` ((a_k, b_k) per stage), (a_k * phi_k + b_k) * prod_{j<k} lambda_j instead:
    `exact_coefficients` makes these the exact stage counts.
    """
    d = len(depths)
    if len(multipliers) != d - 1:
        raise UsageError(f"{d} depths need {d - 1} multipliers, got {len(multipliers)}")
    return tuple(int(v) for v in _model_relus_vec([int(p) for p in depths],
                                                  [int(m) for m in multipliers], coef))


Coefficients = tuple[tuple[int, int], ...]
"""Per stage (a_k, b_k): the stage compares as (a_k * phi_k + b_k) * prod_{j<k} lambda_j."""


def model_coefficients(stages: int) -> Coefficients:
    """Algorithm 1's model: a_k = 4^{D-k} (the area, times 4^{D-1}), b_k = 0."""
    return tuple((4 ** (stages - 1 - k), 0) for k in range(stages))


def exact_coefficients(base: str, stages: int, input_size: int, num_classes: int) -> Coefficients:
    """Coefficients whose values are `base`'s exact stage ReLUs at base width 1 ("exact").

    A stage's ReLUs are its width times a per-block count (times its depth) plus what sits
    outside the blocks (the stem, in stage1), so they are (a_k phi_k + b_k) times the
    product of the multipliers before it; a and b are read off `count` at depths 1 and 2
    and checked at depths 3 and at other multipliers (UsageError where that fails).
    """
    def stage_relus(depths: Sequence[int], mults: Sequence[int]) -> list[int]:
        spec = parse(base, base_width=1, depths=tuple(depths), multipliers=tuple(mults),
                     input_size=input_size, num_classes=num_classes)
        return [int(s.relus) for s in count(spec).stages]

    ones = (1,) * (stages - 1)
    one, two = stage_relus((1,) * stages, ones), stage_relus((2,) * stages, ones)
    coef = tuple((b - a, 2 * a - b) for a, b in zip(one, two, strict=True))
    check = (3, 1, 2, 3, 1, 2, 3, 1)[:stages]
    mults = (3, 2, 5, 2, 3, 2, 3)[: stages - 1]
    if (stage_relus(check, mults) != list(_model_relus_vec(check, mults, coef))
            or any(a < 1 or b < 0 for a, b in coef)):
        raise UsageError(f"base {base!r}: exact stage ReLUs are not linear in depth and width; "
                         "solve with the model instead (drop --exact)")
    return coef


def shares(relus: Sequence[int]) -> tuple[float, ...]:
    """Relative shares of a list of stage ReLU counts (for display only)."""
    total = sum(relus)
    return tuple(r / total if total else 0.0 for r in relus)


def order_violations(order: Sequence[int], relus: Sequence[int]) -> list[tuple[int, int]]:
    """Pairs (a, b), a before b in `order`, whose stage ReLUs do not satisfy R_a > R_b."""
    return [
        (a, b)
        for i, a in enumerate(order)
        for b in order[i + 1 :]
        if not relus[a - 1] > relus[b - 1]
    ]


def satisfies(order: Sequence[int], relus: Sequence[int]) -> bool:
    """True when the stage ReLUs follow the order strictly."""
    return all(relus[a - 1] > relus[b - 1] for a, b in itertools.pairwise(order))


# --------------------------------------------------------------------------- validation


def validate_order(order: Sequence[int] | str) -> tuple[int, ...]:
    """A criticality order as a tuple of 1-based stages; a permutation of 1..D, D >= 2."""
    if isinstance(order, str):
        order = parse_ints(order, "order")
    out = []
    for c in order:
        if isinstance(c, bool) or not isinstance(c, int | np.integer):
            raise UsageError(f"order must be integer stage numbers like 3,2,4,1, got {order!r}")
        out.append(int(c))
    if len(out) < 2:
        raise UsageError(f"order needs at least 2 stages, got {_fmt(out)!r}")
    if sorted(out) != list(range(1, len(out) + 1)):
        raise UsageError(
            f"order must be a permutation of 1..{len(out)} (each stage once), got {_fmt(out)}"
        )
    return tuple(out)


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'3,2,4,1' -> (3, 2, 4, 1); UsageError naming `what` otherwise."""
    try:
        return tuple(int(p) for p in text.replace(" ", "").split(",") if p != "")
    except ValueError as e:
        raise UsageError(f"{what} must be comma-separated integers, got {text!r}") from e


def _bounds(bounds: Sequence[int], what: str) -> tuple[int, int]:
    try:
        lo, hi = (int(b) for b in bounds)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{what} bounds must be two integers (min, max), got {bounds!r}") from e
    if lo < 1 or hi < lo:
        raise UsageError(f"{what} bounds must satisfy 1 <= min <= max, got {lo}..{hi}")
    return lo, hi


def _positive(values: Sequence[int], n: int, what: str, stages: int) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if len(out) != n:
        raise UsageError(f"{stages} stages need {n} {what}, got {len(out)} ({_fmt(out)})")
    if any(v < 1 for v in out):
        raise UsageError(f"{what} must be positive integers, got {_fmt(out)}")
    return out


def _fmt(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


# --------------------------------------------------------------------------- the problem


@dataclass(frozen=True)
class Axis:
    """One free variable: `kind` 'mult' (lambda_{index+1}) or 'depth' (phi_{index+1})."""

    kind: str
    index: int
    lo: int
    hi: int

    @property
    def values(self) -> np.ndarray:
        """Every value of the variable in its bounds, inclusive."""
        return np.arange(self.lo, self.hi + 1, dtype=np.int64)


@dataclass(frozen=True)
class Problem:
    """A validated instance of Algorithm 1: order, what is free, fixed values, bounds."""

    order: tuple[int, ...]
    vary: str
    depths: tuple[int, ...]
    multipliers: tuple[int, ...]
    mult_bounds: tuple[int, int]
    depth_bounds: tuple[int, int]
    coef: Coefficients | None = None  # None: Algorithm 1's model

    @classmethod
    def make(
        cls,
        order: Sequence[int] | str,
        *,
        vary: str = "width",
        depths: Sequence[int] | None = None,
        multipliers: Sequence[int] | None = None,
        mult_bounds: Sequence[int] = DEFAULT_MULT_BOUNDS,
        depth_bounds: Sequence[int] = DEFAULT_DEPTH_BOUNDS,
        coef: Coefficients | None = None,
    ) -> Problem:
        """Validate and fill defaults (depths, multipliers 2); UsageError on bad input or too big a grid.

        `coef` replaces the model's stage coefficients (see `model_relus`)."""
        order = validate_order(order)
        d = len(order)
        if vary not in VARY:
            raise UsageError(f"vary must be one of {', '.join(VARY)}, got {vary!r}")
        depths = _positive((2,) * d if depths is None else depths, d, "depths", d)
        multipliers = _positive(
            (2,) * (d - 1) if multipliers is None else multipliers, d - 1, "multipliers", d
        )
        if coef is not None and len(coef) != d:
            raise UsageError(f"{d} stages need {d} coefficient pairs, got {len(coef)}")
        problem = cls(order, vary, depths, multipliers,
                      _bounds(mult_bounds, "multiplier"), _bounds(depth_bounds, "depth"),
                      None if coef is None else tuple((int(a), int(b)) for a, b in coef))
        problem._check_size()
        return problem

    @property
    def stages(self) -> int:
        """Number of stages D."""
        return len(self.order)

    @property
    def axes(self) -> tuple[Axis, ...]:
        """Free variables: multipliers first, then depths."""
        d, out = self.stages, []
        if self.vary in ("width", "both"):
            out += [Axis("mult", j, *self.mult_bounds) for j in range(d - 1)]
        if self.vary in ("depth", "both"):
            out += [Axis("depth", k, *self.depth_bounds) for k in range(d)]
        return tuple(out)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The chain of Algorithm 1 as 1-based (more, less) critical stage pairs."""
        return list(itertools.pairwise(self.order))

    def split(self, point: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(multipliers, depths) of a point of the free grid."""
        mult, dep = list(self.multipliers), list(self.depths)
        for axis, v in zip(self.axes, point, strict=True):
            (mult if axis.kind == "mult" else dep)[axis.index] = int(v)
        return tuple(mult), tuple(dep)

    def describe_bounds(self) -> str:
        """'multipliers in 2..16 with depths 2,2,2,2' and the like."""
        mlo, mhi = self.mult_bounds
        dlo, dhi = self.depth_bounds
        if self.vary == "width":
            return f"multipliers in {mlo}..{mhi} with depths {_fmt(self.depths)}"
        if self.vary == "depth":
            return f"depths in {dlo}..{dhi} with multipliers {_fmt(self.multipliers)}"
        return f"multipliers in {mlo}..{mhi} and depths in {dlo}..{dhi}"

    def _check_size(self) -> None:
        size = math.prod(a.hi - a.lo + 1 for a in self.axes)
        if size > _MAX_GRID:
            raise UsageError(f"search grid too large ({size:,} points); narrow the bounds")
        top_m = max([self.mult_bounds[1] if self.vary != "depth" else 0, *self.multipliers])
        top_d = max([self.depth_bounds[1] if self.vary != "width" else 0, *self.depths])
        coef = self.coef or model_coefficients(self.stages)
        top_c = max(a * top_d + b for a, b in coef)
        if top_c * top_m ** (self.stages - 1) >= _MAX_VALUE:
            raise UsageError("bounds too large for exact 64-bit arithmetic; narrow them")


# --------------------------------------------------------------------------- enumeration


def _blocks(axes: Sequence[Axis]) -> Iterator[tuple[tuple[int, ...], int]]:
    """Yield (values of the outer axes, number of outer axes); inner axes are vectorized."""
    sizes = [a.hi - a.lo + 1 for a in axes]
    n_outer = len(axes) - 1
    while n_outer > 0 and math.prod(sizes[n_outer - 1 :]) <= _CHUNK:
        n_outer -= 1
    ranges = [range(a.lo, a.hi + 1) for a in axes[:n_outer]]
    for outer in itertools.product(*ranges):
        yield outer, n_outer


def _block_mask(
    problem: Problem, outer: tuple[int, ...], n_outer: int
) -> tuple[np.ndarray | None, int]:
    """Feasibility over one block (inner axes as array dims) and how long a prefix held.

    Returns (mask or None, k): the first k pairs of the chain hold together somewhere in
    the block; mask is the full-chain mask, None when some prefix already fails everywhere.
    """
    axes = problem.axes
    inner = axes[n_outer:]
    mult: list[Any] = list(problem.multipliers)
    dep: list[Any] = list(problem.depths)
    for axis, v in zip(axes[:n_outer], outer, strict=True):
        (mult if axis.kind == "mult" else dep)[axis.index] = v
    for pos, axis in enumerate(inner):
        shape = [1] * len(inner)
        shape[pos] = -1
        (mult if axis.kind == "mult" else dep)[axis.index] = axis.values.reshape(shape)
    relus = _model_relus_vec(dep, mult, problem.coef)
    mask: Any = True
    for k, (a, b) in enumerate(problem.pairs):
        mask = np.logical_and(mask, relus[a - 1] > relus[b - 1])
        if not np.any(mask):
            return None, k
    full = np.broadcast_to(mask, tuple(a.hi - a.lo + 1 for a in inner))
    return full, len(problem.pairs)


def _model_relus_vec(depths: Sequence[Any], multipliers: Sequence[Any],
                     coef: Coefficients | None = None) -> list[Any]:
    """`model_relus` over broadcastable int64 arrays (or ints)."""
    d = len(depths)
    coef = coef or model_coefficients(d)
    out: list[Any] = []
    prod: Any = 1
    for k in range(d):
        a, b = coef[k]
        out.append((depths[k] * a + b) * prod)
        if k < d - 1:
            prod = prod * multipliers[k]
    return out


def _local_minima(full: np.ndarray) -> np.ndarray:
    """Feasible points with no feasible neighbour one step below along any array axis.

    A cheap necessary condition for minimality (a feasible point one step below dominates);
    not sufficient, since the feasible set is not upward closed.
    """
    keep = full.copy()
    for ax in range(full.ndim):
        hi = [slice(None)] * full.ndim
        lo = [slice(None)] * full.ndim
        hi[ax], lo[ax] = slice(1, None), slice(None, -1)
        keep[tuple(hi)] &= ~full[tuple(lo)]
    return keep


def _points(problem: Problem, outer: tuple[int, ...], keep: np.ndarray) -> np.ndarray:
    """Grid coordinates (free-variable values) of the True cells of one block."""
    axes = problem.axes
    n_outer = len(outer)
    idx = np.nonzero(keep)
    pts = np.empty((idx[0].size, len(axes)), dtype=np.int64)
    pts[:, :n_outer] = outer
    for pos, axis in enumerate(axes[n_outer:]):
        pts[:, n_outer + pos] = idx[pos] + axis.lo
    return pts


def _dominated(points: np.ndarray, minima: np.ndarray) -> np.ndarray:
    """Rows of `points` that some row of `minima` is componentwise <= to."""
    out = np.zeros(len(points), dtype=bool)
    if len(minima) == 0 or len(points) == 0:
        return out
    step = max(1, _CMP // (len(minima) * points.shape[1]))
    for s in range(0, len(points), step):
        block = points[s : s + step]
        out[s : s + step] = (minima[None, :, :] <= block[:, None, :]).all(axis=2).any(axis=1)
    return out


def minimal_points(points: np.ndarray) -> np.ndarray:
    """The minimal elements of a finite set of integer points (componentwise order).

    Points are taken by increasing coordinate sum: a point can only be dominated by a point
    of smaller sum (equal sums and p <= q mean p == q), and a dominated point is dominated
    by some minimal one, so checking each sum level against the minima accepted so far is
    exact. Returns the minima sorted by (sum, lexicographic).
    """
    if len(points) == 0:
        return points.reshape(0, points.shape[1] if points.ndim == 2 else 0)
    pts = np.unique(points, axis=0)  # lexicographic
    sums = pts.sum(axis=1)
    pts, sums = pts[np.argsort(sums, kind="stable")], np.sort(sums, kind="stable")
    bounds = np.flatnonzero(np.diff(sums)) + 1
    accepted = pts[:0]
    for group in np.split(pts, bounds):
        group = group[~_dominated(group, accepted)]
        accepted = np.concatenate([accepted, group])
    return accepted


@dataclass(frozen=True)
class ModelSolution:
    """One minimal solution of the model: its free values and model stage ReLUs."""

    multipliers: tuple[int, ...]
    depths: tuple[int, ...]
    free: tuple[int, ...]
    model_relus: tuple[int, ...]  # times 4^{D-1}

    @property
    def model_shares(self) -> tuple[float, ...]:
        """Relative shares of the model stage ReLUs (for display)."""
        return shares(self.model_relus)


def solve_grid(problem: Problem) -> tuple[np.ndarray, int]:
    """All minimal feasible grid points, and the longest chain prefix feasible anywhere."""
    pool: list[np.ndarray] = []
    pooled = 0
    reached = 0
    for outer, n_outer in _blocks(problem.axes):
        full, k = _block_mask(problem, outer, n_outer)
        reached = max(reached, k)
        if full is None:
            continue
        pts = _points(problem, outer, _local_minima(full))
        pool.append(pts)
        pooled += len(pts)
        if pooled > _POOL:
            pool = [minimal_points(np.concatenate(pool))]
            pooled = len(pool[0])
    if not pool:
        return np.empty((0, len(problem.axes)), dtype=np.int64), reached
    return minimal_points(np.concatenate(pool)), reached


def infeasible_message(problem: Problem, reached: int) -> str:
    """Name the first inequality of the chain that cannot hold with those before it."""
    a, b = problem.pairs[reached]
    msg = f"no solution: ReLUs(stage{a}) > ReLUs(stage{b}) cannot hold"
    if reached:
        chain = " > ".join(f"ReLUs(stage{c})" for c in problem.order[: reached + 1])
        msg += f" together with {chain}"
    return f"{msg} for {problem.describe_bounds()}"


def solve(
    order: Sequence[int] | str,
    *,
    vary: str = "width",
    depths: Sequence[int] | None = None,
    multipliers: Sequence[int] | None = None,
    mult_bounds: Sequence[int] = DEFAULT_MULT_BOUNDS,
    depth_bounds: Sequence[int] = DEFAULT_DEPTH_BOUNDS,
) -> list[ModelSolution]:
    """All componentwise-minimal integer solutions of the model (no counting).

    Sorted by total model ReLUs, then lexicographically by (multipliers, depths). Raises
    UsageError naming the failing inequality when there is none.
    """
    problem = Problem.make(order, vary=vary, depths=depths, multipliers=multipliers,
                           mult_bounds=mult_bounds, depth_bounds=depth_bounds)
    return _solve(problem)


def _solve(problem: Problem) -> list[ModelSolution]:
    points, reached = solve_grid(problem)
    if len(points) == 0:
        raise UsageError(infeasible_message(problem, reached))
    out = []
    for p in points:
        mult, dep = problem.split(p)
        out.append(ModelSolution(mult, dep, tuple(int(v) for v in p),
                                 model_relus(dep, mult, problem.coef)))
    out.sort(key=lambda s: (sum(s.model_relus), s.multipliers, s.depths))
    return out


# --------------------------------------------------------------------------- with counts


@dataclass(frozen=True)
class Solution:
    """A minimal solution with its network and exact counts (stem counted in stage1)."""

    multipliers: tuple[int, ...]
    depths: tuple[int, ...]
    free: tuple[int, ...]
    name: str
    spec: NetSpec
    counts: Counts
    model_relus: tuple[int, ...]
    model_shares: tuple[float, ...]
    order_violations: list[tuple[int, int]] = field(default_factory=list)

    @property
    def relus(self) -> int:
        """Exact total ReLUs of the network."""
        return int(self.counts.relus)

    @property
    def macs(self) -> int:
        """Exact total MACs of the network."""
        return int(self.counts.macs)

    @property
    def params(self) -> int:
        """Exact total parameters of the network."""
        return int(self.counts.params)

    @property
    def stem_relus(self) -> int:
        """ReLUs of the stem alone (also counted in stage1)."""
        return int(self.counts.stem_relus)

    @property
    def stage_relus(self) -> tuple[int, ...]:
        """Exact ReLUs per stage, stem in stage1."""
        return tuple(int(s.relus) for s in self.counts.stages)

    @property
    def shares(self) -> tuple[float, ...]:
        """Exact relative stage ReLU shares."""
        return shares(self.stage_relus)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the same numbers the CLI table prints."""
        return {
            "name": self.name,
            "multipliers": list(self.multipliers),
            "depths": list(self.depths),
            "relus": self.relus,
            "macs": self.macs,
            "params": self.params,
            "stem_relus": self.stem_relus,
            "stages": [
                {"name": s.name, "relus": int(s.relus), "macs": int(s.macs),
                 "params": int(s.params)}
                for s in self.counts.stages
            ],
            "shares": list(self.shares),
            "model_shares": list(self.model_shares),
            "order_violations": [list(p) for p in self.order_violations],
        }


@dataclass(frozen=True)
class DesignResult:
    """What `design` found: the problem it solved and its minimal solutions."""

    order: tuple[int, ...]
    vary: str
    base: str
    input_size: int
    num_classes: int
    mult_bounds: tuple[int, int]
    depth_bounds: tuple[int, int]
    solutions: list[Solution]
    exact: bool = False  # solved on exact stage counts, not Algorithm 1's model

    def __iter__(self) -> Iterator[Solution]:
        return iter(self.solutions)

    def __len__(self) -> int:
        return len(self.solutions)

    def to_list(self) -> list[dict[str, Any]]:
        """Every solution as a JSON-ready dict (the `--json` output)."""
        return [s.to_dict() for s in self.solutions]


def design(
    order: Sequence[int] | str,
    *,
    vary: str = "width",
    depths: Sequence[int] | None = None,
    multipliers: Sequence[int] | None = None,
    mult_bounds: Sequence[int] = DEFAULT_MULT_BOUNDS,
    depth_bounds: Sequence[int] = DEFAULT_DEPTH_BOUNDS,
    base: str = "hrn-2x2x2x",
    input_size: int = 32,
    num_classes: int = 100,
    exact: bool = False,
) -> DesignResult:
    """DeepReShape (Algorithm 1): all minimal ReLU-equalized variants of `base`.

    `order` lists stages from most to least critical (e.g. 3,2,4,1). `vary` says what is
    free: "width" (multipliers in `mult_bounds`, depths fixed to `depths`, default the
    base's), "depth" (depths in `depth_bounds`, multipliers fixed to `multipliers`, default
    the base's) or "both". Each solution carries its network name and spec, its exact counts
    and the pairs of `order` its exact stage ReLUs break. With `exact`, the inequalities
    are solved on the base's exact stage counts (`exact_coefficients`: the stem counted in
    stage1) instead of Algorithm 1's model, so no pair breaks. Sorted by
    total exact ReLUs, then by (multipliers, depths). UsageError on bad input or when no solution exists.
    """
    order = validate_order(order)
    base_spec = parse(base, input_size=input_size, num_classes=num_classes)
    d = len(order)
    if depths is None and vary == "width":
        depths = _fit(base_spec.depths, d, "depths", base)
    if multipliers is None and vary == "depth":
        multipliers = _fit(base_spec.multipliers, d - 1, "multipliers", base)
    coef = exact_coefficients(base, d, input_size, num_classes) if exact else None
    problem = Problem.make(order, vary=vary, depths=depths, multipliers=multipliers,
                           mult_bounds=mult_bounds, depth_bounds=depth_bounds, coef=coef)
    solutions = [_counted(problem, s, base, input_size, num_classes) for s in _solve(problem)]
    solutions.sort(key=lambda s: (s.relus, s.multipliers, s.depths))
    return DesignResult(order, vary, base_spec.name, input_size, num_classes,
                        problem.mult_bounds, problem.depth_bounds, solutions, exact)


def _fit(values: Sequence[float], n: int, what: str, base: str) -> tuple[int, ...]:
    """The base's depths/multipliers for n entries: as they are, or a uniform one repeated."""
    if any(not float(v).is_integer() for v in values):
        raise UsageError(f"base {base!r} has non-integer {what} {values}; pass {what} explicitly")
    ints = tuple(int(v) for v in values)
    if len(ints) == n:
        return ints
    if len(set(ints)) == 1:
        return (ints[0],) * n
    raise UsageError(f"base {base!r} has {len(ints)} {what} ({_fmt(ints)}), the order needs "
                     f"{n}; pass {what} explicitly")


def _counted(problem: Problem, sol: ModelSolution, base: str, input_size: int,
             num_classes: int) -> Solution:
    """Attach the network, its exact counts and its exact-order violations."""
    spec = parse(base, multipliers=sol.multipliers, depths=sol.depths,
                 input_size=input_size, num_classes=num_classes)
    if tuple(spec.depths) != sol.depths or tuple(spec.multipliers) != sol.multipliers:
        raise UsageError(f"base {base!r} fixes its stage widths or depths; it cannot take "
                         f"multipliers {_fmt(sol.multipliers)} and depths {_fmt(sol.depths)}")
    counts = count(spec)
    stage_relus = [int(s.relus) for s in counts.stages]
    return Solution(
        multipliers=sol.multipliers,
        depths=sol.depths,
        free=sol.free,
        name=spec.name,
        spec=spec,
        counts=counts,
        model_relus=sol.model_relus,
        model_shares=sol.model_shares,
        order_violations=order_violations(problem.order, stage_relus),
    )


def with_base_width(result: DesignResult, solution: Solution, m: int) -> Solution:
    """`solution` with base width `m` (stem and stage1 channels), recounted exactly."""
    spec = parse(result.base, base_width=int(m), multipliers=solution.multipliers,
                 depths=solution.depths, input_size=result.input_size,
                 num_classes=result.num_classes)
    counts = count(spec)
    return dataclasses.replace(
        solution, name=spec.name, spec=spec, counts=counts,
        order_violations=order_violations(result.order, [int(s.relus) for s in counts.stages]))
