"""The one trainer, in parts: `recipe` (hyper-parameters, KD loss, optimizer and
schedule), `loop` (`train`, the epoch loop, `TrainContext`), `precision` (device, bf16,
channels_last), `distributed` (torchrun / DDP, BatchNorm over the global batch),
`checkpoints` (RNG state, checkpoint write and resume, the run directory's files),
`preemption` (SIGTERM / SIGUSR1: stop after the step, checkpoint, exit 143) and
`evaluate` (test accuracy of a model or a run directory).

    from deepreshape.training import Recipe, train
    res = train("resnet18-m2", "digits", recipe=Recipe(epochs=1), out="runs/r18")
"""

from __future__ import annotations

from deepreshape.training.evaluate import evaluate_run
from deepreshape.training.loop import EpochHook, LossHook, TrainContext, TrainResult, train
from deepreshape.training.precision import AMP_MODES
from deepreshape.training.recipe import Recipe, kd_loss

__all__ = ["AMP_MODES", "EpochHook", "LossHook", "Recipe", "TrainContext", "TrainResult",
           "evaluate_run", "kd_loss", "train"]
