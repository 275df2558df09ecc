"""A trained network as a pure JAX function, built from its `NetSpec` (not traced from torch).

Walking the spec (as `deepreshape.build` does for torch) keeps the exported function, the
counts and the torch module in agreement, and lets each ReLU slot be emitted as exactly the
secure operations it needs (its kind's `SlotKindDef.jax`, `deepreshape.slotkinds`):
``relu`` is one comparison per element, ``identity`` none, ``reuse:N`` compares only its
ReLU group, and an SNL mask compares only its kept positions, which are public
architecture and become a static gather/scatter (`relu_on`).

BatchNorm is folded for inference (eps 1e-5, BatchNorm2d's default):

- a conv followed by BN (stem, basic/bottleneck blocks, projections, ReLU-reuse convs, and
  the pre-activation block's ``conv1 -> bn2``) becomes one conv with a bias,
  ``w' = w * g/sqrt(v+eps)``, ``b' = beta - mean * g/sqrt(v+eps)``;
- a BN with no conv before it (the pre-activation block's ``bn1`` and WideResNet's final
  ``post.bn``) is exported as a per-channel affine ``x * scale + shift``: it sits after a
  residual add whose raw value the identity shortcut also uses, so it cannot go backward
  into a conv; forward it meets a ReLU, and even past a linearized slot its shift would be
  wrong at the zero padding of the next 3x3 conv.

The function is jit-able with static shapes and no data-dependent Python control flow, so
it compiles under SPU as well as `jax.jit`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deepreshape.errors import UsageError
from deepreshape.spec import BLOCKS, NetSpec, Stage, relu_slots

BN_EPS = 1e-5
_HIGHEST = jax.lax.Precision.HIGHEST
_NCHW = ("NCHW", "OIHW", "NCHW")

Params = Mapping[str, Any]
Layer = Callable[[Params, jax.Array], jax.Array]
ExportedFn = Callable[[Params, jax.Array], jax.Array]


# --------------------------------------------------------------------------- jax ops


def relu_on(x: jax.Array, kept_idx: np.ndarray,
            other: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """ReLU on the kept flat (C*H*W) positions only; the others pass through unchanged,
    or through `other` (a mask's polynomial, given the dropped positions' values in order,
    batch first) when given.

    `kept_idx` is a numpy constant fixed at export time, so only the kept elements pay for
    a comparison (and only the dropped ones for `other`'s products) under secure
    execution. The result is assembled with gathers alone (append the computed values,
    then one static permutation): SPU runs a scatter (`x.at[idx].set`) element by element,
    about 20x the cost of the ReLU itself.
    """
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    if kept_idx.size == n:
        return jnp.maximum(x, 0)
    if other is None:
        if kept_idx.size == 0:
            return x
        source = np.arange(n)
        source[kept_idx] = n + np.arange(kept_idx.size)  # kept positions read the appended ReLUs
        both = jnp.concatenate([flat, jnp.maximum(flat[:, kept_idx], 0)], axis=1)
        return jnp.take(both, source, axis=1).reshape(x.shape)
    dropped = np.setdiff1d(np.arange(n), kept_idx)
    source = np.empty(n, dtype=np.int64)
    source[dropped] = np.arange(dropped.size)
    source[kept_idx] = dropped.size + np.arange(kept_idx.size)
    both = jnp.concatenate([other(flat[:, dropped]), jnp.maximum(flat[:, kept_idx], 0)], axis=1)
    return jnp.take(both, source, axis=1).reshape(x.shape)


def conv2d(x: jax.Array, w: jax.Array, b: jax.Array | None, stride: int, groups: int = 1) -> jax.Array:
    """Torch-style conv: NCHW/OIHW, padding k//2 (1 for 3x3, 0 for 1x1), optional bias.

    A grouped conv is written as one conv per group, concatenated: JAX lowers
    ``feature_group_count`` to a convolution with a third spatial dimension, which SPU
    0.9.5 rejects ("Convolution with 3 spatial dimensions is not supported").
    """
    pad = w.shape[-1] // 2

    def conv(xg: jax.Array, wg: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(
            xg, wg, (stride, stride), [(pad, pad), (pad, pad)], dimension_numbers=_NCHW,
            precision=_HIGHEST)

    if groups == 1:
        y = conv(x, w)
    else:
        y = jnp.concatenate([conv(xg, wg) for xg, wg in zip(jnp.split(x, groups, axis=1),
                                                            jnp.split(w, groups, axis=0),
                                                            strict=True)], axis=1)
    return y if b is None else y + b[None, :, None, None]


def _channel_affine(x: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def _chain(*layers: Layer | None) -> Layer:
    """Compose layers left to right; `None` entries are skipped at export time."""
    kept = [f for f in layers if f is not None]

    def run(p: Params, x: jax.Array) -> jax.Array:
        for f in kept:
            x = f(p, x)
        return x

    return run


# --------------------------------------------------------------------------- reading weights


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class SlotExporter:
    """Reads a state dict by module path, folds BN, fills `params` and returns layers.

    A slot kind's `SlotKindDef.jax` gets this object to read its module's weights:
    `tensor` (a raw tensor, checked for shape and marked used), `put` (a parameter of the
    exported function; returns its key in ``params``), `conv_bn` and `conv` (a folded conv
    as a layer). A state-dict key no layer reads is an error (`check_all_used`).
    """

    def __init__(self, spec: NetSpec, state_dict: Mapping[str, Any]) -> None:
        self.spec = spec
        self.sd = state_dict
        self.slots = {s.address: s for s in relu_slots(spec)}
        self.params: dict[str, np.ndarray] = {}
        self.used: set[str] = set()

    # -- raw tensors ---------------------------------------------------------------
    def tensor(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in self.sd:
            raise UsageError(f"state dict for {self.spec.describe()} has no {key!r} "
                             f"(expected shape {shape})")
        arr = _to_numpy(self.sd[key])
        if tuple(arr.shape) != tuple(shape):
            raise UsageError(f"state dict {key!r} has shape {tuple(arr.shape)}, "
                             f"{self.spec.describe()} expects {tuple(shape)}")
        self.used.add(key)
        return arr.astype(np.float64)

    def put(self, name: str, value: np.ndarray) -> str:
        self.params[name] = np.ascontiguousarray(value, dtype=np.float32)
        return name

    def check_all_used(self) -> None:
        extra = sorted(k for k in self.sd if k not in self.used)
        if extra:
            raise UsageError(f"state dict has {len(extra)} key(s) {self.spec.describe()} does not "
                             f"use, e.g. {extra[0]!r}: it is for another network or slot layout")

    # -- layers --------------------------------------------------------------------
    def bn(self, path: str, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) of an eval-mode BatchNorm, in float64."""
        gamma = self.tensor(f"{path}.weight", (c,))
        beta = self.tensor(f"{path}.bias", (c,))
        mean = self.tensor(f"{path}.running_mean", (c,))
        var = self.tensor(f"{path}.running_var", (c,))
        self.used.add(f"{path}.num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPS)
        return scale, beta - mean * scale

    def conv_bn(self, conv: str, bn: str, cin: int, cout: int, k: int, stride: int = 1,
                groups: int = 1) -> Layer:
        """conv -> BN folded into one conv with bias (stored under the conv's path)."""
        w = self.tensor(f"{conv}.weight", (cout, cin // groups, k, k))
        scale, shift = self.bn(bn, cout)
        wk = self.put(f"{conv}.weight", w * scale[:, None, None, None])
        bk = self.put(f"{conv}.bias", shift)
        return lambda p, x: conv2d(x, p[wk], p[bk], stride, groups)

    def conv(self, conv: str, cin: int, cout: int, k: int, stride: int = 1) -> Layer:
        """A bare conv (no BN after it: pre-activation convs and projections)."""
        wk = self.put(f"{conv}.weight", self.tensor(f"{conv}.weight", (cout, cin, k, k)))
        return lambda p, x: conv2d(x, p[wk], None, stride)

    def affine(self, bn: str, c: int) -> Layer:
        """A BN with no conv before it, as a per-channel affine (see the module docstring)."""
        scale, shift = self.bn(bn, c)
        sk, hk = self.put(f"{bn}.scale", scale), self.put(f"{bn}.shift", shift)
        return lambda p, x: _channel_affine(x, p[sk], p[hk])

    # -- ReLU slots ----------------------------------------------------------------
    def slot(self, address: str) -> Layer:
        """The slot's JAX op, from its kind's definition (`SlotKindDef.jax`), which reads
        the slot's weights through this exporter."""
        kind = self.spec.slot_kind(address)
        return kind.definition.jax(kind, self.slots[address], self)

    # -- network parts -------------------------------------------------------------
    def stem(self) -> Layer:
        s, cin = self.spec.stem, self.spec.in_channels
        if not s.bn_relu:
            return self.conv("stem.conv", cin, s.width, 3, s.stride)
        return _chain(self.conv_bn("stem.conv", "stem.bn", cin, s.width, 3, s.stride),
                      self.slot("stem.relu"))

    def shortcut(self, path: str, cin: int, cout: int, stride: int) -> Layer | None:
        if stride == 1 and cin == cout:
            return None
        return self.conv_bn(f"{path}.shortcut.conv", f"{path}.shortcut.bn", cin, cout, 1, stride)

    def block(self, path: str, st: Stage, cin: int, stride: int) -> Layer:
        if st.block == "basic":
            return self.basic(path, cin, st.width, stride)
        if st.block == "bottleneck":
            return self.bottleneck(path, st, cin, stride)
        if st.block == "preact":
            return self.preact(path, cin, st.width, stride)
        raise UsageError(f"{path}: cannot export block {st.block!r}; supported: {', '.join(BLOCKS)}")

    def basic(self, path: str, cin: int, cout: int, stride: int) -> Layer:
        body = _chain(self.conv_bn(f"{path}.conv1", f"{path}.bn1", cin, cout, 3, stride),
                      self.slot(f"{path}.relu1"),
                      self.conv_bn(f"{path}.conv2", f"{path}.bn2", cout, cout, 3))
        return self._residual(body, self.shortcut(path, cin, cout, stride), self.slot(f"{path}.relu2"))

    def bottleneck(self, path: str, st: Stage, cin: int, stride: int) -> Layer:
        inner, cout = st.inner, st.width
        body = _chain(self.conv_bn(f"{path}.conv1", f"{path}.bn1", cin, inner, 1),
                      self.slot(f"{path}.relu1"),
                      self.conv_bn(f"{path}.conv2", f"{path}.bn2", inner, inner, 3, stride, st.groups),
                      self.slot(f"{path}.relu2"),
                      self.conv_bn(f"{path}.conv3", f"{path}.bn3", inner, cout, 1))
        return self._residual(body, self.shortcut(path, cin, cout, stride), self.slot(f"{path}.relu3"))

    @staticmethod
    def _residual(body: Layer, shortcut: Layer | None, relu: Layer) -> Layer:
        def run(p: Params, x: jax.Array) -> jax.Array:
            return relu(p, body(p, x) + (shortcut(p, x) if shortcut is not None else x))

        return run

    def preact(self, path: str, cin: int, cout: int, stride: int) -> Layer:
        """bn1 (affine) -> relu1 -> conv1 (+ bn2 folded) -> relu2 -> conv2; the projection
        (no BN) takes the activated input, the identity shortcut the raw one."""
        act = _chain(self.affine(f"{path}.bn1", cin), self.slot(f"{path}.relu1"))
        body = _chain(self.conv_bn(f"{path}.conv1", f"{path}.bn2", cin, cout, 3, stride),
                      self.slot(f"{path}.relu2"),
                      self.conv(f"{path}.conv2", cout, cout, 3))
        proj = (self.conv(f"{path}.shortcut", cin, cout, 1, stride)
                if stride != 1 or cin != cout else None)

        def run(p: Params, x: jax.Array) -> jax.Array:
            a = act(p, x)
            return body(p, a) + (proj(p, a) if proj is not None else x)

        return run

    def head(self, cin: int) -> Layer:
        n = self.spec.num_classes
        wk = self.put("fc.weight", self.tensor("fc.weight", (n, cin)))
        bk = self.put("fc.bias", self.tensor("fc.bias", (n,)))
        return lambda p, x: jnp.dot(x.mean(axis=(2, 3)), p[wk].T, precision=_HIGHEST) + p[bk]

    def network(self) -> Layer:
        layers = [self.stem()]
        cin = self.spec.stem.width
        for k, st in enumerate(self.spec.stages, start=1):
            for b in range(1, st.depth + 1):
                layers.append(self.block(f"stage{k}.block{b}", st, cin if b == 1 else st.width,
                                         st.stride if b == 1 else 1))
            cin = st.width
        if self.spec.final_relu:
            k = len(self.spec.stages)
            layers += [self.affine(f"stage{k}.post.bn", cin), self.slot(f"stage{k}.post.relu")]
        layers.append(self.head(cin))
        return _chain(*layers)


# --------------------------------------------------------------------------- public API


def export(spec: NetSpec, state_dict: Mapping[str, Any]) -> tuple[ExportedFn, dict[str, np.ndarray]]:
    """Export a trained network to ``(fn, params)`` with ``fn(params, x) -> logits``.

    `fn` is pure JAX (jnp / jax.lax) on float32 NCHW input of the spec's shape; `params`
    is a flat dict of float32 numpy arrays named by module path, with BatchNorm folded
    (see the module docstring). The state dict must match the spec exactly: a missing,
    misshapen or unused key is a `UsageError` naming it.
    """
    if not isinstance(spec, NetSpec):
        raise UsageError(f"export needs a NetSpec, got {type(spec).__name__}")
    ex = SlotExporter(spec, state_dict)
    net = ex.network()
    ex.check_all_used()
    expected = (spec.in_channels, spec.input_size, spec.input_size)

    def fn(params: Params, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise UsageError(f"{spec.describe()} takes input of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        return net(params, x)

    return fn, ex.params


def export_model(model: Any) -> tuple[ExportedFn, dict[str, np.ndarray]]:
    """`export(model.spec, model.state_dict())` for a `deepreshape.build.Net`."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, NetSpec) or not hasattr(model, "state_dict"):
        raise UsageError(f"export_model needs a deepreshape Net (with .spec), got {type(model).__name__}")
    return export(spec, model.state_dict())


def plain_logits(fn: ExportedFn, params: Mapping[str, np.ndarray], x: Any) -> np.ndarray:
    """Run an exported function in the clear with `jax.jit` on CPU (the reference for SPU)."""
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        out = jax.jit(fn)(dict(params), jnp.asarray(_to_numpy(x), dtype=jnp.float32))
    return np.asarray(out)
