"""`deepreshape demo`: the whole paper's path, small, offline, on the embedded digits set.

count -> train a baseline -> measure its stagewise criticality -> DeepReShape for the
measured order -> train the HRN -> DeepReDuce with ReLU-reuse on it -> SNL on the baseline
-> secure two-party inference (Cheetah) of the baseline, the HRN and an SNL network ->
a report per main run -> Pareto plot and summary.md. Every step writes under `out`; a
finished step is recorded in `demo.json` and skipped on the next run, and the trainings
themselves resume, so an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deepreshape import fileio
from deepreshape.count import count
from deepreshape.options import RunOptions
from deepreshape.rundir import schema
from deepreshape.rundir.schema import read_json
from deepreshape.training import Recipe, train
from deepreshape.zoo import parse

DATASET = "digits"
PAPER_ORDER = "3,2,4,1"
SUMMARY_NOTE = ("accuracy is the final epoch's top-1 accuracy on the test split (no checkpoint "
                "is chosen on the test set)")


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo: `full` fits 10 minutes on 2 idle CPU cores, `fast` one minute."""

    baseline: str
    hrn_base: str
    epochs: int
    crit_epochs: int
    method_epochs: int
    snl_mask_epochs: int
    snl_finetune_epochs: int
    snl_fractions: tuple[float, ...]
    snl_batch: int
    reuse: tuple[int, ...]
    pi_samples: int
    pi_measured: int  # main runs measured under SPU (baseline, HRN, SNL); the rest estimated
    limit: int | None


FULL = DemoPlan(baseline="resnet18-m8", hrn_base="hrn-2x2x2x-m2", epochs=12, crit_epochs=4,
                method_epochs=3, snl_mask_epochs=20, snl_finetune_epochs=3,
                snl_fractions=(0.5, 0.2),
                snl_batch=64, reuse=(4,), pi_samples=1, pi_measured=3, limit=None)
FAST = DemoPlan(baseline="resnet18-m4-d1,1,1,1", hrn_base="hrn-2x2x2x-m4-d1,1,1,1", epochs=1,
                crit_epochs=1, method_epochs=1, snl_mask_epochs=10, snl_finetune_epochs=1,
                snl_fractions=(0.25,), snl_batch=32, reuse=(4,), pi_samples=1, pi_measured=1,
                limit=256)
STEPS = ("count", "baseline", "criticality", "design", "hrn", "reduce", "snl", "pi", "reports",
         "summary")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class _Steps:
    """Runs named steps once; results (and their wall and CPU seconds) are kept in demo.json,
    so a rerun skips them. A step returning {"skipped": why} is reported as skipped."""

    def __init__(self, out: Path, plan: DemoPlan, quiet: bool) -> None:
        self.out, self.quiet, self.plan = out, quiet, plan
        self.path = out / "demo.json"
        state = read_json(self.path, "demo.json") if self.path.exists() else {}
        same = state.get("plan") == json.loads(json.dumps(asdict(plan)))
        self.done: dict[str, Any] = state.get("steps", {}) if same else {}
        self.times: dict[str, dict] = state.get("times", {}) if same else {}
        self.n = 0

    def run(self, name: str, title: str, fn: Callable[[], Any]) -> Any:
        self.n += 1
        head = f"[{self.n}/{len(STEPS)}] {title}"
        if name in self.done:
            self.say(f"{head}: done before, reused")
            return self.done[name]
        self.say(f"{head} ...")
        t0, c0 = time.perf_counter(), cpu_seconds()
        result = fn()
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        skipped = isinstance(result, dict) and "skipped" in result
        self.done[name] = result
        self.times[name] = {"title": title, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                            "skipped": skipped}
        fileio.write_json(self.path, {"plan": asdict(self.plan), "steps": self.done,
                                  "times": self.times})
        self.say(f"      {title}: skipped ({result['skipped']})" if skipped
                 else f"      {title}: {wall:.1f} s")
        return result

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def run_demo(out: str | Path = "deepreshape-demo", fast: bool = False, quiet: bool = False
             ) -> dict:
    """Run the demo; returns the summary (also written to OUT/summary.json and .md).

    Its networks are tiny (4-8 base channels, 16x16 images), which train fastest on one
    torch thread: a second thread mostly spins, and on a shared machine it wastes many times
    the work (measured here: 2.8 vs 0.2 CPU seconds for the same epoch). So the demo trains
    on one thread, and restores the caller's setting when it ends.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_demo(Path(out), FAST if fast else FULL, quiet)
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, plan: DemoPlan, quiet: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    steps = _Steps(out, plan, quiet)
    data = _data(plan)
    size, classes = data.input_size, data.num_classes
    runs = out / "runs"
    recipe = Recipe(epochs=plan.epochs, batch_size=64, lr=0.05)
    method = Recipe(epochs=plan.method_epochs, batch_size=64, lr=0.05)
    opts = RunOptions(quiet=quiet, resume=True, limit=plan.limit)

    steps.run("count", "count ReLUs/MACs (paper networks, CIFAR-100 shapes)", lambda: {
        n: count(parse(n, dataset="cifar100")).to_dict()
        for n in ("resnet18", "hrn-5x7x2x", "wrn22x8", "regnetx-400mf")})

    def _train(key: str, arch: str, tag: dict | None = None) -> dict:
        r = train(arch, data, recipe=recipe, out=runs / key, options=opts,
                  label=f"demo: {key} {arch}", tag=tag)
        steps.say(f"      {arch}: {r.final_acc:.1f}% test accuracy (final epoch)")
        return {"run": str(runs / key), "arch": arch, "acc": r.final_acc}

    base = steps.run("baseline", f"train the baseline {plan.baseline} ({_epochs(plan.epochs)})",
                     lambda: _train("baseline", plan.baseline))

    def _criticality() -> dict:
        from deepreshape.optimize.criticality import criticality

        c = criticality(base["run"], recipe=Recipe(epochs=plan.crit_epochs, batch_size=64,
                                                   lr=0.05), plain=False, options=opts)
        match = "matches" if c.order_text == PAPER_ORDER else "differs from"
        resolved = c.info.get("order_resolved", True)
        steps.say(f"      measured criticality order {c.order_text} ({match} the paper's "
                  f"{PAPER_ORDER}{'' if resolved else '; within test-set noise'})")
        return {"order": c.order_text, "matches_paper": c.order_text == PAPER_ORDER,
                "resolved": resolved, "stages": c.to_dict()["stages"]}
    crit = steps.run("criticality", "stagewise criticality of the baseline "
                     f"({_epochs(plan.crit_epochs)} per stage, KD)", _criticality)
    order = crit["order"]

    def _design() -> dict:
        from deepreshape.design.solver import design

        sols = design(order, base=plan.hrn_base, input_size=size, num_classes=classes)
        chosen = min(sols.solutions, key=lambda s: (s.macs, s.relus))
        steps.say(f"      {len(sols.solutions)} HRNs for order {order}: "
                  f"{', '.join(s.name for s in sols.solutions)}; training {chosen.name} "
                  "(fewest MACs, the cheapest under HE)")
        return {"order": order, "solutions": [s.name for s in sols.solutions],
                "chosen": chosen.name}
    design = steps.run("design", f"DeepReShape: HRNs for the measured order {order}", _design)
    hrn = steps.run("hrn", f"train the HRN {design['chosen']} ({_epochs(plan.epochs)})",
                    lambda: _train("hrn", design["chosen"], DEEPRESHAPE_TAG | {"order": order}))

    def _reduce() -> dict:
        from deepreshape.optimize.deepreduce import deepreduce

        return deepreduce(hrn["run"], pipeline="hrn", order=order, reuse_factors=plan.reuse,
                          recipe=method, options=opts).to_dict()
    steps.run("reduce", "DeepReDuce (Algorithm 2) with ReLU-reuse on the HRN", _reduce)

    def _snl() -> dict:
        from deepreshape.optimize.snl import SNLSettings, snl

        total = count(parse(plan.baseline, input_size=size, num_classes=classes)).relus
        res = {}
        for frac in plan.snl_fractions:
            budget = max(1, int(total * frac))
            settings = SNLSettings(  # the auto preset: SNL's defaults
                mask_recipe=Recipe(epochs=plan.snl_mask_epochs, batch_size=plan.snl_batch,
                                   lr=1e-3, optimizer="adam", weight_decay=0.0),
                finetune=Recipe(epochs=plan.snl_finetune_epochs, batch_size=64, lr=1e-3))
            r = snl(base["run"], budget, settings=settings, options=opts)
            phase = r.info["mask_phase"]
            res[str(budget)] = {"run": str(r.run.path) if r.run else None, "relus": r.relus,
                                "acc": r.final_acc, "budget_reached": r.budget_reached,
                                "mask_epochs": phase["epochs_run"]}
            steps.say(f"      SNL budget {budget:,}: {r.relus:,} ReLUs, {r.final_acc:.1f}%, "
                      f"budget {'reached by training' if r.budget_reached else 'NOT reached'} "
                      f"in {phase['epochs_run']} mask epochs")
        return res
    snl_runs = steps.run("snl", f"SNL (pixel-wise, auto preset) at {len(plan.snl_fractions)} "
                         "ReLU budget(s) of the baseline", _snl)
    main_runs = [base["run"], hrn["run"]] + [v["run"] for v in snl_runs.values() if v["run"]][-1:]

    measured = ("baseline, HRN, SNL" if plan.pi_measured >= 3 else
                f"{plan.pi_measured} measured, the rest estimated by the cost model")
    steps.run("pi", f"secure two-party inference (Cheetah, loopback): {measured}",
              lambda: _private_inference(main_runs, plan.pi_samples, steps.say,
                                         measure=plan.pi_measured))

    def _reports() -> dict:
        from deepreshape.reports import report

        done = {}
        for d in main_runs:
            r = report(d)
            done[d] = str(r.markdown)
            steps.say(f"      {r.markdown}")
        return done
    steps.run("reports", "a report per main run (plots + report.md)", _reports)

    def _pareto() -> dict:
        from deepreshape.reports import pareto

        p = pareto([runs], x="relus", peers="none", out=out / "pareto.png")
        return {"png": str(p.png), "rows": len(p.rows)}
    steps.run("summary", "Pareto plot and summary", _pareto)
    return _summary(out, runs, plan, steps, crit, time.perf_counter() - t_start)


def _data(plan: DemoPlan):
    from deepreshape.data import load_dataset

    return load_dataset(DATASET, limit=plan.limit)


def _private_inference(run_dirs: list[str], samples: int, say: Callable[[str], None],
                       measure: int | None = None) -> dict:
    """Measure the first `measure` runs (default all) under Cheetah when the `pi` extra is
    installed; estimate the others with the cost model (and say why)."""
    try:
        import spu  # noqa: F401
    except ImportError:
        spu = None
    res: dict[str, Any] = {}
    for i, d in enumerate(run_dirs):
        if spu is None or (measure is not None and i >= measure):
            from deepreshape.pi.costs.costmodel import predict
            from deepreshape.rundir.run import load_run

            est = predict(load_run(d).spec, "cheetah")
            res[d] = {"estimated": True, "latency_s": est["latency_s"], "bytes": est["bytes"]}
            why = ("SPU not installed (pip install -e '.[pi]')" if spu is None
                   else "not measured in --fast")
            say(f"      {d}: {why}; cost-model estimate {est['latency_s']:.2f} s, "
                f"{est['bytes'] / 1e6:.1f} MB")
            continue
        from deepreshape.pi.measure import measure_run

        say(f"      {d}: starting two SPU parties (Cheetah), {samples} quer"
            f"{'y' if samples == 1 else 'ies'} ...")
        m = measure_run(d, protocol="cheetah", samples=samples)
        res[d] = {"estimated": False, "latency_s": m["latency_s"], "bytes": m["total_bytes"],
                  "argmax_agree": m.get("argmax_agree")}
        say(f"      {d}: {m['latency_s']:.2f} s online, {m['total_bytes'] / 1e6:.1f} MB")
    return res


DEEPRESHAPE_TAG = {"name": "deepreshape"}
"""The config method tag of a network DeepReShape designed (the HRN the demo trains): the
`train` method labels such runs "DeepReShape" in reports and Pareto plots."""


def method_of(config: dict) -> str:
    """What produced a run, from its config's method tag (recorded once, by whoever made
    the run), in words."""
    m = config.get("method") or {}
    name = m.get("name", "baseline")
    if name == DEEPRESHAPE_TAG["name"]:
        return f"DeepReShape HRN (order {m.get('order')})"
    if name == "criticality":
        return f"criticality probe (stage{m.get('stage')} only{', KD' if m.get('kd') else ''})"
    if name == "snl":
        return f"SNL {m.get('granularity', 'pixel')} ({m.get('budget', 0):,})"
    if name == "deepreduce":
        return f"DeepReDuce ({', '.join(map(str, m.get('steps', []))) or m.get('pipeline', '')})"
    return "KD" if config.get("teacher") else name


def machine() -> str:
    """The machine in a few words: CPU cores, load, GPU if any."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}, {threads} torch "
            f"thread{'s' * (threads != 1)}), {gpu}, load average {load:.1f} at the end")


def _summary(out: Path, runs: Path, plan: DemoPlan, steps: _Steps, crit: dict,
             wall: float) -> dict:
    from deepreshape.reports import find_runs
    from deepreshape.reports.readers import pi_results, run_name
    from deepreshape.rundir.run import load_run

    estimates = {Path(k).resolve(): v for k, v in steps.done.get("pi", {}).items()
                 if v.get("estimated")}
    rows = []
    for d in find_runs([runs]):
        run = load_run(d)
        r = schema.RESULTS.read(d)
        pi = pi_results(d)[0].get("cheetah-loopback") or {}  # the demo measures loopback
        est = estimates.get(d.resolve(), {})
        method = method_of(run.config)
        rows.append({"run": str(d.relative_to(out)), "method": method,
                     "arch": run_name(run), "relus": r["relus"], "macs": r["macs"],
                     "acc": r["final_acc"], "epochs": r.get("epochs"),
                     "latency_s": pi.get("latency_s", est.get("latency_s")),
                     "bytes": pi.get("bytes", est.get("bytes")),
                     "pi_estimated": bool(est) and not pi})
    rows.sort(key=lambda r: (r["method"].startswith("criticality"), -r["relus"]))
    fileio.write_json(out / "summary.json", rows)
    spent = sum(t["wall_s"] for t in steps.times.values())
    size = f"--fast, first {plan.limit} images, " if plan.limit else ""
    head = [
        "# deepreshape demo", "",
        f"What was done: the paper's path on the embedded `{DATASET}` data set ({size}"
        f"baseline and HRN {_epochs(plan.epochs)}, criticality {_epochs(plan.crit_epochs)} "
        f"per stage, DeepReDuce {_epochs(plan.method_epochs)} per network, SNL "
        f"{_epochs(plan.snl_finetune_epochs)} of fine-tuning after at most "
        f"{plan.snl_mask_epochs} mask epochs), on {machine()}; the steps took {spent:.0f} s in all "
        f"({wall:.0f} s in this invocation).",
        "",
        f"Criticality order measured on the baseline: {crit['order']} "
        f"({'matches' if crit.get('matches_paper') else 'differs from'} the paper's "
        f"{PAPER_ORDER}{'' if crit.get('resolved', True) else '; within test-set noise'}); "
        "the HRN was designed for it.", "",
        f"{SUMMARY_NOTE[0].upper()}{SUMMARY_NOTE[1:]}. ReLUs and MACs are exact counts; PI "
        "latency is the online time of one secure query under Cheetah on loopback (~: the "
        "cost model's estimate; blank: not measured).", "",
        "| run | method | network | ReLUs | MACs | accuracy % | PI latency s | PI MB |",
        "|---|---|---|---:|---:|---:|---:|---:|"]
    lines = list(head)
    for r in rows:
        est = "~" if r["pi_estimated"] else ""
        lat = f"{est}{r['latency_s']:.2f}" if r["latency_s"] else ""
        mb = f"{est}{r['bytes'] / 1e6:.1f}" if r["bytes"] else ""
        lines.append(f"| {r['run']} | {r['method']} | {r['arch']} | {r['relus']:,} | "
                     f"{r['macs']:,} | {r['acc']:.1f} | {lat} | {mb} |")
    lines += ["", "| step | wall s | CPU s |", "|---|---:|---:|"]
    for name in STEPS:
        t = steps.times.get(name)
        if t:
            lines.append(f"| {t['title']} | {'skipped' if t['skipped'] else t['wall_s']} | "
                         f"{'' if t['skipped'] else t['cpu_s']} |")
    fileio.write_text(out / "summary.md", "\n".join(lines) + "\n")
    return {"out": str(out), "runs": rows, "pareto": str(out / "pareto.png"),
            "summary_md": str(out / "summary.md"), "times": steps.times}
