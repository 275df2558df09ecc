"""``mask:pixel:K`` / ``mask:channel:K``: SNL's fixed binary mask keeping K pixels (or K
whole channels) of the slot; the other positions pass through linearly, or, with a
``:poly1`` / ``:poly2`` suffix (``mask:pixel:3000:poly2``), through a per-channel
polynomial (`slotkinds.poly`) instead of the identity: AutoReP's replacement.

The torch module is `deepreshape.build.MaskedReLU` (a public name of the build layer),
whose ``mask`` buffer holds the kept positions; the JAX op reads that buffer. The kept
positions are public architecture under 2PC, so they become a static index constant and
only they pay for a comparison. `proportional_masks` prices an SNL network of a given
budget without training one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from deepreshape.errors import UsageError
from deepreshape.slotkinds import SLOT_KINDS, SlotInfo, SlotKind, SlotKindDef

if TYPE_CHECKING:
    from deepreshape.spec import NetSpec

GRANULARITIES = ("pixel", "channel")
REPLACEMENTS = ("poly1", "poly2")
"""What a mask's dropped positions may become besides the identity (the default)."""


def replacement(kind: SlotKind) -> str | None:
    """The polynomial kind (``poly2``) of a mask's dropped positions, or None (identity)."""
    return kind.params[0] if kind.params else None


def degree(kind: SlotKind) -> int:
    """The dropped positions' polynomial degree (0: identity)."""
    r = replacement(kind)
    return SLOT_KINDS.get(r).degree if r else 0


class MaskKind(SlotKindDef):
    """A fixed binary mask: y = m*relu(x) + (1-m)*x, m of shape (C,H,W) or (C,1,1)."""

    name = "mask"
    syntax = "mask:pixel:K[:polyD], mask:channel:K[:polyD]"
    summary = "SNL mask keeping K elements (pixel) or K channels (channel)"

    def parse(self, text: str) -> SlotKind | None:
        """``mask:pixel:K`` or ``mask:channel:K``, optionally ``:poly1`` / ``:poly2``."""
        m = re.fullmatch(rf"mask:({'|'.join(GRANULARITIES)}):(\d+)(?::({'|'.join(REPLACEMENTS)}))?",
                         text)
        if m is None:
            return None
        return SlotKind("mask", granularity=m.group(1), kept=int(m.group(2)),
                        params=(m.group(3),) if m.group(3) else ())

    def text(self, kind: SlotKind) -> str:
        """``mask:G:K`` or ``mask:G:K:polyD``."""
        return ":".join(["mask", kind.granularity, str(kind.kept), *kind.params])

    def check(self, kind: SlotKind, info: SlotInfo) -> None:
        """K is at most the slot's positions (pixel) or channels (channel)."""
        limit = info.channels if kind.granularity == "channel" else info.numel
        if kind.kept > limit:
            raise UsageError(
                f"{info.address}: a {kind.granularity} mask keeps at most {limit}, got {kind.kept}"
            )

    def relus(self, kind: SlotKind, info: SlotInfo) -> int:
        """K (pixel) or K*H*W (channel)."""
        if kind.granularity == "channel":
            return kind.kept * info.height * info.width
        return kind.kept

    def polys(self, kind: SlotKind, info: SlotInfo) -> int:
        """With a polynomial replacement: every position the mask drops."""
        return info.numel - self.relus(kind, info) if degree(kind) else 0

    def params(self, kind: SlotKind, info: SlotInfo) -> int:
        """With a polynomial replacement: its (degree + 1) coefficients per channel."""
        return (degree(kind) + 1) * info.channels if degree(kind) else 0

    def module(self, kind: SlotKind, info: SlotInfo) -> Any:
        """`build.MaskedReLU`, keeping the first K positions until a checkpoint loads its mask."""
        from deepreshape.build import MaskedReLU

        return MaskedReLU(info, kind.granularity, kind.kept, degree(kind))

    def module_types(self) -> tuple[type, ...]:
        """`build.MaskedReLU`."""
        from deepreshape.build import MaskedReLU

        return (MaskedReLU,)

    def hook_relus(self, module: Any, out: Any) -> int:
        """The non-zero entries of the module's mask, broadcast to the output's shape."""
        return int(module.mask.ne(0).expand(out.shape[1:]).sum())

    def hook_polys(self, module: Any, out: Any) -> int:
        """With a polynomial replacement: the zero entries of the mask, broadcast."""
        if not module.degree:
            return 0
        return int(module.mask.eq(0).expand(out.shape[1:]).sum())

    def jax(self, kind: SlotKind, info: SlotInfo, exporter: Any) -> Any:
        """ReLU on the kept positions only (`pi.export.relu_on`), read from the state
        dict's ``<address>.mask``, which must be 0/1 and keep K positions."""
        import numpy as np

        from deepreshape.pi.export import relu_on
        from deepreshape.slotkinds.poly import horner

        address = info.address
        full = (info.channels, info.height, info.width)
        shape = (info.channels, 1, 1) if kind.granularity == "channel" else full
        m = exporter.tensor(f"{address}.mask", shape)
        if not np.isin(m, (0.0, 1.0)).all():
            raise UsageError(f"{address}.mask must hold only 0 and 1 to be exported")
        if int(m.sum()) != kind.kept:
            raise UsageError(f"{address}.mask keeps {int(m.sum())} {kind.granularity}s but the spec "
                             f"says {kind}")
        kept_idx = np.flatnonzero(np.broadcast_to(m, full))
        if not degree(kind):
            return lambda p, x: relu_on(x, kept_idx)
        # the dropped positions' polynomial, its per-channel coefficients gathered to those
        # positions at export time (public positions, the server's coefficients)
        d = degree(kind)
        coef = exporter.tensor(f"{address}.coef", (d + 1, info.channels))
        dropped = np.setdiff1d(np.arange(info.numel), kept_idx)
        channel = dropped // (info.height * info.width)
        other = horner([exporter.put(f"{address}.coef{k}", coef[k][channel][None, :])
                        for k in range(d + 1)])
        return lambda p, x: relu_on(x, kept_idx, lambda v: other(p, v))

    def cost_features(self, kind: SlotKind, info: SlotInfo, relus: int) -> dict[str, float]:
        """Besides ReLUs and a ReLU layer: ``masked_relus``, the ReLUs of a partially kept
        slot, which the export runs as gathers around a ReLU on the kept positions; with a
        polynomial replacement, its ``polys`` and one ``poly_layers``."""
        f = super().cost_features(kind, info, relus)
        f["masked_relus"] = float(relus) if 0 < relus < info.numel else 0.0
        polys = self.polys(kind, info)
        if polys:
            f.update(polys=float(polys), poly_layers=1.0)
        return f


DEFINITION = MaskKind()


def proportional_masks(spec: NetSpec, budget: int) -> NetSpec:
    """`spec` with pixel masks keeping `budget` ReLUs in all, each full-ReLU slot its
    proportional share (the remainder one each to the first slots).

    Under a secure engine a mask's cost depends on how many positions it keeps, not
    which, so this prices an SNL network of a given budget without training one.
    Slots that are already not plain ReLUs are left as they are and not counted.
    """
    from deepreshape.spec import relu_slots

    slots = [s for s in relu_slots(spec) if spec.slot_kind(s.address).kind == "relu"]
    total = sum(s.numel for s in slots)
    if not 0 <= budget <= total:
        raise UsageError(f"budget {budget:,} is outside 0..{total:,}, the plain ReLUs of "
                         f"{spec.short_name()}")
    if budget == total:
        return spec
    kept = {s.address: s.numel * budget // total for s in slots}
    for s in slots[: budget - sum(kept.values())]:
        kept[s.address] += 1
    return spec.with_slots({a: f"mask:pixel:{k}" for a, k in kept.items()})
