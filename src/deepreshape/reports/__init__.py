"""What people read: one run's report (`runreport`, figures in `runplots`), Pareto plots
across runs (`pareto`), and the defensive readers and figure helpers they share.

    from deepreshape.reports import pareto, report
    report("runs/hrn-5x7x2x")                          # RUN/report/report.md + PNGs
    pareto(["runs/"], x="latency", out="pareto.png")   # accuracy against ReLUs/MACs/latency

Names are imported on first use, so `import deepreshape.reports` does not load matplotlib.
"""

from __future__ import annotations

from deepreshape.lazy import lazy_exports

_LAZY = {
    "report": "deepreshape.reports.runreport", "ReportResult": "deepreshape.reports.runreport",
    "md_table": "deepreshape.reports.runreport",
    "pareto": "deepreshape.reports.paretoplot", "ParetoResult": "deepreshape.reports.paretoplot",
    "find_runs": "deepreshape.reports.paretoplot", "load_peers": "deepreshape.reports.paretoplot",
    "pareto_frontier": "deepreshape.reports.paretoplot", "PEER_SETS": "deepreshape.reports.paretoplot",
    "X_AXES": "deepreshape.reports.paretoplot",
    "pi_summary": "deepreshape.reports.readers",
    "criticality_summary": "deepreshape.reports.readers",
}
__all__ = sorted(_LAZY)


lazy_exports(__name__, _LAZY)
