"""Iso-CTS: isotropic merging with common and task-specific subspaces (Marczak et al., ICML 2025,
arXiv:2502.04959). Re-implemented from the paper.

For every matrix tensor (see :func:`.linalg.is_matrix`) with base ``W0``, task matrices ``D_i = W_i - W0``
(``i = 1..T``) and rank ``r = min(m, n)``:

1. common subspace: ``D = sum_i D_i = U S V^T``; each task gets ``s = floor((r - floor(common_fraction * r)) / T)``
   task-specific directions and the common subspace keeps the top ``k = r - T * s`` triplets ``U_c, S_c, V_c``;
2. task-specific subspaces: each task's residual orthogonal to the common left subspace,
   ``R_i = D_i - U_c U_c^T D_i``, contributes its top ``s`` singular triplets;
3. the ``r`` stacked left vectors ``[U_c, U_1', ..., U_T']`` and right vectors are orthogonalised by their polar
   factors (``P Q^T`` of their SVD, as in TSV-M), giving ``U_perp`` and ``V_perp``;
4. isotropic scaling: every direction gets ``s_bar``, the mean of the ``r`` stacked singular values
   (``S_c`` and the task-specific ones), and ``W = W0 + alpha * s_bar * U_perp V_perp^T``.

Every other tensor (biases, LayerNorms, ``conv1``, class/positional embeddings, the forensic head and adapter) is
task arithmetic on the mean task vector, ``W = W0 + alpha * mean_i D_i``.
"""

from __future__ import annotations

from typing import Annotated

import torch
from mergekit.merge_methods.base import TensorGroup
from pydantic import Field

from mergekit_clip.plugin.methods._base import method, task_arithmetic
from mergekit_clip.plugin.methods.linalg import polar_factor, truncated_svd


def subspace_sizes(rank: int, tasks: int, common_fraction: float) -> tuple[int, int]:
    """``(k common directions, s directions per task)`` with ``k + T * s = rank``."""
    per_task = (rank - int(common_fraction * rank)) // tasks
    return rank - tasks * per_task, per_task


def iso_cts_update(task_matrices: torch.Tensor, common_fraction: float) -> torch.Tensor:
    count, m, n = task_matrices.shape
    k, per_task = subspace_sizes(min(m, n), count, common_fraction)
    u_c, s_c, vh_c = truncated_svd(task_matrices.sum(dim=0), k)
    us, ss, vs = [u_c], [s_c], [vh_c.T]
    if per_task > 0:
        for task in task_matrices:
            residual = task - u_c @ (u_c.T @ task)
            u, s, vh = truncated_svd(residual, per_task)
            us.append(u)
            ss.append(s)
            vs.append(vh.T)
    u_perp = polar_factor(torch.cat(us, dim=1))
    v_perp = polar_factor(torch.cat(vs, dim=1))
    return torch.cat(ss).mean() * (u_perp @ v_perp.T)


@method(
    "iso_cts",
    "Iso-CTS (isotropic, common + task-specific subspaces)",
    "https://arxiv.org/abs/2502.04959",
    with_base=True,
)
def iso_cts_merge(
    group: TensorGroup, alpha: float = 1.0, common_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.8
) -> torch.Tensor:
    return task_arithmetic(group, alpha, lambda tasks: iso_cts_update(tasks, common_fraction))
