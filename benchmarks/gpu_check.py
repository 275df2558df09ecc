"""One prepared GPU check: the trainer's speed, memory and every GPU code path, in one JSON file.

Steps (each one recorded; a failing step does not stop the others, but makes the exit 1):

1. throughput: for each network, images/s of the trainer's own step (the project path of
   `train_throughput.py`: data held on the device, batched augmentation, `_train_epoch`) in
   fp32, in bf16 + channels_last, and in bf16 + channels_last + torch.compile, against the
   per-sample `DataLoader` reference loop in fp32 (its reference path, SNL's loop), on
   CIFAR-100-shaped random data; peak memory of each (one subprocess each).
2. training: `train()` for 2 epochs on a learnable CIFAR-100-shaped synthetic set (50,000
   train / 10,000 test images on a GPU) with the GPU default (bf16 + channels_last); the
   loss must fall; seconds per epoch and peak memory.
3. snl_kd: `snl.py`'s plain, plain+kd and snl-mask modes (SNL's mask phase: learnable
   masks, Adam, KD from a teacher, the L1 term): seconds per epoch and per step.
4. ddp: `train()` under `torchrun`, one rank per GPU (nccl, SyncBatchNorm), or 2 gloo ranks
   with `--device cpu`; skipped with a reason on a single GPU (nccl needs a GPU per rank).

Targets (checked on CUDA only; on CPU they are listed with ok = null): the trainer's best
configuration at least 3x the reference's images/s for resnet18; a resnet18 CIFAR-100
epoch (50,000 images) under 10 s; the whole check under 8 minutes. On every device: each
step runs, the loss falls and stays finite.

    python benchmarks/gpu_check.py                                   # a GPU: < 8 min -> gpu_check.json
    python benchmarks/gpu_check.py --device cpu --out /tmp/gpu_check.json   # the same steps, tiny
    python benchmarks/gpu_check.py --device cpu --skip compile ddp   # quicker still
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deepreshape import fileio
from deepreshape.data import Dataset
from deepreshape.options import RunOptions
from deepreshape.rundir.run import load_run
from deepreshape.training import Recipe, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402  (the reference loop and the trainer step, reused)

STEPS = ("throughput", "training", "snl_kd", "ddp")
SKIPPABLE = ("compile", *STEPS)
HERE = Path(__file__).resolve().parent
# (label, amp, channels_last, compile) of the trainer rows; the reference row is fp32.
TRAINER_CONFIGS = (("fp32", "fp32", False, False), ("bf16+channels_last", "bf16", True, False),
                   ("bf16+channels_last+compile", "bf16", True, True))
EPOCH_IMAGES = 50_000  # one CIFAR-100 training epoch

# Sizes per device: a GPU runs the real networks on full-size data; `--device cpu` runs the
# same steps on narrowed networks and a few images, to test the script itself.
PROFILES: dict[str, dict[str, Any]] = {
    "cuda": {"archs": ["resnet18", "hrn-5x7x2x"], "train_arch": "resnet18", "batch": 128,
             "n": 8192, "steps": 50, "warmup": 10, "workers": min(8, os.cpu_count() or 1),
             "train_n": 50_000, "test_n": 10_000, "snl_n": 8192, "ddp_n": 16_384,
             "timeout": 240, "threads": 0, "compiled_archs": 2},
    "cpu": {"archs": ["resnet18-m8", "hrn-5x7x2x-m2"], "train_arch": "resnet18-m8", "batch": 16,
            "n": 32, "steps": 1, "warmup": 1, "workers": 0, "train_n": 128, "test_n": 32,
            "snl_n": 64, "ddp_n": 128, "timeout": 1200, "threads": 1, "compiled_archs": 1},
}


# --------------------------------------------------------------------------- data


def learnable_synthetic(n_train: int, n_test: int, classes: int = 100, size: int = 32,
                        seed: int = 0) -> Dataset:
    """CIFAR-100-shaped uint8 images that can be learned: each class a random prototype,
    each image its class's prototype blended with noise (so the loss can fall)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randint(0, 256, (classes, 3, size, size), generator=g, dtype=torch.uint8)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        noise = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        x = (protos[y].to(torch.int16) * 3 + noise.to(torch.int16)) // 4
        return x.to(torch.uint8), y

    (tx, ty), (vx, vy) = split(n_train), split(n_test)
    return Dataset("synthetic-cifar100", classes, size, tx, ty, vx, vy, tt.MEAN, tt.STD)


# --------------------------------------------------------------------------- steps


def step_throughput(args: argparse.Namespace, prof: dict) -> dict:
    """Trainer configurations vs the reference loop, per network (train_throughput's paths)."""
    rows = []
    configs = [c for c in TRAINER_CONFIGS if not (c[3] and "compile" in args.skip)]
    for i, arch in enumerate(args.arch or prof["archs"]):
        base = argparse.Namespace(
            device=args.device, batch_size=prof["batch"], steps=prof["steps"],
            warmup=prof["warmup"], n=prof["n"], workers=prof["workers"], threads=prof["threads"])
        ref = tt._child(argparse.Namespace(**vars(base), amp="fp32", channels_last=False,
                                           compile=False), arch, "reference", prof["timeout"])
        ref["config"] = "reference fp32"
        rows.append(ref)
        for label, amp, cl, comp in configs:
            if comp and i >= prof["compiled_archs"]:  # CPU: compiling takes minutes
                continue
            ns = argparse.Namespace(**vars(base), amp=amp, channels_last=cl, compile=comp)
            row = tt._child(ns, arch, "project", prof["timeout"])
            row.update(config=label, ratio_vs_reference=row["images_per_s"] / ref["images_per_s"],
                       epoch_s_estimate=EPOCH_IMAGES / row["images_per_s"])
            rows.append(row)
    return {"rows": rows}


def step_training(args: argparse.Namespace, prof: dict) -> dict:
    """A 2-epoch `train()` in a child process (its own peak memory)."""
    return _json_child([sys.executable, __file__, "--worker", "training", "--device",
                        args.device], prof)


def step_snl_kd(args: argparse.Namespace, prof: dict) -> dict:
    """snl.py's plain / plain+kd / snl-mask modes on CIFAR-shaped random data."""
    arch = prof["train_arch"]
    cmd = [sys.executable, str(HERE / "snl.py"), "--json", "--device", args.device, "--arch",
           arch, "--synthetic", str(prof["snl_n"]), "--input-size", "32", "--epochs", "2",
           "--batch-size", str(prof["batch"])]
    rows = _json_child(cmd, prof)
    steps = prof["snl_n"] // prof["batch"]
    for r in rows:
        r["step_ms"] = 1e3 * r["epoch_s"] / steps
    return {"arch": arch, "images": prof["snl_n"], "rows": rows}


def step_ddp(args: argparse.Namespace, prof: dict) -> dict:
    """`train()` under torchrun with every GPU (2 gloo ranks on CPU)."""
    ranks = ddp_ranks(args.device, torch.cuda.device_count() if args.device == "cuda" else 0)
    if ranks < 2:
        return {"ranks": ranks, "skipped": "one GPU: nccl needs a GPU per rank, so DDP "
                "needs two or more (the CUDA-only DDP code is covered by tests with fakes)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
               "--master_port", str(_free_port()), __file__, "--worker", "ddp", "--device",
               args.device, "--run-dir", str(out)]
        env = {**_child_env(prof), "OMP_NUM_THREADS": "1"}
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=prof["timeout"], env=env)
        if res.returncode != 0:
            raise RuntimeError(f"torchrun exited {res.returncode}: {res.stderr[-1500:]}")
        run = load_run(out)
        m = run.metrics
        return {"ranks": ranks, "world_size": run.config["world_size"],
                "backend": "nccl" if args.device == "cuda" else "gloo",
                "losses": [r["loss"] for r in m], "images_per_s": m[-1]["images_per_s"],
                "final_acc": run.results["final_acc"], "precision": run.config["precision"]}


def ddp_ranks(device: str, gpus: int) -> int:
    """Ranks for the DDP step: every GPU on CUDA, two processes on CPU."""
    return gpus if device == "cuda" else 2


# --------------------------------------------------------------------------- workers


def worker(args: argparse.Namespace) -> int:
    """Child modes: `training` (prints one JSON line) and `ddp` (a torchrun rank)."""
    prof = PROFILES[args.device]
    cuda = args.device == "cuda"
    ddp = args.worker == "ddp"
    data = learnable_synthetic(prof["ddp_n"] if ddp else prof["train_n"], prof["test_n"])
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    recipe = Recipe(epochs=1 if ddp else 2, batch_size=prof["batch"] * ranks)
    metrics: list[dict] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = train(prof["train_arch"], data, recipe=recipe, out=args.run_dir,
                on_epoch_end=lambda _e, m: metrics.append(dict(m)) and False,
                options=RunOptions(device=args.device, quiet=True))
    if ddp:
        return 0
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else tt._max_rss_mb()
    print(json.dumps(_training_row(prof, data, metrics, res.final_acc, wall, peak, cuda)))
    return 0


def _training_row(prof: dict, data: Dataset, metrics: list[dict], acc: float, wall: float,
                  peak: float, cuda: bool) -> dict:
    losses = [m["loss"] for m in metrics]
    secs = [m["seconds"] for m in metrics]
    return {"arch": prof["train_arch"], "train_images": len(data.train_y),
            "batch_size": prof["batch"], "losses": losses, "epoch_s": secs,
            "images_per_s": [m["images_per_s"] for m in metrics], "final_acc": acc,
            "wall_s": wall, "peak_mb": peak,
            "peak_kind": "cuda max_memory_allocated" if cuda else "max RSS",
            "epoch_s_per_50k": secs[-1] * EPOCH_IMAGES / len(data.train_y) if secs else None}


# --------------------------------------------------------------------------- estimates

# Measured, not assumed: CPU fp32 images/s of the trainer (README performance table,
# `train_throughput.py` on this project's shared 2-core machine) and the epoch-time ratios
# of KD and SNL's mask phase over plain training (`snl.py`, same machine).
CPU_IMAGES_PER_S = {"resnet18": 14.6, "hrn-5x7x2x": 10.7}
KD_RATIO, SNL_MASK_RATIO = 1.43, 1.86
# Assumed: resnet18 on one H100 at the trainer's target (a 50,000-image epoch in 10 s), and
# an optimistic rate scaled from airbench's published A100 figure (airbench94: 0.36 PFLOPs
# in 3.83 s = 94 TFLOP/s, github.com/KellerJordan/cifar10-airbench) by the H100/A100 dense
# bf16 peak ratio (989/312 TFLOP/s), at 6 FLOPs per MAC per training image.
TARGET_IMAGES_PER_S = EPOCH_IMAGES / 10.0
AIRBENCH_H100_FLOPS = 0.36e15 / 3.83 * 989 / 312
EVAL_COST = 10_000 / 3  # a test-split pass (forward only, ~1/3 of a training step)


def experiments() -> list[tuple[str, str, float]]:
    """(experiment, network, its cost in epochs of plain training): each paper experiment
    as `deepreshape` runs it (upper bounds: SNL's mask phase may stop early, DeepReDuce's
    reduced networks are cheaper than the baseline)."""
    from deepreshape.optimize.deepreduce import plan
    from deepreshape.zoo import parse

    def reduced(arch: str, pipeline: str) -> int:
        spec = parse(arch, dataset="cifar100")
        return sum(not p.baseline for p in plan(spec, "3,2,4,1", pipeline=pipeline))

    kd = 200 * KD_RATIO
    return [
        ("baseline, 200 epochs", "resnet18", 200.0),
        ("baseline, 200 epochs", "hrn-5x7x2x", 200.0),
        ("criticality table: 4 stage-only nets, plain + KD", "hrn-5x7x2x", 4 * (200 + kd)),
        ("SNL, one budget: mask phase <= 300 epochs + 100-epoch KD fine-tune", "resnet18",
         300 * SNL_MASK_RATIO + 100 * KD_RATIO),
        ("SNL, one budget: mask phase <= 300 epochs + 100-epoch KD fine-tune", "hrn-5x7x2x",
         300 * SNL_MASK_RATIO + 100 * KD_RATIO),
        (f"DeepReDuce pipeline: {reduced('resnet18', 'deepreduce')} nets x 200 epochs + KD",
         "resnet18", reduced("resnet18", "deepreduce") * kd),
        (f"HRN pipeline (Algorithm 2): {reduced('hrn-5x7x2x', 'hrn')} nets x 200 epochs + KD",
         "hrn-5x7x2x", reduced("hrn-5x7x2x", "hrn") * kd),
    ]


def gpu_hours_table() -> str:
    """The estimated GPU-hours of each paper experiment on CIFAR-100, as a markdown table."""
    rel = {a: v / CPU_IMAGES_PER_S["resnet18"] for a, v in CPU_IMAGES_PER_S.items()}
    fast = AIRBENCH_H100_FLOPS / (6 * count_macs("resnet18"))
    lines = ["| experiment | network | epochs (plain-epoch equivalents) | GPU-h at the target "
             "| GPU-h at the airbench-scaled rate |", "|---|---|---:|---:|---:|"]
    for what, arch, epochs in experiments():
        images = epochs * (EPOCH_IMAGES + EVAL_COST)
        slow_h = images / (TARGET_IMAGES_PER_S * rel[arch]) / 3600
        fast_h = images / (fast * rel[arch]) / 3600
        lines.append(f"| {what} | {arch} | {epochs:,.0f} | {slow_h:.2f} | {fast_h:.3f} |")
    return "\n".join(lines)


def count_macs(arch: str) -> int:
    """Analytic MACs of one CIFAR-100 image."""
    from deepreshape.count import count
    from deepreshape.zoo import parse

    return count(parse(arch, dataset="cifar100")).macs


# --------------------------------------------------------------------------- driver


def _child_env(prof: dict) -> dict[str, str]:
    """The environment of a child: the profile's torch threads (one on CPU, so the tiny
    run does not fight over a shared machine's cores)."""
    env = dict(os.environ)
    if prof["threads"] > 0:
        env["OMP_NUM_THREADS"] = str(prof["threads"])
    return env


def _json_child(cmd: list[str], prof: dict) -> Any:
    """Run a child and parse the JSON it prints (the whole stdout, or its last line)."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=prof["timeout"],
                         check=False, env=_child_env(prof))
    if res.returncode != 0:
        raise RuntimeError(f"{Path(cmd[1]).name} exited {res.returncode}: {res.stderr[-1500:]}")
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        return json.loads(res.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def targets(report: dict, device: str) -> list[dict]:
    """Pass/fail lines; speed targets only apply on CUDA (ok = None elsewhere)."""
    cuda = device == "cuda"
    out: list[dict] = []

    def add(what: str, value: Any, ok: bool | None, cuda_only: bool = False) -> None:
        out.append({"target": what, "value": value,
                    "ok": (ok if cuda else None) if cuda_only else ok})

    for name in STEPS:
        st = report["steps"].get(name)
        if st is not None and "skipped_by_user" not in st:
            add(f"{name} step ran", st.get("error"), "error" not in st)
    rows = report["steps"].get("throughput", {}).get("rows", [])
    for arch in dict.fromkeys(r["arch"] for r in rows):
        best = max((r for r in rows if r["arch"] == arch and r["path"] == "project"),
                   key=lambda r: r["images_per_s"], default=None)
        if best is not None:
            add(f"{arch}: trainer ({best['config']}) >= 3x reference img/s",
                round(best["ratio_vs_reference"], 2),
                best["ratio_vs_reference"] >= 3.0 if arch == "resnet18" else None, True)
    tr = report["steps"].get("training", {})
    if tr.get("losses"):
        ls = tr["losses"]
        finite = all(v == v and abs(v) != float("inf") for v in ls)
        add("training: loss falls over 2 epochs and stays finite", ls,
            finite and ls[-1] < ls[0])
        add(f"{tr['arch']}: CIFAR-100 epoch (50,000 images) < 10 s", tr["epoch_s_per_50k"],
            tr["epoch_s_per_50k"] < 10.0 if tr["arch"] == "resnet18" else None, True)
    add("whole check < 8 min", round(report["wall_s"], 1), report["wall_s"] < 480, True)
    return out


def run_check(args: argparse.Namespace) -> dict:
    """Every step not skipped, timed, errors recorded; returns the report."""
    prof = PROFILES[args.device]
    t0 = time.perf_counter()
    report: dict[str, Any] = {"meta": _meta(args), "profile": prof, "steps": {}}
    funcs: dict[str, Callable[[argparse.Namespace, dict], dict]] = {
        "throughput": step_throughput, "training": step_training, "snl_kd": step_snl_kd,
        "ddp": step_ddp}
    for name in STEPS:
        if name in args.skip:
            report["steps"][name] = {"skipped_by_user": True}
            continue
        s0 = time.perf_counter()
        try:
            result = funcs[name](args, prof)
        except (Exception, SystemExit) as e:  # a failed step is a finding; keep going
            result = {"error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc()[-2000:]}
        result["seconds"] = time.perf_counter() - s0
        report["steps"][name] = result
        print(f"{name}: {'FAILED ' + result['error'] if 'error' in result else 'done'} "
              f"({result['seconds']:.0f} s)", file=sys.stderr, flush=True)
    report["wall_s"] = time.perf_counter() - t0
    report["targets"] = targets(report, args.device)
    report["ok"] = all(t["ok"] is not False for t in report["targets"])
    return report


def _meta(args: argparse.Namespace) -> dict:
    cuda = args.device == "cuda"
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": args.device, "torch": torch.__version__, "python": platform.python_version(),
            "host_cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpus": torch.cuda.device_count() if cuda else 0,
            "skipped": sorted(args.skip)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--out", default="gpu_check.json", help="the JSON file to write")
    ap.add_argument("--arch", nargs="+", default=None,
                    help="networks for the throughput step (default: resnet18 hrn-5x7x2x on "
                    "CUDA, narrowed versions on CPU)")
    ap.add_argument("--skip", nargs="+", choices=SKIPPABLE, default=[],
                    help="steps to leave out (compile: the torch.compile rows)")
    ap.add_argument("--estimate", action="store_true",
                    help="print the estimated GPU-hours of the paper's experiments and exit")
    ap.add_argument("--worker", choices=("training", "ddp"), help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.skip = set(args.skip)
    if args.estimate:
        print(gpu_hours_table())
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check.py: error: --device cuda asked for, but no CUDA GPU is available "
              "here; use --device cpu to run the same steps tiny", file=sys.stderr)
        return 2
    if args.worker:
        return worker(args)
    report = run_check(args)
    fileio.write_json(Path(args.out), report)
    for t in report["targets"]:
        mark = {True: "PASS", False: "FAIL", None: "n/a (CUDA only)"}[t["ok"]]
        print(f"{mark:<16}{t['target']}: {t['value']}")
    print(f"wrote {args.out} ({report['wall_s']:.0f} s)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
