"""Polynomial activations (slot kinds ``poly1``, ``poly2``): spelled like the other kinds,
counted exactly (hand-derived and by hooks), initialized from the least-squares fit of
ReLU, refitted on measured inputs, trained, exported to JAX and run under SPU equal to
plaintext; the cost model refuses to price them as free."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepreshape import UsageError, build, parse
from deepreshape.build import PolyAct, fit_polys_to_relu
from deepreshape.count import count, count_module
from deepreshape.slotkinds.poly import RELU_FIT

ARCH = "hrn-2x2x2x-m2"  # digits at 16x16: stage2 has 4 channels at 8x8, 2 blocks x 2 slots


def _spec(slots: str):
    return parse(f"{ARCH}[{slots}]", dataset="digits")


def test_poly_slots_are_counted_by_hand_and_by_hooks() -> None:
    base, spec = count(parse(ARCH, dataset="digits")), _spec("stage2=poly2")
    c = count(spec)
    # stage2: 4 slots of 4 x 8 x 8 = 256 activations, now polynomials, not ReLUs
    assert c.stage("stage2").relus == 0 and c.stage("stage2").polys == 4 * 256 == c.polys
    assert c.relus == base.relus - 1024 and c.macs == base.macs
    assert c.params == base.params + 4 * 3 * 4  # 4 slots x 3 coefficients x 4 channels
    assert count(_spec("stage2.block1.relu1=poly1")).params == base.params + 2 * 4
    hooks = count_module(build(spec), spec)
    assert (hooks.relus, hooks.polys, hooks.params, hooks.macs) == (c.relus, c.polys, c.params,
                                                                    c.macs)
    assert c.to_dict()["polys"] == 1024 and count(parse(ARCH, dataset="digits")).polys == 0


def test_poly_names_round_trip_and_bad_degrees_are_one_line() -> None:
    spec = _spec("stage1.block1.relu1=poly2,stage3=poly1")
    assert parse(spec.describe(), dataset="digits").describe() == spec.describe()
    assert "stage1.block1.relu1=poly2" in spec.describe()
    with pytest.raises(UsageError, match="unknown ReLU slot kind 'poly3'.*did you mean poly"):
        _spec("stage1=poly3")


def test_default_coefficients_are_the_least_squares_fit_of_relu_on_a_standard_normal() -> None:
    z = np.random.default_rng(0).standard_normal(2_000_000)
    for degree, coef in RELU_FIT.items():
        fit = np.polyfit(z, np.maximum(z, 0), degree)
        np.testing.assert_allclose(coef, fit, atol=3e-3)
    g = 1 / math.sqrt(2 * math.pi)
    assert RELU_FIT[2] == pytest.approx((g / 2, 0.5, g / 2))
    act = PolyAct(3, 2)
    x = torch.linspace(-2, 2, 9).view(1, 1, 3, 3).repeat(1, 3, 1, 1)
    a, b, c = RELU_FIT[2]
    torch.testing.assert_close(act(x), a * x * x + b * x + c)


def test_refit_on_measured_inputs_matches_numpy_per_channel() -> None:
    """Channel 0 sees N(2, 1), channel 1 N(-1, 0.5^2): each gets its own least squares."""
    act = torch.nn.Sequential(PolyAct(2, 2))
    rng = torch.Generator().manual_seed(0)
    batches = [torch.stack([torch.randn(64, 4, 4, generator=rng) + 2,
                            0.5 * torch.randn(64, 4, 4, generator=rng) - 1], 1) for _ in range(3)]
    assert fit_polys_to_relu(act, batches) == 1
    xs = torch.cat(batches).transpose(0, 1).reshape(2, -1).double().numpy()
    for ch in range(2):
        want = np.polyfit(xs[ch], np.maximum(xs[ch], 0), 2)
        np.testing.assert_allclose(act[0].coef[:, ch].detach().double().numpy(), want, rtol=1e-4, atol=1e-5)
    assert act.training  # the mode it had is restored


def test_a_poly_network_trains_on_digits(tmp_path) -> None:
    from deepreshape.options import RunOptions
    from deepreshape.training import Recipe, train

    res = train(f"{ARCH}[stage2=poly2]", recipe=Recipe(epochs=4, batch_size=64, lr=0.05),
                out=tmp_path / "run", options=RunOptions(limit=512, quiet=True))
    assert res.run.results["relus"] == count(_spec("stage2=poly2")).relus
    from deepreshape.rundir import schema

    losses = [m["loss"] for m in schema.METRICS.read(tmp_path / "run")]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert res.final_acc > 14  # ten digits: above chance (the ReLU network: 30% here)
    # results.json counts the polynomials, and every report names them beside the ReLUs
    from deepreshape.reports import pareto
    from deepreshape.reports.readers import run_name
    from deepreshape.rundir.run import load_run

    assert res.run.results["polys"] == 1024 == count(_spec("stage2=poly2")).polys
    assert run_name(load_run(tmp_path / "run")).endswith(" +1,024 polys")
    plot = pareto([tmp_path / "run"], x="relus", peers="none", out=tmp_path / "p.png")
    assert plot.rows[0].name.endswith(" +1,024 polys") and plot.rows[0].x == res.run.results["relus"]
    coef = res.model.stage2.block1.relu1.coef
    assert not torch.allclose(coef, torch.tensor(RELU_FIT[2])[:, None])  # it learned


def _trained_like(spec, seed: int = 0):
    torch.manual_seed(seed)
    model = build(spec).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, PolyAct):
                m.coef.add_(0.2 * torch.randn_like(m.coef))
    return model


def test_export_equals_torch_and_spu_equals_plaintext() -> None:
    pytest.importorskip("jax")
    from deepreshape.pi.export import export_model
    from deepreshape.pi.program import plain_logits

    spec = _spec("stage2=poly2,stage3.block1.relu1=poly1")
    model = _trained_like(spec)
    fn, params = export_model(model)
    x = torch.randn(2, spec.in_channels, spec.input_size, spec.input_size)
    with torch.no_grad():
        want = model(x).numpy()
    got = plain_logits(fn, params, x.numpy())
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    pytest.importorskip("spu")
    from deepreshape.pi.program import run_simulated

    secure = run_simulated(fn, params, x.numpy()[:1], protocol="cheetah")
    np.testing.assert_allclose(secure, want[:1], atol=2e-2)


def test_the_cost_model_refuses_to_price_polynomials_as_free() -> None:
    from deepreshape.pi.costs import costmodel

    with pytest.raises(UsageError, match=r"no coefficients for poly_layers, polys .*deepreshape pi"):
        costmodel.predict(_spec("stage2=poly2"), "cheetah")
    assert costmodel.predict(parse(ARCH, dataset="digits"), "cheetah")["latency_s"] > 0


# --------------------------------------------------------------------------- masks


MASKED = ("stage2.block1.relu1=mask:pixel:100:poly2,stage3.block1.relu2=mask:channel:3:poly1,"
          "stage1.block1.relu1=mask:pixel:7")


def _random_masks(model, seed: int = 1) -> None:
    """Kept positions scattered (not the first K) and coefficients off their start."""
    from deepreshape.build import MaskedReLU

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MaskedReLU):
                kept = int(m.mask.sum())
                flat = torch.zeros(m.mask.numel())
                flat[torch.randperm(m.mask.numel(), generator=g)[:kept]] = 1
                m.mask.copy_(flat.view_as(m.mask))
                if m.coef is not None:
                    m.coef.add_(0.2 * torch.randn(m.coef.shape, generator=g))


def test_a_mask_whose_dropped_positions_are_polynomial() -> None:
    spec = _spec(MASKED)
    assert parse(spec.describe(), dataset="digits").describe() == spec.describe()
    c, base = count(spec), count(parse(ARCH, dataset="digits"))
    # stage2 slot: 4 x 8 x 8 = 256 positions, 100 kept -> 156 polynomials; stage3 slot:
    # 8 x 4 x 4, 3 channels kept -> 48 ReLUs and 80 polynomials; the identity mask: none
    assert c.stage("stage2").polys == 156 and c.stage("stage3").polys == 80 and c.polys == 236
    assert c.stage("stage1").relus == base.stage("stage1").relus - 512 + 7
    assert c.params == base.params + 3 * 4 + 2 * 8
    model = build(spec)
    _random_masks(model)
    hooks = count_module(model, spec)
    assert (hooks.relus, hooks.polys, hooks.params) == (c.relus, c.polys, c.params)
    with pytest.raises(UsageError, match="unknown ReLU slot kind 'mask:pixel:3:poly3'"):
        _spec("stage1.block1.relu1=mask:pixel:3:poly3")


def test_masked_polynomials_export_equal_torch_and_run_under_spu() -> None:
    pytest.importorskip("jax")
    from deepreshape.pi.export import export_model
    from deepreshape.pi.program import plain_logits

    spec = _spec(MASKED)
    model = build(spec).eval()
    _random_masks(model)
    fn, params = export_model(model)
    x = torch.randn(2, spec.in_channels, spec.input_size, spec.input_size)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(plain_logits(fn, params, x.numpy()), want, atol=1e-4, rtol=1e-4)
    pytest.importorskip("spu")
    from deepreshape.pi.program import run_simulated

    np.testing.assert_allclose(run_simulated(fn, params, x.numpy()[:1], protocol="cheetah"),
                               want[:1], atol=2e-2)


def test_refit_of_a_mask_uses_only_its_dropped_positions() -> None:
    from deepreshape.build import MaskedReLU
    from deepreshape.slotkinds import SlotInfo

    m = MaskedReLU(SlotInfo("s", 1, 1, 2, 2), "pixel", 2, degree=1)
    m.mask.copy_(torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]))  # the right column is dropped
    x = torch.randn(500, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    x[:, :, :, 1] = x[:, :, :, 1] * 0.5 + 3  # the dropped positions see N(3, 0.25): relu = x
    assert fit_polys_to_relu(torch.nn.Sequential(m), [x]) == 1
    np.testing.assert_allclose(m.coef[:, 0].detach().numpy(), [1.0, 0.0], atol=1e-3)


@pytest.mark.slow
def test_the_activation_benchmark_measures_each_function_against_the_baseline(capsys) -> None:
    """`benchmarks/activations.py` on one small size: four real two-party runs, outputs
    equal to plaintext, each activation's extra cost over the linear baseline."""
    pytest.importorskip("spu")
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "activations.py"
    spec = importlib.util.spec_from_file_location("activations", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--sizes", "512", "--protocols", "semi2k", "--repeats", "1", "--json"]) == 0
    rows = {r["function"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["linear", "relu", "square", "poly2"]
    assert all(r["max_abs_err"] < 1e-2 and r["n"] == 512 for r in rows.values())
    assert rows["linear"]["extra_bytes_per_activation"] == 0
    for name in ("relu", "square", "poly2"):  # every activation moves bytes: none is free
        assert rows[name]["bytes"] > rows["linear"]["bytes"]
    r = rows["poly2"]
    assert r["bytes_vs_relu"] == pytest.approx(
        r["extra_bytes_per_activation"] / rows["relu"]["extra_bytes_per_activation"])
