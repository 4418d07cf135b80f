"""Where training runs: the device, DDP under torchrun, and batches moved onto the device.

On CUDA: bf16 autocast (`amp`), channels_last, pinned host memory and non-blocking copies;
images travel as uint8 and are normalised on the device. On the CPU: float32.

DDP. Under `torchrun` (WORLD_SIZE > 1) the process group is `nccl` on CUDA and `gloo` on the
CPU. Ranks may run different numbers of steps (a batch whose images are all unreadable is
skipped) without deadlocking (`uneven_inputs`: DDP's `Join`); the collectives' timeout is
torch's unless DATAKIT_DIST_TIMEOUT_S says otherwise (rank 0 building a large pixel cache keeps
the others at a barrier).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from datakit.errors import DatakitError
from datakit.models import pick_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (a plain run: rank 0 of 1)."""
    try:
        return Dist(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                    int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise DatakitError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


def setup_device(requested: str, d: Dist) -> torch.device:
    """The device of this process; under DDP also joins the process group (nccl on CUDA,
    gloo on the CPU)."""
    if not d.enabled:
        return pick_device(requested)
    import torch.distributed as tdist

    cuda = requested != "cpu" and torch.cuda.is_available()
    if requested.startswith("cuda") and not torch.cuda.is_available():
        pick_device(requested)  # raises the ModelError that says so
    if cuda:
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    else:
        device = torch.device("cpu")
    if not tdist.is_initialized():
        # DATAKIT_DIST_TIMEOUT_S: how long a collective waits for the slowest rank (torch's default,
        # 10-30 min, is too short when rank 0 first builds the pixel cache of millions of images
        # while the others wait at the barrier)
        timeout = os.environ.get("DATAKIT_DIST_TIMEOUT_S")
        extra: dict[str, Any] = {}
        if timeout:
            try:
                extra["timeout"] = timedelta(seconds=float(timeout))
            except ValueError:
                raise DatakitError(f"DATAKIT_DIST_TIMEOUT_S must be a number of seconds (got {timeout!r})") from None
        tdist.init_process_group(backend="nccl" if cuda else "gloo", **extra)
    return device


def uneven_inputs(net: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """Under DDP, lets ranks run different numbers of train steps (a rank skips a batch whose
    images are all unreadable): the ranks that finish first shadow the others' gradient
    all-reduces instead of leaving them waiting forever."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(net, DistributedDataParallel):
        from torch.distributed.algorithms.join import Join

        return Join([net])
    return contextlib.nullcontext()


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as tdist

        tdist.barrier()


def all_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        import torch.distributed as tdist

        tdist.all_reduce(values, op=tdist.ReduceOp.SUM)
    return values


class Inputs:
    """Moves a batch to the device: images (uint8 NCHW) normalised there, vectors as they are."""

    def __init__(self, device: torch.device, *, images: bool, mean: Any = None, std: Any = None,
                 channels_last: bool = True) -> None:
        self.device, self.images = device, images
        self.cuda = device.type == "cuda"
        self.channels_last = channels_last and self.cuda and images
        if images:
            self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
            self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=self.cuda)
        if not self.images:
            return x.float()
        x = (x.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["Dist", "Inputs", "all_sum", "autocast", "barrier", "dist_from_env", "setup_device", "uneven_inputs"]
