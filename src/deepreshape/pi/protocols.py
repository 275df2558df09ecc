"""SPU's protocols, weights modes and runtime config, and the lazy import of SPU itself.

``cheetah`` is the secure protocol (HE for linear layers, OT for comparisons); ``semi2k``
is not secure, for debugging: party 0 is the trusted dealer. The weights mode says how
the server's weights enter the computation (`WEIGHTS`): owned by the server (Cheetah's
own setting, the default for cheetah) or secret-shared like the input.
"""

from __future__ import annotations

import math
from typing import Any

from deepreshape.errors import UsageError

PROTOCOLS: dict[str, str] = {"cheetah": "CHEETAH", "semi2k": "SEMI2K"}
"""Protocol name -> `spu.libspu.ProtocolKind` member. semi2k: not secure, for debugging:
party 0 is the trusted dealer."""


SECURITY_NOTE: dict[str, str] = {
    "cheetah": "secure against a semi-honest peer: linear layers by homomorphic encryption, "
    "ReLU comparisons by oblivious transfer (Cheetah, USENIX Security 2022)",
    "semi2k": "not secure, for debugging: party 0 is the trusted dealer (SPU's two-party "
    "SEMI2K uses TrustedFirstParty Beaver triples, so the server could learn the input)",
}


ROLES: dict[str, int] = {"server": 0, "client": 1}


WEIGHTS: dict[str, str] = {
    "owned": "the server's weights enter SPU as a secret it owns (SPU's experimental colocated "
    "optimization): each product with them is one HE product, its other operand's share "
    "encrypted by the client; the client's share of the weights is all zeros",
    "shared": "the server's weights are secret-shared like the input: each product with them "
    "is two HE products, one per direction of the cross terms",
}
"""How the server's weights enter the secure computation (`--weights`); see docs/pi-costs.md."""


def default_weights(protocol: str) -> str:
    """Owned weights for Cheetah (its own setting: the server holds its model in the
    clear); shared for semi2k, the debugging mode."""
    return "owned" if protocol == "cheetah" else "shared"


def check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise UsageError(f"unknown weights mode {weights!r}; choose from {sorted(WEIGHTS)}")


FXP_BITS_RANGE = (8, 26)
"""Fraction bits allowed in the 64-bit ring: below 8 the resolution ruins the logits,
above 26 a product (2x the fraction bits before truncation) leaves too little headroom."""


def load_spu() -> Any:
    """Import spu lazily so this module (and PROTOCOLS) load without the `pi` extra."""
    try:
        import spu
    except ImportError as e:
        raise UsageError(
            "secure inference needs the `pi` extra: pip install 'deepreshape[pi]'"
        ) from e
    return spu


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")


def checked_protocol(protocol: str) -> str:
    check_protocol(protocol)
    return protocol


def runtime_config(
    protocol: str = "cheetah",
    fxp_fraction_bits: int = 18,
    profile: bool = False,
    weights: str | None = None,
    **overrides: Any,
) -> Any:
    """SPU runtime config: two-party `protocol` over the 64-bit ring (FM64).

    Fixed point: reals are encoded as ``round(v * 2**fxp_fraction_bits)`` in Z_2^64. With
    18 bits the resolution is 2**-18 (about 4e-6) and a product, which carries 36 fraction
    bits until it is truncated, still has about 2**27 of integer headroom, far above CNN
    activations; measured logit errors against plain JAX are 2e-5 to 4e-4. FM32 has no
    room for a product at useful precision, and FM128 would double all communication.

    `profile` turns on SPU's per-op profile (needed for bytes and per-op times);
    `weights` "owned" (default for cheetah, `default_weights`) turns on SPU's colocated
    optimization, which lets a secret have an owner; `overrides` set other `RuntimeConfig`
    fields by name.
    """
    check_protocol(protocol)
    weights = weights or default_weights(protocol)
    check_weights(weights)
    lo, hi = FXP_BITS_RANGE
    if isinstance(fxp_fraction_bits, bool) or not isinstance(fxp_fraction_bits, int) or not (
        lo <= fxp_fraction_bits <= hi
    ):
        raise UsageError(f"fxp_fraction_bits must be an integer in [{lo}, {hi}], "
                         f"got {fxp_fraction_bits!r}")
    lib = load_spu().libspu
    cfg = lib.RuntimeConfig(
        protocol=getattr(lib.ProtocolKind, PROTOCOLS[protocol]), field=lib.FieldType.FM64
    )
    cfg.fxp_fraction_bits = fxp_fraction_bits
    cfg.enable_pphlo_profile = bool(profile)
    cfg.experimental_enable_colocated_optimization = weights == "owned"
    for name, value in overrides.items():
        if name.startswith("_") or not hasattr(cfg, name):
            raise UsageError(f"unknown SPU runtime option {name!r}")
        setattr(cfg, name, value)
    return cfg


def check_run_args(protocol: str, samples: int, timeout_s: float, cfg: dict) -> None:
    check_protocol(protocol)
    runtime_config(protocol, **cfg)  # validates the options, `weights` among them
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UsageError(f"samples must be a positive integer, got {samples!r}")
    if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
        raise UsageError(f"timeout_s must be a positive number, got {timeout_s!r}")


def spu_error_text(e: BaseException) -> str:
    """The message of an SPU/yacl error without its C++ stack trace."""
    text = str(e).split("stacktrace:")[0].replace("what:", " ")
    return " ".join(text.split())[:500] or type(e).__name__


def role_name(rank: int) -> str:
    return next(k for k, v in ROLES.items() if v == rank)
