"""``bitfit``: every bias term (attention, MLP, LayerNorm beta) plus the head (Ben Zaken et al., ACL 2022)."""

from __future__ import annotations

import torch

from train.modes.adaptation import dense_counts, named_trainable, parameter_counts, train_only
from train.modes.registry import Adaptation, ModeOptions, TrainingMode


def adapt_bitfit(model, options: ModeOptions, seed: int) -> Adaptation:
    total, visual = dense_counts(model)
    train_only(model, lambda name: name.endswith("bias"))  # .bias and attn.in_proj_bias

    def fold(model) -> dict[str, torch.Tensor]:
        return named_trainable(model)

    return Adaptation(provenance=parameter_counts(model, total, visual), fold=fold)


MODE = TrainingMode(
    name="bitfit",
    prefix="bitfit",
    trains="bias terms only (attention, MLP, LayerNorm beta) + head",
    paper="BitFit (Ben Zaken et al., ACL 2022)",
    adapt=adapt_bitfit,
)
