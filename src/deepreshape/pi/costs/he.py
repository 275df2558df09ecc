"""How SPU's Cheetah packs a layer's matrix product into HE ciphertexts, counted from a spec.

Under Cheetah (spu 0.9.5, field FM64) a convolution is an im2col matrix product
``(Ho*Wo) x (C*k*k)`` times ``(C*k*k) x M`` computed with homomorphic encryption: twice
when both operands are secret-shared (each party's share of one operand against the
other's), once when the server owns the weights (`directions`), each time blocked into
polynomials of N = 8192 coefficients. SPU picks the block shape ``d0 x d1 x d2`` (rows,
inner, columns; d1 a power of two) that minimizes its own price of
ciphertexts sent and returned, Galois automorphisms (to pack the sparse results into few
ciphertexts) and ciphertext-plaintext products; SPU logs the choice as
``1@1024x144x16 => 4x128x16``. What a layer costs follows those counts, not its MACs: a
stride-2 3x3 conv costs a quarter of the stride-1 one with the same weights, and 64
channels at 32x32 pay 1024 automorphisms where 256 channels at 4x4 pay 512. This module
reproduces the choice, so the cost model (`deepreshape.pi.costs.costmodel`) can use the counts
as features; the test suite checks it against the shapes SPU itself logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from deepreshape.count import LayerCount

POLY_DEGREE = 8192
"""Cheetah's polynomial degree for a 64-bit ring (FM64): SEAL context with 3 primes."""

_PRICE_CT, _PRICE_AUTOMORPHISM, _PRICE_MUL = 1000.0, 1.0, 0.1  # SPU's relative prices


@dataclass(frozen=True)
class Blocking:
    """One HE matrix product ``m x k`` times ``k x n``: the block shape and what it costs."""

    dims: tuple[int, int, int]  # m, k, n
    block: tuple[int, int, int]  # d0, d1, d2
    sent: int  # ciphertexts of the encrypted operand
    outputs: int  # result ciphertexts before packing (each masked for the H2A conversion)
    response: int  # packed result ciphertexts sent back
    automorphisms: int  # Galois automorphisms to pack the results
    muls: int  # ciphertext-plaintext polynomial products


def _cdiv(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray | int:
    return -(-a // b)


@lru_cache(maxsize=4096)
def blocking(m: int, k: int, n: int, poly_degree: int = POLY_DEGREE) -> Blocking:
    """The block shape SPU chooses for an ``m x k x n`` product, and its counts.

    The search runs over every row block d0 and power-of-two inner block d1 with
    ``d0 * d1 <= N``, the column block filling the rest; among equal prices the last one
    in (d0, d1) order wins, as in SPU.
    """
    if min(m, k, n, poly_degree) < 1:
        raise ValueError(f"matrix product dims must be positive, got {m}x{k}x{n}")
    best: tuple[float, int, int] | None = None  # price, d0, d1
    d0 = np.arange(1, min(poly_degree, m) + 1, dtype=np.int64)
    d1 = 1
    while d1 <= k:
        ok = d0 * d1 <= poly_degree
        if not ok.any():
            break
        a = d0[ok]
        b0, b1 = _cdiv(m, a), _cdiv(k, d1)
        d2 = np.minimum(n, poly_degree // a // d1)
        b2 = _cdiv(n, d2)
        sent = np.minimum(b0, b2) * b1
        response = _cdiv(b0 * b2, d1)
        price = ((sent + response) * _PRICE_CT + _cdiv(m * n, poly_degree) * d1 * _PRICE_AUTOMORPHISM
                 + (b0 * b1 * b2) * _PRICE_MUL)
        low = float(price.min())
        last = int(a[np.flatnonzero(price == low)[-1]])
        # The later of two equal prices wins: a larger d0, or the same d0 with a larger d1.
        if best is None or low < best[0] or (low == best[0] and last >= best[1]):
            best = (low, last, d1)
        d1 *= 2
    assert best is not None
    _, bd0, bd1 = best
    bd2 = min(n, poly_degree // bd0 // bd1)
    b0, b1, b2 = _cdiv(m, bd0), _cdiv(k, bd1), _cdiv(n, bd2)
    return Blocking((m, k, n), (bd0, bd1, bd2), sent=min(b0, b2) * b1, outputs=b0 * b2,
                    response=_cdiv(b0 * b2, bd1), automorphisms=_cdiv(m * n, poly_degree) * bd1,
                    muls=b0 * b1 * b2)


def layer_products(row: LayerCount) -> list[tuple[int, int, int]]:
    """The matrix products (m, k, n) of a conv or linear layer under Cheetah, batch 1.

    A grouped conv is one product per group (the export writes it as one conv per group,
    and SPU logs one product each). Other layers have none.
    """
    if row.kind == "linear":
        return [(1, row.in_shape[0], row.shape[0])]
    if row.kind != "conv":
        return []
    g = row.groups
    cout, ho, wo = row.shape
    return [(ho * wo, row.in_shape[0] // g * row.kernel * row.kernel, cout // g)] * g


HE_COUNTS = ("he_sent", "he_outputs", "he_response", "he_automorphisms", "he_muls")
"""Per-layer counts for the cost model, summed over a layer's products, both directions."""


def directions(weights: str) -> int:
    """HE products per matrix product: 2 for shared weights, 1 for server-owned ones.

    With shared weights both parties hold shares of both operands, so SPU computes both
    cross terms, ``x0*w1`` and ``x1*w0``, each with HE (`MatMulAA`). With weights the
    server owns (a private value to SPU), ``x*w = x0*w + x1*w``: the server computes
    ``x0*w`` in the clear and only ``x1*w`` needs HE, the client's share encrypted and
    the server's plaintext weights (`MatMulAV`): one product of the same shape, blocked
    the same way.
    """
    if weights not in ("owned", "shared"):
        raise ValueError(f"weights must be 'owned' or 'shared', got {weights!r}")
    return 1 if weights == "owned" else 2


def layer_counts(row: LayerCount, he_directions: int = 2) -> dict[str, int]:
    """Ciphertexts sent, computed and returned, automorphisms and products of one layer.

    Each product runs `he_directions` times (`directions`: 2 with shared weights, one
    per cross term; 1 with server-owned weights); the counts include all of them.
    """
    out = dict.fromkeys(HE_COUNTS, 0)
    for m, k, n in layer_products(row):
        b = blocking(m, k, n)
        out["he_sent"] += he_directions * b.sent
        out["he_outputs"] += he_directions * b.outputs
        out["he_response"] += he_directions * b.response
        out["he_automorphisms"] += he_directions * b.automorphisms
        out["he_muls"] += he_directions * b.muls
    return out
