"""DeepReShape solver: paper reproductions, hand derivations, brute-force properties, CLI."""

from __future__ import annotations

import importlib
import itertools
import json
import time
from contextlib import contextmanager
from fractions import Fraction
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepreshape.cli.main import main
from deepreshape.design.solver import (
    design,
    minimal_points,
    model_relus,
    order_violations,
    satisfies,
    solve,
)
from deepreshape.errors import UsageError

dm = importlib.import_module("deepreshape.design.solver")  # `deepreshape.design.solver` is the function

HRN_3241 = {(7, 5, 2), (5, 5, 3), (6, 6, 2), (5, 7, 2)}  # paper, Sec. 3 / App. B.1
HRN_3421 = {(5, 9, 2), (5, 6, 3)}  # paper, App. D.6


# --------------------------------------------------------------------------- the model


def test_model_uses_area_4x_per_stage_table8():
    # Table 8 (ReLUs, phi = 2): (2,2,2) -> 64/32/16/8; (3,3,3) -> 64/48/36/27.
    assert model_relus((2, 2, 2, 2), (2, 2, 2)) == tuple(2 * r for r in (64, 32, 16, 8))
    assert model_relus((2, 2, 2, 2), (3, 3, 3)) == tuple(2 * r for r in (64, 48, 36, 27))
    assert model_relus((1, 1), (4,)) == (4, 4)


def test_order_violations_counts_ties_as_broken():
    exact = (81_920, 81_920, 143_360, 71_680)  # HRN-5x7x2x on 32x32, stem in stage1
    assert order_violations((3, 2, 4, 1), exact) == [(2, 1), (4, 1)]
    assert not satisfies((3, 2, 4, 1), exact)
    assert satisfies((3, 2, 4, 1), (1, 3, 4, 2))


# --------------------------------------------------------------------------- paper results


def test_width_order_3241_reproduces_hrns():
    sols = solve("3,2,4,1")
    assert {s.multipliers for s in sols} == HRN_3241
    assert all(s.depths == (2, 2, 2, 2) for s in sols)
    assert all(satisfies((3, 2, 4, 1), s.model_relus) for s in sols)


def test_width_order_3421_reproduces_appendix_d6():
    assert {s.multipliers for s in solve((3, 4, 2, 1))} == HRN_3421


def _depth_feasible_by_hand(p1: int, p2: int, p3: int, p4: int) -> bool:
    """App. B.1 with alpha = beta = gamma = 2: phi3/4 > phi2/2 > phi4/8 > phi1."""
    f = Fraction
    return f(p3, 4) > f(p2, 2) > f(p4, 8) > p1


def test_depth_order_3241_by_hand():
    # 2 phi3 > 4 phi2 > phi4 > 8 phi1: phi1 >= 1 -> phi4 >= 9 -> phi2 >= 3 -> phi3 >= 7.
    sols = solve("3,2,4,1", vary="depth", multipliers=(2, 2, 2))
    assert [s.depths for s in sols] == [(1, 3, 7, 9)]
    assert _depth_feasible_by_hand(1, 3, 7, 9)
    for q in [(1, 2, 7, 9), (1, 3, 6, 9), (1, 3, 7, 8)]:
        assert not _depth_feasible_by_hand(*q)
    grid = itertools.product(range(1, 13), repeat=4)
    feasible = [p for p in grid if _depth_feasible_by_hand(*p)]
    assert all(all(a >= b for a, b in zip(p, (1, 3, 7, 9), strict=True)) for p in feasible)


@pytest.mark.parametrize("depths", [(1, 5, 5, 3), (1, 5, 7, 2), (1, 6, 6, 2), (1, 7, 5, 2)])
def test_paper_appendix_c1_depths_are_infeasible_under_its_model(depths):
    assert not satisfies((3, 2, 4, 1), model_relus(depths, (2, 2, 2)))
    assert not _depth_feasible_by_hand(*depths)


def test_both_free_is_fast_and_consistent():
    t = time.perf_counter()
    sols = solve("3,2,4,1", vary="both")  # 15^3 * 12^4 ~ 70M grid points
    assert time.perf_counter() - t < 15
    pts = np.array([s.free for s in sols])
    assert len(minimal_points(pts)) == len(sols)
    assert all(satisfies((3, 2, 4, 1), s.model_relus) for s in sols)
    # the width-only minima sit in the both-free set's upper closure
    for m in HRN_3241:
        assert any(all(a <= b for a, b in zip(s.free, (*m, 2, 2, 2, 2), strict=True))
                   for s in sols)


def test_sorted_by_total_then_lexicographic():
    sols = solve("3,2,4,1", vary="both", mult_bounds=(2, 6), depth_bounds=(1, 4))
    keys = [(sum(s.model_relus), s.multipliers, s.depths) for s in sols]
    assert keys == sorted(keys)


# --------------------------------------------------------------------------- dominance


def test_minimal_points_is_a_real_dominance_filter():
    # not upward closed and the minima are not grid neighbours of the dominated points
    pts = np.array([[3, 3], [1, 3], [2, 2], [3, 1], [2, 3], [1, 1], [5, 4], [4, 5], [1, 1]])
    assert minimal_points(pts).tolist() == [[1, 1]]
    pts = np.array([[3, 3], [1, 3], [2, 2], [3, 1], [2, 3], [4, 1]])
    assert sorted(minimal_points(pts).tolist()) == [[1, 3], [2, 2], [3, 1]]
    assert minimal_points(np.empty((0, 3), dtype=np.int64)).shape == (0, 3)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("order", ["3,2,2,1", "1", "", "0,1", "1,2,4", "a,b", [1, 2.5], [True, 2]])
def test_bad_orders(order):
    with pytest.raises(UsageError, match="order"):
        solve(order)


@pytest.mark.parametrize("kw", [
    {"vary": "height"}, {"mult_bounds": (3, 2)}, {"depth_bounds": (0, 4)},
    {"depths": (2, 2, 2)}, {"vary": "depth", "multipliers": (2, 2)},
    {"vary": "both", "mult_bounds": (1, 400), "depth_bounds": (1, 400)},
])
def test_bad_options(kw):
    with pytest.raises(UsageError):
        solve("3,2,4,1", **kw)


@pytest.mark.parametrize("kw, message", [
    ({"mult_bounds": (2, 3)},
     r"no solution: ReLUs\(stage3\) > ReLUs\(stage2\) cannot hold for multipliers in 2\.\.3"),
    ({"mult_bounds": (5, 6)},
     r"no solution: ReLUs\(stage2\) > ReLUs\(stage4\) cannot hold together with "
     r"ReLUs\(stage3\) > ReLUs\(stage2\) for multipliers in 5\.\.6"),
    ({"vary": "depth", "depth_bounds": (1, 8)},
     r"ReLUs\(stage4\) > ReLUs\(stage1\) cannot hold together with ReLUs\(stage3\) > "
     r"ReLUs\(stage2\) > ReLUs\(stage4\) for depths in 1\.\.8 with multipliers 2,2,2"),
])
def test_infeasible_names_the_inequality(kw, message):
    with pytest.raises(UsageError, match=message):
        solve("3,2,4,1", **kw)


# --------------------------------------------------------------------------- properties


@contextmanager
def _tiny_chunks():
    """Force many blocks and frequent pool reductions through the enumeration."""
    with mock.patch.object(dm, "_CHUNK", 5), mock.patch.object(dm, "_POOL", 3):
        yield


def _brute(problem: dm.Problem) -> tuple[list[tuple[int, ...]], int]:
    """Feasible grid points (pure Python) and the longest feasible chain prefix."""
    feasible, reached = [], 0
    for p in itertools.product(*(range(a.lo, a.hi + 1) for a in problem.axes)):
        relus = model_relus(*reversed(problem.split(p)))
        k = 0
        while k < len(problem.pairs) and relus[problem.pairs[k][0] - 1] > relus[
                problem.pairs[k][1] - 1]:
            k += 1
        reached = max(reached, k)
        if k == len(problem.pairs):
            feasible.append(p)
    return feasible, reached


def _leq(p, q) -> bool:
    return all(a <= b for a, b in zip(p, q, strict=True))


@st.composite
def problems(draw):
    d = draw(st.integers(3, 5))
    order = tuple(draw(st.permutations(range(1, d + 1))))
    vary = draw(st.sampled_from(dm.VARY))
    n = (d - 1 if vary != "depth" else 0) + (d if vary != "width" else 0)
    span = max(1, int(3000 ** (1 / n)) - 1)  # keep the brute-force grid small
    mlo = draw(st.integers(1, 5))
    dlo = draw(st.integers(1, 4))
    return dm.Problem.make(
        order, vary=vary,
        depths=draw(st.lists(st.integers(1, 6), min_size=d, max_size=d)),
        multipliers=draw(st.lists(st.integers(1, 6), min_size=d - 1, max_size=d - 1)),
        mult_bounds=(mlo, mlo + draw(st.integers(0, span))),
        depth_bounds=(dlo, dlo + draw(st.integers(0, span))),
    )


@settings(max_examples=150, deadline=None)
@given(problems(), st.booleans())
def test_solutions_are_exactly_the_minimal_feasible_points(problem, tiny):
    feasible, reached = _brute(problem)
    args = dict(vary=problem.vary, depths=problem.depths, multipliers=problem.multipliers,
                mult_bounds=problem.mult_bounds, depth_bounds=problem.depth_bounds)
    with _tiny_chunks() if tiny else mock.patch.object(dm, "_POOL", dm._POOL):
        if not feasible:
            a, b = problem.pairs[reached]
            with pytest.raises(UsageError, match=rf"ReLUs\(stage{a}\) > ReLUs\(stage{b}\) "
                                                 "cannot hold"):
                solve(problem.order, **args)
            return
        sols = solve(problem.order, **args)
    free = [s.free for s in sols]
    assert len(set(free)) == len(free)
    for s in sols:  # satisfies the order, and is a grid point
        assert satisfies(problem.order, s.model_relus)
        assert (s.multipliers, s.depths) == problem.split(s.free)
    for s in sols:  # minimal: no other feasible point below it
        assert not any(_leq(p, s.free) and p != s.free for p in feasible)
    for p in feasible:  # complete: every feasible point is above some solution
        assert any(_leq(f, p) for f in free)


# --------------------------------------------------------------------------- with counts


def test_design_hrns_exact_counts_and_violations():
    result = design("3,2,4,1")
    by_name = {s.name: s for s in result}
    assert set(by_name) == {f"hrn-{a}x{b}x{c}x" for a, b, c in HRN_3241}
    hrn = by_name["hrn-5x7x2x"]
    assert hrn.stage_relus == (81_920, 81_920, 143_360, 71_680)
    assert hrn.stem_relus == 16_384
    assert hrn.relus == sum(hrn.stage_relus)
    assert hrn.order_violations == [(2, 1), (4, 1)]
    assert hrn.spec.multipliers == (5, 7, 2)
    assert [s.relus for s in result] == sorted(s.relus for s in result)
    assert sum(hrn.model_shares) == pytest.approx(1.0)
    d = hrn.to_dict()
    assert {"multipliers", "depths", "name", "relus", "macs", "params", "stem_relus",
            "stages", "order_violations"} <= set(d)
    assert d["stages"][2] == {"name": "stage3", "relus": 143_360,
                              "macs": hrn.counts.stages[2].macs,
                              "params": hrn.counts.stages[2].params}


def test_design_names_follow_the_base():
    assert {s.name for s in design("3,2,4,1", base="hrn-5x7x2x")} == {
        f"hrn-{a}x{b}x{c}x" for a, b, c in HRN_3241}
    (sol,) = design("3,2,4,1", vary="depth").solutions
    assert sol.name == "hrn-2x2x2x-d1,3,7,9" and sol.depths == (1, 3, 7, 9)
    five = design("3,2,4,1,5")  # base depths/multipliers repeat for a fifth stage
    assert all(s.spec.depths == (2, 2, 2, 2, 2) for s in five)
    assert all(s.name.endswith("-d2,2,2,2,2") for s in five)


def test_design_input_size_scales_relus():
    small = design("3,4,2,1")
    big = design("3,4,2,1", input_size=64, num_classes=200)
    assert [4 * s.relus for s in small] == [s.relus for s in big]


def test_design_errors():
    with pytest.raises(UsageError):
        design("3,2,4,1", base="nonsense")
    with pytest.raises(UsageError, match="depths"):
        design("3,2,4,1,5", base="resnet34-m16")  # depths 3,4,6,3 cannot stretch to 5


# --------------------------------------------------------------------------- CLI


def test_cli_table(capsys):
    assert main(["design", "--order", "3,2,4,1"]) == 0
    out = capsys.readouterr().out
    for a, b, c in HRN_3241:
        assert f"hrn-{a}x{b}x{c}x *" in out
    row = next(line for line in out.splitlines() if line.startswith("hrn-5x7x2x *"))
    assert "378,880" in row and "21.6/21.6/37.8/18.9" in row  # 143,360 / 378,880 = 37.8%
    assert out.count("* exact ReLUs break the order") == 1


def test_cli_json(capsys):
    argv = ["design", "--order", "3,4,2,1", "--dataset", "tinyimagenet", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert {tuple(s["multipliers"]) for s in data} == HRN_3421
    assert all(len(s["stages"]) == 4 and s["stem_relus"] == 65_536 for s in data)


def test_cli_depth_with_multipliers(capsys):
    argv = ["design", "--order", "3,2,4,1", "--vary", "depth", "--multipliers", "2x2x2x",
            "--json"]
    assert main(argv) == 0
    assert [s["depths"] for s in json.loads(capsys.readouterr().out)] == [[1, 3, 7, 9]]


@pytest.mark.parametrize("argv, message", [
    (["--order", "3,2,2,1"], "permutation"),
    (["--order", "3,2,4,1", "--mult-max", "3"], "cannot hold"),
    (["--order", "3,2,4,1", "--depths", "2,x"], "--depths"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    assert main(["design", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
