"""Training throughput: the project's trainer step vs a plain reference loop, in one run.

Both paths train the same network (`deepreshape.build`) on the same synthetic CIFAR-shaped
data (uint8 [N,3,32,32], 100 classes) with the same batch size:

* project: `deepreshape.data.BatchLoader` (the split lives on the device; crop/flip/normalize
  are batched tensor ops) feeding the trainer's own `_train_epoch` (forward under the
  `Precision`'s autocast, `kd_loss` without a teacher, backward, `make_optimizer`'s SGD,
  per-step `lr_lambda` scheduler); `--amp`/`--channels-last`/`--compile` as `train()` takes
  them (default: bf16 autocast + channels_last on CUDA, fp32 on CPU).
* reference (what SNL's code does): `torch.utils.data.DataLoader` over a `Dataset` whose
  `__getitem__` pads by 4 (zeros) and random-crops, flips, converts (ToTensor) and normalizes
  ONE image in Python/torch; fp32, `nn.CrossEntropyLoss` + SGD, and `loss.item()` / top-1
  read back every step like the usual AverageMeter loop.

Each (arch, path) runs in a fresh subprocess (this script with `--path`), so peak memory is
the process's own: max RSS on CPU (the whole process, torch included; `base MB` is the RSS
before the data and model exist), `torch.cuda.max_memory_allocated` on CUDA. The data share
is the time spent in the loader's `next()` over the timed steps (on CUDA measured in a second
pass that synchronizes around `next()`, so the throughput pass stays unperturbed).

    python benchmarks/train_throughput.py                       # resnet18 + hrn-5x7x2x, CPU
    python benchmarks/train_throughput.py --arch resnet18-m16 --steps 3
    python benchmarks/train_throughput.py --device cuda --steps 50 --warmup 10 --n 8192
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepreshape.build import build
from deepreshape.data import BatchLoader
from deepreshape.training.checkpoints import seed_everything
from deepreshape.training.distributed import Dist
from deepreshape.training.loop import _Progress, _train_epoch
from deepreshape.training.precision import AMP_MODES, resolve_precision, synchronize
from deepreshape.training.recipe import Recipe, lr_lambda, make_optimizer
from deepreshape.zoo import parse

MEAN = (0.5071, 0.4865, 0.4409)  # CIFAR-100
STD = (0.2673, 0.2564, 0.2762)
CLASSES = 100
SIZE = 32
PATHS = ("project", "reference")


# --------------------------------------------------------------------------- data


def synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped random images uint8 [n,3,32,32] and labels int64 [n] in 0..99."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return x, torch.randint(0, CLASSES, (n,), generator=g)


class PerSampleCifar(torch.utils.data.Dataset):
    """torchvision-CIFAR-like dataset: HWC uint8 numpy storage, one image per `__getitem__`
    through RandomCrop(32, padding=4) -> RandomHorizontalFlip -> ToTensor -> Normalize."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, pad: int = 4) -> None:
        self.data = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # [N,H,W,C] like CIFAR10.data
        self.targets = y.tolist()
        self.pad = pad
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(self.data[i])  # H,W,C uint8
        h, w, _ = img.shape
        p = self.pad
        padded = F.pad(img.permute(2, 0, 1), (p, p, p, p))  # zero fill, like RandomCrop(padding=4)
        top = int(torch.randint(0, 2 * p + 1, ()))
        left = int(torch.randint(0, 2 * p + 1, ()))
        img = padded[:, top:top + h, left:left + w]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        t = img.float().div(255.0)  # ToTensor
        return (t - self.mean) / self.std, self.targets[i]  # Normalize


class TimedLoader:
    """Yields `steps` batches per iteration from an endlessly cycled loader, timing `next()`.

    Stands in for the BatchLoader inside `_train_epoch` (which calls `set_epoch` and `len`).
    With `sync`, CUDA is synchronized around each `next()` so its queued work is counted.
    """

    def __init__(self, base: Any, device: torch.device) -> None:
        self.base, self.device = base, device
        self.steps, self.sync, self.data_s = 0, False, 0.0
        self.step_s: list[float] = []  # wall time of each step (next() to next())
        self._epoch, self._it = 0, None

    def set_epoch(self, epoch: int) -> None:  # the cycling below picks the base's epochs
        pass

    def __len__(self) -> int:
        return self.steps

    def _next(self) -> Any:
        while True:
            if self._it is None:
                if hasattr(self.base, "set_epoch"):
                    self.base.set_epoch(self._epoch)
                self._epoch += 1
                self._it = iter(self.base)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None

    def __iter__(self) -> Iterator[Any]:
        cuda = self.sync and self.device.type == "cuda"
        last = None
        for _ in range(self.steps):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if last is not None:
                self.step_s.append(t0 - last)
            last = t0
            batch = self._next()
            if cuda:
                torch.cuda.synchronize()
            self.data_s += time.perf_counter() - t0
            yield batch
        if last is not None:  # resumed after the last step's compute
            self.step_s.append(time.perf_counter() - last)


# --------------------------------------------------------------------------- the two paths


def project_path(args: argparse.Namespace, dev: torch.device) -> tuple[Any, Any]:
    """(run(steps, loader), loader) for the trainer's own epoch function."""
    x, y = synthetic(args.n)
    spec = parse(args.arch, input_size=SIZE, num_classes=CLASSES)
    precision = resolve_precision(dev, args.amp, args.channels_last)
    net = build(spec).to(dev)
    if precision.channels_last:
        net = net.to(memory_format=torch.channels_last)
    recipe = Recipe(batch_size=args.batch_size)
    optimizer = make_optimizer(net, recipe)
    runner = torch.compile(net) if args.compile else net
    base = BatchLoader(x, y, args.batch_size, mean=MEAN, std=STD, train=True, augment=True,
                       device=dev, channels_last=precision.channels_last)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(recipe, len(base)))
    loader = TimedLoader(base, dev)
    progress = _Progress(quiet=True, enabled=False)
    epoch = [0]

    def run(steps: int) -> None:
        loader.steps = steps
        _train_epoch(runner, loader, optimizer, scheduler, recipe, dev, None, None, progress,
                     epoch[0], None, Dist(), precision)
        epoch[0] += 1

    return run, loader


def reference_path(args: argparse.Namespace, dev: torch.device) -> tuple[Any, Any]:
    """(run(steps, loader), loader) for a plain DataLoader + CrossEntropyLoss + SGD loop."""
    x, y = synthetic(args.n)
    spec = parse(args.arch, input_size=SIZE, num_classes=CLASSES)
    model = build(spec).to(dev)
    dataset = PerSampleCifar(x, y)
    del x, y
    base = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.workers, pin_memory=dev.type == "cuda",
        persistent_workers=args.workers > 0)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=4e-4)
    loader = TimedLoader(base, dev)
    stats = {"loss": 0.0, "correct": 0.0}

    def run(steps: int) -> None:
        loader.steps = steps
        model.train()
        for inputs, targets in loader:
            inputs = inputs.to(dev, non_blocking=True)
            targets = targets.to(dev, non_blocking=True)
            out = model(inputs)
            loss = criterion(out, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            stats["loss"] += loss.item() * targets.size(0)  # AverageMeter-style read-backs
            stats["correct"] += (out.argmax(1) == targets).float().sum().item()

    return run, loader


def _max_rss_mb() -> float:
    """Peak RSS of this process (and its largest child, e.g. a DataLoader worker) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0  # Linux: KiB


def _dtype(args: argparse.Namespace, dev: torch.device) -> str:
    """The row's precision, e.g. 'bf16+channels_last+compile' (the reference is fp32)."""
    if args.path != "project":
        return "fp32"
    p = resolve_precision(dev, args.amp, args.channels_last).to_dict()
    parts = [p["amp"], *(["channels_last"] if p["channels_last"] else []),
             *(["compile"] if args.compile else [])]
    return "+".join(parts)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark one path in this process; returns one result row."""
    dev = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    base_mb = _max_rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    run, loader = (project_path if args.path == "project" else reference_path)(args, dev)
    run(args.warmup)
    synchronize(dev)
    loader.data_s, loader.step_s = 0.0, []
    t0 = time.perf_counter()
    run(args.steps)
    synchronize(dev)
    secs = time.perf_counter() - t0
    data_s, step_s = loader.data_s, list(loader.step_s)
    if dev.type == "cuda":  # second pass, synchronized around next(), for the data share only
        loader.sync, loader.data_s = True, 0.0
        t1 = time.perf_counter()
        run(args.steps)
        synchronize(dev)
        secs_sync, data_s = time.perf_counter() - t1, loader.data_s
    else:
        secs_sync = secs
    peak = (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _max_rss_mb())
    return {
        "arch": args.arch, "path": args.path, "device": dev.type, "dtype": _dtype(args, dev),
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "n": args.n,
        "workers": args.workers if args.path == "reference" else 0, "threads": torch.get_num_threads(),
        "images_per_s": args.steps * args.batch_size / secs, "step_ms": 1e3 * secs / args.steps,
        "median_step_images_per_s": args.batch_size / statistics.median(step_s),
        "data_share": data_s / secs_sync, "peak_mb": peak,
        "base_mb": base_mb if dev.type == "cpu" else 0.0,
        "peak_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "max RSS",
    }


# --------------------------------------------------------------------------- driver


def _child(args: argparse.Namespace, arch: str, path: str, timeout: float | None = None
           ) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--path", path, "--arch", arch,
           "--device", args.device, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--n", str(args.n), "--workers", str(args.workers),
           "--threads", str(args.threads), "--amp", args.amp,
           *(["--compile"] if args.compile else []),
           *([] if args.channels_last is None else
             ["--channels-last" if args.channels_last else "--no-channels-last"])]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"{path} path failed for {arch} (exit {res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _best_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest round (rounds > 1; the least disturbed on a shared machine), keeping every
    round's img/s and the highest peak memory."""
    row = dict(max(rows, key=lambda r: r["images_per_s"]))
    row["rounds_images_per_s"] = [r["images_per_s"] for r in rows]
    row["peak_mb"] = max(r["peak_mb"] for r in rows)
    return row


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pass/fail lines: CPU project >= reference and data < 5%; CUDA >= 3x (resnet18)."""
    out = []
    for arch in dict.fromkeys(r["arch"] for r in rows):
        p = next(r for r in rows if r["arch"] == arch and r["path"] == "project")
        ref = next(r for r in rows if r["arch"] == arch and r["path"] == "reference")
        ratio = p["images_per_s"] / ref["images_per_s"]
        if p["device"] == "cpu":
            out.append({"arch": arch, "target": "cpu: project img/s >= reference", "value": ratio,
                        "ok": ratio >= 1.0})
            out.append({"arch": arch, "target": "cpu: project data share < 5%",
                        "value": p["data_share"], "ok": p["data_share"] < 0.05})
        elif arch == "resnet18":
            out.append({"arch": arch, "target": "cuda: project >= 3x reference", "value": ratio,
                        "ok": ratio >= 3.0})
        else:
            out.append({"arch": arch, "target": "cuda: project / reference (no target)",
                        "value": ratio, "ok": True})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["resnet18", "hrn-5x7x2x"], help="zoo networks")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per path (after warm-up)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps per path")
    ap.add_argument("--n", type=int, default=2048, help="synthetic training images")
    ap.add_argument("--workers", type=int, default=0, help="reference DataLoader num_workers")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the two paths this many times and keep each one's fastest round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    ap.add_argument("--amp", choices=AMP_MODES, default="auto",
                    help="project path autocast (default auto: bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="project path memory format (default: on CUDA only)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the project path")
    ap.add_argument("--path", choices=PATHS, default=None, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda asked for, but no CUDA GPU is available")
    if args.n < args.batch_size or min(args.steps, args.batch_size) < 1 or args.warmup < 0:
        ap.error("need --n >= --batch-size and positive --steps/--batch-size")
    if args.path is not None:
        args.arch = args.arch[0]
        print(json.dumps(measure(args)))
        return 0

    rows: list[dict[str, Any]] = []
    for arch in args.arch:
        got: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
        for _ in range(max(1, args.rounds)):
            for path in PATHS:
                got[path].append(_child(args, arch, path))
        rows += [_best_row(got[p]) for p in PATHS]
    for r in rows:
        mate = next(o for o in rows if o["arch"] == r["arch"] and o["path"] == "reference")
        r["ratio_vs_reference"] = r["images_per_s"] / mate["images_per_s"]
    checks = targets(rows)
    if args.json:
        print(json.dumps({"rows": rows, "targets": checks}, indent=2))
        return 0
    print(f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"{args.n} synthetic images, reference workers {args.workers}, torch {torch.__version__}, "
          f"{rows[0]['threads']} threads")
    head = (f"{'arch':<16}{'path':<11}{'device':<8}{'img/s':>9}{'med-step img/s':>16}{'data %':>8}"
            f"{'peak MB':>9}{'base MB':>9}{'vs ref':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['arch']:<16}{r['path']:<11}{r['device']:<8}{r['images_per_s']:>9.1f}"
              f"{r['median_step_images_per_s']:>16.1f}{100 * r['data_share']:>8.2f}{r['peak_mb']:>9.0f}"
              f"{r['base_mb']:>9.0f}{r['ratio_vs_reference']:>7.2f}x")
    print("targets:")
    for c in checks:
        val = f"{100 * c['value']:.2f}%" if "share" in c["target"] else f"{c['value']:.2f}x"
        print(f"  {c['arch']:<16}{c['target']:<40}{val:>9}  {'PASS' if c['ok'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
