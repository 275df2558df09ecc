"""Run directories: the unit every command reads and writes.

A run directory holds ``config.json`` (spec, data set, recipe, seed, versions),
``checkpoint.pt`` (model, optimizer, scheduler, epoch, RNG states), ``metrics.jsonl``
(one line per epoch) and ``results.json``; later commands add ``criticality.json``,
``pi.json`` and others beside them. Every write is atomic.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deepreshape.errors import CheckpointError
from deepreshape.spec import NetSpec

CONFIG, CHECKPOINT, METRICS, RESULTS = "config.json", "checkpoint.pt", "metrics.jsonl", "results.json"


def versions() -> dict[str, str]:
    """Versions of deepreshape, torch, numpy and Python, recorded with each run."""
    import numpy

    from deepreshape import __version__

    return {"deepreshape": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def read_json(path: Path, what: str) -> Any:
    """Read a run file; CheckpointError naming `what` if missing or broken."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {what} here (is this a deepreshape run directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: broken {what} ({e.__class__.__name__}: {e})") from None


@dataclass
class Run:
    """A loaded run directory."""

    path: Path
    config: dict
    spec: NetSpec

    @property
    def results(self) -> dict:
        """results.json, or {} while the run has not finished."""
        p = self.path / RESULTS
        return read_json(p, "results.json") if p.exists() else {}

    @property
    def metrics(self) -> list[dict]:
        """The per-epoch records of metrics.jsonl ([] if none yet)."""
        p = self.path / METRICS
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    @property
    def dataset(self) -> str:
        """Name of the data set the run was trained on."""
        return self.config["data"]["dataset"]

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict:
        """The run's checkpoint, checked against its spec."""
        return load_checkpoint(self.path / CHECKPOINT, self.spec, map_location)

    def model(self, map_location: str | torch.device = "cpu") -> torch.nn.Module:
        """The trained network (eval mode), weights loaded and checked against the spec."""
        from deepreshape.build import build

        model = build(self.spec)
        state = self.load_checkpoint(map_location)["model"]
        load_state(model, state, self.path / CHECKPOINT)
        return model.eval()


def load_run(path: str | Path) -> Run:
    """Open a run directory from its config.json; CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run directory")
    config = read_json(path / CONFIG, "config.json")
    if not isinstance(config, dict) or "spec" not in config:
        raise CheckpointError(f"{path / CONFIG}: not a deepreshape run config (no 'spec')")
    return Run(path, config, NetSpec.from_dict(config["spec"]))


def load_checkpoint(path: Path, spec: NetSpec | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict; CheckpointError if missing, broken or for another network."""
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint (train the run first)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for truncated/corrupt files
        raise CheckpointError(f"{path}: broken checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a deepreshape checkpoint (no model weights)")
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
