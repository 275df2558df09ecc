"""``reuse:N``: ReLU-reuse (paper, Section 4 and Appendix E): C/N channels pass a ReLU.

The torch module is `deepreshape.build.ReLUReuse` (a public name of the build layer); its
JAX op is below. Both split the channels with `reuse_split`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from deepreshape.errors import UsageError
from deepreshape.slotkinds import SlotInfo, SlotKind, SlotKindDef

if TYPE_CHECKING:
    from deepreshape.count import LayerCount


def reuse_split(channels: int, factor: int) -> tuple[int, int, int]:
    """Channel groups of a ``reuse:N`` slot: (reused as-is, through conv+ReLU, linear).

    N = 2 is the paper's naive split (half passed through, half through a ReLU); for
    N > 2 the three groups are C/4 reused, C/N with a ReLU, and the rest linear
    (the number of groups does not grow with N; paper, Appendix E).
    """
    relu = channels // factor
    if relu < 1:
        raise UsageError(f"reuse:{factor} needs at least {factor} channels, the slot has {channels}")
    if factor == 2:
        return channels - relu, relu, 0
    reused = channels // 4
    return reused, relu, channels - reused - relu


class ReuseKind(SlotKindDef):
    """ReLU-reuse with factor N >= 2; for N > 2 it adds a conv+BN per channel group."""

    name = "reuse"
    syntax = "reuse:N (N>=2)"
    summary = "ReLU-reuse: C/N channels through a ReLU"

    def parse(self, text: str) -> SlotKind | None:
        """``reuse:N`` with N >= 2."""
        m = re.fullmatch(r"reuse:(\d+)", text)
        return SlotKind("reuse", factor=int(m.group(1))) if m and int(m.group(1)) >= 2 else None

    def text(self, kind: SlotKind) -> str:
        """``reuse:N``."""
        return f"reuse:{kind.factor}"

    def check(self, kind: SlotKind, info: SlotInfo) -> None:
        """The slot needs at least N channels."""
        reuse_split(info.channels, kind.factor)

    def relus(self, kind: SlotKind, info: SlotInfo) -> int:
        """floor(C/N) * H * W: the ReLU group only."""
        return reuse_split(info.channels, kind.factor)[1] * info.height * info.width

    def layers(self, kind: SlotKind, info: SlotInfo) -> list[LayerCount]:
        """For N > 2: the ReLU group's 3x3 conv + BN, and the linear group's (which also
        sees the ReLU group's output)."""
        if kind.factor <= 2:
            return []
        from deepreshape.count import bn_row, conv_row

        _, n_relu, n_lin = reuse_split(info.channels, kind.factor)
        a, r, stage = info.address, info.height, info.stage_name
        rows = [conv_row(f"{a}.conv_relu", stage, n_relu, n_relu, 3, r),
                bn_row(f"{a}.bn_relu", stage, n_relu, r)]
        if n_lin:
            rows += [conv_row(f"{a}.conv_lin", stage, n_lin + n_relu, n_lin, 3, r),
                     bn_row(f"{a}.bn_lin", stage, n_lin, r)]
        return rows

    def module(self, kind: SlotKind, info: SlotInfo) -> Any:
        """`build.ReLUReuse` (its ReLU is an `nn.ReLU`, counted by the relu kind's hook)."""
        from deepreshape.build import ReLUReuse

        return ReLUReuse(info.channels, kind.factor)

    def jax(self, kind: SlotKind, info: SlotInfo, exporter: Any) -> Any:
        """`build.ReLUReuse`: reuse a group as is, conv+BN+ReLU a group, linear conv+BN
        the rest (BN folded into the convs)."""
        import jax.numpy as jnp

        address, factor = info.address, kind.factor
        n_reuse, n_relu, n_lin = reuse_split(info.channels, factor)
        if factor == 2:
            return lambda p, x: jnp.concatenate([x[:, :n_reuse], jnp.maximum(x[:, n_reuse:], 0)], 1)
        relu_conv = exporter.conv_bn(f"{address}.conv_relu", f"{address}.bn_relu", n_relu, n_relu, 3)
        lin_conv = (exporter.conv_bn(f"{address}.conv_lin", f"{address}.bn_lin", n_lin + n_relu,
                                     n_lin, 3) if n_lin else None)
        cut = n_reuse + n_relu

        def run(p: Any, x: Any) -> Any:
            b = jnp.maximum(relu_conv(p, x[:, n_reuse:cut]), 0)
            if lin_conv is None:
                return jnp.concatenate([x[:, :n_reuse], b], 1)
            c = lin_conv(p, jnp.concatenate([x[:, cut:], b], 1))
            return jnp.concatenate([x[:, :n_reuse], b, c], 1)

        return run


DEFINITION = ReuseKind()
