"""A loaded run directory (`Run`), its checkpoint, and its one-writer lock.

torch is imported where weights are (a checkpoint, a model): reading a run's files, as
`report`, `pareto` and a sweep's tables do, does not load it.

What files a run directory holds, and their readers and writers, is `rundir.schema`;
this module opens a run from its config, checks a checkpoint against the spec, and holds
the lock that makes one process the only writer of a directory.
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepreshape import fileio
from deepreshape.errors import CheckpointError, UsageError
from deepreshape.rundir import schema
from deepreshape.rundir.lock import exclusive_lock
from deepreshape.spec import NetSpec

if TYPE_CHECKING:  # torch loads where weights do: reading a run's files needs none of it
    import torch


def versions() -> dict[str, str]:
    """Versions of deepreshape, torch, numpy and Python, recorded with each run."""
    import numpy
    import torch

    from deepreshape import __version__

    return {"deepreshape": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


@dataclass
class Run:
    """A loaded run directory."""

    path: Path
    config: dict
    spec: NetSpec

    @property
    def results(self) -> dict:
        """results.json, or {} while the run has not finished."""
        return schema.RESULTS.read_if_present(self.path) or {}

    @property
    def metrics(self) -> list[dict]:
        """The per-epoch records of metrics.jsonl ([] if none yet)."""
        return schema.METRICS.read(self.path)

    @property
    def dataset(self) -> str:
        """Name of the data set the run was trained on."""
        return self.config["data"]["dataset"]

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict:
        """The run's checkpoint, checked against its spec."""
        return load_checkpoint(schema.CHECKPOINT.path(self.path), self.spec, map_location)

    def model(self, map_location: str | torch.device = "cpu") -> torch.nn.Module:
        """The trained network (eval mode), weights loaded and checked against the spec."""
        from deepreshape.build import build

        model = build(self.spec)
        state = self.load_checkpoint(map_location)["model"]
        load_state(model, state, schema.CHECKPOINT.path(self.path))
        return model.eval()


def load_run(path: str | Path) -> Run:
    """Open a run directory from its config.json; CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run directory")
    config = schema.read_json(schema.CONFIG.path(path))
    check_config(config, schema.CONFIG.path(path))
    try:
        spec = NetSpec.from_dict(config["spec"])
    except UsageError as e:
        raise CheckpointError(f"{schema.CONFIG.path(path)}: {e}") from None
    return Run(path, config, spec)


# The fields of config.json this version writes and reads.
CONFIG_FIELDS = ("spec", "arch", "data", "recipe", "seed", "teacher", "method", "versions",
                 "world_size", "device", "precision")


def check_config(config: Any, where: Path) -> None:
    """A run config has its spec and data sections; one written by a newer deepreshape is
    read with a warning that names the fields this version ignores."""
    if not isinstance(config, dict) or not isinstance(config.get("spec"), dict):
        raise CheckpointError(f"{where}: not a deepreshape run config (no 'spec' section)")
    data = config.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("dataset"), str):
        raise CheckpointError(f"{where}: the config has no 'data' section naming its data set "
                              "(a deepreshape run config has spec, data and recipe)")
    from deepreshape import __version__

    written = str((config.get("versions") or {}).get("deepreshape", "0"))
    if _version_tuple(written) > _version_tuple(__version__):
        extra = [k for k in config if k not in CONFIG_FIELDS]
        ignored = f"; ignoring the fields it added: {', '.join(extra)}" if extra else ""
        warnings.warn(f"{where}: written by deepreshape {written}, newer than this {__version__}"
                      f"{ignored}", stacklevel=3)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, p))
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def load_checkpoint(path: Path, spec: NetSpec | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict; CheckpointError if missing, broken or for another network."""
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint (train the run first)")
    import torch

    ckpt = fileio.load_torch(path, "checkpoint", map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a deepreshape checkpoint (no model weights)")
    state = ckpt["model"]
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: not a deepreshape checkpoint ('model' is not a state dict "
                              "of named tensors)")
    if spec is not None and ckpt.get("arch") not in (None, spec.describe()):
        raise CheckpointError(
            f"{path}: checkpoint is for {ckpt.get('arch')}, but the run is {spec.describe()}")
    return ckpt


def load_state(model: torch.nn.Module, state: dict, where: Path | str) -> None:
    """Load weights strictly, turning a mismatch into one clear line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or bad:
        detail = (f"missing {missing[:2]}" if missing else f"unexpected {extra[:2]}" if extra
                  else f"shape of {bad[0]}: {tuple(state[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
        raise CheckpointError(f"{where}: weights do not fit this network ({detail})")
    model.load_state_dict(state)


def load_matching(model: torch.nn.Module, state: dict) -> list[str]:
    """Copy every weight whose name and shape match; return the names left at their init.

    Methods start a changed network (culled, reused, masked) from its trained baseline.
    """
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(fit, strict=False)
    return [k for k in own if k not in fit]


_held: dict[Path, int] = {}  # run directory -> depth, for the locks this process holds


@contextlib.contextmanager
def writer_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run directory's exclusive writer lock (`flock` on RUN/.lock) for the block.

    A second writer, in another process, is refused at once with RunFailure naming the
    holder (`rundir.lock.exclusive_lock`, shared with the sweep driver's lock). The lock is
    re-entrant within a process (a method that locks its run directory may call `train()`
    on it) and is released on every exit path, a kill included (the
    kernel drops it with the process). A directory this call created is removed again if
    the block leaves nothing in it but the lock file.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        _held[run_dir] += 1
        try:
            yield run_dir
        finally:
            _held[run_dir] -= 1
        return
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = schema.LOCK.path(run_dir)
    with exclusive_lock(lock, str(run_dir), busy="is being written by",
                        advice="wait for it to finish, or use another --out"):
        _held[run_dir] = 1
        try:
            yield run_dir
        finally:
            del _held[run_dir]
            if created and list(run_dir.iterdir()) == [lock]:  # removed while still held
                lock.unlink()
                for p in created:  # innermost first
                    with contextlib.suppress(OSError):
                        p.rmdir()
