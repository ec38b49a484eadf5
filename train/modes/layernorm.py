"""``layernorm``: GenD / LNCLIP-DF (Yermakov et al., WACV 2026). Only the LayerNorm affine parameters (``ln_pre``,
every block's ``ln_1``/``ln_2``, ``ln_post``) and the head train, about 0.03 % of a ViT-L/14 vision tower.

Options: a cosine head (weight rows L2-normalised and divided by a temperature; folded into a plain linear head on
save), and the alignment / uniformity losses of Wang & Isola (ICML 2020) on the head's input feature:
``align = mean_{i<j, y_i = y_j} ||f_i - f_j||²``, ``uniform = log mean_{i<j} exp(-t ||f_i - f_j||²)``. Both need
features on the hypersphere, i.e. ``head.normalize: true`` (a family-wide setting: the base and every ingredient
then compute the same function, so they merge).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from train.modes.adaptation import is_layernorm_parameter, named_trainable, remove_all_parametrizations, train_only
from train.modes.registry import Adaptation, ModeOptions, TrainingMode


class LayerNormOptions(ModeOptions):
    cosine_head: bool = Field(False, description="head weight rows L2-normalised and divided by temperature")
    temperature: float = Field(0.1, gt=0, description="cosine head: logits = cos(feature, w) / temperature + b")
    alignment_weight: float = Field(0.0, ge=0, description="weight of the same-label alignment loss")
    uniformity_weight: float = Field(0.0, ge=0, description="weight of the uniformity loss")
    uniformity_t: float = Field(2.0, gt=0, description="t of the uniformity loss (Wang & Isola: 2)")

    def check_config(self, config) -> None:
        needs_sphere = self.cosine_head or self.alignment_weight > 0 or self.uniformity_weight > 0
        if needs_sphere and not config.head.normalize:
            raise ValueError(
                "mode_options.layernorm: cosine_head, alignment_weight and uniformity_weight need L2-normalised "
                "features: set head.normalize: true"
            )


class CosineWeight(nn.Module):
    """``w / ||w||_row / temperature``: with L2-normalised features the logits are scaled cosines."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return F.normalize(weight, dim=1) / self.temperature


def alignment_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared distance over same-label pairs i < j (0 when there is none)."""
    d2 = torch.cdist(features, features).pow(2)
    same = (labels[:, None] == labels[None, :]).triu(diagonal=1)
    return d2[same].mean() if bool(same.any()) else d2.sum() * 0


def uniformity_loss(features: torch.Tensor, t: float) -> torch.Tensor:
    """``log mean_{i<j} exp(-t ||f_i - f_j||²)`` (0 for fewer than two features)."""
    n = features.shape[0]
    if n < 2:
        return features.sum() * 0
    d2 = torch.pdist(features).pow(2)
    return torch.logsumexp(-t * d2, dim=0) - math.log(d2.numel())


def install_layernorm(model, options: LayerNormOptions, seed: int) -> Adaptation:
    train_only(model, is_layernorm_parameter)
    if options.cosine_head:
        parametrize.register_parametrization(model.head, "weight", CosineWeight(options.temperature))

    extra_loss, hook = None, None
    if options.alignment_weight > 0 or options.uniformity_weight > 0:
        seen: dict[str, torch.Tensor] = {}

        def keep_feature(module, args) -> None:
            if module.training:
                seen["features"] = args[0]

        hook = model.head.register_forward_pre_hook(keep_feature)

        def extra_loss(labels: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
            keep = ok.bool()
            f, y = seen.pop("features").float()[keep], labels[keep]
            loss = options.alignment_weight * alignment_loss(f, y) if options.alignment_weight > 0 else 0
            if options.uniformity_weight > 0:
                loss = loss + options.uniformity_weight * uniformity_loss(f, options.uniformity_t)
            return loss

    def fold(model) -> dict[str, torch.Tensor]:
        if hook is not None:
            hook.remove()
        model.eval()
        factors = named_trainable(model)
        factors = {k.replace("parametrizations.weight.original", "weight_direction"): v for k, v in factors.items()}
        remove_all_parametrizations(model)
        return factors

    return Adaptation(extra_loss=extra_loss, fold=fold)


MODE = TrainingMode(
    name="layernorm", prefix="ln", options=LayerNormOptions, install=install_layernorm,
    trains="LayerNorm affines (ln_pre, ln_1/ln_2 of every block, ln_post) + head; optional cosine head, "
    "alignment/uniformity losses",
    paper="GenD / LNCLIP-DF (WACV 2026); losses: Wang & Isola (ICML 2020)",
)
