"""``linear_probe``: the head (and adapter) on cached frozen-backbone features (:mod:`train.probe`)."""

from __future__ import annotations

from train.modes.adaptation import train_only
from train.modes.registry import Adaptation, ModeOptions, TrainingMode


def install_head_only(model, options: ModeOptions, seed: int) -> Adaptation:
    train_only(model, lambda name: False)
    return Adaptation()


MODE = TrainingMode(
    name="linear_probe", prefix="lp", probe_first=True, fine_tunes=False, install=install_head_only,
    trains="head only; features computed once with the eval transform and cached",
    paper="linear probing (Radford et al. 2021; CLIP_Merging)",
)
