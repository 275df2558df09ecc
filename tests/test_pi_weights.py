"""Server-owned weights (`--weights owned`, the default for Cheetah) against shared ones.

SPU's simulator ignores owners, so these run two real parties over brpc.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

pytest.importorskip("spu")
jax = pytest.importorskip("jax")

from deepreshape.count import LayerCount  # noqa: E402
from deepreshape.errors import UsageError  # noqa: E402
from deepreshape.pi import channel, party  # noqa: E402
from deepreshape.pi import engine as E  # noqa: E402
from deepreshape.pi.costs import costmodel, he  # noqa: E402
from deepreshape.pi.export import conv2d  # noqa: E402
from deepreshape.zoo import parse  # noqa: E402

pytestmark = pytest.mark.pi


def _parties() -> list[str]:
    return [f"127.0.0.1:{p}" for p in channel.free_ports(2)]


def _serve(program, params, parties, weights, log_path=None, errors=None):
    """The server in its own process (isolate), from a thread of the test."""
    def body():
        try:
            E.run_party("server", program, params, None, parties, weights=weights, timeout_s=300,
                        isolate=True, log_path=log_path)
        except Exception as e:  # noqa: BLE001 - reported by the test
            (errors if errors is not None else []).append(e)

    t = threading.Thread(target=body)
    t.start()
    return t


# --------------------------------------------------------------------------- fast


def test_weights_modes_and_their_defaults():
    assert set(E.WEIGHTS) == {"owned", "shared"}
    assert E.default_weights("cheetah") == "owned" and E.default_weights("semi2k") == "shared"
    assert E.runtime_config("cheetah").experimental_enable_colocated_optimization
    assert not E.runtime_config("cheetah", weights="shared").experimental_enable_colocated_optimization
    with pytest.raises(UsageError, match="weights mode"):
        E.runtime_config("cheetah", weights="public")


def test_owned_weights_halve_the_he_counts():
    row = LayerCount("c", "conv", "stage1", (16, 32, 32), in_shape=(16, 32, 32), kernel=3,
                     stride=1)
    one = he.blocking(1024, 144, 16)
    owned = he.layer_counts(row, he.directions("owned"))
    shared = he.layer_counts(row, he.directions("shared"))
    assert owned == {"he_sent": one.sent, "he_outputs": one.outputs, "he_response": one.response,
                     "he_automorphisms": one.automorphisms, "he_muls": one.muls}
    assert shared == {k: 2 * v for k, v in owned.items()}
    spec = parse("resnet18-m8", input_size=32, num_classes=10)
    f1, f2 = costmodel.features(spec, 1), costmodel.features(spec, 2)
    assert all(f2[k] == 2 * f1[k] for k in he.HE_COUNTS)
    assert f1["relus"] == f2["relus"] and f1["macs"] == f2["macs"]


def test_the_model_keys_coefficients_by_protocol_and_weights():
    assert costmodel.setting("cheetah") == costmodel.setting("cheetah", "owned") == "cheetah"
    assert costmodel.setting("cheetah", "shared") == "cheetah/shared-weights"
    assert costmodel.setting("semi2k") == "semi2k"
    assert costmodel.setting("semi2k", "owned") == "semi2k/owned-weights"
    for key in ("cheetah", "cheetah/shared-weights", "semi2k", "semi2k/owned-weights"):
        assert costmodel.setting(*costmodel.split_setting(key)) == key


# --------------------------------------------------------------------------- slow: real parties


def _conv(p, x):
    return conv2d(x, p["w"], None, 1)


@pytest.mark.slow
def test_owned_weights_run_one_he_product_per_conv_as_counted(tmp_path):
    """SPU logs each HE product's blocks once, on the side that encrypts: with shared
    weights both parties do (two products per conv), with owned ones only the client."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 16, 3, 3)).astype(np.float32)
    x = rng.normal(size=(1, 16, 32, 32)).astype(np.float32)
    program = E.compile_program(_conv, {"w": w}, x)
    plain = E.plain_logits(_conv, {"w": w}, x)
    row = LayerCount("c", "conv", "stage1", (16, 32, 32), in_shape=(16, 32, 32), kernel=3,
                     stride=1)
    dims = (1024, 144, 16)
    got = {}
    for mode in ("shared", "owned"):
        parties, logs = _parties(), {r: tmp_path / f"{mode}-{r}.log" for r in ("server", "client")}
        t = _serve(program, {"w": w}, parties, mode, logs["server"])
        res = E.run_party("client", program, None, x, parties, weights=mode, timeout_s=300,
                          isolate=True, log_path=logs["client"])
        t.join(60)
        assert res.weights == mode
        np.testing.assert_allclose(res.logits, plain, atol=2e-3)
        lines = {r: re.findall(r"1@(\d+)x(\d+)x(\d+) => (\d+)x(\d+)x(\d+)", p.read_text())
                 for r, p in logs.items()}
        runs = 1 + res.samples  # one cold run and the warm ones, all in the same log
        products = sum(len(v) for v in lines.values()) // runs
        assert products == he.directions(mode)
        for found in [*lines["server"], *lines["client"]]:
            assert tuple(map(int, found[:3])) == dims
            assert tuple(map(int, found[3:])) == he.blocking(*dims).block
        assert he.layer_counts(row, products)["he_sent"] == products * he.blocking(
            *dims).sent
        got[mode] = res
    # the server no longer sends its weights' share, and half the HE traffic is gone
    assert got["owned"].weight_share_bytes < 64 < got["shared"].weight_share_bytes
    assert got["owned"].total_bytes < 0.7 * got["shared"].total_bytes


def _net(p, x):
    dn = ("NCHW", "OIHW", "NCHW")
    y = jax.lax.conv_general_dilated(x, p["conv"]["w"], (1, 1), "SAME", dimension_numbers=dn)
    y = jax.numpy.maximum(y + p["conv"]["b"][None, :, None, None], 0.0)
    return y.reshape(y.shape[0], -1) @ p["dense"]["w"] + p["dense"]["b"]


@pytest.mark.slow
def test_with_owned_weights_the_clients_share_is_all_zeros_and_outputs_equal_plaintext(
        monkeypatch):
    rng = np.random.default_rng(1)
    params = {"conv": {"w": rng.normal(0, 0.3, (4, 3, 3, 3)), "b": rng.normal(0, 0.1, 4)},
              "dense": {"w": rng.normal(0, 0.1, (4 * 6 * 6, 10)), "b": rng.normal(0, 0.1, 10)}}
    params = jax.tree_util.tree_map(lambda a: a.astype(np.float32), params)
    x = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    program = E.compile_program(_net, params, x)
    seen = {}
    original = party._Party.share_inputs

    def share_and_look(self, rt, prog, own):  # the client runs in this process: look inside
        out = original(self, rt, prog, own)
        if self.role == "client":
            for name, shape in zip(party.param_names(len(prog.param_shapes)),
                                   prog.param_shapes, strict=True):
                share = rt.get_var(name)
                seen[name] = (bytes(share.meta), b"".join(map(bytes, share.share_chunks)),
                              int(np.prod(shape)))
        return out

    monkeypatch.setattr(party._Party, "share_inputs", share_and_look)
    parties, errors = _parties(), []
    t = _serve(program, params, parties, "owned", errors=errors)
    res = E.run_party("client", program, None, x, parties, timeout_s=300)  # owned by default
    t.join(60)
    assert not errors
    assert len(seen) == len(jax.tree_util.tree_leaves(params))
    for meta, data, numel in seen.values():
        assert b"Priv2k<FM64,0>" in meta  # a value the server (rank 0) owns
        assert data.endswith(bytes(8 * numel))  # the client's 64-bit ring elements: all zero
    plain = E.plain_logits(_net, params, x)
    assert np.max(np.abs(res.logits - plain)) < 1e-2
    assert (np.argmax(res.logits, 1) == np.argmax(plain, 1)).all()
    assert res.weights == "owned" and res.weight_share_bytes < 64


def test_owned_coefficients_transferred_from_shared_ones_use_the_owned_counts():
    coef = {"latency_s": {"relus": 1e-5, "he_sent": 0.01, "he_automorphisms": 5e-4, "fixed": 0.05},
            "bytes": {"relus": 100.0, "he_sent": 1.8e5, "he_response": 2.2e5, "fixed": 1e4}}
    nets = [costmodel.Network("resnet18-m4-d1,1,1,1", 16), costmodel.Network("hrn-2x2x2x-m4", 32)]
    records = []
    for n in nets:  # owned-mode "measurements" that follow the same per-operation costs
        f = costmodel.features(n.spec(), 1)
        records.append({"network": n.to_dict(), "latency_s": costmodel.apply(coef["latency_s"], f),
                        "total_bytes": costmodel.apply(coef["bytes"], f)})
    shared = costmodel.CostModel({"cheetah/shared-weights": coef}, {"measurements": {}})
    model = costmodel.transfer(shared, "cheetah/shared-weights", "cheetah", records,
                               targets=("bytes",), note="synthetic")
    spec = parse("resnet18-m8", input_size=32, num_classes=10)
    owned, old = model.predict(spec), model.predict(spec, "cheetah", "shared")
    assert owned["weights"] == "owned" and old["weights"] == "shared"
    assert owned["bytes"] == pytest.approx(costmodel.apply(coef["bytes"], costmodel.features(spec, 1)))
    assert owned["bytes"] < old["bytes"] and owned["latency_s"] < old["latency_s"]
    rep = model.meta["report"]["cheetah"]
    assert rep["derived_from"] == "cheetah/shared-weights" and set(rep["heldout_error"]) == {"bytes"}
    assert rep["heldout_error"]["bytes"]["max_abs"] < 1e-9 and rep["heldout_error"]["bytes"]["n"] == 2
    assert owned["heldout_error"] == rep["heldout_error"]
    with pytest.raises(UsageError, match="no coefficients"):
        costmodel.transfer(shared, "semi2k", "semi2k/owned-weights")
