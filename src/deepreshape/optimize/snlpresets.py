"""SNL's mask-phase presets and lambda rules: the vocabulary of `deepreshape snl`'s options.

Apart from `optimize.snl` (which imports torch), so the command line lists the presets
and rules without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepreshape.errors import UsageError

RULES = ("gap", "stall")
"""The lambda rules (`optimize.snl.LambdaSchedule`)."""


@dataclass(frozen=True)
class Preset:
    """A mask-phase recipe: its epoch cap, mask learning rate, lambda and lambda rule.

    `lam` None scales SNL's lambda to the network: 1e-5 was tuned for ResNet18's 491,520
    maskable ReLUs, and a mask's task gradient shrinks about as 1/N (measured: ~4e-4 per
    entry at N = 11,008 on digits), so lambda = 1e-5 * 491,520 / N keeps the penalty's
    pull on a mask as strong against the task as in SNL. `mask_lr` None sizes the masks'
    Adam step so a mask can travel from 1 to 0 in a quarter of the steps the gap rule plans
    for (never below the weights' lr, never above MAX_AUTO_MASK_LR).
    """

    name: str
    mask_epochs: int
    lam: float | None
    lam_factor: float
    lam_after: int
    rule: str
    mask_lr: float | None
    about: str


PRESETS = {
    "auto": Preset("auto", 20, None, 2.0, 0, "gap", None,
                   "reach the budget by training in half the mask-epoch cap: lambda scaled to "
                   "the network (1e-5 x 491,520 / maskable ReLUs), x2 after every epoch the "
                   "count is above a straight path to the budget; masks learn fast enough to "
                   "reach 0 in time"),
    "paper": Preset("paper", 300, 1e-5, 1.1, 5, "stall", 1e-3,
                    "SNL's recipe (Cho et al. 2022): lambda 1e-5, x1.1 whenever the count "
                    "stops falling after epoch 5, masks at the weights' lr, up to 300 epochs"),
}
PAPER_LAMBDA_RELUS = 491_520  # ResNet18 on 32x32 without the stem: SNL's lambda was tuned here


def auto_lambda(free: int) -> float:
    """SNL's 1e-5 scaled from ResNet18's 491,520 maskable ReLUs to `free` of them."""
    return 1e-5 * PAPER_LAMBDA_RELUS / max(1, free)


MAX_AUTO_MASK_LR = 0.05  # Adam's step is ~lr even near 0: larger steps keep masks hopping
# around 0 instead of settling under the 1e-2 threshold (0.018 settles in the tour)


def auto_mask_lr(weight_lr: float, plan_epochs: int, steps_per_epoch: int) -> float:
    """A mask lr that lets Adam move a mask from 1 to 0 in a quarter of the planned steps
    (at least the weights' lr, at most MAX_AUTO_MASK_LR)."""
    need = 4.0 / max(1, plan_epochs * steps_per_epoch)
    return max(weight_lr, min(need, MAX_AUTO_MASK_LR))


def get_preset(name: str) -> Preset:
    """The named preset, or a one-line UsageError listing them."""
    if name not in PRESETS:
        raise UsageError(f"unknown SNL preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]
