"""Iso-C: isotropic merging in the common subspace (Marczak et al., "No Task Left Behind: Isotropic Model Merging
with Common and Task-Specific Subspaces", ICML 2025, arXiv:2502.04959). Re-implemented from the paper.

For every matrix tensor (see :func:`.linalg.is_matrix`) with base ``W0`` and task matrices ``D_i = W_i - W0``:
``D = sum_i D_i = U S V^T`` (thin SVD, rank ``r = min(m, n)``); every singular value is replaced by their mean
``s_bar = mean(S)`` (a flat spectrum: all directions of the summed update get the same scale) and
``W = W0 + alpha * s_bar * U V^T``.

Every other tensor (biases, LayerNorms, ``conv1``, class/positional embeddings, the forensic head and adapter) is
task arithmetic on the mean task vector, ``W = W0 + alpha * mean_i D_i``, as in the paper's code.
"""

from __future__ import annotations

import torch
from mergekit.merge_methods.base import TensorGroup

from mergekit_clip.plugin.methods._base import method, task_arithmetic


def isotropic_update(summed: torch.Tensor) -> torch.Tensor:
    """``mean(S) * U V^T`` for ``summed = U S V^T``."""
    u, s, vh = torch.linalg.svd(summed, full_matrices=False)
    return s.mean() * (u @ vh)


@method("iso_c", "Iso-C (isotropic, common subspace)", "https://arxiv.org/abs/2502.04959", with_base=True)
def iso_c_merge(group: TensorGroup, alpha: float = 1.0) -> torch.Tensor:
    return task_arithmetic(group, alpha, lambda tasks: isotropic_update(tasks.sum(dim=0)))
