"""``poly1`` / ``poly2``: a polynomial activation in place of a ReLU (AutoReP's line).

Per channel, degree 2 computes ``a*x^2 + b*x + c`` and degree 1 ``b*x + c``, with learned
coefficients. Evaluated in Horner form, ``(a*x + b)*x + c``, so under 2PC degree 2 costs
two secure products per element (one secret-by-secret, ``(a*x + b) * x``, and one
weight-by-secret, ``a * x``) and degree 1 one (``b * x``): cheaper than a ReLU's
comparison in time, dearer in bytes under Cheetah, never free. `count` reports them as
``polys`` next to ReLUs; the cost model refuses to price them until a calibration has
coefficients for them (it never prices them as free).

The coefficients start from the least-squares fit of ReLU over a standard normal input
(`RELU_FIT`: what a BatchNorm'd slot sees at initialization); `build.fit_polys_to_relu`
refits them per channel on a slot's measured inputs, as AutoReP's distribution-aware
approximation does. The torch module is `deepreshape.build.PolyAct`.
"""

from __future__ import annotations

import math
from typing import Any

from deepreshape.slotkinds import SlotInfo, SlotKind, SlotKindDef

_G = 1.0 / math.sqrt(2.0 * math.pi)  # E[relu(z)] for z ~ N(0, 1)
RELU_FIT: dict[int, tuple[float, ...]] = {
    # Least squares of relu(z) on z ~ N(0, 1), highest power first. With E[z^2] = 1,
    # E[z^4] = 3, E[z relu(z)] = 1/2, E[z^2 relu(z)] = 2g, E[relu(z)] = g (g = 1/sqrt(2 pi)),
    # the normal equations give b = 1/2 and, for degree 2, 3a + c = 2g, a + c = g.
    1: (0.5, _G),
    2: (_G / 2, 0.5, _G / 2),
}
"""Default coefficients (highest power first) per degree."""


def horner(names: list[str]) -> Any:
    """The JAX op ``fn(params, x)`` of a polynomial whose coefficients, highest power
    first, are the exported params `names` (each broadcasting against x): Horner's form,
    the products `PolyAct` computes. Used by the poly kinds and by masks' dropped positions."""

    def run(p: Any, x: Any) -> Any:
        y = p[names[0]]
        for name in names[1:]:
            y = y * x + p[name]
        return y

    return run


class PolyKind(SlotKindDef):
    """A per-channel polynomial of degree 1 or 2; no ReLU, `polys` = every element."""

    def __init__(self, degree: int) -> None:
        self.degree = degree
        self.name = f"poly{degree}"
        self.syntax = self.name
        self.summary = (f"a degree-{degree} polynomial per channel "
                        f"({'a*x^2 + b*x + c' if degree == 2 else 'b*x + c'}, learned)")

    def relus(self, kind: SlotKind, info: SlotInfo) -> int:
        """0: no comparison."""
        return 0

    def polys(self, kind: SlotKind, info: SlotInfo) -> int:
        """C*H*W: every element goes through the polynomial."""
        return info.numel

    def params(self, kind: SlotKind, info: SlotInfo) -> int:
        """degree + 1 coefficients per channel."""
        return (self.degree + 1) * info.channels

    def module(self, kind: SlotKind, info: SlotInfo) -> Any:
        """`build.PolyAct`."""
        from deepreshape.build import PolyAct

        return PolyAct(info.channels, self.degree)

    def module_types(self) -> tuple[type, ...]:
        """`build.PolyAct` (its forward hook counts polynomials, no ReLUs)."""
        from deepreshape.build import PolyAct

        return (PolyAct,)

    def hook_relus(self, module: Any, out: Any) -> int:
        """0."""
        return 0

    def hook_polys(self, module: Any, out: Any) -> int:
        """Every output element."""
        return int(out[0].numel())

    def jax(self, kind: SlotKind, info: SlotInfo, exporter: Any) -> Any:
        """Horner's form with the trained per-channel coefficients (`PolyAct.coef`)."""
        coef = exporter.tensor(f"{info.address}.coef", (self.degree + 1, info.channels))
        return horner([exporter.put(f"{info.address}.coef{k}", coef[k].reshape(1, -1, 1, 1))
                       for k in range(self.degree + 1)])

    def cost_features(self, kind: SlotKind, info: SlotInfo, relus: int) -> dict[str, float]:
        """Its polynomial activations and one polynomial layer (no ReLU features)."""
        return {"polys": float(info.numel), "poly_layers": 1.0}


POLY1 = PolyKind(1)
POLY2 = PolyKind(2)
