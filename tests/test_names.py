"""Short display names of specs, and one secure-inference result per (protocol, link)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepreshape.count import count
from deepreshape.errors import UsageError
from deepreshape.optimize.deepreduce import cull, reuse, scale_channels, thin
from deepreshape.pi.records import (
    link_key,
    parse_link,
    prediction_check,
    prediction_text,
    read_results,
    write_result,
)
from deepreshape.spec import relu_slots
from deepreshape.zoo import parse

SMALL = "resnet18-m2-d1,1,1,1"  # on digits: stages at 16x16, 8x8, 4x4, 2x2


# --------------------------------------------------------------------------- display names


def test_method_edits_get_one_short_tag_each() -> None:
    s = parse("resnet18")
    assert s.short_name() == "resnet18"
    assert cull(s, [1]).short_name() == "resnet18 +cull s1"
    assert thin(cull(s, [1])).short_name() == "resnet18 +cull s1 +thin"
    assert reuse(thin(cull(s, [1])), 4).short_name() == "resnet18 +cull s1 +thin +reuse x4"
    assert thin(s).short_name() == "resnet18 +thin"  # the stem stays: still DeepReDuce's thinning
    assert scale_channels(thin(s), 0.5).short_name() == "resnet18-m32 +thin"
    assert cull(s, [1, 2, 4]).short_name() == "resnet18 +cull s1,s2,s4"  # a criticality probe
    one = s.with_slots({"stage2.block1.relu1": "identity"})
    assert one.short_name() == "resnet18 +linearized 1 slot"
    # linearizing the stem only is not thinning
    assert s.with_slots({"stem.relu": "identity"}).short_name() == "resnet18 +linearized 1 slot"


def test_snl_names_carry_the_networks_relus() -> None:
    s = parse(SMALL, dataset="digits")
    off = {a.address: "identity" for a in relu_slots(s)}
    pixel = s.with_slots({**off, "stage1.block1.relu2": "mask:pixel:7"})
    assert pixel.short_name() == f"{SMALL} +SNL pixel 7"
    # one whole channel of a 2x2 slot in stage4: 4 ReLUs
    chan = s.with_slots({**off, "stage4.block1.relu1": "mask:channel:1"})
    assert chan.short_name() == f"{SMALL} +SNL channel 4"
    both = s.with_slots({**off, "stage1.block1.relu2": "mask:pixel:7",
                         "stage4.block1.relu1": "mask:channel:1"})
    assert both.short_name() == f"{SMALL} +SNL channel+pixel 11"
    # untouched slots count in full: 2x2x16 = 64 for stage4.block1.relu2
    part = s.with_slots({**off, "stage1.block1.relu2": "mask:pixel:7",
                         "stage4.block1.relu2": "relu"})
    assert part.short_name() == f"{SMALL} +SNL pixel 71" and count(part).relus == 71


def test_an_snl_spec_keeps_its_exact_form_in_describe_and_a_short_name() -> None:
    s = parse("hrn-2x5x2x-m4", dataset="digits")
    slots = {x.address: f"mask:pixel:{1 + i % (x.numel - 1)}" for i, x in enumerate(relu_slots(s))}
    masked = s.with_slots(slots)
    assert len(masked.describe()) > 300 and "stage4.block2.relu2=mask:pixel:" in masked.describe()
    relus = count(masked).relus
    assert masked.short_name() == f"hrn-2x5x2x-m4 +SNL pixel {relus:,}"
    assert len(masked.short_name()) < 40


# --------------------------------------------------------------------------- links


def test_link_keys_name_presets_custom_links_and_hosts() -> None:
    assert link_key(None) == "loopback" and link_key(None, "two hosts") == "hosts"
    assert parse_link("wan") == "wan" and parse_link("LAN") == "lan"
    assert parse_link("100mbit:10ms") == "100mbit-10ms" == parse_link("100mbit-10ms")
    assert parse_link("1gbit:0.5ms") == "1gbit-0.5ms" and parse_link("inf:5ms") == "inf-5ms"
    assert link_key({"rate_bps": 400e6, "rtt_s": 0.04}) == "wan"  # the preset, however given
    with pytest.raises(UsageError, match="unknown link 'moon'.*loopback, hosts, lan, wan"):
        parse_link("moon")


def _record(latency: float, link: dict | None, predicted: float | None = None,
            calibrated: dict | None = None) -> dict:
    rec = {"protocol": "cheetah", "latency_s": latency, "total_bytes": 2_000_000,
           "bytes_sent": 1_200_000, "bytes_recv": 800_000,
           "deployment": {"mode": "loopback, two local processes", "link": link}}
    if predicted is not None:
        rec["predicted"] = {"spu": {"latency_s": predicted, "bytes": 2_000_000, "link": calibrated}}
    return rec


WAN = {"rate_bps": 400e6, "rtt_s": 0.04, "describe": "400 Mbit/s, 40 ms RTT"}


def test_each_link_keeps_its_own_result(tmp_path: Path) -> None:
    a = write_result(tmp_path, _record(0.4, None))
    b = write_result(tmp_path, _record(2.5, WAN))
    assert (a.name, b.name) == ("pi-cheetah-loopback.json", "pi-cheetah-wan.json")
    write_result(tmp_path, _record(0.5, None))  # measuring loopback again replaces loopback only
    found, notes = read_results(tmp_path)
    assert list(found) == ["cheetah-loopback", "cheetah-wan"] and not notes
    assert found["cheetah-loopback"]["latency_s"] == 0.5 and found["cheetah-wan"]["latency_s"] == 2.5
    assert json.loads(b.read_text())["link"] == "wan"


def test_an_older_single_pi_json_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "pi.json").write_text(json.dumps(_record(3.0, WAN)))
    found, _ = read_results(tmp_path)
    assert list(found) == ["cheetah-wan"] and found["cheetah-wan"]["latency_s"] == 3.0
    write_result(tmp_path, _record(2.0, WAN))  # a newer result for the same link wins
    write_result(tmp_path, _record(0.3, None))
    found, _ = read_results(tmp_path)
    assert {k: v["latency_s"] for k, v in found.items()} == {"cheetah-loopback": 0.3,
                                                             "cheetah-wan": 2.0}
    (tmp_path / "pi-cheetah-lan.json").write_text("{broken")
    found, notes = read_results(tmp_path)
    assert len(found) == 2 and len(notes) == 1 and "pi-cheetah-lan.json: unreadable" in notes[0]


def test_prediction_names_its_link_and_flags_a_measurement_far_from_it() -> None:
    near = prediction_text(_record(0.55, None, predicted=0.5))
    assert near.startswith("predicted by the cost model (calibrated over loopback): 0.500 s")
    assert "latency +10%" in near and "more than 25%" not in near
    far = prediction_text(_record(2.5, WAN, predicted=0.5))
    assert "\nthe measurement is more than 25% away from it (latency +400%" in far
    assert "measured over wan, calibrated over loopback" in far
    assert "deepreshape pi --calibrate --link wan" in far
    on_wan = prediction_check(_record(2.5, WAN, predicted=2.4, calibrated=WAN))
    assert on_wan["calibrated_over"] == "wan" and not on_wan["far"]
    assert on_wan["latency_off"] == pytest.approx(2.5 / 2.4 - 1)
    assert prediction_text(_record(1.0, None)) is None
    # measured over an emulated link: the prediction carries the link model's term
    carried = _record(2.5, WAN, predicted=2.4)
    carried["predicted"]["spu"].update(link_s=1.9, target_link="wan (400 Mbit/s, 40 ms RTT)")
    text = prediction_text(carried)
    assert text.startswith("predicted by the cost model (calibrated over loopback, plus the "
                           "link model's 1.90 s for wan (400 Mbit/s, 40 ms RTT)): 2.400 s")
    assert "more than 25%" not in text


def test_a_measurement_over_a_link_stores_the_link_models_prediction() -> None:
    from deepreshape.pi.costs import linkcost
    from deepreshape.pi.linkprofile import LinkProfile
    from deepreshape.pi.measure import _predicted
    from deepreshape.zoo import parse

    spec = parse("resnet18-m8-d1,1,1,1", dataset="digits")
    wan = LinkProfile(400e6, 0.04)
    over = _predicted(spec, "cheetah", None, "owned", wan)["spu"]
    loop = _predicted(spec, "cheetah", None, "owned")["spu"]
    assert over["link_s"] > 0
    assert over["link_s"] == pytest.approx(linkcost.predict(spec, wan, weights="owned")["link_s"])
    assert over["latency_s"] == pytest.approx(loop["latency_s"] + over["link_s"])
    assert loop["link_s"] == 0 and over["bytes"] == loop["bytes"]
