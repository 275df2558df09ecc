"""Grids of any size (issue 21, item 3): a sweep's size is known before anything is built,
a sweep over --max-points is refused at once in bounded memory, and the dry run and the
planner price a grid's networks in bulk (design.space) with the per-point numbers."""

from __future__ import annotations

import json
import math
import random
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from deepreshape.cli.main import main
from deepreshape.count import count
from deepreshape.design import space
from deepreshape.pi.costs import costmodel
from deepreshape.sweep import (
    DEFAULT_MAX_POINTS,
    SweepTooLarge,
    expand_pattern,
    load,
    load_sweep,
)
from deepreshape.sweep.plan import dry_run, gpu_hours
from deepreshape.sweep.sweepfile import Point, Sweep, first_of_pattern, iter_pattern, pattern_size
from deepreshape.zoo import parse

HUGE = 'name = "typo"\n[[experiment]]\nname = "hrns"\narch = ["hrn-{1..400}x{1..400}x{1..388}x"]\n'
HUGE_POINTS = 400 * 400 * 388  # 62,080,000

MIXED = """
name = "mixed"
dataset = "cifar100"
seeds = [0, 1]
[recipe]
epochs = 2
[[experiment]]
name = "nets"
arch = ["resnet18-m{2,4}-d1,1,1,1", "hrn-{2..3}x{2,5}x2x-m2", "resnet50-m8", "resnet18",
        "wrn16x2", "regnetx-200mf", "hrn-2x2x2x-m2-s2", "hrn-2x3x2x-m2[stage1=identity]",
        "resnet34-convnext"]
criticality = { plain = false }
snl = { budgets = [300, 600] }
eval = true
pi = { protocol = ["cheetah", "semi2k"] }
"""


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- sizes


def test_pattern_size_is_computed_without_building_names() -> None:
    assert pattern_size("hrn-{1..400}x{1..400}x{1..400}x") == 64_000_000
    assert pattern_size("resnet18") == 1
    assert pattern_size("wrn{16,22}x{8..2}") == 2 * 7
    for p in ("hrn-{2..4}x{7,5}x2x", "m{3..1}-{a,b}", "plain"):
        assert list(iter_pattern(p)) == expand_pattern(p) and len(expand_pattern(p)) == pattern_size(p)
        assert first_of_pattern(p) == expand_pattern(p)[0]
    with pytest.raises(ValueError, match="bad pattern"):
        pattern_size("hrn-{2-4}x")


def test_a_62_million_point_grid_is_refused_at_once_in_bounded_memory(tmp_path: Path) -> None:
    path = _write(tmp_path, HUGE)
    load_sweep(_write(tmp_path, HUGE.replace("400}x{1..388", "2}x{1..2"), "warm.toml"))  # imports
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(SweepTooLarge) as e:
        load_sweep(path)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 0.5, seconds
    assert peak < 5_000_000, peak  # no object per point (62M points would be gigabytes)
    assert e.value.size == HUGE_POINTS
    msg = str(e.value)
    assert "\n" not in msg and f"{HUGE_POINTS:,} points" in msg and "--max-points" in msg
    assert f"limit of {DEFAULT_MAX_POINTS:,}" in msg and "experiment 'hrns'" in msg
    # one range of 10^9 values: sized, not walked
    wide = _write(tmp_path, '[[experiment]]\narch = "resnet18-m{1..1000000000}"\n', "w.toml")
    t0 = time.perf_counter()
    with pytest.raises(SweepTooLarge, match="1,000,000,000 points"):
        load_sweep(wide)
    assert time.perf_counter() - t0 < 0.5


def test_cli_refuses_over_max_points_with_one_line_exit_2(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, HUGE)
    t0 = time.perf_counter()
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert time.perf_counter() - t0 < 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "62,080,000 points" in err
    assert f"--max-points {HUGE_POINTS}" in err
    small = _write(tmp_path, MIXED.replace("seeds = [0, 1]", "seeds = [0]"), "m.toml")
    n = len(load_sweep(small).points)
    assert main(["sweep", str(small), "--dry-run", "--max-points", str(n - 1)]) == 2
    assert f"{n:,} points" in capsys.readouterr().err
    assert main(["sweep", str(small), "--dry-run", "--json", "--max-points", str(n)]) == 0
    assert len(json.loads(capsys.readouterr().out)["points"]) == n
    assert main(["sweep", str(small), "--dry-run", "--max-points", "0"]) == 2
    assert "--max-points must be a positive integer" in capsys.readouterr().err


def test_size_counts_seeds_recipe_axes_and_every_methods_points(tmp_path: Path) -> None:
    text = """
dataset = "digits"
seeds = [0, 1]
[[experiment]]
name = "a"
arch = "resnet18-m{2,4}-d1,1,1,1"
recipe = { lr = [0.05, 0.1], epochs = [1, 2, 3] }
snl = { budgets = [100, 200] }
eval = { of = ["train", "snl"] }
[[experiment]]
name = "b"
arch = "hrn-{2..3}x2x2x-m2-d1,1,1,1"
teacher = "resnet18-m4-d1,1,1,1"
criticality = true
"""
    path = _write(tmp_path, text)
    # a: 2 nets x 2 seeds x 6 recipes x (train + 2 snl + 3 eval); b: 2 x 2 x 1 x 2
    want = 2 * 2 * 6 * 6 + 2 * 2 * 2
    assert len(load_sweep(path).points) == want
    assert len(load_sweep(path, max_points=want).points) == want
    assert len(load_sweep(path, max_points=None).points) == want
    with pytest.raises(SweepTooLarge, match=f"{want:,} points") as e:
        load_sweep(path, max_points=want - 1)
    assert "144 points each" not in str(e.value) and "6 points each" in str(e.value)
    with pytest.raises(SweepTooLarge):
        load(str(path), max_points=10)


# --------------------------------------------------------------------------- bulk pricing


def _same_rows(bulk: list[dict], slow: list[dict]) -> None:
    assert len(bulk) == len(slow)
    for a, b in zip(bulk, slow, strict=True):
        la, lb = a.pop("predicted_latency_s"), b.pop("predicted_latency_s")
        assert a == b
        assert (la is None) == (lb is None), a["id"]
        if la is not None:
            assert math.isclose(la, lb, rel_tol=1e-9), (a["id"], la, lb)


def test_bulk_dry_run_equals_the_per_point_path(tmp_path: Path) -> None:
    sw = load_sweep(_write(tmp_path, MIXED))
    assert {p.method for p in sw.points} == {"train", "criticality", "snl", "eval", "pi"}
    plan, slow_plan = dry_run(sw), dry_run(sw, bulk=False)
    bulk, slow = plan.rows, slow_plan.rows
    assert [r["arch"] for r in bulk] == [r["arch"] for r in slow]
    assert any(r["predicted_latency_s"] for r in bulk)
    _same_rows(bulk, slow)
    assert math.isclose(gpu_hours(sw), gpu_hours(sw, bulk=False), rel_tol=1e-12)
    # the dry run's hours come from its one pricing pass, and are the same figure
    assert plan.gpu_hours == gpu_hours(sw) and slow_plan.gpu_hours == gpu_hours(sw, bulk=False)
    assert dry_run(sw, predict=False).rows == dry_run(sw, predict=False, bulk=False).rows


def _grid_sweep(names: list[str], dataset: str = "cifar100") -> Sweep:
    points = [Point(f"{a}-s0", "train", "grid", a, 0, {"recipe": {"epochs": 1}}, (), f"{a}-s0")
              for a in names]
    return Sweep("grid", "test", dataset, None, None, points)


def test_bulk_counts_equal_count_on_a_sample_of_a_27000_hrn_grid() -> None:
    names = list(iter_pattern("hrn-{1..30}x{1..30}x{1..30}x"))  # canonical as they are
    rng = random.Random(0)
    sample = rng.sample(names, 40) + ["hrn-1x1x1x", "hrn-30x30x30x"]
    nc = space.counts_named(sample, 32, 100, [True] * len(sample))
    assert nc.covered.all() and nc.priced.all()
    for i, a in enumerate(sample):
        spec = parse(a, dataset="cifar100")
        c = count(spec)
        assert (int(nc.relus[i]), int(nc.macs[i]), int(nc.params[i])) == (c.relus, c.macs, c.params)
        want = costmodel.predict(spec, "cheetah")["latency_s"]
        assert math.isclose(float(nc.latency_s[i]), want, rel_tol=1e-9), a
        assert spec.name == a
    sw = _grid_sweep(sample)
    _same_rows(dry_run(sw).rows, dry_run(sw, bulk=False).rows)


def test_name_reader_takes_only_canonical_family_names() -> None:
    names = ["hrn-5x7x2x", "hrn-5x7x2x-m32", "resnet18", "resnet18-m16", "resnet18-m16-4x4x4x",
             "resnet18-m4-d1,1,1,1", "resnet50-m8", "resnet34", "resnet18-m16-4x4x-d1,1,1",
             "hrn-5x7x2x-d1,1,1,1",
             # not canonical, or not a family: left to parse
             "hrn-5x7x2x-m16", "resnet18-2x2x2x", "resnet18-m64", "resnet18-d2,2,2,2",
             "hrn-05x7x2x", "hrn-0x1x1x", "resnet18-4x4x4x-m16", "hrn-m16-5x7x2x", "hrn",
             "resnet19", "wrn22x8", "regnetx-200mf", "resnet34-convnext", "resnet18-s2",
             "hrn-5x7x2x[stage1=identity]", "resnet18-m16-2x2x", "hrn-1" + "0" * 30 + "x2x2x",
             "hrn-2x2x2x-m\u0663", "resnet18-m16-\n2x2x2x"]
    def read(some: list[str]) -> dict:
        out = {}
        for fam, (rows, m, mult) in space.named_groups(some, 32, 100).items():
            for r, mm, mu in zip(rows, m, mult, strict=True):
                out[some[r]] = (fam, int(mm), tuple(int(v) for v in mu))
        return out

    got = read(names)  # a non-ASCII digit and a line break: the one-by-one reader
    assert got == read([n for n in names if n.isascii() and "\n" not in n])  # the array reader
    assert set(got) == set(names[:10])
    for name in names:
        assert space.named_family(name, 32, 100) == got.get(name), name
    for name, (fam, m, mult) in got.items():
        assert fam.spec(m, mult).name == name  # what the reader read is what parse builds


def test_a_27000_hrn_grid_is_priced_in_seconds_not_a_minute() -> None:
    sw = _grid_sweep(list(iter_pattern("hrn-{1..30}x{1..30}x{1..30}x")))
    dry_run(_grid_sweep(["hrn-2x2x2x"]))  # imports and templates
    t0 = time.perf_counter()
    rows, hours = dry_run(sw)
    seconds = time.perf_counter() - t0
    assert len(rows) == 27_000 and hours > 0
    assert all(r["predicted_latency_s"] is not None for r in rows)
    assert seconds < 15, seconds  # the per-point path: about 65 s (2.4 ms a point)
    rels = np.array([r["relus"] for r in rows])
    assert (rels > 0).all()


def test_arch_names_read_in_bulk_are_what_parse_gives(tmp_path: Path) -> None:
    from deepreshape.sweep.sweepfile import _arch_names

    patterns = ["hrn-{2,3}x{5..6}x2x-m{16,32}", "resnet18-m{16,64}-{2,4}x{2,4}x2x",
                "resnet18-m{8,16}-d{1,2},1,1,1", "wrn{16,22}x2", "hrn-{2,2}x2x2x"]
    want: dict[str, None] = {}
    for p in patterns:
        for a in expand_pattern(p):
            want.setdefault(parse(a, dataset="digits").name)
    assert _arch_names({"arch": patterns}, "e", "f.toml", "digits") == list(want)
    # a family whose widest member breaks a limit: parse names the first one that does
    with pytest.raises(Exception, match=r"multipliers .2000,2,2. in .hrn-2000x2x2x.") as e:
        _arch_names({"arch": ["hrn-{1000,2000,3000}x2x2x"]}, "e", "f.toml", "digits")
    assert "experiment 'e'" in str(e.value) and "'arch'" in str(e.value)
