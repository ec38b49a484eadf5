"""LP-FT (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features"): first fit the head on frozen
features, then fine-tune everything from that head, so the early full-model gradients do not come from a
random head and distort the pretrained features.

Stage 1 is :func:`probe_head` (also the whole of ``linear_probe`` mode); stage 2 is
:func:`train.finetune.finetune` started from the probed model, run by :mod:`train.sweep`.
"""

from __future__ import annotations

import torch

from train.config import IngredientPlan, TrainConfig
from train.metrics_log import MetricsLog
from train.probe import fit_head


def probe_head(
    model,
    features: torch.Tensor,
    labels: torch.Tensor,
    ok: torch.Tensor,
    config: TrainConfig,
    plan: IngredientPlan,
    log: MetricsLog,
) -> list[float]:
    """Fit ``model``'s head on cached features with the probe schedule (``optim.probe_*``), in place."""
    o = config.optim

    def on_epoch(epoch: int, loss: float, lr: float) -> None:
        if epoch + 1 == o.probe_epochs or (epoch + 1) % 5 == 0:
            log.write({"ingredient": plan.name, "stage": "probe", "epoch": epoch + 1, "loss": loss, "lr": lr})

    return fit_head(
        model, features, labels, ok, epochs=o.probe_epochs, lr=o.probe_lr, weight_decay=plan.weight_decay,
        batch_size=o.probe_batch_size, seed=plan.seed, warmup_fraction=o.warmup_fraction,
        min_lr_ratio=o.min_lr_ratio, on_epoch=on_epoch,
    )  # fmt: skip
