"""A cost-model prediction carried over to a network link: rounds pay the RTT, bytes the rate.

The shipped cost model (`deepreshape.pi.costs.costmodel`) is fit on two parties over loopback,
where a round trip and a byte on the wire cost next to nothing. Over a link each protocol
round adds one round-trip time and each direction's bytes their serialization time, so

    latency(link) = latency(loopback) + rounds * RTT + (bytes / 2) * 8 / rate

with the bytes split evenly over the two directions of a full-duplex link (Cheetah's
traffic is close to symmetric: 6.8 / 7.1 MB sent / received on the calibration runs).
Rounds are counted per layer, not per ReLU: a ReLU layer's secure comparison and the
multiplication by its result take `ROUNDS_PER_RELU_LAYER`, a conv/linear layer's HE
product and truncation `ROUNDS_PER_LINEAR_LAYER`. These two constants are read off the
emulated-WAN runs in docs/pi-costs.md (resnet18-m16 and its SNL-50K version, 40 ms RTT):
their ReLU time rose by 6.3 and 6.2 s (155 round trips over 17 ReLU layers, about 9 each,
plus about 1 for the rest of the ReLU), their conv time by 1.7 and 2.0 s (about 2 round
trips per conv/linear layer once the bytes' wire time is taken off). They are estimates
from one network's two runs, not a fit with held-out error: calibrate a model through the
link (`deepreshape pi --calibrate --link wan`) when the link matters.
"""

from __future__ import annotations

from typing import Any

from deepreshape.errors import UsageError
from deepreshape.pi.costs.costmodel import CostModel, features, load
from deepreshape.pi.linkprofile import PRESETS, LinkProfile
from deepreshape.spec import NetSpec

ROUNDS_PER_RELU_LAYER = 10
ROUNDS_PER_LINEAR_LAYER = 2
LINKS = ("loopback", "lan", "wan")
"""Names `parse_link` takes besides ``RATE:RTT``."""


def parse_link(text: str | None) -> LinkProfile | None:
    """``loopback`` (or None) -> None; ``lan``, ``wan``, ``RATE:RTT`` -> a `LinkProfile`."""
    if text is None or str(text).strip().lower() == "loopback":
        return None
    return LinkProfile.parse(text)


def describe(link: LinkProfile | None) -> str:
    """'loopback' or e.g. 'lan (3 Gbit/s, 0.3 ms RTT)'."""
    if link is None:
        return "loopback"
    name = next((k for k, v in PRESETS.items() if v == link), None)
    return f"{name} ({link.describe()})" if name else link.describe()


def rounds(relu_layers: Any, linear_layers: Any) -> Any:
    """Estimated protocol rounds of one query (ints or arrays of layer counts)."""
    return ROUNDS_PER_RELU_LAYER * relu_layers + ROUNDS_PER_LINEAR_LAYER * linear_layers


def link_seconds(relu_layers: Any, linear_layers: Any, total_bytes: Any,
                 link: LinkProfile | None) -> Any:
    """What the link adds to a loopback latency (s): rounds times RTT plus the wire time."""
    if link is None:
        return 0.0 * total_bytes
    wire = 0.0 if link.rate_bps is None else (total_bytes / 2) * 8 / link.rate_bps
    return rounds(relu_layers, linear_layers) * link.rtt_s + wire


def fit_over(model: CostModel, link: LinkProfile | None) -> bool:
    """True when `model` was fit over `link` itself (its prediction stands), False when
    over loopback (add the link term). A model fit over another link cannot be carried
    over (UsageError naming both)."""
    own = model.meta.get("link")
    if own is None:
        return link is None
    if link is not None and (own.get("rate_bps"), own.get("rtt_s")) == (link.rate_bps, link.rtt_s):
        return True
    raise UsageError(f"the cost model was calibrated over {own.get('describe', own)}, not "
                     f"{describe(link)}; pass that link or a loopback-calibrated model "
                     "(--cost-model)")


def predict(spec: NetSpec, link: LinkProfile | None = None, protocol: str = "cheetah",
            model: CostModel | str | None = None, weights: str | None = None) -> dict[str, Any]:
    """`CostModel.predict` over `link`: its dict with ``latency_s`` including the link term,
    ``loopback_latency_s`` (the model's own figure), ``link_s``, ``rounds`` and
    ``target_link`` (the model's own calibration link stays in ``link``)."""
    m = model if isinstance(model, CostModel) else load(model)
    pred = m.predict(spec, protocol, weights)
    over = fit_over(m, link)
    f = features(spec)
    extra = 0.0 if over else float(link_seconds(f["relu_layers"], f["linear_layers"],
                                                pred["bytes"], link))
    pred.update(loopback_latency_s=pred["latency_s"] if m.meta.get("link") is None else None,
                latency_s=pred["latency_s"] + extra, link_s=extra,
                rounds=int(rounds(f["relu_layers"], f["linear_layers"])),
                target_link=describe(link), link_model=None if over else
                f"loopback model + {ROUNDS_PER_RELU_LAYER} rounds per ReLU layer, "
                f"{ROUNDS_PER_LINEAR_LAYER} per conv/linear layer, bytes at the link rate")
    return pred
