"""A run directory as the trainer keeps it: RNG state, seeding, the checkpoint written
after every epoch and read back on resume, and the config / metrics / results files.

A resumed run must end with exactly the weights of an uninterrupted one, so the
checkpoint holds the model, optimizer, scheduler, epoch and every RNG's state, and
`prepare_run_dir` refuses to continue a directory that holds another run. Every file goes
through `deepreshape.rundir.schema`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepreshape.count import count
from deepreshape.errors import CheckpointError, UsageError
from deepreshape.rundir import schema
from deepreshape.rundir.run import check_config, load_checkpoint, load_state, versions
from deepreshape.spec import NetSpec

# The fields of config.json that make a run what it is; a resumed run may change only
# the recipe's `epochs`.
IDENTITY_KEYS = ("spec", "data", "recipe", "seed", "teacher", "method")
RESUME_KEYS = ("optimizer", "scheduler", "epoch", "rng")  # what a resumable checkpoint holds


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG's state as tensors and plain Python values, so a checkpoint loads with
    `weights_only=True` and no allowed globals."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"bit_generator": name, "key": torch.from_numpy(key.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    """Restore `rng_state()`; also reads the pickled NumPy/Python states of older checkpoints."""
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


# --------------------------------------------------------------------------- the run directory


def prepare_run_dir(run_dir: Path, config: dict, resume: bool, force: bool) -> dict | None:
    """Refuse to mix runs: an existing directory must hold the same config (then --resume
    continues it) unless --force starts it over. Returns the checkpoint to resume from."""
    if not schema.CONFIG.path(run_dir).exists():
        return None
    if force and not resume:
        for f in (schema.CHECKPOINT, schema.METRICS, schema.RESULTS):
            f.remove(run_dir)
        return None
    old_cfg = schema.CONFIG.path(run_dir)
    old = schema.read_json(old_cfg, schema.CONFIG.name)
    check_config(old, old_cfg)
    new = json_roundtrip(config)
    diff = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
    # A resumed run may only change `epochs`.
    if diff and (not resume or diff != ["recipe"] or recipe_core(old) != recipe_core(config)):
        raise UsageError(f"{run_dir} holds another run (different {', '.join(diff)}); "
                         "use another --out, or --force to start it over")
    if not resume:
        raise UsageError(f"{run_dir} already holds this run; use --resume to continue it "
                         "or --force to start it over")
    path = schema.CHECKPOINT.path(run_dir)
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, NetSpec.from_dict(config["spec"]))
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path}: cannot resume, the checkpoint has no {', '.join(missing)} "
            "(weights only); --force starts the run over, or train elsewhere from its weights")
    return ckpt


def recipe_core(config: dict) -> dict:
    """A resumed run may extend `epochs`; everything else must match."""
    return {k: v for k, v in config["recipe"].items() if k != "epochs"}


def json_roundtrip(obj: Any) -> Any:
    """`obj` as it reads back from JSON, to compare configs with stored ones."""
    return json.loads(json.dumps(obj))


def clean_run_dir(run_dir: Path, epochs: int) -> None:
    """Before a (resumed) run writes: drop temporary files a kill left, and metrics lines
    past the checkpoint's `epochs` (call under the writer lock, on the main rank)."""
    schema.remove_temp_files(run_dir)
    schema.METRICS.keep_epochs(run_dir, epochs)


def write_config(run_dir: Path, config: dict, **facts: Any) -> None:
    """config.json: the run's identity plus the versions and the `facts` of this process
    (world size, device, precision) that are not part of it."""
    schema.CONFIG.write(run_dir, {**config, "versions": versions(), **facts})


def save_checkpoint(run_dir: Path, spec: NetSpec, net: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, epoch: int, best: float, wall_time: float, *,
                    step: int = 0, partial: dict | None = None) -> None:
    """checkpoint.pt after `epoch` whole epochs: everything a resume needs to continue
    exactly. A preempted run also saves `step`, the steps done of the next epoch, and
    `partial`, that epoch's running sums (`loop._train_epoch`'s `resume_at`)."""
    schema.CHECKPOINT.save(run_dir, {
        "arch": spec.describe(), "model": net.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": None, "epoch": epoch,
        "best_acc": best, "rng": rng_state(), "wall_time": wall_time, "step": step,
        "partial": partial if step else None})


def partial_epoch(ckpt: dict) -> dict | None:
    """The part of an epoch a preempted run had done (None at an epoch boundary)."""
    partial = ckpt.get("partial")
    return partial if ckpt.get("step") and isinstance(partial, dict) else None


def restore(ckpt: dict, net: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            where: Path) -> tuple[int, float, float]:
    """Load a resumable checkpoint into the run's objects (and the RNGs); returns (epoch,
    best accuracy, wall time so far)."""
    load_state(net, ckpt["model"], where)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return ckpt["epoch"], ckpt.get("best_acc", 0.0), ckpt.get("wall_time", 0.0)


def write_results(run_dir: Path, spec: NetSpec, dataset: str, final_acc: float, best_acc: float,
                  epochs: int, stopped: bool, wall_time: float) -> None:
    """results.json: the final accuracy with the network's exact counts."""
    c = count(spec)
    schema.RESULTS.write(run_dir, {
        "arch": spec.describe(), "dataset": dataset, "final_acc": final_acc, "best_acc": best_acc,
        "relus": c.relus, "macs": c.macs, "params": c.params, "polys": c.polys,
        "stem_relus": c.stem_relus,
        "stage_relus": [s.relus for s in c.stages], "epochs": epochs,
        "stopped_early": stopped, "wall_time_s": wall_time,
        "note": "final_acc is the last epoch's; best_acc is for information only "
                "(choosing a checkpoint on the test set would overstate accuracy)"})
