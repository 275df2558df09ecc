"""Selective Network Linearization (SNL, Cho et al. 2022), pixel- or channel-wise.

Every `relu` slot of the trained baseline becomes a learnable mask m (shape (C,H,W) for
pixels, (C,1,1) for channels): y = m*ReLU(x) + (1-m)*x, m starting at 1.

1. Mask phase through `train()`: Adam lr 1e-3 (no weight decay) on weights and masks,
   loss = CE + KD (T=4, from the baseline) + lambda*||m||_1. The L1 weighs a channel mask
   by its H*W ReLUs, so lambda is "per ReLU" for both granularities. The ReLU count
   (|m| > 1e-2, channels counted H*W) is checked after each epoch and the phase stops as
   soon as it is <= budget. How lambda starts and grows is a `Preset`: "paper" is SNL's
   recipe (lambda 1e-5, x1.1 after every epoch whose count is not below the lowest so far,
   once 5 epochs have passed, up to 300 epochs); "auto" (the default) reaches the budget
   by training in small runs too (lambda scaled to the network, x2 while the count is
   above a straight path to the budget at half the cap, the masks' own Adam step sized
   to that path; see `Preset`). If the epoch cap comes first, the masks are binarized to
   the budget anyway and the result says so (`budget_reached` False, and a warning).
2. Binarize to the budget exactly: pixel: the B largest |m| (B = budget minus the ReLUs
   SNL does not mask); channel: channels by decreasing |m|, each kept if its H*W ReLUs
   still fit under the budget (greedy fill, so the total is as close to the budget as
   whole channels allow, never above). Slots become `mask:pixel:K` / `mask:channel:K`
   (or `identity` when nothing is kept, `relu` when everything is), and the 0/1 masks are
   stored as the `mask` buffers of the checkpoint, which private inference reads.
3. Fine-tune with KD (SGD lr 1e-3, cosine; SNL uses 100 epochs) through `train()`.

Stem: all `relu` slots are masked, the stem's too, because our counts (and budgets)
include the stem ReLU (ResNet18 on 32x32: 557,056, where SNL's code says 491,520).
`include_stem=False` keeps the stem ReLU as it is; it then counts against the budget.
Slots that are not `relu` (reuse, identity, masks) are left alone and counted as fixed.

Unlike the reference code, no checkpoint is chosen on the test set (the last epoch is the
result), the budget counts every ReLU the network runs, and channel-wise SNL exists.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from deepreshape.count import count, count_module
from deepreshape.errors import CheckpointError, UnsafeFileError, UsageError
from deepreshape.optimize.snlpresets import (
    RULES,
    auto_lambda,
    auto_mask_lr,
    get_preset,
)
from deepreshape.options import RunOptions, takes_run_options
from deepreshape.rundir import schema
from deepreshape.rundir.run import Run, writer_lock
from deepreshape.slotkinds.mask import GRANULARITIES
from deepreshape.spec import NetSpec, SlotInfo, relu_slots
from deepreshape.training.preemption import preemptible
from deepreshape.training.recipe import Recipe


class LearnableMask(nn.Module):
    """SNL's trainable linearization: y = m*relu(x) + (1-m)*x, m = gain*`alpha` (1 at start).

    `gain` makes the masks learn `gain` times faster than the weights under Adam (whose
    step is about lr whatever the gradient's scale) without a second optimizer.
    """

    def __init__(self, info: SlotInfo, granularity: str, gain: float = 1.0) -> None:
        super().__init__()
        self.address, self.granularity, self.gain = info.address, granularity, float(gain)
        shape = (info.channels, 1, 1) if granularity == "channel" else (
            info.channels, info.height, info.width)
        self.relus_per_entry = info.height * info.width if granularity == "channel" else 1
        self.alpha = nn.Parameter(torch.full(shape, 1.0 / self.gain))

    def value(self) -> torch.Tensor:
        """The mask m (the parameter times the gain)."""
        return self.alpha * self.gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blend ReLU and identity by the learned mask."""
        m = self.value().to(x.dtype)
        return x + m * (torch.relu(x) - x)

    def l1(self) -> torch.Tensor:
        """L1 of the mask in ReLU units (a channel entry weighs H*W)."""
        return self.value().abs().sum() * self.relus_per_entry

    def relus(self, threshold: float) -> int:
        """ReLUs kept if entries with |m| > `threshold` were binarized to 1."""
        return int((self.value().detach().abs() > threshold).sum()) * self.relus_per_entry

    def extra_repr(self) -> str:
        """Granularity, mask shape and gain, for `print(model)`."""
        return f"granularity={self.granularity}, shape={tuple(self.alpha.shape)}, gain={self.gain:g}"


def maskable(spec: NetSpec, include_stem: bool = True) -> list[SlotInfo]:
    """The slots SNL masks: every plain `relu` slot (the stem unless left out)."""
    return [s for s in relu_slots(spec) if str(spec.slot_kind(s.address)) == "relu"
            and (include_stem or not s.address.startswith("stem."))]


def attach_masks(model: nn.Module, spec: NetSpec, granularity: str = "pixel",
                 include_stem: bool = True, gain: float = 1.0) -> list[LearnableMask]:
    """Swap the model's maskable slot modules for learnable masks (in place)."""
    masks = []
    for info in maskable(spec, include_stem):
        m = LearnableMask(info, granularity, gain)
        p = next(model.parameters(), None)
        if p is not None:
            m = m.to(p.device)
        model.set_submodule(info.address, m)
        masks.append(m)
    return masks


def mask_l1(masks: list[LearnableMask]) -> torch.Tensor:
    """The summed L1 penalty of all masks (the lambda term of the mask-phase loss)."""
    return torch.stack([m.l1() for m in masks]).sum()


def soft_relus(masks: list[LearnableMask], threshold: float = 1e-2) -> int:
    """ReLUs the masks still need: entries with |m| > threshold (channels count H*W)."""
    return sum(m.relus(threshold) for m in masks)


@dataclass
class LambdaSchedule:
    """The lambda rule as an `on_epoch_end` hook: True (stop) once count <= budget.

    `count()` is the current ReLU count. After each epoch (1-based e > `after`):
    rule "stall" (SNL's): lambda *= `factor` when the count is not below the lowest so far;
    rule "gap": lambda *= `factor` while the count is above a straight path from the
    starting count (`start`) down to the budget at epoch `plan`, so lambda keeps growing
    for as long as the masks fall behind what the budget gap and the epochs left demand.
    """

    budget: int
    count: Callable[[], int]
    lam: float = 1e-5
    factor: float = 1.1
    after: int = 5
    rule: str = "stall"
    start: int | None = None
    plan: int = 1
    lowest: int | None = None
    history: list[dict] = field(default_factory=list)

    def target(self, epoch: int) -> int:
        """Where the gap rule wants the count after 1-based `epoch`."""
        start = self.budget if self.start is None else self.start
        left = max(0.0, 1.0 - epoch / max(1, self.plan))
        return int(self.budget + (start - self.budget) * left)

    def __call__(self, epoch: int, metrics: dict) -> bool:
        n, lam, e = int(self.count()), self.lam, epoch + 1
        falling = self.lowest is None or n < self.lowest
        self.lowest = n if falling else self.lowest
        behind = n > self.target(e) if self.rule == "gap" else not falling
        if behind and e > self.after and n > self.budget:
            self.lam *= self.factor
        rec = {"epoch": e, "relus": n, "lambda": lam, "next_lambda": self.lam}
        if self.rule == "gap":
            rec["target"] = self.target(e)
        rec.update({k: metrics[k] for k in ("loss", "train_acc", "test_acc") if k in metrics})
        self.history.append(rec)
        metrics.update(relus=n, snl_lambda=lam)
        return n <= self.budget


# --------------------------------------------------------------------------- binarize


def binarize(masks: list[LearnableMask], budget: int, granularity: str
             ) -> dict[str, torch.Tensor]:
    """0/1 masks (same shapes) keeping at most `budget` ReLUs: exactly `budget` for pixels
    (when there are that many), a greedy under-budget fill of whole channels otherwise."""
    values = torch.cat([m.value().detach().abs().flatten().float().cpu() for m in masks])
    sizes = [m.alpha.numel() for m in masks]
    keep = torch.zeros_like(values)
    if granularity == "pixel":
        k = min(budget, values.numel())
        keep[torch.topk(values, k, sorted=False).indices] = 1.0
    else:
        weights = torch.cat([torch.full((n,), m.relus_per_entry) for n, m in
                             zip(sizes, masks, strict=True)])
        left = budget
        for i in torch.argsort(values, descending=True, stable=True).tolist():
            w = int(weights[i])
            if w <= left:
                keep[i], left = 1.0, left - w
            if left == 0:
                break
    parts = torch.split(keep, sizes)
    return {m.address: p.view_as(m.alpha) for m, p in zip(masks, parts, strict=True)}


def frozen_spec(spec: NetSpec, binary: dict[str, torch.Tensor], granularity: str) -> NetSpec:
    """Slot kinds for the binary masks: identity (none kept), relu (all), mask:g:K."""
    kinds = {}
    for addr, b in binary.items():
        kept, full = int(b.sum()), b.numel()
        kinds[addr] = "identity" if kept == 0 else "relu" if kept == full else \
            f"mask:{granularity}:{kept}"
    return spec.with_slots(kinds) if kinds else spec


# --------------------------------------------------------------------------- running


@dataclass
class SNLResult:
    """The masked, fine-tuned network, its ReLUs and whether it met the budget."""

    run: Run | None
    model: nn.Module
    spec: NetSpec
    final_acc: float
    relus: int  # hook-counted ReLUs of the final network
    budget: int
    budget_reached: bool
    info: dict = field(default_factory=dict)


def check_budget(spec: NetSpec, budget: object, granularity: str = "pixel",
                 include_stem: bool = True) -> tuple[int, int]:
    """(budget, fixed ReLUs SNL cannot remove), or a one-line UsageError."""
    if granularity not in GRANULARITIES:
        raise UsageError(f"granularity must be pixel or channel, got {granularity!r}")
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget) \
            or budget != int(budget):
        raise UsageError(f"budget must be a whole number of ReLUs, got {budget!r}")
    budget = int(budget)
    total = count(spec).relus
    if budget <= 0:
        raise UsageError(f"budget must be a positive number of ReLUs, got {budget}")
    if budget > total:
        raise UsageError(f"budget {budget:,} is above the {total:,} ReLUs of {spec.describe()}; "
                         f"choose 1..{total:,}")
    free = sum(s.numel for s in maskable(spec, include_stem))
    if not free:
        raise UsageError(f"{spec.describe()} has no plain ReLU slots for SNL to mask")
    fixed = total - free
    if budget < fixed:
        raise UsageError(f"budget {budget:,} is below the {fixed:,} ReLUs SNL leaves in place "
                         "(non-relu slots or the kept stem); raise it")
    return budget, fixed


@dataclass(frozen=True)
class SNLSettings:
    """How SNL runs its mask phase and fine-tune (everything but the budget).

    granularity: "pixel" (a mask per C,H,W entry) or "channel" (per channel). preset
    ("auto" or "paper", see PRESETS) fills in whatever of the mask phase is None:
    `mask_recipe` (Adam lr 1e-3, no weight decay, the preset's epoch cap), `lam` (the
    initial L1 weight per ReLU), `lam_factor` (its growth), `lam_after` (epochs before it
    may grow), `rule` (RULES) and `alpha_lr` (the masks' own Adam lr). `finetune` defaults
    to SGD lr 1e-3 cosine for 100 epochs. `threshold`: a mask above it needs its ReLU.
    `include_stem` False keeps the stem ReLU unmasked (it still counts against the budget).
    """

    granularity: str = "pixel"
    preset: str = "auto"
    mask_recipe: Recipe | None = None
    finetune: Recipe | None = None
    lam: float | None = None
    lam_factor: float | None = None
    lam_after: int | None = None
    rule: str | None = None
    alpha_lr: float | None = None
    threshold: float = 1e-2
    include_stem: bool = True

    def replace(self, **changes: object) -> SNLSettings:
        """A copy with `changes` applied."""
        return dataclasses.replace(self, **changes)


@takes_run_options
@preemptible
def snl(
    run: str | Path | Run,
    budget: int,
    *,
    settings: SNLSettings | None = None,
    out: str | Path | None = None,
    options: RunOptions | None = None,
) -> SNLResult:
    """SNL on a trained baseline run; the final network is a run directory under OUT
    (default RUN/snl/<granularity>-<budget>) with snl.json (lambda history, counts).

    `settings` (`SNLSettings`, default: pixel-wise, preset "auto") says how the mask phase
    and the fine-tune run. `options.resume` continues the fine-tune after a completed mask
    phase (its result is kept in OUT/mask_phase.pt).
    """
    from deepreshape.optimize import baseline_data, load_baseline
    from deepreshape.training import train

    s = settings if settings is not None else SNLSettings()
    if not isinstance(s, SNLSettings):
        raise UsageError(f"settings must be an SNLSettings, got {type(s).__name__}")
    opts = RunOptions.of(options)
    granularity, threshold, include_stem = s.granularity, s.threshold, s.include_stem
    p = get_preset(s.preset)
    base = load_baseline(run)
    budget, fixed = check_budget(base.spec, budget, granularity, include_stem)
    free = count(base.spec).relus - fixed
    lam = (p.lam if p.lam is not None else auto_lambda(free)) if s.lam is None else s.lam
    lam_factor = p.lam_factor if s.lam_factor is None else s.lam_factor
    lam_after = p.lam_after if s.lam_after is None else s.lam_after
    rule = p.rule if s.rule is None else s.rule
    if rule not in RULES:
        raise UsageError(f"lambda rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not (lam > 0 and lam_factor >= 1 and lam_after >= 0 and threshold >= 0):
        raise UsageError("lambda must be > 0, its factor >= 1, --lambda-after >= 0, threshold >= 0")
    mask_recipe = s.mask_recipe or Recipe(epochs=p.mask_epochs, lr=1e-3, optimizer="adam",
                                          weight_decay=0.0)
    finetune = s.finetune or Recipe(epochs=100, lr=1e-3)
    mask_recipe.validate()
    finetune.validate()
    root = Path(out) if out is not None else base.path / "snl" / f"{granularity}-{budget}"
    data = baseline_data(base, opts.data_dir, opts.dataset, opts.limit)
    plan = max(1, mask_recipe.epochs // 2)
    steps = max(1, len(data.train_y) // mask_recipe.batch_size)
    alpha_lr = s.alpha_lr
    if alpha_lr is None:
        alpha_lr = p.mask_lr if p.mask_lr is not None else auto_mask_lr(
            mask_recipe.lr, plan, steps)
    if not (alpha_lr > 0 and math.isfinite(alpha_lr)):
        raise UsageError(f"the masks' lr must be a positive number, got {alpha_lr}")
    gain = alpha_lr / mask_recipe.lr
    record = {"budget": budget, "granularity": granularity, "include_stem": include_stem,
              "threshold": threshold, "preset": p.name, "rule": rule, "lambda": lam,
              "lambda_factor": lam_factor, "lambda_after": lam_after, "alpha_lr": alpha_lr,
              "plan_epochs": plan, "mask_recipe": vars(mask_recipe).copy()}
    with writer_lock(root):  # one writer for the mask phase and the fine-tuning
        if schema.CONFIG.exists(root) and not (opts.resume or opts.force):
            raise UsageError(f"{root} already holds an SNL run; use --resume to continue it, "
                             "--force to start it over, or another --out")
        saved = _load_phase(root, record) if opts.resume else None
        if saved is None:
            saved = _mask_phase(base, data, record, fixed, gain, mask_recipe, opts)
            schema.MASK_PHASE.save(root, saved)
        spec = NetSpec.from_dict(saved["spec"])
        out_res = train(spec, data, recipe=finetune, out=root, teacher=str(base.path),
                        init_from=saved["state"], options=opts,
                        tag={"name": "snl", "baseline": str(base.path), **record},
                        label=f"SNL fine-tune ({granularity}, {budget:,} ReLUs)")
        relus = count_module(out_res.model, spec).relus
        if relus > budget or (granularity == "pixel" and relus != budget):
            raise AssertionError(f"SNL produced {relus} ReLUs for a budget of {budget}")  # a bug
        info = {"baseline": str(base.path), "arch": spec.describe(), **record,
                "fixed_relus": fixed, "relus": relus, "relus_analytic": count(spec).relus,
                "final_acc": out_res.final_acc, "mask_phase": saved["phase"]}
        schema.SNL.write(root, info)
        return SNLResult(out_res.run, out_res.model, spec, out_res.final_acc, relus, budget,
                         saved["phase"]["budget_reached"], info)


def _mask_phase(base: Run, data: object, settings: dict, fixed: int, gain: float,
                mask_recipe: Recipe, options: RunOptions) -> dict:
    """Train the masks until the count is under the budget (or the cap), binarize them to
    the budget; returns what OUT/mask_phase.pt keeps (settings, spec, weights, history)."""
    from deepreshape.training import train

    budget, granularity, threshold = (settings["budget"], settings["granularity"],
                                      settings["threshold"])
    model = base.model()
    masks = attach_masks(model, base.spec, granularity, settings["include_stem"], gain)
    sched = LambdaSchedule(budget - fixed, lambda: soft_relus(masks, threshold),
                           settings["lambda"], settings["lambda_factor"],
                           settings["lambda_after"], settings["rule"],
                           start=soft_relus(masks, threshold), plan=settings["plan_epochs"])

    def on_epoch_end(epoch: int, metrics: dict) -> bool:
        stop = sched(epoch, metrics)
        rec = sched.history[-1]
        with torch.no_grad():
            penalty = rec["lambda"] * float(mask_l1(masks))
        metrics["note"] = (f"ReLUs {rec['relus'] + fixed:,} (budget {budget:,}"
                           + (f", path {rec['target'] + fixed:,}" if "target" in rec else "")
                           + f")  lambda {rec['lambda']:.2g} (L1 term {penalty:.2f} of the loss)")
        return stop

    res = train(base.spec, data, recipe=mask_recipe, model=model, teacher=str(base.path),
                extra_loss=lambda _m: sched.lam * mask_l1(masks), on_epoch_end=on_epoch_end,
                label=f"SNL mask phase ({granularity}, budget {budget:,})", options=options)
    reached = bool(sched.history) and sched.history[-1]["relus"] <= budget - fixed
    if not reached:
        warnings.warn(f"SNL: the mask phase ended after {res.epochs_run} epochs with "
                      f"{soft_relus(masks, threshold) + fixed:,} ReLUs above the threshold, over "
                      f"the budget {budget:,}; binarizing to the budget anyway (raise "
                      "--mask-epochs, --lambda or --alpha-lr to get there by training)",
                      stacklevel=3)
    binary = binarize(masks, budget - fixed, granularity)
    spec = frozen_spec(base.spec, binary, granularity)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()
             if not k.endswith(".alpha")}
    state.update({f"{a}.mask": b for a, b in binary.items() if spec.slot_kind(a).kind == "mask"})
    phase = {"epochs_run": res.epochs_run, "budget_reached": reached,
             "final_lambda": sched.lam, "history": sched.history}
    return {"settings": settings, "spec": spec.to_dict(), "state": state, "phase": phase}


def _load_phase(root: Path, settings: dict) -> dict | None:
    """A finished mask phase with the same settings, or None (then it is redone)."""
    if not schema.MASK_PHASE.path(root).exists():
        return None
    try:
        saved = schema.MASK_PHASE.load(root)
    except UnsafeFileError:
        raise
    except CheckpointError:  # a truncated or foreign file: redo the phase
        return None
    return saved if isinstance(saved, dict) and saved.get("settings") == settings else None
