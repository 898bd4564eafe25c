"""The one distributed initialisation: join the process group ``torchrun`` describes, and ask where this process is.

Search and training both run under ``torchrun`` (DDP); they live side by side (``nas/``, ``train/``), so the process
group is set up here, below both. Without ``WORLD_SIZE`` > 1 every function is a cheap single-process no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["DistInfo", "setup_distributed", "current", "gather_objects"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a ``torchrun`` job (``world_size`` 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device | str | None = None) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (nccl on CUDA, gloo on CPU).

    Args:
        device: the device this rank computes on; ``None`` means CUDA when present.

    Returns:
        This process's :class:`DistInfo`; a single-process one without ``WORLD_SIZE`` > 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        device = torch.device(device) if isinstance(device, str) else device
        use_cuda = (device is None and torch.cuda.is_available()) or (device is not None and device.type == "cuda")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def current() -> DistInfo:
    """Where this process stands in an initialised process group (single-process when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return DistInfo(rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size(),
                        local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    info = current()
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(out, obj)
    return out
