"""Designing for PI cost: array counts against `count`, predictions against the cost model,
budgets, ranking, the design space, the link term, `--exact`, and docs/design.md's claims."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepreshape.cli.design import STAR_NOTE
from deepreshape.cli.main import main
from deepreshape.count import count
from deepreshape.design import space as ds
from deepreshape.design.costs import Budget, design_for_cost, explore, parse_amount
from deepreshape.design.solver import design, exact_coefficients
from deepreshape.errors import UsageError
from deepreshape.pi.costs import costmodel, he, linkcost
from deepreshape.pi.linkprofile import PRESETS
from deepreshape.spec import relu_slots
from deepreshape.zoo import parse

DOCS = Path(__file__).resolve().parents[1] / "docs" / "design.md"
HRN = ds.Family("hrn-2x2x2x", (2, 2, 2, 2), 32, 100)
_FIELDS = ("sent", "outputs", "response", "automorphisms", "muls")


# --------------------------------------------------------------------------- array counts


@pytest.mark.parametrize("rows", [1, 3, 16, 49, 64, 100, 256, 1024, 4096])
def test_blocking_counts_equal_cheetahs_search(rows):
    rng = np.random.default_rng(rows)
    k = np.concatenate([rng.integers(1, 40_000, 150), 2 ** rng.integers(0, 16, 30),
                        [1, 8192, 8193, 9 * 4096]])
    n = np.concatenate([rng.integers(1, 20_000, 150), rng.integers(1, 600, 30), [1, 10, 8192, 4096]])
    got = ds.blocking_counts(rows, k, n)
    for i in range(len(k)):
        b = he.blocking(rows, int(k[i]), int(n[i]))
        assert [int(got[f][i]) for f in _FIELDS] == [getattr(b, f) for f in _FIELDS], (k[i], n[i])


@pytest.mark.parametrize("rows", [7, 16])
def test_blocking_counts_exhaustive_on_small_products(rows):
    # small dims tie often: every k, n in 1..48 (and a few powers of two)
    kn = ds.grid([*range(1, 49), 64, 128, 1024, 8192], [*range(1, 49), 512, 4096])
    got = ds.blocking_counts(rows, kn[:, 0], kn[:, 1])
    for i, (k, n) in enumerate(kn):
        b = he.blocking(rows, int(k), int(n))
        assert [int(got[f][i]) for f in _FIELDS] == [getattr(b, f) for f in _FIELDS], (k, n)


def _sample(family, m, mults, idx):
    space = ds.counts(family, m, mults)
    pred = ds.predict(space)
    model = costmodel.load()
    for i in idx:
        spec = space.spec(i)
        c = count(spec)
        assert (space.relus[i], space.macs[i], space.params[i]) == (c.relus, c.macs, c.params)
        assert list(space.stage_relus[i]) == [s.relus for s in c.stages]
        want = costmodel.features(spec)
        assert {k: float(space.features[k][i]) for k in want} == want
        p = model.predict(spec)
        assert pred["latency_s"][i] == pytest.approx(p["latency_s"], rel=1e-12)
        assert pred["bytes"][i] == pytest.approx(p["bytes"], rel=1e-12)


def test_hrn_space_counts_equal_count_and_costmodel_on_samples():
    # the benchmark's whole space (m 8..64, multipliers 2..16), sampled
    g = ds.grid(np.arange(8, 65), range(2, 17), range(2, 17), range(2, 17))
    rng = np.random.default_rng(0)
    g = g[np.unique([0, len(g) - 1, *rng.integers(0, len(g), 3000)])]  # rows are independent
    _sample(HRN, g[:, 0], g[:, 1:], [0, len(g) - 1, *rng.integers(0, len(g), 10)])


@pytest.mark.parametrize("family", [
    ds.Family("resnet18", None, 64, 200),
    ds.Family("resnet34", None, 32, 10),
    ds.Family("hrn-2x2x2x", (1, 3, 7, 9), 32, 100),
    ds.Family("resnet50", None, 32, 100),  # bottlenecks: inner widths, 4x outputs
    ds.Family("wrn16x2", None, 32, 100),  # pre-activation, widths times k
])
def test_other_families_equal_count(family):
    d = family.stages
    m = np.array([3, 8, 16, 24])
    mults = np.array([[2] * (d - 1), [1] * (d - 1), [5, 7, 2][: d - 1], [3, 1, 4][: d - 1]])
    _sample(family, m, mults, range(4))


def test_unsupported_families_fall_back_or_refuse():
    fam = ds.Family("regnetx-200mf")  # fixed widths: m and multipliers do not apply
    with pytest.raises(ds.Unsupported):
        ds.counts(fam, [8, 16], [[2, 2, 2], [2, 2, 2]])
    with pytest.raises(UsageError, match="narrow the ranges"):
        ds.counts_any(fam, np.full(5, 8), np.full((5, 3), 2), slow_limit=4)


def test_relu_only_counts_cannot_be_priced():
    space = ds.counts(HRN, [16], [[5, 7, 2]], he=False)
    assert space.relus[0] == 378_880 and "he_sent" not in space.features
    with pytest.raises(UsageError, match="he=True"):
        ds.predict(space)


def test_bad_grid_and_span():
    with pytest.raises(UsageError, match="positive"):
        ds.counts(HRN, [0], [[2, 2, 2]])
    assert ds.span("8:64:8", "--m") == [8, 16, 24, 32, 40, 48, 56, 64]
    assert ds.span("32,8,8", "--m") == [8, 32]
    for bad in ("8:", "a", "0:4", "4:8:0"):
        with pytest.raises(UsageError, match="--m"):
            ds.span(bad, "--m")


# --------------------------------------------------------------------------- link term


def test_link_term_by_hand():
    spec = parse("resnet18-m16", dataset="cifar100")
    f = costmodel.features(spec)
    # 17 ReLU layers (stem + 2 per block), 21 conv/linear layers (20 convs, 1 fc)
    assert (f["relu_layers"], f["linear_layers"]) == (17, 21)
    loop = linkcost.predict(spec)
    wan = linkcost.predict(spec, linkcost.parse_link("wan"))
    assert loop["latency_s"] == pytest.approx(costmodel.predict(spec)["latency_s"])
    assert loop["link_s"] == 0 and wan["rounds"] == 17 * 10 + 21 * 2
    wire = wan["bytes"] / 2 * 8 / 400e6
    assert wan["latency_s"] - loop["latency_s"] == pytest.approx(212 * 0.040 + wire)
    assert wan["bytes"] == loop["bytes"]


def test_link_over_a_link_calibrated_model():
    m = costmodel.load()
    over = costmodel.CostModel(m.coefficients, {**m.meta, "link": PRESETS["wan"].to_dict()})
    spec = parse("resnet18-m8")
    same = linkcost.predict(spec, PRESETS["wan"], model=over)
    assert same["latency_s"] == pytest.approx(over.predict(spec)["latency_s"])
    with pytest.raises(UsageError, match="calibrated over 400 Mbit/s"):
        linkcost.predict(spec, None, model=over)


def test_array_prediction_over_link_equals_per_network():
    space = ds.counts(HRN, [8, 16], [[5, 7, 2], [2, 5, 2]])
    lan = linkcost.parse_link("lan")
    pred = ds.predict(space, lan)
    for i in range(2):
        assert pred["latency_s"][i] == pytest.approx(
            linkcost.predict(space.spec(i), lan)["latency_s"], rel=1e-12)


# --------------------------------------------------------------------------- budgets, rank


def test_relu_budget_takes_the_widest_m_under_it():
    res = design_for_cost("3,2,4,1", budget=Budget(relus=180_000))
    assert res.rank == "latency"
    assert [p.latency_s for p in res.priced] == sorted(p.latency_s for p in res.priced)
    for p in res.priced:
        s = p.solution
        m = s.spec.stem.width
        assert s.relus <= 180_000
        above = parse("hrn-2x2x2x", base_width=m + 1, multipliers=s.multipliers)
        assert count(above).relus > 180_000
        # ReLUs are linear in m: 378,880 at m=16 for hrn-5x7x2x -> 23,680 per unit of m
        if s.multipliers == (5, 7, 2):
            assert m == 180_000 // 23_680 == 7
        assert p.latency_s == pytest.approx(costmodel.predict(s.spec)["latency_s"])


def test_latency_budget_over_lan():
    lan = linkcost.parse_link("lan")
    res = design_for_cost("3,2,4,1", budget=Budget(latency_s=30.0), link="lan", rank="bytes")
    assert [p.bytes for p in res.priced] == sorted(p.bytes for p in res.priced)
    for p in res.priced:
        s = p.solution
        assert p.latency_s <= 30
        nxt = parse("hrn-2x2x2x", base_width=s.spec.stem.width + 1, multipliers=s.multipliers)
        assert linkcost.predict(nxt, lan)["latency_s"] > 30


@pytest.mark.parametrize("budget, message", [
    (Budget(relus=2_000), r"no solution meets --relus 2,000 ReLUs: the lowest, at base width "
                          r"m=1, is hrn-5x5x3x-m1 with 21,440 ReLUs; raise --relus$"),
    (Budget(latency_s=1.0), r"no solution meets --latency 1.00 s: .* raise --latency$"),
    (Budget(relus=40_000, bytes=5e6), r"no solution meets --bytes 5.0 MB: .* raise --bytes$"),
])
def test_no_fit_names_the_bound(budget, message):
    with pytest.raises(UsageError, match=message):
        design_for_cost("3,2,4,1", budget=budget)


def test_no_single_solution_meets_both():
    # order 3,4,2,1 at m=1: hrn-5x6x3x-m1 has fewer ReLUs (23,680 vs 27,520), hrn-5x9x2x-m1
    # is faster; a ReLU bound only the first meets and a latency bound only the second meets
    both = {p.solution.multipliers: p for p in design_for_cost(
        "3,4,2,1", budget=Budget(relus=10**7), m_values=[1]).priced}
    assert both[(5, 6, 3)].solution.relus < 25_000 < both[(5, 9, 2)].solution.relus
    fast = both[(5, 9, 2)].latency_s
    assert fast < both[(5, 6, 3)].latency_s
    with pytest.raises(UsageError, match="no solution meets --relus and --latency together"):
        design_for_cost("3,4,2,1", budget=Budget(relus=25_000, latency_s=fast), m_values=[1])
    one = design_for_cost("3,4,2,1", budget=Budget(relus=25_000), m_values=[1])
    assert [p.solution.multipliers for p in one.priced] == [(5, 6, 3)]
    assert one.dropped == ["hrn-5x9x2x"]


def test_budget_takes_m_from_a_list():
    res = design_for_cost("3,2,4,1", budget=Budget(relus=180_000), m_values=[4, 6, 8])
    # at m=8: hrn-5x5x3x 171,520 ReLUs, hrn-5x7x2x 189,440, hrn-6x6x2x 200,704, hrn-7x5x2x 205,824
    assert {p.solution.multipliers: p.solution.spec.stem.width for p in res.priced} == {
        (5, 5, 3): 8, (5, 7, 2): 6, (6, 6, 2): 6, (7, 5, 2): 6}
    assert all(p.solution.relus <= 180_000 for p in res.priced)
    assert res.capped == ["hrn-5x5x3x-m8"]  # the top of the list: more m might fit
    top = design_for_cost("3,2,4,1", budget=Budget(relus=10**7), m_values=[8, 9])
    assert {p.solution.spec.stem.width for p in top.priced} == {9} and len(top.capped) == 4


def test_rank_orders_and_default():
    for rank in ("relus", "macs", "latency", "bytes"):
        res = design_for_cost("3,2,4,1", rank=rank)
        vals = [p.metric(rank) for p in res.priced]
        assert vals == sorted(vals) and len(vals) == 4
    assert design_for_cost("3,2,4,1").rank == "relus"
    with pytest.raises(UsageError, match="rank"):
        design_for_cost("3,2,4,1", rank="accuracy")


@pytest.mark.parametrize("text, what, value", [
    ("180k", "relus", 180_000), ("1.5M", "relus", 1_500_000), ("180,000", "relus", 180_000),
    ("30s", "latency", 30), ("500ms", "latency", 0.5), ("2min", "latency", 120),
    ("60MB", "bytes", 60e6), ("1.5GB", "bytes", 1.5e9), ("800kB", "bytes", 800e3),
])
def test_parse_amount(text, what, value):
    assert parse_amount(text, what) == pytest.approx(value)


# --------------------------------------------------------------------------- exact


def test_exact_solutions_follow_the_order_and_are_minimal():
    order = (3, 2, 4, 1)
    sols = design(order, exact=True, mult_bounds=(2, 12))
    got = {s.multipliers for s in sols}
    assert got == {(6, 5, 3), (6, 7, 2), (7, 6, 2), (9, 5, 2)}
    assert all(not s.order_violations for s in sols)
    # brute force on exact counts: the feasible set is exactly the up-closure of `got`
    mults = ds.grid(*[range(2, 13)] * 3)
    space = ds.counts(HRN, np.full(len(mults), 16), mults)
    feasible = ds.model_order(order, space.stage_relus)
    above = np.array([any(all(a >= b for a, b in zip(p, q, strict=True)) for q in got)
                      for p in mults])
    minimal = [tuple(p) for p in mults[feasible] if not any(
        all(a <= b for a, b in zip(q, p, strict=True)) and tuple(q) != tuple(p)
        for q in mults[feasible])]
    assert set(minimal) == got
    assert np.all(feasible <= above)


def test_exact_coefficients_by_hand():
    # stage1: 2 ReLUs per block on 32x32 plus the stem; stage k: 2 per block on (32/2^(k-1))^2
    assert exact_coefficients("hrn-2x2x2x", 4, 32, 100) == (
        (2048, 1024), (512, 0), (128, 0), (32, 0))
    with pytest.raises(UsageError, match="RegNet-X"):
        exact_coefficients("regnetx-200mf", 4, 32, 100)


# --------------------------------------------------------------------------- explore


def test_explore_rows_equal_count_and_families_are_disjoint():
    ex = explore([8, 16], range(2, 6))
    assert len(ex) == 2 + 2 * 3 + 2 * (4 ** 3 - 4)  # StageCh from 3x (2x is BaseCh)
    names = [ex.name(i) for i in range(len(ex))]
    assert len(set(names)) == len(names)
    for i in (0, 3, 10, len(ex) - 1):
        c = count(parse(names[i]))
        assert (ex.relus[i], ex.macs[i]) == (c.relus, c.macs)
        assert ex.latency_s[i] == pytest.approx(costmodel.predict(parse(names[i]))["latency_s"])
    hrn = ex.family == "hrn"
    assert np.all((ex.multipliers[hrn] != ex.multipliers[hrn][:, :1]).any(axis=1))
    # the paper's HRN-5x5x3x satisfies the model order but not the exact one
    i = names.index("hrn-5x5x3x")
    assert ex.model_order[i] and not ex.exact_order[i]


def test_envelope_and_fastest_by_brute_force():
    ex = explore([8, 16, 32], range(2, 5))
    env = set(ex.envelope().tolist())
    for i in range(len(ex)):
        beaten = np.any((ex.relus >= ex.relus[i]) & (ex.latency_s < ex.latency_s[i]))
        assert (i in env) == (not beaten)
    for lo, hi, best in ex.fastest(6):
        for kind, i in best.items():
            rows = (ex.family == kind) & (ex.relus >= lo) & (ex.relus < hi)
            assert ex.latency_s[i] == ex.latency_s[rows].min()


def test_explore_errors():
    with pytest.raises(UsageError, match="families"):
        explore([8], [2], families=["wide"])
    with pytest.raises(UsageError, match="stages"):
        explore([8], [2], order="3,2,1")


# --------------------------------------------------------------------------- CLI


def _run(capsys, argv):
    rc = main(["design", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("argv", [
    ["--order", "3,2,4,1"], ["--order", "3,2,4,1", "--relus", "180k", "--link", "wan"],
    ["--order", "3,2,4,1", "--vary", "depth", "--rank", "latency"],
    ["--explore", "--m", "8,64", "--mult", "2:16", "--link", "wan"],
])
def test_cli_fits_100_columns(capsys, argv):
    rc, out, _ = _run(capsys, argv)
    assert rc == 0
    assert max(len(line) for line in out.splitlines()) <= 100


def test_cli_star_note_is_one_line_under_the_table(capsys):
    _, out, _ = _run(capsys, ["--order", "3,2,4,1"])
    lines = out.splitlines()
    assert lines[-1] == STAR_NOTE and lines[-2] == "" and "*" in lines[-3]
    _, out, _ = _run(capsys, ["--order", "3,2,4,1", "--exact"])
    assert "*" not in out and "exact stage ReLUs" in out


def test_cli_json_has_predictions(capsys):
    rc, out, _ = _run(capsys, ["--order", "3,2,4,1", "--relus", "180k", "--link", "lan", "--json"])
    data = json.loads(out)
    assert rc == 0 and len(data) == 4
    lat = [d["predicted"]["latency_s"] for d in data]
    assert lat == sorted(lat)
    assert all(d["predicted"]["link"].startswith("lan") and d["relus"] <= 180_000 for d in data)
    assert {d["base_width"] for d in data} == {6, 7, 8}


def test_cli_explore_plot_and_json(capsys, tmp_path):
    png = tmp_path / "space.png"
    rc, out, err = _run(capsys, ["--explore", "--m", "8,16", "--mult", "2:4", "--json",
                                 "--plot", str(png)])
    assert rc == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(out)
    assert len(rows) == 2 + 2 * 2 + 2 * (27 - 3) and str(png) in err
    assert {r["family"] for r in rows} == {"basech", "stagech", "hrn"}


@pytest.mark.parametrize("argv, message", [
    (["--relus", "180k"], "--order is required"),
    (["--order", "3,2,4,1", "--relus", "lots"], "--relus must be an amount"),
    (["--order", "3,2,4,1", "--latency", "5 parsecs"], "--latency must be an amount"),
    (["--order", "3,2,4,1", "--bytes", "0MB"], "--bytes must be positive"),
    (["--order", "3,2,4,1", "--link", "moon"], "link 'moon'"),
    (["--order", "3,2,4,1", "--m", "4:8"], "--m chooses base widths"),
    (["--order", "3,2,4,1", "--plot", "x.png"], "--plot applies to --explore"),
    (["--explore", "--relus", "10k"], "--relus applies"),
    (["--explore", "--vary", "depth"], "--explore spans"),
    (["--explore", "--families", "basech,wide"], "families must be"),
    (["--order", "3,2,4,1", "--relus", "2k"], "no solution meets --relus"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    rc, _, err = _run(capsys, argv)
    assert rc == 2 and message in err and err.count("\n") == 1


# --------------------------------------------------------------------------- docs


def _check_the_docs_quote_the_shipped_model() -> None:
    """The docs quote the shipped model's numbers for server-owned weights (one HE
    direction, the default) and name the date it was calibrated: after a recalibration
    the documented numbers fail their checks until the docs are regenerated."""
    date = costmodel.provenance(costmodel.load(), "cheetah")["date"][:10]
    assert ds._he_directions("cheetah") == 1
    assert f"calibrated {date}" in " ".join(DOCS.read_text().split()), date
    assert f"calibrated {date}" in " ".join((DOCS.parent / "pi-costs.md").read_text().split())


def _doc_commands() -> list[tuple[str, str]]:
    """(arguments, claim) of every `$ deepreshape design ...` line in docs/design.md."""
    out = []
    for line in DOCS.read_text().splitlines():
        m = re.match(r"\$ deepreshape design (.*?)(?:\s+# -> (.*))?$", line)
        if m:
            out.append((m.group(1).strip(), (m.group(2) or "").strip()))
    return out


def test_docs_list_the_commands():
    assert len(_doc_commands()) >= 9


@pytest.mark.parametrize("args, claim", _doc_commands())
def test_docs_design_commands(capsys, tmp_path, monkeypatch, args, claim):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(capsys, shlex.split(args))
    if claim.startswith("no solution"):
        assert rc == 2 and claim in err
        message = err.strip().removeprefix("deepreshape: error: ")
        if "lowest, at base width" in message:  # quoted in full
            _check_the_docs_quote_the_shipped_model()
            assert f"`{message}`" in " ".join(DOCS.read_text().split())
        return
    assert rc == 0
    if "--json" in args:
        assert json.loads(out)
        return
    names = [line.split()[0] for line in out.splitlines()
             if re.match(r"(hrn|resnet18)-\S+", line)]
    claim = re.sub(r"\s+\(.*\)$", "", claim)  # "(Appendix D.6)"
    if "--explore" in args:
        count_claim, png = claim.split(" networks, ")
        assert out.splitlines()[1].startswith(count_claim + " networks")
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    elif claim.startswith("each the widest within"):  # a latency budget: model-dependent names
        _, out, _ = _run(capsys, [*shlex.split(args), "--json"])
        bound = parse_amount(claim.split()[-2] + claim.split()[-1], "latency")
        link = linkcost.parse_link(args.split("--link ")[1].split()[0])
        for d in json.loads(out):
            assert d["predicted"]["latency_s"] <= bound
            wider = parse("hrn-2x2x2x", base_width=d["base_width"] + 1,
                          multipliers=d["multipliers"])
            assert linkcost.predict(wider, link)["latency_s"] > bound
    else:  # names; a budget's rank order comes from the model, so only the set is claimed
        assert sorted(names) == sorted(claim.split(", "))
        if "--relus" in args:
            _, out, _ = _run(capsys, [*shlex.split(args), "--json"])
            lat = [d["predicted"]["latency_s"] for d in json.loads(out)]
            assert lat == sorted(lat)


def test_docs_sample_output_is_what_the_command_prints(capsys):
    text = DOCS.read_text()
    block = text[text.index("$ deepreshape design --order 3,2,4,1 --relus 180k"):]
    block = block[block.index("\n") + 1: block.index("\n$ ")]
    _, out, _ = _run(capsys, ["--order", "3,2,4,1", "--relus", "180k"])
    documented = [line.split() for line in block.splitlines() if line.startswith("hrn-")]
    printed = [line.split() for line in out.splitlines() if line.startswith("hrn-")]
    # names, ReLUs, MACs, params and shares come from counts; latency and MB from the model
    key = lambda r: (r[0], r[2], r[3], r[4], r[7])  # noqa: E731
    assert sorted(map(key, documented)) == sorted(map(key, printed))
    assert block.splitlines()[-1] == STAR_NOTE
    _check_the_docs_quote_the_shipped_model()
    assert documented == printed


def test_docs_exact_and_explore_claims():
    text = " ".join(DOCS.read_text().split())
    paper = min(s.relus for s in design("3,2,4,1"))
    exact = min(s.relus for s in design("3,2,4,1", exact=True))
    assert f"has {round(100 * (exact / paper - 1))}% more ReLUs" in text
    assert "HRN-5x7x2x has equal Stage1 and Stage2 ReLUs (81,920 each)" in text
    ex = explore([8, 16, 32, 64], range(2, 9))
    slower = []
    for _, _, best in ex.fastest(16):
        if "stagech" in best and "hrn" in best:
            slower.append(ex.latency_s[best["stagech"]] / ex.latency_s[best["hrn"]])
        if "basech" in best:
            fastest = min(ex.latency_s[i] for i in best.values())
            assert ex.latency_s[best["basech"]] <= 1.10 * fastest
    assert min(slower) > 1  # StageCh slower than the fastest HRN in every shared range
    _check_the_docs_quote_the_shipped_model()
    assert f"{max(slower):.1f}x slower than the fastest HRN" in text


def _iso_relu_benchmark():
    """benchmarks/iso_relu.py as a module (it builds the pairs the docs tabulate)."""
    import importlib.util

    path = DOCS.parents[1] / "benchmarks" / "iso_relu.py"
    spec = importlib.util.spec_from_file_location("iso_relu_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pi_costs_iso_relu_table():
    text = (DOCS.parent / "pi-costs.md").read_text()
    section = text[text.index("## Iso-ReLU pairs"):]
    rows = [cells for line in section.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]
            if cells[0] != "network" and not set(cells) <= {"---", "---:"}]
    pairs = _iso_relu_benchmark().pairs()  # the networks the script measures
    assert [label for label, _ in pairs] == [r[0] for r in rows]
    specs = [spec for _, spec in pairs]
    relus = [count(s).relus for s in specs]
    # the documented partners: HRN-5x7x2x; the nearest BaseCh (m 1..128) and StageCh
    # (m 1..64, L 3..8) in ReLUs; DeepReDuce's cull of stages 1 and 4; SNL of equal ReLUs
    assert specs[0] == parse("hrn-5x7x2x") and rows[0][0] == "HRN-5x7x2x"
    ex = explore(range(1, 129), range(3, 9), families=["basech", "stagech"])
    for spec, family, cap in ((specs[1], "basech", None), (specs[2], "stagech", 64)):
        rivals = [ex.relus[i] for i in range(len(ex))
                  if ex.family[i] == family and ex.m[i] <= (cap or 128)]
        assert abs(count(spec).relus - relus[0]) == min(abs(r - relus[0]) for r in rivals)
    assert specs[3].describe() == "hrn-5x5x3x[stage1=identity,stage4=identity]"
    assert specs[4].name == "resnet18" and relus[4] == relus[3] == 184_320
    assert {str(specs[4].slot_kind(s.address)).split(":")[0] for s in relu_slots(specs[4])} == {
        "mask"}
    _check_the_docs_quote_the_shipped_model()
    for row, spec in zip(rows, specs, strict=True):
        c = count(spec)
        loop, wan = linkcost.predict(spec), linkcost.predict(spec, linkcost.parse_link("wan"))
        assert row[1] == f"{c.relus:,}" and row[2] == f"{c.macs / 1e6:.1f}M"
        assert row[9] == f"{costmodel.literature(spec)['online_latency_s']:.2f}"
        assert [row[3], row[5], row[7]] == [f"{loop['latency_s']:.2f}",
                                            f"{loop['bytes'] / 1e6:.1f}",
                                            f"{wan['latency_s']:.2f}"]
    measured = [float(r[4]) for r in rows]  # each pair's ratio is of its measured latencies
    ratios = [measured[i] / measured[0] for i in range(3)] + [1.0, measured[4] / measured[3]]
    assert [r[8] for r in rows] == [f"{x:.2f}x" for x in ratios]
    lit = [float(r[9]) for r in rows]
    assert max(lit[0] / lit[1], lit[0] / lit[2], lit[3] / lit[4]) <= 1.105


def test_cost_aware_design_needs_no_pi_extra():
    code = ("import sys\n"
            "for m in ('spu', 'jax', 'jaxlib'): sys.modules[m] = None\n"
            "from deepreshape.cli.main import main\n"
            "sys.exit(main(['design', '--order', '3,2,4,1', '--relus', '180k', '--link', 'wan'])"
            " or main(['design', '--explore', '--m', '8', '--mult', '2:3']))\n")
    env = {**os.environ,
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "hrn-5x7x2x-m7" in out.stdout and "Design space" in out.stdout


def test_explored_nearest_finds_the_iso_relu_partner():
    ex = explore([8, 16, 32], [3, 4], families=["basech", "stagech"])
    # BaseCh ResNet18 at m = 8, 16, 32 has 139,264, 278,528 and 557,056 ReLUs (32x32)
    assert ex.name(ex.nearest(200_000, "basech")) == "resnet18-m16"
    assert ex.name(ex.nearest(10**9, "basech")) == "resnet18-m32"
    i = ex.nearest(200_000, "stagech", max_m=8)
    assert ex.family[i] == "stagech" and ex.m[i] == 8
    with pytest.raises(UsageError, match="no hrn network"):
        ex.nearest(1000, "hrn")
