"""Predict secure-inference latency and bytes from a spec's analytic counts.

A linear model per protocol and per target (latency, bytes), summed over each stage's
layers (`count.layer_table`) plus a constant per inference. Its features:

- ``relus`` and ``macs``: the usual proxies;
- ``relu_layers`` (layers with >0 ReLUs) and ``linear_layers`` (conv/linear): what a
  count misses: every ReLU layer costs protocol rounds, every linear layer a fixed
  overhead;
- ``he_sent``, ``he_outputs``, ``he_response``, ``he_automorphisms``, ``he_muls``: what
  Cheetah's HE matrix products really do (`deepreshape.pi.costs.he`): ciphertexts sent,
  computed and returned, Galois automorphisms to pack results, ciphertext-plaintext
  products. Under Cheetah a layer's cost follows these, not its MACs;
- ``params`` and ``activations`` (weights and outputs of conv/linear layers): the
  weights are secret-shared too, so SEMI2K opens Beaver-masked weights and inputs
  (bytes proportional to both, not to MACs);
- ``masked_relus``: ReLUs of partially masked SNL slots, which the export runs as
  gathers around a ReLU on the kept positions only (see docs/pi-costs.md).

What a ReLU slot adds to its stage's features is its kind's `SlotKindDef.cost_features`
(`deepreshape.slotkinds`); a kind may add a feature of its own, which rows carry and
models price at 0 until a calibration fits it.

Coefficients are fit by non-negative least squares on *relative* residuals (each
network's row divided by its measured value, so a 2 s and a 20 s network weigh the
same), one part of SPU's profile at a time (`COMPONENTS`). Which feature columns a part
uses is chosen by leave-one-out error on the calibration set alone (smallest set first),
since the calibration set is small; networks left out of the fit entirely give the
held-out error. Calibration measures real two-party runs of small randomly initialized
networks (costs do not depend on weight values). The shipped fit is
`resources/costmodel.json`, measured on this project's 2-core machine; refit with
`calibration.calibrate` (``deepreshape pi --calibrate``) for another machine or network
link. Coefficients are keyed by protocol and weights mode (`setting`).

`literature` is a second, independent estimate: Delphi-style HE + garbled circuits with
the per-ReLU and per-MAC constants that Garimella et al. (ASPLOS 2023) measured, labelled
as such; it is not a measurement of SPU.

One module on purpose (about 580 lines): features, fit, prediction and the shipped file's
format share one feature vocabulary and change together; splitting them would spread one
change over several files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from deepreshape.count import layer_table
from deepreshape.errors import UsageError
from deepreshape.fileio import write_json
from deepreshape.pi.costs.he import HE_COUNTS, directions, layer_counts
from deepreshape.pi.protocols import PROTOCOLS, default_weights
from deepreshape.spec import NetSpec, relu_slots
from deepreshape.zoo import parse

STAGE_FEATURES = ("relus", "macs", "relu_layers", "linear_layers", "params", "activations",
                  "masked_relus", *HE_COUNTS)
"""Per-stage features (see the module docstring)."""
FEATURES = (*STAGE_FEATURES, "fixed")
"""Model columns: the stage features summed over the network, plus 1 per inference."""
TARGETS = ("latency_s", "bytes")
RELU_FEATURES = ("relus", "relu_layers", "masked_relus")
LINEAR_FEATURES = ("macs", "linear_layers", "params", "activations", *HE_COUNTS)
_CONV = ("macs", "linear_layers")
_HE = ("he_sent", "he_response")
_MAC_SETS = (_CONV, (*_CONV, "params"), (*_CONV, "activations"), (*_CONV, "params", "activations"))
_HE_SETS = (_HE, (*_HE, "activations"), (*_HE, "he_automorphisms"),
            (*_HE, "he_automorphisms", "he_muls"), (*_HE, "activations", "linear_layers"),
            (*_HE, "he_automorphisms", "he_muls", "activations"),
            (*_HE, "he_automorphisms", "he_muls", "he_outputs"),
            (*_HE, "he_automorphisms", "he_muls", "he_outputs", "activations"),
            (*_HE, "he_automorphisms", "he_muls", "he_outputs", "activations", "linear_layers"))
COMPONENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "relu": (("relus", "relu_layers"),),
    "conv": _MAC_SETS,
    "rest": (("relus", "fixed"), ("relus", "masked_relus", "fixed"),
             ("relus", "masked_relus", "activations", "fixed")),
}
"""Parts of a measured cost, each fit on its own columns (candidate sets, smallest first):
the profile's ReLU ops (comparisons), its convolutions/matmuls, and the rest (the
multiply by the comparison bit, masked-slot gathers, layout ops, per-run overhead). The
conv part's sets depend on the protocol (`candidates_for`)."""
CONV_SETS = {"he": _HE_SETS, "mac": _MAC_SETS}
"""Conv-part candidates per feature family, a protocol's `Protocol.cost_key`: ``mac``
(SEMI2K) products are local arithmetic plus Beaver openings (costs follow MACs, weights
and outputs); ``he`` (Cheetah) products are HE products (costs follow its ciphertexts;
``activations`` pays the truncation after each fixed-point product, which SPU books under
the convolution)."""


def candidates_for(protocol: str | None = None) -> dict[str, tuple[tuple[str, ...], ...]]:
    """`COMPONENTS` with the conv candidates of `protocol`'s cost key (the MAC sets if the
    protocol or its key is unknown)."""
    key = PROTOCOLS.get(protocol).cost_key if protocol in PROTOCOLS else ""
    return {**COMPONENTS, "conv": CONV_SETS.get(key, COMPONENTS["conv"])}


FORMAT = 1
TARGET_REL_ERR = 0.15


def setting(protocol: str, weights: str | None = None) -> str:
    """The model's key for a protocol and weights mode: the protocol's name for its default
    mode (``cheetah`` = owned weights), else e.g. ``cheetah/shared-weights``."""
    weights = weights or default_weights(protocol)
    directions(weights)  # validates
    return protocol if weights == default_weights(protocol) else f"{protocol}/{weights}-weights"


def split_setting(key: str) -> tuple[str, str]:
    """Inverse of `setting`: (protocol, weights)."""
    protocol, _, rest = key.partition("/")
    return protocol, rest.removesuffix("-weights") if rest else default_weights(protocol)


def _directions(key: str) -> int:
    """HE products per matrix product under a model key (1 with owned weights, else 2)."""
    return directions(split_setting(key)[1])


# --------------------------------------------------------------------------- features


def stage_features(spec: NetSpec, he_directions: int = 2) -> dict[str, dict[str, float]]:
    """Features per stage (stage1..stageD, head), from the analytic layer table.

    `he_directions`: HE products per matrix product (`cheetah.directions`: 2 with shared
    weights, 1 with server-owned weights)."""
    out: dict[str, dict[str, float]] = {}
    slots = {s.address: s for s in relu_slots(spec)}
    for row in layer_table(spec):
        f = out.setdefault(row.stage, dict.fromkeys(STAGE_FEATURES, 0.0))
        c, h, w = row.shape
        if row.kind == "relu":  # a ReLU slot: its kind says what it adds
            kind = spec.slot_kind(row.name)
            for k, v in kind.definition.cost_features(kind, slots[row.name], row.relus).items():
                f[k] = f.get(k, 0.0) + v
        elif row.kind in ("conv", "linear"):
            f["macs"] += row.macs
            f["linear_layers"] += 1
            f["params"] += row.params
            f["activations"] += c * h * w
            for k, v in layer_counts(row, he_directions).items():
                f[k] += v
    return out


def features(spec: NetSpec, he_directions: int = 2) -> dict[str, float]:
    """The network's model row: stage features summed, plus ``fixed`` = 1."""
    total = dict.fromkeys(FEATURES, 0.0)
    for f in stage_features(spec, he_directions).values():
        for k, v in f.items():
            total[k] = total.get(k, 0.0) + v
    total["fixed"] = 1.0
    return total


# --------------------------------------------------------------------------- fitting


def fit_nnls(rows: Sequence[Mapping[str, float]], y: Sequence[float],
             columns: Sequence[str] = FEATURES, scale: Sequence[float] | None = None
             ) -> dict[str, float]:
    """Non-negative least squares ``y ~ rows @ coef``; costs cannot be negative.

    Each row and target is divided by its `scale` (default: the target itself), so the
    fit minimizes relative errors; fitting one part of a network's cost, pass the
    network's total. Columns are scaled to unit norm first, since ReLUs, MACs and the
    constant differ by six orders of magnitude.
    """
    from scipy.optimize import nnls

    a = np.array([[float(r[c]) for c in columns] for r in rows], dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    w = b if scale is None else np.asarray(scale, dtype=np.float64)
    if a.ndim != 2 or len(a) != len(b) or len(b) == 0 or len(w) != len(b):
        raise UsageError("fit needs one target per row and at least one row")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(np.isfinite(w))
            and np.all(b >= 0) and np.all(w > 0)):
        raise UsageError("fit needs finite features and positive measured targets")
    a, b = a / w[:, None], b / w
    norm = np.linalg.norm(a, axis=0)
    norm[norm == 0] = 1.0
    coef, _ = nnls(a / norm, b)
    return {c: float(v) for c, v in zip(columns, coef / norm, strict=True)}


def apply(coef: Mapping[str, float], row: Mapping[str, float]) -> float:
    """Linear prediction: sum of coefficient times feature over the row's features."""
    return float(sum(coef.get(k, 0.0) * float(v) for k, v in row.items()))


def errors(coef: Mapping[str, float], rows: Sequence[Mapping[str, float]],
           y: Sequence[float]) -> list[float]:
    """Relative errors (predicted - measured) / measured."""
    return [(apply(coef, r) - t) / t for r, t in zip(rows, y, strict=True)]


def error_summary(errs: Sequence[float]) -> dict[str, float]:
    """Mean and max absolute error of `errs` (NaN when empty)."""
    a = np.abs(np.asarray(errs, dtype=np.float64))
    return {"mean_abs": float(a.mean()), "max_abs": float(a.max()), "n": int(len(a))} if len(a) \
        else {"mean_abs": math.nan, "max_abs": math.nan, "n": 0}


# --------------------------------------------------------------------------- the model


@dataclasses.dataclass
class CostModel:
    """Coefficients per protocol and target, with how they were obtained (`meta`)."""

    coefficients: dict[str, dict[str, dict[str, float]]]  # `setting` -> target -> feature -> c
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def has(self, protocol: str, weights: str | None = None) -> bool:
        """True when the model has coefficients for `protocol` with `weights` (`setting`)."""
        return setting(protocol, weights) in self.coefficients

    def coef(self, protocol: str, weights: str | None = None) -> dict[str, dict[str, float]]:
        """Coefficients by target; UsageError naming how to calibrate if missing."""
        key = setting(protocol, weights)
        if key not in self.coefficients:
            how = f" --weights {split_setting(key)[1]}" if "/" in key else ""
            raise UsageError(f"the cost model has no coefficients for {key!r} "
                             f"(it has {', '.join(sorted(self.coefficients)) or 'none'}); "
                             f"run `deepreshape pi --calibrate --protocol {protocol}{how}`")
        return self.coefficients[key]

    def predict(self, spec: NetSpec, protocol: str = "cheetah",
                weights: str | None = None) -> dict[str, Any]:
        """Latency (s) and bytes (both directions) of one query, in total and per stage.

        Each stage row splits into its ReLU part (ReLUs, ReLU layers, masked ReLUs) and
        its linear part (MACs, conv/linear layers, weights, outputs); the per-inference
        constant is the row ``fixed``. The rows of `per_stage` sum to the totals.
        `heldout_error` is the model's own error on networks it was not fit on: read the
        prediction with that error bar. `weights` is the weights mode (`setting`; default
        the protocol's own).
        """
        c = self.coef(protocol, weights)
        key = setting(protocol, weights)
        per_stage = stage_features(spec, _directions(key))
        unpriced = sorted({k for f in per_stage.values() for k, v in f.items()
                           if v and k not in STAGE_FEATURES and k not in c["latency_s"]})
        if unpriced:  # a slot kind's own feature (a polynomial's): never priced as free
            raise UsageError(
                f"{spec.describe()}: the cost model has no coefficients for "
                f"{', '.join(unpriced)} under {key!r}, so it cannot price this network; "
                "measure it with `deepreshape pi RUN`")
        rows = []
        for stage, f in per_stage.items():
            row: dict[str, Any] = {"stage": stage, "relus": int(f["relus"]), "macs": int(f["macs"])}
            for t in TARGETS:
                # the non-linear part: ReLUs, and any slot kind's own priced features
                relu = sum(c[t].get(k, 0.0) * v for k, v in f.items()
                           if k in RELU_FEATURES or k not in STAGE_FEATURES)
                lin = sum(c[t].get(k, 0.0) * f[k] for k in LINEAR_FEATURES)
                row.update({t: relu + lin, f"relu_{t}": relu, f"linear_{t}": lin})
            rows.append(row)
        fixed: dict[str, Any] = {"stage": "fixed", "relus": 0, "macs": 0}
        for t in TARGETS:
            fixed.update({t: c[t].get("fixed", 0.0), f"relu_{t}": 0.0, f"linear_{t}": 0.0})
        rows.append(fixed)
        out: dict[str, Any] = {"arch": spec.describe(), "input_size": spec.input_size,
                               "protocol": protocol, "weights": split_setting(key)[1],
                               "relus": sum(r["relus"] for r in rows),
                               "macs": sum(r["macs"] for r in rows)}
        for t in TARGETS:
            total = sum(r[t] for r in rows)
            relu = sum(r[f"relu_{t}"] for r in rows)
            lin = sum(r[f"linear_{t}"] for r in rows)
            out[t] = total
            out[f"relu_share_{t}"] = relu / total if total else 0.0
            out[f"linear_share_{t}"] = lin / total if total else 0.0
        out["per_stage"] = rows
        out["heldout_error"] = self.meta.get("report", {}).get(key, {}).get("heldout_error")
        out["link"] = self.meta.get("link")  # None: calibrated on loopback
        where = provenance(self, key).get("machine_summary") or "see costmodel.json"
        out["source"] = f"SPU {protocol} cost model fit on this toolkit's measurements ({where})"
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the format tag, features and coefficients."""
        return {"format": FORMAT, "features": list(FEATURES), "coefficients": self.coefficients,
                **self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CostModel:
        """Parse and validate a saved cost model; UsageError if it is not one."""
        try:
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {FORMAT}")
            coefs = {
                str(p): {t: {str(k): float(v) for k, v in dict(by_t[t]).items()} for t in TARGETS}
                for p, by_t in dict(d["coefficients"]).items()
            }
            for p, by_t in coefs.items():
                for t, c in by_t.items():
                    bad = [k for k, v in c.items() if k not in FEATURES or not math.isfinite(v)]
                    if bad:
                        raise ValueError(f"{p}/{t}: unknown or non-finite coefficient {bad[0]!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UsageError(f"not a deepreshape cost model: {e}") from None
        meta = {k: v for k, v in d.items() if k not in ("format", "features", "coefficients")}
        return cls(coefs, meta)

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON to `path`."""
        return write_json(path, self.to_dict())


def load(path: str | Path | None = None) -> CostModel:
    """A saved cost model, or the shipped one (`resources/costmodel.json`) for None."""
    try:
        if path is None:
            text = resources.files("deepreshape.resources").joinpath("costmodel.json").read_text()
        else:
            text = Path(path).read_text()
        return CostModel.from_dict(json.loads(text))
    except FileNotFoundError:
        raise UsageError(f"{path or 'the shipped costmodel.json'}: no such cost model file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: broken cost model file ({e})") from None


def predict(spec: NetSpec, protocol: str = "cheetah", model: CostModel | str | Path | None = None,
            weights: str | None = None) -> dict[str, Any]:
    """`CostModel.predict` with the shipped (or given) coefficients."""
    m = model if isinstance(model, CostModel) else load(model)
    return m.predict(spec, protocol, weights)


# --------------------------------------------------------------------------- literature

# Garimella et al., ASPLOS 2023 (via the seed paper's journal version; see
# shared/reference/peers.md): Delphi-style PI of ResNet18 on CIFAR, 557,056 ReLUs and
# 555,468,800 MACs (this toolkit's count), AMD EPYC 7502, one thread.
_LIT_RESNET18_MACS = 555_468_800
LITERATURE = {
    "online_s_per_relu": 10.17 / 557_056,  # GC evaluation
    "online_s_per_mac": 0.43 / _LIT_RESNET18_MACS,  # secret-shared linear layers
    "offline_s_per_relu": 16.99 / 557_056,  # garbling
    "offline_s_per_mac": 286.0 / _LIT_RESNET18_MACS,  # HE evaluation, 1 thread
    "online_bytes_per_relu": 1184 + 2016,  # GC labels + OT
    "offline_bytes_per_relu": 17_070,  # garbled-circuit storage/transfer
}
LITERATURE_SOURCE = ("literature estimate, not measured here: Delphi-style HE (linear) + "
                     "garbled circuits (ReLU), constants from Garimella et al. (ASPLOS 2023) on "
                     "an AMD EPYC 7502, one thread, ResNet18/CIFAR")


def literature(spec: NetSpec) -> dict[str, Any]:
    """The HE+GC (Delphi) estimate: online and offline latency and bytes from counts alone."""
    f = features(spec)
    k = LITERATURE
    on_relu, on_lin = f["relus"] * k["online_s_per_relu"], f["macs"] * k["online_s_per_mac"]
    off_relu, off_lin = f["relus"] * k["offline_s_per_relu"], f["macs"] * k["offline_s_per_mac"]
    return {
        "online_latency_s": on_relu + on_lin,
        "online_relu_share": on_relu / (on_relu + on_lin) if on_relu + on_lin else 0.0,
        "offline_latency_s": off_relu + off_lin,
        "online_bytes": f["relus"] * k["online_bytes_per_relu"],
        "offline_bytes": f["relus"] * k["offline_bytes_per_relu"],
        "source": LITERATURE_SOURCE,
    }


# --------------------------------------------------------------------------- calibration


@dataclasses.dataclass(frozen=True)
class Network:
    """A calibration network: zoo name, input size and changed slots (10 classes)."""

    arch: str
    input_size: int
    slots: tuple[tuple[str, str], ...] = ()

    def spec(self) -> NetSpec:
        """The network's spec with its slot changes applied."""
        s = parse(self.arch, input_size=self.input_size, num_classes=10)
        return s.with_slots(dict(self.slots)) if self.slots else s

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored with calibration results)."""
        return {"arch": self.arch, "input_size": self.input_size, "slots": dict(self.slots)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Network:
        """Inverse of `to_dict`."""
        return cls(str(d["arch"]), int(d["input_size"]),
                   tuple(sorted(dict(d.get("slots", {})).items())))


def _targets(rec: Mapping[str, Any]) -> dict[str, float]:
    return {"latency_s": float(rec["latency_s"]), "bytes": float(rec["total_bytes"])}


def components(rec: Mapping[str, Any], target: str) -> dict[str, float]:
    """A measurement split into its profile parts: relu, conv and rest (total minus both)."""
    key = "time_s" if target == "latency_s" else "bytes"
    kinds = rec["per_kind"]
    total = _targets(rec)[target]
    relu, conv = float(kinds["relu"].get(key, 0.0)), float(kinds["conv"].get(key, 0.0))
    return {"relu": relu, "conv": conv, "rest": max(0.0, total - relu - conv)}


def loo_error(rows: Sequence[Mapping[str, float]], y: Sequence[float],
              columns: Sequence[str], scale: Sequence[float] | None = None) -> float:
    """Mean absolute leave-one-out error of an NNLS fit on `columns`, relative to `scale`."""
    w = list(y) if scale is None else list(scale)
    errs = []
    for i in range(len(rows)):
        coef = fit_nnls([*rows[:i], *rows[i + 1:]], [*y[:i], *y[i + 1:]], columns,
                        [*w[:i], *w[i + 1:]])
        errs.append(abs(apply(coef, rows[i]) - y[i]) / w[i])
    return float(np.mean(errs))


def select_and_fit(rows: Sequence[Mapping[str, float]], y: Sequence[float],
                   candidates: Sequence[Sequence[str]], scale: Sequence[float] | None = None,
                   tolerance: float = 0.005) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit on the candidate column set with the lowest leave-one-out error.

    A larger set must beat the best smaller one by `tolerance` (absolute), so exact or
    near-exact data keeps the simplest model. Unused columns get coefficient 0.
    """
    scores = [loo_error(rows, y, cols, scale) if len(rows) > len(cols) + 1 else math.inf
              for cols in candidates]
    best = 0
    for i, sc in enumerate(scores):
        if sc < scores[best] - tolerance:
            best = i
    coef = fit_nnls(rows, y, candidates[best], scale)
    return ({k: coef.get(k, 0.0) for k in FEATURES},
            {"columns": list(candidates[best]), "loo_mean_abs": scores[best],
             "candidates": [{"columns": list(c), "loo_mean_abs": sc}
                            for c, sc in zip(candidates, scores, strict=True)]})


def fit_records(records: Sequence[Mapping[str, Any]], protocol: str | None = None
                ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Coefficients per target from measurement records (with ``features`` and
    ``per_kind``), and per part of the profile how it was fit.

    Each part (`candidates_for(protocol)`) is fit on its own columns, relative to the total,
    and the model is their sum: a ReLU's cost comes from the ReLU ops alone and cannot
    be traded against a correlated convolution feature, so the coefficients keep their
    meaning (per ReLU, per MAC, per layer).
    """
    rows = [r["features"] for r in records]
    coefs: dict[str, dict[str, float]] = {}
    how: dict[str, Any] = {}
    for t in TARGETS:
        totals = [_targets(r)[t] for r in records]
        coefs[t] = dict.fromkeys(FEATURES, 0.0)
        how[t] = {}
        for part, candidates in candidates_for(protocol).items():
            y = [components(r, t)[part] for r in records]
            coef, how[t][part] = select_and_fit(rows, y, candidates, totals)
            how[t][part]["coefficients"] = {k: v for k, v in coef.items() if v}
            for k, v in coef.items():
                coefs[t][k] += v
    return coefs, how


def evaluate_records(coef: Mapping[str, Mapping[str, float]],
                     records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each record's measured and predicted latency and bytes, with relative errors."""
    out = []
    for r in records:
        row = {"arch": r["arch"], "input_size": r["input_size"],
               "relus": int(r["features"]["relus"]), "macs": int(r["features"]["macs"])}
        for t in TARGETS:
            m, p = _targets(r)[t], apply(coef[t], r["features"])
            row.update({f"{t}_measured": m, f"{t}_predicted": p, f"{t}_rel_err": (p - m) / m})
        out.append(row)
    return out


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Relative-error summaries of calibration rows, per target."""
    return {t: error_summary([r[f"{t}_rel_err"] for r in rows]) for t in TARGETS}


def fit_measurements(measured: Mapping[str, Sequence[Mapping[str, Any]]],
                     meta: Mapping[str, Any]) -> CostModel:
    """Fit and evaluate from stored measurements (``part`` calibration or heldout).

    `calibrate` measures and then calls this; `refit` calls it on a saved model's
    measurements, e.g. after changing the features, without measuring again.
    """
    coefs: dict[str, dict[str, dict[str, float]]] = {}
    report: dict[str, Any] = {}
    for key, rows in measured.items():
        protocol, _ = split_setting(key)
        recs = [{**r, "features": features(Network.from_dict(r["network"]).spec(),
                                           _directions(key))} for r in rows]
        cal = [r for r in recs if r["part"] == "calibration"]
        held = [r for r in recs if r["part"] == "heldout"]
        coefs[key], selection = fit_records(cal, protocol)
        fit_rows = evaluate_records(coefs[key], cal)
        held_rows = evaluate_records(coefs[key], held)
        report[key] = {"fit_error": summarize(fit_rows), "heldout_error": summarize(held_rows),
                       "calibration": fit_rows, "heldout": held_rows, "selection": selection}
    return CostModel(coefs, {**meta, "report": report, "measurements": dict(measured)})


def transfer(model: CostModel, source: str, target: str,
             records: Sequence[Mapping[str, Any]] = (), targets: Sequence[str] = TARGETS,
             note: str = "") -> CostModel:
    """`model` with `target`'s coefficients copied from `source` (both `setting` keys).

    The per-operation costs stay, the counts are `target`'s own: with owned weights SPU
    runs one of the two HE products that shared weights run per layer, with the same
    blocks, so the shared-weights coefficients applied to the owner-aware counts predict
    the owned mode before (or without) a calibration of its own. `records` (measurements
    of `target`: ``network``, ``latency_s``, ``total_bytes``) give its error, reported as
    its held-out error for the `targets` measured reliably; `note` says why and how.
    """
    if source not in model.coefficients:
        raise UsageError(f"the cost model has no coefficients for {source!r}")
    specs = [Network.from_dict(r["network"]).spec() for r in records]
    rows = [{**r, "arch": spec.describe(), "input_size": spec.input_size,
             "features": features(spec, _directions(target))}
            for r, spec in zip(records, specs, strict=True)]
    checked = evaluate_records(model.coefficients[source], rows)
    report = {"derived_from": source, "note": note, "targets": list(targets),
              "checked_on": checked,
              "heldout_error": {t: error_summary([r[f"{t}_rel_err"] for r in checked])
                                for t in targets}}
    meta = {**model.meta, "report": {**model.meta.get("report", {}), target: report},
            "derived_measurements": {**model.meta.get("derived_measurements", {}),
                                     target: [dict(r) for r in records]}}
    return CostModel({**model.coefficients, target: dict(model.coefficients[source])}, meta)


_PROVENANCE = ("date", "machine_summary", "method")


def provenance(model: CostModel, key: str) -> dict[str, Any]:
    """When, where and how `key`'s coefficients were obtained (date, machine, method)."""
    return dict(model.meta.get("settings", {}).get(key)
                or {k: model.meta.get(k) for k in _PROVENANCE})


def merge(base: CostModel, update: CostModel) -> CostModel:
    """`base` with every setting `update` has replaced by `update`'s, the others kept.

    Lets one protocol or weights mode be recalibrated without measuring the others again.
    Each setting keeps its own date, machine and method in ``meta["settings"]``; the
    top-level ones are `update`'s. Both must be calibrated over the same link.
    """
    if base.meta.get("link") != update.meta.get("link"):
        raise UsageError("cannot merge cost models calibrated over different links "
                         f"({base.meta.get('link')} and {update.meta.get('link')})")
    new = set(update.coefficients)
    settings = {k: provenance(base, k) for k in base.coefficients if k not in new}
    settings.update({k: provenance(update, k) for k in update.coefficients})

    def joined(name: str) -> dict[str, Any]:
        kept = {k: v for k, v in base.meta.get(name, {}).items() if k not in new}
        return {**kept, **update.meta.get(name, {})}

    meta = {**base.meta, **update.meta, "settings": settings, "report": joined("report"),
            "measurements": joined("measurements")}
    derived = joined("derived_measurements")
    if derived:
        meta["derived_measurements"] = derived
    else:
        meta.pop("derived_measurements", None)
    return CostModel({**base.coefficients, **update.coefficients}, meta)


def refit(model: CostModel | str | Path | None = None) -> CostModel:
    """Refit a saved model (default: the shipped one) from the measurements it stores."""
    m = model if isinstance(model, CostModel) else load(model)
    if "measurements" not in m.meta:
        raise UsageError("this cost model stores no measurements to refit from")
    meta = {k: v for k, v in m.meta.items() if k not in ("report", "measurements")}
    out = fit_measurements(m.meta["measurements"], meta)
    for key, rep in m.meta.get("report", {}).items():  # derived ones again, from their source
        if "derived_from" in rep and key not in out.coefficients:
            out = transfer(out, rep["derived_from"], key,
                           m.meta.get("derived_measurements", {}).get(key, []),
                           rep.get("targets", TARGETS), rep.get("note", ""))
    return out
