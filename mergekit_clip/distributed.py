"""torchrun plumbing for ``clip-train`` and ``clip-eval``: one process-group view, one module.

    torchrun --nproc_per_node 2 -m train CONFIG
    torchrun --nproc_per_node 2 -m eval MODEL_DIR --datasets Celeb-DF-v2 --json-root J --data-root D --out R

:func:`init_distributed` is the only place that reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (as torchrun sets
them); gloo on CPU, NCCL on GPU. A single process (no ``WORLD_SIZE`` or 1) never touches ``torch.distributed``.
Work is sharded rank-strided (``r, r+N, r+2N, ...``, no padding, so no item is ever counted twice); only rank 0
writes files, and every rank runs the same deterministic code so the processes stay in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def env_world_size() -> int:
    """The world size torchrun announces (1 outside torchrun), for checks made before joining the group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_is_main() -> bool:
    """Whether this process is rank 0 per torchrun's environment (True outside torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group, and the collectives train and eval use."""

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

    def device(self, device: str) -> str:
        """``cuda`` becomes ``cuda:<local rank>`` under torchrun so ranks do not share one GPU."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.enabled else device

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (used to share a decision, e.g. an error, before work starts)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_rows(self, rows: torch.Tensor, total: int) -> torch.Tensor:
        """Reassemble per-rank results of :meth:`shard` into one (total, ...) tensor on every rank."""
        if not self.enabled:
            return rows
        per_rank = -(-total // self.world_size)
        padded = rows.new_zeros((per_rank, *rows.shape[1:]))
        padded[: rows.shape[0]] = rows
        buckets = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(buckets, padded.contiguous())
        out = rows.new_empty((total, *rows.shape[1:]))
        for r, bucket in enumerate(buckets):
            idx = list(range(r, total, self.world_size))
            out[idx] = bucket[: len(idx)]
        return out

    def gather_scores(
        self, n: int, indices: list[int], scores: np.ndarray, ok: np.ndarray, error: str | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Every rank's (indices, scores, ok) merged into full arrays of length ``n``, on every rank.

        ``error`` is a rank's failure message; all ranks get every message so they can stop together.
        """
        if not self.enabled:
            return scores, ok, [error] if error else []
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, (indices, scores, ok, error))
        errors = [part[3] for part in parts if part[3]]
        if errors:
            return scores, ok, errors
        full_scores, full_ok = np.full(n, np.nan), np.zeros(n, dtype=bool)
        seen = np.zeros(n, dtype=bool)
        for part_indices, part_scores, part_ok, _ in parts:
            full_scores[part_indices], full_ok[part_indices] = part_scores, part_ok
            seen[part_indices] = True
        if not seen.all():
            raise RuntimeError(f"distributed gather lost {int((~seen).sum())} of {n} frames")
        return full_scores, full_ok, []


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; a no-op for a single process."""
    world = env_world_size()
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
