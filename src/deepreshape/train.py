"""The one trainer: SGD/Adam + cosine (per iteration) + optional Hinton KD.

Every method (baselines, criticality, DeepReDuce, ReLU-reuse, SNL) trains through
`train()`; methods that need more hook into it with `extra_loss` (a term added to the
loss, e.g. SNL's L1 on masks) and `on_epoch_end` (may stop training early).
The same code runs on CPU and GPU: bf16 autocast, channels_last and torch.compile are
options on either (by default bf16 + channels_last on a GPU, fp32 on CPU), so CPU tests
exercise what a GPU runs; many processes run under `torchrun` (DDP; gloo on CPU, nccl on
GPU, each rank on its own GPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepreshape.build import build
from deepreshape.count import count
from deepreshape.data import BatchLoader, Dataset, load_dataset
from deepreshape.errors import CheckpointError, RunFailure, UsageError
from deepreshape.options import with_run_options
from deepreshape.rundir import schema
from deepreshape.rundir.run import (
    Run,
    check_config,
    load_checkpoint,
    load_matching,
    load_run,
    load_state,
    versions,
    writer_lock,
)
from deepreshape.spec import NetSpec
from deepreshape.zoo import parse


@dataclass
class Recipe:
    """Training hyper-parameters; defaults are the seed paper's (Appendix F)."""

    epochs: int = 200
    batch_size: int = 128  # global batch (split over DDP ranks)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-4
    optimizer: str = "sgd"  # sgd | adam
    warmup_epochs: int = 0  # linear warm-up (paper: 10 on Tiny ImageNet)
    kd_temperature: float = 4.0
    kd_weight: float = 0.9  # weight of the soft (teacher) loss
    augment: bool = True

    def validate(self) -> None:
        """Raise UsageError (one line, naming the option) on hyper-parameters training cannot use."""
        def number(value: object, option: str, ok: bool, want: str) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not math.isfinite(value) or not ok:
                raise UsageError(f"{option} must be {want}, got {value!r}")

        for value, option, top in ((self.epochs, "--epochs", MAX_EPOCHS),
                                   (self.batch_size, "--batch-size", MAX_BATCH)):
            number(value, option, isinstance(value, int) and 1 <= value <= top,
                   f"an integer in 1..{top:,}")
        number(self.lr, "--lr", self.lr > 0, "a positive number")
        number(self.momentum, "--momentum", 0 <= self.momentum < 1, "in [0, 1)")
        number(self.weight_decay, "--weight-decay", self.weight_decay >= 0, "a number >= 0")
        number(self.warmup_epochs, "--warmup-epochs",
               isinstance(self.warmup_epochs, int) and 0 <= self.warmup_epochs <= self.epochs,
               f"an integer in 0..{self.epochs} (the epochs)")
        number(self.kd_temperature, "--kd-temperature", self.kd_temperature > 0, "a positive number")
        number(self.kd_weight, "--kd-weight", 0 <= self.kd_weight <= 1, "in [0, 1]")
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"optimizer must be sgd or adam, got {self.optimizer!r}")


MAX_EPOCHS, MAX_BATCH = 100_000, 1_000_000  # far above any real recipe


def kd_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None,
            temperature: float = 4.0, weight: float = 0.9) -> torch.Tensor:
    """Hinton et al.: (1-w)·CE(hard) + w·T²·KL(softmax(t/T) || softmax(s/T))."""
    hard = F.cross_entropy(logits, targets)
    if teacher_logits is None:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1 - weight) * hard + weight * soft


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0


def dist_backend(device_type: str) -> str:
    """The process-group backend for a device type: nccl for CUDA, gloo otherwise."""
    return "nccl" if device_type == "cuda" else "gloo"


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """This rank's device: a bare `cuda` becomes cuda:LOCAL_RANK (one GPU per rank, as
    nccl needs); an explicit index or a CPU is kept."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def ddp_device_ids(device: torch.device) -> list[int] | None:
    """DistributedDataParallel's `device_ids`: the rank's GPU, None on CPU."""
    return [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); returns this
    process's place and its device (its own GPU under CUDA, selected before joining)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(dist_backend(device.type))
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch of all ranks on CPU (SyncBatchNorm is GPU-only), so a
    DDP run computes what one process with the whole batch computes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize with statistics all-reduced over ranks while training."""
        if not self.training:
            return super().forward(x)
        import warnings

        from torch.distributed.nn.functional import all_reduce  # differentiable

        x = x.float()  # under bf16 autocast: sums of squares and counts need fp32
        c = x.shape[1]
        n = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        with warnings.catch_warnings():  # deprecated in favour of a non-differentiable API
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), n]))
        total = stats[-1]
        mean = stats[:c] / total
        var = stats[c:2 * c] / total - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * total / (total - 1), alpha=m)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def _sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch: SyncBatchNorm on CUDA, GlobalBatchNorm2d on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
    return model


# --------------------------------------------------------------------------- precision

AMP_MODES = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Precision:
    """How the trainer computes: the autocast dtype (None: fp32) and the memory format."""

    amp: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self, device: torch.device):
        """The autocast context for `device` (disabled for fp32)."""
        if self.amp is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=self.amp)

    def to_dict(self) -> dict:
        """What config.json records: {"amp": "bf16"|"fp32", "channels_last": bool}."""
        return {"amp": "bf16" if self.amp == torch.bfloat16 else "fp32",
                "channels_last": self.channels_last}


def resolve_precision(device: torch.device, amp: str = "auto", channels_last: bool | None = None,
                      bf16_supported: bool | None = None) -> Precision:
    """--amp and --channels-last for a device. `auto` (and channels_last None) means bf16
    autocast + channels_last on a GPU that supports bf16, fp32 and contiguous elsewhere;
    `bf16` on CPU uses CPU autocast (the same code path a GPU runs)."""
    if amp not in AMP_MODES:
        raise UsageError(f"unknown --amp {amp!r}; valid: {', '.join(AMP_MODES)}")
    gpu = device.type == "cuda"
    if gpu and bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if amp == "auto":
        amp = "bf16" if gpu and bf16_supported else "fp32"
    elif amp == "bf16" and gpu and not bf16_supported:
        raise UsageError("--amp bf16 asked for, but this GPU has no bfloat16 support; "
                         "use --amp fp32")
    return Precision(torch.bfloat16 if amp == "bf16" else None,
                     gpu if channels_last is None else bool(channels_last))


def check_cpu_layout(model: nn.Module, device: torch.device, precision: Precision,
                     compiled: bool) -> None:
    """UsageError instead of a crash: torch's oneDNN (2.13, CPU) corrupts the heap computing
    the fp32 weight gradient of a channels_last 1x1 stride-2 convolution with 2-7 input
    channels, and torch.compile picks channels_last for convolutions on its own."""
    if device.type != "cpu" or precision.amp is not None or not (precision.channels_last
                                                                  or compiled):
        return
    bad = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
           and m.kernel_size == (1, 1) and m.stride != (1, 1) and 1 < m.in_channels < 8]
    if bad:
        raise UsageError(f"{bad[0]} (a 1x1 stride-2 convolution of under 8 input "
                         "channels) crashes torch's oneDNN when trained channels_last in "
                         "fp32 on CPU (--channels-last or --compile); train it without those, "
                         "with --amp bf16, or use a wider network")


def use_fast_kernels(device: torch.device) -> None:
    """On CUDA let cuDNN pick the fastest convolution algorithm per shape (airbench does;
    the shapes repeat every step, so the search pays once)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times include it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- helpers


def resolve_device(device: str | None) -> torch.device:
    """The torch device for --device (None/auto: CUDA if present); UsageError if unusable."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA GPU is available here")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """Every RNG's state as tensors and plain Python values, so a checkpoint loads with
    `weights_only=True` and no allowed globals."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"bit_generator": name, "key": torch.from_numpy(key.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    """Restore `_rng_state()`; also reads the pickled NumPy/Python states of older checkpoints."""
    torch.set_rng_state(s["torch"])
    npy, py = s["numpy"], s["python"]
    if isinstance(npy, dict):
        npy = (npy["bit_generator"], npy["key"].numpy().astype(np.uint32), npy["pos"],
               npy["has_gauss"], npy["cached_gaussian"])
    np.random.set_state(npy)
    if isinstance(py, dict):
        py = (py["version"], tuple(py["state"]), py["gauss_next"])
    random.setstate(py)
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def lr_lambda(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up then cosine to zero, stepped every iteration."""
    warm = recipe.warmup_epochs * steps_per_epoch
    total = recipe.epochs * steps_per_epoch

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return f


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with momentum or Adam over the trainable parameters, as the recipe says."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, device: torch.device, dist: Dist = Dist(),
             precision: Precision | None = None) -> float:
    """Top-1 accuracy (%) over the whole test split (summed over ranks); `precision`
    defaults to the device's (`resolve_precision`)."""
    precision = precision or resolve_precision(device)
    model.eval()
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in loader:
        with precision.autocast(device):
            out = model(x)
        correct += (out.argmax(1) == y).sum()
        seen += y.numel()
    if dist.world_size > 1:
        import torch.distributed as tdist

        both = torch.stack([correct, seen])
        tdist.all_reduce(both)
        correct, seen = both[0], both[1]
    return float(100.0 * correct / seen.clamp(min=1))


class _Progress:
    """A tqdm bar per epoch on a terminal; plain lines otherwise; nothing when quiet."""

    def __init__(self, quiet: bool, enabled: bool) -> None:
        self.quiet = quiet or not enabled
        self.tty = sys.stderr.isatty()

    def bar(self, total: int, desc: str):
        if self.quiet or not self.tty:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, unit="it", dynamic_ncols=True)

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- train


@dataclass
class TrainResult:
    """The trained model, its accuracies and its run directory (None without `out` or off rank 0)."""

    run: Run | None
    model: nn.Module
    final_acc: float
    best_acc: float
    epochs_run: int
    stopped_early: bool = False


EpochHook = Callable[[int, dict], bool | None]
LossHook = Callable[[nn.Module], torch.Tensor]


@with_run_options
def train(
    arch: str | NetSpec,
    dataset: str | Dataset = "digits",
    *,
    recipe: Recipe | None = None,
    out: str | Path | None = None,
    teacher: str | Path | Run | nn.Module | None = None,
    init_from: str | Path | dict | None = None,
    model: nn.Module | None = None,
    extra_loss: LossHook | None = None,
    on_epoch_end: EpochHook | None = None,
    seed: int = 0,
    device: str | None = None,
    data_dir: str | None = None,
    limit: int | None = None,
    resume: bool = False,
    force: bool = False,
    compile: bool = False,
    amp: str = "auto",
    channels_last: bool | None = None,
    quiet: bool = False,
    tag: dict | None = None,
    label: str = "",
) -> TrainResult:
    """Train a network and (when `out` is given) keep a run directory.

    arch: a zoo name or a NetSpec. dataset: a data-set name or a loaded `Dataset`.
    teacher: a run directory (or module) for knowledge distillation.
    init_from: a run directory or state dict to start from (weights that fit are copied).
    model: a prebuilt module to train instead of `build(spec)` (e.g. SNL's masked network).
    extra_loss(model) is added to the loss; on_epoch_end(epoch, metrics) returning True
    stops training; a "note" it puts in the metrics is shown on the epoch's progress line
    (not stored). `tag` is stored in config.json (e.g. which method produced the run);
    `label` names what is trained on every progress line (e.g. "criticality stage2 KD").
    amp ("auto", "fp32", "bf16") and channels_last (None: on GPU only) choose the precision
    (`resolve_precision`); compile wraps the model in torch.compile. None of the three is
    part of a run's identity: a run may resume under another one.
    `limit` keeps the first N train and test images of a named data set (smoke runs);
    `options=RunOptions(...)` may replace seed, device, data_dir, limit, resume, force,
    compile and quiet (see `deepreshape.options`).
    """
    recipe = recipe or Recipe()
    recipe.validate()
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UsageError(f"--seed must be an integer in 0..2**63-1, got {seed!r}")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out {out} is a file, not a run directory; name a folder")
    dist, dev = init_distributed(resolve_device(device))
    precision = resolve_precision(dev, amp, channels_last)
    use_fast_kernels(dev)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir, limit=limit)
    spec = arch if isinstance(arch, NetSpec) else parse(
        arch, input_size=data.input_size, num_classes=data.num_classes)
    if (spec.input_size, spec.num_classes) != (data.input_size, data.num_classes):
        spec = dataclasses.replace(spec, input_size=data.input_size, num_classes=data.num_classes)
    if recipe.batch_size % dist.world_size:
        raise UsageError(f"batch size {recipe.batch_size} must divide by {dist.world_size} processes")

    train_loader = BatchLoader(data.train_x, data.train_y, recipe.batch_size // dist.world_size,
                               mean=data.mean, std=data.std, train=True, augment=recipe.augment,
                               seed=seed, rank=dist.rank, world_size=dist.world_size, device=dev,
                               channels_last=precision.channels_last)
    if len(train_loader) == 0:
        raise UsageError(f"batch size {recipe.batch_size} exceeds the {len(data.train_y)} "
                         "training images; use a smaller --batch-size")
    test_loader = BatchLoader(data.test_x, data.test_y, max(256, recipe.batch_size // dist.world_size),
                              mean=data.mean, std=data.std, train=False, rank=dist.rank,
                              world_size=dist.world_size, device=dev,
                              channels_last=precision.channels_last)
    teacher_model, teacher_ref = _load_teacher(teacher, dev, spec)
    init_state = None
    if init_from is not None:
        init_state = init_from if isinstance(init_from, dict) else \
            load_run(init_from).load_checkpoint()["model"]
    config = {
        "spec": spec.to_dict(), "arch": spec.describe(),
        "data": {"dataset": data.name, "input_size": data.input_size, "num_classes": data.num_classes,
                 "train_size": len(data.train_y), "test_size": len(data.test_y)},
        "recipe": dataclasses.asdict(recipe), "seed": seed, "teacher": teacher_ref,
        "method": tag or {"name": "baseline"},
    }
    # Everything above only reads; from here on the run directory is written, by one writer.
    run_dir = Path(out) if out is not None else None
    with contextlib.ExitStack() as held:
        if run_dir is not None and dist.main:
            held.enter_context(writer_lock(run_dir))
        return _train_locked(spec, data, recipe, config, run_dir, resume, force, dev, dist,
                             model, init_state, train_loader, test_loader, teacher_model,
                             extra_loss, on_epoch_end, seed, compile, quiet, precision, label)


def _train_locked(spec: NetSpec, data: Dataset, recipe: Recipe, config: dict,
                  run_dir: Path | None, resume: bool, force: bool, dev: torch.device, dist: Dist,
                  model: nn.Module | None, init_state: dict | None, train_loader: BatchLoader,
                  test_loader: BatchLoader, teacher_model: nn.Module | None,
                  extra_loss: LossHook | None, on_epoch_end: EpochHook | None, seed: int,
                  compile: bool, quiet: bool, precision: Precision, label: str = "") -> TrainResult:
    """The training run proper, under the run directory's writer lock (when there is one)."""
    ckpt = _prepare_run_dir(run_dir, config, resume, force) if run_dir is not None else None
    if run_dir is not None and dist.main:
        schema.remove_temp_files(run_dir)
        schema.METRICS.keep_epochs(run_dir, ckpt["epoch"] if ckpt is not None else 0)
    if dist.world_size > 1:  # every rank has read the old state before rank 0 rewrites it
        import torch.distributed as tdist

        tdist.barrier()
    if run_dir is not None and dist.main:
        schema.CONFIG.write(run_dir, {**config, "versions": versions(),
                                         "world_size": dist.world_size, "device": dev.type,
                                         "precision": {**precision.to_dict(), "compile": compile}})

    seed_everything(seed)
    net = model if model is not None else build(spec)
    if init_state is not None and ckpt is None:
        load_matching(net, init_state)
    check_cpu_layout(net, dev, precision, compile)
    net = net.to(dev)
    if precision.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if dist.world_size > 1:
        net = _sync_batchnorm(net, dev)
    optimizer = make_optimizer(net, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(recipe, len(train_loader)))
    start_epoch, best, wall0 = 0, 0.0, 0.0
    if ckpt is not None:
        load_state(net, ckpt["model"], schema.CHECKPOINT.path(run_dir))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best, wall0 = ckpt["epoch"], ckpt.get("best_acc", 0.0), ckpt.get("wall_time", 0.0)
        _set_rng_state(ckpt["rng"])
    runner: nn.Module = net
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        runner = DDP(net, device_ids=ddp_device_ids(dev))
    if compile:
        runner = torch.compile(runner)

    progress = _Progress(quiet, dist.main)
    acc, epoch, stopped = 0.0, start_epoch, False
    t_start = time.perf_counter() - wall0
    for epoch in range(start_epoch, recipe.epochs):
        metrics = _train_epoch(runner, train_loader, optimizer, scheduler, recipe, dev,
                               teacher_model, extra_loss, progress, epoch, run_dir, dist, precision,
                               label)
        acc = evaluate(runner, test_loader, dev, dist, precision)
        best = max(best, acc)
        metrics.update(epoch=epoch + 1, test_acc=acc)
        stop = bool(on_epoch_end(epoch, metrics)) if on_epoch_end else False
        note = metrics.pop("note", "")
        if run_dir is not None and dist.main:
            schema.METRICS.append(run_dir, metrics)
            schema.CHECKPOINT.save(run_dir, {
                "arch": spec.describe(), "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": None, "epoch": epoch + 1,
                "best_acc": best, "rng": _rng_state(), "wall_time": time.perf_counter() - t_start})
        progress.line(f"{label + ': ' if label else ''}epoch {epoch + 1}/{recipe.epochs}  "
                      f"loss {metrics['loss']:.4f}  train {metrics['train_acc']:.2f}%  "
                      f"test {acc:.2f}%  {metrics['images_per_s']:.0f} img/s"
                      + (f"  {note}" if note else ""))
        if stop:
            stopped = True
            break
    epochs_run = epoch + 1 if recipe.epochs > start_epoch else start_epoch
    if start_epoch >= recipe.epochs:  # resumed a finished run: just evaluate
        acc = evaluate(runner, test_loader, dev, dist, precision)
    run = None
    if run_dir is not None:
        if dist.main:
            c = count(spec)
            schema.RESULTS.write(run_dir, {
                "arch": spec.describe(), "dataset": data.name, "final_acc": acc, "best_acc": best,
                "relus": c.relus, "macs": c.macs, "params": c.params, "stem_relus": c.stem_relus,
                "stage_relus": [s.relus for s in c.stages], "epochs": epochs_run,
                "stopped_early": stopped, "wall_time_s": time.perf_counter() - t_start,
                "note": "final_acc is the last epoch's; best_acc is for information only "
                        "(choosing a checkpoint on the test set would overstate accuracy)"})
        run = Run(run_dir, config, spec) if dist.main else None
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return TrainResult(run, net.eval(), acc, best, epochs_run, stopped)


def _train_epoch(model: nn.Module, loader: BatchLoader, optimizer: torch.optim.Optimizer,
                 scheduler: Any, recipe: Recipe, dev: torch.device, teacher: nn.Module | None,
                 extra_loss: LossHook | None, progress: _Progress, epoch: int,
                 run_dir: Path | None, dist: Dist, precision: Precision | None = None,
                 label: str = "") -> dict:
    precision = precision or resolve_precision(dev)
    model.train()
    loader.set_epoch(epoch)
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev)
    seen = 0
    t0 = time.perf_counter()
    bar = progress.bar(len(loader), f"{label + ': ' if label else ''}epoch {epoch + 1}/{recipe.epochs}")
    for step, (x, y) in enumerate(loader):
        with precision.autocast(dev):
            out = model(x)
            t_out = None
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(x)
            loss = kd_loss(out.float(), y, None if t_out is None else t_out.float(),
                           recipe.kd_temperature, recipe.kd_weight)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * y.numel()
        correct += (out.detach().argmax(1) == y).sum()
        seen += y.numel()
        if step % 50 == 49 or step == len(loader) - 1:
            _check_finite(loss_sum, epoch, run_dir)
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}")
    if bar is not None:
        bar.close()
    synchronize(dev)
    secs = time.perf_counter() - t0
    return {"loss": float(loss_sum) / max(seen, 1), "train_acc": 100.0 * float(correct) / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"], "seconds": secs,
            "images_per_s": seen * dist.world_size / max(secs, 1e-9)}


def _check_finite(loss_sum: torch.Tensor, epoch: int, run_dir: Path | None) -> None:
    if not torch.isfinite(loss_sum):
        kept = (f"; the last good checkpoint (epoch {epoch}) is kept in {run_dir}"
                if run_dir is not None and epoch > 0 else "")
        raise RunFailure(f"loss became NaN/inf in epoch {epoch + 1} (try a lower --lr){kept}")


def _load_teacher(teacher: str | Path | Run | nn.Module | None, dev: torch.device,
                  student: NetSpec) -> tuple[nn.Module | None, str | None]:
    """The frozen KD teacher, refused (UsageError) unless it sees the student's inputs and
    predicts the student's classes."""
    if teacher is None:
        return None, None
    if isinstance(teacher, nn.Module):
        return teacher.to(dev).eval(), "module"
    run = teacher if isinstance(teacher, Run) else load_run(teacher)
    t = run.spec
    want = (student.in_channels, student.input_size, student.num_classes)
    have = (t.in_channels, t.input_size, t.num_classes)
    if have != want:
        raise UsageError(
            f"teacher {run.path} takes {have[0]}x{have[1]}x{have[1]} inputs and predicts {have[2]} "
            f"classes, but the student takes {want[0]}x{want[1]}x{want[1]} and predicts {want[2]}; "
            "use a teacher trained on the same data set and input size")
    model = run.model().to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, str(run.path)


_IDENTITY_KEYS = ("spec", "data", "recipe", "seed", "teacher", "method")


def _prepare_run_dir(run_dir: Path, config: dict, resume: bool, force: bool) -> dict | None:
    """Refuse to mix runs: an existing directory must hold the same config (then --resume
    continues it) unless --force starts it over. Returns the checkpoint to resume from."""
    old_cfg = schema.CONFIG.path(run_dir)
    if not old_cfg.exists():
        return None
    if force and not resume:
        for f in (schema.CHECKPOINT, schema.METRICS, schema.RESULTS):
            f.remove(run_dir)
        return None
    old = schema.read_json(old_cfg)
    check_config(old, old_cfg)
    new = json_roundtrip(config)
    diff = [k for k in _IDENTITY_KEYS if old.get(k) != new.get(k)]
    # A resumed run may only change `epochs`.
    if diff and (not resume or diff != ["recipe"] or _recipe_core(old) != _recipe_core(config)):
        raise UsageError(f"{run_dir} holds another run (different {', '.join(diff)}); "
                         "use another --out, or --force to start it over")
    if not resume:
        raise UsageError(f"{run_dir} already holds this run; use --resume to continue it "
                         "or --force to start it over")
    if not schema.CHECKPOINT.exists(run_dir):
        return None
    ckpt = load_checkpoint(schema.CHECKPOINT.path(run_dir), NetSpec.from_dict(config["spec"]))
    missing = [k for k in ("optimizer", "scheduler", "epoch", "rng") if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{schema.CHECKPOINT.path(run_dir)}: cannot resume, the checkpoint has no {', '.join(missing)} "
            "(weights only); --force starts the run over, or train elsewhere from its weights")
    return ckpt


def _recipe_core(config: dict) -> dict:
    """A resumed run may extend `epochs`; everything else must match."""
    return {k: v for k, v in config["recipe"].items() if k != "epochs"}


def json_roundtrip(obj: Any) -> Any:
    """`obj` as it reads back from JSON, to compare configs with stored ones."""
    import json

    return json.loads(json.dumps(obj))
