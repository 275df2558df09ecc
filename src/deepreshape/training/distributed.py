"""Many processes under `torchrun` (DDP): this process's place, its device, BatchNorm over
the global batch, and barriers. gloo on CPU, nccl on GPU (one GPU per rank); a single
process (the default) never touches `torch.distributed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        if self.world_size > 1:
            import torch.distributed as tdist

            tdist.barrier()


def dist_backend(device_type: str) -> str:
    """The process-group backend for a device type: nccl for CUDA, gloo otherwise."""
    return "nccl" if device_type == "cuda" else "gloo"


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """This rank's device: a bare `cuda` becomes cuda:LOCAL_RANK (one GPU per rank, as
    nccl needs); an explicit index or a CPU is kept."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def ddp_device_ids(device: torch.device) -> list[int] | None:
    """DistributedDataParallel's `device_ids`: the rank's GPU, None on CPU."""
    return [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); returns this
    process's place and its device (its own GPU under CUDA, selected before joining)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(dist_backend(device.type))
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch of all ranks on CPU (SyncBatchNorm is GPU-only), so a
    DDP run computes what one process with the whole batch computes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize with statistics all-reduced over ranks while training."""
        if not self.training:
            return super().forward(x)
        import warnings

        from torch.distributed.nn.functional import all_reduce  # differentiable

        x = x.float()  # under bf16 autocast: sums of squares and counts need fp32
        c = x.shape[1]
        n = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        with warnings.catch_warnings():  # deprecated in favour of a non-differentiable API
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), n]))
        total = stats[-1]
        mean = stats[:c] / total
        var = stats[c:2 * c] / total - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * total / (total - 1), alpha=m)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch: SyncBatchNorm on CUDA, GlobalBatchNorm2d on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
    return model
