"""Name parser, zoo shapes, slots and spec round trips."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepreshape import UsageError, build, parse
from deepreshape.spec import NetSpec, relu_slots
from deepreshape.zoo import regnetx_stages


@pytest.mark.parametrize(("key", "widths", "depths"), [
    ("200mf", [24, 56, 152, 368], [1, 1, 4, 7]),
    ("400mf", [32, 64, 160, 384], [1, 2, 7, 12]),
    ("600mf", [48, 96, 240, 528], [1, 3, 5, 7]),
    ("800mf", [64, 128, 288, 672], [1, 3, 7, 5]),
    ("1.6gf", [72, 168, 408, 912], [2, 4, 10, 2]),
])
def test_regnetx_widths_and_depths(key: str, widths: list[int], depths: list[int]) -> None:
    spec = parse(f"regnetx-{key}")
    assert list(spec.stage_widths) == widths and list(spec.depths) == depths
    assert spec.stem.width == 32 and spec.stages[0].stride == 1
    from deepreshape.zoo import REGNETX

    assert regnetx_stages(*REGNETX[key]) == (widths, depths)


def test_zoo_shapes() -> None:
    assert parse("hrn-5x7x2x").stage_widths == (16, 80, 560, 1120)
    assert parse("hrn-5x7x2x-m32").stage_widths == (32, 160, 1120, 2240)
    r50 = parse("resnet50")
    assert [s.width for s in r50.stages] == [256, 512, 1024, 2048]
    assert r50.stages[1].inner == 128 and r50.depths == (3, 4, 6, 3)
    cnx = parse("resnet34-convnext")
    assert cnx.depths == (3, 3, 9, 3) and cnx.stage_widths == (96, 192, 384, 768)
    wrn = parse("wrn28x10")
    assert wrn.depths == (4, 4, 4) and wrn.stage_widths == (160, 320, 640) and wrn.final_relu
    assert parse("resnet18-m16-5x7x2x").multipliers == (5, 7, 2)
    assert parse("hrn-5x7x2x", depths=[1, 5, 5, 3]).name == "hrn-5x7x2x-d1,5,5,3"
    assert parse("hrn-5x7x2x-d1,5,5,3") == parse("hrn-5x7x2x", depths=[1, 5, 5, 3])


@pytest.mark.parametrize(("ds", "size", "classes"), [
    ("cifar10", 32, 10), ("cifar100", 32, 100), ("tinyimagenet", 64, 200)])
def test_dataset_fixes_shape(ds: str, size: int, classes: int) -> None:
    spec = parse("resnet18", dataset=ds)
    assert (spec.input_size, spec.num_classes) == (size, classes)
    assert parse("resnet18", input_size=48, num_classes=7).input_size == 48


def test_built_model_is_plain_module_and_runs() -> None:
    spec = parse("hrn-2x5x2x", dataset="digits")
    model = build(spec)
    assert type(model).__mro__[1] is torch.nn.Module
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10)
    # Module paths equal slot addresses.
    for s in relu_slots(spec):
        model.get_submodule(s.address)


@pytest.mark.parametrize("bad", [
    "resnt18", "resnet19", "hrn", "hrn-5x7x", "hrn-5x7x2x-q3", "wrn23x8", "resnet18-m",
    "resnet18-2x2x", "regnetx-300mf", "resnet18-d0,2,2,2", "", "hrn-5x7x2x-dx", "resnet18-w8,8",
])
def test_bad_names_give_one_line_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError) as e:
        parse(bad)
    assert "\n" not in str(e.value)


def test_unknown_name_suggests_close_forms() -> None:
    with pytest.raises(UsageError, match="resnet18"):
        parse("resnet81")


# ---- property tests: generated valid names round-trip; malformed ones error cleanly

ints = st.integers(min_value=1, max_value=9)


@st.composite
def valid_names(draw) -> str:
    base = draw(st.sampled_from(["resnet18", "resnet34", "resnet50", "hrn", "wrn16x2",
                                 "wrn22x4", "resnet34-convnext", "regnetx-400mf"]))
    parts = [base]
    n = 3 if base.startswith("wrn") else 4
    if draw(st.booleans()) and not base.startswith("regnetx"):
        parts.append(f"m{draw(st.integers(4, 40))}")
    if base == "hrn" or (draw(st.booleans()) and not base.startswith("regnetx")):
        parts.append("".join(f"{draw(st.integers(2, 8))}x" for _ in range(n - 1)))
    if draw(st.booleans()):
        parts.append("d" + ",".join(str(draw(st.integers(1, 3))) for _ in range(n)))
    return "-".join(parts)


@settings(max_examples=150, deadline=None)
@given(valid_names())
def test_valid_names_round_trip(name: str) -> None:
    spec = parse(name)
    again = parse(spec.name)
    assert again == spec
    assert NetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdefghmnrstwx0123456789-,.", max_size=24))
def test_malformed_names_never_crash(text: str) -> None:
    try:
        spec = parse(text)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert parse(spec.name) == spec


def test_slots_round_trip_through_config_json() -> None:
    spec = parse("resnet18-m16").with_slots({"*.relu1": "reuse:4", "stage1.*": "identity",
                                             "stage4.block2.relu2": "mask:pixel:10"})
    again = NetSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.describe() == spec.describe()
    assert spec.describe().startswith("resnet18-m16[")
    assert spec.describe() == (
        "resnet18-m16[stage1.*.relu1=identity,stage1.*.relu2=identity,stage2.*.relu1=reuse:4,"
        "stage3.*.relu1=reuse:4,"
        "stage4.*.relu1=reuse:4,stage4.block2.relu2=mask:pixel:10]")


@pytest.mark.parametrize(("pattern", "kind"), [
    ("stage9.*", "identity"), ("stage1.*", "relu6"), ("stage4.block1.relu1", "mask:pixel:99999"),
    ("stage1.*", "reuse:1"), ("stage1.*", "reuse:64"),
])
def test_bad_slot_changes(pattern: str, kind: str) -> None:
    with pytest.raises(UsageError):
        parse("resnet18-m16").with_slots({pattern: kind})


def test_stem_stride_suffix_is_part_of_the_name() -> None:
    from deepreshape import count

    spec = parse("hrn-5x7x2x-s2")
    assert spec.stem.stride == 2 and spec.name == "hrn-5x7x2x-s2"
    assert parse(spec.name) == spec == parse("hrn-5x7x2x", stem_stride=2)
    assert count(spec).relus * 4 == count(parse("hrn-5x7x2x")).relus
    with pytest.raises(UsageError):
        parse("hrn-5x7x2x-s9")


def test_package_functions_stay_functions_when_their_modules_load():
    """`dr.build`, `dr.design` and `dr.train` share names with their modules; importing
    a module (directly or through another) must not replace the function."""
    import importlib

    import deepreshape as dr

    for name in ("build", "create_model", "design", "train", "Recipe", "load_run"):
        first = getattr(dr, name)
        importlib.import_module(dr._LAZY[name])
        assert getattr(dr, name) is first and callable(first), name
    assert dr.design((3, 2, 4, 1)) and dr.design((3, 2, 4, 1))  # twice: still the function


@pytest.mark.parametrize("suffix, keyword", [
    ("-d0,2,2,2", {"depths": [0, 2, 2, 2]}),
    ("-d1001,1,1,1", {"depths": [1001, 1, 1, 1]}),
    ("-w16,32,64,1048577", {"widths": [16, 32, 64, 1048577]}),
    ("-m1048577", {"base_width": 1048577}),
    ("-1025x2x2x", {"multipliers": [1025, 2, 2]}),
])
def test_suffixes_and_overrides_share_one_check(suffix: str, keyword: dict) -> None:
    """The same value is refused the same way as a name suffix and as an option."""
    with pytest.raises(UsageError, match=r"every value must be an integer in 1\.\.") as by_name:
        parse("resnet18" + suffix)
    with pytest.raises(UsageError, match=r"every value must be an integer in 1\.\.") as by_kw:
        parse("resnet18", **keyword)
    assert str(by_name.value).split(":")[1] == str(by_kw.value).split(":")[1]


def test_limits_hold_for_products_and_stored_specs() -> None:
    """Values inside the per-value limits that multiply into an absurd network are refused
    before anything is built, also when they come from a stored config."""
    with pytest.raises(UsageError, match="weights, above the limit"):
        parse("resnet18", depths=[1000] * 4, widths=[65536] * 4)
    spec = parse("resnet18").to_dict()
    spec["stages"][0]["depth"] = 10**9
    with pytest.raises(UsageError, match="every value must be an integer"):
        NetSpec.from_dict(spec)
    assert parse("resnet18", depths=[1000, 1, 1, 1]).depths == (1000, 1, 1, 1)  # at the limit


def test_proportional_masks_share_a_budget_by_slot_size() -> None:
    from deepreshape.count import count
    from deepreshape.slotkinds.mask import proportional_masks

    # slots of 256 (stem, stage1 x2), 128 (x2), 64 (x2), 32 (x2) positions: 1,216 ReLUs
    spec = parse("resnet18-m4-d1,1,1,1", input_size=8)
    half = dict(proportional_masks(spec, 608).slots)
    assert half == {"stem.relu": "mask:pixel:128",
                    **{f"stage1.block1.relu{i}": "mask:pixel:128" for i in (1, 2)},
                    **{f"stage2.block1.relu{i}": "mask:pixel:64" for i in (1, 2)},
                    **{f"stage3.block1.relu{i}": "mask:pixel:32" for i in (1, 2)},
                    **{f"stage4.block1.relu{i}": "mask:pixel:16" for i in (1, 2)}}
    # a culled stage keeps its identity slots and is not counted: 100 of 1,152 ReLUs are
    # 22/11/5 per slot (98), the remainder one each to the first two slots
    culled = spec.with_slots({"stage4.*": "identity"})
    got = dict(proportional_masks(culled, 100).slots)
    assert got["stem.relu"] == got["stage1.block1.relu1"] == "mask:pixel:23"
    assert got["stage1.block1.relu2"] == "mask:pixel:22" and got["stage3.block1.relu2"] == (
        "mask:pixel:5")
    assert got["stage4.block1.relu1"] == "identity"
    assert count(proportional_masks(culled, 100)).relus == 100
    assert proportional_masks(spec, 1216) == spec
    with pytest.raises(UsageError, match="outside 0..1,216"):
        proportional_masks(spec, 1217)


@pytest.mark.parametrize("changes", [
    {"stage1.*": "identity", "stage4.*": "identity"},  # DeepReDuce culling (stem in stage 1)
    {"stage2.*.relu2": "identity", "stage3.*.relu2": "identity"},  # thinning
    {"stage2.*": "reuse:4", "stem.relu": "mask:pixel:64"},
    {"stage3.block1.relu1": "mask:channel:3"},
])
def test_a_described_network_parses_back(changes: dict) -> None:
    spec = parse("resnet18-m8-d2,1,2,1", input_size=16).with_slots(changes)
    assert parse(spec.describe(), input_size=16) == spec
    assert parse(spec.describe().upper(), input_size=16) == spec


def test_slot_suffix_stage_means_every_slot_of_the_stage() -> None:
    from deepreshape.count import count

    culled = parse("hrn-5x5x3x[stage1=identity,stage4=identity]")
    stages = {s.name: s.relus for s in count(culled).stages}
    assert stages["stage1"] == stages["stage4"] == 0 and count(culled).stem_relus == 0
    # stage2: 2 blocks x 2 slots of 80 channels at 16x16; stage3: 4 x 400 at 8x8
    assert (stages["stage2"], stages["stage3"]) == (4 * 80 * 256, 4 * 400 * 64)


@pytest.mark.parametrize("name, match", [
    ("resnet18[stage1]", "slot changes look like"),
    ("resnet18[=identity]", "slot changes look like"),
    ("resnet18[stage9=identity]", "no ReLU slot in stage9"),
    ("resnet18[stage1=sigmoid]", "unknown ReLU slot kind"),
    ("resnet18[stage7.*=identity]", "no ReLU slot matches"),
    ("resnet18[stage1=identity", "unknown"),
])
def test_bad_slot_suffixes(name: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse(name)
