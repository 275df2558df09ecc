"""The batch loader (airbench style: a split as one uint8 tensor on the device, batches
gathered, augmented and normalized with tensor ops) and the resize the readers share."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from deepreshape.errors import UsageError


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
