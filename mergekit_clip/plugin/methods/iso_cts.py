"""Iso-CTS: isotropic merging with common and task-specific subspaces (Marczak et al., ICML 2025,
arXiv:2502.04959). Re-implemented from the paper; follows ``iso_cts`` of the authors' code
(danielm1405/iso-merging, ``src/utils/iso.py``, which FusionBench follows).

For every matrix tensor with base ``W0``, task matrices ``D_i = W_i - W0`` (``i = 1..T``) and rank
``r = min(m, n)``:

1. common subspace: ``D = sum_i D_i = U S V^T``; each task gets ``s = round((r - int(common_fraction * r)) / T)``
   task-specific directions (Python's ``round``, half to even, as the authors' code; ``subspace_rounding:
   floor`` takes the floor instead, this tool's rule before it matched theirs) and the common subspace keeps the
   top ``k = r - T * s`` triplets ``U_c, S_c, V_c``. Where rounding up would need more than ``r`` directions
   (``common_fraction`` near 0, where the authors' code slices with a negative size) ``s`` falls to
   ``floor(r / T)``;
2. task-specific subspaces: each task's residual orthogonal to the common left subspace,
   ``R_i = D_i - U_c U_c^T D_i``, contributes its top ``s`` singular triplets;
3. the ``r`` stacked left vectors ``[U_c, U_1', ..., U_T']`` and right vectors are orthogonalised by their polar
   factors (``P Q^T`` of their SVD, as in TSV-M), giving ``U_perp`` and ``V_perp``;
4. isotropic scaling: every direction gets ``s_bar``, the mean of the ``r`` stacked singular values
   (``S_c`` and the task-specific ones), and ``W = W0 + alpha * s_bar * U_perp V_perp^T``.

Which tensors are matrices is ``matrix_policy``'s choice (see :mod:`.tsv_m`): ``"layers"`` (default, a departure:
the positional embedding, the forensic head and adapter get the mean task vector) or ``"all_2d"`` (every 2-D
tensor, as the authors' code). Every other tensor (biases, LayerNorms, ``conv1``, the class embedding) is task
arithmetic on the mean task vector, ``W = W0 + alpha * mean_i D_i``, as in their code.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from mergekit.merge_methods.base import TensorGroup
from pydantic import Field

from mergekit_clip.plugin.methods._base import method, task_arithmetic
from mergekit_clip.plugin.methods.linalg import MatrixPolicy, polar_factor, truncated_svd

SubspaceRounding = Literal["round", "floor"]


def subspace_sizes(
    rank: int, tasks: int, common_fraction: float, rounding: SubspaceRounding = "round"
) -> tuple[int, int]:
    """``(k common directions, s directions per task)`` with ``k + T * s = rank``."""
    task_share = (rank - int(common_fraction * rank)) / tasks
    per_task = round(task_share) if rounding == "round" else math.floor(task_share)
    if tasks * per_task > rank:
        per_task = rank // tasks
    return rank - tasks * per_task, per_task


def iso_cts_update(
    task_matrices: torch.Tensor, common_fraction: float, rounding: SubspaceRounding = "round"
) -> torch.Tensor:
    count, m, n = task_matrices.shape
    k, per_task = subspace_sizes(min(m, n), count, common_fraction, rounding)
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
    group: TensorGroup,
    alpha: float = 1.0,
    common_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.8,
    subspace_rounding: SubspaceRounding = "round",
    matrix_policy: MatrixPolicy = "layers",
) -> torch.Tensor:
    return task_arithmetic(
        group,
        alpha,
        lambda tasks: iso_cts_update(tasks, common_fraction, subspace_rounding),
        matrix_policy=matrix_policy,
    )
