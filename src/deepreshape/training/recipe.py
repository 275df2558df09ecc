"""The training recipe (hyper-parameters), the loss and the optimizer with its schedule.

What a run *is* as far as training goes: `Recipe` is stored in config.json and is part of
a run's identity (only `epochs` may change on resume); the rest turns it into torch
objects. torch is imported on first use, so the command line reads `Recipe`'s defaults
(every training command's option defaults) without loading it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepreshape.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

MAX_EPOCHS, MAX_BATCH = 100_000, 1_000_000  # far above any real recipe


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


def kd_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None,
            temperature: float = 4.0, weight: float = 0.9) -> torch.Tensor:
    """Hinton et al.: (1-w)·CE(hard) + w·T²·KL(softmax(t/T) || softmax(s/T))."""
    import torch.nn.functional as F  # noqa: N812

    hard = F.cross_entropy(logits, targets)
    if teacher_logits is None:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1 - weight) * hard + weight * soft


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
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)
