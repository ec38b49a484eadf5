"""Shared machinery of the parameter-efficient modes: choose what trains, count it, fold it, save it beside.

Every mode saves a standard detector directory with dense weights (stock ``mergekit-yaml`` and ``clip-eval`` read
it unchanged). The tensors the mode actually trained (LoRA A/B, SVD residual U/S/V, LayerNorm affines, biases, the
head) go beside it in ``adapter_factors.safetensors``, whose metadata holds the mode and its options as JSON; no
loader reads that file, it is provenance and the material for exact re-training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import parametrize

from mergekit_clip.detector.io import save_detector

FACTORS_NAME = "adapter_factors.safetensors"
LAYERNORM_NAMES = ("ln_pre", "ln_1", "ln_2", "ln_post")


def is_layernorm_parameter(name: str) -> bool:
    """``visual.ln_pre.*``, every block's ``ln_1``/``ln_2``, ``visual.ln_post.*`` (open_clip names)."""
    return any(f"{ln}." in name for ln in LAYERNORM_NAMES)


def head_parameter_names(model: nn.Module) -> set[str]:
    prefixes = ("head.",) + (("adapter.",) if getattr(model, "adapter", None) is not None else ())
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def train_only(model: nn.Module, keep: Callable[[str], bool]) -> None:
    """Freeze every parameter except the head (and adapter) and those whose name ``keep`` accepts, then what the
    head's feature never reads (as full fine-tuning does: DDP needs a gradient for every trainable tensor)."""
    from train.finetune import freeze_unused  # lazily: train.config imports the modes, train.finetune needs it

    heads = head_parameter_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in heads or keep(name))
    freeze_unused(model)


def parameter_counts(model: nn.Module, dense_total: int, dense_visual: int) -> dict:
    """Trainable parameter count and share, of the whole detector and of the vision tower (dense counts)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    visual = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith("visual."))
    return {
        "trainable_parameters": trainable,
        "trainable_share": trainable / max(1, dense_total),
        "trainable_visual_parameters": visual,
        "trainable_visual_share": visual / max(1, dense_visual),
    }


def dense_counts(model: nn.Module) -> tuple[int, int]:
    """(all parameters, vision-tower parameters) of the detector before any factor is installed."""
    total = sum(p.numel() for p in model.parameters())
    visual = sum(p.numel() for n, p in model.named_parameters() if n.startswith("visual."))
    return total, visual


def named_trainable(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the trainable tensors (all, or those named), by their parameter names."""
    wanted = set(names) if names is not None else None
    return {
        n: p.detach().cpu().clone()
        for n, p in model.named_parameters()
        if p.requires_grad and (wanted is None or n in wanted)
    }


def remove_all_parametrizations(model: nn.Module) -> None:
    """Fold every parametrisation into its tensor (the value the forward pass used, bit for bit)."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)


def save_ingredient(
    model: nn.Module,
    path: str | Path,
    provenance: dict,
    factors: dict[str, torch.Tensor] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the dense detector (``config.json`` + ``model.safetensors``) and, if any, its factors, atomically."""

    def write_factors(tmp: Path) -> None:
        meta = {"format": "pt", "mode": str(provenance.get("mode")),
                "mode_options": json.dumps(provenance.get("mode_options") or {}, sort_keys=True)}  # fmt: skip
        save_file({k: v.contiguous() for k, v in factors.items()}, str(tmp / FACTORS_NAME), metadata=meta)

    return save_detector(model, path, provenance, overwrite, write_extra=write_factors if factors else None)
