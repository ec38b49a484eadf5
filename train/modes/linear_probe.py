"""``linear_probe``: the head (and adapter) on cached frozen-backbone features (:mod:`train.probe`)."""

from __future__ import annotations

from train.modes.adaptation import dense_counts, parameter_counts, train_only
from train.modes.registry import Adaptation, ModeOptions, TrainingMode


def adapt_head_only(model, options: ModeOptions, seed: int) -> Adaptation:
    total, visual = dense_counts(model)
    train_only(model, lambda name: False)
    return Adaptation(provenance=parameter_counts(model, total, visual))


MODE = TrainingMode(
    name="linear_probe",
    prefix="lp",
    trains="head only; features computed once with the eval transform and cached",
    paper="linear probing (Radford et al. 2021; CLIP_Merging)",
    probe_first=True,
    fine_tunes=False,
    adapt=adapt_head_only,
)
