"""SPU programs: a JAX function compiled once into an executable both parties can run.

Each party needs only the other's SHAPES to compile the same executable (compilation is
deterministic); `Program.fingerprint` lets the two check that they did. Also the
in-process simulator (`run_simulated`) and the plaintext reference (`plain_logits`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepreshape.errors import DeepReshapeError, RunFailure, UsageError
from deepreshape.pi.protocols import load_spu, runtime_config, spu_error_text

OUT_NAME = "logits"


X_NAME = "x"


def param_names(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def as_f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def encode_spec(tree: Any) -> Any:
    """A params pytree (nested dicts/lists of arrays or shape structs) as JSON-able shapes."""
    if isinstance(tree, dict):
        if not all(isinstance(k, str) for k in tree):
            raise UsageError("params dict keys must be strings")
        return {"dict": {k: encode_spec(tree[k]) for k in sorted(tree)}}
    if isinstance(tree, list | tuple):
        return {"list": [encode_spec(v) for v in tree]}
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        return {"shape": [int(d) for d in tree.shape]}
    raise UsageError(f"params must be nested dicts/lists of arrays, found {type(tree).__name__}")


def decode_spec(obj: Any, depth: int = 0) -> Any:
    """Inverse of `encode_spec`, into `jax.ShapeDtypeStruct`s; validates a peer's message."""
    import jax

    if depth > 64 or not isinstance(obj, dict) or len(obj) != 1:
        raise ValueError("malformed shape spec")
    (kind, body), = obj.items()
    if kind == "dict" and isinstance(body, dict):
        return {str(k): decode_spec(v, depth + 1) for k, v in body.items()}
    if kind == "list" and isinstance(body, list):
        return [decode_spec(v, depth + 1) for v in body]
    if kind == "shape" and isinstance(body, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in body
    ):
        return jax.ShapeDtypeStruct(tuple(body), np.float32)
    raise ValueError("malformed shape spec")


def flat_shapes(spec: Any) -> list[tuple[int, ...]]:
    """Leaf shapes of an encoded spec in JAX's flattening order (dicts by sorted key)."""
    if "shape" in spec:
        return [tuple(spec["shape"])]
    children = spec["list"] if "list" in spec else [spec["dict"][k] for k in sorted(spec["dict"])]
    return [s for c in children for s in flat_shapes(c)]


@dataclass(frozen=True)
class Program:
    """A compiled SPU executable plus the input shapes both parties must agree on.

    Plain bytes and shapes, so it travels as data: `run_two_party` compiles once and hands
    this to the spawned parties (as files, never pickles) instead of `fn`, often a closure.
    """

    executable: bytes  # libspu.Executable.SerializeToString()
    param_spec: Any  # `encode_spec` of the params
    x_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def param_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the flattened parameters, in the order the executable takes them."""
        return flat_shapes(self.param_spec)

    def fingerprint(self) -> str:
        """Hash of the code and shapes; equal in both parties iff they run the same thing."""
        h = hashlib.sha256(self.executable)
        h.update(json.dumps([self.param_spec, list(self.x_shape)], sort_keys=True).encode())
        return h.hexdigest()

    def load(self) -> Any:
        """The executable as a `libspu.Executable`, ready to run."""
        exe = load_spu().libspu.Executable()
        exe.ParseFromString(self.executable)
        return exe


def _named(fn: Callable) -> Callable:
    """SPU's compiler names the executable after `fn.__name__`, which not every callable has."""

    def secure_inference(params: Any, x: Any) -> Any:
        return fn(params, x)

    return secure_inference


def compile_program(fn: Callable, params: Any, x: Any) -> Program:
    """Compile `fn(params, x)` for SPU; `params`/`x` may be arrays or shape structs.

    All inputs are secret (VIS_SECRET: CHEETAH rejects VIS_PRIVATE) and float32.
    """
    import jax

    spu = load_spu()
    from spu.utils import frontend

    param_spec = encode_spec(params)
    p_abs = decode_spec(param_spec)
    x_shape = x.shape if hasattr(x, "shape") else np.shape(x)
    x_abs = jax.ShapeDtypeStruct(tuple(int(d) for d in x_shape), np.float32)
    n = len(jax.tree_util.tree_leaves(p_abs))
    names = [*param_names(n), X_NAME]
    vis = [spu.libspu.Visibility.VIS_SECRET] * len(names)
    try:
        exe, out = frontend.compile(
            frontend.Kind.JAX, _named(fn), (p_abs, x_abs), {}, names, vis,
            lambda flat: [f"{OUT_NAME}{i}" if i else OUT_NAME for i in range(len(flat))],
        )
    except DeepReshapeError:
        raise
    except Exception as e:
        raise UsageError(f"could not compile fn for SPU: {type(e).__name__}: {e}") from e
    logits = _single_output(out)
    return Program(exe.SerializeToString(), param_spec, tuple(x_abs.shape),
                   tuple(int(d) for d in logits.shape))


def _single_output(out: Any) -> Any:
    """The one array `fn` must return (the logits)."""
    import jax

    outs = jax.tree_util.tree_leaves(out)
    if len(outs) != 1:
        raise UsageError(f"fn must return one array (the logits), it returns {len(outs)}")
    return outs[0]


def run_simulated(
    fn: Callable, params: Any, x: Any, protocol: str = "cheetah", **cfg: Any
) -> np.ndarray:
    """`fn(params, x)` in SPU's in-process simulator (two threads, memory links).

    Same protocol and fixed point as a real run, so it checks accuracy quickly; it measures
    nothing. `cfg` goes to `runtime_config`.
    """
    import jax

    load_spu()
    from spu.utils import simulation

    config = runtime_config(protocol, **cfg)
    params32 = jax.tree_util.tree_map(as_f32, params)
    try:
        out = simulation.sim_jax(simulation.Simulator(2, config), _named(fn))(params32, as_f32(x))
    except DeepReshapeError:
        raise
    except Exception as e:
        raise RunFailure(f"simulated SPU run failed: {spu_error_text(e)}") from e
    return np.asarray(_single_output(out))


def plain_logits(fn: Callable, params: Any, x: Any) -> np.ndarray:
    """The reference: `fn` in plain JAX on float32 inputs."""
    import jax

    return np.asarray(fn(jax.tree_util.tree_map(as_f32, params), as_f32(x)))
