"""Cheetah's HE blocking of matrix products, as the cost model counts it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepreshape.count import count
from deepreshape.pi.costs import he
from deepreshape.zoo import parse


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _search_by_loops(m: int, k: int, n: int, deg: int) -> tuple[int, int, int]:
    """The block search written out as plain loops (independent of the vectorized one)."""
    best, choice = None, None
    for d0 in range(1, min(deg, m) + 1):
        d1 = 1
        while d1 <= k and d0 * d1 <= deg:
            d2 = min(n, deg // (d0 * d1))
            b0, b1, b2 = _cdiv(m, d0), _cdiv(k, d1), _cdiv(n, d2)
            price = ((min(b0, b2) * b1 + _cdiv(b0 * b2, d1)) * 1000.0
                     + _cdiv(m * n, deg) * d1 + b0 * b1 * b2 / 10.0)
            if best is None or price <= best:
                best, choice = price, (d0, d1, d2)
            d1 *= 2
    return choice


def test_the_block_shape_spu_logs_for_a_16_channel_3x3_conv_at_32x32():
    # SPU 0.9.5 logs "1@1024x144x16 => 4x128x16": 4*128*16 = 8192 coefficients.
    b = he.blocking(1024, 144, 16)
    assert b.block == (4, 128, 16)
    # 256 row blocks x 2 inner blocks; the 2 kernel ciphertexts are encrypted and sent,
    # 256 sparse results are packed into 2 with 2 * 128 automorphisms.
    assert (b.sent, b.outputs, b.response, b.automorphisms, b.muls) == (2, 256, 2, 256, 512)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 300), k=st.integers(1, 700), n=st.integers(1, 300),
       deg=st.sampled_from([64, 256, 4096]))
def test_vectorized_search_equals_the_plain_loops(m, k, n, deg):
    b = he.blocking(m, k, n, deg)
    assert b.block == _search_by_loops(m, k, n, deg)
    d0, d1, d2 = b.block
    assert d0 * d1 * d2 <= deg
    assert b.muls == _cdiv(m, d0) * _cdiv(k, d1) * _cdiv(n, d2)


def test_layer_products_follow_the_im2col_shapes():
    spec = parse("resnet18-m16", input_size=32, num_classes=10)
    rows = {r.name: r for r in count(spec, layers=True).layers}
    assert he.layer_products(rows["stem.conv"]) == [(32 * 32, 3 * 9, 16)]
    # the first conv of stage2 has stride 2: 16x16 outputs of 16-channel 3x3 patches
    assert he.layer_products(rows["stage2.block1.conv1"]) == [(16 * 16, 16 * 9, 32)]
    assert he.layer_products(rows["stage2.block1.shortcut.conv"]) == [(16 * 16, 16, 32)]
    assert he.layer_products(rows["fc"]) == [(1, 128, 10)]
    assert he.layer_products(rows["stage1.block1.relu1"]) == []
    counts = he.layer_counts(rows["stem.conv"])
    one = he.blocking(1024, 27, 16)
    assert counts == {"he_sent": 2 * one.sent, "he_outputs": 2 * one.outputs,
                      "he_response": 2 * one.response, "he_automorphisms": 2 * one.automorphisms,
                      "he_muls": 2 * one.muls}


def test_grouped_convs_count_one_product_per_group():
    spec = parse("regnetx-200mf", input_size=32, num_classes=10)
    grouped = [r for r in count(spec, layers=True).layers if r.kind == "conv" and r.groups > 1]
    assert grouped
    r = grouped[0]
    prods = he.layer_products(r)
    assert len(prods) == r.groups
    assert prods[0] == (r.shape[1] * r.shape[2], r.in_shape[0] // r.groups * 9,
                        r.shape[0] // r.groups)


def test_bad_dims_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        he.blocking(0, 3, 3)


@pytest.mark.slow
@pytest.mark.parametrize("cin,cout,size,k,stride", [(16, 16, 32, 3, 1), (8, 24, 8, 3, 2),
                                                    (32, 8, 8, 1, 1)])
def test_spu_chooses_the_same_blocks(cin, cout, size, k, stride, capfd):
    """Run the conv under SPU's Cheetah simulator and read the block shape it logs."""
    pytest.importorskip("spu")
    import numpy as np

    from deepreshape.pi import engine
    from deepreshape.pi.export import conv2d

    rng = np.random.default_rng(0)
    w = rng.normal(size=(cout, cin, k, k)).astype(np.float32)
    x = rng.normal(size=(1, cin, size, size)).astype(np.float32)
    engine.run_simulated(lambda p, x: conv2d(x, p["w"], None, stride), {"w": w}, x, "cheetah")
    logged = re.findall(r"1@(\d+)x(\d+)x(\d+) => (\d+)x(\d+)x(\d+)", capfd.readouterr().out)
    assert logged, "SPU logged no Cheetah matrix product"
    out = (size + 2 * (k // 2) - k) // stride + 1
    dims = (out * out, cin * k * k, cout)
    for got in logged:
        assert tuple(map(int, got[:3])) == dims
        assert tuple(map(int, got[3:])) == he.blocking(*dims).block


@pytest.mark.slow
def test_grouped_convs_run_under_spu_as_one_product_per_group(capfd):
    """RegNet-X's grouped convs: SPU 0.9.5 rejects JAX's grouped lowering, so the export
    writes one conv per group; SPU then logs exactly the products the cost model counts."""
    pytest.importorskip("spu")
    import numpy as np

    from deepreshape.count import LayerCount
    from deepreshape.pi import engine
    from deepreshape.pi.export import conv2d

    rng = np.random.default_rng(0)
    groups, cin, cout, size = 4, 16, 16, 8
    w = rng.normal(size=(cout, cin // groups, 3, 3)).astype(np.float32)
    x = rng.normal(size=(1, cin, size, size)).astype(np.float32)

    def fn(p, x):
        return conv2d(x, p["w"], None, 1, groups)

    secure = engine.run_simulated(fn, {"w": w}, x, "cheetah")
    np.testing.assert_allclose(secure, engine.plain_logits(fn, {"w": w}, x), atol=1e-3)
    logged = re.findall(r"1@(\d+)x(\d+)x(\d+) => ", capfd.readouterr().out)
    row = LayerCount("c", "conv", "stage1", (cout, size, size), in_shape=(cin, size, size),
                     kernel=3, stride=1, groups=groups)
    per_direction = he.layer_products(row)
    assert sorted(tuple(map(int, g)) for g in logged) == sorted(per_direction * 2)
