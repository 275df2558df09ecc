"""Whole design spaces at array speed: exact counts and predicted PI cost of a network family.

A family is one base network (`Family`: base name, depths, input size, classes) whose
base width m and stage multipliers vary, as in the paper's BaseCh (m), StageCh (one
multiplier for every stage) and HRN (one per stage) networks. In such a family every
channel count is a unit width ``u_k = m * prod_{j<k} lambda_j`` times a fixed ratio (or
a constant: the input's 3 channels, the classes) and every spatial size is fixed, so
the analytic layer table (`count.layer_table`) of two probe networks is a template for
all of them. `counts` evaluates the template for arrays of (m, multipliers) at once:
ReLUs, MACs and parameters as `count` gives them, and the cost model's features as
`deepreshape.pi.costs.costmodel.features` gives them, including the Cheetah HE counts, whose
block-shape search (`deepreshape.pi.costs.he.blocking`) runs here over arrays of distinct
matrix products. A third probe network is checked against `count` and
`costmodel.features` before a template is used; a family the template cannot express
(grouped RegNets, slot changes) or a cost model whose features changed raises
`Unsupported`, and callers fall back to one `count`/`predict` per network. The counts
need only `count`; the HE counts and `predict` import `pi.cheetah`/`pi.costmodel` when
called (pure numpy; no `pi` extra needed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from deepreshape.count import count, layer_table
from deepreshape.errors import UsageError
from deepreshape.spec import NetSpec
from deepreshape.zoo import parse

_PROBES = ((5, (3, 7, 11, 13, 17, 19, 23)), (7, (5, 3, 13, 11, 19, 17, 29)))
_CHECK = (6, (2, 5, 3, 2, 3, 2, 2))
_CELLS = 1 << 22  # elements of one vectorized block-shape search


class Unsupported(Exception):
    """The family (or the cost model's features) cannot be evaluated from a template."""


@dataclass(frozen=True)
class Family:
    """A base network with fixed depths, input size and classes; m and multipliers vary."""

    base: str
    depths: tuple[int, ...] | None = None
    input_size: int = 32
    num_classes: int = 100

    def spec(self, m: int, multipliers: Sequence[int]) -> NetSpec:
        """The family's network with base width `m` and stage `multipliers`."""
        return parse(self.base, base_width=int(m), multipliers=tuple(int(v) for v in multipliers),
                     depths=self.depths, input_size=self.input_size, num_classes=self.num_classes)

    @property
    def stages(self) -> int:
        """Number of stages D."""
        return len(_base_spec(self).stages)


@lru_cache(maxsize=64)
def _base_spec(family: Family) -> NetSpec:
    return parse(family.base, depths=family.depths, input_size=family.input_size,
                 num_classes=family.num_classes)


# --------------------------------------------------------------------------- template


@dataclass(frozen=True)
class _Dim:
    """A channel count: `ratio` times unit width `unit` (0-based), or `ratio` alone if unit < 0."""

    unit: int
    ratio: int

    def of(self, u: np.ndarray) -> np.ndarray:
        return u[:, self.unit] * self.ratio if self.unit >= 0 else np.full(len(u), self.ratio)


@dataclass(frozen=True)
class _Layer:
    kind: str  # conv | linear | relu | bn
    stage: int  # 0-based stage, D for the head
    cin: _Dim
    cout: _Dim
    area: int  # output H * W
    kernel: int
    groups: int


def _units(m: int, mults: Sequence[int], d: int) -> list[int]:
    u = [m]
    for a in mults[: d - 1]:
        u.append(u[-1] * a)
    return u


def _dim(v1: int, v2: int, u1: Sequence[int], u2: Sequence[int]) -> _Dim:
    for s, (a, b) in enumerate(zip(u1, u2, strict=True)):
        if v1 % a == 0 and v2 % b == 0 and v1 // a == v2 // b:
            return _Dim(s, v1 // a)
    if v1 == v2:
        return _Dim(-1, v1)
    raise Unsupported(f"channel count {v1}/{v2} is no multiple of a stage width")


@lru_cache(maxsize=64)
def _template(family: Family) -> tuple[_Layer, ...]:
    d = family.stages
    try:
        (m1, p1), (m2, p2) = _PROBES
        rows1 = layer_table(family.spec(m1, p1[: d - 1]))
        rows2 = layer_table(family.spec(m2, p2[: d - 1]))
    except UsageError as e:
        raise Unsupported(str(e)) from None
    if [r.name for r in rows1] != [r.name for r in rows2]:
        raise Unsupported("the layer structure depends on the widths")
    u1, u2 = _units(m1, p1, d), _units(m2, p2, d)
    out = []
    for a, b in zip(rows1, rows2, strict=True):
        if a.shape[1:] != b.shape[1:] or a.groups != b.groups or a.kernel != b.kernel:
            raise Unsupported(f"{a.name}: geometry depends on the widths")
        stage = d if a.stage == "head" else int(a.stage[5:]) - 1
        cout = _dim(a.shape[0], b.shape[0], u1, u2)
        cin = _dim(a.in_shape[0], b.in_shape[0], u1, u2) if a.kind in ("conv", "linear") else cout
        if a.kind == "relu" and a.relus != a.shape[0] * a.shape[1] * a.shape[2]:
            raise Unsupported(f"{a.name}: a changed ReLU slot")
        out.append(_Layer(a.kind, stage, cin, cout, a.shape[1] * a.shape[2], a.kernel, a.groups))
    return tuple(out)


# --------------------------------------------------------------------------- HE counts


def _cdiv(a: Any, b: Any) -> Any:
    return -(-a // b)


def blocking_counts(m: int, k: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    """`he.blocking` for one row count `m` and arrays of inner `k` and column `n` dims.

    The same search (row block d0, power-of-two inner block d1, the column block filling
    the rest), the same prices in the same floating-point order and the same tie rule (the
    later of equal prices wins), run over all products at once. For one d1 the price
    depends on d0 only through b0 = ceil(m/d0) (falling with d0) and b2 = ceil(n/q),
    q = N // d0 // d1 (rising with d0), and rises strictly with each; so within a run of d0
    with the same b0 the first is cheapest, and the last d0 of the run with the same b2 ties
    it: only one price per run of b0 is computed, and that last d0 follows in closed form.
    Products whose cheapest conceivable price at a d1 is above their best so far skip it.
    Returns the counts ``sent``, ``outputs``, ``response``, ``automorphisms``, ``muls``.
    """
    from deepreshape.pi.costs.he import _PRICE_AUTOMORPHISM, _PRICE_CT, _PRICE_MUL, POLY_DEGREE

    big_n = POLY_DEGREE
    k = np.asarray(k, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    nf = n.astype(np.float64)
    t = len(k)
    best_p = np.full(t, np.inf)
    best_d0 = np.ones(t, dtype=np.int64)
    best_d1 = np.ones(t, dtype=np.int64)
    d0_all = np.arange(1, min(big_n, m) + 1, dtype=np.int64)
    autom = _cdiv(m * n, big_n)
    kmax = int(k.max()) if t else 0
    d1s = [1 << i for i in range(kmax.bit_length()) if (1 << i) <= min(kmax, big_n)]
    for d1 in reversed(d1s):  # the widest first: its price prunes most narrower ones
        a = d0_all[d0_all * d1 <= big_n]
        b0_all = _cdiv(m, a)
        first = np.flatnonzero(np.r_[True, b0_all[1:] != b0_all[:-1]])
        a_lo, a_hi = a[first], a[np.r_[first[1:], a.size] - 1]
        b0 = b0_all[first][None, :]
        q = (big_n // a_lo // d1)[None, :]
        # skip products this d1 cannot beat: every price is at least the one with
        # b0 = b2 = 1 (one ciphertext each way), and only a lower price or a tie can win
        b1_all = _cdiv(k, d1)
        floor_p = (b1_all + 1) * _PRICE_CT + autom * d1 * _PRICE_AUTOMORPHISM + b1_all * _PRICE_MUL
        live = np.flatnonzero((k >= d1) & (floor_p <= best_p * (1 + 1e-9)))
        # The prices in float64: every count is an integer below 2**53 (stages are capped
        # at 2**24 channels), so ceil(a / b) in floats is exact and each price is the same
        # float as from int64 counts, and float division is several times faster.
        b0f, qf = b0.astype(np.float64), q.astype(np.float64)
        step = max(1, _CELLS // a_lo.size)
        for s in range(0, len(live), step):
            idx = live[s : s + step]
            b1 = b1_all[idx].astype(np.float64)[:, None]
            b2 = np.ceil(nf[idx][:, None] / qf)
            price = (np.minimum(b0f, b2) * b1 + np.ceil(b0f * b2 / d1)) * _PRICE_CT
            price += (autom[idx] * d1 * _PRICE_AUTOMORPHISM)[:, None]
            price += (b0f * b1 * b2) * _PRICE_MUL
            low = price.min(axis=1)
            g = a_lo.size - 1 - np.argmax((price == low[:, None])[:, ::-1], axis=1)
            b2g = b2[np.arange(len(idx)), g].astype(np.int64)
            last = np.minimum(a_hi[g], big_n // (d1 * _cdiv(n[idx], b2g)))
            bp, bd = best_p[idx], best_d0[idx]
            # he.blocking's order is d0, then d1, the later of equal prices winning: a
            # narrower d1 (seen later here) wins a tie only with a larger d0
            upd = (low < bp) | ((low == bp) & (last > bd))
            hit = idx[upd]
            best_p[hit], best_d0[hit], best_d1[hit] = low[upd], last[upd], d1
    bd2 = np.minimum(n, big_n // best_d0 // best_d1)
    b0, b1, b2 = _cdiv(m, best_d0), _cdiv(k, best_d1), _cdiv(n, bd2)
    return {"sent": np.minimum(b0, b2) * b1, "outputs": b0 * b2, "response": _cdiv(b0 * b2, best_d1),
            "automorphisms": autom * best_d1, "muls": b0 * b1 * b2}


_HE = (("he_sent", "sent"), ("he_outputs", "outputs"), ("he_response", "response"),
       ("he_automorphisms", "automorphisms"), ("he_muls", "muls"))


def _he_features(layers: Sequence[_Layer], u: np.ndarray) -> dict[str, np.ndarray]:
    """HE counts summed over the conv/linear layers, both product directions (as cheetah's).

    Layers are grouped into classes of the same shape; the classes' matrix products with
    the same row count share one `blocking_counts` search over their distinct (k, n)."""
    out = {f: np.zeros(len(u), dtype=np.int64) for f, _ in _HE}
    classes: dict[tuple, int] = {}
    for layer in layers:
        if layer.kind in ("conv", "linear"):
            key = (layer.kind, layer.area, layer.kernel, layer.groups, layer.cin, layer.cout)
            classes[key] = classes.get(key, 0) + 1
    by_rows: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}  # rows -> (weight, k, n)
    for (kind, area, kernel, groups, cin, cout), times in classes.items():
        rows = 1 if kind == "linear" else area
        kdim = cin.of(u) // groups * (kernel * kernel if kind == "conv" else 1)
        by_rows.setdefault(rows, []).append((2 * groups * times, kdim, cout.of(u) // groups))
    for rows, products in by_rows.items():
        k = np.concatenate([kd for _, kd, _ in products])
        n = np.concatenate([nd for _, _, nd in products])
        base = int(n.max()) + 1
        keys, inverse = np.unique(k * base + n, return_inverse=True)
        counts = blocking_counts(rows, keys // base, keys % base)
        inverse = inverse.reshape(len(products), len(u))
        weight = np.array([w for w, _, _ in products], dtype=np.int64)[:, None]
        for f, c in _HE:
            out[f] += (weight * counts[c][inverse]).sum(axis=0)
    return out


# --------------------------------------------------------------------------- counts


@dataclass
class SpaceCounts:
    """Exact counts and cost-model features of many networks of one family (arrays)."""

    family: Family
    m: np.ndarray  # (n,)
    multipliers: np.ndarray  # (n, D-1)
    relus: np.ndarray
    macs: np.ndarray
    params: np.ndarray
    stage_relus: np.ndarray  # (n, D), the stem in stage1
    features: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.m)

    def spec(self, i: int) -> NetSpec:
        """The spec of network `i`."""
        return self.family.spec(int(self.m[i]), self.multipliers[i])


def _grid(family: Family, m: Sequence[int] | np.ndarray, multipliers: Any
          ) -> tuple[np.ndarray, np.ndarray]:
    d = family.stages
    m = np.asarray(m, dtype=np.int64).reshape(-1)
    try:
        mult = np.asarray(multipliers, dtype=np.int64).reshape(len(m), d - 1)
    except ValueError:
        raise UsageError(f"{family.base}: need one row of {d - 1} multipliers per base width, "
                         f"got shape {np.shape(multipliers)}") from None
    if len(m) and (m.min() < 1 or (mult.size and mult.min() < 1)):
        raise UsageError("base widths and multipliers must be positive integers")
    return m, mult


def counts(family: Family, m: Sequence[int] | np.ndarray, multipliers: Any,
           he: bool = True) -> SpaceCounts:
    """Counts and cost features of the networks (m[i], multipliers[i]) of `family`.

    `multipliers` has one row of D-1 multipliers per network. `he=False` leaves out the
    Cheetah HE counts (ReLUs and MACs only; `predict` then refuses). Raises `Unsupported`
    when the family cannot be templated or the template disagrees with `count` or
    `costmodel.features` on a check network.
    """
    m, mult = _grid(family, m, multipliers)
    layers = _template(family)
    _verify(family)
    return _evaluate(family, layers, m, mult, he)


def _evaluate(family: Family, layers: Sequence[_Layer], m: np.ndarray, mult: np.ndarray,
              he: bool = True) -> SpaceCounts:
    d = family.stages
    u = np.empty((len(m), d), dtype=np.int64)
    u[:, 0] = m
    for j in range(1, d):
        u[:, j] = u[:, j - 1] * mult[:, j - 1]
    if len(m) and (int(u.max()) > 1 << 24):
        raise UsageError(f"a stage would have {int(u.max()):,} channels; narrow the ranges")
    stage_relus = np.zeros((len(m), d), dtype=np.int64)
    macs, params, conv_params, acts = (np.zeros(len(m), dtype=np.int64) for _ in range(4))
    relu_layers = linear_layers = 0
    for layer in layers:
        cout = layer.cout.of(u)
        if layer.kind == "relu":
            stage_relus[:, layer.stage] += cout * layer.area
            relu_layers += 1
        elif layer.kind == "bn":
            params += 2 * cout
        else:
            cin = layer.cin.of(u)
            k2 = layer.kernel * layer.kernel if layer.kind == "conv" else 1
            w = cout * (cin // layer.groups) * k2
            macs += w * layer.area
            p = w + (cout if layer.kind == "linear" else 0)
            params += p
            conv_params += p
            acts += cout * layer.area
            linear_layers += 1
    relus = stage_relus.sum(axis=1)
    feats: dict[str, Any] = {"relus": relus, "macs": macs, "relu_layers": relu_layers,
                             "linear_layers": linear_layers, "params": conv_params,
                             "activations": acts, "masked_relus": 0, "fixed": 1}
    if he:
        feats.update(_he_features(layers, u))
    n = len(m)
    feats = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) for k, v in feats.items()}
    return SpaceCounts(family, m, mult, relus, macs, params, stage_relus, feats)


@lru_cache(maxsize=64)
def _verify(family: Family) -> None:
    """Hold the template against `count` and `costmodel.features` on a third network."""
    from deepreshape.pi.costs.costmodel import FEATURES, features

    d = family.stages
    m0, p0 = _CHECK
    spec = family.spec(m0, p0[: d - 1])
    got = _evaluate(family, _template(family), np.array([m0]), np.array([p0[: d - 1]]))
    exact = count(spec)
    want = features(spec)
    same = (int(got.relus[0]) == exact.relus and int(got.macs[0]) == exact.macs
            and int(got.params[0]) == exact.params
            and [int(v) for v in got.stage_relus[0]] == [s.relus for s in exact.stages]
            and set(want) <= set(got.features)
            and all(float(got.features[k][0]) == float(want[k]) for k in FEATURES))
    if not same:
        raise Unsupported(f"{spec.name}: the array counts disagree with count/costmodel.features")


def counts_slow(family: Family, m: Sequence[int] | np.ndarray, multipliers: Any) -> SpaceCounts:
    """`counts` by one `count` and `costmodel.features` per network (any family)."""
    from deepreshape.pi.costs.costmodel import features

    m, mult = _grid(family, m, multipliers)
    d = family.stages
    n = len(m)
    rel, mac, par = (np.zeros(n, dtype=np.int64) for _ in range(3))
    stage = np.zeros((n, d), dtype=np.int64)
    feats: dict[str, np.ndarray] = {}
    for i in range(n):
        spec = family.spec(int(m[i]), mult[i])
        c = count(spec)
        rel[i], mac[i], par[i] = c.relus, c.macs, c.params
        stage[i] = [s.relus for s in c.stages]
        for k, v in features(spec).items():
            feats.setdefault(k, np.zeros(n))[i] = v
    return SpaceCounts(family, m, mult, rel, mac, par, stage, feats)


def counts_any(family: Family, m: Sequence[int] | np.ndarray, multipliers: Any,
               slow_limit: int = 2000) -> SpaceCounts:
    """`counts`, or `counts_slow` for a family `counts` does not support (up to `slow_limit`)."""
    try:
        return counts(family, m, multipliers)
    except Unsupported as e:
        if len(np.asarray(m).reshape(-1)) > slow_limit:
            raise UsageError(f"{family.base}: cannot count {len(np.asarray(m).reshape(-1)):,} "
                             f"networks at array speed ({e}); narrow the ranges to "
                             f"{slow_limit:,} networks") from None
        return counts_slow(family, m, multipliers)


# --------------------------------------------------------------------------- costs


def predict(space: SpaceCounts, link: Any = None, protocol: str = "cheetah",
            model: Any = None) -> dict[str, np.ndarray]:
    """Predicted ``latency_s`` and ``bytes`` arrays: the cost model's coefficients on the
    features (`CostModel.predict` per network), plus the link term (`pi.linkcost`)."""
    from deepreshape.pi.costs import linkcost
    from deepreshape.pi.costs.costmodel import FEATURES, CostModel, load

    cm = model if isinstance(model, CostModel) else load(model)
    coef = cm.coef(protocol)
    scale = _he_directions(protocol) / 2  # the features count both directions
    f = {k: v * scale if k.startswith("he_") else v for k, v in space.features.items()}
    missing = [k for k in FEATURES if coef["latency_s"].get(k) or coef["bytes"].get(k)
               if k not in f]
    if missing:
        raise UsageError(f"these counts leave out {', '.join(missing)}; count with he=True")
    out = {t: sum((coef[t].get(k, 0.0) * f[k] for k in FEATURES if coef[t].get(k, 0.0)),
                  np.zeros(len(space))) for t in ("latency_s", "bytes")}
    if not linkcost.fit_over(cm, link):
        out["latency_s"] = out["latency_s"] + linkcost.link_seconds(
            f["relu_layers"], f["linear_layers"], out["bytes"], link)
    return out


def _he_directions(protocol: str) -> int:
    """HE products per matrix product in the setting `CostModel.predict(spec, protocol)`
    prices: 2 with secret-shared weights (both cross terms), 1 with server-owned weights."""
    from deepreshape.pi.costs import costmodel, he

    return int(he.directions(costmodel.split_setting(costmodel.setting(protocol))[1]))


def model_order(order: Sequence[int], stage_relus: np.ndarray) -> np.ndarray:
    """Per row, whether the stage counts follow `order` strictly (1-based stages)."""
    ok = np.ones(len(stage_relus), dtype=bool)
    for a, b in zip(order, order[1:], strict=False):
        ok &= stage_relus[:, a - 1] > stage_relus[:, b - 1]
    return ok


def model_stage_relus(depths: Sequence[int], multipliers: np.ndarray) -> np.ndarray:
    """Algorithm 1's model stage ReLUs (times 4^{D-1}) for rows of multipliers."""
    d = len(depths)
    out = np.empty((len(multipliers), d), dtype=np.int64)
    prod = np.ones(len(multipliers), dtype=np.int64)
    for k in range(d):
        out[:, k] = depths[k] * prod * 4 ** (d - 1 - k)
        if k < d - 1:
            prod = prod * multipliers[:, k]
    return out


def span(text: str, what: str) -> list[int]:
    """'8:64' (every integer), '8:64:8' (a step) or '8,16,32' -> sorted distinct positive ints."""
    t = str(text).replace(" ", "")
    try:
        if ":" in t:
            parts = [int(p) for p in t.split(":")]
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] < 1):
                raise ValueError
            values = list(range(parts[0], parts[1] + 1, parts[2] if len(parts) == 3 else 1))
        else:
            values = [int(p) for p in t.split(",") if p]
    except ValueError:
        raise UsageError(f"{what} must be A:B, A:B:STEP or a list like 8,16,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{what} must list positive integers, got {text!r}")
    return sorted(set(values))


def grid(*axes: Sequence[int]) -> np.ndarray:
    """The Cartesian product of integer axes as rows (last axis fastest)."""
    mesh = np.meshgrid(*[np.asarray(a, dtype=np.int64) for a in axes], indexing="ij")
    return np.stack([x.reshape(-1) for x in mesh], axis=1) if axes else np.empty((1, 0), np.int64)


def size(*axes: Sequence[int]) -> int:
    """Number of grid points."""
    return math.prod(len(a) for a in axes)



# --------------------------------------------------------------------------- named networks

_DIGIT_HASH = str.maketrans("0123456789", "#" * 10)
_NOT_DIGIT = {c: " " for c in range(128) if not chr(c).isdigit()}
_SKELETON = re.compile(r"(resnet#|hrn)((?:-(?:m#|(?:#x)+|d#(?:,#)*))*)")
_BASES = {18: "resnet18", 34: "resnet34", 50: "resnet50"}
_NAMED = re.compile(r"(resnet18|resnet34|resnet50|hrn)((?:-(?:m\d+|(?:\d+x)+|d\d+(?:,\d+)*))*)")
_NAMED_BASE = {"hrn": "hrn-2x2x2x"}


@lru_cache(maxsize=16)
def _named_defaults(base: str) -> tuple[int, tuple[int, ...]]:
    """The base width and depths a name of `base` has when it gives none."""
    spec = parse(_NAMED_BASE.get(base, base))
    return spec.stem.width, tuple(st.depth for st in spec.stages)


def named_family(name: str, input_size: int, num_classes: int
                 ) -> tuple[Family, int, tuple[int, ...]] | None:
    """(family, m, multipliers) of a BaseCh / StageCh / HRN zoo name, read without building
    its spec, or None for any other network (WRN, RegNet, ConvNeXt, widths, stem stride,
    changed slots) and for a name not in the zoo's canonical form. The values are written
    back into a name as `zoo.parse` writes it, and only a name that comes back unchanged
    is read, so a name this reader could misread is left to `parse`."""
    match = _NAMED.fullmatch(name)
    if match is None:
        return None
    base = match.group(1)
    m = mults = depths = None
    for tok in match.group(2).split("-")[1:]:
        if tok[0] == "m":
            m = int(tok[1:])
        elif tok[0] == "d":
            depths = tuple(int(v) for v in tok[1:].split(","))
        else:
            mults = tuple(int(v) for v in tok[:-1].split("x"))
    m0, depths0 = _named_defaults(base)
    hrn = base == "hrn"
    values = (m or 1, *(mults or ()), *(depths or ()))
    if (hrn and mults is None) or min(values) < 1 or max(values) >= 1 << 62:
        return None  # (the array reader's int64 holds no larger number)
    depths = depths or depths0
    n = len(depths)
    plain = (2,) * (n - 1)
    given = mults is not None
    mults = mults or plain
    m = m or m0
    if len(mults) != n - 1:
        return None
    m_part = [f"m{m}"] if m != m0 else []
    mult_part = ["".join(f"{a}x" for a in mults)] if hrn or (given and mults != plain) else []
    parts = [base, *(mult_part + m_part if hrn else m_part + mult_part)]
    if depths != depths0:
        parts.append("d" + ",".join(map(str, depths)))
    if "-".join(parts) != name:
        return None
    return Family(_NAMED_BASE.get(base, base), depths, input_size, num_classes), m, mults


@dataclass
class NamedCounts:
    """Counts and predicted latency of named networks (arrays aligned with the names).

    `covered[i]`: network i is a family member counted from its template (relus, macs,
    params hold its exact counts); `priced[i]`: its latency was predicted (`latency_s`).
    Entries not covered or not priced hold -1 / NaN: count them one by one."""

    relus: np.ndarray
    macs: np.ndarray
    params: np.ndarray
    latency_s: np.ndarray
    covered: np.ndarray
    priced: np.ndarray


def counts_named(names: Sequence[str], input_size: int, num_classes: int,
                 latency: Sequence[bool] | np.ndarray | None = None, protocol: str = "cheetah",
                 model: Any = None) -> NamedCounts:
    """Exact ReLUs / MACs / params of many zoo-named networks at array speed, and the cost
    model's latency (`predict` without a link, as `CostModel.predict(spec, protocol)`) for
    those where `latency[i]` is true (default: none).

    The names are grouped by family (`named_family`) and each group is evaluated from its
    template (`counts`); a name outside the families, or a family the template cannot
    express, is left uncovered for the caller to count one by one."""
    n = len(names)
    want = np.zeros(n, dtype=bool) if latency is None else np.asarray(latency, dtype=bool)
    out = NamedCounts(np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64),
                      np.full(n, -1, dtype=np.int64), np.full(n, np.nan),
                      np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
    for family, (rows, m, mult) in named_groups(names, input_size, num_classes).items():
        sel = want[rows]
        every = bool(sel.all())  # the usual grid: one pass with the HE counts
        try:
            space = counts(family, m, mult, he=every)
        except (Unsupported, UsageError):
            continue
        out.relus[rows], out.macs[rows], out.params[rows] = space.relus, space.macs, space.params
        out.covered[rows] = True
        if not sel.any():
            continue
        try:
            priced = predict(space if every else counts(family, m[sel], mult[sel]), None,
                             protocol, model)
        except (Unsupported, UsageError, KeyError, ValueError):  # no coefficients: one by one
            continue
        out.latency_s[rows[sel]] = priced["latency_s"]
        out.priced[rows[sel]] = True
    return out


def named_groups(names: Sequence[str], input_size: int, num_classes: int
                 ) -> dict[Family, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`named_family` for many names at array speed: family -> (rows of `names`, m,
    multipliers). Names are grouped by their skeleton (the name with every number a
    ``#``: ``hrn-#x#x#x``), each skeleton is read once, and its numbers are checked as
    arrays (canonical form, positive values), so a name costs one regex pass."""
    n = len(names)
    joined = "\n".join(names)  # one pass of C string code over all names, no loop per name
    skeletons = joined.translate(_DIGIT_HASH).split("\n")
    words = joined.translate(_NOT_DIGIT).split()
    if len(skeletons) != n or not joined.isascii():  # a line break or a non-ASCII digit
        return _named_groups_one_by_one(names, input_size, num_classes)
    try:
        flat = np.array(words, dtype=np.int64)
    except (ValueError, OverflowError):  # a number beyond int64: 0, which no check passes
        flat = np.array([int(w) if len(w) < 19 else 0 for w in words], dtype=np.int64)
    if not n:
        return {}
    index: dict[str, int] = {}  # skeleton -> its number, in order of first use
    inverse = np.fromiter((index.setdefault(k, len(index)) for k in skeletons), dtype=np.int64,
                          count=n)
    kinds_of = list(index)
    runs = [re.findall(r"#+", k) for k in kinds_of]
    per_name = np.asarray([len(r) for r in runs], dtype=np.int64)[inverse.reshape(-1)]
    offset = np.concatenate([[0], np.cumsum(per_name)[:-1]]).astype(np.int64)
    if int(per_name.sum()) != len(flat):  # every number a '#' run, and no more
        return _named_groups_one_by_one(names, input_size, num_classes)
    out: dict[Family, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for g, digits in enumerate(kinds_of):
        widths = [len(run) for run in runs[g]]  # digits of each number
        match = _SKELETON.fullmatch(re.sub(r"#+", "#", digits))
        if match is None:
            continue
        rows = np.flatnonzero(inverse.reshape(-1) == g) if len(kinds_of) > 1 else np.arange(n)
        a = flat[offset[rows][:, None] + np.arange(len(widths))[None, :]]
        layout: list[tuple[str, int]] = []  # (kind, how many numbers), in name order
        if match.group(1) == "resnet#":
            layout.append(("base", 1))
        for tok in match.group(2).split("-")[1:]:
            kind = tok[0] if tok[0] in "md" else "x"
            layout.append((kind, tok.count("#")))
        kinds = [k for k, _ in layout if k != "base"]
        hrn = match.group(1) == "hrn"
        canonical = [k for k in (("x", "m", "d") if hrn else ("m", "x", "d")) if k in kinds]
        if kinds != canonical or (hrn and "x" not in kinds):
            continue
        cols: dict[str, np.ndarray] = {}
        at = 0
        for kind, width in layout:
            cols[kind] = a[:, at : at + width]
            at += width
        idx = rows
        bases = cols["base"][:, 0] if "base" in cols else np.zeros(len(idx), dtype=np.int64)
        # positive, and written without leading zeros (a w-digit number is >= 10^(w-1))
        ok = ((a >= np.maximum(1, 10 ** (np.asarray(widths, dtype=np.int64) - 1)))
              & (a < 1 << 62)).all(axis=1)
        for b in np.unique(bases):
            base = "hrn" if hrn else _BASES.get(int(b))
            if base is None:
                continue
            m0, depths0 = _named_defaults(base)
            sel = ok & (bases == b)
            if "d" in cols:
                sel &= (cols["d"] != np.asarray(depths0)).any(axis=1) if cols["d"].shape[1] == len(
                    depths0) else True
                depth_rows = [tuple(int(v) for v in r) for r in np.unique(cols["d"][sel], axis=0)]
            else:
                depth_rows = [depths0]
            if "m" in cols:
                sel &= cols["m"][:, 0] != m0
            for depths in depth_rows:
                dsel = sel & ((cols["d"] == np.asarray(depths)).all(axis=1) if "d" in cols else True)
                stages = len(depths)
                if "x" in cols:
                    if cols["x"].shape[1] != stages - 1:
                        continue
                    mult = cols["x"]
                    if not hrn:
                        dsel = dsel & (mult != 2).any(axis=1)
                else:
                    mult = np.full((len(idx), stages - 1), 2, dtype=np.int64)
                m = cols["m"][:, 0] if "m" in cols else np.full(len(idx), m0, dtype=np.int64)
                if not dsel.any():
                    continue
                fam = Family(_NAMED_BASE.get(base, base), depths, input_size, num_classes)
                out.setdefault(fam, []).append((idx[dsel], m[dsel], mult[dsel]))
    return {f: tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))  # type: ignore[misc]
            for f, chunks in out.items()}


def _named_groups_one_by_one(names: Sequence[str], input_size: int, num_classes: int
                             ) -> dict[Family, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`named_groups` by one `named_family` per name (names the array reader cannot split)."""
    groups: dict[Family, tuple[list[int], list[int], list[tuple[int, ...]]]] = {}
    for i, name in enumerate(names):
        fm = named_family(name, input_size, num_classes)
        if fm is not None:
            rows, ms, mults = groups.setdefault(fm[0], ([], [], []))
            rows.append(i)
            ms.append(fm[1])
            mults.append(fm[2])
    return {f: (np.asarray(r, dtype=np.int64), np.asarray(m, dtype=np.int64),
                np.asarray(x, dtype=np.int64).reshape(len(r), len(f.depths or ()) - 1))
            for f, (r, m, x) in groups.items()}
