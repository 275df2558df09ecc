"""PI protocols: the registry of them, SPU's weights modes and runtime config, and the lazy
import of SPU itself.

A protocol is a `Protocol` in `PROTOCOLS` (entry-point group ``deepreshape.protocols``):
its name, whether it is secure and the note that says so, its default weights mode, the
cost model's feature family for its products (`cost_key`), and its `engine`, the seam that
runs it. The two built-ins run under SPU (`SpuEngine`): ``cheetah`` is the secure protocol
(HE for linear layers, OT for comparisons); ``semi2k`` is not secure, for debugging: party
0 is the trusted dealer. A protocol outside SPU brings its own `Engine` (see its
docstring); `deepreshape pi`, `measure_run`, `measure_spec` and calibration dispatch to it
and write its result as ``pi-<name>-<link>.json``. Nothing here imports SPU until a
protocol runs.

The weights mode says how the server's weights enter the computation (`WEIGHTS`): owned by
the server (Cheetah's own setting, the default for cheetah) or secret-shared like the
input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deepreshape.errors import UsageError
from deepreshape.registry import Registry

if TYPE_CHECKING:
    from deepreshape.pi.linkprofile import LinkProfile
    from deepreshape.pi.measurement import SecureResult


class Engine:
    """How a protocol runs: the seam `measure_run`, `measure_spec` and calibration call.

    An engine runs ``fn(params, x) -> logits`` (a JAX function from `pi.export`, with the
    server's `params` and the client's input `x`) between two parties and returns the
    client's `SecureResult` (logits, latency, bytes, per-op costs). `cfg` holds
    ``fxp_fraction_bits`` and ``weights`` (and any engine options). Subclass it and
    override `run_local` (both parties on this host; `repeats` warm runs after one cold
    one) and, where the engine can run one party per host, `run_party`; `check` validates
    `cfg` before any work starts. `queries` > 1: `x` holds that many queries as equal
    batches along its first axis, each run as its own query (the costs are of one), and
    the logits are theirs in order (an engine may run them as one batch when it measures
    no costs).
    """

    name = "engine"

    def check(self, protocol: Protocol, cfg: dict[str, Any]) -> None:
        """Refuse options this engine cannot run (UsageError); default: any known weights
        mode."""
        if cfg.get("weights") is not None:
            check_weights(cfg["weights"])

    def run_local(self, protocol: Protocol, fn: Callable, params: Any, x: Any, *,
                  repeats: int, timeout_s: float, link: LinkProfile | None = None,
                  queries: int = 1, **cfg: Any) -> SecureResult:
        """Both parties on this host (through the emulated `link` if given)."""
        raise NotImplementedError

    def run_party(self, protocol: Protocol, role: str, fn: Callable, params: Any, x: Any,
                  parties: list[str], *, repeats: int, timeout_s: float,
                  settings: dict[str, Any] | None = None, **cfg: Any) -> SecureResult | None:
        """One party (`role` "server" or "client") of a two-host deployment; the client
        returns the result, the server None."""
        raise UsageError(f"protocol {protocol.name!r} cannot run one party per host "
                         "(its engine has no run_party)")


class SpuEngine(Engine):
    """SecretFlow SPU (`deepreshape.pi.engine`), imported only when a protocol runs."""

    name = "spu"

    def check(self, protocol: Protocol, cfg: dict[str, Any]) -> None:
        runtime_config(protocol.name, **cfg)

    def run_local(self, protocol: Protocol, fn: Callable, params: Any, x: Any, *,
                  repeats: int, timeout_s: float, link: LinkProfile | None = None,
                  **cfg: Any) -> SecureResult:
        from deepreshape.pi.processes import run_two_party

        return run_two_party(fn, params, x, protocol.name, samples=repeats,
                             timeout_s=timeout_s, link=link, **cfg)

    def run_party(self, protocol: Protocol, role: str, fn: Callable, params: Any, x: Any,
                  parties: list[str], *, repeats: int, timeout_s: float,
                  settings: dict[str, Any] | None = None, **cfg: Any) -> SecureResult | None:
        from deepreshape.pi.engine import run_party

        return run_party(role, fn, params, x, parties, protocol.name, repeats, timeout_s,
                         isolate=True, settings=settings, **cfg)


SPU = SpuEngine()


@dataclass(frozen=True)
class Protocol:
    """One PI protocol (a member of `PROTOCOLS`).

    `secure`: False for a debugging protocol (the CLI warns, with `security`); `security`:
    the one-line security note every result carries; `summary`: its CLI help; `default_weights`:
    the weights mode it uses unless told (`WEIGHTS`); `cost_key`: the cost model's feature
    family for its linear layers (``"he"``: HE products, ``"mac"``: Beaver-style
    arithmetic; see `costmodel.CONV_SETS`); `spu_kind`: the `spu.libspu.ProtocolKind`
    member for an SPU protocol, None otherwise; `engine`: what runs it (`Engine`).
    """

    name: str
    secure: bool
    security: str
    summary: str
    default_weights: str = "shared"
    cost_key: str = "mac"
    spu_kind: str | None = None
    engine: Engine = field(default=SPU, compare=False)
    warning: str | None = None
    """What the CLI prints before running an insecure protocol (default: from `security`)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]+", self.name):  # it names pi-<protocol>-<link>.json
            raise UsageError(f"a protocol's name must be lower-case letters and digits, "
                             f"got {self.name!r}")


CHEETAH = Protocol(
    "cheetah", secure=True,
    security="secure against a semi-honest peer: linear layers by homomorphic encryption, "
    "ReLU comparisons by oblivious transfer (Cheetah, USENIX Security 2022)",
    summary="secure against a semi-honest peer",
    default_weights="owned", cost_key="he", spu_kind="CHEETAH")

SEMI2K = Protocol(
    "semi2k", secure=False,
    security="not secure, for debugging: party 0 is the trusted dealer (SPU's two-party "
    "SEMI2K uses TrustedFirstParty Beaver triples, so the server could learn the input)",
    summary="NOT SECURE, for debugging only (party 0 is a trusted dealer)",
    default_weights="shared", cost_key="mac", spu_kind="SEMI2K",
    warning="semi2k is NOT SECURE, for debugging only: party 0 (the server) is the trusted "
    "dealer and could learn the client's input")

PROTOCOLS: Registry[Protocol] = Registry("protocol", "deepreshape.protocols", {
    "cheetah": "deepreshape.pi.protocols:CHEETAH",
    "semi2k": "deepreshape.pi.protocols:SEMI2K",
})
"""Every PI protocol: CLI choices, sweep validation, calibration and the cost model read it."""

DEFAULT_PROTOCOL = "cheetah"


def security_note(protocol: str) -> str:
    """The protocol's security note ("" for a name that is not registered)."""
    return PROTOCOLS.get(protocol).security if protocol in PROTOCOLS else ""


def insecure_warning(protocol: str) -> str | None:
    """The warning to print before running `protocol`, None for a secure one."""
    p = PROTOCOLS.get(protocol)
    if p.secure:
        return None
    return p.warning or f"{p.name} is NOT SECURE: {p.security}"


def protocol_help() -> str:
    """``--protocol`` help: each protocol's summary, the default first."""
    return "; ".join(f"{p.name}{' (default)' if p.name == DEFAULT_PROTOCOL else ''}: {p.summary}"
                     for p in PROTOCOLS)


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
    """The protocol's own weights mode (`Protocol.default_weights`): owned for Cheetah (its
    own setting: the server holds its model in the clear); shared for semi2k, the debugging
    mode; shared for a name that is not registered (a cost-model key from elsewhere)."""
    return PROTOCOLS.get(protocol).default_weights if protocol in PROTOCOLS else "shared"


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
    PROTOCOLS.check(protocol)


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
    kind = PROTOCOLS.get(protocol).spu_kind
    if kind is None:
        raise UsageError(f"protocol {protocol!r} does not run under SPU")
    lib = load_spu().libspu
    cfg = lib.RuntimeConfig(protocol=getattr(lib.ProtocolKind, kind), field=lib.FieldType.FM64)
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
