"""Atomic writes: a file is either the old version or the complete new one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)` on a temporary file beside `path`, then rename it over `path`.

    If `writer` raises, the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
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
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def save_numpy(path: str | os.PathLike, **arrays: Any) -> Path:
    """Atomic `numpy.savez` (the temporary name keeps the .npz suffix numpy wants)."""
    import numpy as np

    def _write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, _write)
