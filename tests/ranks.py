"""Make a spawned test process look like one rank of a ``torchrun`` job on this machine."""

from __future__ import annotations

import os

import torch


def act_as_rank(rank: int, world: int, port: int) -> None:
    """Set ``torchrun``'s environment for ``rank`` of ``world`` (rendezvous on localhost
    ``port``), with one CPU thread per process so the ranks share 2 cores fairly."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
