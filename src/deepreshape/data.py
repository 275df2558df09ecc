"""Data sets (CIFAR-10/100, Tiny ImageNet, offline digits) and a whole-tensor batch loader.

Nothing is ever downloaded: the readers take the official releases from a data root the user
fills. The loader follows airbench: a split lives as one uint8 tensor on the training device and
each batch is gathered, augmented and normalized with tensor ops, never per-sample Python.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import tarfile
import warnings
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from deepreshape.errors import DataError, UsageError
from deepreshape.fileio import save_numpy
from deepreshape.spec import DATASET_SHAPES

DATA_ENV = "DEEPRESHAPE_DATA"
_NEVER = (
    "deepreshape never downloads: put it there, or pass --data-dir / set $DEEPRESHAPE_DATA "
    "to the folder that holds it"
)


# --------------------------------------------------------------------------- registry


class DatasetInfo(NamedTuple):
    """What a registered data set fixes: classes, input size and a one-line description."""

    num_classes: int
    input_size: int
    description: str


_DESCRIPTIONS = {
    "cifar10": "CIFAR-10: 50k/10k 32x32 RGB images, 10 classes",
    "cifar100": "CIFAR-100: 50k/10k 32x32 RGB images, 100 fine classes",
    "tinyimagenet": "Tiny ImageNet: 100k/10k (val) 64x64 RGB images, 200 classes",
    "digits": "scikit-learn digits, embedded and offline: 1,797 8x8 images upsampled, 10 classes",
}
# Shapes come from the spec layer's table, so names and shapes are defined once.
DATASETS: dict[str, DatasetInfo] = {
    k: DatasetInfo(classes, size, _DESCRIPTIONS[k]) for k, (size, classes) in DATASET_SHAPES.items()
}

# Published per-channel statistics (0..1 units); digits are computed from their train split.
_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}


@dataclass
class Dataset:
    """Both splits of a data set in memory: images uint8 [N,3,H,W], labels int64 [N]."""

    name: str
    num_classes: int
    input_size: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data root: the argument, else $DEEPRESHAPE_DATA, else ~/.cache/deepreshape."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "deepreshape"


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    input_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """Load `name` from the data root; `input_size` resizes (bilinear), `limit` keeps the first N
    train and first N test images (for smoke runs)."""
    key = name.strip().lower()
    if key not in DATASETS:
        raise UsageError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}")
    info = DATASETS[key]
    if input_size is not None and input_size < 1:
        raise UsageError(f"input size must be a positive integer, got {input_size}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be a positive integer, got {limit}")
    size = input_size or info.input_size
    if key == "digits":
        return _load_digits(size, limit)
    root = resolve_data_dir(data_dir)
    arrays = _read_tinyimagenet(root) if key == "tinyimagenet" else _read_cifar(key, root)
    train_x, train_y, test_x, test_y = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
        test_x, test_y = test_x[:limit], test_y[:limit]
    if size != info.input_size:
        train_x, test_x = resize_uint8(train_x, size), resize_uint8(test_x, size)
    mean, std = _STATS[key]
    return Dataset(key, info.num_classes, size, train_x, train_y, test_x, test_y, mean, std)


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear resize of uint8 [N,C,H,W] images to size x size, in chunks to bound memory."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < min(x.shape[-2:])
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        part = x[i : i + chunk].float()
        part = F.interpolate(
            part, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
        )
        out[i : i + chunk] = part.round().clamp_(0, 255).to(torch.uint8)
    return out


# --------------------------------------------------------------------------- digits


def _load_digits(size: int, limit: int | None) -> Dataset:
    """scikit-learn's bundled digits with a fixed stratified 80/20 split (same test set always)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0))
    x8 = images.round().clamp(0, 255).to(torch.uint8).unsqueeze(1)  # [N,1,8,8]
    x = resize_uint8(x8, size).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    train_x, train_y, test_x, test_y = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    pixels = train_x.double().div(255.0)
    m, s = pixels.mean(dim=(0, 2, 3)).tolist(), pixels.std(dim=(0, 2, 3)).tolist()
    mean, std = (m[0], m[1], m[2]), (s[0], s[1], s[2])
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
        test_x, test_y = test_x[:limit], test_y[:limit]
    return Dataset("digits", 10, size, train_x, train_y, test_x, test_y, mean, std)


# --------------------------------------------------------------------------- CIFAR


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


def _read_cifar(key: str, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the python-pickle release from its extracted folder or straight from the .tar.gz."""
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
            f"{rel.archive} (from {rel.url}); {_NEVER}"
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


# --------------------------------------------------------------------------- Tiny ImageNet

_TINY_FOLDER = "tiny-imagenet-200"
_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_CACHE = ".deepreshape-cache-v1.npz"
_TINY_SIZE = 64
_JPEG_SUFFIXES = {".jpeg", ".jpg"}


def _read_tinyimagenet(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the JPEG tree once into a uint8 .npz cache beside it; later calls read the cache.

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
            f"{_NEVER}"
        )
    wnids_path = base / "wnids.txt"
    ann_path = base / "val" / "val_annotations.txt"
    wnids_bytes = _read_bytes(wnids_path)
    ann_bytes = _read_bytes(ann_path)
    wnids = _parse_wnids(wnids_bytes, wnids_path)
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


def _parse_wnids(raw: bytes, path: Path) -> list[str]:
    wnids = [line.strip() for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]
    if not wnids:
        raise DataError(f"{path}: no class ids (expected one wnid per line)")
    if len(set(wnids)) != len(wnids):
        raise DataError(f"{path}: duplicate class ids")
    if len(wnids) > DATASETS["tinyimagenet"].num_classes:
        raise DataError(f"{path}: {len(wnids)} class ids, expected at most 200")
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


# --------------------------------------------------------------------------- loader


def _seed(*parts: int | str) -> int:
    """A 63-bit seed from several parts; hashing avoids (seed, epoch) collisions like 1+0 == 0+1."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class BatchLoader:
    """Batches of one split held as a single uint8 tensor on `device` (airbench style).

    Batch semantics (the same on every rank, so DDP is a pure split of a 1-process run):

    * `batch_size` is the PER-RANK batch B; the global batch is G = B * world_size.
    * Each epoch has an order of the N samples: a permutation from a generator seeded with
      (seed, epoch) for train, identity for test. Step i takes positions [i*G, (i+1)*G) of that
      order and rank r takes the r-th contiguous slice of B. A final partial global batch (only
      when drop_last is False) is split as evenly as possible (`torch.tensor_split`); ranks whose
      slice is empty skip that step, so use drop_last=True (the train default) under DDP.
      Hence a 1-process run with batch W*B sees, at each step, exactly the concatenation of what
      W ranks with batch B see.
    * Augmentation (train and augment): random crop of the reflect-padded image and random
      horizontal flip, per sample, drawn once per epoch for every POSITION of the order from a
      generator seeded with (seed, epoch). A sample is thus augmented identically whatever the
      world size or rank, which keeps the equivalence above exact (and runs deterministic).

    Call `set_epoch(e)` before each epoch (like DistributedSampler); without it every epoch
    repeats epoch 0.
    """

    def __init__(
        self,
        x_uint8: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        augment: bool = True,
        pad: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        device: torch.device | str | None = None,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _check_loader_args(x_uint8, y, batch_size, rank, world_size, mean, std)
        self.device = torch.device(device) if device is not None else x_uint8.device
        self.x = x_uint8.to(self.device)
        self.y = y.to(device=self.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.train = train
        self.augment = train and augment
        height, width = x_uint8.shape[-2:]
        self.pad = min(height, width) // 8 if pad is None else pad
        if self.augment and not 0 <= self.pad < min(height, width):
            raise UsageError(f"pad must be in 0..{min(height, width) - 1}, got {self.pad}")
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last = channels_last
        self.dtype = dtype
        channels = x_uint8.shape[1]
        std_t = torch.tensor(list(std), dtype=torch.float32, device=self.device)
        mean_t = torch.tensor(list(mean), dtype=torch.float32, device=self.device)
        # (x/255 - mean)/std folded into one multiply-add.
        self._scale = (1.0 / (255.0 * std_t)).view(1, channels, 1, 1)
        self._shift = (-mean_t / std_t).view(1, channels, 1, 1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.epoch = epoch

    def _ranges(self) -> list[tuple[int, int]]:
        """This rank's [start, end) positions in the epoch order, one per non-empty batch."""
        n, b, w, r = len(self.y), self.batch_size, self.world_size, self.rank
        g = b * w
        steps = n // g if self.drop_last else math.ceil(n / g)
        ranges = []
        for i in range(steps):
            lo = i * g
            q, rem = divmod(min(lo + g, n) - lo, w)
            start = lo + r * q + min(r, rem)
            end = start + q + (1 if r < rem else 0)
            if end > start:
                ranges.append((start, end))
        return ranges

    def __len__(self) -> int:
        return len(self._ranges())

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return sum(end - start for start, end in self._ranges())

    def _order(self) -> torch.Tensor:
        n = len(self.y)
        if not self.train:
            return torch.arange(n, device=self.device)
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, "order"))
        return torch.randperm(n, generator=g).to(self.device)

    def _augment_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position crop offsets [N,2] in 0..2*pad and flip flags [N] for this epoch."""
        n = len(self.y)
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, "augment"))
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
        flips = torch.randint(0, 2, (n,), generator=g).bool()
        return offsets.to(self.device), flips.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        params = self._augment_params() if self.augment else None
        for start, end in self._ranges():
            idx = order[start:end]
            x = self.x[idx].float()
            if params is not None:
                x = random_crop_flip(x, params[0][start:end], params[1][start:end], self.pad)
            x = torch.addcmul(self._shift, x, self._scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x.to(self.dtype), self.y[idx]


def random_crop_flip(
    x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int
) -> torch.Tensor:
    """Crop each image of x [B,C,H,W] at `offsets` [B,2] (row, col) of its reflect-padded copy,
    then mirror those with `flips` [B]; one gather for the whole batch."""
    if pad > 0:
        bsz, chans, height, width = x.shape
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dev = x.device
        rows = offsets[:, 0, None] + torch.arange(height, device=dev)  # [B,H]
        cols = offsets[:, 1, None] + torch.arange(width, device=dev)  # [B,W]
        x = padded[
            torch.arange(bsz, device=dev)[:, None, None, None],
            torch.arange(chans, device=dev)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
    return torch.where(flips[:, None, None, None], x.flip(3), x)


def _check_loader_args(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    rank: int,
    world_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise UsageError(f"images must be uint8 [N,C,H,W], got {x.dtype} {list(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise UsageError(f"labels must be [N] with N={len(x)}, got {list(y.shape)}")
    if batch_size < 1:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"need 0 <= rank < world_size, got rank {rank}, world size {world_size}")
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise UsageError(f"mean and std need {x.shape[1]} values (one per channel)")
