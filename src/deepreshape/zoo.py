"""The zoo: network names and the specs they parse into.

``resnet18``, ``resnet18-m16-4x4x4x`` (BaseCh / StageCh), ``hrn-5x7x2x[-mM]`` (HybReNet),
``wrn22x8``, ``regnetx-400mf``, ``resnet34-convnext``, with suffixes for base channels,
multipliers, depths, widths and stem stride, and a ``[slot=kind,...]`` suffix for changed
ReLU slots (what `NetSpec.describe` writes, so every described network parses back). The
spec itself, its slots and its limits are `deepreshape.spec`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass

from deepreshape.errors import UsageError
from deepreshape.spec import NetSpec, Stage, Stem, check_ints, input_shape, relu_slots, validate

_RESNETS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


_CONVNEXT_DEPTHS = (3, 3, 9, 3)


_CONVNEXT_WIDTH = 96


# The seed paper's ConvNeXt-ified ResNets change the stages (depths 3:3:9:3, widths from 96),
# not the stem, which keeps ResNet's 64 channels: only then do its Section 4 Stage3 shares
# come out (ResNet34 30.2%, ResNet50 31%; a 96-channel stem gives 29.5% and 30.7%). Other
# stage widths (-mM, -w, channel scaling) keep the stem in the same 64:96 ratio.
_CONVNEXT_STEM = (64, 96)


# RegNet-X published parameters: depth, w0, wa, wm, group width (stem 32, bottleneck 1.0).
REGNETX: dict[str, tuple[int, int, float, float, int]] = {
    "200mf": (13, 24, 36.44, 2.49, 8),
    "400mf": (22, 24, 24.48, 2.54, 16),
    "600mf": (16, 48, 36.97, 2.24, 24),
    "800mf": (16, 56, 35.73, 2.28, 16),
    "1.6gf": (18, 80, 34.01, 2.25, 24),
}


ZOO: dict[str, str] = {
    "resnet18": "ResNet18, basic blocks [2,2,2,2], m=64, CIFAR stem",
    "resnet34": "ResNet34, basic blocks [3,4,6,3], m=64, CIFAR stem",
    "resnet50": "ResNet50 v1.5, bottlenecks [3,4,6,3] (stride on the 3x3), m=64, CIFAR stem",
    "resnet18-m16": "BaseCh: any resnet with base channels m (also resnet34-mM, resnet50-mM)",
    "resnet18-m16-4x4x4x": "StageCh: base channels m, stage multipliers alpha x beta x gamma",
    "hrn-5x7x2x": "HybReNet: ResNet18 depths, m=16, multipliers alpha x beta x gamma",
    "hrn-5x7x2x-m32": "HybReNet with other base channels",
    "wrn22x8": "WideResNet-Q-k, pre-activation (also wrn16x8, wrn28x10, wrn40x2, ...)",
    **{f"regnetx-{k}": f"RegNet-X {k.upper()}: depth {v[0]}, w0 {v[1]}, wa {v[2]}, wm {v[3]}, "
       f"group width {v[4]}; CIFAR stem 32" for k, v in REGNETX.items()},
    "resnet34-convnext": "ConvNeXt-ified ResNet34: depths [3,3,9,3], m=96, stem 64, basic blocks",
    "resnet50-convnext": "ConvNeXt-ified ResNet50: depths [3,3,9,3], m=96, stem 64, bottlenecks",
}


OVERRIDE_FORMS = ("suffixes: -mM (base channels), -AxBxCx (multipliers), -dA,B,C,D (depths), "
                  "-wA,B,C,D (widths), -s2 (stem stride)")


def regnetx_stages(depth: int, w0: int, wa: float, wm: float, gw: int, q: int = 8
                   ) -> tuple[list[int], list[int]]:
    """Stage widths and depths from RegNet's quantized linear rule (Radosavovic et al. 2020),
    with widths made divisible by the group width (bottleneck multiplier 1)."""
    widths: list[int] = []
    for i in range(depth):
        u = w0 + wa * i
        s = round(math.log(u / w0) / math.log(wm))
        widths.append(int(round(w0 * wm**s / q) * q))
    ws: list[int] = []
    ds: list[int] = []
    for w in widths:
        if ws and ws[-1] == w:
            ds[-1] += 1
        else:
            ws.append(w)
            ds.append(1)
    gs = [min(gw, w) for w in ws]
    ws = [int(round(w / g) * g) for w, g in zip(ws, gs, strict=True)]
    return ws, ds


_BASE_RE = re.compile(
    r"^(?:(?P<resnet>resnet(?:18|34|50))(?P<cnx>-convnext)?"
    r"|(?P<hrn>hrn)"
    r"|wrn(?P<wq>\d+)x(?P<wk>\d+)"
    r"|regnetx-(?P<rg>200mf|400mf|600mf|800mf|1\.6gf))"
)


@dataclass
class _Overrides:
    m: int | None = None
    mults: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    widths: tuple[int, ...] | None = None
    stem_stride: int | None = None


def _ints(text: str, what: str, name: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"bad {what} {text!r} in {name!r}: expected integers like 2,2,2,2") from None
    return check_ints(vals, what, f"in {name!r}")


def _parse_suffix(rest: str, name: str) -> _Overrides:
    ov = _Overrides()
    for tok in [t for t in rest.split("-") if t] if rest else []:
        if m := re.fullmatch(r"m(\d+)", tok):
            ov.m = _ints(m.group(1), "base channels", name)[0]
        elif re.fullmatch(r"(\d+x)+", tok):
            ov.mults = _ints(",".join(tok.rstrip("x").split("x")), "multipliers", name)
        elif m := re.fullmatch(r"d([\d,]+)", tok):
            ov.depths = _ints(m.group(1), "depths", name)
        elif m := re.fullmatch(r"w([\d,]+)", tok):
            ov.widths = _ints(m.group(1), "widths", name)
        elif m := re.fullmatch(r"s(\d+)", tok):
            ov.stem_stride = _ints(m.group(1), "stem stride", name)[0]
        else:
            raise UsageError(_unknown(name, f"unknown part {tok!r}"))
    return ov


def _unknown(name: str, why: str) -> str:
    forms = list(ZOO)
    close = difflib.get_close_matches(name, forms, n=3, cutoff=0.4)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return (f"unknown architecture {name!r} ({why}){hint} Valid forms: resnet18|34|50[-convnext], "
            f"hrn-AxBxCx, wrnQxk, regnetx-200mf..1.6gf; {OVERRIDE_FORMS}. "
            "See `deepreshape list`.")


def parse(
    name: str,
    *,
    dataset: str | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
    depths: tuple[int, ...] | list[int] | None = None,
    widths: tuple[int, ...] | list[int] | None = None,
    base_width: int | None = None,
    multipliers: tuple[int, ...] | list[int] | None = None,
    stem_stride: int | None = None,
) -> NetSpec:
    """Parse a zoo name (``resnet18-m16-4x4x4x``, ``hrn-5x7x2x-m32``, ``wrn22x8``,
    ``regnetx-400mf``, ``resnet34-convnext``, ...) into a `NetSpec`. The suffix ``-s2``
    gives the stem a stride of 2 (DeepReDuce's feature-map scaling).

    `dataset` fixes input size and classes (cifar10, cifar100, tinyimagenet, digits);
    `input_size`/`num_classes` override it. Keyword overrides act like name suffixes.
    """
    if not isinstance(name, str) or not name.strip():
        raise UsageError("empty architecture name; see `deepreshape list`")
    raw = name
    name = name.strip().lower()
    changed = _SLOT_SUFFIX.search(name)
    if changed:
        name = name[:changed.start()]
    m = _BASE_RE.match(name)
    if not m:
        raise UsageError(_unknown(raw, "unknown base"))
    rest = name[m.end():]
    if rest and not rest.startswith("-"):
        raise UsageError(_unknown(raw, f"unexpected {rest!r}"))
    ov = _parse_suffix(rest, raw)
    if base_width is not None:
        ov.m = check_ints([base_width], "base channels", "(base width)")[0]
    if multipliers is not None:
        ov.mults = check_ints(multipliers, "multipliers", "(--multipliers)")
    if depths is not None:
        ov.depths = check_ints(depths, "depths", "(--depths)")
    if widths is not None:
        ov.widths = check_ints(widths, "widths", "(--widths)")
    if stem_stride is not None:
        ov.stem_stride = check_ints([stem_stride], "stem stride", "(stem stride)")[0]
    size, classes = input_shape(dataset, input_size, num_classes)
    if m.group("resnet") or m.group("hrn"):
        spec = _resnet_like(m, ov, raw)
    elif m.group("wq"):
        spec = _wrn(int(m.group("wq")), int(m.group("wk")), ov, raw)
    else:
        spec = _regnetx(m.group("rg"), ov, raw)
    spec = dataclasses.replace(spec, input_size=size, num_classes=classes)
    if ov.stem_stride not in (None, 1):
        if ov.stem_stride > 4:
            raise UsageError(f"{raw!r}: stem stride must be 1..4, got {ov.stem_stride}")
        spec = dataclasses.replace(spec, name=f"{spec.name}-s{ov.stem_stride}",
                                   stem=dataclasses.replace(spec.stem, stride=ov.stem_stride))
    validate(spec)
    return _with_slot_suffix(spec, changed.group(1), raw) if changed else spec


_SLOT_SUFFIX = re.compile(r"\[([^\[\]]*)\]$")


def _with_slot_suffix(spec: NetSpec, text: str, raw: str) -> NetSpec:
    """Apply ``[stage1=identity,stage2.*.relu2=identity,stem.relu=mask:pixel:64]``, the slot
    changes as `NetSpec.describe` writes them, so a described network parses back. A bare
    ``stageK`` is every slot of stage K (the stem is in stage 1)."""
    changes: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        where, eq, kind = part.partition("=")
        if not eq or not where.strip() or not kind.strip():
            raise UsageError(f"{raw!r}: slot changes look like [stage1=identity,"
                             f"stage2.*.relu2=mask:pixel:64], got {part!r}")
        where = where.strip()
        if re.fullmatch(r"stage\d+", where):
            hits = [sl.address for sl in relu_slots(spec) if sl.stage_name == where]
            if not hits:
                raise UsageError(f"{raw!r}: {spec.name} has no ReLU slot in {where}")
            changes.update(dict.fromkeys(hits, kind.strip()))
        else:
            changes[where] = kind.strip()
    return spec.with_slots(changes)


def _stage_widths(m: int, mults: tuple[int, ...]) -> list[int]:
    ws = [m]
    for a in mults:
        ws.append(ws[-1] * a)
    return ws


def _resnet_like(match: re.Match, ov: _Overrides, raw: str) -> NetSpec:
    if match.group("hrn"):
        base, family, block, depths0, m0 = "hrn", "hrn", "basic", (2, 2, 2, 2), 16
        if ov.mults is None:
            raise UsageError(_unknown(raw, "HybReNet names need multipliers, e.g. hrn-5x7x2x"))
    else:
        base = match.group("resnet")
        block, depths0 = _RESNETS[base]
        family, m0 = "resnet", 64
        if match.group("cnx"):
            base, family, depths0, m0 = f"{base}-convnext", "convnext", _CONVNEXT_DEPTHS, _CONVNEXT_WIDTH
    depths = ov.depths or depths0
    m = ov.m or m0
    n = len(depths)
    mults = ov.mults or (2,) * (n - 1)
    if len(mults) != n - 1:
        raise UsageError(f"{raw!r}: {n} stages need {n - 1} multipliers, got {len(mults)}")
    widths = list(ov.widths) if ov.widths else _stage_widths(m, mults)
    if len(widths) != n:
        raise UsageError(f"{raw!r}: {n} stages need {n} widths, got {len(widths)}")
    expansion = 4 if block == "bottleneck" else 1
    stages = tuple(
        Stage(block, d, w * expansion, 1 if i == 0 else 2, inner=w if block == "bottleneck" else 0)
        for i, (d, w) in enumerate(zip(depths, widths, strict=True))
    )
    parts = [base]
    m_part = [f"m{m}"] if m != m0 and not ov.widths else []
    mult_part = ["".join(f"{a}x" for a in mults)] if family == "hrn" or (
        ov.mults and tuple(mults) != (2,) * (n - 1) and not ov.widths) else []
    # Paper style: resnet18-m16-4x4x4x, but hrn-5x7x2x-m32.
    parts += mult_part + m_part if family == "hrn" else m_part + mult_part
    if tuple(depths) != depths0:
        parts.append("d" + ",".join(map(str, depths)))
    if ov.widths:
        parts.append("w" + ",".join(map(str, widths)))
    stem = widths[0]
    if family == "convnext":
        stem = max(1, round(stem * _CONVNEXT_STEM[0] / _CONVNEXT_STEM[1]))
    return NetSpec("-".join(parts), family, 0, 0, Stem(stem), stages)


def _wrn(q: int, k: int, ov: _Overrides, raw: str) -> NetSpec:
    if (q - 4) % 6 or q < 10:
        raise UsageError(f"{raw!r}: WideResNet depth Q must be 6n+4 (10, 16, 22, 28, 40, ...)")
    n = (q - 4) // 6
    depths = ov.depths or (n, n, n)
    m = ov.m or 16
    mults = ov.mults or (2,) * (len(depths) - 1)
    if len(mults) != len(depths) - 1:
        raise UsageError(f"{raw!r}: {len(depths)} stages need {len(depths) - 1} multipliers")
    widths = list(ov.widths) if ov.widths else [w * k for w in _stage_widths(m, mults)]
    if len(widths) != len(depths):
        raise UsageError(f"{raw!r}: {len(depths)} stages need {len(depths)} widths")
    stages = tuple(Stage("preact", d, w, 1 if i == 0 else 2)
                   for i, (d, w) in enumerate(zip(depths, widths, strict=True)))
    parts = [f"wrn{q}x{k}"]
    if m != 16 and not ov.widths:
        parts.append(f"m{m}")
    if ov.mults and tuple(mults) != (2,) * (len(depths) - 1) and not ov.widths:
        parts.append("".join(f"{a}x" for a in mults))
    if tuple(depths) != (n, n, n):
        parts.append("d" + ",".join(map(str, depths)))
    if ov.widths:
        parts.append("w" + ",".join(map(str, widths)))
    return NetSpec("-".join(parts), "wrn", 0, 0, Stem(m, bn_relu=False), stages, final_relu=True)


def _regnetx(key: str, ov: _Overrides, raw: str) -> NetSpec:
    d, w0, wa, wm, gw = REGNETX[key]
    ws, ds = regnetx_stages(d, w0, wa, wm, gw)
    if ov.mults is not None or ov.m is not None:
        raise UsageError(f"{raw!r}: RegNet-X takes -d and -w overrides, not -m or multipliers")
    depths = ov.depths or tuple(ds)
    widths = list(ov.widths) if ov.widths else ws
    if len(depths) != len(widths):
        raise UsageError(f"{raw!r}: {len(depths)} depths but {len(widths)} stage widths")
    stages = []
    for i, (dd, w) in enumerate(zip(depths, widths, strict=True)):
        g = min(gw, w)
        if w % g:
            raise UsageError(f"{raw!r}: width {w} is not a multiple of the group width {gw}")
        stages.append(Stage("bottleneck", dd, w, 1 if i == 0 else 2, inner=w, groups=w // g))
    parts = [f"regnetx-{key}"]
    if tuple(depths) != tuple(ds):
        parts.append("d" + ",".join(map(str, depths)))
    if ov.widths and list(widths) != ws:
        parts.append("w" + ",".join(map(str, widths)))
    return NetSpec("-".join(parts), "regnetx", 0, 0, Stem(32), tuple(stages))


def list_models() -> dict[str, str]:
    """The zoo's base names and forms, with a line about each."""
    return dict(ZOO)
