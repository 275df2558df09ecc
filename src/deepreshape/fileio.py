"""Atomic writes: a file is either the old version or the complete new one, never half."""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepreshape.errors import CheckpointError, UnsafeFileError


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)` on a temporary file beside `path`, then rename it over `path`.

    If `writer` raises, the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    except OSError as e:  # name the file the user knows, not the temporary one
        tmp_path.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write(path, lambda p: p.write_text(text))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> Path:
    """Append one JSON line by rewriting the file atomically (files here are small)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    return write_text(path, old + json.dumps(record) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """`torch.save` to `path` atomically, so a killed run never leaves a torn checkpoint."""
    import io

    import torch

    buf = io.BytesIO()  # serialize in memory, so a full disk is an OSError naming the file
    torch.save(obj, buf)
    return write_bytes(path, buf.getbuffer())


def save_numpy(path: str | os.PathLike, **arrays: Any) -> Path:
    """Atomic `numpy.savez` (the temporary name keeps the .npz suffix numpy wants)."""
    import numpy as np

    def _write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, _write)


def load_torch(path: str | os.PathLike, what: str = "checkpoint",
               map_location: Any = "cpu") -> Any:
    """`torch.load` with `weights_only=True`: tensors and plain data, nothing of the file runs.

    A file that names any other global (a planted pickle payload, a foreign object) is
    refused with UnsafeFileError; one that is truncated or not a torch file is a
    CheckpointError. The only globals allowed beyond torch's own are NumPy's array
    reconstruction, which checkpoints written before RNG states were stored as tensors need for
    their NumPy RNG state.
    """
    import torch

    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on foreign pickle protocols
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" not in text:
            raise CheckpointError(f"{path}: broken {what} (UnpicklingError)") from None
        m = re.search(r"GLOBAL (\S+)", text)
        if m is None:  # bytes torch cannot read as data: broken, not hostile
            raise CheckpointError(f"{path}: broken {what} (not a torch file of tensors and "
                                  "plain data)") from None
        raise UnsafeFileError(
            f"{path}: refused to load this {what} (it asks for {m.group(1)}): deepreshape loads "
            "only tensors and plain data, so nothing in a file can run (see docs/reliability.md)"
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {what} here") from None
    except Exception as e:  # torch raises many types for truncated/corrupt files
        raise CheckpointError(f"{path}: broken {what} ({e.__class__.__name__})") from None


def _legacy_numpy_globals() -> list:
    """NumPy's array reconstruction: what `np.random.get_state()` pickles to (old checkpoints)."""
    import numpy as np

    core = np._core if int(np.__version__.split(".")[0]) >= 2 else np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
