"""Sweep files: patterns, axes, the dependency graph, deterministic names, clean errors,
--dry-run counts, the shipped paper sweeps. Nothing here trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepreshape.cli.main import main
from deepreshape.count import count
from deepreshape.sweep import SweepError, expand_pattern, load, load_sweep, paper_names
from deepreshape.zoo import parse

SWEEP = """
name = "t"
dataset = "digits"
limit = 200
[recipe]
epochs = 1
batch_size = 64
lr = 0.05

[[experiment]]
name = "base"
arch = ["resnet18-m{2,4}-d1,1,1,1"]
seeds = [0, 1]
criticality = { plain = false }
snl = { budgets = [300, 600] }
eval = true

[[experiment]]
name = "kd"
arch = "hrn-{2..3}x2x2x-m2-d1,1,1,1"
recipe = { lr = [0.05, 0.1] }
teacher = "resnet18-m4-d1,1,1,1"
"""


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_patterns_expand_ranges_and_alternatives_as_a_product() -> None:
    assert expand_pattern("hrn-{2..4}x5x2x") == ["hrn-2x5x2x", "hrn-3x5x2x", "hrn-4x5x2x"]
    assert expand_pattern("wrn22x{2,4}") == ["wrn22x2", "wrn22x4"]
    assert expand_pattern("a{1..2}b{x,y}") == ["a1bx", "a1by", "a2bx", "a2by"]
    assert expand_pattern("resnet18") == ["resnet18"]
    with pytest.raises(ValueError, match="bad pattern"):
        expand_pattern("hrn-{2-4}x5x2x")


def test_points_axes_and_dependencies(tmp_path: Path) -> None:
    sw = load_sweep(_write(tmp_path, SWEEP))
    by = {}
    for p in sw.points:
        by.setdefault(p.method, []).append(p)
    # base: 2 archs x 2 seeds; kd: 2 archs x 2 lrs x the file's default seeds [0]
    assert len(by["train"]) == 2 * 2 + 2 * 2 * 1
    assert len(by["criticality"]) == 4 and len(by["eval"]) == 4 and len(by["snl"]) == 8
    ids = sw.by_id()
    for p in sw.points:  # every dependency exists and comes earlier
        for d in p.deps:
            assert d in ids and [q.id for q in sw.points].index(d) < [q.id for q in sw.points].index(p.id)
    snl = by["snl"][0]
    assert ids[snl.deps[0]].method == "train" and snl.run.startswith(snl.deps[0] + "/")
    kd = [p for p in by["train"] if p.experiment == "kd"]
    assert {p.settings["recipe"]["lr"] for p in kd} == {0.05, 0.1}
    teacher = ids[kd[0].deps[0]]
    assert teacher.arch == "resnet18-m4-d1,1,1,1" and teacher.seed == kd[0].seed
    assert kd[0].settings["teacher"] == teacher.id
    # the same file gives the same names; a changed setting gives another
    again = load_sweep(_write(tmp_path, SWEEP))
    assert [p.id for p in again.points] == [p.id for p in sw.points]
    other = load_sweep(_write(tmp_path, SWEEP.replace("epochs = 1", "epochs = 2"), "o.toml"))
    assert not {p.id for p in other.points} & {p.id for p in by["train"]}


@pytest.mark.parametrize("text, key", [
    ("dataset = 'digits'\n[[experiment]]\nname='e'\narch=['resnet18']\nepoch = 3\n", "'epoch'"),
    ("[[experiment]]\nname='e'\narch=['resnet99']\n", "'arch'"),
    ("[[experiment]]\nname='e'\narch='resnet18'\nrecipe={lrr=1}\n", "'recipe.lrr'"),
    ("[[experiment]]\nname='e'\narch='resnet18'\nsnl={budgets=[-1]}\n", "'snl.budgets'"),
    ("[[experiment]]\nname='e'\narch='resnet18'\nreduce={pipeline='hrn'}\n", "'reduce.order'"),
    ("[[experiment]]\nname='e'\narch='resnet18'\nteacher='wrn22x2'\n", "'teacher'"),
    ("[[experiment]]\nname='e'\narch='resnet18'\nrecipe={lr=-1}\n", "'recipe'"),
    ("dataset='mnist'\n[[experiment]]\narch='resnet18'\n", "'dataset'"),
])
def test_malformed_files_name_file_experiment_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and key in msg and "\n" not in msg
    if "name='e'" in text:
        assert "experiment 'e'" in msg


def test_cli_malformed_file_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    bad = _write(tmp_path, "[[experiment]\narch='resnet18'\n")
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "not valid TOML" in err
    unknown = _write(tmp_path, "[[experiment]]\nname='x'\narch='hrn-{2..3}x5y'\n", "u.toml")
    assert main(["sweep", str(unknown), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "experiment 'x'" in err and "'arch'" in err and "hrn-2x5y" in err
    assert main(["sweep", str(tmp_path / "none.toml")]) == 2
    assert "no such sweep file" in capsys.readouterr().err
    assert main(["sweep", "paper:fig99", "--dry-run"]) == 2
    assert "paper:fig4" in capsys.readouterr().err


def test_dry_run_table_of_a_large_grid_shows_the_first_rows_and_json_all(tmp_path: Path,
                                                                         capsys) -> None:
    from deepreshape.cli.sweep import STATUS_ROWS

    grid = 'name = "g"\ndataset = "digits"\n[[experiment]]\nname = "e"\n' \
           'arch = "hrn-{1..9}x{1..9}x{1..8}x"\n'  # 648 networks, one training each
    path = _write(tmp_path, grid)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [x for x in lines if x.startswith("hrn-")]
    assert len(shown) == STATUS_ROWS == 500
    assert "... 148 more points not shown; the same command with --json lists every one" in lines
    assert lines[-1].startswith("648 points on digits, about ")
    assert main(["sweep", str(path), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["points"]) == 648 and out["gpu_hours"] > 0
    assert [r["id"] for r in out["points"][:3]] == [x.split()[0] for x in shown[:3]]


def test_dry_run_counts_equal_count(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, SWEEP)
    assert main(["sweep", str(path), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["points"]) == len(load_sweep(path).points)
    for row in out["points"]:
        if row["method"] == "train":
            c = count(parse(row["arch"], dataset="digits"))
            assert (row["relus"], row["macs"], row["params"]) == (c.relus, c.macs, c.params)
            assert row["predicted_latency_s"] > 0
        if row["method"] == "snl":
            assert row["relus"] in (300, 600)
        if row["method"] == "criticality":  # plain = false: one KD training per stage
            assert row["trainings"] == 4
    # and against the `count` command itself
    assert main(["count", "resnet18-m4-d1,1,1,1", "--dataset", "digits", "--json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    row = next(r for r in out["points"] if r["arch"] == "resnet18-m4-d1,1,1,1")
    assert (row["relus"], row["macs"]) == (counted["relus"], counted["macs"])


def test_paper_sweeps_expand_at_both_scales() -> None:
    names = paper_names()
    assert names[:7] == ["paper:fig4", "paper:fig6", "paper:fig7", "paper:fig8", "paper:fig9",
                         "paper:table5", "paper:table6"]
    for name in names:
        for ds in ("cifar100", "tinyimagenet"):
            sw = load(name, dataset=ds)
            assert sw.dataset == ds and sw.points
        tiny = load(name, scale="tiny")
        full = load(name, dataset="cifar100")
        assert tiny.dataset == "digits"
        # the same grid shape: as many points per method
        per = lambda s: sorted((p.experiment, p.method) for p in s.points)  # noqa: E731
        assert per(tiny) == per(full), name


def test_list_shows_point_counts_and_gpu_hours(capsys) -> None:
    assert main(["sweep", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == paper_names()
    for r in rows:
        assert r["points"] == len(load(r["name"]).points) and r["gpu_hours"] > 0
    assert main(["sweep", "--list", "--scale", "tiny", "--json"]) == 0
    tiny = json.loads(capsys.readouterr().out)
    assert all(t["gpu_hours"] < r["gpu_hours"] / 1000 for t, r in zip(tiny, rows, strict=True))


DOCS = Path(__file__).resolve().parents[1] / "docs" / "sweeps.md"
README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(text: str, marker: str) -> str:
    start = text.index(marker)
    return text[start:text.index("```", start)].strip()


def test_docs_list_block_is_the_real_output(capsys) -> None:
    assert main(["sweep", "--list"]) == 0
    out = capsys.readouterr().out.strip()
    doc = _block_after(DOCS.read_text(), "$ deepreshape sweep --list")
    assert doc.splitlines()[1:] == out.splitlines()


def test_docs_study_dry_run_and_error_line(tmp_path: Path, capsys) -> None:
    import re

    study = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S).group(1)
    path = _write(tmp_path, study, "study.toml")
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("8 points on digits")
    assert out.count(" train ") == 2 and out.count(" snl ") == 2
    bad = _write(tmp_path, study.replace('"resnet18-m{2,4}-d1,1,1,1"', '"resnet99"'), "study.toml")
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    doc_err = _block_after(DOCS.read_text(), "deepreshape: error: study.toml").rstrip(". ")
    assert err.replace(str(tmp_path) + "/", "").startswith(doc_err)


def test_readme_tour_sweep_line(capsys) -> None:
    line = next(ln for ln in README.read_text().splitlines() if ln.startswith("deepreshape sweep"))
    cmd, claim = line.split("#", 1)
    assert "42 points" in claim
    assert main(cmd.split()[1:]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("42 points on cifar100") and len(out) == 42 + 3


def test_a_lost_worker_resumes_a_failure_does_not(tmp_path: Path) -> None:
    from deepreshape.sweep.state import SweepState

    sw = load_sweep(_write(tmp_path, SWEEP))
    root = tmp_path / "root"
    root.mkdir()
    state = SweepState.start(root, sw, "local", retry_failed=False)
    a, b, c = (p.id for p in sw.points[:3])
    state.mark(a, "failed", error="job 1 lost: killed", lost=True, attempts=1)
    state.mark(b, "failed", error="loss became NaN", attempts=1)
    state.mark(c, "running", attempts=1)
    again = SweepState.start(root, sw, "local", retry_failed=False)
    assert again.records[a]["state"] == "pending" and again.records[a]["resumed"]
    assert again.records[b]["state"] == "failed"
    assert again.records[c]["state"] == "pending" and again.records[c]["resumed"]
    retry = SweepState.start(root, sw, "local", retry_failed=True)
    assert retry.records[b]["state"] == "pending" and retry.records[b]["attempts"] == 1


@pytest.mark.parametrize("name", ["paper:table5", "paper:table6"])
def test_published_criticality_points_are_stages_of_the_swept_networks(name: str) -> None:
    sw = load(name, dataset="cifar100")
    published = sw.paper["cifar100"][0]["points"]
    stage_relus = {s.relus for p in sw.points if p.method == "train"
                   for s in count(parse(p.arch, dataset="cifar100")).stages}
    assert len(published) >= 4 * len([p for p in sw.points if p.method == "train"]) - 8
    assert {r for r, _ in published} <= stage_relus
    assert all(0 < acc < 100 for _, acc in published)


def test_paper_figure_draws_published_beside_ours(tmp_path: Path) -> None:
    from deepreshape.sweep.state import SweepState
    from deepreshape.sweep.table import _paper_figure

    paper = {"cifar100": [{"label": "Table 6", "source": "paper", "points": [[81920, 52.67]]}]}
    rows = [{"experiment": "e", "method": "criticality", "relus": 81920, "accuracy": 50.0}]
    state = SweepState(tmp_path, {"name": "t", "file": "my.toml", "dataset": "cifar100",
                                  "paper": paper}, {})
    path = _paper_figure(state, rows)
    assert path == tmp_path / "paper-figure.png" and path.stat().st_size > 1000
    state.info.update(dataset="digits")  # nothing published for digits, and not a shipped sweep
    assert _paper_figure(state, rows) is None
