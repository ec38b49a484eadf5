"""``svd_residual``: Effort (Yan et al., ICML 2025). Each chosen matrix ``W = U S Vᵀ`` keeps its top ``r - k``
singular components frozen and trains a rank-``k`` residual ``U_k diag(S_k) V_kᵀ`` initialised from the bottom
``k`` (default 1), plus the head. Optional losses as Effort's code writes them (``SVDResidualLinear.
compute_orthogonal_loss`` and ``compute_keepsv_loss`` in YZY-stack/Effort-AIGI-Detection): orthogonality of the frozen
and trained singular vectors together (norms not squared), and preservation of each matrix's Frobenius energy
(``sum sigma^2``); each is averaged over the adapted matrices, as Effort's regulariser divides by their number.

Defaults follow Effort's released training (``config/detector/effort.yaml``; its ``get_losses`` is cross-entropy
only, the regulariser is commented out): rank 1 (``r = 1024 - 1`` frozen at ViT-L/14), targets q, k, v, out of
every block, both loss weights 0. ``orthogonality_weight: 1, singular_value_weight: 1`` is Effort's commented-out
variant (``lambda_reg = 1`` on the mean of both terms).

The folded matrix is ``main + U_k diag(S_k) V_kᵀ``: its difference from ``main`` (the frozen top ``r - k`` part of
the pretrained matrix) has rank <= ``k``; its difference from the pretrained matrix has rank <= ``2k`` (the residual
leaves the initial bottom-``k`` subspace). ``U``/``S``/``V`` go to ``adapter_factors.safetensors`` as
``<matrix>.U`` (out x k), ``<matrix>.S`` (k), ``<matrix>.V`` (in x k).
"""

from __future__ import annotations

import torch
from pydantic import Field

from train.modes.adaptation import train_only
from train.modes.lowrank import SVDResidualFactor, Targets, fold_installed, install
from train.modes.registry import Adaptation, ModeOptions, TrainingMode


class SVDResidualOptions(ModeOptions):
    rank: int = Field(1, gt=0, description="k: rank of the trainable residual (Effort: 1)")
    targets: Targets = Field(
        ("q_proj", "k_proj", "v_proj", "out_proj"), description="matrices of every block (Effort: q, k, v, out)"
    )
    orthogonality_weight: float = Field(
        0.0,
        ge=0,
        description="weight of Effort's 0.5 ||[U_r U_k][U_r U_k]ᵀ - I|| + 0.5 ||[Vh_r; Vh_k][..]ᵀ - I|| (mean over "
        "matrices)",
    )
    singular_value_weight: float = Field(
        0.0, ge=0, description="weight of Effort's | ||Ŵ||_F² - ||W||_F² |, mean over matrices"
    )


def install_svd_residual(model, options: SVDResidualOptions, seed: int) -> Adaptation:
    train_only(model, lambda name: False)
    orthogonal = options.orthogonality_weight > 0
    installed = install(
        model,
        options.targets,
        lambda target, weight: SVDResidualFactor(weight, options.rank, frozen_vectors=orthogonal),
    )
    factors_only = [f for _, f in installed]

    extra_loss = None
    if orthogonal or options.singular_value_weight > 0:

        def extra_loss(labels: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
            loss = torch.zeros((), device=labels.device)
            if orthogonal:
                terms = torch.stack([f.orthogonality_loss() for f in factors_only])
                loss = loss + options.orthogonality_weight * terms.mean()
            if options.singular_value_weight > 0:
                terms = torch.stack([f.singular_value_loss() for f in factors_only])
                loss = loss + options.singular_value_weight * terms.mean()
            return loss

    return Adaptation(extra_loss=extra_loss, fold=lambda model: fold_installed(model, installed))


MODE = TrainingMode(
    name="svd_residual", prefix="svdres", options=SVDResidualOptions, install=install_svd_residual,
    trains="rank-k residual of the SVD of chosen matrices (top r-k frozen) + head",
    paper="Effort (Yan et al., ICML 2025)",
)
