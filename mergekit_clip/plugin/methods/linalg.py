"""Shared pieces of the SVD-based methods: which tensors are matrices, task vectors, truncated SVD, polar factor.

Every method computes in float32 on the device the tensors arrive on (``mergekit-yaml --cuda`` puts them on
the GPU, so the SVDs run there) and returns the input dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
from mergekit.merge_methods.base import TensorGroup

# Tensors that are not layer weights even when 2-D: token/position embeddings and the forensic head/adapter
# (present only in fine-tuned detectors; rank <= 2 for a head, so a per-task rank share is meaningless).
_NON_MATRIX_MARKERS = ("embedding",)
_HEAD_PREFIXES = ("head.", "classifier.", "adapter.")

# Which 2-D tensors the SVD methods (TSV-M, Iso-C, Iso-CTS) treat as matrices. "layers" (the default): layer
# weights only (:func:`is_matrix`), every other tensor gets the mean task vector; "all_2d": every 2-D tensor, as
# the authors' code does (it excludes only the text tower's ``text_projection``, absent from a vision tower).
MatrixPolicy = Literal["layers", "all_2d"]


def is_head(name: str | None) -> bool:
    return bool(name) and name.startswith(_HEAD_PREFIXES)


def is_matrix(name: str | None, tensor: torch.Tensor, tasks: int = 1) -> bool:
    """A 2-D layer weight whose rank allows at least one singular direction per task.

    True for attention in/out projections, MLP weights and ``visual.proj``; false for biases, LayerNorms,
    ``conv1`` (4-D), class/positional embeddings, heads and adapters.
    """
    if tensor.ndim != 2 or is_head(name):
        return False
    if name and any(marker in name for marker in _NON_MATRIX_MARKERS):
        return False
    return min(tensor.shape) >= max(tasks, 1)


def treat_as_matrix(name: str | None, tensor: torch.Tensor, tasks: int, policy: MatrixPolicy) -> bool:
    """Whether an SVD method merges ``tensor`` as a matrix under ``policy`` (``tasks``: the rank it needs)."""
    if policy == "all_2d":
        return tensor.ndim == 2
    return is_matrix(name, tensor, tasks)


def stacked(group: TensorGroup) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, task_vectors)`` in float32: task_vectors[i] = non_base[i] - base, shape (T, *shape)."""
    base = group.base.tensor.to(torch.float32)
    tasks = torch.stack([entry.tensor.to(torch.float32) for entry in group.non_base])
    return base, tasks - base


def truncated_svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top ``rank`` singular triplets ``(U[:, :k], S[:k], Vh[:k])`` of a float32 matrix."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u[:, :rank], s[:rank], vh[:rank]


def low_rank(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Best rank-``rank`` approximation (Eckart-Young) of ``matrix``."""
    u, s, vh = truncated_svd(matrix, rank)
    return (u * s) @ vh


def polar_factor(matrix: torch.Tensor) -> torch.Tensor:
    """The closest matrix with orthonormal columns (rows if wide): ``P Q^T`` for ``matrix = P S Q^T``.

    This is the orthogonal Procrustes solution: it decorrelates stacked singular vectors with the least change.
    """
    p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
    return p @ qh


def rank_of(ratio: float, matrix_shape: torch.Size | tuple[int, ...]) -> int:
    """``ratio`` of the full rank ``min(m, n)``, at least 1."""
    return max(1, int(ratio * min(matrix_shape)))


def back_to(result: torch.Tensor, group: TensorGroup) -> torch.Tensor:
    return result.to(group.entries[0].tensor.dtype)
