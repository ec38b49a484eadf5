"""Linear probing: fit the forensic head (and adapter, if any) on cached frozen-backbone features.

The backbone is never run here; every rank fits the same head from the same features and seed, so the result
is identical across processes and needs no communication.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from train.heldout import detector_loss
from train.optim import build_optimizer


def head_parameters(model) -> list[torch.nn.Parameter]:
    params = list(model.head.parameters())
    if model.adapter is not None:
        params += list(model.adapter.parameters())
    return params


def fit_head(
    model,
    features: torch.Tensor,
    labels: torch.Tensor,
    ok: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    warmup_fraction: float = 0.1,
    min_lr_ratio: float = 0.0,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Train ``model.head`` (+ adapter) with AdamW + warm-up/cosine on (features, labels); returns epoch losses.

    ``on_epoch(epoch, loss, lr)`` is called after each epoch (metrics log).
    """
    keep = ok.bool()
    x, y = features[keep], labels[keep]
    if x.shape[0] == 0:
        raise ValueError("linear probe: no decodable training frames")
    device = model.head.weight.device
    x, y = x.to(device), y.to(device)
    trainable = torch.nn.ModuleDict({"head": model.head, **({"adapter": model.adapter} if model.adapter else {})})
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    optimizer, scheduler = build_optimizer(
        trainable, lr, weight_decay, epochs * steps_per_epoch, warmup_fraction, min_lr_ratio
    )
    generator = torch.Generator().manual_seed(seed)
    losses = []
    trainable.train()
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator).to(device)
        total = 0.0
        for start in range(0, x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            loss = detector_loss(model.head_logits(x[idx]), y[idx]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / x.shape[0])
        if on_epoch is not None:
            on_epoch(epoch, losses[-1], optimizer.param_groups[0]["lr"])
    # The last step's gradients would otherwise add to the first fine-tuning step of LP-FT.
    optimizer.zero_grad(set_to_none=True)
    return losses


@torch.no_grad()
def logits_from_features(model, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    device = model.head.weight.device
    out = [
        model.head_logits(features[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(features), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, model.head.out_features)
