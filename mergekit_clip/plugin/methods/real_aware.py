"""Real-aware merging of forgery specialists, after R2M (real-aware residual model merging of deepfake
specialists, arXiv:2509.24367). Our re-implementation from the paper's description; departures listed below.

The idea: specialists (one per forgery family) share the evidence of what *real* faces look like, while each
carries its own family's fake cues. Plain averaging keeps the shared part but divides every specialist's own
cue by ``T``. So the shared part is kept whole and the specialists' residuals are added back, compressed.

For every matrix tensor (see :func:`.linalg.is_matrix`) with base ``W0`` and specialist task matrices
``D_i = W_i - W0``, ``i = 1..T``, rank ``r = min(m, n)``:

1. shared component: ``C = lowrank_ks(mean_i D_i)``, ``ks = max(1, floor(shared_rank_ratio * r))``, kept whole;
2. specialist residuals: ``E_i = lowrank_kr(D_i - C)``, ``kr = max(1, floor(residual_rank_ratio * r))``;
3. norm matching: ``E = sum_i E_i`` is rescaled to the mean residual norm, ``E * mean_i ||E_i||_F / ||E||_F``,
   so the summed residuals carry one typical specialist's energy instead of ``T`` times it (or ``1/T`` of it,
   as in an average);
4. ``W = W0 + alpha * (C + E)``.

Heads (``head.*``, ``classifier.*``) and adapters are averaged (``W = mean_i W_i``, no ``alpha``). Every other
non-matrix tensor (biases, LayerNorms, ``conv1``, class/positional embeddings) is task arithmetic on the mean
task vector, ``W = W0 + alpha * mean_i D_i``.

Departures from the paper: mergekit hands a method one tensor at a time, so the norm matching is per tensor
(the paper matches norms over the model); the shared component is the low-rank part of the mean task vector
(the paper's shared "real" direction is estimated the same way in spirit, but we use no real-only data);
the ranks are fractions of each matrix's rank rather than one global rank.
"""

from __future__ import annotations

from typing import Annotated

import torch
from mergekit.merge_methods.base import TensorGroup
from pydantic import Field

from mergekit_clip.plugin.methods._base import method, task_arithmetic
from mergekit_clip.plugin.methods.linalg import low_rank, rank_of

Ratio = Annotated[float, Field(gt=0.0, le=1.0)]


def real_aware_update(task_matrices: torch.Tensor, shared_rank_ratio: float, residual_rank_ratio: float):
    """``C + E`` (see the module docstring) for task matrices of shape (T, m, n)."""
    shape = task_matrices.shape[1:]
    shared = low_rank(task_matrices.mean(dim=0), rank_of(shared_rank_ratio, shape))
    residuals = [low_rank(task - shared, rank_of(residual_rank_ratio, shape)) for task in task_matrices]
    combined = torch.stack(residuals).sum(dim=0)
    norm = torch.linalg.matrix_norm(combined)
    target = torch.stack([torch.linalg.matrix_norm(e) for e in residuals]).mean()
    if norm > 0:
        combined = combined * (target / norm)
    return shared + combined


@method("real_aware", "Real-aware specialist merging (after R2M)", "https://arxiv.org/abs/2509.24367", with_base=True)
def real_aware_merge(
    group: TensorGroup, alpha: float = 1.0, shared_rank_ratio: Ratio = 0.1, residual_rank_ratio: Ratio = 0.05
) -> torch.Tensor:
    def update(tasks: torch.Tensor) -> torch.Tensor:
        return real_aware_update(tasks, shared_rank_ratio, residual_rank_ratio)

    return task_arithmetic(group, alpha, update, average_heads=True)
