"""TSV-M: Task Singular Vectors merging (Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in
Model Merging", CVPR 2025, arXiv:2412.00081). Re-implemented from the paper's description; follows
``compute_and_sum_svd_mem_reduction`` of the authors' code (as shipped in danielm1405/iso-merging,
``src/utils/TSVM_utils.py``).

For every matrix tensor with base ``W0`` and task matrices ``D_i = W_i - W0``, ``i = 1..T``, of rank
``r = min(m, n)``:

1. ``D_i = U_i S_i V_i^T`` (thin SVD); keep each task's top ``k = floor(r / T)`` singular triplets;
2. stack them: ``U = [U_1[:, :k] ... U_T[:, :k]]`` (m x Tk), ``S = diag(S_1[:k], ..., S_T[:k])``, ``V`` likewise;
3. decorrelate: replace ``U`` and ``V`` by their polar factors (``U_perp = P Q^T`` for ``U = P Sigma Q^T``, the
   nearest matrix with orthonormal columns, orthogonal Procrustes);
4. ``W = W0 + alpha * U_perp S V_perp^T``.

Which tensors are matrices is ``matrix_policy``'s choice. ``"layers"`` (default, a departure from the authors'
code): the 2-D layer weights only (attention ``in_proj``/``out_proj``, MLP ``c_fc``/``c_proj``, ``visual.proj``;
see :func:`.linalg.is_matrix`) with ``r >= T``; the positional embedding, the forensic head and adapter get task
arithmetic on the mean task vector, ``W = W0 + alpha * mean_i D_i``, because a 2 x d head has ``k = 0`` for
``T >= 3`` and would come out as the untrained base head. ``"all_2d"``: every 2-D tensor is a matrix, as in the
authors' code, so a matrix with ``r < T`` gets no update (``W = W0``). Every other tensor (biases, LayerNorms,
``conv1``, the class embedding) is the mean task vector under both policies, as in the authors' code. With a bare
CLIP base the plugin's head policy gives the base the ingredients' mean head first.
"""

from __future__ import annotations

import torch
from mergekit.merge_methods.base import TensorGroup

from mergekit_clip.plugin.methods._base import method, task_arithmetic
from mergekit_clip.plugin.methods.linalg import MatrixPolicy, polar_factor, truncated_svd


def tsv_task_matrix(task_matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(U_perp, S, V_perp)`` of TSV-M for task matrices of shape (T, m, n); the merged update is
    ``U_perp diag(S) V_perp^T``."""
    count, m, n = task_matrices.shape
    k = min(m, n) // count
    us, ss, vs = [], [], []
    for task in task_matrices:
        u, s, vh = truncated_svd(task, k)
        us.append(u)
        ss.append(s)
        vs.append(vh.T)
    return polar_factor(torch.cat(us, dim=1)), torch.cat(ss), polar_factor(torch.cat(vs, dim=1))


def tsv_update(task_matrices: torch.Tensor) -> torch.Tensor:
    count, m, n = task_matrices.shape
    if min(m, n) < count:  # no direction per task (only under "all_2d"): the authors' code adds nothing
        return torch.zeros_like(task_matrices[0])
    u, s, v = tsv_task_matrix(task_matrices)
    return (u * s) @ v.T


@method("tsv_m", "TSV-M (Task Singular Vectors)", "https://arxiv.org/abs/2412.00081", with_base=True)
def tsv_m_merge(group: TensorGroup, alpha: float = 1.0, matrix_policy: MatrixPolicy = "layers") -> torch.Tensor:
    return task_arithmetic(group, alpha, tsv_update, rank_per_task=True, matrix_policy=matrix_policy)
