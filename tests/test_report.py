"""`pareto` and `report`: frontier, files that agree with the runs, peers, defensive reading."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest

from deepreshape.cli.main import main
from deepreshape.data import load_dataset
from deepreshape.errors import UsageError
from deepreshape.options import RunOptions
from deepreshape.reports import (
    PEER_SETS,
    criticality_summary,
    find_runs,
    load_peers,
    pareto,
    pareto_frontier,
    pi_summary,
    report,
)
from deepreshape.training import Recipe, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PI = {"m4": {"protocol": "SEMI2K", "latency_s": 0.42, "bytes_sent": 1_200_000, "bytes_recv": 800_000,
             "per_kind": {"relu": {"time_s": 0.3, "bytes": 1_500_000},
                          "conv": {"time_s": 0.1, "bytes": 400_000},
                          "other": {"time_s": 0.02, "bytes": 100_000}}},
      "m8": {"protocol": "SEMI2K", "latency_s": 0.9, "bytes_sent": 3_000_000, "bytes_recv": 2_000_000}}
PI_WAN = {"protocol": "SEMI2K", "latency_s": 2.5, "total_bytes": 2_000_000, "link": "wan",
          "deployment": {"link": {"rate_bps": 4e8, "rtt_s": 0.04, "describe": "400 Mbit/s, 40 ms RTT"}},
          "predicted": {"spu": {"latency_s": 0.5, "bytes": 2_000_000, "link": None}},
          "per_kind": {"relu": {"time_s": 2.0, "bytes": 1_500_000},
                       "conv": {"time_s": 0.4, "bytes": 400_000}}}
CRIT = {"stages": [{"name": f"stage{k}", "relus": r, "acc": a - 2, "kd_acc": a, "criticality": c}
                   for k, r, a, c in ((1, 2048, 52.0, 0.0), (2, 1024, 63.0, 10.2),
                                      (3, 512, 68.0, 15.9), (4, 256, 60.0, 7.9))],
        "order": [3, 2, 4, 1]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny runs of different widths (1 epoch, 256 images), pi.json on two of them."""
    root = tmp_path_factory.mktemp("runs")
    data = load_dataset("digits", limit=256)
    for m in (2, 4, 8):
        train(f"resnet18-m{m}-d1,1,1,1", data, recipe=Recipe(epochs=1, batch_size=64), out=root / f"m{m}",
              options=RunOptions(quiet=True))
    # m4: an older single-result pi.json (loopback) and a WAN result; m8: loopback only
    (root / "m4" / "pi.json").write_text(json.dumps(PI["m4"]))
    (root / "m4" / "pi-semi2k-wan.json").write_text(json.dumps(PI_WAN))
    (root / "m8" / "pi-semi2k-loopback.json").write_text(json.dumps(PI["m8"]))
    (root / "m4" / "criticality.json").write_text(json.dumps(CRIT))
    return root


def results_of(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    h, w, channels = imread(path).shape
    assert h > 200 and w > 200 and channels in (3, 4)


# --------------------------------------------------------------------------- frontier


def test_frontier_on_hand_made_points() -> None:
    xs = [1, 2, 2, 3, 4, 4, 5, 0.5]
    ys = [10, 20, 15, 20, 30, 30, 29, 5]
    # (2,15): same cost, less accurate; (3,20): costs more for the same accuracy;
    # (4,30) twice: equal points share the frontier; (5,29) dominated by (4,30).
    assert pareto_frontier(xs, ys) == [True, True, False, False, True, True, False, True]
    assert pareto_frontier([], []) == []
    assert pareto_frontier([7], [1.0]) == [True]
    with pytest.raises(ValueError):
        pareto_frontier([1, 2], [1])


def test_frontier_matches_the_definition_on_random_points() -> None:
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 25)
        xs = [rng.randint(0, 8) for _ in range(n)]
        ys = [rng.randint(0, 8) for _ in range(n)]
        want = [not any(xs[j] <= xs[i] and ys[j] >= ys[i] and (xs[j], ys[j]) != (xs[i], ys[i])
                        for j in range(n)) for i in range(n)]
        assert pareto_frontier(xs, ys) == want


# --------------------------------------------------------------------------- pareto


def test_pareto_relus_writes_png_csv_json_with_the_runs_numbers(runs: Path, tmp_path: Path) -> None:
    res = pareto([runs], x="relus", peers="cifar100", out=tmp_path / "p.png")
    assert_png(res.png)
    data = json.loads(res.json.read_text())
    assert len(data["runs"]) == 3 and data["x"] == "relus"
    for row in data["runs"]:
        r = results_of(Path(row["run"]))
        assert (row["x"], row["acc"], row["arch"]) == (r["relus"], r["final_acc"], r["arch"])
    want = pareto_frontier([r["x"] for r in data["runs"]], [r["acc"] for r in data["runs"]])
    assert [r["on_frontier"] for r in data["runs"]] == want
    assert data["frontier"] == [r.run for r in res.frontier] and data["frontier"]
    assert data["peers"]["dataset"] == "cifar100" and data["peers"]["shown"]
    assert {m["method"] for m in data["peers"]["methods"]} >= {"SNL", "DeepReDuce", "Sphynx"}
    rows = list(csv.DictReader(res.csv.open()))
    own = [r for r in rows if r["kind"] == "run"]
    assert [(int(r["relus"]), float(r["acc"])) for r in own] == [(r["x"], r["acc"]) for r in data["runs"]]
    peer_rows = [r for r in rows if r["kind"] == "peer"]
    assert len(peer_rows) == sum(len(m["points"]) for m in data["peers"]["methods"])
    assert all(r["source"] and r["convention"] for r in peer_rows)
    assert any("not a like-for-like" in n for n in res.notes)  # digits runs vs CIFAR-100 points


def test_pareto_cli_json_for_macs_and_auto_peers(runs: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    assert main(["pareto", str(runs), "--x", "macs", "--out", str(tmp_path / "m.png"), "--json"]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert [r["x"] for r in data["runs"]] == [results_of(Path(r["run"]))["macs"] for r in data["runs"]]
    assert data["peers"] is None  # auto: no published points for digits
    assert data == json.loads((tmp_path / "m.json").read_text())
    assert_png(tmp_path / "m.png")


def test_latency_plots_one_link_and_never_mixes_links(runs: Path, tmp_path: Path) -> None:
    res = pareto([runs], x="latency", peers="cifar100", out=tmp_path / "lat.png")
    # default: the link most runs were measured over (loopback: m4's older pi.json, m8's file)
    assert (res.protocol, res.link) == ("semi2k", "loopback")
    assert {Path(r.run).name: r.x for r in res.rows} == {"m4": 0.42, "m8": 0.9}
    assert [Path(r).name for r, _ in res.skipped] == ["m2"]
    assert res.skipped[0][1] == "no secure-inference result over loopback (semi2k)"
    assert any("left out: semi2k-wan (1 run)" in n for n in res.notes)
    assert any("only with --x relus" in n for n in res.notes)
    data = json.loads(res.json.read_text())
    assert not data["peers"]["shown"] and data["link"] == "loopback"
    assert data["x_label"] == "online latency over loopback, semi2k (s)"
    rows = list(csv.DictReader(res.csv.open()))
    assert [(r["protocol"], r["link"], float(r["latency"])) for r in rows] == [
        ("semi2k", "loopback", 0.42), ("semi2k", "loopback", 0.9)]
    assert_png(res.png)
    wan = pareto([runs], x="latency", link="400mbit:40ms", out=tmp_path / "wan.png")
    assert wan.link == "wan" and [(Path(r.run).name, r.x) for r in wan.rows] == [("m4", 2.5)]
    assert wan.notes[-1] == ("skipped 2 of 3 runs: no secure-inference result over wan "
                             "(semi2k) (2: m2, m8)")
    res = pareto([runs / "m4", runs / "m8"], x="bytes", peers="none", out=tmp_path / "b.png")
    assert [r.x for r in res.rows] == [2_000_000, 5_000_000]  # sent + received
    assert [r.on_frontier for r in res.rows] == pareto_frontier([2, 5], [r.acc for r in res.rows])
    with pytest.raises(UsageError, match="none of the 3 runs.*over lan.*measured: "
                       "semi2k-loopback, semi2k-wan"):
        pareto([runs], x="latency", link="lan", out=tmp_path / "lan.png")
    with pytest.raises(UsageError, match="--link and --protocol .* --x latency or --x bytes"):
        pareto([runs], x="relus", link="wan", out=tmp_path / "r.png")


def test_runs_are_found_recursively_and_broken_ones_skipped(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "all"
    shutil.copytree(runs / "m2", root / "m2", ignore=shutil.ignore_patterns("checkpoint.pt"))
    nested = root / "m2" / "reduce" / "thin"  # method outputs live inside their baseline
    nested.mkdir(parents=True)
    shutil.copy(runs / "m2" / "config.json", nested)
    (nested / "results.json").write_text(json.dumps({**results_of(runs / "m2"), "final_acc": 99.0}))
    assert find_runs([root]) == [root / "m2", nested]
    (nested / "results.json").write_text("{broken")
    res = pareto([root], out=tmp_path / "r.png")
    assert [r.label for r in res.rows] == ["m2"] and "broken" in res.skipped[0][1]


def test_peers_for_every_data_set_have_sources_and_conventions() -> None:
    for dataset in PEER_SETS:
        series = load_peers(dataset)
        assert series and any(s.method == "SNL" for s in series)
        for s in series:
            assert s.source and s.points and s.convention in ("stem counted", "stem not counted")
            assert all(r > 0 and 0 < a < 100 for r, a in s.points)
    snl = next(s for s in load_peers("cifar100") if s.method == "SNL")
    assert snl.convention == "stem not counted" and "stem not counted" in snl.label
    assert (180_000, 77.65) in snl.points
    assert load_peers("none") == []


@pytest.mark.parametrize("kw, match", [
    ({"x": "flops"}, "unknown --x"),
    ({"peers": "imagenet"}, "unknown --peers"),
    ({"out": "plot.svg"}, "--out must name a .png"),
])
def test_bad_options_are_usage_errors(runs: Path, tmp_path: Path, kw: dict, match: str) -> None:
    kw.setdefault("out", tmp_path / "p.png")
    with pytest.raises(UsageError, match=match):
        pareto([runs], **kw)


def test_bad_inputs_are_one_line_and_exit_2(runs: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no run directories"):
        pareto([tmp_path / "empty"], out=tmp_path / "p.png")
    with pytest.raises(UsageError, match="none of the 1 runs"):
        pareto([runs / "m2"], x="latency", out=tmp_path / "p.png")
    out = str(tmp_path / "p.png")
    for argv in (["pareto", str(tmp_path / "empty"), "--out", out],
                 ["pareto", str(tmp_path / "missing"), "--out", out],
                 ["pareto", str(runs), "--x", "flops", "--out", out],
                 ["pareto", str(runs), "--peers", "mnist", "--out", out],
                 ["report", str(tmp_path / "missing")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("deepreshape: error:") and "\n" not in err
    assert not (tmp_path / "p.png").exists()


# --------------------------------------------------------------------------- report


def test_report_with_criticality_and_pi(runs: Path, tmp_path: Path) -> None:
    res = report(runs / "m4", out=tmp_path / "r")
    assert set(res.plots) == {"relu_distribution", "stagewise_normalized", "training",
                              "criticality", "pi_breakdown", "pi_breakdown-semi2k-wan"}
    for path in res.plots.values():
        assert_png(path)
    md = res.markdown.read_text()
    r = results_of(runs / "m4")
    for path in res.plots.values():
        assert f"]({path.name})" in md
    assert f"{r['relus']:,}" in md and f"{r['macs']:,}" in md and f"{r['final_acc']:.2f}%" in md
    assert "| stage2 | 32.00 | 64.00 |" in md  # Table 8: ReLUs halve per stage, FLOPs model flat
    assert "**3, 2, 4, 1**" in md and "0.42 s" in md and "2.000 MB" in md
    assert res.summary["final_acc"] == r["final_acc"]
    assert res.summary["pi"] == {
        "semi2k-loopback": {"protocol": "SEMI2K", "link": "loopback", "latency_s": 0.42,
                            "bytes": 2_000_000},
        "semi2k-wan": {"protocol": "SEMI2K", "link": "wan", "latency_s": 2.5, "bytes": 2_000_000}}
    # every latency with its link; the prediction with the link it was calibrated over
    assert "| SEMI2K | loopback | 0.42 s |" in md
    assert "| SEMI2K | wan (400 Mbit/s, 40 ms RTT) | 2.5 s |" in md
    assert "0.5 s (calibrated over loopback, measured +400% (> 25% off))" in md
    assert md.startswith("# Report: resnet18-m4-d1,1,1,1 on digits")


def test_report_cli_default_out_and_missing_files(runs: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(runs / "m2")]) == 0
    out = capsys.readouterr()
    folder = runs / "m2" / "report"
    assert "report.md" in out.out and "no criticality.json" in out.err
    assert "no secure-inference result" in out.err
    assert sorted(p.name for p in folder.glob("*.png")) == [
        "relu_distribution.png", "stagewise_normalized.png", "training.png"]
    assert "## Secure inference" not in (folder / "report.md").read_text()


# --------------------------------------------------------------------------- readers


def test_readers_take_keys_as_optional() -> None:
    assert pi_summary({"latency_s": 1.5})["bytes"] is None
    wrapped = pi_summary({"protocol": "CHEETAH", "secure": {"latency_s": 2.0, "total_bytes": 10}})
    assert (wrapped["protocol"], wrapped["latency_s"], wrapped["bytes"]) == ("CHEETAH", 2.0, 10)
    assert pi_summary({"latency_s": "fast"}) is None and pi_summary([1, 2]) is None
    crit = criticality_summary({"stages": [{"name": "s1", "C": 1.0}, {"name": "s2", "C": 3.0}]})
    assert crit["order"] == [2, 1] and crit["stages"][0]["relus"] is None
    assert criticality_summary({"stages": "?"}) is None


# --------------------------------------------------------------------------- names, methods, widths


def _method_run(src: Path, dst: Path, spec, method: dict, acc: float, extra: dict | None = None) -> Path:
    """A copy of `src` as if a method had made it: its spec, method tag and accuracy."""
    from deepreshape.count import count

    dst.mkdir(parents=True)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(spec=spec.to_dict(), arch=spec.describe(), method=method)
    (dst / "config.json").write_text(json.dumps(cfg))
    c = count(spec)
    (dst / "results.json").write_text(json.dumps({**results_of(src), "arch": spec.describe(),
                                                  "relus": c.relus, "macs": c.macs,
                                                  "final_acc": acc}))
    shutil.copy(src / "metrics.jsonl", dst)
    for name, data in (extra or {}).items():
        (dst / name).write_text(json.dumps(data))
    return dst


@pytest.fixture(scope="module")
def methods(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """m8 as a baseline, an SNL network with 30 masked slots, a ReLU-reuse net and a
    criticality probe that is the most accurate of all (it must stay off the frontier)."""
    from deepreshape.optimize.deepreduce import cull, reuse, thin
    from deepreshape.rundir.run import load_run
    from deepreshape.spec import relu_slots

    root = tmp_path_factory.mktemp("methods") / "deepreshape-demo" / "runs"
    base = load_run(runs / "m8")
    shutil.copytree(runs / "m8", root / "m8", ignore=shutil.ignore_patterns("pi*", "report"))
    spec = base.spec
    # 50 pixels in each of the 8 block slots, 100 in the stem: 500 ReLUs
    masked = spec.with_slots({s.address: f"mask:pixel:{100 if s.address == 'stem.relu' else 50}"
                              for s in relu_slots(spec)})
    history = [{"epoch": e, "relus": 5000 - 1000 * e, "lambda": 1e-3 * 1.1 ** e} for e in range(1, 5)]
    snl = {"budget": 500, "granularity": "pixel", "relus": 500, "mask_recipe": {"epochs": 300},
           "mask_phase": {"epochs_run": 4, "budget_reached": False, "final_lambda": 0.0015,
                          "history": history}}
    _method_run(runs / "m8", root / "m8" / "snl" / "pixel-500", masked,
                {"name": "snl", "budget": 500, "granularity": "pixel"}, 30.0, {"snl.json": snl})
    _method_run(runs / "m8", root / "m8" / "reduce" / "cull-s1-thin-reuse4",
                reuse(thin(cull(spec, [1])), 4), {"name": "deepreduce", "pipeline": "hrn"}, 20.0)
    _method_run(runs / "m8", root / "m8" / "criticality" / "stage3-kd", cull(spec, [1, 2, 4]),
                {"name": "criticality", "stage": 3, "kd": True}, 99.0)
    return root


def test_pareto_names_methods_and_a_table_in_100_columns(methods: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p.png"
    assert main(["pareto", str(methods.parent), "--peers", "cifar100", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert max(len(line) for line in cap.out.splitlines() if not line.startswith("wrote")) <= 100
    data = json.loads(out.with_suffix(".json").read_text())
    by = {Path(r["run"]).name: r for r in data["runs"]}
    assert by["pixel-500"]["name"] == "resnet18-m8-d1,1,1,1 +SNL pixel 500"
    assert by["pixel-500"]["method"] == "SNL" and len(by["pixel-500"]["arch"]) > 150
    assert by["cull-s1-thin-reuse4"]["name"] == "resnet18-m8-d1,1,1,1 +cull s1 +thin +reuse x4"
    assert by["cull-s1-thin-reuse4"]["method"] == "ReLU-reuse"
    assert by["stage3-kd"]["name"] == "resnet18-m8-d1,1,1,1 probe s3 KD"
    assert by["stage3-kd"]["method"] == "criticality probe" and not by["stage3-kd"]["on_frontier"]
    assert by["m8"]["method"] == "baseline"
    # labels are relative to the folder given: no run-root prefix
    assert by["pixel-500"]["label"] == "runs/m8/snl/pixel-500"
    assert "runs/m8/snl/pixel-500" in cap.out and "+SNL pixel 500" in cap.out
    assert sorted(r["number"] for r in data["runs"]) == [1, 2, 3, 4]
    # digits runs against CIFAR-100 points: said on stderr, in the title and in the JSON
    assert "runs are on digits, peer points on cifar100: not a like-for-like" in cap.err
    assert data["peers"]["cross_dataset"] and "cifar100, not digits" in cap.out
    assert_png(out)


def test_pareto_title_says_when_peers_are_on_another_data_set(methods: Path, tmp_path: Path) -> None:
    from deepreshape.reports.paretofigure import title

    res = pareto([methods], peers="cifar100", out=tmp_path / "p.png")
    assert "against published points on cifar100: a different data set" in title(res)
    res = pareto([methods], peers="none", out=tmp_path / "q.png")
    assert title(res) == "Accuracy vs ReLUs: 4 runs on digits"


def test_many_skipped_runs_make_one_note(methods: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    (methods / "m8" / "pi-cheetah-loopback.json").write_text(json.dumps(PI["m8"]))
    try:
        assert main(["pareto", str(methods), "--x", "latency", "--out", str(tmp_path / "l.png")]) == 0
    finally:
        (methods / "m8" / "pi-cheetah-loopback.json").unlink()
    err = capsys.readouterr().err
    assert all(len(line) <= 100 for line in err.splitlines())
    notes = [" ".join(n.split()) for n in err.split("note: ") if "skipped" in n]
    assert notes == ["skipped 3 of 4 runs: no secure-inference result over loopback (semi2k) "
                     "(3: m8/criticality/stage3-kd, m8/reduce/cull-s1-thin-reuse4, m8/snl/pixel-500)"]


def test_skipped_note_groups_reasons_and_names_a_few() -> None:
    from deepreshape.reports.paretoplot import skipped_note

    skipped = [(f"r{k}", "no final_acc") for k in range(5)] + [("x", "broken config")]
    assert skipped_note(skipped, 9, {"r0": "a/r0"}) == (
        "skipped 6 of 9 runs: no final_acc (5: a/r0, r1, r2, +2 more); broken config (1: x)")
    assert skipped_note([], 3, {}) is None


def test_report_of_an_snl_run_shows_the_mask_phase(methods: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    res = report(methods / "m8" / "snl" / "pixel-500", out=tmp_path / "r")
    md = res.markdown.read_text()
    assert md.startswith("# Report: resnet18-m8-d1,1,1,1 +SNL pixel 500 on digits\n")
    assert res.who == "resnet18-m8-d1,1,1,1 +SNL pixel 500 on digits"
    assert "| budget_reached (by training) | **no**" in md
    assert "| mask epochs used | 4 of at most 300 |" in md
    assert res.summary["snl"]["budget_reached"] is False and res.summary["snl"]["mask_epochs"] == 4
    assert "## Exact spec" in md and "stem.relu=mask:pixel:100,stage1.block1.relu1=mask:pixel:50" in md
    # three panels (mask phase, fine-tune loss, fine-tune accuracy) instead of two
    wide = imread(res.plots["training"]).shape[1]
    plain = imread(report(methods / "m8", out=tmp_path / "b").plots["training"]).shape[1]
    assert wide > 1.4 * plain


def test_point_numbers_do_not_overlap_each_other_or_markers() -> None:
    from deepreshape.reports.figures import figure
    from deepreshape.reports.paretofigure import ParetoRow, _number_points

    fig = figure(figsize=(6, 4))
    ax = fig.subplots()
    rows = [ParetoRow(f"r{k}", f"r{k}", "n", "a", "digits", "baseline", 1000 + k, 50.0, number=k + 1)
            for k in range(4)]  # four points on top of each other
    ax.scatter([r.x for r in rows], [r.acc for r in rows])
    ax.set_xlim(0, 2000)
    ax.set_ylim(0, 100)
    _number_points(ax, rows, 1.0)
    offsets = [t.xyann for t in ax.texts]
    assert [t.get_text() for t in ax.texts] == ["1", "2", "3", "4"]
    assert len(set(offsets)) == 4 and all(abs(dx) >= 4 or abs(dy) >= 4 for dx, dy in offsets)
