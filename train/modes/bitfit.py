"""``bitfit``: every bias term (attention, MLP, LayerNorm beta) plus the head (Ben Zaken et al., ACL 2022)."""

from __future__ import annotations

from train.modes.adaptation import named_trainable, train_only
from train.modes.registry import Adaptation, ModeOptions, TrainingMode


def install_biases(model, options: ModeOptions, seed: int) -> Adaptation:
    train_only(model, lambda name: name.endswith("bias"))  # .bias and attn.in_proj_bias
    return Adaptation(fold=named_trainable)  # the trained biases and head are the factors


MODE = TrainingMode(
    name="bitfit", prefix="bitfit", install=install_biases,
    trains="bias terms only (attention, MLP, LayerNorm beta) + head",
    paper="BitFit (Ben Zaken et al., ACL 2022)",
)
