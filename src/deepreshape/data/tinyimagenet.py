"""Tiny ImageNet: the JPEG tree of the official zip, decoded once into a cache beside it."""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from deepreshape.data import NEVER_DOWNLOADS
from deepreshape.datasets import DatasetInfo
from deepreshape.errors import DataError
from deepreshape.fileio import save_numpy

_TINY_FOLDER = "tiny-imagenet-200"
_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_CACHE = ".deepreshape-cache-v1.npz"
_TINY_SIZE = 64
_JPEG_SUFFIXES = {".jpeg", ".jpg"}


def read_tinyimagenet(info: DatasetInfo, root: Path, size: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the JPEG tree once into a uint8 .npz cache beside it; later calls read the cache
    (at 64x64; `load_dataset` resizes to `size`).

    The cache is keyed on wnids.txt, val_annotations.txt and the number of image files, so
    editing the class list or adding/removing images rebuilds it; delete it to force a rebuild.
    """
    base = root if root.name == _TINY_FOLDER and root.is_dir() else root / _TINY_FOLDER
    if not base.is_dir():
        zipped = root / f"{_TINY_FOLDER}.zip"
        hint = (
            f"found {zipped}: extract it there (unzip)"
            if zipped.is_file()
            else (f"from {_TINY_URL}, extracted")
        )
        raise DataError(
            f"tinyimagenet not found under {root}: expected the folder {_TINY_FOLDER}/ ({hint}); "
            f"{NEVER_DOWNLOADS}"
        )
    wnids_path = base / "wnids.txt"
    ann_path = base / "val" / "val_annotations.txt"
    wnids_bytes = _read_bytes(wnids_path)
    ann_bytes = _read_bytes(ann_path)
    wnids = _parse_wnids(wnids_bytes, wnids_path, info.num_classes)
    train_files, train_y = _list_train(base, wnids)
    val_files, val_y = _parse_val(ann_bytes, ann_path, base / "val" / "images", wnids)
    key = _cache_key(wnids_bytes, ann_bytes, _count_images(base, wnids))
    cache = base / _TINY_CACHE
    cached = _load_cache(cache, key, (len(train_files), len(val_files)), len(wnids))
    if cached is not None:
        return cached
    arrays = (_decode_all(train_files), train_y, _decode_all(val_files), val_y)
    try:
        save_numpy(
            cache,
            key=np.array(key),
            train_x=arrays[0],
            train_y=arrays[1],
            test_x=arrays[2],
            test_y=arrays[3],
        )
    except OSError as e:  # a read-only data root still works, only slower next time
        warnings.warn(f"could not write the Tiny ImageNet cache {cache}: {e}", stacklevel=3)
    return arrays


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path} (part of {_TINY_FOLDER}/): {e}") from e


def _parse_wnids(raw: bytes, path: Path, max_classes: int) -> list[str]:
    wnids = [line.strip() for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]
    if not wnids:
        raise DataError(f"{path}: no class ids (expected one wnid per line)")
    if len(set(wnids)) != len(wnids):
        raise DataError(f"{path}: duplicate class ids")
    if len(wnids) > max_classes:
        raise DataError(f"{path}: {len(wnids)} class ids, expected at most {max_classes}")
    return wnids


def _jpegs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _JPEG_SUFFIXES)


def _list_train(base: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        if not folder.is_dir():
            raise DataError(f"missing folder {folder} (class {wnid} listed in wnids.txt)")
        found = _jpegs(folder)
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _parse_val(
    raw: bytes, path: Path, images: Path, wnids: list[str]
) -> tuple[list[Path], np.ndarray]:
    index = {w: i for i, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    for n, line in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}:{n}: expected 'filename<TAB>wnid<TAB>...', got {line!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise DataError(f"{path}:{n}: unknown wnid {wnid!r} (not in wnids.txt)")
        files.append(images / name)
        labels.append(index[wnid])
    return files, np.asarray(labels, dtype=np.int64)


def _count_images(base: Path, wnids: list[str]) -> int:
    folders = [base / "train" / w / "images" for w in wnids] + [base / "val" / "images"]
    return sum(len(_jpegs(f)) for f in folders if f.is_dir())


def _cache_key(wnids: bytes, annotations: bytes, count: int) -> str:
    h = hashlib.sha256(wnids)
    h.update(b"\0")
    h.update(annotations)
    return f"{h.hexdigest()}-{count}"


def _load_cache(cache: Path, key: str, sizes: tuple[int, int], classes: int
                ) -> tuple[np.ndarray, ...] | None:
    """The cached arrays if the cache exists, is readable, matches `key` and holds what the
    JPEG tree does (`sizes` train/val images, labels below `classes`); else None, and the
    caller decodes the tree again and rewrites the cache."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            arrays = tuple(z[k] for k in ("train_x", "train_y", "test_x", "test_y"))
    except Exception:  # noqa: BLE001  truncated, bit-flipped (CRC), foreign: rebuild it
        return None
    shape = (3, _TINY_SIZE, _TINY_SIZE)
    for x, y, n in ((arrays[0], arrays[1], sizes[0]), (arrays[2], arrays[3], sizes[1])):
        if (x.dtype != np.uint8 or x.shape != (n, *shape) or y.shape != (n,)
                or y.dtype.kind not in "iu" or (n and not 0 <= y.min() <= y.max() < classes)):
            return None
    return arrays


def _decode_all(files: list[Path]) -> np.ndarray:
    """Decode JPEGs in threads (Pillow releases the GIL while decoding) into uint8 [N,3,64,64]."""
    out = np.empty((len(files), 3, _TINY_SIZE, _TINY_SIZE), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        for i, img in enumerate(pool.map(_decode_jpeg, files, chunksize=64)):
            out[i] = img
    return out


def _decode_jpeg(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from e
    if rgb.size != (_TINY_SIZE, _TINY_SIZE):
        rgb = rgb.resize((_TINY_SIZE, _TINY_SIZE), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


