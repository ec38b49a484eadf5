"""Data-parallel plumbing for ``torchrun --nproc_per_node N -m train CONFIG``.

Reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as torchrun sets them; gloo on CPU, NCCL on GPU. Only rank 0
writes files; every rank runs the same deterministic code so the processes stay in step without extra syncs.
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


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group if one was started (a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_indices(total: int, info: DistInfo) -> list[int]:
    """Rank-strided indices: rank r gets r, r+N, r+2N, ... (every index exactly once over all ranks)."""
    return list(range(info.rank, total, info.world_size))


def gather_rows(rows: torch.Tensor, total: int, info: DistInfo) -> torch.Tensor:
    """Reassemble per-rank results of :func:`shard_indices` into one (total, ...) tensor on every rank."""
    if not info.enabled:
        return rows
    per_rank = -(-total // info.world_size)
    padded = rows.new_zeros((per_rank, *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    buckets = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(buckets, padded.contiguous())
    out = rows.new_empty((total, *rows.shape[1:]))
    for r, bucket in enumerate(buckets):
        idx = list(range(r, total, info.world_size))
        out[idx] = bucket[: len(idx)]
    return out


def broadcast_object(value, info: DistInfo):
    """Rank 0's ``value`` on every rank (used to share a decision, e.g. an error, before training)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
