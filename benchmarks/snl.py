"""SNL's mask phase vs plain training of the same network: time per epoch and peak memory.

Three modes train the same network through `deepreshape.training.train` on the same data:

* plain: SGD, cross-entropy (the baseline's recipe);
* plain+kd: the same with a KD teacher of the same architecture (what every method adds);
* snl-mask: SNL's mask phase as `deepreshape snl` runs it: learnable masks in every
  ReLU slot, Adam, CE + KD + lambda*L1 on the masks, the ReLU count after each epoch.

Each mode runs in a fresh subprocess (this script with `--mode`), so peak memory is the
mode's own: max RSS on CPU (`base MB` is the RSS before the data and model exist),
`torch.cuda.max_memory_allocated` on CUDA. Time per epoch is the median over the epochs
after the first (warm-up); with --repeat R the modes run R rounds, interleaved, and each
keeps its fastest round. The ratio column divides by plain's time.

    python benchmarks/snl.py                                   # digits, resnet18-m8, CPU
    python benchmarks/snl.py --arch resnet18-m16 --synthetic 2048 --input-size 32
    python benchmarks/snl.py --device cuda --arch hrn-5x7x2x --synthetic 8192 --input-size 32
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from typing import Any

import torch

from deepreshape.build import build
from deepreshape.cli.common import table
from deepreshape.data import Dataset, load_dataset
from deepreshape.optimize.snl import attach_masks, mask_l1, soft_relus
from deepreshape.options import RunOptions
from deepreshape.training import Recipe, train
from deepreshape.zoo import parse

MODES = ("plain", "plain+kd", "snl-mask")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _data(args: argparse.Namespace) -> Dataset:
    if not args.synthetic:
        return load_dataset("digits", input_size=args.input_size)
    g = torch.Generator().manual_seed(0)
    n, s = args.synthetic, args.input_size or 32
    x = torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset("synthetic", 10, s, x, y, x[: n // 4], y[: n // 4], (0.5,) * 3, (0.25,) * 3)


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    base_mb = _rss_mb()
    data = _data(args)
    spec = parse(args.arch, input_size=data.input_size, num_classes=data.num_classes)
    torch.manual_seed(0)
    seconds: list[float] = []
    kw: dict[str, Any] = {}
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=0.05)
    if args.mode != "plain":
        kw["teacher"] = build(spec)
    if args.mode == "snl-mask":
        model = build(spec)
        masks = attach_masks(model, spec, args.granularity)
        recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3,
                        optimizer="adam", weight_decay=0.0)
        kw.update(model=model, extra_loss=lambda _m: 1e-5 * mask_l1(masks))

        def on_epoch(epoch: int, metrics: dict) -> bool:
            soft_relus(masks)  # the per-epoch count SNL's schedule needs
            seconds.append(metrics["seconds"])
            return False
    else:
        def on_epoch(epoch: int, metrics: dict) -> bool:
            seconds.append(metrics["seconds"])
            return False
    if torch.cuda.is_available() and args.device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    train(spec, data, recipe=recipe, on_epoch_end=on_epoch,
          options=RunOptions(device=args.device, quiet=True), **kw)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb()
    timed = seconds[1:] or seconds
    return {"mode": args.mode, "arch": spec.name, "epochs": len(seconds),
            "epoch_s": statistics.median(timed), "peak_mb": peak,
            "base_mb": 0.0 if cuda else base_mb, "memory": "cuda allocated" if cuda else "max RSS"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18-m8")
    p.add_argument("--synthetic", type=int, default=0, help="N random images instead of digits")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--granularity", choices=("pixel", "channel"), default="pixel")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of all modes, interleaved; the fastest round of each is kept "
                   "(a shared machine's noise only ever slows a round down)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return 0
    best: dict[str, dict] = {}
    for _ in range(max(1, args.repeat)):
        for mode in MODES:
            cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                   "--mode", mode]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return out.returncode
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if mode not in best or r["epoch_s"] < best[mode]["epoch_s"]:
                best[mode] = r
    rows = [best[m] for m in MODES]
    plain = rows[0]["epoch_s"]
    if args.json:
        print(json.dumps([{**r, "ratio": r["epoch_s"] / plain} for r in rows], indent=2))
        return 0
    data = f"synthetic {args.synthetic}" if args.synthetic else "digits"
    print(f"{rows[0]['arch']}, batch {args.batch_size}, {args.device}, {data}, "
          f"memory = {rows[0]['memory']}")
    print(table(["mode", "s/epoch", "ratio", "peak MB", "base MB"],
                [[r["mode"], f"{r['epoch_s']:.3f}", f"{r['epoch_s'] / plain:.2f}x",
                  f"{r['peak_mb']:.0f}", f"{r['base_mb']:.0f}"] for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
