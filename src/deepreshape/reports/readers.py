"""What `pareto` and `report` read from a run directory, defensively, and how they name it.

Files other commands add (secure-inference results, ``criticality.json``, ``snl.json``)
may be missing, broken or from an older version: every key is optional, and a file that
cannot be read becomes a note, never an error. A run's display name is short
(``hrn-2x5x2x-m4 +SNL pixel 3,000``, ``resnet18 probe s3 KD``); the exact spec stays in
its JSON.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from deepreshape.pi.records import (
    link_label,
    prediction_check,
    read_results,
    record_link,
    result_key,
)
from deepreshape.rundir.run import Run


def method_labels() -> list[str]:
    """Every label a run's method can have (baseline, DeepReShape, criticality probe,
    DeepReDuce, ReLU-reuse, SNL, and the plugins'), from `deepreshape.methods.METHODS`."""
    from deepreshape.methods import styles

    return list(styles())


# --------------------------------------------------------------------------- small readers


def num(v: Any) -> int | float | None:
    """`v` if it is a finite number (not a bool), else None: JSON from others may hold anything."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return v if math.isfinite(v) else None


def nan(v: Any) -> float:
    """A number for plotting: missing values become gaps (NaN)."""
    n = num(v)
    return math.nan if n is None else float(n)


def pi_summary(data: Any) -> dict | None:
    """protocol, link, latency_s, bytes_sent/recv, bytes (both directions), per_kind and the
    cost model's prediction from one secure-inference result.

    Looks at the top level first, then at nested objects (a summary may be wrapped).
    """
    if not isinstance(data, dict):
        return None
    for d in (data, *(v for v in data.values() if isinstance(v, dict))):
        sent, recv = num(d.get("bytes_sent")), num(d.get("bytes_recv"))
        total = num(d.get("total_bytes"))
        if total is None and sent is not None and recv is not None:
            total = sent + recv
        total = total if total is not None else num(d.get("bytes"))
        latency = num(d.get("latency_s"))
        if latency is None and total is None:
            continue
        kinds = d.get("per_kind") if isinstance(d.get("per_kind"), dict) else {}
        per_kind = {str(k): {"time_s": num(v.get("time_s")), "bytes": num(v.get("bytes"))}
                    for k, v in kinds.items() if isinstance(v, dict)}
        protocol = d.get("protocol", data.get("protocol"))
        return {"protocol": str(protocol) if protocol is not None else None,
                "link": record_link(data), "link_label": link_label(data),
                "key": result_key({**data, "protocol": protocol}),
                "latency_s": latency, "bytes_sent": sent, "bytes_recv": recv, "bytes": total,
                "per_kind": per_kind, "prediction": prediction_check(data)}
    return None


def pi_results(run_dir: Path) -> tuple[dict[str, dict], list[str]]:
    """Every readable secure-inference result of a run, summarized, by ``<protocol>-<link>``
    (loopback first), and notes on what could not be read."""
    raw, notes = read_results(run_dir)
    out = {}
    for key, data in raw.items():
        s = pi_summary(data)
        if s is None:
            notes.append(f"{run_dir / data.get('_file', '?')}: no latency or bytes; left out")
        else:
            out[key] = s
    return out, notes


def criticality_summary(data: Any) -> dict | None:
    """Stages (name, relus, acc, kd_acc, C) and the order from a criticality.json."""
    stages = data.get("stages") if isinstance(data, dict) else data
    if not isinstance(stages, list):
        return None
    rows = []
    for k, s in enumerate(stages, 1):
        if not isinstance(s, dict):
            continue
        c = num(s.get("C", s.get("criticality")))
        rows.append({"name": str(s.get("name", f"stage{k}")), "relus": num(s.get("relus")),
                     "acc": num(s.get("acc")), "kd_acc": num(s.get("kd_acc")), "C": c})
    if not rows:
        return None
    order = data.get("order") if isinstance(data, dict) else None
    order = [int(o) for o in order if num(o) is not None] if isinstance(order, list) else []
    if not order and all(r["C"] is not None for r in rows):  # most critical first
        order = [k + 1 for k in sorted(range(len(rows)), key=lambda k: (-rows[k]["C"], k))]
    return {"stages": rows, "order": order}


# --------------------------------------------------------------------------- names


def method_tag(run: Run) -> dict:
    """The config's method tag ({"name": "baseline"} when there is none)."""
    tag = run.config.get("method")
    return tag if isinstance(tag, dict) else {"name": "baseline"}


def method_kind(run: Run) -> str:
    """Which kind of network a run is, as reports and Pareto legends label it: read from
    one place, the ``method`` tag its maker wrote in its config, and named by the method
    that claims the tag (`Method.label`: baseline, DeepReShape, criticality probe,
    DeepReDuce, ReLU-reuse, SNL, a plugin's display name), or the tag's own name."""
    from deepreshape.methods import method_of_tag

    tag = method_tag(run)
    method = method_of_tag(tag)
    if method is None:
        return str(tag.get("name") or "baseline")
    return method.label(tag, run.spec)


def run_name(run: Run) -> str:
    """A run's short display name: the spec's `short_name()`, or for a criticality probe
    which stage it keeps (``hrn-5x7x2x probe s3 KD``); a network with polynomial
    activations says how many (``... +1,024 polys``), so a plot by ReLUs never shows it as
    if its non-linearities were free."""
    tag = method_tag(run)
    stage = num(tag.get("stage"))
    if str(tag.get("name")) == "criticality" and stage is not None:
        return f"{run.spec.name} probe s{int(stage)}" + (" KD" if tag.get("kd") else "")
    polys = num(run.results.get("polys"))
    return run.spec.short_name() + (f" +{int(polys):,} polys" if polys else "")


def run_dataset(run: Run) -> str:
    """The data set a run was trained on ('' if its config does not say)."""
    data = run.config.get("data")
    return str(data.get("dataset", "")) if isinstance(data, dict) else ""


def protocol_of(key: str) -> str:
    """The protocol part of a ``<protocol>-<link>`` key."""
    return key.partition("-")[0]


__all__ = ["criticality_summary", "link_label", "method_kind", "method_labels", "nan", "num",
           "pi_results", "pi_summary", "protocol_of", "run_dataset", "run_name"]
