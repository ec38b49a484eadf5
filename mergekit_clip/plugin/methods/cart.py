"""CART: centred arithmetic with rank-reduced task vectors (Choi et al., "Revisiting Weight Averaging for Model
Merging", arXiv:2412.12153). Re-implemented from the paper.

No base model: the ingredients ``W_1..W_T`` are centred on their weight average ``W_avg = mean_i W_i``.
For every matrix tensor (see :func:`.linalg.is_matrix`) each centred vector ``C_i = W_i - W_avg`` is replaced by
its best rank-``k`` approximation, ``k = max(1, floor(rank_ratio * min(m, n)))``, and
``W = W_avg + scale * sum_i lowrank_k(C_i)``.
Every other tensor (biases, LayerNorms, ``conv1``, class/positional embeddings, the forensic head and adapter) is
the weight average ``W_avg``. ``rank_ratio = 1`` gives back the sum ``W_avg + scale * sum_i C_i = W_avg``
(the centred vectors sum to zero), so the method is the weight average plus what low-rank truncation keeps.
"""

from __future__ import annotations

from typing import Annotated

import torch
from mergekit.merge_methods.base import TensorGroup
from pydantic import Field

from mergekit_clip.plugin.methods._base import ingredients, method
from mergekit_clip.plugin.methods.linalg import back_to, is_matrix, low_rank, rank_of


@method("cart", "CART (centred, rank-reduced task vectors)", "https://arxiv.org/abs/2412.12153", with_base=False)
def cart_merge(
    group: TensorGroup, rank_ratio: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1, scale: float = 1.0
) -> torch.Tensor:
    weights = torch.stack(ingredients(group))
    average = weights.mean(dim=0)
    if not is_matrix(group.metadata.name, average):
        return back_to(average, group)
    rank = rank_of(rank_ratio, average.shape)
    update = sum(low_rank(w - average, rank) for w in weights)
    return back_to(average + scale * update, group)
