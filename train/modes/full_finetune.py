"""``full_finetune``: every tensor the head reads trains (:func:`train.finetune.finetune`)."""

from __future__ import annotations

from train.modes.adaptation import dense_counts, parameter_counts
from train.modes.registry import Adaptation, ModeOptions, TrainingMode


def adapt_everything(model, options: ModeOptions, seed: int) -> Adaptation:
    from train.finetune import freeze_unused  # lazily: train.config imports the modes, train.finetune needs it

    total, visual = dense_counts(model)
    freeze_unused(model)
    return Adaptation(provenance=parameter_counts(model, total, visual))


MODE = TrainingMode(
    name="full_finetune",
    prefix="ft",
    trains="every tensor the head reads (visual.proj only for `projected` heads)",
    paper="standard fine-tuning (CLIP_Merging's full fine-tune)",
    adapt=adapt_everything,
)
