"""torchrun process-group plumbing shared by ``clip-train`` and ``clip-eval``.

Reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as torchrun sets them; gloo on CPU, NCCL on GPU. A single process
(no ``WORLD_SIZE`` or 1) never touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, total: int) -> list[int]:
        """Rank-strided indices r, r+N, r+2N, ...: disjoint across ranks, every index exactly once."""
        return list(range(self.rank, total, self.world_size))


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; a no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shutdown() -> None:
    """Leave the process group if one was started (a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
