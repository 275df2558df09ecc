"""The registry of data sets: what each fixes (shapes, sizes, statistics) and its reader.

A data set is a `DatasetInfo` in `DATASETS` (entry-point group ``deepreshape.datasets``).
Specs (`zoo.parse(name, dataset=...)`), CLI ``--dataset`` choices, sweep validation and
dry-run sizes read it; `deepreshape.data.load_dataset` calls its reader. This module is
light on purpose (no torch, no numpy): `deepreshape count` and the spec layer import it,
and a reader is imported only when a data set is loaded.

A reader is ``"module:function"``; the function is called as ``read(info, root, size)``
with this `DatasetInfo`, the data root (`deepreshape.data.resolve_data_dir`) and the
input size asked for, and returns ``(train_x, train_y, test_x, test_y)``: images uint8
``[N, channels, H, W]`` (numpy or torch; at `info.input_size` or already at `size`;
`load_dataset` resizes the rest) and int64 labels ``[N]``. It never downloads: a missing
file is a `DataError` naming where it looked and where the release comes from.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deepreshape.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """One data set (a member of `DATASETS`).

    `input_size` (pixels, square) and `num_classes` fix a spec's shape; `channels` the
    images' channels as the reader returns them; `train_size`/`test_size` the images of
    each split (dry runs size training from them); `mean`/`std` the per-channel statistics
    in 0..1 units that normalize it (None: computed from the train split at load time);
    `reader` the ``"module:function"`` that reads it (see the module docstring).
    """

    name: str
    input_size: int
    num_classes: int
    channels: int
    train_size: int
    test_size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    description: str
    reader: str

    def read_function(self) -> Callable[..., Any]:
        """The reader, imported now."""
        module, _, attr = self.reader.partition(":")
        return getattr(importlib.import_module(module), attr)


CIFAR10 = DatasetInfo(
    "cifar10", input_size=32, num_classes=10, channels=3, train_size=50_000, test_size=10_000,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    description="CIFAR-10: 50k/10k 32x32 RGB images, 10 classes",
    reader="deepreshape.data.cifar:read_cifar")

CIFAR100 = DatasetInfo(
    "cifar100", input_size=32, num_classes=100, channels=3, train_size=50_000, test_size=10_000,
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
    description="CIFAR-100: 50k/10k 32x32 RGB images, 100 fine classes",
    reader="deepreshape.data.cifar:read_cifar")

TINYIMAGENET = DatasetInfo(
    "tinyimagenet", input_size=64, num_classes=200, channels=3, train_size=100_000,
    test_size=10_000, mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821),
    description="Tiny ImageNet: 100k/10k (val) 64x64 RGB images, 200 classes",
    reader="deepreshape.data.tinyimagenet:read_tinyimagenet")

DIGITS = DatasetInfo(
    "digits", input_size=16, num_classes=10, channels=3, train_size=1_437, test_size=360,
    mean=None, std=None,  # computed from the train split at the size asked for
    description="scikit-learn digits, embedded and offline: 1,797 8x8 images upsampled, "
    "10 classes",
    reader="deepreshape.data.digits:read_digits")

DATASETS: Registry[DatasetInfo] = Registry("data set", "deepreshape.datasets", {
    "cifar10": "deepreshape.datasets:CIFAR10",
    "cifar100": "deepreshape.datasets:CIFAR100",
    "tinyimagenet": "deepreshape.datasets:TINYIMAGENET",
    "digits": "deepreshape.datasets:DIGITS",
})
"""Every data set; published statistics for the CIFARs and Tiny ImageNet."""
