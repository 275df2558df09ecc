"""``relu``: a ReLU on every element of the slot (the default kind)."""

from __future__ import annotations

from typing import Any

from deepreshape.slotkinds import SlotInfo, SlotKind, SlotKindDef


class ReLUKind(SlotKindDef):
    """One comparison per element under 2PC; `nn.ReLU` in torch, ``max(x, 0)`` in JAX."""

    name = "relu"
    syntax = "relu"
    summary = "ReLU"

    def relus(self, kind: SlotKind, info: SlotInfo) -> int:
        """C*H*W: every element."""
        return info.numel

    def module(self, kind: SlotKind, info: SlotInfo) -> Any:
        """A plain `nn.ReLU` (not in place: hooks and masks read its input)."""
        from torch import nn

        return nn.ReLU(inplace=False)

    def module_types(self) -> tuple[type, ...]:
        """`nn.ReLU`, wherever it sits (also the ReLU group inside `build.ReLUReuse`)."""
        from torch import nn

        return (nn.ReLU,)

    def jax(self, kind: SlotKind, info: SlotInfo, exporter: Any) -> Any:
        """``max(x, 0)``."""
        import jax.numpy as jnp

        return lambda p, x: jnp.maximum(x, 0)


DEFINITION = ReLUKind()
