"""Iso-C: isotropic merging in the common subspace (Marczak et al., "No Task Left Behind: Isotropic Model Merging
with Common and Task-Specific Subspaces", ICML 2025, arXiv:2502.04959). Re-implemented from the paper; follows
``iso_c`` of the authors' code (danielm1405/iso-merging, ``src/utils/iso.py``).

For every matrix tensor with base ``W0`` and task matrices ``D_i = W_i - W0``: ``D = sum_i D_i = U S V^T`` (thin
SVD, rank ``r = min(m, n)``); every singular value is replaced by their mean ``s_bar = mean(S)`` (a flat spectrum:
all directions of the summed update get the same scale) and ``W = W0 + alpha * s_bar * U V^T``.

Which tensors are matrices is ``matrix_policy``'s choice (see :mod:`.tsv_m`): ``"layers"`` (default, a departure:
the positional embedding, the forensic head and adapter get the mean task vector, so a head keeps its trained
scale instead of a flat spectrum over its 2 directions) or ``"all_2d"`` (every 2-D tensor, as the authors' code).
Every other tensor is task arithmetic on the mean task vector, ``W = W0 + alpha * mean_i D_i``, as in their code.
"""

from __future__ import annotations

import torch
from mergekit.merge_methods.base import TensorGroup

from mergekit_clip.plugin.methods._base import method, task_arithmetic
from mergekit_clip.plugin.methods.linalg import MatrixPolicy


def isotropic_update(summed: torch.Tensor) -> torch.Tensor:
    """``mean(S) * U V^T`` for ``summed = U S V^T``."""
    u, s, vh = torch.linalg.svd(summed, full_matrices=False)
    return s.mean() * (u @ vh)


@method("iso_c", "Iso-C (isotropic, common subspace)", "https://arxiv.org/abs/2502.04959", with_base=True)
def iso_c_merge(group: TensorGroup, alpha: float = 1.0, matrix_policy: MatrixPolicy = "layers") -> torch.Tensor:
    return task_arithmetic(
        group, alpha, lambda tasks: isotropic_update(tasks.sum(dim=0)), matrix_policy=matrix_policy
    )
