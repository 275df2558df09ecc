"""The one trainer: SGD/Adam + cosine (per iteration) + optional Hinton KD.

Every method (baselines, criticality, DeepReDuce, ReLU-reuse, SNL) trains through
`train()`; methods that need more hook into it with `extra_loss` (a term added to the
loss, e.g. SNL's L1 on masks) and `on_epoch_end` (may stop training early).
`train()` resolves and checks everything first (`TrainContext`), then runs the loop under
the run directory's writer lock. SIGTERM / SIGUSR1 stop it after the current step with an
exact checkpoint and `Preempted` (exit 143; `preemption`). Precision and devices are in
`precision`, torchrun (DDP) in `distributed`, the run directory's files in `checkpoints`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepreshape.build import build
from deepreshape.data import BatchLoader, Dataset, load_dataset
from deepreshape.errors import Preempted, RunFailure, UsageError
from deepreshape.options import RunOptions, takes_run_options
from deepreshape.rundir import schema
from deepreshape.rundir.run import Run, load_matching, load_run, writer_lock
from deepreshape.spec import NetSpec
from deepreshape.training import checkpoints, preemption
from deepreshape.training.distributed import Dist, ddp_device_ids, init_distributed, sync_batchnorm
from deepreshape.training.evaluate import evaluate
from deepreshape.training.precision import (
    Precision,
    check_cpu_layout,
    resolve_device,
    resolve_precision,
    synchronize,
    use_fast_kernels,
)
from deepreshape.training.recipe import Recipe, kd_loss, lr_lambda, make_optimizer
from deepreshape.zoo import parse

DEFAULT_DATASET = "digits"  # embedded, offline: what `train(name)` uses unless told

EpochHook = Callable[[int, dict], bool | None]
LossHook = Callable[[nn.Module], torch.Tensor]


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


@dataclass
class TrainResult:
    """The trained model, its accuracies and its run directory (None without `out` or off rank 0)."""

    run: Run | None
    model: nn.Module
    final_acc: float
    best_acc: float
    epochs_run: int
    stopped_early: bool = False


@dataclass(frozen=True)
class TrainContext:
    """One training run, resolved and checked before its run directory is touched: what
    is trained (spec, data, recipe, the starting model or weights, the teacher, hooks),
    where (run directory, device, place in a DDP job, precision) and how (`options`:
    seed, resume, force, compile, quiet). `config` is what config.json records."""

    spec: NetSpec
    data: Dataset
    recipe: Recipe
    config: dict
    run_dir: Path | None
    device: torch.device
    dist: Dist
    precision: Precision
    options: RunOptions
    train_loader: BatchLoader
    test_loader: BatchLoader
    model: nn.Module | None = None
    init_state: dict | None = None
    teacher: nn.Module | None = None
    extra_loss: LossHook | None = None
    on_epoch_end: EpochHook | None = None
    label: str = ""

    @property
    def writes(self) -> bool:
        """Whether this process writes the run directory (there is one, and this is rank 0)."""
        return self.run_dir is not None and self.dist.main


@takes_run_options
def train(
    arch: str | NetSpec,
    dataset: str | Dataset | None = None,
    *,
    recipe: Recipe | None = None,
    out: str | Path | None = None,
    teacher: str | Path | Run | nn.Module | None = None,
    init_from: str | Path | dict | None = None,
    model: nn.Module | None = None,
    extra_loss: LossHook | None = None,
    on_epoch_end: EpochHook | None = None,
    amp: str = "auto",
    channels_last: bool | None = None,
    tag: dict | None = None,
    label: str = "",
    options: RunOptions | None = None,
) -> TrainResult:
    """Train a network and (when `out` is given) keep a run directory.

    arch: a zoo name or a NetSpec. dataset: a data-set name or a loaded `Dataset`
    (default: `options.dataset`, else digits). teacher: a run directory (or module) for
    knowledge distillation. init_from: a run directory or state dict to start from
    (weights that fit are copied). model: a prebuilt module to train instead of
    `build(spec)` (e.g. SNL's masked network). extra_loss(model) is added to the loss;
    on_epoch_end(epoch, metrics) returning True stops training; a "note" it puts in the
    metrics is shown on the epoch's progress line (not stored). `tag` is stored in
    config.json (e.g. which method produced the run); `label` names what is trained on
    every progress line (e.g. "criticality stage2 KD"). amp ("auto", "fp32", "bf16") and
    channels_last (None: on GPU only) choose the precision (`resolve_precision`);
    options.compile wraps the model in torch.compile. None of the three is part of a
    run's identity: a run may resume under another one. `options` (`RunOptions`): seed,
    device, data_dir, limit (the first N train and test images of a named data set, for
    smoke runs), resume, force, quiet.
    """
    opts = RunOptions.of(options)
    recipe = recipe or Recipe()
    recipe.validate()
    seed = opts.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UsageError(f"--seed must be an integer in 0..2**63-1, got {seed!r}")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out {out} is a file, not a run directory; name a folder")
    dist, dev = init_distributed(resolve_device(opts.device))
    precision = resolve_precision(dev, amp, channels_last)
    use_fast_kernels(dev)
    data = _dataset(dataset, opts)
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
    ctx = TrainContext(spec, data, recipe, config, Path(out) if out is not None else None, dev,
                       dist, precision, opts, train_loader, test_loader, model, init_state,
                       teacher_model, extra_loss, on_epoch_end, label)
    # Everything above only reads; from here on the run directory is written, by one writer.
    with contextlib.ExitStack() as held:
        held.enter_context(preemption.watch())
        if ctx.writes:
            held.enter_context(writer_lock(ctx.run_dir))
        return _train_locked(ctx)


def _dataset(dataset: str | Dataset | None, opts: RunOptions) -> Dataset:
    """The data set to train on: a loaded one as given, else the name given (or
    options.dataset, or digits) read with options.data_dir and options.limit."""
    if isinstance(dataset, Dataset):
        return dataset
    if dataset is not None and opts.dataset is not None and \
            dataset.strip().lower() != opts.dataset.strip().lower():
        raise UsageError(f"train: data set given twice ({dataset!r} as an argument, "
                         f"{opts.dataset!r} in options); give it once")
    name = dataset if dataset is not None else opts.dataset or DEFAULT_DATASET
    return load_dataset(name, opts.data_dir, limit=opts.limit)


def _train_locked(ctx: TrainContext) -> TrainResult:
    """The training run proper, under the run directory's writer lock (when there is one)."""
    run_dir, dev, dist, recipe, opts = ctx.run_dir, ctx.device, ctx.dist, ctx.recipe, ctx.options
    ckpt = checkpoints.prepare_run_dir(run_dir, ctx.config, opts.resume, opts.force) \
        if run_dir is not None else None
    if ctx.writes:
        checkpoints.clean_run_dir(run_dir, ckpt["epoch"] if ckpt is not None else 0)
    dist.barrier()  # every rank has read the old state before rank 0 rewrites it
    if ctx.writes:
        checkpoints.write_config(run_dir, ctx.config, world_size=dist.world_size,
                                 device=dev.type,
                                 precision={**ctx.precision.to_dict(), "compile": opts.compile})

    checkpoints.seed_everything(opts.seed)
    net = ctx.model if ctx.model is not None else build(ctx.spec)
    if ctx.init_state is not None and ckpt is None:
        load_matching(net, ctx.init_state)
    check_cpu_layout(net, dev, ctx.precision, opts.compile)
    net = net.to(dev)
    if ctx.precision.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if dist.world_size > 1:
        net = sync_batchnorm(net, dev)
    optimizer = make_optimizer(net, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lr_lambda(recipe, len(ctx.train_loader)))
    start_epoch, best, wall0, partial = 0, 0.0, 0.0, None
    if ckpt is not None:
        start_epoch, best, wall0 = checkpoints.restore(ckpt, net, optimizer, scheduler,
                                                       schema.CHECKPOINT.path(run_dir))
        partial = checkpoints.partial_epoch(ckpt)
    runner: nn.Module = net
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        runner = DDP(net, device_ids=ddp_device_ids(dev))
    if opts.compile:
        runner = torch.compile(runner)

    progress = _Progress(opts.quiet, dist.main)
    t_start = time.perf_counter() - wall0
    with preemption.deferred():  # a signal after the last check stops us once results are written
        acc, best, epoch, stopped = _epochs(ctx, runner, net, optimizer, scheduler, start_epoch,
                                            best, partial, progress, t_start)
        epochs_run = epoch + 1 if recipe.epochs > start_epoch else start_epoch
        if start_epoch >= recipe.epochs:  # resumed a finished run: just evaluate
            acc = evaluate(runner, ctx.test_loader, dev, dist, ctx.precision)
        run = None
        if run_dir is not None:
            if dist.main:
                checkpoints.write_results(run_dir, ctx.spec, ctx.data.name, acc, best,
                                          epochs_run, stopped, time.perf_counter() - t_start)
            run = Run(run_dir, ctx.config, ctx.spec) if dist.main else None
        dist.barrier()
    return TrainResult(run, net.eval(), acc, best, epochs_run, stopped)


def _epochs(ctx: TrainContext, runner: nn.Module, net: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: Any, start_epoch: int, best: float,
            partial: dict | None, progress: _Progress, t_start: float
            ) -> tuple[float, float, int, bool]:
    """The epochs from `start_epoch` (continuing a `partial` one); returns (last and best
    test accuracy, last epoch index, stopped by the hook). On SIGTERM / SIGUSR1 it finishes the
    current step, saves an exact mid-epoch checkpoint and raises `Preempted`.

    Why mid-epoch and not a roll-back to the last epoch boundary: both resume exactly
    (the data order and augmentation of a step depend only on seed, epoch and position,
    and the checkpoint holds model, optimizer, scheduler, RNG states and the epoch's
    running sums), but only this one keeps the work of a partial epoch, which on a large
    data set is most of what a grace period could save."""
    run_dir, dev, dist, recipe, label = (ctx.run_dir, ctx.device, ctx.dist, ctx.recipe,
                                         ctx.label)
    acc, epoch, stopped = 0.0, start_epoch, False
    for epoch in range(start_epoch, recipe.epochs):
        metrics = _train_epoch(runner, ctx.train_loader, optimizer, scheduler, recipe, dev,
                               ctx.teacher, ctx.extra_loss, progress, epoch, run_dir, dist,
                               ctx.precision, label, resume_at=partial, preemptible=True)
        partial = None
        if "preempted" in metrics:
            where = (f"in epoch {epoch + 1}/{recipe.epochs} after step {metrics['step']} of "
                     f"{len(ctx.train_loader)}")
            _preempted(ctx, metrics, where, functools.partial(
                checkpoints.save_checkpoint, run_dir, ctx.spec, net, optimizer, scheduler, epoch,
                best, time.perf_counter() - t_start, step=metrics["step"],
                partial=metrics["partial"]))
        acc = evaluate(runner, ctx.test_loader, dev, dist, ctx.precision)
        best = max(best, acc)
        metrics.update(epoch=epoch + 1, test_acc=acc)
        stop = bool(ctx.on_epoch_end(epoch, metrics)) if ctx.on_epoch_end else False
        note = metrics.pop("note", "")
        if ctx.writes:
            schema.METRICS.append(run_dir, metrics)
            checkpoints.save_checkpoint(run_dir, ctx.spec, net, optimizer, scheduler, epoch + 1,
                                        best, time.perf_counter() - t_start)
        progress.line(f"{label + ': ' if label else ''}epoch {epoch + 1}/{recipe.epochs}  "
                      f"loss {metrics['loss']:.4f}  train {metrics['train_acc']:.2f}%  "
                      f"test {acc:.2f}%  {metrics['images_per_s']:.0f} img/s"
                      + (f"  {note}" if note else ""))
        if stop:
            stopped = True
            break
        signame = _stop_requested(dist, dev)
        if signame is not None and epoch + 1 < recipe.epochs:
            _preempted(ctx, {"preempted": signame}, f"at the end of epoch {epoch + 1}/"
                       f"{recipe.epochs}", None)
    return acc, best, epoch, stopped


def _stop_requested(dist: Dist, dev: torch.device) -> str | None:
    """The signal that asks this run to stop, agreed by every rank under DDP (one rank may
    catch it a step before another; all must stop at the same step)."""
    name = preemption.pending()
    if dist.world_size == 1:
        return name
    import torch.distributed as tdist

    flag = torch.tensor([0.0 if name is None else 1.0], device=dev)
    tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
    return (name or "SIGTERM") if float(flag) > 0 else None


def _preempted(ctx: TrainContext, info: dict, where: str, save: Callable[[], None] | None) -> None:
    """Save (rank 0, when there is a run directory), wait for every rank, raise `Preempted`."""
    if save is not None and ctx.writes:
        save()
    ctx.dist.barrier()  # no rank leaves (and lets torchrun stop the job) before the save
    if ctx.run_dir is None:
        saved = "nothing saved (no run directory)"
    else:
        saved = f"checkpoint saved to {schema.CHECKPOINT.path(ctx.run_dir)}"
    raise Preempted(f"{ctx.label + ': ' if ctx.label else ''}preempted ({info['preempted']}) "
                    f"{where}; {saved}; run the same command with --resume to continue")


def _train_epoch(model: nn.Module, loader: BatchLoader, optimizer: torch.optim.Optimizer,
                 scheduler: Any, recipe: Recipe, dev: torch.device, teacher: nn.Module | None,
                 extra_loss: LossHook | None, progress: _Progress, epoch: int,
                 run_dir: Path | None, dist: Dist, precision: Precision | None = None,
                 label: str = "", *, resume_at: dict | None = None,
                 preemptible: bool = False) -> dict:
    """One epoch over `loader`; returns its metrics (loss, train accuracy, lr, speed).
    Kept free of `TrainContext` so benchmarks can time it on a bare loop.

    `resume_at` (a checkpoint's `partial` epoch) skips the steps already done and carries
    on their running sums. With `preemptible`, a SIGTERM / SIGUSR1 caught during a step
    (not the last) ends the epoch after it: the result is then {"preempted": signal,
    "step": steps done, "partial": what `resume_at` takes}."""
    precision = precision or resolve_precision(dev)
    model.train()
    loader.set_epoch(epoch)
    start = int(resume_at["step"]) if resume_at else 0
    loss_sum = resume_at["loss_sum"].to(dev) if resume_at else torch.zeros((), device=dev)
    correct = resume_at["correct"].to(dev) if resume_at else torch.zeros((), device=dev)
    seen = int(resume_at["seen"]) if resume_at else 0
    t0 = time.perf_counter() - (float(resume_at["seconds"]) if resume_at else 0.0)
    n = len(loader)
    bar = progress.bar(n, f"{label + ': ' if label else ''}epoch {epoch + 1}/{recipe.epochs}")
    if bar is not None and start:
        bar.update(start)
    # DDP ranks agree on stopping by a collective, so only every 10th step there.
    every = 1 if dist.world_size == 1 else 10
    for step, (x, y) in enumerate(loader):
        if step < start:  # done before the preemption: same order, nothing to compute
            continue
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
        if preemptible and step < n - 1 and (step + 1) % every == 0:
            signame = _stop_requested(dist, dev)
            if signame is not None:
                if bar is not None:
                    bar.close()
                return {"preempted": signame, "step": step + 1, "partial": {
                    "step": step + 1, "loss_sum": loss_sum.detach().cpu(),
                    "correct": correct.detach().cpu(), "seen": seen,
                    "seconds": time.perf_counter() - t0}}
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
