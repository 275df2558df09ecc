"""scikit-learn's bundled digits: offline, embedded, for tests, the demo and laptops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepreshape.data.loader import resize_uint8
from deepreshape.datasets import DatasetInfo


def read_digits(info: DatasetInfo, root: Path, size: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits with a fixed stratified 80/20 split (same test set
    always), upsampled from 8x8 straight to `size` and repeated to 3 channels; `root` is
    not used (nothing is read from disk)."""
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
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


