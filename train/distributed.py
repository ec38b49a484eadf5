"""Data-parallel plumbing for ``torchrun --nproc_per_node N -m train CONFIG``.

Reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as torchrun sets them; gloo on CPU, NCCL on GPU. Only rank 0
writes files; every rank runs the same deterministic code so the processes stay in step without extra syncs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from mergekit_clip.distributed import DistInfo, init_distributed, shutdown

__all__ = ["DistInfo", "init_distributed", "shutdown", "barrier", "shard_indices", "gather_rows", "broadcast_object"]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shard_indices(total: int, info: DistInfo) -> list[int]:
    """Rank-strided indices: rank r gets r, r+N, r+2N, ... (every index exactly once over all ranks)."""
    return info.shard(total)


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
