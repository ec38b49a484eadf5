"""``lp_ft``: linear probe, then full fine-tuning from the probed head (:mod:`train.lpft`)."""

from __future__ import annotations

from train.modes.registry import TrainingMode

MODE = TrainingMode(
    name="lp_ft", prefix="lpft", probe_first=True,
    trains="head on cached features, then everything the head reads",
    paper="LP-FT (Kumar et al., ICLR 2022)",
)
