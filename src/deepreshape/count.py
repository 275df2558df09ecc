"""ReLUs, MACs and parameters, counted two independent ways.

`count(spec)` derives every number analytically from the spec (no module is built);
`count_module(model, spec)` runs the built module once with forward hooks. Tests hold the
two equal for the whole zoo. Conventions: stage1 includes the stem, whose ReLUs are also
reported alone as `stem_relus`; MACs are multiply-accumulates of conv and linear layers
(one MAC = two FLOPs in `torch.utils.flop_counter`); parameters include BatchNorm affine
weights, not running statistics. The linear classifier is reported as `head`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from deepreshape.slotkinds import SLOT_KINDS, SlotInfo
from deepreshape.spec import NetSpec, Stage, conv_out, relu_slots, stage_io

if TYPE_CHECKING:  # torch is imported by `count_module` only: counting from a spec needs none
    import torch
    from torch import nn


@dataclass(frozen=True)
class LayerCount:
    """Counts of one conv, BN, ReLU slot or linear layer (`count(..., layers=True)`)."""

    name: str  # module path
    kind: str  # conv | bn | relu (a ReLU slot, of any slot kind) | linear
    stage: str  # stage1..stageD or head
    shape: tuple[int, int, int]  # output C, H, W
    relus: int = 0
    macs: int = 0
    params: int = 0
    in_shape: tuple[int, int, int] = (0, 0, 0)  # conv/linear input C, H, W
    kernel: int = 0  # conv kernel side (square), 0 for other kinds
    stride: int = 1
    groups: int = 1
    polys: int = 0  # activations a polynomial computes instead of a ReLU (`SlotKindDef.polys`)


@dataclass(frozen=True)
class StageCount:
    """Totals of one stage (stage1 includes the stem) or of the head."""

    name: str
    relus: int
    macs: int
    params: int
    polys: int = 0


@dataclass(frozen=True)
class Counts:
    """Exact ReLUs, MACs and parameters of a network, in total and per stage."""

    arch: str
    input_size: int
    num_classes: int
    relus: int
    macs: int
    params: int
    stem_relus: int
    stages: tuple[StageCount, ...]
    head: StageCount
    layers: tuple[LayerCount, ...] = ()
    polys: int = 0  # polynomial activations (never free: each costs secure products)

    def to_dict(self, layers: bool = False) -> dict:
        """A JSON-ready dict; per-layer rows only when `layers` is true."""
        d = {
            "arch": self.arch,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "relus": self.relus,
            "macs": self.macs,
            "params": self.params,
            "polys": self.polys,
            "stem_relus": self.stem_relus,
            "stages": [asdict(s) for s in self.stages],
            "head": asdict(self.head),
        }
        if layers:
            d["layers"] = [asdict(x) for x in self.layers]
        return d

    def stage(self, name: str) -> StageCount:
        """The `StageCount` named `name`, e.g. 'stage2'."""
        return next(s for s in self.stages if s.name == name)


def conv_row(name: str, stage: str, cin: int, cout: int, k: int, res_in: int, stride: int = 1,
          groups: int = 1) -> LayerCount:
    """A k x k convolution with 'same' padding k // 2 on a res_in x res_in input."""
    res = conv_out(res_in, k, stride, k // 2)
    return LayerCount(name, "conv", stage, (cout, res, res),
                      macs=cout * res * res * (cin // groups) * k * k,
                      params=cout * (cin // groups) * k * k,
                      in_shape=(cin, res_in, res_in), kernel=k, stride=stride, groups=groups)


def bn_row(name: str, stage: str, c: int, res: int) -> LayerCount:
    """A BatchNorm on c channels of a res x res input (2c affine parameters)."""
    return LayerCount(name, "bn", stage, (c, res, res), params=2 * c)


def _slot(spec: NetSpec, info: SlotInfo) -> list[LayerCount]:
    """The slot's row (its ReLUs, from its kind's definition), plus the layers the kind
    adds (ReLU-reuse's convs)."""
    kind = spec.slot_kind(info.address)
    d = kind.definition
    return [LayerCount(info.address, "relu", info.stage_name,
                       (info.channels, info.height, info.width), relus=d.relus(kind, info),
                       params=d.params(kind, info), polys=d.polys(kind, info)),
            *d.layers(kind, info)]


def layer_table(spec: NetSpec) -> list[LayerCount]:
    """Every conv, BN, ReLU slot and linear layer in forward order, counted analytically."""
    slots = {s.address: s for s in relu_slots(spec)}
    r0 = conv_out(spec.input_size, 3, spec.stem.stride, 1)
    m = spec.stem.width
    rows = [conv_row("stem.conv", "stage1", spec.in_channels, m, 3, spec.input_size, spec.stem.stride)]
    if spec.stem.bn_relu:
        rows += [bn_row("stem.bn", "stage1", m, r0)] + _slot(spec, slots["stem.relu"])
    cout = m
    for k, st, cin, res in stage_io(spec):
        for b in range(1, st.depth + 1):
            c_in = cin if b == 1 else st.width
            stride = st.stride if b == 1 else 1
            rows += _block_rows(spec, slots, st, f"stage{k}.block{b}", f"stage{k}", c_in, stride, res)
            res = conv_out(res, 3, stride, 1)
        if spec.final_relu and k == len(spec.stages):
            rows += [bn_row(f"stage{k}.post.bn", f"stage{k}", st.width, res)]
            rows += _slot(spec, slots[f"stage{k}.post.relu"])
        cout = st.width
    n = spec.num_classes
    rows.append(LayerCount("fc", "linear", "head", (n, 1, 1), macs=cout * n, params=cout * n + n,
                           in_shape=(cout, 1, 1)))
    return rows


def _block_rows(spec: NetSpec, slots: dict[str, SlotInfo], st: Stage, p: str, stage: str,
                cin: int, stride: int, res: int) -> list[LayerCount]:
    out = conv_out(res, 3, stride, 1)
    w = st.width
    proj = stride != 1 or cin != w
    if st.block == "basic":
        rows = [conv_row(f"{p}.conv1", stage, cin, w, 3, res, stride), bn_row(f"{p}.bn1", stage, w, out),
                *_slot(spec, slots[f"{p}.relu1"]),
                conv_row(f"{p}.conv2", stage, w, w, 3, out), bn_row(f"{p}.bn2", stage, w, out)]
        if proj:
            rows += [conv_row(f"{p}.shortcut.conv", stage, cin, w, 1, res, stride),
                     bn_row(f"{p}.shortcut.bn", stage, w, out)]
        return rows + _slot(spec, slots[f"{p}.relu2"])
    if st.block == "bottleneck":
        i = st.inner
        rows = [conv_row(f"{p}.conv1", stage, cin, i, 1, res), bn_row(f"{p}.bn1", stage, i, res),
                *_slot(spec, slots[f"{p}.relu1"]),
                conv_row(f"{p}.conv2", stage, i, i, 3, res, stride, st.groups),
                bn_row(f"{p}.bn2", stage, i, out),
                *_slot(spec, slots[f"{p}.relu2"]),
                conv_row(f"{p}.conv3", stage, i, w, 1, out), bn_row(f"{p}.bn3", stage, w, out)]
        if proj:
            rows += [conv_row(f"{p}.shortcut.conv", stage, cin, w, 1, res, stride),
                     bn_row(f"{p}.shortcut.bn", stage, w, out)]
        return rows + _slot(spec, slots[f"{p}.relu3"])
    rows = [bn_row(f"{p}.bn1", stage, cin, res), *_slot(spec, slots[f"{p}.relu1"]),
            conv_row(f"{p}.conv1", stage, cin, w, 3, res, stride), bn_row(f"{p}.bn2", stage, w, out),
            *_slot(spec, slots[f"{p}.relu2"]), conv_row(f"{p}.conv2", stage, w, w, 3, out)]
    if proj:
        rows.append(conv_row(f"{p}.shortcut", stage, cin, w, 1, res, stride))
    return rows


def _aggregate(spec: NetSpec, rows: list[LayerCount], stem_relus: int,
               keep_layers: bool) -> Counts:
    names = [f"stage{k}" for k in range(1, len(spec.stages) + 1)]
    acc = {n: [0, 0, 0, 0] for n in [*names, "head"]}
    for r in rows:
        a = acc[r.stage]
        a[0] += r.relus
        a[1] += r.macs
        a[2] += r.params
        a[3] += r.polys
    stages = tuple(StageCount(n, *acc[n]) for n in names)
    head = StageCount("head", *acc["head"])
    return Counts(
        arch=spec.describe(), input_size=spec.input_size, num_classes=spec.num_classes,
        relus=sum(s.relus for s in stages) + head.relus,
        macs=sum(s.macs for s in stages) + head.macs,
        params=sum(s.params for s in stages) + head.params,
        stem_relus=stem_relus, stages=stages, head=head,
        layers=tuple(rows) if keep_layers else (),
        polys=sum(s.polys for s in stages) + head.polys,
    )


def count(spec: NetSpec, layers: bool = False) -> Counts:
    """Exact ReLUs / MACs / params per stage and in total, from the spec alone."""
    rows = layer_table(spec)
    stem = sum(r.relus for r in rows if r.name == "stem.relu")
    return _aggregate(spec, rows, stem, layers)


# --------------------------------------------------------------------------- hooks


def _stage_of(name: str) -> str:
    top = name.split(".", 1)[0]
    return "stage1" if top == "stem" else ("head" if top in ("fc", "pool") else top)


def count_module(model: nn.Module, spec: NetSpec, layers: bool = False) -> Counts:
    """Count by running `model` once on a zero image with forward hooks.

    Independent of `count`: ReLUs are what each slot kind's module says it evaluated in
    the forward pass (`SlotKindDef.hook_relus`: the elements that pass an `nn.ReLU`, the
    non-zero mask entries of a masked slot), MACs come from each conv/linear call's
    actual input and output shapes, parameters from `model.named_parameters()`.
    """
    import torch
    from torch import nn

    counted = [(t, d) for d in SLOT_KINDS for t in d.module_types()]  # slot modules' ReLUs
    rows: list[LayerCount] = []

    def hook(name: str):
        def fn(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            shape = tuple(out.shape[1:]) if out.dim() == 4 else (out.shape[1], 1, 1)
            per = out[0].numel()
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1]
                rows.append(LayerCount(name, "conv", _stage_of(name), shape,
                                       macs=per * inp[0].shape[1] // mod.groups * k,
                                       in_shape=tuple(inp[0].shape[1:]), kernel=mod.kernel_size[0],
                                       stride=mod.stride[0], groups=mod.groups))
            elif isinstance(mod, nn.Linear):
                rows.append(LayerCount(name, "linear", _stage_of(name), shape,
                                       macs=mod.in_features * mod.out_features,
                                       in_shape=(mod.in_features, 1, 1)))
            else:
                d = next((d for t, d in counted if type(mod) is t), None) or next(
                    d for t, d in counted if isinstance(mod, t))  # the most specific kind
                rows.append(LayerCount(name, "relu", _stage_of(name), shape,
                                       relus=d.hook_relus(mod, out), polys=d.hook_polys(mod, out)))
        return fn

    types = (nn.Conv2d, nn.Linear, *(t for t, _ in counted))
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, types)]
    try:
        p = next(model.parameters())
        x = torch.zeros(1, spec.in_channels, spec.input_size, spec.input_size,
                        device=p.device, dtype=p.dtype)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(x)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    for name, prm in model.named_parameters():
        rows.append(LayerCount(name, "param", _stage_of(name), (0, 0, 0), params=prm.numel()))
    stem = sum(r.relus for r in rows if r.name.startswith("stem."))
    return _aggregate(spec, rows, stem, layers)


# --------------------------------------------------------------------------- Table 8


def normalized_stagewise(spec: NetSpec) -> dict[str, list[float]]:
    """Stage ReLUs and FLOPs normalized as in the paper's Table 8.

    ReLUs: the exact stage counts without the stem, scaled so that stage1 = 64.
    FLOPs: the idealized per-stage model of Table 2 (64 * phi-normalized products of
    squared multipliers over 4^(k-1)), printed beside the exact MACs (scaled the same way).
    """
    c = count(spec)
    relus = [s.relus for s in c.stages]
    relus[0] -= c.stem_relus
    stem_macs = spec.in_channels * spec.stem.width * 9 * conv_out(
        spec.input_size, 3, spec.stem.stride, 1) ** 2
    macs = [s.macs for s in c.stages]
    macs[0] -= stem_macs
    ideal, prod = [], 1.0
    for k, lam in enumerate((1, *spec.multipliers)):
        prod *= lam * lam
        ideal.append(64 * prod / 4**k * spec.depths[k] / spec.depths[0])
    return {
        "relus": [64 * r / relus[0] for r in relus],
        "flops_model": ideal,
        "macs_exact": [64 * m / macs[0] for m in macs],
    }
