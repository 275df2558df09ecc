"""Counts: analytic == hooks == FlopCounterMode on the zoo, and the paper's tables."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from deepreshape import build, count, count_module, parse
from deepreshape.count import normalized_stagewise

ZOO = ["resnet18", "resnet34", "resnet50", "resnet18-m16", "resnet34-m32", "resnet50-m16",
       "resnet18-m16-4x4x4x", "resnet50-m16-3x3x3x", "hrn-5x7x2x", "hrn-5x7x2x-m32",
       "hrn-2x9x2x-d1,2,3,1", "wrn16x8", "wrn22x8", "wrn28x10", "wrn40x2", "regnetx-200mf",
       "regnetx-400mf", "regnetx-600mf", "regnetx-800mf", "regnetx-1.6gf",
       "resnet34-convnext", "resnet50-convnext", "resnet18-m16-d2,2,2,2,2-2x2x2x2x"]


def _meta_model(spec):
    with torch.device("meta"):
        return build(spec)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", ZOO)
def test_analytic_equals_hooks_and_flop_counter(name: str, size: int) -> None:
    spec = parse(name, input_size=size)
    analytic = count(spec)
    model = _meta_model(spec)
    hooked = count_module(model, spec)
    assert hooked.stages == analytic.stages
    assert (hooked.relus, hooked.macs, hooked.params, hooked.stem_relus) == (
        analytic.relus, analytic.macs, analytic.params, analytic.stem_relus)
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, size, size, device="meta"))
    assert fc.get_total_flops() == 2 * analytic.macs
    # Each conv's geometry (input, kernel, stride, groups, output), which the PI cost
    # model packs into ciphertexts, matches the built module's.
    def geometry(rows):
        return {r.name.removesuffix(".conv") if r.name.endswith("shortcut.conv") else r.name:
                (r.in_shape, r.kernel, r.stride, r.groups, r.shape)
                for r in rows if r.kind in ("conv", "linear")}

    assert geometry(count_module(model, spec, layers=True).layers) == geometry(
        count(spec, layers=True).layers)


def test_resnet18_and_wrn_reference_counts() -> None:
    r18 = count(parse("resnet18", dataset="cifar100"))
    assert r18.relus == 557_056 and r18.stem_relus == 65_536
    assert r18.relus - r18.stem_relus == 491_520
    assert [s.relus for s in r18.stages] == [327_680, 131_072, 65_536, 32_768]
    assert count(parse("wrn22x8")).relus == 1_392_640
    # Tiny ImageNet (64x64) has 4x the ReLUs of 32x32.
    assert count(parse("resnet18", dataset="tinyimagenet")).relus == 4 * 557_056
    # ResNet18 on CIFAR-100 has the well-known 11.22M parameters.
    assert r18.params == 11_220_132


# Paper Table 5 (HRN rows) and Table 6 (BaseCh/StageCh rows): stage ReLUs in thousands.
TABLE5 = {
    "2x7x2x": (81.92, 32.77, 57.34, 28.67), "3x7x2x": (81.92, 49.15, 86.02, 43.01),
    "4x7x2x": (81.92, 65.54, 114.69, 57.34), "5x7x2x": (81.92, 81.92, 143.36, 71.68),
    "6x7x2x": (81.92, 98.30, 172.03, 86.02), "7x7x2x": (81.92, 114.69, 200.70, 100.35),
    "2x6x2x": (81.92, 32.77, 49.15, 24.58), "3x6x2x": (81.92, 49.15, 73.73, 36.86),
    "4x6x2x": (81.92, 65.54, 98.30, 49.15), "5x6x2x": (81.92, 81.92, 122.88, 61.44),
    "6x6x2x": (81.92, 98.30, 147.46, 73.73), "7x6x2x": (81.92, 114.69, 172.03, 86.02),
    "2x5x2x": (81.92, 32.77, 40.96, 20.48), "3x5x2x": (81.92, 49.15, 61.44, 30.72),
    "4x5x2x": (81.92, 65.54, 81.92, 40.96), "5x5x2x": (81.92, 81.92, 102.40, 51.20),
    "6x5x2x": (81.92, 98.30, 122.88, 61.44), "7x5x2x": (81.92, 114.69, 143.36, 71.68),
    "2x5x3x": (81.92, 32.77, 40.96, 30.72), "3x5x3x": (81.92, 49.15, 61.44, 46.08),
    "4x5x3x": (81.92, 65.54, 81.92, 61.44), "5x5x3x": (81.92, 81.92, 102.40, 76.80),
    "6x5x3x": (81.92, 98.30, 122.88, 92.16), "7x5x3x": (81.92, 114.69, 143.36, 107.52),
    "2x9x2x": (81.92, 32.77, 73.73, 36.86), "2x6x3x": (81.92, 32.77, 49.15, 36.86),
}
TABLE6 = {
    "resnet18-m16": (81.92, 32.77, 16.38, 8.19), "resnet18-m32": (163.84, 65.54, 32.77, 16.38),
    "resnet18": (327.68, 131.07, 65.54, 32.77), "resnet18-m128": (655.36, 262.14, 131.07, 65.54),
    "resnet18-m256": (1310.72, 524.29, 262.14, 131.07),
    "resnet18-m16-3x3x3x": (81.92, 49.15, 36.86, 27.65),
    "resnet18-m16-4x4x4x": (81.92, 65.54, 65.54, 65.54),
    "resnet18-m16-5x5x5x": (81.92, 81.92, 102.40, 128.00),
    "resnet18-m16-6x6x6x": (81.92, 98.30, 147.46, 221.18),
    "resnet18-m16-7x7x7x": (81.92, 114.69, 200.70, 351.23),
}


@pytest.mark.parametrize(("name", "expected"),
                         [(f"hrn-{k}", v) for k, v in TABLE5.items()] + list(TABLE6.items()))
def test_paper_tables_5_and_6_stage_relus(name: str, expected: tuple[float, ...]) -> None:
    stages = count(parse(name, dataset="cifar100")).stages
    assert [round(s.relus / 1000, 2) for s in stages] == list(expected)


@pytest.mark.parametrize(("mult", "relus", "flops"), [
    (2, [64, 32, 16, 8], [64, 64, 64, 64]),
    (3, [64, 48, 36, 27], [64, 144, 324, 729]),
    (4, [64, 64, 64, 64], [64, 256, 1024, 4096]),
    (6, [64, 96, 144, 216], [64, 576, 5184, 46656]),
])
def test_paper_table8_normalized(mult: int, relus: list[int], flops: list[int]) -> None:
    norm = normalized_stagewise(parse(f"resnet18-m16-{mult}x{mult}x{mult}x"))
    assert norm["relus"] == relus
    assert norm["flops_model"] == flops


def test_hrn_table8_flops_equal_in_stage3_and_stage4() -> None:
    # Appendix D.4: with gamma = 2, the modelled Stage3 and Stage4 FLOPs are equal.
    for name in ("hrn-5x7x2x", "hrn-7x5x2x", "hrn-6x6x2x"):
        f = normalized_stagewise(parse(name))["flops_model"]
        assert f[2] == f[3]


def test_hand_derived_macs_resnet18_m16() -> None:
    # stem 3->16 at 32x32; stage1 4 convs 16->16; stage2 conv 16->32 s2, 3 convs 32->32,
    # 1x1 projection; ... ; fc 128->100. All 3x3 unless noted.
    hw = [32 * 32, 16 * 16, 8 * 8, 4 * 4]
    w = [16, 32, 64, 128]
    macs = 3 * 16 * 9 * hw[0] + 4 * 16 * 16 * 9 * hw[0]
    for k in range(1, 4):
        macs += (w[k - 1] * w[k] * 9 + 3 * w[k] * w[k] * 9 + w[k - 1] * w[k]) * hw[k]
    macs += 128 * 100
    assert count(parse("resnet18-m16")).macs == macs


def test_slot_kinds_change_counts_exactly() -> None:
    spec = parse("resnet18")
    culled = spec.with_slots({"stage1.*": "identity", "stem.relu": "identity"})
    assert count(culled).stage("stage1").relus == 0
    assert count(culled).relus == 557_056 - 327_680
    # ReLU-reuse on alternate layers, paper Table 9: either slot of every basic block
    # (post-add relu2 as thinning drops it, or mid-block relu1) gives the same counts.
    for n, expected in [(2, 434_176), (4, 372_736), (8, 342_016), (16, 326_656)]:
        for slot in ("relu2", "relu1"):
            assert count(spec.with_slots({f"*.{slot}": f"reuse:{n}"})).relus == expected
    masked = spec.with_slots({"stage4.block2.relu2": "mask:pixel:100",
                              "stage4.block2.relu1": "mask:channel:3"})
    assert count(masked).relus == 557_056 - 2 * 8192 + 100 + 3 * 16


@pytest.mark.parametrize("kinds", [
    {"*.relu1": "reuse:4"}, {"*.relu1": "reuse:2", "stage2.*": "identity"},
    {"stage3.block1.relu2": "mask:pixel:77", "stage1.block2.relu1": "mask:channel:5"},
])
def test_modified_slots_analytic_equals_hooks(kinds: dict[str, str]) -> None:
    spec = parse("resnet18-m16", dataset="digits").with_slots(kinds)
    model = build(spec)
    assert count_module(model, spec).stages == count(spec).stages
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, 16, 16))
    assert fc.get_total_flops() == 2 * count(spec).macs


def test_to_dict_json_shape() -> None:
    d = count(parse("hrn-5x7x2x")).to_dict()
    assert set(d) >= {"arch", "input_size", "num_classes", "relus", "macs", "params",
                      "stem_relus", "stages"}
    assert [s["name"] for s in d["stages"]] == ["stage1", "stage2", "stage3", "stage4"]
    assert sum(s["relus"] for s in d["stages"]) == d["relus"]


def test_counting_from_the_command_line_does_not_import_torch():
    """`deepreshape count` answers in a fraction of a second: only the count command and
    the spec are loaded, not torch or the training stack."""
    import subprocess
    import sys

    code = ("import sys; from deepreshape.cli.main import main; "
            "rc = main(['count', 'hrn-5x7x2x', '--dataset', 'cifar100']); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 False"
    relus = count(parse("hrn-5x7x2x", dataset="cifar100")).relus
    assert f"{relus:,}" in out.stdout
