"""Spec -> plain `torch.nn.Module`.

Module paths equal slot addresses (``model.get_submodule("stage2.block1.relu1")``), so
methods find a slot by its address and the JAX exporter reads weights by the same names.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from deepreshape.slotkinds import SlotInfo, SlotKind
from deepreshape.slotkinds.reuse import reuse_split
from deepreshape.spec import NetSpec, Stage, relu_slots


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free 3x3 convolution with 'same' padding (BN follows it)."""
    return nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 1x1 convolution, for projections and bottleneck bodies."""
    return nn.Conv2d(cin, cout, 1, stride, 0, bias=False)


# --------------------------------------------------------------------------- ReLU slots
# The modules of the built-in slot kinds that are more than one torch layer; which module
# a slot gets is its kind's choice (`deepreshape.slotkinds`).


class ReLUReuse(nn.Module):
    """ReLU-reuse (paper, Section 4 and Appendix E): only C/N channels go through a ReLU.

    Channels split into three groups whose number does not depend on N: a quarter is
    reused as it is; C/N channels pass a 3x3 conv + BN + ReLU; the rest pass a linear
    3x3 conv + BN that also sees the ReLU group's output (the hierarchical connection of
    Res2Net), so it widens the receptive field without a non-linearity. N = 2 is the
    paper's naive split: half passed through, half through a ReLU, no convolution.
    The convs start as identities (Dirac), so a trained network with a slot switched to
    reuse starts close to where it was.
    """

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.channels, self.factor = channels, factor
        self.n_reuse, self.n_relu, self.n_lin = reuse_split(channels, factor)
        self.relu = nn.ReLU()
        if factor > 2:
            self.conv_relu = conv3x3(self.n_relu, self.n_relu)
            self.bn_relu = nn.BatchNorm2d(self.n_relu)
            self.conv_lin = conv3x3(self.n_lin + self.n_relu, self.n_lin) if self.n_lin else None
            self.bn_lin = nn.BatchNorm2d(self.n_lin) if self.n_lin else None
            with torch.no_grad():
                nn.init.dirac_(self.conv_relu.weight)
                if self.conv_lin is not None:
                    self.conv_lin.weight.zero_()
                    nn.init.dirac_(self.conv_lin.weight[:, : self.n_lin])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reuse, ReLU and linear channel groups, concatenated back in channel order."""
        a, b, c = torch.split(x, [self.n_reuse, self.n_relu, self.n_lin], dim=1)
        if self.factor == 2:
            return torch.cat([a, self.relu(b)], dim=1)
        b = self.relu(self.bn_relu(self.conv_relu(b)))
        if self.conv_lin is None:
            return torch.cat([a, b], dim=1)
        c = self.bn_lin(self.conv_lin(torch.cat([c, b], dim=1)))
        return torch.cat([a, b, c], dim=1)

    def extra_repr(self) -> str:
        """Channels and reuse factor, for `print(model)`."""
        return f"channels={self.channels}, factor={self.factor}"


class MaskedReLU(nn.Module):
    """SNL's linearized ReLU with a fixed binary mask: y = m*relu(x) + (1-m)*x, or with a
    polynomial replacement of degree D (``mask:G:K:polyD``) y = m*relu(x) + (1-m)*p(x),
    p a per-channel polynomial as `PolyAct`'s (its coefficients in ``coef``; no `PolyAct`
    submodule, so the forward-hook count sees only the dropped positions as polynomials).

    The mask is a buffer of shape (C,H,W) (pixel) or (C,1,1) (channel); checkpoints
    carry the kept positions. Built from a spec alone it keeps the first K positions.
    """

    def __init__(self, info: SlotInfo, granularity: str, kept: int, degree: int = 0) -> None:
        super().__init__()
        self.granularity = granularity
        self.degree = degree
        self.coef = nn.Parameter(relu_fit(degree, info.channels)) if degree else None
        shape = (info.channels, 1, 1) if granularity == "channel" else (
            info.channels, info.height, info.width)
        mask = torch.zeros(shape).flatten()
        mask[:kept] = 1.0
        self.register_buffer("mask", mask.view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU where the mask is 1, identity (or the polynomial) elsewhere."""
        m = self.mask.to(x.dtype)
        return m * torch.relu(x) + (1 - m) * (x if self.coef is None else horner(self.coef, x))

    def extra_repr(self) -> str:
        """Granularity and kept positions, for `print(model)`."""
        poly = f", dropped positions: degree {self.degree}" if self.degree else ""
        return f"granularity={self.granularity}, kept={int(self.mask.sum())}{poly}"


def relu_fit(degree: int, channels: int) -> torch.Tensor:
    """(degree + 1, channels) coefficients, highest power first: ReLU's least-squares fit
    on a standard normal input (`slotkinds.poly.RELU_FIT`) in every channel."""
    from deepreshape.slotkinds.poly import RELU_FIT

    return torch.tensor(RELU_FIT[degree], dtype=torch.float32)[:, None].repeat(1, channels)


def horner(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The per-channel polynomial with `coef` ((degree + 1, C), highest power first) at x
    (N, C, H, W), in Horner form: the products the PI export computes."""
    c = coef.to(x.dtype)[:, None, :, None, None]  # (degree+1, 1, C, 1, 1)
    y = c[0].expand_as(x)
    for k in range(1, coef.shape[0]):
        y = y * x + c[k]
    return y


class PolyAct(nn.Module):
    """A polynomial activation per channel in place of a ReLU (slot kinds ``poly1`` and
    ``poly2``, `deepreshape.slotkinds.poly`): ``(a*x + b)*x + c`` for degree 2, ``b*x + c``
    for degree 1, evaluated in Horner form as the PI export does.

    `coef` has one row per power, highest first, and one column per channel; it starts
    from the least-squares fit of ReLU on a standard normal input (`poly.RELU_FIT`).
    """

    def __init__(self, channels: int, degree: int) -> None:
        super().__init__()
        self.degree = degree
        self.coef = nn.Parameter(relu_fit(degree, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Horner's form, per channel."""
        return horner(self.coef, x)

    def extra_repr(self) -> str:
        """Degree and channels, for `print(model)`."""
        return f"degree={self.degree}, channels={self.coef.shape[1]}"


@torch.no_grad()
def fit_polys_to_relu(model: nn.Module, batches: Any) -> int:
    """Refit every polynomial slot of `model` (a `PolyAct`, or a `MaskedReLU` whose dropped
    positions are polynomial) to ReLU on the inputs it sees: run `batches` (an iterable of
    input tensors) through the model in eval mode, and set each channel's coefficients to
    the least-squares fit of relu(x) over that channel's inputs (a mask's dropped positions
    only): AutoReP's distribution-aware initialization. Returns the slots refitted."""
    polys = {name: m for name, m in model.named_modules()
             if isinstance(m, PolyAct) or (isinstance(m, MaskedReLU) and m.degree)}
    moments: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            c = inp[0].shape[1]
            x = inp[0].detach().double().transpose(0, 1).reshape(c, -1)  # (C, N)
            w = torch.ones_like(x)  # which inputs the polynomial computes
            if isinstance(mod, MaskedReLU):
                dropped = (1 - mod.mask.double()).expand(inp[0].shape[1:])
                w = dropped[None].expand(inp[0].shape).transpose(0, 1).reshape(c, -1)
            powers = torch.stack([x ** k for k in range(mod.degree, -1, -1)], 1)  # (C, d+1, N)
            r = torch.relu(x)[:, None, :]
            gram = (powers * w[:, None]) @ powers.transpose(1, 2)  # (C, d+1, d+1)
            rhs = (powers * r * w[:, None]).sum(-1)  # (C, d+1)
            acc = torch.cat([gram, rhs[:, :, None]], 2)
            moments[name] = moments[name] + acc if name in moments else acc
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in polys.items()]
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for name, acc in moments.items():
        gram, rhs = acc[:, :, :-1], acc[:, :, -1:]
        ridge = 1e-9 * torch.eye(gram.shape[1], dtype=gram.dtype)  # a constant channel stays solvable
        coef = torch.linalg.solve(gram + ridge, rhs)[:, :, 0]  # (C, d+1)
        polys[name].coef.copy_(coef.T.to(polys[name].coef.dtype))
    return len(moments)


def make_slot(kind: SlotKind, info: SlotInfo) -> nn.Module:
    """The module for one ReLU slot of the given kind (its `SlotKindDef.module`)."""
    return kind.definition.module(kind, info)


# --------------------------------------------------------------------------- blocks


class BasicBlock(nn.Module):
    """ResNet's two-3x3-conv residual block; its two ReLUs are slots `relu1`, `relu2`."""

    def __init__(self, cin: int, cout: int, stride: int, slots: dict[str, nn.Module]) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.relu1 = slots["relu1"]
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut = _projection(cin, cout, stride, bn=True)
        self.relu2 = slots["relu2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv-BN-relu1-conv-BN, plus the shortcut, then relu2."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + (self.shortcut(x) if self.shortcut is not None else x))


class Bottleneck(nn.Module):
    """ResNet v1.5 / RegNet-X bottleneck: 1x1 -> 3x3 (stride, groups) -> 1x1."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int, groups: int,
                 slots: dict[str, nn.Module]) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv1x1(cin, inner), nn.BatchNorm2d(inner)
        self.relu1 = slots["relu1"]
        self.conv2, self.bn2 = conv3x3(inner, inner, stride, groups), nn.BatchNorm2d(inner)
        self.relu2 = slots["relu2"]
        self.conv3, self.bn3 = conv1x1(inner, cout), nn.BatchNorm2d(cout)
        self.shortcut = _projection(cin, cout, stride, bn=True)
        self.relu3 = slots["relu3"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """1x1-3x3-1x1 body plus the shortcut, then relu3."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + (self.shortcut(x) if self.shortcut is not None else x))


class PreActBlock(nn.Module):
    """WideResNet block: BN-ReLU-conv-BN-ReLU-conv; a projection (no BN) takes the
    activated input when the shape changes, the raw input otherwise (Zagoruyko &
    Komodakis; the code SNL uses)."""

    def __init__(self, cin: int, cout: int, stride: int, slots: dict[str, nn.Module]) -> None:
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(cin), slots["relu1"]
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), slots["relu2"]
        self.conv2 = conv3x3(cout, cout)
        self.shortcut = _projection(cin, cout, stride, bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation body (BN-ReLU before each conv) plus the shortcut."""
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return out + (self.shortcut(act) if self.shortcut is not None else x)


def _projection(cin: int, cout: int, stride: int, bn: bool) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    if not bn:
        return conv1x1(cin, cout, stride)
    return nn.Sequential(OrderedDict(conv=conv1x1(cin, cout, stride), bn=nn.BatchNorm2d(cout)))


# --------------------------------------------------------------------------- network


class Net(nn.Module):
    """A zoo network: stem, stage1..stageD, global average pool, linear head.

    A plain module: `spec` is kept for reference only; forward uses no spec logic.
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        slots = {s.address: make_slot(spec.slot_kind(s.address), s) for s in relu_slots(spec)}
        stem = OrderedDict(conv=conv3x3(spec.in_channels, spec.stem.width, spec.stem.stride))
        if spec.stem.bn_relu:
            stem.update(bn=nn.BatchNorm2d(spec.stem.width), relu=slots["stem.relu"])
        self.stem = nn.Sequential(stem)
        cin = spec.stem.width
        for k, st in enumerate(spec.stages, start=1):
            blocks: OrderedDict[str, nn.Module] = OrderedDict()
            for b in range(1, st.depth + 1):
                prefix = f"stage{k}.block{b}."
                mine = {a[len(prefix):]: m for a, m in slots.items() if a.startswith(prefix)}
                blocks[f"block{b}"] = _block(st, cin if b == 1 else st.width,
                                             st.stride if b == 1 else 1, mine)
            if spec.final_relu and k == len(spec.stages):
                blocks["post"] = nn.Sequential(OrderedDict(
                    bn=nn.BatchNorm2d(st.width), relu=slots[f"stage{k}.post.relu"]))
            self.add_module(f"stage{k}", nn.Sequential(blocks))
            cin = st.width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, spec.num_classes)
        _init_weights(self)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The stage modules in order (`stage1` .. `stageD`)."""
        return [getattr(self, f"stage{k}") for k in range(1, len(self.spec.stages) + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: stem, stages, global average pool, linear head."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _block(st: Stage, cin: int, stride: int, slots: dict[str, nn.Module]) -> nn.Module:
    if st.block == "basic":
        return BasicBlock(cin, st.width, stride, slots)
    if st.block == "bottleneck":
        return Bottleneck(cin, st.inner, st.width, stride, st.groups, slots)
    return PreActBlock(cin, st.width, stride, slots)


def _init_weights(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and not isinstance(_parent(model, name), ReLUReuse):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _parent(model: nn.Module, name: str) -> nn.Module | None:
    return model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None


def build(spec: NetSpec) -> Net:
    """Build the plain `torch.nn.Module` for a spec."""
    return Net(spec)


def create_model(name: str, **kwargs) -> Net:
    """timm-style: parse a zoo name (with `parse`'s keyword overrides) and build it."""
    from deepreshape.zoo import parse

    return build(parse(name, **kwargs))
