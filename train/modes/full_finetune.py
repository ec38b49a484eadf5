"""``full_finetune``: every tensor the head reads trains (:func:`train.finetune.finetune`)."""

from __future__ import annotations

from train.modes.registry import TrainingMode

MODE = TrainingMode(
    name="full_finetune", prefix="ft",
    trains="every tensor the head reads (visual.proj only for `projected` heads)",
    paper="standard fine-tuning (CLIP_Merging's full fine-tune)",
)
