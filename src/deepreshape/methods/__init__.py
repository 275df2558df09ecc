"""ReLU-optimization methods (and the steps around them) as one registry.

``METHODS`` lists every method once: training, criticality, DeepReDuce (with ReLU-reuse),
SNL, secure inference and evaluation, plus whatever plugins register under the
``deepreshape.methods`` entry-point group. The CLI's commands, the sweep's tables, keys,
"finished" checks and result rows, and the labels and colours of reports and Pareto plots
all read it (see `Method` and docs/extending.md).

Listing names imports nothing heavy; a member's module is imported on first use, and its
code (torch, SPU) only when a point runs.
"""

from __future__ import annotations

from typing import Any

from deepreshape.methods.base import (
    OTHER_STYLE,
    ExpandContext,
    Method,
    Style,
    check_of,
    network_row,
    of_targets,
    pi_fields,
    recipe_values,
)
from deepreshape.registry import Registry

METHODS: Registry[Method] = Registry("method", "deepreshape.methods", builtins={
    "train": "deepreshape.methods.train:METHOD",
    "criticality": "deepreshape.methods.criticality:METHOD",
    "reduce": "deepreshape.methods.reduce:METHOD",
    "snl": "deepreshape.methods.snl:METHOD",
    "pi": "deepreshape.methods.pi:METHOD",
    "eval": "deepreshape.methods.eval:METHOD",
})


def method_of_tag(tag: Any) -> Method | None:
    """The method whose runs carry config ``method`` tag `tag` (a dict with a name; None
    or a missing name is a plain training), or None when no registered method claims it."""
    name = str((tag or {}).get("name") or "baseline").lower() if isinstance(tag, dict) or tag is None \
        else str(tag).lower()
    for m in METHODS:
        if name in m.tag_names():
            return m
    return None


def styles() -> dict[str, tuple[str, str]]:
    """Every label a run can have -> (colour, marker), in registry (legend) order."""
    out: dict[str, tuple[str, str]] = {}
    for m in METHODS:
        for s in m.styles():
            out.setdefault(s.label, (s.colour, s.marker))
    return out


__all__ = ["METHODS", "OTHER_STYLE", "ExpandContext", "Method", "Style", "check_of", "method_of_tag",
           "network_row", "of_targets", "pi_fields", "recipe_values", "styles"]
