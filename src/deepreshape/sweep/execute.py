"""Run one point: the function every backend calls, in this process or on a worker.

It calls the method's Python entry point with one `RunOptions` (resume on, so an
interrupted point continues from its checkpoint and a finished one is reused), and
returns an outcome dict instead of raising, so a failing point (NaN loss, bad data,
out of memory) is one line in sweep.json and never stops the others.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from deepreshape.options import RunOptions
from deepreshape.sweep.sweepfile import Point


def one_line(e: BaseException) -> str:
    """An exception as one short line (type for non-deepreshape errors)."""
    from deepreshape.errors import DeepReshapeError

    text = " ".join(str(e).split()) or e.__class__.__name__
    if not isinstance(e, DeepReshapeError):
        text = f"{e.__class__.__name__}: {text}"
    return text[:300]


def run_point(point: Point, root: str, sweep: dict[str, Any], threads: int = 1,
              device: str | None = None, procs: int = 1) -> dict[str, Any]:
    """Run `point` under the sweep `root`; returns {"ok", "result" | "error", "seconds", "where"}.

    `sweep` holds the shared settings (dataset, data_dir, limit). `threads` fixes torch's
    CPU threads, so every backend computes the same numbers for the same seed. `procs` > 1
    runs a training method as that many DDP processes (one per GPU; gloo on CPU), started
    the way `torchrun` starts them.
    """
    if procs > 1 and point.method in DDP_METHODS:
        return _run_ddp(point, root, sweep, threads, device, procs)
    import torch

    t0 = time.time()
    where = {"host": socket.gethostname(), "pid": os.getpid()}
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        opts = RunOptions(seed=point.seed, device=device, data_dir=sweep.get("data_dir"),
                          limit=sweep.get("limit"), resume=True, quiet=True)
        result = _METHODS[point.method](point, Path(root), opts)
        return {"ok": True, "result": result, "seconds": time.time() - t0, "where": where}
    except Exception as e:  # isolated: reported as this point's failure
        return {"ok": False, "error": one_line(e), "seconds": time.time() - t0, "where": where}
    finally:
        torch.set_num_threads(old)


def _recipe(values: dict | None, **defaults: Any):
    from deepreshape.train import Recipe

    return Recipe(**{**defaults, **(values or {})})


def _train(p: Point, root: Path, opts: RunOptions) -> dict:
    from deepreshape.train import train

    s = p.settings
    res = train(p.arch, recipe=_recipe(s["recipe"]), out=root / p.run,
                teacher=root / s["teacher"] if s.get("teacher") else None,
                options=opts.replace(dataset=s["dataset"]))
    r = res.run.results if res.run is not None else {}
    return {k: r.get(k) for k in ("final_acc", "best_acc", "relus", "macs", "params", "epochs")}


def _criticality(p: Point, root: Path, opts: RunOptions) -> dict:
    from deepreshape.optimize.criticality import criticality

    s = p.settings
    crit = criticality(root / p.deps[0], recipe=_recipe(s["recipe"]), out=root / p.run,
                       plain=s["plain"], options=opts)
    d = crit.to_dict()
    return {"order": d.get("order"), "stages": d.get("stages")}


def _reduce(p: Point, root: Path, opts: RunOptions) -> dict:
    from deepreshape.optimize.deepreduce import deepreduce

    s = dict(p.settings)
    recipe = _recipe(s.pop("recipe"))
    red = deepreduce(root / p.deps[0], recipe=recipe, out=root / p.run, options=opts, **s)
    return {"networks": red.to_dict()["networks"]}


def _snl(p: Point, root: Path, opts: RunOptions) -> dict:
    from deepreshape.optimize.snl import snl

    s = dict(p.settings)
    kw: dict[str, Any] = {"granularity": s.pop("granularity", "pixel")}
    if "mask_recipe" in s:
        kw["mask_recipe"] = _recipe(s.pop("mask_recipe"), epochs=300, lr=1e-3, optimizer="adam",
                                    weight_decay=0.0)
    if "finetune" in s:
        kw["finetune"] = _recipe(s.pop("finetune"), epochs=100, lr=1e-3)
    for key, arg in (("lambda", "lam"), ("lambda_factor", "lam_factor"), ("lambda_after", "lam_after"),
                     ("threshold", "threshold"), ("include_stem", "include_stem")):
        if key in s:
            kw[arg] = s.pop(key)
    res = snl(root / p.deps[0], s.pop("budget"), out=root / p.run, options=opts, **kw)
    return {"final_acc": res.final_acc, "relus": res.relus, "budget": res.budget,
            "budget_reached": res.budget_reached}


def _pi(p: Point, root: Path, opts: RunOptions) -> dict:
    from deepreshape.pi.linkprofile import LinkProfile
    from deepreshape.pi.measure import measure_run

    s = p.settings
    link = LinkProfile.parse(s["link"]) if s.get("link") else None
    rec = measure_run(root / p.run, protocol=s["protocol"], samples=s["samples"],
                      repeats=s["repeats"], link=link, options=opts) or {}
    return {k: rec.get(k) for k in ("latency_s", "total_bytes", "setup_s", "argmax_agree_count")}


def _eval(p: Point, root: Path, opts: RunOptions) -> dict:
    from deepreshape.evaluate import evaluate_run

    r = evaluate_run(root / p.run, options=opts)
    return {k: r[k] for k in ("test_acc", "relus", "macs", "params")}


_METHODS = {"train": _train, "criticality": _criticality, "reduce": _reduce, "snl": _snl,
            "pi": _pi, "eval": _eval}


# --------------------------------------------------------------------------- DDP

DDP_METHODS = ("train", "criticality", "reduce", "snl")
DDP_TIMEOUT_S = 7 * 24 * 3600  # a bound on one point's processes (a week)


def _run_ddp(point: Point, root: str, sweep: dict[str, Any], threads: int, device: str | None,
             procs: int) -> dict[str, Any]:
    """Start `procs` ranks of this module through torch.distributed.run; rank 0 leaves the
    outcome in a file."""
    import json
    import subprocess
    import sys
    import tempfile

    t0 = time.time()
    where = {"host": socket.gethostname(), "pid": os.getpid(), "ddp_processes": procs}
    with tempfile.TemporaryDirectory(prefix="deepreshape-ddp-") as d:
        job = Path(d) / "point.json"
        job.write_text(json.dumps({"point": point.to_dict(), "root": root, "sweep": sweep,
                                   "threads": threads, "device": device}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(procs), "-m", "deepreshape.sweep.execute", str(job)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DDP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"DDP run over {DDP_TIMEOUT_S} s", "where": where,
                    "seconds": time.time() - t0}
        out = Path(d) / "outcome.json"
        if out.exists():
            outcome = json.loads(out.read_text())
            return {**outcome, "where": where, "seconds": time.time() - t0}
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": f"DDP run failed (exit {proc.returncode}): {last[:200]}",
                "where": where, "seconds": time.time() - t0}


def _rank_main(job_file: str) -> int:
    """One DDP rank (started by torch.distributed.run): run the point; rank 0 writes the outcome."""
    import json

    from deepreshape import fileio

    job = json.loads(Path(job_file).read_text())
    device = job["device"]
    if device in (None, "cuda"):  # one GPU per rank, as torchrun users do by hand
        import torch

        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
    p = job["point"]
    point = Point(**{**p, "deps": tuple(p["deps"])})
    outcome = run_point(point, job["root"], job["sweep"], job["threads"], device)
    if int(os.environ.get("RANK", "0")) == 0:
        fileio.write_json(Path(job_file).parent / "outcome.json", outcome)
    return 0 if outcome.get("ok") else 1


if __name__ == "__main__":
    import sys

    sys.exit(_rank_main(sys.argv[1]))
