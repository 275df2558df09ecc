"""A report per run: the figures and tables a PI paper shows for one network.

Reads the run directory only (`config.json`, `results.json`, `metrics.jsonl`, and when
present its secure-inference results, one per (protocol, link), `criticality.json`,
`snl.json`, `reduce.json`); what is missing or broken becomes a note, not an error. Every
figure's title names the run (its short display name) and its data set; the figures are
drawn by `reports.runplots`. `pareto` (many runs) lives in `reports.pareto`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepreshape import fileio
from deepreshape.count import Counts, count, normalized_stagewise
from deepreshape.errors import CheckpointError, UsageError
from deepreshape.reports.readers import (
    criticality_summary,
    method_kind,
    num,
    pi_results,
    run_dataset,
    run_name,
)
from deepreshape.reports.runplots import (
    plot_criticality,
    plot_normalized,
    plot_pi,
    plot_relu_share,
    plot_training,
)
from deepreshape.rundir import schema
from deepreshape.rundir.run import Run, load_run


@dataclass
class ReportResult:
    """Where the report went, which plots it has, and what was left out and why."""

    run: Path
    out: Path
    markdown: Path
    plots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    who: str = ""  # "<short name> on <data set>", in every figure title

    def to_dict(self) -> dict:
        """A JSON-ready dict of what was written (`report --json`)."""
        return {"run": str(self.run), "out": str(self.out), "markdown": str(self.markdown),
                "plots": {k: str(v) for k, v in self.plots.items()}, "notes": self.notes,
                "summary": self.summary}


def md_table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A Markdown table; `align` one letter per column, l or r (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in [headers, sep, *rows])


def _pct(v: Any) -> str:
    return "n/a" if num(v) is None else f"{v:.2f}%"


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if num(v) is None else format(v, spec)


def _int(v: Any) -> str:
    return "n/a" if num(v) is None else f"{int(v):,}"


def _mb(v: Any) -> str:
    return "n/a" if num(v) is None else f"{v / 1e6:,.3f} MB"


def _network_md(run: Run) -> str:
    spec, cfg = run.spec, run.config
    data = cfg.get("data", {}) if isinstance(cfg.get("data"), dict) else {}
    method = cfg.get("method") if isinstance(cfg.get("method"), dict) else {}
    recipe = cfg.get("recipe") if isinstance(cfg.get("recipe"), dict) else {}
    stem = (f"3x3 conv, {spec.stem.width} channels, stride {spec.stem.stride}"
            + (", BN + ReLU" if spec.stem.bn_relu else " (bare: pre-activation)"))
    settings = ", ".join(f"{k}={v}" for k, v in method.items()
                         if k != "name" and not isinstance(v, dict | list))
    facts = [["network", f"`{run_name(run)}`"], ["architecture", f"`{spec.name}`"],
             ["family", spec.family],
             ["data set", f"{data.get('dataset', '?')} ({spec.input_size}x{spec.input_size}, "
                          f"{spec.num_classes} classes)"],
             ["stem", stem], ["stage multipliers", " x ".join(f"{m:g}" for m in spec.multipliers)],
             ["changed ReLU slots", f"{len(spec.slots)} (listed under Exact spec)" if spec.slots
              else "0"],
             ["method", method_kind(run) + (f" ({settings})" if settings else "")],
             ["teacher (KD)", str(cfg.get("teacher") or "none")],
             ["recipe", ", ".join(f"{k} {recipe[k]}" for k in ("epochs", "batch_size", "lr",
                                                              "weight_decay", "optimizer") if k in recipe)],
             ["seed", str(cfg.get("seed", "?"))]]
    stages = [[f"stage{k}", s.block, s.depth, s.width, s.stride]
              for k, s in enumerate(spec.stages, 1)]
    return "\n\n".join([md_table(["network", ""], facts, "ll"),
                        md_table(["stage", "block", "depth", "width", "stride"], stages)])


def _counts_md(c: Counts) -> str:
    total = max(c.relus, 1)
    rows = [[s.name, f"{s.relus:,}", f"{100 * s.relus / total:.1f}%", f"{s.macs:,}", f"{s.params:,}"]
            for s in (*c.stages, c.head)]
    rows.append(["**total**", f"**{c.relus:,}**", "100.0%", f"**{c.macs:,}**", f"**{c.params:,}**"])
    return (md_table(["stage", "ReLUs", "share", "MACs", "params"], rows)
            + f"\n\nStem ReLUs (included in stage1): {c.stem_relus:,}; without the stem: "
            f"{c.relus - c.stem_relus:,} (SNL's convention).")


def _normalized_md(norm: dict[str, list[float]]) -> str:
    rows = [[f"stage{k + 1}", f"{r:.2f}", f"{f:.2f}", f"{m:.2f}"] for k, (r, f, m)
            in enumerate(zip(norm["relus"], norm["flops_model"], norm["macs_exact"], strict=True))]
    return ("ReLUs and MACs without the stem, scaled so that stage1 = 64; FLOPs (model) is the "
            "paper's idealized per-stage formula (Table 2).\n\n"
            + md_table(["stage", "ReLUs", "FLOPs (model)", "MACs (exact)"], rows))


def _results_md(results: dict, metrics: list[dict]) -> str:
    if not results:
        return f"No {schema.RESULTS.name} yet (training unfinished?)."
    wall = num(results.get("wall_time_s"))
    rows = [["final accuracy (last epoch)", f"**{_pct(results.get('final_acc'))}**"],
            ["best accuracy (information only)", _pct(results.get("best_acc"))],
            ["epochs", str(results.get("epochs", len(metrics)))],
            ["stopped early", str(results.get("stopped_early", False))],
            ["wall time", "n/a" if wall is None else f"{wall:.1f} s"],
            ["ReLUs / MACs / params", " / ".join(_int(results.get(k)) for k in ("relus", "macs", "params"))]]
    return md_table(["result", ""], rows, "ll")


def _training_md(metrics: list[dict], keep: int = 10) -> str:
    shown = metrics[-keep:]
    rows = [[m.get("epoch", "?"), _fmt(m.get("loss"), ".4f"), _pct(m.get("train_acc")),
             _pct(m.get("test_acc")), _fmt(m.get("lr"), ".4g"), _fmt(m.get("images_per_s"), ",.0f")]
            for m in shown]
    head = "" if len(shown) == len(metrics) else f"Last {keep} of {len(metrics)} epochs.\n\n"
    return head + md_table(["epoch", "loss", "train acc", "test acc", "lr", "images/s"], rows)


def _criticality_md(crit: dict) -> str:
    rows = [[r["name"], _int(r["relus"]), _pct(r["acc"]), _pct(r["kd_acc"]),
             "n/a" if r["C"] is None else f"{r['C']:.3f}"] for r in crit["stages"]]
    order = ", ".join(map(str, crit["order"])) or "n/a"
    return (md_table(["stage", "ReLUs", "acc", "KD acc", "C_k"], rows)
            + f"\n\nCriticality order (most to least critical stage): **{order}**")


def _prediction_cell(pi: dict) -> str:
    p = pi.get("prediction")
    if not p:
        return "n/a"
    off = p["latency_off"]
    flag = "" if off is None else f", measured {100 * off:+.0f}%" + (" (> 25% off)" if p["far"] else "")
    return f"{p['latency_s']:.4g} s (calibrated over {p.get('calibrated_label', p['calibrated_over'])}{flag})"


def _pi_md(results: dict[str, dict]) -> str:
    """One row per (protocol, link): latency and bytes always with the link they were
    measured over, the cost model's prediction beside them; then time and bytes per kind."""
    rows = [[pi["protocol"] or "?", pi["link_label"],
             "n/a" if pi["latency_s"] is None else f"{pi['latency_s']:.4g} s",
             _mb(pi["bytes_sent"]), _mb(pi["bytes_recv"]), _mb(pi["bytes"]), _prediction_cell(pi)]
            for pi in results.values()]
    text = md_table(["protocol", "link", "online latency", "sent", "received",
                      "total (both ways)", "cost model predicted"], rows, "llrrrrl")
    for pi in results.values():
        if pi["per_kind"]:
            kinds = [[k, "n/a" if v["time_s"] is None else f"{v['time_s']:.4g} s", _mb(v["bytes"])]
                     for k, v in pi["per_kind"].items()]
            text += (f"\n\nPer kind of operation, {pi['protocol'] or '?'} over {pi['link_label']}:"
                     "\n\n" + md_table(["kind", "time", "bytes"], kinds))
    return text


def snl_phase(data: Any) -> dict | None:
    """budget, granularity, ReLUs, budget_reached, mask epochs used (of at most how many),
    final lambda and the per-epoch history from an snl.json; None if it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("mask_phase"), dict):
        return None
    phase = data["mask_phase"]
    cap = data.get("mask_recipe", {}).get("epochs") if isinstance(data.get("mask_recipe"), dict) \
        else None
    history = phase.get("history") if isinstance(phase.get("history"), list) else []
    reached = phase.get("budget_reached")
    return {"budget": num(data.get("budget")), "granularity": data.get("granularity"),
            "relus": num(data.get("relus")),
            "budget_reached": reached if isinstance(reached, bool) else None,
            "mask_epochs": num(phase.get("epochs_run")) or len(history) or None,
            "mask_epochs_max": num(cap), "final_lambda": num(phase.get("final_lambda")),
            "history": history}


def _snl_md(snl: dict) -> str:
    reached = snl["budget_reached"]
    used = _int(snl["mask_epochs"]) + ("" if snl["mask_epochs_max"] is None
                                       else f" of at most {int(snl['mask_epochs_max']):,}")
    rows = [["budget (ReLUs)", _int(snl["budget"])], ["granularity", str(snl["granularity"])],
            ["ReLUs of the network", _int(snl["relus"])],
            ["budget_reached (by training)", "n/a" if reached is None else
             ("yes" if reached else "**no**: the masks were cut to the budget at the end")],
            ["mask epochs used", used], ["final lambda", _fmt(snl["final_lambda"], ".3g")]]
    return md_table(["SNL", ""], rows, "ll")


def _method_md(run: Run) -> tuple[str | None, list[str]]:
    """Scalar facts from a method summary in the run directory (reduce.json)."""
    parts, notes = [], []
    for file in (schema.REDUCE,):
        data, bad = file.read_optional(run.path)
        notes += [bad] if bad else []
        if isinstance(data, dict):
            rows = [[k, str(v)] for k, v in data.items() if isinstance(v, str | int | float | bool)][:20]
            parts.append(f"From `{file.name}`:\n\n" + md_table(["key", "value"], rows, "ll"))
    return ("\n\n".join(parts) or None), notes


def _image(title: str, name: str) -> str:
    return f"![{title}]({name})"


def report(run: str | os.PathLike | Run, out: str | os.PathLike | None = None) -> ReportResult:
    """Plots and a Markdown summary of one run, in OUT (default RUN/report).

    Always: network, exact counts per stage, ReLU distribution, Table 8 normalization,
    results. When the files exist: training curves (metrics.jsonl; an SNL run's mask phase
    from snl.json too), criticality (criticality.json), secure-inference cost (one result
    per protocol and link), the SNL phase (budget reached, mask epochs) and reduce.json.
    """
    run = run if isinstance(run, Run) else load_run(run)
    out_dir = Path(out) if out is not None else run.path / "report"
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder for the report")
    name, dataset = run_name(run), run_dataset(run) or "?"
    res = ReportResult(run.path, out_dir, out_dir / "report.md", who=f"{name} on {dataset}")
    c = count(run.spec)
    results, metrics = run.results, _metrics(run, res)
    res.summary = {"name": name, "arch": run.spec.describe(), "method": method_kind(run),
                   "dataset": dataset, "final_acc": results.get("final_acc"),
                   "best_acc": results.get("best_acc"), "relus": c.relus, "macs": c.macs,
                   "params": c.params, "stem_relus": c.stem_relus}
    md = [f"# Report: {name} on {dataset}", f"Run directory: `{run.path}`",
          "## Network", _network_md(run),
          "## Counts", "Exact, from the spec: stage1 includes the stem; MACs are multiply-"
          "accumulates of conv and linear layers (a \"FLOP\" in the paper's tables).",
          _counts_md(c), _image("Stagewise ReLU distribution", _add_plot(
              res, "relu_distribution", lambda p: plot_relu_share(c, res.who, p)))]
    if num(results.get("relus")) not in (None, c.relus):
        res.notes.append(f"{schema.RESULTS.name} says {results['relus']:,} ReLUs, the spec counts "
                         f"{c.relus:,}")
    md += ["## Stagewise ReLUs and MACs (Table 8 normalization)", *_normalized_section(run, res)]
    md += ["## Results", _results_md(results, metrics)]
    snl = _snl(run, res)
    md += ["## Training", *_training_section(metrics, snl, res)]
    md += _optional_sections(run, res)
    if run.spec.slots:
        md += ["## Exact spec", "Every changed ReLU slot (the same text is `arch` in "
               f"`{schema.RESULTS.name}`; `{schema.CONFIG.name}` holds the spec itself):",
               f"```\n{run.spec.describe()}\n```"]
    if res.notes:
        md += ["## Notes", "\n".join(f"- {n}" for n in res.notes)]
    fileio.write_text(res.markdown, "\n\n".join(md) + "\n")
    return res


def _not_what_it_says(data: Any, summary: Any, path: Path, maker: str) -> str | None:
    """A note for a file that is valid JSON but not the result `maker` writes (so the report
    names the real problem instead of calling it missing)."""
    if data is None or summary:
        return None
    return (f"{path}: present but not a {maker} result (a {type(data).__name__} without its "
            "fields); left out, rerun the command to rewrite it")


def _metrics(run: Run, res: ReportResult) -> list[dict]:
    try:
        return [m for m in run.metrics if isinstance(m, dict)]
    except CheckpointError:  # a broken line
        res.notes.append(f"{schema.METRICS.path(run.path)}: broken line(s); no training curves")
        return []


def _snl(run: Run, res: ReportResult) -> dict | None:
    data, bad = schema.SNL.read_optional(run.path)
    res.notes += [bad] if bad else []
    snl = snl_phase(data)
    if snl:
        res.summary["snl"] = {k: v for k, v in snl.items() if k != "history"}
    return snl


def _add_plot(res: ReportResult, name: str, draw: Callable[[Path], Path]) -> str:
    path = res.out / f"{name}.png"
    draw(path)
    res.plots[name] = path
    return path.name


def _normalized_section(run: Run, res: ReportResult) -> list[str]:
    try:
        norm = normalized_stagewise(run.spec)
    except (ZeroDivisionError, IndexError):
        res.notes.append("Table 8 normalization needs ReLUs and MACs in stage1 (beyond the stem)")
        return ["Not available: stage1 has no ReLUs or MACs beyond the stem."]
    png = _add_plot(res, "stagewise_normalized", lambda p: plot_normalized(norm, res.who, p))
    return [_normalized_md(norm), _image("Normalized stagewise ReLUs and MACs", png)]


def _training_section(metrics: list[dict], snl: dict | None, res: ReportResult) -> list[str]:
    md = []
    if snl:
        md += [f"SNL first trains the masks (mask phase, from `{schema.SNL.name}`), then fine-tunes "
               f"the network with the masks fixed (the epochs below, `{schema.METRICS.name}`).",
               _snl_md(snl)]
    if not metrics:
        res.notes.append(f"no {schema.METRICS.name}: no training curves")
        return [*md, f"No per-epoch metrics ({schema.METRICS.name}) in this run."]
    png = _add_plot(res, "training", lambda p: plot_training(metrics, snl, res.who, p))
    return [*md, _training_md(metrics), _image("Training curves", png)]


def _optional_sections(run: Run, res: ReportResult) -> list[str]:
    md: list[str] = []
    data, bad = schema.CRITICALITY.read_optional(run.path)
    crit = criticality_summary(data)
    bad = bad or _not_what_it_says(data, crit, schema.CRITICALITY.path(run.path), "criticality")
    if crit:
        png = _add_plot(res, "criticality", lambda p: plot_criticality(crit, res.who, p))
        md += ["## Stagewise criticality", _criticality_md(crit), _image("Criticality", png)]
        res.summary["criticality_order"] = crit["order"]
    else:
        res.notes.append(bad or f"no {schema.CRITICALITY.name} (`deepreshape criticality` adds C_k "
                         "per stage)")
    pis, bad = pi_results(run.path)
    res.notes += bad
    if pis:
        md += ["## Secure inference", "One result per protocol and link "
               f"(`{schema.PI.file('<protocol>', '<link>').name}`); a latency is only comparable "
               "with one over the same link.",
               _pi_md(pis)]
        res.summary["pi"] = {k: {f: pi[f] for f in ("protocol", "link", "latency_s", "bytes")}
                             for k, pi in pis.items()}
        for i, (key, pi) in enumerate((k, v) for k, v in pis.items() if v["per_kind"]):
            plot = "pi_breakdown" if i == 0 else f"pi_breakdown-{key}"
            md.append(_image(f"Secure inference cost per kind, {pi['protocol']} over "
                             f"{pi['link_label']}", _add_plot(
                                 res, plot, lambda p, pi=pi: plot_pi(pi, res.who, p))))
    else:
        res.notes.append("no secure-inference result (`deepreshape pi RUN [--link L]` measures "
                         "latency and communication)")
    method, notes = _method_md(run)
    res.notes += notes
    if method:
        md += ["## Method summary", method]
    return md
