"""Figures of the seed paper that an outside cross-check confirmed, each derived by hand.

Counts are on 32x32 inputs (CIFAR); shares and ratios do not depend on the input size.
Notation: a stage at resolution r with C channels in a slot has C*r*r ReLUs there.
"""

from __future__ import annotations

import pytest

from deepreshape import count, parse


def stage_relus(name: str) -> list[int]:
    return [s.relus for s in count(parse(name, dataset="cifar100")).stages]


def share(part: int, parts: list[int]) -> float:
    """`part` as a percentage of the sum of `parts`."""
    return 100 * part / sum(parts)


# --------------------------------------------------------------------------- Section 4


# Stage3 (the most critical stage) share of all ReLUs, Section 4: "from 20.3% to 30.2% in
# ResNet34, and from 21.7% to 31% in ResNet50".
#
# ResNet34 (basic, [3,4,6,3], m=64): stem 64*32*32 = 65,536 + stage1 3*2*64*32*32 =
# 393,216 -> 458,752; stage2 4*2*128*16*16 = 262,144; stage3 6*2*256*8*8 = 196,608;
# stage4 3*2*512*4*4 = 49,152; 196,608 / 966,656 = 20.34%.
# ResNet50 (v1.5 bottlenecks, inner m; relu1 at the block's input resolution):
#   stage1: 65,536 + 3*(64+64+256)*1024 = 1,245,184
#   stage2: block1 128*1024 + 128*256 + 512*256 = 294,912; 3 more * 768*256 -> 884,736
#   stage3: block1 256*256 + 256*64 + 1024*64 = 147,456; 5 more * 1536*64 -> 638,976
#   stage4: block1 512*64 + 512*16 + 2048*16 = 73,728; 2 more * 3072*16 -> 172,032
#   638,976 / 2,940,928 = 21.73%.
# ConvNeXt-ified ResNet34 (depths [3,3,9,3], stages from 96, stem 64):
#   65,536 + 3*2*96*1024 = 655,360; 3*2*192*256 = 294,912; 9*2*384*64 = 442,368;
#   3*2*768*16 = 73,728; 442,368 / 1,466,368 = 30.17%.
#   (A 96-channel stem adds 32*1024 = 32,768: 442,368 / 1,499,136 = 29.51%.)
# ConvNeXt-ified ResNet50 (inner 96, 192, 384, 768; stem 64):
#   stage1: 65,536 + 3*(96+96+384)*1024 = 1,835,008
#   stage2: 192*1024 + 192*256 + 768*256 = 442,368; 2 more * 1152*256 -> 1,032,192
#   stage3: 384*256 + 384*64 + 1536*64 = 221,184; 8 more * 2304*64 -> 1,400,832
#   stage4: 768*64 + 768*16 + 3072*16 = 110,592; 2 more * 4608*16 -> 258,048
#   1,400,832 / 4,526,080 = 30.95%. (Stem 96: 1,400,832 / 4,558,848 = 30.73%.)
SECTION4 = [
    ("resnet34", [458_752, 262_144, 196_608, 49_152], "20.3"),
    ("resnet50", [1_245_184, 884_736, 638_976, 172_032], "21.7"),
    ("resnet34-convnext", [655_360, 294_912, 442_368, 73_728], "30.2"),
    ("resnet50-convnext", [1_835_008, 1_032_192, 1_400_832, 258_048], "31.0"),
]


@pytest.mark.parametrize(("name", "stages", "paper"), SECTION4)
def test_section4_stage3_shares(name: str, stages: list[int], paper: str) -> None:
    assert stage_relus(name) == stages
    assert f"{share(stages[2], stages):.1f}" == paper


def test_convnext_stem_keeps_resnet_width() -> None:
    # The paper's m=96 changes the stages, not the stem (the shares above need stem 64).
    for name in ("resnet34-convnext", "resnet50-convnext"):
        spec = parse(name)
        assert spec.stem.width == 64 and spec.stage_widths == (96, 192, 384, 768)
    # Other widths keep the 64:96 ratio, so DeepReDuce's channel scaling halves the stem too.
    assert parse("resnet34-convnext-m48").stem.width == 32
    assert parse("resnet34-convnext", widths=[48, 96, 192, 384]).stem.width == 32
    # A 96-channel stem would put Stage3 at 29.5% (ResNet34) and 30.7% (ResNet50).
    assert f"{share(442_368, [655_360 + 32_768, 294_912, 442_368, 73_728]):.1f}" == "29.5"
    assert f"{share(1_400_832, [1_835_008 + 32_768, 1_032_192, 1_400_832, 258_048]):.1f}" == "30.7"


# --------------------------------------------------------------------------- Appendix C.2


# Stage1 share of HRN-alpha x 6 x 2x (m=16): stage1 = stem 16*1024 + 4*16*1024 = 81,920;
# stage2 = 4*(16a)*256 = 16,384a; stage3 = 4*(96a)*64 = 24,576a; stage4 = 4*(192a)*16 =
# 12,288a; so the share is 81,920 / (81,920 + 53,248a):
# a=6: 81,920 / 401,408 = 20.41%; a=4: / 294,912 = 27.78%; a=2: / 188,416 = 43.48%.
@pytest.mark.parametrize(("alpha", "paper"), [(6, "20.4"), (4, "27.8"), (2, "43.5")])
def test_appendix_c2_stage1_shares(alpha: int, paper: str) -> None:
    stages = stage_relus(f"hrn-{alpha}x6x2x")
    assert stages == [81_920, 16_384 * alpha, 24_576 * alpha, 12_288 * alpha]
    assert f"{share(stages[0], stages):.1f}" == paper


# --------------------------------------------------------------------------- Section 2.2


def test_section22_iso_relu_pairs() -> None:
    # "at an iso-ReLU count of 705K WRN22x4 outperforms WRN40x2". Pre-activation blocks:
    # relu1 sees the block's input (C_in at the input resolution), relu2 its output; the
    # stem (a bare conv to 16 channels) has no ReLU; stage3 ends with post.relu.
    # WRN22x4 (3 blocks, widths 64/128/256):
    #   16*1024 + 64*1024 + 2*(2*64*1024) = 344,064
    #   64*1024 + 128*256 + 2*(2*128*256) = 229,376
    #   128*256 + 256*64 + 2*(2*256*64) + 256*64 = 131,072        -> 704,512
    # WRN40x2 (6 blocks, widths 32/64/128):
    #   16*1024 + 32*1024 + 5*(2*32*1024) = 376,832
    #   32*1024 + 64*256 + 5*(2*64*256) = 212,992
    #   64*256 + 128*64 + 5*(2*128*64) + 128*64 = 114,688         -> 704,512
    assert stage_relus("wrn22x4") == [344_064, 229_376, 131_072]
    assert stage_relus("wrn40x2") == [376_832, 212_992, 114_688]
    # "StageCh ... outperform their BaseCh networks by 2.6% at ~280K": ResNet18 m=32 has
    # half of ResNet18's 557,056; m=16-4x4x4x has 16*1024 + 4*16*1024 = 81,920 in stage1
    # and 4*64*256 = 4*256*64 = 4*1024*16 = 65,536 in each later stage.
    assert stage_relus("resnet18-m32") == [163_840, 65_536, 32_768, 16_384]
    assert stage_relus("resnet18-m16-4x4x4x") == [81_920, 65_536, 65_536, 65_536]
    for a, b, relus in (("wrn22x4", "wrn40x2", 704_512),
                        ("resnet18-m32", "resnet18-m16-4x4x4x", 278_528)):
        assert sum(stage_relus(a)) == sum(stage_relus(b)) == relus


# --------------------------------------------------------------------------- Figure 8


def test_figure8_hrn_3x7x2x_has_30_percent_fewer_flops() -> None:
    # MACs of a two-block basic stage going from a to w channels at resolution r (stride 2,
    # projection shortcut): r*r*(9aw + aw + 3*9w*w) = r*r*(10aw + 27w^2). Stem and stage1
    # (16 channels, 32x32) are the same in both: 3*16*9*1024 + 4*16*16*9*1024 = 9,879,552.
    # HRN-3x7x2x (48, 336, 672):       R18(m=16)-4x4x4x (64, 256, 1024):
    #   256*(10*16*48 + 27*48^2)   = 17,891,328     256*(10*16*64 + 27*64^2)     = 30,932,992
    #   64*(10*48*336 + 27*336^2)  = 205,406,208    64*(10*64*256 + 27*256^2)    = 123,731,968
    #   16*(10*336*672 + 27*672^2) = 231,211,008    16*(10*256*1024 + 27*1024^2) = 494,927,872
    #   fc 672*100 = 67,200 -> 464,455,296           fc 1024*100 = 102,400 -> 659,574,784
    # 464,455,296 / 659,574,784 = 0.704: 29.6% fewer ("30% fewer FLOPs").
    def stage_macs(name: str) -> list[int]:
        c = count(parse(name, dataset="cifar100"))
        return [s.macs for s in c.stages] + [c.macs - sum(s.macs for s in c.stages)]

    hrn, r18 = stage_macs("hrn-3x7x2x"), stage_macs("resnet18-m16-4x4x4x")
    assert hrn == [9_879_552, 17_891_328, 205_406_208, 231_211_008, 67_200]
    assert r18 == [9_879_552, 30_932_992, 123_731_968, 494_927_872, 102_400]
    assert round(100 * (1 - sum(hrn) / sum(r18))) == 30
    # ... at a similar ReLU count: 260,096 against 278,528.
    assert (sum(stage_relus("hrn-3x7x2x")), sum(stage_relus("resnet18-m16-4x4x4x"))) == (
        260_096, 278_528)
