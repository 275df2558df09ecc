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
from deepreshape.report import (
    PEER_SETS,
    criticality_summary,
    find_runs,
    load_peers,
    pareto,
    pareto_frontier,
    pi_summary,
    report,
)
from deepreshape.train import Recipe, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PI = {"m4": {"protocol": "SEMI2K", "latency_s": 0.42, "bytes_sent": 1_200_000, "bytes_recv": 800_000,
             "per_kind": {"relu": {"time_s": 0.3, "bytes": 1_500_000},
                          "conv": {"time_s": 0.1, "bytes": 400_000},
                          "other": {"time_s": 0.02, "bytes": 100_000}}},
      "m8": {"protocol": "SEMI2K", "latency_s": 0.9, "bytes_sent": 3_000_000, "bytes_recv": 2_000_000}}
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
        train(f"resnet18-m{m}-d1,1,1,1", data, recipe=Recipe(epochs=1, batch_size=64),
              out=root / f"m{m}", quiet=True)
    for name, pi in PI.items():
        (root / name / "pi.json").write_text(json.dumps(pi))
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


def test_latency_uses_pi_json_and_skips_runs_without_it(runs: Path, tmp_path: Path) -> None:
    res = pareto([runs], x="latency", peers="cifar100", out=tmp_path / "lat.png")
    assert {Path(r.run).name: r.x for r in res.rows} == {"m4": 0.42, "m8": 0.9}
    assert [Path(r).name for r, _ in res.skipped] == ["m2"]
    assert any("pi.json" in why for _, why in res.skipped)
    assert any("only with --x relus" in n for n in res.notes)
    assert not json.loads(res.json.read_text())["peers"]["shown"]
    assert_png(res.png)
    res = pareto([runs / "m4", runs / "m8"], x="bytes", peers="none", out=tmp_path / "b.png")
    assert [r.x for r in res.rows] == [2_000_000, 5_000_000]  # sent + received
    assert [r.on_frontier for r in res.rows] == pareto_frontier([2, 5], [r.acc for r in res.rows])


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
                              "criticality", "pi_breakdown"}
    for path in res.plots.values():
        assert_png(path)
    md = res.markdown.read_text()
    r = results_of(runs / "m4")
    for path in res.plots.values():
        assert f"]({path.name})" in md
    assert f"{r['relus']:,}" in md and f"{r['macs']:,}" in md and f"{r['final_acc']:.2f}%" in md
    assert "| stage2 | 32.00 | 64.00 |" in md  # Table 8: ReLUs halve per stage, FLOPs model flat
    assert "**3, 2, 4, 1**" in md and "0.42 s" in md and "2.000 MB" in md
    assert res.summary["final_acc"] == r["final_acc"] and res.summary["pi"]["bytes"] == 2_000_000


def test_report_cli_default_out_and_missing_files(runs: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(runs / "m2")]) == 0
    out = capsys.readouterr()
    folder = runs / "m2" / "report"
    assert "report.md" in out.out and "no pi.json" in out.err and "no criticality.json" in out.err
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
