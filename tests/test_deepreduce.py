"""DeepReDuce / Algorithm 2: hand-derived counts of every step, the thinning rule, the plans
of both pipelines, the CLI, and both pipelines end to end on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepreshape import build, count, count_module, parse
from deepreshape.cli.main import main
from deepreshape.errors import UsageError
from deepreshape.fileio import write_json
from deepreshape.optimize.deepreduce import (
    alternate_slots,
    apply_reshapes,
    cull,
    deepreduce,
    plan,
    reuse,
    scale_channels,
    scale_depths,
    scale_feature_maps,
    thin,
)
from deepreshape.options import RunOptions
from deepreshape.rundir.run import load_run
from deepreshape.spec import relu_slots
from deepreshape.training import Recipe, train

R18 = parse("resnet18", dataset="cifar100")  # stages 327,680 / 131,072 / 65,536 / 32,768
HRN = parse("hrn-5x7x2x", dataset="cifar100")  # stages 81,920 / 81,920 / 143,360 / 71,680
R18_STEM, HRN_STEM = 64 * 32 * 32, 16 * 32 * 32


pytestmark = pytest.mark.usefixtures("one_thread")


def stages(spec) -> list[int]:
    return [s.relus for s in count(spec).stages]


def hooked(spec) -> int:
    """ReLUs counted by forward hooks on the built module (on the meta device: no compute)."""
    with torch.device("meta"):
        model = build(spec)
    return count_module(model, spec).relus


# --------------------------------------------------------------------------- ReLU-reuse


@pytest.mark.parametrize(("n", "relus"), [(2, 434_176), (4, 372_736), (8, 342_016), (16, 326_656)])
@pytest.mark.parametrize("drop", ["relu2", "relu1"])
def test_table9_reuse_on_alternate_layers(n: int, relus: int, drop: str) -> None:
    # Paper Table 9: ResNet18, CIFAR-100, reuse:N on the alternate layers thinning drops
    # (relu2 of every basic block by default; relu1 gives the same counts), stem counted.
    alternate = alternate_slots(R18, drop)
    assert alternate == [s.address for s in relu_slots(R18) if s.address.endswith(drop)]
    spec = R18.with_slots(dict.fromkeys(alternate, f"reuse:{n}"))
    assert count(spec).relus == relus
    # By hand: either slot holds half of the 491,520 non-stem ReLUs; reuse keeps 1/N.
    assert relus == 557_056 - 245_760 + 245_760 // n


def test_reuse_after_thinning_hand_counts() -> None:
    t = thin(HRN)
    # One relu1 per block survives; reuse:N keeps C/N channels of it; the stem stays a ReLU.
    for n in (4, 8, 16):
        r = reuse(t, n)
        assert stages(r) == [HRN_STEM + 2 * (16 // n) * 32 * 32, 2 * (80 // n) * 16 * 16,
                             2 * (560 // n) * 8 * 8, 2 * (1120 // n) * 4 * 4]
        assert str(r.slot_kind("stem.relu")) == "relu"
        assert hooked(r) == count(r).relus
    assert count(reuse(t, 4)).relus == 61_696
    with pytest.raises(UsageError, match="needs at least 8 channels"):
        reuse(thin(parse("hrn-2x2x2x-m4-d1,1,1,1", dataset="digits")), 8)


# --------------------------------------------------------------------------- cull / thin / reshape


def test_resnet18_hand_counts_match_deepreduce_points() -> None:
    assert stages(R18) == [327_680, 131_072, 65_536, 32_768]
    c1 = cull(R18, [1])
    assert stages(c1) == [0, 131_072, 65_536, 32_768] and count(c1).stem_relus == 0
    assert count(c1).relus == 229_376  # DeepReDuce's 229.38K point (peers.md)
    assert count(cull(R18, [1, 4])).relus == 196_608  # 197K
    t = thin(c1)
    assert stages(t) == [0, 65_536, 32_768, 16_384] and count(t).relus == 114_688  # 114K
    ch = scale_channels(t, 0.5)
    assert count(ch).relus == 57_344  # 57.34K
    assert ch.stage_widths == (32, 64, 128, 256) and ch.stem.width == 32
    assert count(scale_channels(thin(cull(R18, [1, 4])), 0.5)).relus == 49_152  # 49.2K
    fm = scale_feature_maps(t)
    assert count(fm).relus == 28_672 and fm.stem.stride == 2  # 28.7K
    # MACs: linearizing keeps every conv; feature maps /2 divide conv MACs by 4 (fc stays);
    # channels x0.5 divide them by 4 except the stem conv (3 input channels: by 2) and fc.
    macs, fc, stem_conv = count(R18).macs, 512 * 100, 3 * 64 * 9 * 32 * 32
    assert count(t).macs == macs == 555_468_800
    assert count(fm).macs == (macs - fc) // 4 + fc
    assert count(ch).macs == (macs - fc - stem_conv) // 4 + stem_conv // 2 + fc // 2


def test_hrn_hand_counts() -> None:
    assert stages(HRN) == [81_920, 81_920, 143_360, 71_680]
    t = thin(HRN)  # the stem is not thinned; each stage loses its relu2s (half its ReLUs)
    assert stages(t) == [HRN_STEM + 32_768, 40_960, 71_680, 35_840]
    ch = scale_channels(t, 0.5)
    assert ch.stage_widths == (8, 40, 280, 560) and stages(ch) == [s // 2 for s in stages(t)]
    assert dict(ch.slots) == dict(t.slots)
    fm = scale_feature_maps(t)
    assert stages(fm) == [s // 4 for s in stages(t)]
    assert stages(cull(HRN, [1])) == [0, 81_920, 143_360, 71_680]
    for spec in (t, ch, fm, cull(HRN, [1, 4])):
        assert hooked(spec) == count(spec).relus


@pytest.mark.parametrize(("drop", "keep"), [("relu2", "relu1"), ("relu1", "relu2")])
def test_thinning_rule(drop: str, keep: str) -> None:
    # Default relu2: the ReLU after the residual add goes, as in DeepReDuce's released
    # models (isThinned=[False, True]); relu1 (between the convolutions) is the option.
    t = thin(R18) if drop == "relu2" else thin(R18, drop)
    kinds = {s.address: str(t.slot_kind(s.address)) for s in relu_slots(t)}
    assert kinds["stem.relu"] == "relu"
    assert all(k == "identity" for a, k in kinds.items() if a.endswith(drop))
    assert all(k == "relu" for a, k in kinds.items() if a.endswith(keep))
    assert thin(t, drop) == t  # idempotent: the dropped positions are already linear
    assert count(t).relus == count(thin(R18, keep)).relus  # same counts, not the same net
    assert t != thin(R18, keep)
    # Bottlenecks alternate across blocks by the same positions of the stage's slots.
    r50 = thin(parse("resnet50", dataset="cifar100"), drop)
    stage1 = [str(r50.slot_kind(f"stage1.block{b}.relu{i}")) for b in (1, 2, 3) for i in (1, 2, 3)]
    first = ["relu", "identity"] * 4 + ["relu"]
    assert stage1 == (first if drop == "relu2" else [
        "identity" if k == "relu" else "relu" for k in first])
    # Pre-activation blocks: the final post.relu takes its turn after the blocks.
    w = thin(parse("wrn16x8", dataset="cifar100"), drop)
    wk = [str(w.slot_kind(a)) for a in ("stage3.block1.relu1", "stage3.block1.relu2",
                                        "stage3.block2.relu1", "stage3.block2.relu2",
                                        "stage3.post.relu")]
    assert wk == (["relu", "identity", "relu", "identity", "relu"] if drop == "relu2" else
                  ["identity", "relu", "identity", "relu", "identity"])
    # A culled stage is left alone.
    assert dict(thin(cull(R18, [2]), drop).slots).get(f"stage2.block1.{keep}") == "identity"
    with pytest.raises(UsageError, match="unknown thinning 'relu3'"):
        thin(R18, "relu3")


def test_reshape_composes_and_keeps_slots() -> None:
    base = thin(cull(HRN, [1]))
    spec = scale_channels(scale_feature_maps(base), 0.5)
    assert spec.stem.stride == 2 and spec.stage_widths == (8, 40, 280, 560)
    assert count(spec).relus == count(base).relus // 8
    assert apply_reshapes(base, ["channel", "fmap"]) == spec == scale_feature_maps(
        scale_channels(base, 0.5))
    r = scale_channels(reuse(thin(R18), 4), 0.5)
    assert str(r.slot_kind("stage2.block1.relu1")) == "reuse:4"
    assert str(r.slot_kind("stage2.block1.relu2")) == "identity"
    with pytest.raises(UsageError, match="positive"):
        scale_channels(R18, 0)
    # a scaled network is named by its base width where its family has one
    assert [scale_channels(parse(n), 0.5).name for n in
            ("resnet18", "hrn-5x5x3x-s2", "resnet34-convnext", "wrn22x4")] == [
        "resnet18-m32", "hrn-5x5x3x-m8-s2", "resnet34-convnext-m48", "wrn22x4-w32,64,128"]
    assert scale_channels(parse("resnet34-convnext"), 0.5).stem.width == 32
    with pytest.raises(UsageError, match="stages 1..4"):
        cull(R18, [5])


def test_depth_reshape_keeps_first_blocks_and_their_slots() -> None:
    # DeepReDuce's 7K model: ResNet18 at [2,1,1,1], stage1 culled, thinned (relu2 gone):
    # 2*128*16*16 + 2*256*8*8 + 2*512*4*4 = 114,688 -> thinned 57,344.
    d = scale_depths(thin(cull(R18, [1])), (2, 1, 1, 1))
    assert d.depths == (2, 1, 1, 1) and d.name == "resnet18-d2,1,1,1"
    assert stages(d) == [0, 32_768, 16_384, 8_192]
    assert d == thin(cull(parse("resnet18-d2,1,1,1", dataset="cifar100"), [1]))
    assert hooked(d) == count(d).relus
    # Composed with channels x0.5 and feature maps /2: 57,344 / 8 = 7,168.
    assert count(apply_reshapes(thin(cull(R18, [1])), ["depth", "channel", "fmap"],
                                depths=(2, 1, 1, 1))).relus == 7_168
    for bad in ((2, 1, 1), (2, 3, 1, 1), (2, 0, 1, 1)):
        with pytest.raises(UsageError, match="do not fit resnet18"):
            scale_depths(R18, bad)
    with pytest.raises(UsageError, match="needs target depths"):
        apply_reshapes(R18, ["depth"])


# --------------------------------------------------------------------------- plans


def test_deepreduce_plan_resnet18() -> None:
    nets = plan(R18, "3,2,4,1")
    assert [p.label for p in nets] == [
        "resnet18",
        "cull-s1", "cull-s1-thin", "cull-s1-thin-ch0.5", "cull-s1-thin-fm2",
        "cull-s1s4", "cull-s1s4-thin", "cull-s1s4-thin-ch0.5", "cull-s1s4-thin-fm2",
        "cull-s1s4s2", "cull-s1s4s2-thin", "cull-s1s4s2-thin-ch0.5", "cull-s1s4s2-thin-fm2"]
    assert nets[0].baseline and not any(p.baseline for p in nets[1:])
    relus = {p.label: count(p.spec).relus for p in nets}
    assert relus["cull-s1s4s2"] == 65_536 and relus["cull-s1s4s2-thin-fm2"] == 8_192
    only = plan(R18, (3, 2, 4, 1), steps=["thin", "reshape"], reshape=["channel"])
    assert [p.label for p in only] == ["resnet18", "thin", "thin-ch0.5"]


def test_hrn_plan_culls_only_when_least_critical_holds_most() -> None:
    # HRN-5x7x2x: stage1 (least critical) does not hold the most ReLUs: no culling.
    labels = [p.label for p in plan(HRN, "3,2,4,1", pipeline="hrn")]
    assert labels == ["hrn-5x7x2x", "thin", "thin-ch0.5", "thin-reuse4", "thin-reuse8",
                      "thin-reuse16"]
    # ResNet18: stage1 holds most of the ReLUs, so it is culled first.
    nets = plan(R18, "3,2,4,1", pipeline="hrn")
    assert [p.label for p in nets][:3] == ["resnet18", "cull-s1", "cull-s1-thin"]
    assert count(nets[-1].spec).relus == 2 * (128 // 16) * 256 + 2 * (256 // 16) * 64 + \
        2 * (512 // 16) * 16


def test_plan_composed_reshapes() -> None:
    nets = plan(R18, "3,2,4,1", steps=["cull", "thin", "reshape"],
                reshape=["fmap+channel", "channel+fmap", "depth+fmap+channel"], depths=(2, 1, 1, 1))
    labels = [p.label for p in nets if p.label.startswith("cull-s1-")]
    assert labels == ["cull-s1-thin", "cull-s1-thin-ch0.5-fm2", "cull-s1-thin-d2.1.1.1-ch0.5-fm2"]
    by = {p.label: p for p in nets}
    assert by["cull-s1-thin-ch0.5-fm2"].steps == (
        "cull stage1", "thin", "channels x0.5", "feature maps /2")
    assert count(by["cull-s1-thin-ch0.5-fm2"].spec).relus == 114_688 // 8
    assert count(by["cull-s1-thin-d2.1.1.1-ch0.5-fm2"].spec).relus == 7_168
    # The relu1 option thins the other slot: same counts, another network, its own label.
    other = plan(R18, "3,2,4,1", steps=["thin"], thinning="relu1")
    assert [p.label for p in other] == ["resnet18", "thin-relu1"]
    assert other[1].spec == thin(R18, "relu1") and other[1].steps == ("thin (relu1)",)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"order": "3,1,2"}, "3 stages"),
    ({"order": "3,2,2,1"}, "permutation"),
    ({"pipeline": "magic"}, "unknown pipeline"),
    ({"steps": ["cull", "prune"]}, "unknown step 'prune'"),
    ({"reshape": ["width"]}, "unknown reshape"),
    ({"reshape": ["channel+width"]}, "unknown reshape 'width'"),
    ({"reshape": ["channel+channel"]}, "names a kind twice"),
    ({"reshape": ["depth"]}, "needs target depths"),
    ({"depths": (2, 1, 1, 1)}, "depths are for the depth reshape"),
    ({"reshape": ["depth"], "depths": (3, 1, 1, 1)}, "do not fit"),
    ({"thinning": "relu3"}, "unknown thinning"),
    ({"reuse_factors": [1]}, ">= 2"),
])
def test_plan_errors(kwargs: dict, message: str) -> None:
    kw = {"order": "3,2,4,1", **kwargs}
    with pytest.raises(UsageError, match=message):
        plan(R18, **kw)


# --------------------------------------------------------------------------- end to end

TINY = "hrn-2x2x2x-m8-d1,1,1,1"  # widths 8/16/32/64 on 16x16 digits
FAST = ["--epochs", "1", "--batch-size", "64", "--lr", "0.05", "--quiet"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reduce") / "base"
    train(TINY, "digits", recipe=Recipe(epochs=2, batch_size=64, lr=0.05), out=out,
          options=RunOptions(quiet=True))
    return out


def test_hrn_pipeline_end_to_end(baseline: Path, tmp_path: Path) -> None:
    res = deepreduce(baseline, pipeline="hrn", order="3,2,4,1", reuse_factors=(4, 8),
                     recipe=Recipe(epochs=1, batch_size=64, lr=0.05), out=tmp_path / "r",
                     options=RunOptions(quiet=True))
    labels = [r["label"] for r in res.rows]
    # On this net stage1 (stem + 2 slots of 8x16x16) holds most ReLUs: it is culled.
    assert labels == [TINY, "cull-s1", "cull-s1-thin", "cull-s1-thin-ch0.5",
                      "cull-s1-thin-reuse4", "cull-s1-thin-reuse8"]
    # stem 8x16x16 + 2 x 8x16x16 | 2 x 16x8x8 | 2 x 32x4x4 | 2 x 64x2x2; thinning keeps relu1;
    # reuse:N keeps C/N channels of each relu1.
    assert [r["relus"] for r in res.rows] == [
        6144 + 2048 + 1024 + 512, 3584, 1792, 896, 4 * 64 + 8 * 16 + 16 * 4, 2 * 64 + 4 * 16 + 8 * 4]
    assert res.rows[0]["run"] == str(baseline) and res.rows[0]["baseline"]
    for row in res.rows[1:]:
        run = load_run(row["run"])
        assert run.results["relus"] == row["relus"] == count(run.spec).relus
        assert count_module(run.model(), run.spec).relus == row["relus"]
        assert 0 <= row["accuracy"] <= 100 and run.config["teacher"] == str(baseline)
        assert run.config["method"]["pipeline"] == "hrn"
    saved = json.loads((tmp_path / "r" / "reduce.json").read_text())
    assert saved["order"] == [3, 2, 4, 1] and saved["order_source"] == "--order"
    assert [n["label"] for n in saved["networks"]] == labels


def test_init_from_baseline_weights(baseline: Path, tmp_path: Path, monkeypatch) -> None:
    import importlib

    tr = importlib.import_module("deepreshape.training")  # dr.train is the function

    seen = {}
    real = tr.train

    def spy(*a, **kw):
        seen["init"] = kw.get("init_from")
        return real(*a, **kw)

    monkeypatch.setattr(tr, "train", spy)
    deepreduce(baseline, order="3,2,4,1", steps=["cull"], recipe=Recipe(epochs=1, batch_size=64),
               out=tmp_path / "i", options=RunOptions(quiet=True))
    base = load_run(baseline).load_checkpoint()["model"]
    assert seen["init"].keys() == base.keys()
    assert all(torch.equal(seen["init"][k], base[k]) for k in base)


def test_deepreduce_cli_with_criticality_json(baseline: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dr"
    assert main(["reduce", str(baseline), "--order", "3,2,4,1", "--steps", "cull,thin",
                 "--out", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert "cull-s1s4s2-thin" in text and "order 3,2,4,1" in text
    saved = json.loads((out / "reduce.json").read_text())
    assert len(saved["networks"]) == 1 + 2 * 3
    assert all(0 <= n["accuracy"] <= 100 for n in saved["networks"])
    # Without --order the order comes from RUN/criticality.json.
    crit = baseline / "criticality.json"
    write_json(crit, {"stages": [{"name": f"stage{k}", "relus": 100, "acc": None, "kd_acc": a}
                                 for k, a in enumerate((10, 30, 20, 40), 1)]})
    try:
        assert main(["reduce", str(baseline), "--dry-run", "--json", *FAST]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["order"] == [4, 2, 3, 1] and d["order_source"].endswith("criticality.json")
        assert d["networks"][1]["label"] == "cull-s1" and d["networks"][1]["accuracy"] is None
    finally:
        crit.unlink()
    assert main(["reduce", str(baseline), "--dry-run"]) == 2
    assert "criticality.json" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--order", "3,1,2"], "3 stages"),
    (["--order", "a,b"], "comma-separated integers"),
    (["--order", "3,2,4,1", "--steps", "cull,prune"], "unknown step"),
    (["--order", "3,2,4,1", "--scale", "half"], "--scale"),
    (["--order", "3,2,4,1", "--reuse", "4,x"], "--reuse"),
])
def test_cli_errors_one_line(baseline: Path, capsys, extra: list[str], message: str) -> None:
    assert main(["reduce", str(baseline), "--dry-run", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_missing_run(capsys) -> None:
    assert main(["reduce", "/no/such/run", "--order", "3,2,4,1"]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["reduce", "/no/such/run", "--order", "3,2,4,1", "--dry-run"]) == 2
    assert "neither a run directory nor a network name" in capsys.readouterr().err
    # A network name is planned, not trained.
    assert main(["reduce", "resnet18", "--order", "3,2,4,1"]) == 2
    assert "is a network name" in capsys.readouterr().err
    assert main(["reduce", "resnet18", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "pass --order" in err and err.count("\n") == 1


def test_cli_thinning_option(capsys) -> None:
    args = ["reduce", "resnet18", "--order", "3,2,4,1", "--steps", "thin", "--dry-run", "--json"]
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert main([*args, "--thin", "relu1"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert default["thinning"] == "relu2" and other["thinning"] == "relu1"
    assert [n["label"] for n in other["networks"]] == ["resnet18", "thin-relu1"]
    # Same counts (C x H x W of both basic-block slots), different networks.
    assert default["networks"][1]["relus"] == other["networks"][1]["relus"] == 65_536 + 245_760
    assert "stage1.*.relu2=identity" in default["networks"][1]["arch"]
    assert "stage1.*.relu1=identity" in other["networks"][1]["arch"]


def test_dry_run_reads_no_checkpoint(baseline: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from deepreshape.rundir.run import Run

    def refuse(*a, **kw):
        raise AssertionError("a dry run loaded a checkpoint")

    monkeypatch.setattr(Run, "load_checkpoint", refuse)
    untrained = tmp_path / "untrained"  # a run directory without checkpoint.pt
    untrained.mkdir()
    (untrained / "config.json").write_text((baseline / "config.json").read_text())
    assert main(["reduce", str(untrained), "--order", "3,2,4,1", "--dry-run", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["dataset"] == "digits"
    assert d["networks"][0]["relus"] == count(parse(TINY, dataset="digits")).relus
    assert main(["reduce", str(untrained), "--order", "3,2,4,1", "--dry-run",
                 "--dataset", "cifar100"]) == 2
    assert "trained on digits, not cifar100" in capsys.readouterr().err


# DeepReDuce's published ResNet18 points: peers.json's values (the papers' labels) with the
# exact count of the network behind each, and the models of DeepReDuce's released model
# list (DRD_C100_14K and _7K have no accuracy in peers.md). Counts on 32x32 by hand:
# stages 327,680 (stem 65,536 in it) / 131,072 / 65,536 / 32,768; Tiny ImageNet (64x64) x4.
#   cull s1 = 229,376; thin halves; channels x0.5 halves; feature maps /2 quarter;
#   cull s1+s4 = 196,608; at [2,1,1,1], cull s1: 65,536 + 32,768 + 16,384 = 114,688.
#   64x64 with Tiny ImageNet's order 3,4,2,1: cull s1 = 4 * 229,376 = 917,504;
#   cull s1+s2 = 4 * (65,536 + 32,768) = 393,216.
PUBLISHED = {
    "cifar100": ("3,2,4,1", {
        12_300: 12_288,    # cull s1+s4, thin, channels x0.5, fmap /2 (DRD_C100_12K)
        28_700: 28_672,    # cull s1, thin, fmap /2 (DRD_C100_29K)
        49_200: 49_152,    # cull s1+s4, thin, channels x0.5 (DRD_C100_49K)
        57_340: 57_344,    # cull s1, thin, channels x0.5 (DRD_C100_57K)
        114_000: 114_688,  # cull s1, thin (DRD_C100_115K)
        196_608: 196_608,  # cull s1+s4 (printed 197.63K; see peers.json's note)
        229_380: 229_376,  # cull s1 (DRD_C100_230K)
        None: (14_336, 7_168),  # DRD_C100_14K: + channels x0.5 + fmap /2; _7K: also [2,1,1,1]
    }),
    "tinyimagenet": ("3,4,2,1", {
        24_600: 24_576,    # cull s1+s2, thin, channels x0.5, fmap /2
        28_670: 28_672,    # cull s1, thin, [2,1,1,1], channels x0.5, fmap /2
        49_160: 49_152,    # cull s1+s2, thin, fmap /2 (DRD_TINY_49K)
        57_350: 57_344,    # cull s1, thin, channels x0.5, fmap /2 (DRD_TINY_57K)
        98_300: 98_304,    # cull s1+s2, thin, channels x0.5 (DRD_TINY_98K)
        114_690: 114_688,  # cull s1, thin, fmap /2 (DRD_TINY_115K)
        200_000: 196_608,  # cull s1+s2, thin (DRD_TINY_197K)
        230_000: 229_376,  # cull s1, thin, channels x0.5 (DRD_TINY_229K)
        400_000: 393_216,  # cull s1+s2 (DRD_TINY_393K)
        459_000: 458_752,  # cull s1, thin (DRD_TINY_459K)
        917_000: 917_504,  # cull s1 (DRD_TINY_918K)
    }),
}
# With DeepReDuce's factors every ResNet18 slot at 64x64 holds a multiple of 4,096 ReLUs (the
# smallest: stage 4 at channels x0.5 and feature maps /2, 256 x 4x4), so 12,900 is no count
# of theirs; peers.json says so in a note.
UNREACHABLE = {"tinyimagenet": {12_900}}


@pytest.mark.parametrize("dataset", list(PUBLISHED))
def test_every_published_deepreduce_count_from_the_command_line(dataset: str, capsys) -> None:
    from importlib import resources

    order, table = PUBLISHED[dataset]
    peers = json.loads(resources.files("deepreshape.resources").joinpath("peers.json").read_text())
    series = next(s for s in peers["datasets"][dataset] if s["method"] == "DeepReDuce")
    stored = {r for r, _ in series["points"]}
    assert stored == set(table) - {None} | UNREACHABLE.get(dataset, set())
    for label in UNREACHABLE.get(dataset, ()):
        assert any(n.startswith(f"{label}:") for n in series["notes"])
    for label, exact in table.items():  # each label within 2% of the network's count
        assert label is None or abs(exact - label) <= 0.02 * label
    assert main(["reduce", "resnet18", "--dataset", dataset, "--order", order, "--reshape",
                 "channel,fmap,channel+fmap,depth+channel+fmap", "--depths", "2,1,1,1",
                 "--dry-run", "--json"]) == 0
    reached = {n["relus"] for n in json.loads(capsys.readouterr().out)["networks"]}
    wanted = {c for v in table.values() for c in (v if isinstance(v, tuple) else (v,))}
    assert wanted <= reached, sorted(wanted - reached)


def test_reuse_factors_wider_than_a_layer_are_skipped_with_a_warning() -> None:
    from deepreshape.optimize.deepreduce import plan

    # Stage1 (4 channels) holds the most ReLUs and is culled; stage2 has 8 channels.
    spec = parse("hrn-2x5x2x-m4", dataset="digits")
    with pytest.warns(UserWarning, match="x16 skipped"):
        nets = plan(spec, "3,2,4,1", pipeline="hrn", reuse_factors=(4, 8, 16))
    labels = [p.label for p in nets]
    assert any(lab.endswith("reuse8") for lab in labels)
    assert not any(lab.endswith("reuse16") for lab in labels)
