"""`deepreshape demo`: the whole paper's path, small, offline, on the embedded digits set.

count -> design -> train a baseline and an HRN -> criticality -> DeepReDuce with ReLU-reuse
-> SNL at two budgets -> secure two-party inference (Cheetah) -> Pareto plot and summary.
Every step writes under `out`; a finished step is recorded in `demo.json` and skipped on
the next run, and the trainings themselves resume, so an interrupted demo picks up where
it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepreshape import io
from deepreshape.count import count
from deepreshape.runs import read_json
from deepreshape.spec import parse
from deepreshape.train import Recipe, train

DATASET = "digits"


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo: `full` fits 10 minutes on 2 CPU cores, `fast` one minute."""

    baseline: str
    hrn_base: str
    epochs: int
    method_epochs: int
    snl_mask_epochs: int
    snl_finetune_epochs: int
    snl_fractions: tuple[float, ...]
    reuse: tuple[int, ...]
    criticality: bool
    pi_samples: int
    limit: int | None


FULL = DemoPlan(baseline="resnet18-m8", hrn_base="hrn-2x2x2x-m4", epochs=15, method_epochs=4,
                snl_mask_epochs=20, snl_finetune_epochs=4, snl_fractions=(0.5, 0.2),
                reuse=(4, 8), criticality=True, pi_samples=4, limit=None)
FAST = DemoPlan(baseline="resnet18-m4-d1,1,1,1", hrn_base="hrn-2x2x2x-m4-d1,1,1,1", epochs=1,
                method_epochs=1, snl_mask_epochs=2, snl_finetune_epochs=1,
                snl_fractions=(0.5, 0.25), reuse=(4,), criticality=False, pi_samples=1, limit=256)


class _Steps:
    """Runs named steps once; results are kept in demo.json so a rerun skips them."""

    def __init__(self, out: Path, plan: DemoPlan, quiet: bool) -> None:
        self.out, self.quiet = out, quiet
        self.path = out / "demo.json"
        state = read_json(self.path, "demo.json") if self.path.exists() else {}
        same = state.get("plan") == json.loads(json.dumps(plan.__dict__))
        self.done: dict[str, Any] = state.get("steps", {}) if same else {}
        self.plan = plan
        self.total = 8
        self.n = 0

    def run(self, name: str, title: str, fn: Callable[[], Any]) -> Any:
        self.n += 1
        if name in self.done:
            self.say(f"[{self.n}/{self.total}] {title}: done before, reused")
            return self.done[name]
        self.say(f"[{self.n}/{self.total}] {title} ...")
        t0 = time.perf_counter()
        result = fn()
        self.done[name] = result
        io.write_json(self.path, {"plan": self.plan.__dict__, "steps": self.done})
        self.say(f"      {title}: {time.perf_counter() - t0:.1f} s")
        return result

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


def run_demo(out: str | Path = "deepreshape-demo", fast: bool = False, quiet: bool = False
             ) -> dict:
    """Run the demo; returns the summary (also written to OUT/summary.json and .md)."""
    plan = FAST if fast else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps(out, plan, quiet)
    data = _data(plan)
    size, classes = data.input_size, data.num_classes
    train_kw = {"quiet": True, "resume": True}

    steps.run("count", "count ReLUs/MACs (paper networks, CIFAR-100 shapes)", lambda: {
        n: count(parse(n, dataset="cifar100")).to_dict()
        for n in ("resnet18", "hrn-5x7x2x", "wrn22x8", "regnetx-400mf")})

    def _design() -> dict:
        from deepreshape.design import design

        sols = design((3, 2, 4, 1), base=plan.hrn_base, input_size=size, num_classes=classes)
        smallest = min(sols.solutions, key=lambda s: s.relus)
        return {"order": "3,2,4,1", "solutions": [s.name for s in sols.solutions],
                "chosen": smallest.name}
    design = steps.run("design", "DeepReShape: HRNs for criticality order 3,2,4,1", _design)

    recipe = Recipe(epochs=plan.epochs, batch_size=64, lr=0.05)
    runs = out / "runs"

    def _train() -> dict:
        res = {}
        for key, arch in (("baseline", plan.baseline), ("hrn", design["chosen"])):
            r = train(arch, data, recipe=recipe, out=runs / key, **train_kw)
            res[key] = {"run": str(runs / key), "arch": arch, "acc": r.final_acc}
            steps.say(f"      {arch}: {r.final_acc:.1f}% test accuracy")
        return res
    trained = steps.run("train", f"train {plan.baseline} and the HRN ({plan.epochs} epochs)", _train)

    method = Recipe(epochs=plan.method_epochs, batch_size=64, lr=0.05)
    mkw = {"quiet": True, "resume": True, "limit": plan.limit}

    def _criticality() -> dict:
        if not plan.criticality:
            return {"skipped": "--fast: using the paper's order 3,2,4,1"}
        from deepreshape.optimize.criticality import criticality

        c = criticality(trained["baseline"]["run"], recipe=method, plain=False, **mkw)
        return {"order": c.order_text, "stages": c.to_dict()["stages"]}
    crit = steps.run("criticality", "stagewise criticality of the baseline (KD runs)", _criticality)
    order = crit.get("order", "3,2,4,1")

    def _reduce() -> dict:
        from deepreshape.optimize.deepreduce import deepreduce

        r = deepreduce(trained["hrn"]["run"], pipeline="hrn", order=order,
                       reuse_factors=plan.reuse, recipe=method, **mkw)
        return r.to_dict()
    steps.run("reduce", "DeepReDuce (Algorithm 2) with ReLU-reuse on the HRN", _reduce)

    def _snl() -> dict:
        from deepreshape.optimize.snl import snl

        total = count(parse(plan.baseline, input_size=size, num_classes=classes)).relus
        res = {}
        for frac in plan.snl_fractions:
            budget = max(1, int(total * frac))
            r = snl(trained["baseline"]["run"], budget,
                    # Adam lr 1e-2 (SNL uses 1e-3) so masks can fall below the threshold
                    # within the demo's few epochs.
                    mask_recipe=Recipe(epochs=plan.snl_mask_epochs, batch_size=64, lr=1e-2,
                                       optimizer="adam", weight_decay=0.0),
                    finetune=Recipe(epochs=plan.snl_finetune_epochs, batch_size=64, lr=1e-3),
                    lam=1e-3, lam_after=1, **mkw)
            res[str(budget)] = {"run": str(r.run.path) if r.run else None, "relus": r.relus,
                                "acc": r.final_acc, "budget_reached": r.budget_reached}
            steps.say(f"      SNL budget {budget}: {r.relus} ReLUs, {r.final_acc:.1f}%")
        return res
    snl_runs = steps.run("snl", "SNL (pixel-wise) at two ReLU budgets", _snl)

    def _pi() -> dict:
        chosen = [trained["baseline"]["run"]] + [v["run"] for v in snl_runs.values() if v["run"]][-1:]
        return _private_inference(chosen, plan.pi_samples, steps.say)
    steps.run("pi", "secure two-party inference (Cheetah, loopback)", _pi)

    def _pareto() -> dict:
        from deepreshape.report import pareto

        p = pareto([runs], x="relus", peers="none", out=out / "pareto.png")
        return {"png": str(p.png), "rows": len(p.rows)}
    steps.run("pareto", "Pareto plot and summary", _pareto)
    return _summary(out, runs)


def _data(plan: DemoPlan):
    from deepreshape.data import load_dataset

    return load_dataset(DATASET, limit=plan.limit)


def _private_inference(run_dirs: list[str], samples: int, say: Callable[[str], None]) -> dict:
    """Measure under Cheetah when the `pi` extra is installed, else estimate (and say so)."""
    try:
        import spu  # noqa: F401
    except ImportError:
        spu = None
    res: dict[str, Any] = {}
    for d in run_dirs:
        if spu is None:
            from deepreshape.pi.costmodel import predict
            from deepreshape.runs import load_run

            est = predict(load_run(d).spec, "cheetah")
            res[d] = {"estimated": True, "latency_s": est["latency_s"], "bytes": est["bytes"]}
            say(f"      {d}: SPU not installed (pip install -e '.[pi]'); cost-model estimate "
                f"{est['latency_s']:.2f} s, {est['bytes'] / 1e6:.1f} MB")
            continue
        from deepreshape.pi.measure import measure_run

        m = measure_run(d, protocol="cheetah", samples=samples)
        res[d] = {"estimated": False, "latency_s": m["latency_s"], "bytes": m["total_bytes"],
                  "argmax_agree": m.get("argmax_agree")}
        say(f"      {d}: {m['latency_s']:.2f} s online, {m['total_bytes'] / 1e6:.1f} MB")
    return res


def _summary(out: Path, runs: Path) -> dict:
    from deepreshape.report import find_runs
    from deepreshape.runinfo import pi_results, run_name
    from deepreshape.runs import load_run

    rows = []
    for d in find_runs([runs]):
        r = read_json(d / "results.json", "results.json")
        pis = pi_results(d)[0]  # the demo measures cheetah on loopback
        pi = pis.get("cheetah-loopback") or {}
        rows.append({"run": str(d.relative_to(out)), "arch": run_name(load_run(d)),
                     "relus": r["relus"],
                     "macs": r["macs"], "acc": r["final_acc"],
                     "latency_s": pi.get("latency_s"), "bytes": pi.get("bytes")})
    rows.sort(key=lambda r: -r["relus"])
    io.write_json(out / "summary.json", rows)
    lines = ["| run (method) | network | ReLUs | MACs | accuracy % "
             "| PI latency s (Cheetah, loopback) | PI MB |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = f"{r['latency_s']:.2f}" if r["latency_s"] else ""
        mb = f"{r['bytes'] / 1e6:.1f}" if r["bytes"] else ""
        lines.append(f"| {r['run']} | {r['arch']} | {r['relus']:,} | {r['macs']:,} | "
                     f"{r['acc']:.1f} | {lat} | {mb} |")
    io.write_text(out / "summary.md", "\n".join(lines) + "\n")
    return {"out": str(out), "runs": rows, "pareto": str(out / "pareto.png")}
