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
from mergekit.merge_methods.base import BasePolicy, InputContract, OptionalTensorPolicy, TensorGroup
from mergekit.merge_methods.easy_define import merge_method

from mergekit_clip.plugin.methods.linalg import back_to, is_matrix, stacked


def isotropic_update(summed: torch.Tensor) -> torch.Tensor:
    """``mean(S) * U V^T`` for ``summed = U S V^T``."""
    u, s, vh = torch.linalg.svd(summed, full_matrices=False)
    return s.mean() * (u @ vh)


@merge_method(
    name="iso_c",
    pretty_name="Iso-C (isotropic, common subspace)",
    reference_url="https://arxiv.org/abs/2502.04959",
    contract=InputContract(base=BasePolicy.REQUIRED, min_inputs=2, min_non_base=1),
    optional_tensor_policy=OptionalTensorPolicy.PASSTHROUGH_BASE_SINGLETON,
)
def iso_c_merge(group: TensorGroup, alpha: float = 1.0) -> torch.Tensor:
    base, tasks = stacked(group)
    if is_matrix(group.metadata.name, base):
        update = isotropic_update(tasks.sum(dim=0))
    else:
        update = tasks.mean(dim=0)
    return back_to(base + alpha * update, group)
