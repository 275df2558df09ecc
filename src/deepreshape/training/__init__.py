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

from deepreshape.lazy import lazy_exports

# Loaded on first use: the command line reads `Recipe` (and `AMP_MODES`) to build its
# options without loading torch, which the trainer's other modules import.
_LAZY = {
    "AMP_MODES": "deepreshape.options", "Recipe": "deepreshape.training.recipe",
    "kd_loss": "deepreshape.training.recipe", "evaluate_run": "deepreshape.training.evaluate",
    "EpochHook": "deepreshape.training.loop", "LossHook": "deepreshape.training.loop",
    "TrainContext": "deepreshape.training.loop", "TrainResult": "deepreshape.training.loop",
    "train": "deepreshape.training.loop",
}
__all__ = sorted(_LAZY)

lazy_exports(__name__, _LAZY)
