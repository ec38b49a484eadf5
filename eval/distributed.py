"""torchrun support: shard frames across processes, gather their scores (gloo on CPU, NCCL on CUDA).

    torchrun --nproc_per_node 2 -m eval MODEL_DIR --datasets Celeb-DF-v2 --json-root J --data-root D --out R

Every rank scores ``range(rank, n, world)`` of the frame list (no padding, so no duplicated frame is ever
counted); rank 0 gathers the scores back into frame order and is the only one that writes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch.distributed as dist

from mergekit_clip.distributed import DistInfo
from mergekit_clip.distributed import init_distributed as _init_distributed
from mergekit_clip.distributed import shutdown as _shutdown


@dataclass(frozen=True)
class DistContext(DistInfo):
    """The shared process-group view plus the score gathering evaluation needs."""

    def gather(
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

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (used to fail all ranks together on rank-0-only checks)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed(device: str) -> DistContext:
    """Join the process group torchrun describes in ``RANK``/``WORLD_SIZE``; single-process otherwise."""
    return DistContext(**dataclasses.asdict(_init_distributed(device)))


def device_for(device: str, ctx: DistContext) -> str:
    """``cuda`` becomes ``cuda:<local rank>`` under torchrun so ranks do not share one GPU."""
    return f"cuda:{ctx.local_rank}" if device == "cuda" and ctx.enabled else device


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        _shutdown()
