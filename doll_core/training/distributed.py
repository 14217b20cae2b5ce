"""Process-group helpers: one code path for a single process and for ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with them the stage joins
the process group (NCCL on CUDA, gloo on CPU), shards its data by rank and reduces its
metrics, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from doll_core.errors import DollError


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
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, launched_local_rank())


#: True while :func:`held_process_group` keeps one group for several stages.
_held = False


def cleanup_distributed(context: DistributedContext) -> None:
    """End of a stage: wait for every rank; leave the group unless it is held."""
    if context.enabled and dist.is_initialized():
        dist.barrier()
        if not _held:
            dist.destroy_process_group()


@contextlib.contextmanager
def held_process_group(device: torch.device) -> Iterator[None]:
    """Keep one process group for all the stages run inside (``doll run`` under
    ``torchrun``): the stages join it instead of making their own, and do not end it.
    Making a second group in one process after ending the first fails under torchrun's
    shared store, so a pipeline must hold one. Without ``torchrun`` it does nothing."""
    global _held
    if launched_world_size() <= 1:
        yield
        return
    context = setup_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
    _held = True
    try:
        yield
    finally:
        _held = False
        if dist.is_initialized():
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


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """``RANK`` as set by ``torchrun`` (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0")) if launched_world_size() > 1 else 0


def launched_local_rank() -> int:
    """This process's GPU on its machine: ``LOCAL_RANK`` as ``torchrun`` sets it (read
    whenever it is set, also for one process); without it, :func:`launched_rank` (one
    machine), which is 0 when not launched by ``torchrun``. The one reading of
    ``LOCAL_RANK``: the device of a stage and its process group's agree."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return launched_rank()


def from_rank_zero(compute: Callable[[], Any]) -> Any:
    """Rank 0 calls ``compute()``; every rank gets its result. Outside ``torchrun`` it is
    just ``compute()``. It uses the current process group (see
    :func:`held_process_group`), or makes a gloo group for the exchange and ends it;
    either way it is also a barrier. A
    :class:`~doll_core.errors.DollError` raised on rank 0 is raised on every rank, so no
    rank waits forever."""
    if launched_world_size() <= 1:
        return compute()
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(
            backend="gloo", rank=launched_rank(), world_size=launched_world_size()
        )
    try:
        message: list[Any] = [None]
        if dist.get_rank() == 0:
            try:
                message = [("value", compute())]
            except DollError as exc:
                message = [("error", str(exc))]
        dist.broadcast_object_list(message, src=0)
        kind, payload = message[0]
        if kind == "error":
            raise DollError(payload)
        return payload
    finally:
        if owned:
            dist.destroy_process_group()
