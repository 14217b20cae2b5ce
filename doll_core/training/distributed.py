"""Process-group helpers: one code path for a single process and for ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with them the stage joins
the process group (NCCL on CUDA, gloo on CPU), shards its data by rank and reduces its
metrics, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistributedContext:
    """Join the process group if the environment asks for one (``WORLD_SIZE > 1``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank)


def cleanup_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_gather_objects(context: DistributedContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` in a single process)."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def sum_across(context: DistributedContext, *values: float) -> list[float]:
    """Element-wise sums of ``values`` over all ranks."""
    if not context.enabled:
        return list(values)
    device = torch.device("cuda", context.local_rank) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def broadcast_buffers(context: DistributedContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP keeps parameters identical, but each rank updates its buffers in its own last
    forward pass; without this, ranks would validate and end with different statistics.
    """
    if not context.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)
