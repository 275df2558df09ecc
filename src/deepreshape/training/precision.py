"""Where and how the trainer computes: the device, bf16 autocast, channels_last, and the
CPU-layout guard. The same code runs on CPU and GPU (bf16 + channels_last by default on a
GPU, fp32 on CPU), so CPU tests exercise what a GPU runs. None of this is part of a run's
identity: a run may resume under another precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepreshape.errors import UsageError
from deepreshape.options import AMP_MODES


@dataclass(frozen=True)
class Precision:
    """How the trainer computes: the autocast dtype (None: fp32) and the memory format."""

    amp: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self, device: torch.device):
        """The autocast context for `device` (disabled for fp32)."""
        if self.amp is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=self.amp)

    def to_dict(self) -> dict:
        """What config.json records: {"amp": "bf16"|"fp32", "channels_last": bool}."""
        return {"amp": "bf16" if self.amp == torch.bfloat16 else "fp32",
                "channels_last": self.channels_last}


def resolve_precision(device: torch.device, amp: str = "auto", channels_last: bool | None = None,
                      bf16_supported: bool | None = None) -> Precision:
    """--amp and --channels-last for a device. `auto` (and channels_last None) means bf16
    autocast + channels_last on a GPU that supports bf16, fp32 and contiguous elsewhere;
    `bf16` on CPU uses CPU autocast (the same code path a GPU runs)."""
    if amp not in AMP_MODES:
        raise UsageError(f"unknown --amp {amp!r}; valid: {', '.join(AMP_MODES)}")
    gpu = device.type == "cuda"
    if gpu and bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if amp == "auto":
        amp = "bf16" if gpu and bf16_supported else "fp32"
    elif amp == "bf16" and gpu and not bf16_supported:
        raise UsageError("--amp bf16 asked for, but this GPU has no bfloat16 support; "
                         "use --amp fp32")
    return Precision(torch.bfloat16 if amp == "bf16" else None,
                     gpu if channels_last is None else bool(channels_last))


def check_cpu_layout(model: nn.Module, device: torch.device, precision: Precision,
                     compiled: bool) -> None:
    """UsageError instead of a crash: torch's oneDNN (2.13, CPU) corrupts the heap computing
    the fp32 weight gradient of a channels_last 1x1 stride-2 convolution with 2-7 input
    channels, and torch.compile picks channels_last for convolutions on its own."""
    if device.type != "cpu" or precision.amp is not None or not (precision.channels_last
                                                                  or compiled):
        return
    bad = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
           and m.kernel_size == (1, 1) and m.stride != (1, 1) and 1 < m.in_channels < 8]
    if bad:
        raise UsageError(f"{bad[0]} (a 1x1 stride-2 convolution of under 8 input "
                         "channels) crashes torch's oneDNN when trained channels_last in "
                         "fp32 on CPU (--channels-last or --compile); train it without those, "
                         "with --amp bf16, or use a wider network")


def use_fast_kernels(device: torch.device) -> None:
    """On CUDA let cuDNN pick the fastest convolution algorithm per shape (airbench does;
    the shapes repeat every step, so the search pays once)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times include it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(device: str | None) -> torch.device:
    """The torch device for --device (None/auto: CUDA if present); UsageError if unusable."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA GPU is available here")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")
    return torch.device(device)
