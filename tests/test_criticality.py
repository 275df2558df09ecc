"""Stagewise criticality: the paper's Tables 5 and 6, scoring input, stage-only specs, CLI,
and the whole method end to end on digits."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pytest

from deepreshape import count, parse
from deepreshape.cli.main import main
from deepreshape.errors import UsageError
from deepreshape.optimize.criticality import (
    accuracy_noise,
    criticality,
    criticality_metric,
    criticality_order,
    load_accuracies,
    noise_warning,
    score,
    stage_only,
    unresolved_pairs,
)
from deepreshape.options import RunOptions
from deepreshape.rundir.run import load_run
from deepreshape.spec import relu_slots
from deepreshape.training import Recipe, train

# Transcribed from the paper (App. A): network, printed stage ReLUs (K), KD accuracies (%),
# printed C_k. The metric is scored with the EXACT counts of the named networks; the printed
# K values are those counts rounded to 10 ReLUs.
TABLE5 = [
    ("HRN-2x7x2x", (81.92, 32.77, 57.34, 28.67),
     (53.39, 61.59, 69.82, 63.40), (0.00, 6.42, 12.37, 7.91)),
    ("HRN-3x7x2x", (81.92, 49.15, 86.02, 43.01),
     (53.29, 65.26, 70.77, 64.17), (0.00, 9.11, 12.80, 8.36)),
    ("HRN-4x7x2x", (81.92, 65.54, 114.69, 57.34),
     (49.42, 66.47, 72.16, 64.77), (0.00, 12.72, 16.32, 11.56)),
    ("HRN-5x7x2x", (81.92, 81.92, 143.36, 71.68),
     (48.36, 67.59, 72.18, 65.35), (0.00, 14.13, 16.83, 12.60)),
    ("HRN-6x7x2x", (81.92, 98.30, 172.03, 86.02),
     (48.48, 68.06, 72.73, 65.75), (0.00, 14.20, 16.91, 12.64)),
    ("HRN-7x7x2x", (81.92, 114.69, 200.70, 100.35),
     (52.40, 68.29, 73.16, 65.53), (0.00, 11.40, 14.32, 9.51)),
    ("HRN-2x6x2x", (81.92, 32.77, 49.15, 24.58),
     (53.19, 62.00, 69.51, 63.25), (0.00, 6.90, 12.43, 8.04)),
    ("HRN-3x6x2x", (81.92, 49.15, 73.73, 36.86),
     (52.80, 65.64, 70.96, 64.09), (0.00, 9.78, 13.44, 8.77)),
    ("HRN-4x6x2x", (81.92, 65.54, 98.30, 49.15),
     (53.32, 66.03, 71.54, 64.82), (0.00, 9.48, 13.22, 8.76)),
    ("HRN-5x6x2x", (81.92, 81.92, 122.88, 61.44),
     (51.64, 67.27, 71.50, 64.94), (0.00, 11.48, 14.18, 9.97)),
    ("HRN-6x6x2x", (81.92, 98.30, 147.46, 73.73),
     (50.59, 67.94, 72.59, 65.39), (0.00, 12.58, 15.51, 10.95)),
    ("HRN-7x6x2x", (81.92, 114.69, 172.03, 86.02),
     (49.64, 68.57, 72.84, 65.16), (0.00, 13.58, 16.18, 11.36)),
    ("HRN-2x5x2x", (81.92, 32.77, 40.96, 20.48),
     (53.05, 61.76, 68.29, 62.58), (0.00, 6.82, 11.75, 7.71)),
    ("HRN-3x5x2x", (81.92, 49.15, 61.44, 30.72),
     (52.61, 65.71, 69.93, 63.42), (0.00, 9.97, 12.98, 8.51)),
    ("HRN-4x5x2x", (81.92, 65.54, 81.92, 40.96),
     (52.33, 66.89, 70.85, 63.94), (0.00, 10.86, 13.61, 8.95)),
    ("HRN-5x5x2x", (81.92, 81.92, 102.40, 51.20),
     (51.16, 67.47, 71.69, 64.67), (0.00, 11.98, 14.85, 10.26)),
    ("HRN-6x5x2x", (81.92, 98.30, 122.88, 61.44),
     (52.10, 68.08, 71.85, 64.89), (0.00, 11.59, 14.10, 9.59)),
    ("HRN-7x5x2x", (81.92, 114.69, 143.36, 71.68),
     (51.93, 67.89, 72.87, 65.23), (0.00, 11.45, 14.79, 9.86)),
    ("HRN-2x5x3x", (81.92, 32.77, 40.96, 30.72),
     (53.68, 61.30, 68.17, 63.83), (0.00, 5.97, 11.17, 7.99)),
    ("HRN-3x5x3x", (81.92, 49.15, 61.44, 46.08),
     (52.89, 65.10, 70.14, 64.32), (0.00, 9.30, 12.93, 8.74)),
    ("HRN-4x5x3x", (81.92, 65.54, 81.92, 61.44),
     (50.62, 66.06, 70.13, 65.58), (0.00, 11.52, 14.33, 11.21)),
    ("HRN-5x5x3x", (81.92, 81.92, 102.40, 76.80),
     (52.41, 67.55, 70.97, 65.59), (0.00, 11.12, 13.42, 9.73)),
    ("HRN-6x5x3x", (81.92, 98.30, 122.88, 92.16),
     (50.45, 67.61, 71.29, 65.87), (0.00, 12.45, 14.88, 11.23)),
    ("HRN-7x5x3x", (81.92, 114.69, 143.36, 107.52),
     (50.31, 67.95, 71.87, 65.58), (0.00, 12.66, 15.23, 11.01)),
    ("HRN-2x9x2x", (81.92, 32.77, 73.73, 36.86),
     (53.22, 61.65, 70.28, 64.25), (0.00, 6.60, 12.63, 8.57)),
    ("HRN-2x6x3x", (81.92, 32.77, 49.15, 36.86),
     (52.85, 61.44, 68.76, 64.59), (0.00, 6.73, 12.11, 9.12)),
]
TABLE6 = [
    ("R18(m=16)-2x2x2x", (81.92, 32.77, 16.38, 8.19),
     (52.67, 62.10, 64.64, 59.70), (0.00, 7.39, 9.84, 6.07)),
    ("R18(m=32)-2x2x2x", (163.84, 65.54, 32.77, 16.38),
     (60.19, 66.47, 67.28, 62.22), (0.00, 4.69, 5.55, 1.67)),
    ("R18(m=64)-2x2x2x", (327.68, 131.07, 65.54, 32.77),
     (63.13, 68.32, 70.29, 63.47), (0.00, 3.69, 5.34, 0.27)),
    ("R18(m=128)-2x2x2x", (655.36, 262.14, 131.07, 65.54),
     (64.15, 70.56, 72.04, 64.58), (0.00, 4.34, 5.61, 0.32)),
    ("R18(m=256)-2x2x2x", (1310.72, 524.29, 262.14, 131.07),
     (65.22, 72.43, 73.77, 65.77), (0.00, 4.65, 5.79, 0.39)),
    ("R18(m=16)-2x2x2x", (81.92, 32.77, 16.38, 8.19),
     (52.67, 62.10, 64.64, 59.70), (0.00, 7.39, 9.84, 6.07)),
    ("R18(m=16)-3x3x3x", (81.92, 49.15, 36.86, 27.65),
     (53.07, 65.67, 67.96, 63.43), (0.00, 9.59, 11.57, 8.21)),
    ("R18(m=16)-4x4x4x", (81.92, 65.54, 65.54, 65.54),
     (52.20, 66.22, 69.16, 65.46), (0.00, 10.46, 12.66, 9.89)),
    ("R18(m=16)-5x5x5x", (81.92, 81.92, 102.40, 128.00),
     (50.65, 66.63, 70.64, 65.43), (0.00, 11.74, 14.46, 10.52)),
    ("R18(m=16)-6x6x6x", (81.92, 98.30, 147.46, 221.18),
     (51.53, 67.11, 72.09, 66.43), (0.00, 11.30, 14.49, 10.21)),
    ("R18(m=16)-7x7x7x", (81.92, 114.69, 200.70, 351.23),
     (49.07, 67.89, 73.33, 67.88), (0.00, 13.50, 16.74, 12.48)),
]

# Table 6 lists R18(m=16)-2x2x2x twice (BaseCh and StageCh groups): 37 rows, 36 networks.
ROWS = [pytest.param(*r, id=f"t5-{r[0]}") for r in TABLE5] + [
    pytest.param(*r, id=f"t6-{i}-{r[0]}") for i, r in enumerate(TABLE6)]


def zoo_name(paper_name: str) -> str:
    if paper_name.startswith("HRN-"):
        return "hrn-" + paper_name[4:]
    m = re.fullmatch(r"R18\(m=(\d+)\)-(\S+)", paper_name)
    assert m, paper_name
    return f"resnet18-m{m.group(1)}-{m.group(2)}"


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- Tables 5 and 6


def test_tables_have_every_row() -> None:
    assert len(TABLE5) == 26 and len(TABLE6) == 11
    assert len({r[0] for r in TABLE5 + TABLE6}) == 36


@pytest.mark.parametrize(("name", "printed_k", "kd", "printed_c"), ROWS)
def test_paper_tables_reproduce_to_two_decimals(name, printed_k, kd, printed_c) -> None:
    relus = [s.relus for s in count(parse(zoo_name(name), dataset="cifar100")).stages]
    # The printed counts are the exact ones (stem in stage1) rounded to 10 ReLUs.
    assert [round(r / 1000, 2) for r in relus] == list(printed_k)
    c = criticality_metric(kd, relus)
    assert [round(v, 2) for v in c] == list(printed_c)
    assert all(abs(a - b) <= 0.005 + 1e-9 for a, b in zip(c, printed_c, strict=True))
    # Paper: every network has S3 > S2 > S4 > S1, except the HRNs with alpha = 2
    # (S3 > S4 > S2 > S1).
    alpha2 = name.startswith("HRN-2x")
    assert criticality_order(c) == ((3, 4, 2, 1) if alpha2 else (3, 2, 4, 1))


def test_hrn_5x7x2x_example_and_rounded_counts_edge() -> None:
    relus = [s.relus for s in count(parse("hrn-5x7x2x", dataset="cifar100")).stages]
    assert relus == [81_920, 81_920, 143_360, 71_680]
    res = score([{"name": f"stage{k}", "relus": r, "acc": None, "kd_acc": a}
                 for k, (r, a) in enumerate(zip(relus, (48.36, 67.59, 72.18, 65.35), strict=True), 1)])
    assert [round(s.criticality, 2) for s in res.stages] == [0.00, 14.13, 16.83, 12.60]
    assert res.order == (3, 2, 4, 1) and res.order_text == "3,2,4,1"
    # Why exact counts: with the printed 57.34K, HRN-2x7x2x stage3 scores 12.3750 (-> 12.38),
    # with the exact 57,344 it scores 12.3749 (-> 12.37, as printed).
    kd = (53.39, 61.59, 69.82, 63.40)
    assert round(criticality_metric(kd, [81_920, 32_768, 57_344, 28_672])[2], 2) == 12.37
    assert criticality_metric(kd, [81_920, 32_770, 57_340, 28_670])[2] > 12.375


def test_order_ties_keep_stage_order() -> None:
    assert criticality_order([0.0, 5.0, 5.0, 0.0]) == (2, 3, 1, 4)


# --------------------------------------------------------------------------- input validation


def _stages(**change) -> list[dict]:
    rows = [{"name": f"stage{k}", "relus": 1000 * k, "acc": 50.0, "kd_acc": 50.0 + k}
            for k in range(1, 5)]
    rows[1].update(change)
    return rows


@pytest.mark.parametrize(("change", "message"), [
    ({"kd_acc": 101}, "kd_acc must be an accuracy"),
    ({"kd_acc": "70"}, "kd_acc must be an accuracy"),
    ({"kd_acc": float("nan")}, "kd_acc must be an accuracy"),
    ({"acc": -1}, "acc must be an accuracy"),
    ({"relus": 0}, "relus must be a positive integer"),
    ({"relus": 12.5}, "relus must be a positive integer"),
    ({"relus": True}, "relus must be a positive integer"),
    ({"name": ""}, "name must be a non-empty string"),
])
def test_bad_values_are_one_line_errors(change: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as e:
        score(_stages(**change))
    assert "\n" not in str(e.value) and "stages[1]" in str(e.value)


def test_missing_keys_and_shapes() -> None:
    rows = _stages()
    del rows[2]["kd_acc"]
    with pytest.raises(UsageError, match=r"stages\[2\] has no 'kd_acc'"):
        score(rows)
    with pytest.raises(UsageError, match="at least 2 stages"):
        score(_stages()[:1])
    with pytest.raises(UsageError, match="must be an object"):
        score([1, 2])
    # acc may be null (KD-only runs); it does not enter the metric.
    assert score(_stages(acc=None)).stages[1].acc is None


def test_accuracies_file_and_cli(tmp_path: Path, capsys) -> None:
    f = tmp_path / "acc.json"
    name, _, kd, printed = TABLE5[3]  # HRN-5x7x2x
    relus = [s.relus for s in count(parse(zoo_name(name), dataset="cifar100")).stages]
    f.write_text(json.dumps({"stages": [
        {"name": f"stage{k}", "relus": r, "acc": None, "kd_acc": a}
        for k, (r, a) in enumerate(zip(relus, kd, strict=True), 1)]}))
    assert load_accuracies(f).order == (3, 2, 4, 1)
    assert main(["criticality", "--accuracies", str(f)]) == 0
    out = capsys.readouterr().out
    assert "3,2,4,1" in out and "16.83" in out and "81,920" in out
    assert main(["criticality", "--accuracies", str(f), "--order-only"]) == 0
    order = capsys.readouterr().out.strip()
    assert order == "3,2,4,1"
    assert main(["design", "--order", order]) == 0  # `design` takes the printed order
    capsys.readouterr()
    assert main(["criticality", "--accuracies", str(f), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["order"] == [3, 2, 4, 1] and [round(s["criticality"], 2) for s in d["stages"]] == list(
        printed)


def test_noise_of_a_test_accuracy_is_binomial() -> None:
    assert accuracy_noise(50.0, 100) == pytest.approx(5.0)  # 100 * sqrt(.5 * .5 / 100)
    assert accuracy_noise(90.0, 10_000) == pytest.approx(0.3)  # 100 * sqrt(.09 / 10,000)
    assert accuracy_noise(100.0, 400) == pytest.approx(0.25)  # floor: one image, 100/400 %


def _four(kd: list[float], test_size: int):
    stages = [{"name": f"stage{k}", "relus": 1000, "acc": None, "kd_acc": a}
              for k, a in enumerate(kd, 1)]  # R = 1000: C_k = A_k - min A
    return score(stages, {"test_size": test_size})


def test_order_pairs_within_test_set_noise() -> None:
    # C = 0, 10, 20, 19 -> order 3,4,2,1 with gaps 1, 9, 10.
    res = _four([50.0, 60.0, 70.0, 69.0], 10_000)
    assert res.order_text == "3,4,2,1"
    # 10,000 images: sd(70%) = 0.458, sd(69%) = 0.462 -> gap 1 < 2 * 0.651; 9 and 10 resolved.
    pairs = unresolved_pairs(res, 10_000)
    assert [(a, b) for a, b, _, _ in pairs] == [(3, 4)]
    assert pairs[0][2] == pytest.approx(1.0) and pairs[0][3] == pytest.approx(
        math.hypot(accuracy_noise(70, 10_000), accuracy_noise(69, 10_000)))
    assert len(unresolved_pairs(res, 100)) == 3  # 100 images: sd ~ 4.6-5: nothing resolved
    assert unresolved_pairs(_four([50.0, 60.0, 80.0, 70.0], 10_000), 10_000) == []
    assert noise_warning(_four([50.0, 60.0, 80.0, 70.0], 10_000), 10_000) is None
    assert "stage3 vs stage4 (gap 1.00" in noise_warning(res, 10_000)


def test_accuracies_file_with_a_test_size_is_checked_for_noise(tmp_path: Path, capsys) -> None:
    f = tmp_path / "acc.json"
    stages = [{"name": f"stage{k}", "relus": 1000, "acc": None, "kd_acc": a}
              for k, a in enumerate([50.0, 60.0, 70.0, 69.0], 1)]
    f.write_text(json.dumps({"stages": stages, "test_size": 360}))
    with pytest.warns(UserWarning, match="3,4,2,1 is not resolved: stage3 vs stage4"):
        assert main(["criticality", "--accuracies", str(f)]) == 0
    assert "(not resolved: some C_k gaps are within test-set noise" in capsys.readouterr().out
    f.write_text(json.dumps({"stages": stages}))  # no test size: nothing to check against
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["criticality", "--accuracies", str(f)]) == 0
    assert "not resolved" not in capsys.readouterr().out


@pytest.mark.parametrize(("content", "message"), [
    ("{", "not valid JSON"),
    ("[]", "expected an object"),
    ('{"stages": [{"name": "s1", "relus": 5, "acc": 1}, {"name": "s2"}]}', "has no 'kd_acc'"),
    ('{"stages": [{"name": "s1", "relus": -5, "acc": 1, "kd_acc": 2},'
     ' {"name": "s2", "relus": 5, "acc": 1, "kd_acc": 2}]}', "relus must be a positive"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, capsys, content: str, message: str) -> None:
    f = tmp_path / "bad.json"
    f.write_text(content)
    assert main(["criticality", "--accuracies", str(f)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("deepreshape: error:")


@pytest.mark.parametrize("argv", [
    ["criticality"],
    ["criticality", "/no/such/run"],
    ["criticality", "--accuracies", "/no/such.json"],
])
def test_cli_usage_errors(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deepreshape: error:")


# --------------------------------------------------------------------------- the networks


@pytest.mark.parametrize("name", ["hrn-5x7x2x", "resnet18", "resnet50", "wrn22x8"])
def test_stage_only_keeps_exactly_one_stage(name: str) -> None:
    spec = parse(name, dataset="cifar100")
    full = count(spec)
    for k in range(1, len(spec.stages) + 1):
        c = count(stage_only(spec, k))
        assert c.relus == full.stages[k - 1].relus
        assert [s.relus for s in c.stages] == [
            r.relus if i == k else 0 for i, r in enumerate(full.stages, 1)]
        assert c.macs == full.macs  # linearizing changes no conv
        assert (c.stem_relus > 0) == (k == 1 and full.stem_relus > 0)
        kept = [s.address for s in relu_slots(spec) if str(stage_only(spec, k).slot_kind(s.address))
                != "identity"]
        assert all(s.stage == k for s in relu_slots(spec) if s.address in kept)


# --------------------------------------------------------------------------- end to end

TINY = "hrn-2x2x2x-m8-d1,1,1,1"
FAST = Recipe(epochs=1, batch_size=64, lr=0.05)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("crit") / "base"
    train(TINY, "digits", recipe=Recipe(epochs=2, batch_size=64, lr=0.05), out=out,
          options=RunOptions(quiet=True))
    return out


def test_criticality_end_to_end(baseline: Path, capsys) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = criticality(baseline, recipe=FAST, options=RunOptions(quiet=True))
    # One epoch on 360 test images: the order may be noise, and it says so exactly then.
    noisy = [w for w in caught if "within run-to-run noise" in str(w.message)]
    assert res.info["test_size"] == 360 and len(noisy) == (not res.info["order_resolved"])
    spec = load_run(baseline).spec
    exact = [s.relus for s in count(spec).stages]
    assert [s.relus for s in res.stages] == exact == [8 * 256 * 3, 16 * 64 * 2, 32 * 16 * 2, 64 * 4 * 2]
    assert sorted(res.order) == [1, 2, 3, 4]
    for k, s in enumerate(res.stages, 1):
        assert 0 <= s.acc <= 100 and 0 <= s.kd_acc <= 100
        for d, kd in ((Path(s.run), False), (Path(s.kd_run), True)):
            assert d == baseline / "criticality" / f"stage{k}{'-kd' if kd else ''}"
            run = load_run(d)
            assert run.config["method"] == {"name": "criticality", "stage": k, "kd": kd,
                                            "baseline": str(baseline)}
            assert (run.config["teacher"] == str(baseline)) == kd
            assert run.results["relus"] == exact[k - 1] and (d / "checkpoint.pt").exists()
    assert min(s.criticality for s in res.stages) == 0.0
    saved = json.loads((baseline / "criticality.json").read_text())
    assert saved["order"] == list(res.order) and saved["order_text"] == res.order_text
    assert not list(baseline.glob(".*.tmp"))
    # The saved file scores again to the same order, and the CLI reuses finished runs.
    with warnings.catch_warnings(record=True) as rescored:
        warnings.simplefilter("always")
        assert load_accuracies(baseline / "criticality.json").order == res.order
    assert [str(w.message) for w in rescored] == [str(w.message) for w in noisy]
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert main(["criticality", str(baseline), "--epochs", "1", "--batch-size", "64",
                     "--lr", "0.05", "--resume", "--quiet", "--order-only"]) == 0
    assert capsys.readouterr().out.strip() == res.order_text
    assert [str(w.message) for w in again] == [str(w.message) for w in noisy]
    # Without --resume an existing stage run is protected (one-line error, exit 2).
    assert main(["criticality", str(baseline), "--epochs", "1", "--batch-size", "64",
                 "--lr", "0.05", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_kd_only_to_another_dir_and_dataset_check(baseline: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "crit"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["criticality", str(baseline), "--no-plain", "--out", str(out), "--epochs",
                     "1", "--batch-size", "64", "--quiet", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    noisy = [w for w in caught if "within run-to-run noise" in str(w.message)]
    assert d["test_size"] == 360 and len(noisy) == (not d["order_resolved"])
    assert all(s["acc"] is None and s["run"] is None for s in d["stages"])
    assert sorted(p.name for p in out.iterdir()) == [
        "criticality.json", "stage1-kd", "stage2-kd", "stage3-kd", "stage4-kd"]
    assert json.loads((baseline / "criticality.json").read_text())["order"] == d["order"]
    assert main(["criticality", str(baseline), "--dataset", "cifar10", "--quiet"]) == 2
    assert "trained on digits" in capsys.readouterr().err
    assert main(["criticality", str(baseline), "--jobs", "0", "--out", str(tmp_path / "j")]) == 2
    assert "--jobs" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_jobs_match_serial(baseline: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        serial = criticality(baseline, recipe=FAST, out=tmp_path / "s", plain=False,
                             options=RunOptions(quiet=True))
        parallel = criticality(baseline, recipe=FAST, out=tmp_path / "p", plain=False, jobs=2,
                               options=RunOptions(quiet=True))
    noisy = [w for w in caught if "within run-to-run noise" in str(w.message)]
    assert len(noisy) == (not serial.info["order_resolved"]) + (not parallel.info["order_resolved"])
    assert [s.kd_acc for s in parallel.stages] == pytest.approx([s.kd_acc for s in serial.stages])
    assert parallel.order == serial.order
