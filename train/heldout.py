"""Held-out scores of an ingredient on the validation split of its own training data (for greedy soups).

Inputs are logits (B, C) of the detector's head and labels 0 (real) / 1 (fake); the score is P(fake).
AUC is ``sklearn.metrics.roc_auc_score`` (None when the split holds one class: undefined, not 0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score


def detector_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample loss: cross-entropy for 2 logits, BCE on the fake logit for 1."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), labels.float(), reduction="none")
    return F.cross_entropy(logits.float(), labels, reduction="none")


def heldout_metrics(fake_prob: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """``{"auc", "loss", "acc", "n"}``; acc calls a frame fake when P(fake) > 0.5."""
    labels = labels.long().cpu()
    prob = fake_prob.float().cpu()
    y = labels.numpy()
    auc = float(roc_auc_score(y, prob.numpy())) if len(set(y.tolist())) == 2 else None
    return {
        "auc": auc,
        "loss": float(detector_loss(logits.float().cpu(), labels).mean()),
        "acc": float(((prob > 0.5).long() == labels).float().mean()),
        "n": int(labels.numel()),
    }
