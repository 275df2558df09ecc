"""Data sets (CIFAR-10/100, Tiny ImageNet, offline digits, and any registered one) and a
whole-tensor batch loader.

Nothing is ever downloaded: the readers take the official releases from a data root the user
fills. Which data sets exist, their shapes, sizes and statistics, is `deepreshape.datasets`
(`DATASETS`); one module per file format reads them (`cifar`, `tinyimagenet`, `digits`),
imported only when that data set is loaded. The loader (`loader`) follows airbench: a split
lives as one uint8 tensor on the training device and each batch is gathered, augmented and
normalized with tensor ops, never per-sample Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepreshape.data.loader import BatchLoader, random_crop_flip, resize_uint8
from deepreshape.datasets import DATASETS, DatasetInfo
from deepreshape.errors import DataError, UsageError

__all__ = [
    "DATASETS", "DATA_ENV", "BatchLoader", "Dataset", "DatasetInfo", "load_dataset",
    "random_crop_flip", "resize_uint8", "resolve_data_dir",
]

DATA_ENV = "DEEPRESHAPE_DATA"
NEVER_DOWNLOADS = (
    "deepreshape never downloads: put it there, or pass --data-dir / set $DEEPRESHAPE_DATA "
    "to the folder that holds it"
)


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
    """Load `name` (a member of `DATASETS`) from the data root; `input_size` resizes
    (bilinear), `limit` keeps the first N train and first N test images (for smoke runs)."""
    key = name.strip().lower()
    info = DATASETS.get(key)
    if input_size is not None and input_size < 1:
        raise UsageError(f"input size must be a positive integer, got {input_size}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be a positive integer, got {limit}")
    size = input_size or info.input_size
    arrays = info.read_function()(info, resolve_data_dir(data_dir), size)
    train_x, train_y, test_x, test_y = (_tensor(a) for a in arrays)
    _check_splits(info, train_x, train_y, test_x, test_y)
    mean, std = info.mean, info.std
    if mean is None or std is None:  # from the whole train split, at the size asked for
        pixels = resize_uint8(train_x, size).double().div(255.0)
        mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
        std = tuple(pixels.std(dim=(0, 2, 3)).tolist())
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
        test_x, test_y = test_x[:limit], test_y[:limit]
    train_x, test_x = resize_uint8(train_x, size), resize_uint8(test_x, size)
    return Dataset(key, info.num_classes, size, train_x, train_y, test_x, test_y,
                   tuple(mean), tuple(std))


def _tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))


def _check_splits(info: DatasetInfo, train_x: torch.Tensor, train_y: torch.Tensor,
                  test_x: torch.Tensor, test_y: torch.Tensor) -> None:
    """A reader's output is what `deepreshape.datasets` promises: uint8 [N,C,H,W] images
    with `info.channels` channels and as many labels."""
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != info.channels:
            raise DataError(f"the {info.name} reader ({info.reader}) returned {split} images "
                            f"{x.dtype} {list(x.shape)}, expected uint8 [N, {info.channels}, H, W]")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"the {info.name} reader ({info.reader}) returned {len(x)} {split} "
                            f"images but labels of shape {list(y.shape)}")
