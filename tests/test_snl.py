"""SNL: learnable masks, the lambda schedule, exact binarization (pixel and channel), budget
errors, the CLI, and the method end to end on digits with hook-counted ReLUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepreshape import build, count, count_module, parse
from deepreshape.build import MaskedReLU
from deepreshape.cli.main import main
from deepreshape.cli.snl import parse_budget
from deepreshape.errors import UsageError
from deepreshape.optimize.snl import (
    LambdaSchedule,
    LearnableMask,
    SNLSettings,
    attach_masks,
    binarize,
    check_budget,
    frozen_spec,
    mask_l1,
    snl,
    soft_relus,
)
from deepreshape.optimize.snlpresets import PRESETS, Preset, auto_lambda, auto_mask_lr, get_preset
from deepreshape.options import RunOptions
from deepreshape.rundir.run import load_run
from deepreshape.spec import relu_slots
from deepreshape.training import Recipe, train

TINY = "hrn-2x2x2x-m8-d1,1,1,1"  # 9,728 ReLUs on 16x16 digits, stem 2,048
SPEC = parse(TINY, dataset="digits")
FAST = Recipe(epochs=1, batch_size=64, lr=0.05)
# The mask phase's default recipe (Adam lr 1e-3), capped at 8 epochs: the default preset
# must reach a 3,000-ReLU budget by training within it.
MASK = Recipe(epochs=8, batch_size=64, lr=1e-3, optimizer="adam", weight_decay=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- masks


def test_masks_start_as_the_baseline_and_cover_every_relu_slot() -> None:
    torch.manual_seed(0)
    model = build(SPEC).eval()
    x = torch.randn(4, 3, 16, 16)
    ref = model(x)
    masks = attach_masks(model, SPEC, "pixel")
    assert [m.address for m in masks] == [s.address for s in relu_slots(SPEC)]
    assert torch.allclose(model(x), ref, atol=1e-6)  # m = 1 is a ReLU
    assert soft_relus(masks) == count(SPEC).relus == 9_728
    assert float(mask_l1(masks).detach()) == 9_728
    for m in masks:
        m.alpha.data.zero_()
    assert soft_relus(masks) == 0
    model2 = build(SPEC)
    ch = attach_masks(model2, SPEC, "channel", include_stem=False)
    assert ch[0].address == "stage1.block1.relu1" and ch[0].alpha.shape == (8, 1, 1)
    assert soft_relus(ch) == 9_728 - 2_048 and float(mask_l1(ch).detach()) == 9_728 - 2_048
    assert isinstance(model2.get_submodule("stem.relu"), torch.nn.ReLU)


def test_mask_formula() -> None:
    info = relu_slots(SPEC)[0]
    m = LearnableMask(info, "pixel")
    m.alpha.data.fill_(0.25)
    x = torch.randn(2, 8, 16, 16)
    assert torch.allclose(m(x), 0.25 * torch.relu(x) + 0.75 * x, atol=1e-6)


# --------------------------------------------------------------------------- lambda schedule


def _drive(counts: list[int], budget: int, after: int = 5) -> LambdaSchedule:
    it = iter(counts)
    current = {"n": 0}

    def counter() -> int:
        return current["n"]

    sched = LambdaSchedule(budget, counter, lam=1e-5, factor=1.1, after=after)
    for epoch in range(len(counts)):
        current["n"] = next(it)
        if sched(epoch, {"loss": 1.0}):
            break
    return sched


def test_lambda_grows_only_when_the_count_stops_falling_after_epoch_5() -> None:
    # Epochs 1-5: no growth even though the count stalls; then x1.1 per stalled epoch.
    sched = _drive([100, 100, 100, 100, 100, 100, 90, 95, 90, 80, 80, 9], budget=10)
    lams = [h["lambda"] for h in sched.history]  # the lambda each epoch trained with
    assert lams[:6] == [1e-5] * 6  # epochs 1-5 never raise; epoch 6 stalls -> raise
    assert lams[6:] == pytest.approx([1.1e-5, 1.1e-5,  # epoch 7 fell (90 < 100): no raise
                                      1.21e-5,  # epoch 8 rose (95): raise
                                      1.331e-5,  # epoch 9 equals the lowest (90): raise
                                      1.331e-5,  # epoch 10 fell to 80
                                      1.4641e-5])  # epoch 11 stalled
    assert len(sched.history) == 12 and sched.history[-1]["relus"] == 9  # stopped under budget


def test_gap_rule_grows_lambda_while_above_the_straight_path_to_the_budget() -> None:
    # start 1,100, budget 100, plan 4 epochs: path 850, 600, 350, 100 after epochs 1-4.
    counts = iter([900, 600, 500, 90])
    sched = LambdaSchedule(100, lambda: next(counts), lam=1.0, factor=2.0, after=0, rule="gap",
                           start=1_100, plan=4)
    stops = [sched(e, {}) for e in range(4)]
    assert stops == [False, False, False, True]
    assert [h["target"] for h in sched.history] == [850, 600, 350, 100]
    assert [h["lambda"] for h in sched.history] == [1.0, 2.0, 2.0, 4.0]  # 900>850, 600=600, 500>350
    assert sched.lam == 4.0  # under the budget: no more growth


def test_auto_preset_scales_snl_lambda_and_mask_lr() -> None:
    assert auto_lambda(491_520) == pytest.approx(1e-5)  # SNL's own setting, ResNet18 w/o stem
    assert auto_lambda(11_008) == pytest.approx(1e-5 * 491_520 / 11_008)  # 4.47e-4
    assert auto_mask_lr(1e-3, plan_epochs=10, steps_per_epoch=22) == pytest.approx(4 / 220)
    assert auto_mask_lr(1e-3, plan_epochs=150, steps_per_epoch=390) == 1e-3  # CIFAR: SNL's lr
    assert auto_mask_lr(1e-3, plan_epochs=2, steps_per_epoch=4) == 0.05  # capped: 4/8 = 0.5
    assert PRESETS["paper"] == Preset("paper", 300, 1e-5, 1.1, 5, "stall", 1e-3,
                                      PRESETS["paper"].about)
    with pytest.raises(UsageError, match="valid: auto, paper"):
        get_preset("fastest")


def test_mask_gain_scales_the_adam_step_not_the_function() -> None:
    info = relu_slots(SPEC)[0]
    one, ten = LearnableMask(info, "pixel"), LearnableMask(info, "pixel", gain=10.0)
    x = torch.randn(2, *one.alpha.shape)
    assert torch.allclose(one(x), ten(x)) and float(ten.l1().detach()) == float(one.l1().detach())
    for m in (one, ten):
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        m.l1().backward()
        opt.step()  # Adam's first step is lr * sign(grad) on the parameter
    assert torch.allclose(one.value(), torch.full_like(one.alpha, 1 - 1e-3))
    assert torch.allclose(ten.value(), torch.full_like(ten.alpha, 1 - 1e-2))


def test_schedule_stops_at_budget_and_after_is_configurable() -> None:
    sched = _drive([50, 40, 30, 20, 10, 5], budget=20, after=0)
    assert [h["relus"] for h in sched.history] == [50, 40, 30, 20]  # 20 <= 20 stops
    sched = _drive([50, 50, 50], budget=1, after=0)
    assert sched.lam == pytest.approx(1.21e-5)
    metrics: dict = {}
    assert LambdaSchedule(10, lambda: 3)(0, metrics) is True and metrics["relus"] == 3


# --------------------------------------------------------------------------- binarize


def _masks(granularity: str, seed: int = 0) -> list[LearnableMask]:
    g = torch.Generator().manual_seed(seed)
    masks = [LearnableMask(s, granularity) for s in relu_slots(SPEC)]
    for m in masks:
        m.alpha.data = torch.rand(m.alpha.shape, generator=g) * 2 - 1
    return masks


@pytest.mark.parametrize("budget", [1, 777, 3_000, 9_727, 9_728])
def test_pixel_binarize_keeps_exactly_the_largest(budget: int) -> None:
    masks = _masks("pixel")
    binary = binarize(masks, budget, "pixel")
    assert sum(int(b.sum()) for b in binary.values()) == budget
    kept = torch.cat([m.alpha.detach().abs().flatten()[binary[m.address].flatten() > 0]
                      for m in masks])
    dropped = torch.cat([m.alpha.detach().abs().flatten()[binary[m.address].flatten() == 0]
                         for m in masks])
    assert dropped.numel() == 0 or kept.min() >= dropped.max()
    spec = frozen_spec(SPEC, binary, "pixel")
    assert count(spec).relus == budget


@pytest.mark.parametrize("budget", [1, 300, 3_000, 5_555, 9_728])
def test_channel_binarize_greedy_under_budget(budget: int) -> None:
    masks = _masks("channel", seed=1)
    binary = binarize(masks, budget, "channel")
    weight = {m.address: m.relus_per_entry for m in masks}
    kept = sum(int(b.sum()) * weight[a] for a, b in binary.items())
    assert kept <= budget
    # Greedy fill: no dropped channel still fits in what is left.
    left = budget - kept
    assert all(weight[a] > left for a, b in binary.items() for v in b.flatten() if v == 0)
    assert count(frozen_spec(SPEC, binary, "channel")).relus == kept
    if budget == 9_728:
        assert kept == 9_728


def test_channel_greedy_by_hand() -> None:
    # Stage4 channels weigh 4 ReLUs (2x2), stage1 channels 256: with a budget of 260 the
    # largest stage1 channel (256) plus the largest stage4 channel (4) fit exactly.
    masks = [LearnableMask(s, "channel") for s in relu_slots(SPEC)]
    for m in masks:
        m.alpha.data.fill_(0.0)
    masks[1].alpha.data[3] = 0.9  # stage1.block1.relu1, 8x16x16
    masks[-1].alpha.data[5] = 0.5  # stage4.block1.relu2, 64x2x2
    masks[2].alpha.data[0] = 0.7  # stage1.block1.relu2: does not fit after the first
    binary = binarize(masks, 260, "channel")
    assert binary["stage1.block1.relu1"].flatten().nonzero().flatten().tolist() == [3]
    assert binary["stage4.block1.relu2"].flatten().nonzero().flatten().tolist() == [5]
    spec = frozen_spec(SPEC, binary, "channel")
    assert count(spec).relus == 260
    assert str(spec.slot_kind("stage1.block1.relu1")) == "mask:channel:1"
    assert str(spec.slot_kind("stage1.block1.relu2")) == "identity"


# --------------------------------------------------------------------------- budgets


@pytest.mark.parametrize(("budget", "message"), [
    (0, "positive"), (-5, "positive"), (9_729, "above the 9,728 ReLUs"),
    (12.5, "whole number"), (True, "whole number"), ("50k", "whole number"),
])
def test_bad_budgets(budget, message: str) -> None:
    with pytest.raises(UsageError, match=message) as e:
        check_budget(SPEC, budget)
    assert "\n" not in str(e.value)


def test_budget_below_the_kept_stem_and_granularity() -> None:
    assert check_budget(SPEC, 9_728) == (9_728, 0)
    assert check_budget(SPEC, 3_000, include_stem=False) == (3_000, 2_048)
    with pytest.raises(UsageError, match="below the 2,048 ReLUs"):
        check_budget(SPEC, 1_000, include_stem=False)
    with pytest.raises(UsageError, match="pixel or channel"):
        check_budget(SPEC, 1_000, granularity="row")


def test_parse_budget() -> None:
    assert parse_budget("50000") == parse_budget("50k") == parse_budget("50,000") == 50_000
    assert parse_budget("1.5M") == 1_500_000 and parse_budget("-5") == -5
    for bad in ("abc", "1.5", "5 0"):
        with pytest.raises(UsageError, match="--budget"):
            parse_budget(bad)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("snl") / "base"
    train(TINY, "digits", recipe=Recipe(epochs=2, batch_size=64, lr=0.05), out=out,
          options=RunOptions(quiet=True))
    return out


def _check_final(res, budget: int, granularity: str) -> None:
    run = load_run(res.run.path)
    hooked = count_module(run.model(), run.spec).relus  # rebuilt from the run directory
    assert hooked == res.relus == run.results["relus"] == count(run.spec).relus
    assert hooked <= budget and (granularity == "channel" or hooked == budget)
    assert 0 <= res.final_acc <= 100 and run.results["final_acc"] == pytest.approx(res.final_acc)
    assert run.config["method"]["name"] == "snl" and run.config["method"]["budget"] == budget
    # The checkpoint carries the binarized masks of the mask phase, not the spec's default.
    phase = torch.load(run.path / "mask_phase.pt", weights_only=True)
    model = run.model()
    for name, mod in model.named_modules():
        if isinstance(mod, MaskedReLU):
            assert torch.equal(mod.mask, phase["state"][f"{name}.mask"])
    info = json.loads((run.path / "snl.json").read_text())
    assert info["relus"] == hooked and info["granularity"] == granularity
    assert info["mask_phase"]["history"][0]["lambda"] == info["lambda"]


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
def test_snl_end_to_end(baseline: Path, tmp_path: Path, granularity: str) -> None:
    res = snl(baseline, 3_000, out=tmp_path / granularity,
              settings=SNLSettings(granularity=granularity, mask_recipe=MASK, finetune=FAST),
              options=RunOptions(quiet=True))  # the auto preset's defaults
    assert res.budget_reached and res.info["preset"] == "auto"
    assert res.info["lambda"] == pytest.approx(1e-5 * 491_520 / 9_728)
    assert res.info["mask_phase"]["history"][-1]["relus"] <= 3_000
    _check_final(res, 3_000, granularity)
    kinds = {str(res.spec.slot_kind(s.address)).split(":")[0] for s in relu_slots(res.spec)}
    assert kinds <= {"mask", "identity", "relu"} and "mask" in kinds


def test_cap_reached_binarizes_anyway_and_resume(baseline: Path, tmp_path: Path) -> None:
    out = tmp_path / "cap"
    one = Recipe(epochs=1, batch_size=64, lr=1e-3, optimizer="adam", weight_decay=0.0)
    with pytest.warns(UserWarning, match="binarizing to the budget anyway"):
        res = snl(baseline, 1_234, out=out, settings=SNLSettings(mask_recipe=one, finetune=FAST),
                  options=RunOptions(quiet=True))
    assert not res.budget_reached and res.info["mask_phase"]["epochs_run"] == 1
    _check_final(res, 1_234, "pixel")
    # An existing run is protected; --resume reuses the finished mask phase.
    with pytest.raises(UsageError, match="already holds an SNL run"):
        snl(baseline, 1_234, out=out, settings=SNLSettings(mask_recipe=one, finetune=FAST),
            options=RunOptions(quiet=True))
    again = snl(baseline, 1_234, out=out, settings=SNLSettings(mask_recipe=one, finetune=FAST),
                options=RunOptions(quiet=True, resume=True))
    assert again.spec == res.spec and again.final_acc == pytest.approx(res.final_acc)


def test_stem_left_out_still_counts(baseline: Path, tmp_path: Path) -> None:
    res = snl(baseline, 3_000, out=tmp_path / "stem",
              settings=SNLSettings(mask_recipe=MASK, finetune=FAST, include_stem=False),
              options=RunOptions(quiet=True))
    assert str(res.spec.slot_kind("stem.relu")) == "relu"
    assert res.relus == 3_000 and res.info["fixed_relus"] == 2_048


def test_cli(baseline: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["snl", str(baseline), "--budget", "2k", "--granularity", "channel",
                 "--mask-epochs", "6", "--mask-lr", "0.05", "--lambda", "0.01", "--lambda-after",
                 "1", "--epochs", "1", "--batch-size", "64", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "budget 2,000" in text and str(out) in text
    assert load_run(out).results["relus"] <= 2_000
    assert load_run(out).config["recipe"]["lr"] == 1e-3  # SNL's fine-tune lr by default


@pytest.mark.parametrize(("budget", "message"), [
    ("0", "positive"), ("-5", "positive"), ("10m", "above the 9,728"), ("lots", "--budget")])
def test_cli_bad_budget_one_line(baseline: Path, capsys, budget: str, message: str) -> None:
    assert main(["snl", str(baseline), f"--budget={budget}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("deepreshape: error:")


def test_cli_missing_run(capsys) -> None:
    assert main(["snl", "/no/such/run", "--budget", "100"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
