"""ReLU slot kinds: what may sit in a network's ReLU slot, each defined once.

Every non-linearity of a network sits in an addressable *ReLU slot* (``stem.relu``,
``stage2.block1.relu1``; see `deepreshape.spec`), and a method changes what a slot holds
by changing its *kind*. One `SlotKindDef` per kind says everything the layers above need
to know about it, so counting, building, PI export and the cost model read the same
definition and can never disagree:

- `SlotKindDef.parse`: the text form (``reuse:4``) -> `SlotKind`, or None if malformed;
- `SlotKindDef.text`: `SlotKind` -> canonical text (stored in config.json; ``str(kind)``);
- `SlotKindDef.check`: does it fit the slot it is put in? one-line `UsageError` if not;
- `SlotKindDef.relus`: exact ReLUs per image, from the slot's shape alone (`count`);
- `SlotKindDef.layers`: conv/BN rows the kind adds to the layer table (ReLU-reuse's);
- `SlotKindDef.module`: the `torch.nn.Module` that runs it (`deepreshape.build`);
- `SlotKindDef.module_types` / `hook_relus`: the forward-hook count (`count.count_module`);
- `SlotKindDef.jax`: its JAX op in the exported function (`deepreshape.pi.export`);
- `SlotKindDef.cost_features`: what it adds to the cost model's per-stage features.

The built-in kinds are ``relu``, ``identity``, ``reuse:N`` and ``mask:pixel|channel:K``,
one module each in this package. A new kind is one file: subclass `SlotKindDef`, then
``SLOT_KINDS.register(MyKind())`` or, from a pip-installed package, an entry point::

    [project.entry-points."deepreshape.slot_kinds"]
    square = "mypackage.square:DEFINITION"

This module and the built-ins' modules import neither torch nor JAX: `module` and `jax`
import them when called, so parsing and counting stay light (``deepreshape count``). The
built-ins' torch modules stay where users import them from (`deepreshape.build.ReLUReuse`,
`deepreshape.build.MaskedReLU`), and the masks' JAX op is `deepreshape.pi.export.relu_on`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepreshape.errors import UsageError
from deepreshape.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from deepreshape.count import LayerCount

__all__ = ["SLOT_KINDS", "RELU", "SlotInfo", "SlotKind", "SlotKindDef", "parse_slot_kind",
           "valid_forms"]


@dataclass(frozen=True)
class SlotInfo:
    """Where a ReLU slot is and the C x H x W shape of its input."""

    address: str
    stage: int  # 1-based; the stem belongs to stage 1
    channels: int
    height: int
    width: int

    @property
    def stage_name(self) -> str:
        """'stage1' .. 'stageD'."""
        return f"stage{self.stage}"

    @property
    def numel(self) -> int:
        """Activations of the slot per image, i.e. its ReLUs when it is a plain ReLU."""
        return self.channels * self.height * self.width


@dataclass(frozen=True)
class SlotKind:
    """A parsed slot kind; `str()` gives back the canonical text form.

    A value, not behaviour: `definition` is the registered `SlotKindDef` that knows what
    the kind does. The built-ins keep their parameters in named fields (`factor` of
    ``reuse:N``, `granularity` and `kept` of ``mask:G:K``); other kinds put theirs in
    `params` (``poly:2`` -> ``SlotKind("poly", params=(2,))``). Specs store the text form
    only, so this class can grow fields without changing config.json.
    """

    kind: str  # a SLOT_KINDS name: relu | identity | reuse | mask | ...
    factor: int = 0  # reuse: N
    granularity: str = ""  # mask: pixel | channel
    kept: int = 0  # mask: kept pixels (pixel) or kept channels (channel)
    params: tuple[Any, ...] = ()  # any other kind's parameters

    @property
    def definition(self) -> SlotKindDef:
        """The registered definition of this kind."""
        return SLOT_KINDS.get(self.kind)

    def __str__(self) -> str:
        return self.definition.text(self)

    def relus(self, channels: int, height: int, width: int) -> int:
        """Exact ReLUs this slot evaluates per image on a C x H x W input."""
        return self.definition.relus(self, SlotInfo("", 0, channels, height, width))


RELU = SlotKind("relu")
"""The kind of every slot a spec does not change."""


class SlotKindDef:
    """How one slot kind parses, counts, builds, exports and is priced.

    Subclass it and override what differs; every method gets the parsed `SlotKind` and
    the `SlotInfo` of the slot it sits in. `name` is the word before the first ``:`` of
    the text form; `syntax` lists the text forms for messages and help (``reuse:N
    (N>=2)``); `summary` says in a few words what runs. `relus`, `module` and `jax`
    have no default: a kind must say what it costs and what it does.
    """

    name: str = ""
    syntax: str = ""
    summary: str = ""

    # -- the text form ---------------------------------------------------------------
    def parse(self, text: str) -> SlotKind | None:
        """`text` (stripped, lower case, starting with `name`) as a `SlotKind`, or None
        if it is malformed (then the caller's message lists `syntax`). Default: the bare
        name, no parameters."""
        return SlotKind(self.name) if text == self.name else None

    def text(self, kind: SlotKind) -> str:
        """The canonical text form; ``parse(text(kind)) == kind``. Default: the name and
        `params`, joined by ``:``."""
        return ":".join([kind.kind, *map(str, kind.params)])

    def check(self, kind: SlotKind, info: SlotInfo) -> None:
        """Raise a one-line `UsageError` if `kind` cannot sit in the slot `info`
        (e.g. a mask keeping more positions than the slot has). Default: any slot."""

    # -- counting ----------------------------------------------------------------------
    def relus(self, kind: SlotKind, info: SlotInfo) -> int:
        """Exact ReLUs (comparisons under 2PC) per image, from the slot's shape alone."""
        raise NotImplementedError(f"slot kind {self.name!r} does not say its ReLUs")

    def polys(self, kind: SlotKind, info: SlotInfo) -> int:
        """Activations per image a polynomial computes in place of a ReLU (each costs
        secure products: never free). Default: 0."""
        return 0

    def params(self, kind: SlotKind, info: SlotInfo) -> int:
        """Trainable parameters the slot's module holds (a polynomial's coefficients).
        Default: 0."""
        return 0

    def layers(self, kind: SlotKind, info: SlotInfo) -> list[LayerCount]:
        """Conv/BN rows the kind adds to `count.layer_table` after the slot's own row
        (module paths under ``info.address``); built with `count.conv_row`/`bn_row`.
        Default: none."""
        return []

    # -- torch ------------------------------------------------------------------------
    def module(self, kind: SlotKind, info: SlotInfo) -> nn.Module:
        """The `torch.nn.Module` that runs the slot (import torch inside)."""
        raise UsageError(f"{info.address}: slot kind {self.name!r} has no torch module")

    def module_types(self) -> tuple[type, ...]:
        """Module classes whose forward calls `count.count_module` hooks to count ReLUs
        (`hook_relus`), independently of `relus`. Default: none (no ReLUs to count)."""
        return ()

    def hook_relus(self, module: nn.Module, out: Any) -> int:
        """ReLUs one image evaluated in a forward call of `module` (one of `module_types`)
        with output `out` (batch first). Default: every output element."""
        return int(out[0].numel())

    def hook_polys(self, module: nn.Module, out: Any) -> int:
        """Polynomial activations one image evaluated in that forward call. Default: 0."""
        return 0

    # -- JAX (PI export) ---------------------------------------------------------------
    def jax(self, kind: SlotKind, info: SlotInfo, exporter: Any) -> Callable[[Any, Any], Any]:
        """The slot's JAX op ``fn(params, x) -> y`` (NCHW, import JAX inside): pure
        jnp/lax with static shapes, since it also runs under SPU. `exporter` reads the
        trained weights (`pi.export.SlotExporter`: ``tensor(key, shape)``,
        ``put(name, array)``, ``conv_bn(...)``, ``conv(...)``); every state-dict key of
        the slot's module must be read through it."""
        raise UsageError(f"{info.address}: cannot export ReLU slot kind {str(kind)!r} "
                         "(it has no JAX op)")

    # -- cost model ----------------------------------------------------------------------
    def cost_features(self, kind: SlotKind, info: SlotInfo, relus: int) -> dict[str, float]:
        """What the slot adds to the cost model's per-stage features
        (`pi.costs.costmodel.STAGE_FEATURES`; a key outside them is kept in the row and
        priced 0 until a calibration fits it). `relus` is `self.relus(kind, info)`.
        Default: its ReLUs, and one ReLU layer if it has any."""
        return {"relus": float(relus), "relu_layers": 1.0 if relus > 0 else 0.0}

    def __repr__(self) -> str:
        return f"<slot kind {self.name}: {self.syntax or self.name}>"


SLOT_KINDS: Registry[SlotKindDef] = Registry("slot kind", "deepreshape.slot_kinds", builtins={
    "relu": "deepreshape.slotkinds.relu:DEFINITION",
    "identity": "deepreshape.slotkinds.identity:DEFINITION",
    "reuse": "deepreshape.slotkinds.reuse:DEFINITION",
    "mask": "deepreshape.slotkinds.mask:DEFINITION",
    "poly1": "deepreshape.slotkinds.poly:POLY1",
    "poly2": "deepreshape.slotkinds.poly:POLY2",
})
"""Every slot kind, by name (see the module docstring)."""


def valid_forms() -> str:
    """The text forms of every registered kind, for messages and help."""
    return ", ".join(d.syntax or d.name for d in SLOT_KINDS)


def parse_slot_kind(text: str) -> SlotKind:
    """Parse a slot kind's text form (``relu``, ``identity``, ``reuse:N``,
    ``mask:pixel|channel:K``, or a registered kind's); one-line `UsageError` listing the
    valid forms if it is none."""
    t = str(text).strip().lower()
    if t == "relu":  # the common case, without a registry look-up
        return RELU
    name = t.split(":", 1)[0]
    try:
        definition = SLOT_KINDS.get(name)
    except UsageError:  # not a registered kind: the message below lists the valid forms
        definition = None
    kind = definition.parse(t) if definition is not None else None
    if kind is None:
        close = difflib.get_close_matches(name, SLOT_KINDS.names(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close and close[0] != name else ""
        raise UsageError(f"unknown ReLU slot kind {text!r}; valid: {valid_forms()}{hint}")
    return kind
