"""Fisher merging (Matena & Raffel, "Merging Models with Fisher-Weighted Averaging", NeurIPS 2022,
arXiv:2111.09832). Re-implemented from the paper.

Needs each ingredient's diagonal Fisher ``F_i`` (mean over frames of the squared gradient of the log-likelihood,
see :mod:`mergekit_clip.stats.collect`), computed by ``mergekit-clip stats DIR --kind fisher ...`` and stored in
``DIR/merge_stats/fisher.safetensors``. No base model.

Every tensor, matrices and biases, LayerNorms, embeddings and heads alike, is merged element-wise:
``W = sum_i l_i (F_i + eps) W_i / sum_i l_i (F_i + eps)`` with the per-model ``weight`` ``l_i`` (default 1) and
``epsilon`` (default 1e-8, the paper's floor) so entries no ingredient's data touches (zero Fisher) fall back to the
weighted average. Equal Fishers give exactly the weighted average.
"""

from __future__ import annotations

from typing import Annotated

import torch
from mergekit.merge_methods.base import PerInput, TensorGroup
from pydantic import Field

from mergekit_clip.plugin.methods._base import ingredients, method
from mergekit_clip.plugin.methods.data_stats import group_stats, tensors_for
from mergekit_clip.plugin.methods.linalg import back_to


def fisher_average(
    weights: list[torch.Tensor], fishers: list[torch.Tensor], coefficients: list[float], epsilon: float
) -> torch.Tensor:
    numerator = torch.zeros_like(weights[0])
    denominator = torch.zeros_like(weights[0])
    for weight, fisher, coefficient in zip(weights, fishers, coefficients):
        importance = coefficient * (fisher + epsilon)
        numerator += importance * weight
        denominator += importance
    return numerator / denominator


@method(
    "fisher",
    "Fisher merging (diagonal Fisher-weighted average)",
    "https://arxiv.org/abs/2111.09832",
    with_base=False,
)
def fisher_merge(
    group: TensorGroup,
    weight: PerInput[Annotated[float, Field(gt=0.0)]] = 1.0,
    epsilon: Annotated[float, Field(gt=0.0)] = 1e-8,
) -> torch.Tensor:
    stats = group_stats(group, "fisher", "fisher")
    weights = ingredients(group)
    coefficients = weight.values_for(group.entries)
    fishers = tensors_for(group, stats, "fisher")
    if fishers is None:
        fishers = [torch.zeros_like(w) for w in weights]
    return back_to(fisher_average(weights, fishers, coefficients, epsilon), group)
