"""CIFAR-10 and CIFAR-100: the python-pickle releases, from their folder or the .tar.gz."""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from deepreshape.data import NEVER_DOWNLOADS
from deepreshape.datasets import DatasetInfo
from deepreshape.errors import DataError


class _CifarRelease(NamedTuple):
    folder: str
    archive: str
    url: str
    train: tuple[str, ...]
    test: str
    label_key: bytes
    num_classes: int


_CIFAR: dict[str, _CifarRelease] = {
    "cifar10": _CifarRelease(
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        b"labels",
        10,
    ),
    "cifar100": _CifarRelease(
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        ("train",),
        "test",
        b"fine_labels",
        100,
    ),
}

# Globals a CIFAR pickle may name: numpy array reconstruction only, so a planted pickle in the
# data root cannot run code.
_PICKLE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *(
        (m, f)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for f in ("_reconstruct", "scalar")
    ),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def read_cifar(info: DatasetInfo, root: Path, size: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the python-pickle release from its extracted folder or straight from the .tar.gz
    (at 32x32; `load_dataset` resizes to `size`)."""
    key = info.name
    rel = _CIFAR[key]
    names = (*rel.train, rel.test)
    folder = root if root.name == rel.folder and root.is_dir() else root / rel.folder
    archive = root / rel.archive
    if folder.is_dir():
        blobs = {n: (_read_member_file(folder / n, names), str(folder / n)) for n in names}
    elif archive.is_file():
        blobs = _read_tar_members(archive, rel.folder, names)
    else:
        raise DataError(
            f"{key} not found under {root}: expected the folder {rel.folder}/ or the archive "
            f"{rel.archive} (from {rel.url}); {NEVER_DOWNLOADS}"
        )
    parts = [_parse_cifar_batch(blobs[n][0], blobs[n][1], rel) for n in names]
    train = parts[:-1]
    train_x = np.concatenate([p[0] for p in train])
    train_y = np.concatenate([p[1] for p in train])
    return train_x, train_y, parts[-1][0], parts[-1][1]


def _read_member_file(path: Path, names: Sequence[str]) -> bytes:
    if not path.is_file():
        raise DataError(f"missing file {path} (expected {', '.join(names)} in {path.parent})")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e


def _read_tar_members(
    archive: Path, folder: str, names: Sequence[str]
) -> dict[str, tuple[bytes, str]]:
    """Read the wanted members in one sequential pass (a .tar.gz cannot seek cheaply)."""
    wanted = {f"{folder}/{n}": n for n in names}
    found: dict[str, tuple[bytes, str]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    found[wanted[name]] = (f.read(), f"{archive}:{name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"cannot read archive {archive}: {e}") from e
    missing = [m for m, n in wanted.items() if n not in found]
    if missing:
        raise DataError(f"archive {archive} lacks {', '.join(missing)}")
    return found


def _parse_cifar_batch(
    blob: bytes, where: str, rel: _CifarRelease
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one pickled batch: uint8 data [N,3072], N labels in range."""
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:  # truncated or foreign pickles raise many types
        raise DataError(f"{where} is not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    data = _get(obj, b"data", where)
    labels = _get(obj, rel.label_key, where)
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3072
    ):
        got = (
            f"{data.dtype} {list(data.shape)}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(f"{where}: expected b'data' as uint8 [N, 3072], got {got}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: labels are not integers ({e})") from e
    if y.ndim != 1 or len(y) != len(data):
        raise DataError(f"{where}: {len(data)} images but labels of shape {list(y.shape)}")
    _check_label_range(y, rel.num_classes, where)
    return data.reshape(-1, 3, 32, 32), y


def _get(obj: dict, key: bytes, where: str) -> Any:
    if key in obj:
        return obj[key]
    if key.decode() in obj:  # tolerate pickles re-saved with str keys
        return obj[key.decode()]
    raise DataError(f"{where}: missing key {key!r} (has {sorted(map(repr, obj))})")


def _check_label_range(y: np.ndarray, num_classes: int, where: str) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{where}: labels must be in 0..{num_classes - 1}, found {y.min()}..{y.max()}"
        )


