"""A network as data: the frozen `NetSpec`, its ReLU slots and its limits (names parse into
specs in `deepreshape.zoo`).

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
import fnmatch
import operator
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
        from deepreshape.slotkinds.tags import change_tags

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
        validate(spec)
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


# --------------------------------------------------------------------------- parsing


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


def input_shape(dataset: str | None, input_size: int | None, num_classes: int | None) -> tuple[int, int]:
    ds = (dataset or DEFAULT_DATASET).lower()
    info = DATASETS.get(ds)  # a data set fixes the input size and number of classes
    size, classes = info.input_size, info.num_classes
    size = int(input_size) if input_size is not None else size
    classes = int(num_classes) if num_classes is not None else classes
    if not (4 <= size <= LIMITS["input size"] and 1 <= classes <= LIMITS["classes"]):
        raise UsageError(f"input size must be in 4..{LIMITS['input size']:,} and classes in "
                         f"1..{LIMITS['classes']:,}, got {size} and {classes}")
    return size, classes


def validate(spec: NetSpec) -> None:
    """Check a spec against BLOCKS and LIMITS before anything counts or builds it."""
    if not spec.stages or len(spec.stages) > LIMITS["stages"]:
        raise UsageError(f"{spec.name}: 1..{LIMITS['stages']} stages are supported")
    input_shape(DEFAULT_DATASET, spec.input_size, spec.num_classes)
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


