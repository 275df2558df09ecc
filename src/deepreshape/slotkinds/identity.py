"""``identity``: a linearized slot (DeepReDuce culling and thinning, criticality tests)."""

from __future__ import annotations

from typing import Any

from deepreshape.slotkinds import SlotInfo, SlotKind, SlotKindDef


class IdentityKind(SlotKindDef):
    """No ReLU: the slot passes its input through, free under 2PC."""

    name = "identity"
    syntax = "identity"
    summary = "nothing (linearized)"

    def relus(self, kind: SlotKind, info: SlotInfo) -> int:
        """0."""
        return 0

    def module(self, kind: SlotKind, info: SlotInfo) -> Any:
        """`nn.Identity`."""
        from torch import nn

        return nn.Identity()

    def jax(self, kind: SlotKind, info: SlotInfo, exporter: Any) -> Any:
        """The input, unchanged (no operation is emitted)."""
        return lambda p, x: x


DEFINITION = IdentityKind()
