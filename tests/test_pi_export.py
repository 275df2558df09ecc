"""The spec-built JAX export equals the torch module (eval) for every family and slot kind."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")

from deepreshape import UsageError, build, parse  # noqa: E402
from deepreshape.build import MaskedReLU, Net, ReLUReuse  # noqa: E402
from deepreshape.pi.export import export, export_model, plain_logits, relu_on  # noqa: E402
from deepreshape.spec import NetSpec, Stage  # noqa: E402

jax.config.update("jax_enable_x64", False)

FAMILIES = ["resnet18-m8", "resnet50-m8", "hrn-2x5x2x-m8", "wrn16x2", "regnetx-200mf-d1,1,1,1",
            "resnet34-convnext-m8-d1,1,1,1"]


def _spec(name: str, slots: dict[str, str] | None = None) -> NetSpec:
    spec = parse(name, dataset="digits", input_size=16)
    return spec.with_slots(slots) if slots else spec


def _randomized(spec: NetSpec, seed: int = 0) -> Net:
    """A model in eval() whose BN stats/affines, reuse convs and masks are all non-trivial."""
    torch.manual_seed(seed)
    model = build(spec)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.6, 1.2)
                m.bias.normal_(0.0, 0.2)
            elif isinstance(m, ReLUReuse):
                for conv in (m.conv_relu, m.conv_lin) if m.factor > 2 else ():
                    if conv is not None:
                        conv.weight.add_(0.1 * torch.randn_like(conv.weight))
            elif isinstance(m, MaskedReLU):
                kept = int(m.mask.sum())
                flat = torch.zeros(m.mask.numel())
                flat[torch.randperm(m.mask.numel())[:kept]] = 1.0
                m.mask.copy_(flat.view_as(m.mask))
    return model.eval()


def _assert_matches(spec: NetSpec, seed: int = 0) -> None:
    model = _randomized(spec, seed)
    x = torch.randn(2, spec.in_channels, spec.input_size, spec.input_size)
    with torch.no_grad():
        want = model(x).numpy()
    fn, params = export_model(model)
    assert all(v.dtype == np.float32 for v in params.values())
    got = plain_logits(fn, params, x)
    assert got.shape == want.shape == (2, spec.num_classes)
    assert np.abs(got - want).max() < 1e-4, (spec.describe(), np.abs(got - want).max())


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_matches_torch(name: str) -> None:
    _assert_matches(_spec(name))


@pytest.mark.parametrize(("name", "slots"), [
    ("resnet18-m8", {"stage2.*": "identity"}),
    ("resnet18-m8", {"*.relu1": "reuse:4"}),
    ("resnet18-m8", {"*.relu1": "reuse:2"}),
    ("resnet18-m8", {"stage1.block1.relu2": "reuse:8", "stage4.*.relu1": "reuse:3"}),
    ("resnet18-m8", {"stem.relu": "mask:pixel:300", "stage3.block2.relu1": "mask:channel:9"}),
    ("resnet50-m8", {"stage2.*.relu2": "reuse:4", "stage3.*.relu3": "mask:pixel:100"}),
    ("wrn16x2", {"stage1.*.relu1": "reuse:4", "stage3.post.relu": "mask:channel:50",
                 "stage2.block1.relu1": "identity"}),
    ("regnetx-200mf-d1,1,1,1", {"stage1.block1.relu2": "mask:channel:7", "stage3.*": "identity"}),
])
def test_changed_slots_match_torch(name: str, slots: dict[str, str]) -> None:
    _assert_matches(_spec(name, slots), seed=1)


def test_bn_is_folded_and_preact_bn_is_an_affine() -> None:
    _, params = export_model(_randomized(_spec("resnet18-m8")))
    assert not any(".bn" in k for k in params)
    assert params["stem.conv.bias"].shape == (8,)
    _, params = export_model(_randomized(_spec("wrn16x2")))
    assert {"stage1.block1.bn1.scale", "stage1.block1.bn1.shift", "stage3.post.bn.scale"} <= set(params)
    assert "stage1.block1.bn2.scale" not in params and "stage1.block1.conv1.bias" in params


def test_linearized_slots_cost_no_comparisons() -> None:
    """Culled slots emit no max; a mask compares only its kept elements."""
    all_identity = {"*": "identity"}
    fn, params = export_model(_randomized(_spec("resnet18-m8", all_identity)))
    jaxpr = str(jax.make_jaxpr(fn)(params, np.zeros((2, 3, 16, 16), np.float32)))
    assert " max " not in jaxpr
    x = np.array([[-1.0, -2.0, 3.0, -4.0]], np.float32).reshape(1, 1, 2, 2)
    out = np.asarray(relu_on(jax.numpy.asarray(x), np.array([0, 2])))
    assert out.ravel().tolist() == [0.0, -2.0, 3.0, -4.0]


def _one_line_error(spec: NetSpec, sd: dict) -> str:
    with pytest.raises(UsageError) as err:
        export(spec, sd)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_bad_state_dicts_give_one_line_usage_errors() -> None:
    spec = _spec("resnet18-m8", {"stem.relu": "mask:pixel:10"})
    sd = dict(build(spec).state_dict())
    missing = {k: v for k, v in sd.items() if k != "stage2.block1.bn1.running_var"}
    assert "stage2.block1.bn1.running_var" in _one_line_error(spec, missing)
    bad = {**sd, "stage1.block1.conv1.weight": torch.zeros(8, 8, 1, 1)}
    msg = _one_line_error(spec, bad)
    assert "stage1.block1.conv1.weight" in msg and "(8, 8, 1, 1)" in msg and "(8, 8, 3, 3)" in msg
    assert "extra.weight" in _one_line_error(spec, {**sd, "extra.weight": torch.zeros(1)})
    assert "mask" in _one_line_error(spec, {**sd, "stem.relu.mask": torch.ones(8, 16, 16)})
    odd = dataclasses.replace(spec, stages=(Stage("dense", 1, 8, 1),) + spec.stages[1:])
    assert "dense" in _one_line_error(odd, sd)
    with pytest.raises(UsageError):
        export("resnet18", sd)  # type: ignore[arg-type]
