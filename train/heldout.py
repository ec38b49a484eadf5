"""Held-out scores of an ingredient on the validation split of its own training data (for greedy soups).

Inputs are logits (B, C) of the detector's head and labels 0 (real) / 1 (fake); the score is P(fake).
AUC and ACC come from the metrics registry (``mergekit_clip.metrics``: ``frame_auc``, ``acc`` at P(fake) > 0.5);
AUC is None when the split holds one class (undefined, not 0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mergekit_clip.metrics import heldout_summary


def detector_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample loss: cross-entropy for 2 logits, BCE on the fake logit for 1."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), labels.float(), reduction="none")
    return F.cross_entropy(logits.float(), labels, reduction="none")


def heldout_metrics(fake_prob: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """``{"auc", "loss", "acc", "n"}`` (``auc`` = registry ``frame_auc``, ``acc`` = registry ``acc``)."""
    labels = labels.long().cpu()
    summary = heldout_summary(labels.numpy(), fake_prob.float().cpu().numpy(), ("frame_auc", "acc"))
    return {
        "auc": summary["frame_auc"],
        "loss": float(detector_loss(logits.float().cpu(), labels).mean()),
        "acc": summary["acc"],
        "n": int(labels.numel()),
    }
