"""RegMean: regression-mean merging (Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language
Models", ICLR 2023, arXiv:2212.09849). Re-implemented from the paper.

Needs each ingredient's Gram matrices ``G_i = X_i^T X_i / N_i`` of every linear layer's input, computed on frames
of its own data by ``mergekit-clip stats DIR --kind gram ...`` (stored in ``DIR/merge_stats/gram.safetensors``).
No base model.

For every weight with Grams (attention ``in_proj_weight`` and ``out_proj.weight``, MLP ``c_fc``/``c_proj``
weights, ``visual.proj`` and the linear head/adapter layers), written ``out x in``, RegMean solves the merged
linear regression ``min_W sum_i ||X_i W^T - X_i W_i^T||^2`` with the off-diagonal Gram entries scaled down:
``G~_i = a * G_i + (1 - a) * diag(G_i)`` (``a = off_diagonal_scale``, the paper's alpha, default 0.9), giving
``W = (sum_i W_i G~_i) (sum_i G~_i)^-1``. ``visual.proj`` (applied as ``x @ proj``, ``in x out``) is
transposed around this. With ``a = 1`` and full-rank Grams this is the exact least-squares solution.

Every other tensor (biases, LayerNorms, ``conv1``, class/positional embeddings) is the plain average. Grams are
normalised per token, so ingredients count equally whatever the number of frames they were computed on.
"""

from __future__ import annotations

from typing import Annotated

import torch
from mergekit.merge_methods.base import TensorGroup
from pydantic import Field

from mergekit_clip.plugin.methods._base import ingredients, method
from mergekit_clip.plugin.methods.data_stats import group_stats, tensors_for
from mergekit_clip.plugin.methods.linalg import back_to


def regmean_solve(weights: list[torch.Tensor], grams: list[torch.Tensor], off_diagonal_scale: float) -> torch.Tensor:
    """``(sum W_i G~_i)(sum G~_i)^-1`` for ``out x in`` weights and ``in x in`` Grams (float32)."""
    numerator = torch.zeros_like(weights[0])
    denominator = torch.zeros_like(grams[0])
    for weight, gram in zip(weights, grams):
        scaled = off_diagonal_scale * gram + (1.0 - off_diagonal_scale) * torch.diag_embed(torch.diagonal(gram))
        numerator += weight @ scaled
        denominator += scaled
    # W D = N  <=>  D W^T = N^T (D symmetric); lstsq copes with a singular D (unused input dimensions).
    try:
        return torch.linalg.solve(denominator, numerator.T).T
    except torch.linalg.LinAlgError:
        return torch.linalg.lstsq(denominator, numerator.T).solution.T


@method("regmean", "RegMean (regression mean)", "https://arxiv.org/abs/2212.09849", with_base=False)
def regmean_merge(
    group: TensorGroup, off_diagonal_scale: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
) -> torch.Tensor:
    stats = group_stats(group, "gram", "regmean")
    weights = ingredients(group)
    grams = tensors_for(group, stats, "regmean")
    if grams is None:
        return back_to(torch.stack(weights).mean(dim=0), group)
    if stats[0].input_axis(group.metadata.name) == 0:
        merged = regmean_solve([w.T for w in weights], grams, off_diagonal_scale).T
    else:
        merged = regmean_solve(weights, grams, off_diagonal_scale)
    return back_to(merged, group)
