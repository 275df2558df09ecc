"""A network as data: the frozen `NetSpec`, its ReLU slots, and the name parser.

Every count, every built module and every exported secure-inference function is derived
from a `NetSpec`, so the three can never disagree. A network is a stem, a sequence of
stages of identical blocks, and a linear head; every non-linearity sits in an addressable
*ReLU slot* (``stem.relu``, ``stage2.block1.relu1``, ``stage3.post.relu``) whose kind a
method may change (``relu``, ``identity``, ``reuse:N``, ``mask:pixel|channel:K``, or any
kind registered in `deepreshape.slotkinds.SLOT_KINDS`, which defines what each one parses
as, counts, builds and exports to). A spec keeps a changed slot's kind as its text form.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import operator
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from deepreshape.datasets import DATASETS
from deepreshape.errors import UsageError
from deepreshape.slotkinds import RELU, SlotInfo, SlotKind, parse_slot_kind

BLOCKS = ("basic", "bottleneck", "preact")

DEFAULT_DATASET = "cifar100"

# What a spec may hold, checked before anything is counted or built: far above any real
# network (ResNet-152 has 36 blocks in a stage and 2,048 channels; WRN-40-10 56M weights,
# ResNet-18 at 224x224 2.3M activations), low enough that no name or option can ask for
# terabytes.
LIMITS = {"depth": 1_000, "width": 1_048_576, "multiplier": 1_024, "stem stride": 4,
          "input size": 4_096, "classes": 1_000_000, "stages": 8,
          "weights": 10_000_000_000_000, "activations": 10_000_000_000}


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Stem:
    """The stem: one 3x3 conv to `width` channels, with BN and a ReLU slot unless pre-activation."""

    width: int
    bn_relu: bool = True  # False for pre-activation networks: the stem is a bare conv
    stride: int = 1  # 2 = DeepReDuce's feature-map scaling (an early stride)


@dataclass(frozen=True)
class Stage:
    """A stage: `depth` identical blocks of one kind, `width` output channels."""

    block: str  # basic | bottleneck | preact
    depth: int
    width: int  # output channels of every block of the stage
    stride: int  # stride of the stage's first block
    inner: int = 0  # bottleneck: width of the 1x1-3x3-1x1 body
    groups: int = 1  # bottleneck: groups of the 3x3 conv


@dataclass(frozen=True)
class NetSpec:
    """A network, as data. `name` is the canonical name of the architecture; changed
    slots are kept in `slots` (address -> kind text) and shown by `describe()`."""

    name: str
    family: str
    input_size: int
    num_classes: int
    stem: Stem
    stages: tuple[Stage, ...]
    in_channels: int = 3
    final_relu: bool = False  # pre-activation nets end with BN-ReLU (slot stageD.post.relu)
    slots: tuple[tuple[str, str], ...] = field(default=())

    # -- derived views ---------------------------------------------------------------
    @property
    def depths(self) -> tuple[int, ...]:
        """Blocks per stage."""
        return tuple(s.depth for s in self.stages)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Per-stage width that multipliers act on (the bottleneck's inner width)."""
        return tuple(s.inner or s.width for s in self.stages)

    @property
    def multipliers(self) -> tuple[float, ...]:
        """Width ratios of consecutive stages (lambda_k)."""
        w = self.stage_widths
        return tuple(_intify(w[i + 1] / w[i]) for i in range(len(w) - 1))

    def slot_kind(self, address: str) -> SlotKind:
        """The kind of the slot at `address` (`relu` unless changed)."""
        for a, k in self.slots:
            if a == address:
                return parse_slot_kind(k)
        return RELU

    def with_slots(self, changes: Mapping[str, str]) -> NetSpec:
        """A copy with slot kinds changed. Keys are addresses or glob patterns
        (``stage2.*``, ``*.relu1``); a pattern that matches no slot is an error."""
        layout = {s.address: s for s in relu_slots(self)}
        current = dict(self.slots)
        for pattern, kind in changes.items():
            sk = parse_slot_kind(kind)
            hits = [a for a in layout if fnmatch.fnmatchcase(a, pattern)]
            if not hits:
                raise UsageError(
                    f"no ReLU slot matches {pattern!r} in {self.name}; slots look like "
                    f"{', '.join(list(layout)[:3])}, ..."
                )
            for a in hits:
                info = layout[a]
                sk.definition.check(sk, info)
                current[a] = str(sk)
        cleaned = tuple(sorted((a, k) for a, k in current.items() if k != "relu"))
        return dataclasses.replace(self, slots=cleaned)

    def describe(self) -> str:
        """Stable, readable description: the name plus the changed slots, per stage."""
        if not self.slots:
            return self.name
        by_stage: dict[str, list[tuple[str, str]]] = {}
        for s in relu_slots(self):
            by_stage.setdefault(s.stage_name, []).append((s.address, str(self.slot_kind(s.address))))
        parts = []
        for stage, items in by_stage.items():
            kinds = {k for _, k in items}
            if len(kinds) == 1:
                parts += [f"{stage}={kinds.pop()}"] if kinds != {"relu"} else []
                continue
            by_pos: dict[str, list[tuple[str, str]]] = {}
            for a, k in items:  # same position in every block: stageK.*.reluN=kind
                by_pos.setdefault(a.rsplit(".", 1)[-1], []).append((a, k))
            for pos, group in by_pos.items():
                pk = {k for _, k in group}
                if len(pk) == 1 and len(group) > 1:
                    parts += [f"{stage}.*.{pos}={pk.pop()}"] if pk != {"relu"} else []
                else:
                    parts += [f"{a}={k}" for a, k in group if k != "relu"]
        return f"{self.name}[{','.join(parts)}]"

    def short_name(self) -> str:
        """A display name a person can read: the architecture plus one tag per kind of change
        (``resnet18 +cull s1 +thin``, ``+reuse x4``, ``hrn-2x5x2x-m4 +SNL pixel 3,000``).
        `describe()` stays the exact form (JSON, checkpoints); this one is for tables and titles."""
        return " ".join([self.name, *change_tags(self)])

    def to_dict(self) -> dict:
        """A JSON-ready dict (stored in config.json); `from_dict` reverses it."""
        d = dataclasses.asdict(self)
        d["slots"] = dict(self.slots)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> NetSpec:
        """Rebuild a spec from `to_dict` output; UsageError if it is not one."""
        try:
            spec = cls(
                name=d["name"],
                family=d["family"],
                input_size=int(d["input_size"]),
                num_classes=int(d["num_classes"]),
                stem=Stem(**d["stem"]),
                stages=tuple(Stage(**s) for s in d["stages"]),
                in_channels=int(d.get("in_channels", 3)),
                final_relu=bool(d.get("final_relu", False)),
                slots=tuple(sorted((str(a), str(k)) for a, k in dict(d.get("slots", {})).items())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"not a valid network spec: {e}") from None
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UsageError(f"network spec has fields this version does not know ({', '.join(unknown)}); "
                             "it was written by a newer deepreshape: upgrade to use it")
        _validate(spec)
        return spec


def _intify(x: float) -> float:
    return int(x) if float(x).is_integer() else x


# --------------------------------------------------------------------------- slot layout


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output side length of a convolution or pooling."""
    return (size + 2 * padding - kernel) // stride + 1


def stage_io(spec: NetSpec) -> Iterator[tuple[int, Stage, int, int]]:
    """(stage index, stage, input channels, input resolution) for each stage."""
    res = conv_out(spec.input_size, 3, spec.stem.stride, 1)
    cin = spec.stem.width
    for k, st in enumerate(spec.stages, start=1):
        yield k, st, cin, res
        res = conv_out(res, 3, st.stride, 1)
        cin = st.width


def relu_slots(spec: NetSpec) -> list[SlotInfo]:
    """Every ReLU slot of the network in forward order, with its input shape."""
    out: list[SlotInfo] = []
    r0 = conv_out(spec.input_size, 3, spec.stem.stride, 1)
    if spec.stem.bn_relu:
        out.append(SlotInfo("stem.relu", 1, spec.stem.width, r0, r0))
    for k, st, cin, res in stage_io(spec):
        for b in range(1, st.depth + 1):
            stride = st.stride if b == 1 else 1
            c_in = cin if b == 1 else st.width
            r_out = conv_out(res, 3, stride, 1) if b == 1 else conv_out(res, 3, 1, 1)
            r_in = res
            p = f"stage{k}.block{b}"
            if st.block == "basic":
                out += [SlotInfo(f"{p}.relu1", k, st.width, r_out, r_out),
                        SlotInfo(f"{p}.relu2", k, st.width, r_out, r_out)]
            elif st.block == "bottleneck":
                out += [SlotInfo(f"{p}.relu1", k, st.inner, r_in, r_in),
                        SlotInfo(f"{p}.relu2", k, st.inner, r_out, r_out),
                        SlotInfo(f"{p}.relu3", k, st.width, r_out, r_out)]
            else:  # preact
                out += [SlotInfo(f"{p}.relu1", k, c_in, r_in, r_in),
                        SlotInfo(f"{p}.relu2", k, st.width, r_out, r_out)]
            res = r_out
    if spec.final_relu:
        k = len(spec.stages)
        last = out[-1]
        out.append(SlotInfo(f"stage{k}.post.relu", k, spec.stages[-1].width, last.height, last.width))
    return out


def change_tags(spec: NetSpec) -> list[str]:
    """Short tags naming what changed the spec's slots, recognized from the slots alone.

    SNL masks: ``+SNL pixel|channel R`` with R the network's ReLUs (the zeroed and untouched
    slots SNL leaves are part of it). Otherwise ``+cull sK,...`` for stages with no ReLU left,
    ``+thin`` when every other stage lost exactly the alternate slots DeepReDuce's thinning
    linearizes (positions 1, 3, ... of the stage, stem excluded: relu2, as its released
    models; ``+thin relu1`` for positions 0, 2, ...), ``+linearized N slots``
    for any other identity slots, and ``+reuse xN`` for ReLU-reuse.
    """
    if not spec.slots:
        return []
    layout = relu_slots(spec)
    kinds = {s.address: spec.slot_kind(s.address) for s in layout}
    masks = sorted({k.granularity for k in kinds.values() if k.kind == "mask"})
    if masks:
        relus = sum(kinds[s.address].relus(s.channels, s.height, s.width) for s in layout)
        return [f"+SNL {'+'.join(masks)} {relus:,}"]
    by_stage: dict[int, list[str]] = {}
    for s in layout:
        by_stage.setdefault(s.stage, []).append(s.address)
    linear = {a for a, k in kinds.items() if k.kind == "identity"}
    culled = [k for k, addrs in by_stage.items() if set(addrs) <= linear]
    tags = ["+cull " + ",".join(f"s{k}" for k in culled)] if culled else []
    live = {k: [a for a in addrs if not a.startswith("stem.")]
            for k, addrs in by_stage.items() if k not in culled}
    rest = linear - {a for k in culled for a in by_stage[k]}
    if rest:
        def thinned(start: int) -> bool:
            return all(set(body[start::2]) == linear & set(by_stage[k]) for k, body in live.items())

        tags.append("+thin" if thinned(1) else "+thin relu1" if thinned(0)
                    else f"+linearized {len(rest)} slot{'s' * (len(rest) > 1)}")
    factors = sorted({k.factor for k in kinds.values() if k.kind == "reuse"})
    if factors:
        tags.append("+reuse x" + ",".join(map(str, factors)))
    return tags


# --------------------------------------------------------------------------- the zoo

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


# --------------------------------------------------------------------------- parsing

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


_LIMIT_OF = {"base channels": "width", "multipliers": "multiplier", "depths": "depth",
             "widths": "width", "stem stride": "stem stride"}


def check_ints(values, what: str, where: str) -> tuple[int, ...]:
    """The one check of per-stage integers, for name suffixes and keyword/CLI overrides alike:
    a non-empty sequence of integers in 1..LIMITS[...]; UsageError naming `where` otherwise."""
    top = LIMITS[_LIMIT_OF[what]]
    try:
        vals = tuple(values)
        ok = bool(vals) and not any(isinstance(v, bool) for v in vals)
        vals = tuple(operator.index(v) for v in vals)  # ints, NumPy ints too; not 2.5 or "2"
    except TypeError:
        vals, ok = tuple(values) if isinstance(values, list | tuple) else (values,), False
    if not ok or any(not 1 <= v <= top for v in vals):
        shown = ",".join(map(str, vals))
        raise UsageError(f"bad {what} {shown!r} {where}: every value must be an integer in "
                         f"1..{top:,}")
    return vals


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
    size, classes = _shape(dataset, input_size, num_classes)
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
    _validate(spec)
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


def _shape(dataset: str | None, input_size: int | None, num_classes: int | None) -> tuple[int, int]:
    ds = (dataset or DEFAULT_DATASET).lower()
    info = DATASETS.get(ds)  # a data set fixes the input size and number of classes
    size, classes = info.input_size, info.num_classes
    size = int(input_size) if input_size is not None else size
    classes = int(num_classes) if num_classes is not None else classes
    if not (4 <= size <= LIMITS["input size"] and 1 <= classes <= LIMITS["classes"]):
        raise UsageError(f"input size must be in 4..{LIMITS['input size']:,} and classes in "
                         f"1..{LIMITS['classes']:,}, got {size} and {classes}")
    return size, classes


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


def _validate(spec: NetSpec) -> None:
    """Check a spec against BLOCKS and LIMITS before anything counts or builds it."""
    if not spec.stages or len(spec.stages) > LIMITS["stages"]:
        raise UsageError(f"{spec.name}: 1..{LIMITS['stages']} stages are supported")
    _shape(DEFAULT_DATASET, spec.input_size, spec.num_classes)
    if not 1 <= spec.in_channels <= 64:
        raise UsageError(f"{spec.name}: input channels must be in 1..64, got {spec.in_channels}")
    check_ints([spec.stem.width], "widths", f"in {spec.name!r} (stem)")
    check_ints([spec.stem.stride], "stem stride", f"in {spec.name!r}")
    res = conv_out(spec.input_size, 3, spec.stem.stride, 1)
    weights, acts = 0, spec.stem.width * res * res
    for st in spec.stages:
        if st.block not in BLOCKS:
            raise UsageError(f"unknown block {st.block!r}; valid: {', '.join(BLOCKS)}")
        check_ints([st.depth], "depths", f"in {spec.name!r}")
        check_ints([st.inner or st.width, st.groups, st.stride], "widths", f"in {spec.name!r}")
        if st.width > 4 * LIMITS["width"]:  # a bottleneck's output is 4x its inner width
            check_ints([st.width], "widths", f"in {spec.name!r}")
        weights += st.depth * (2 * st.inner * st.width + 9 * st.inner ** 2 // st.groups
                               if st.inner else 18 * st.width ** 2)
        acts += st.depth * 3 * st.width * res * res
        res = conv_out(res, 3, st.stride, 1)
    if res < 1 or conv_out(spec.input_size, 3, spec.stem.stride, 1) < 1:
        raise UsageError(f"{spec.name}: input {spec.input_size}x{spec.input_size} is too small")
    for what, n in (("weights", weights), ("activations", acts)):
        if n > LIMITS[what]:
            raise UsageError(f"{spec.name}: about {n:.2e} {what}, above the limit of "
                             f"{LIMITS[what]:.0e}; no real network comes near it")


def list_models() -> dict[str, str]:
    """The zoo's base names and forms, with a line about each."""
    return dict(ZOO)
