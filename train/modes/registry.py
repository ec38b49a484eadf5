"""The training-mode registry: what ``sweep.modes`` may name, each mode's options model and its adaptation.

Adding a mode is one new file in ``train/modes/`` defining a :class:`TrainingMode` (``MODE``) plus one
``register(...)`` line in ``train/modes/__init__.py``. A mode's
``install`` only chooses and installs what trains; :meth:`TrainingMode.adapt` records the options and the trainable
parameter counts for every mode alike. :func:`register` is idempotent: registering the same mode again is a no-op,
a different one under a taken name (or prefix) raises naming both.

This module imports no training code, so :mod:`train.config` can build its closed ``Mode`` set from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict

from mergekit_clip.registry import add_entry, get_entry


class ModeOptions(BaseModel):
    """Base of every mode's options (``mode_options.<mode>`` in the config): unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def check_config(self, config) -> None:
        """Cross-section checks against the whole ``TrainConfig``; raise ValueError naming the keys."""


class NoOptions(ModeOptions):
    """A mode without options of its own."""


@dataclass
class Adaptation:
    """What a parameter-efficient mode did to a detector before fine-tuning, and how to undo it on save.

    ``extra_loss(labels, ok)`` is added to the detector loss of every micro-batch (None = none); ``fold(model)``
    turns the factors into dense weights in place and returns them (the ``adapter_factors.safetensors`` tensors);
    ``provenance`` (what the mode adds to the options and counts :meth:`TrainingMode.adapt` records) goes into the
    ingredient's ``config.json``. ``batch_loss(model, images, labels, ok, masks, generator) -> (per-frame CE, total
    loss)`` replaces the detector loss of a micro-batch for modes with a loss of their own (``model`` may be
    DDP-wrapped; ``masks`` is None unless the mode ``needs_masks``; ``generator`` (CPU) is seeded per micro-batch
    from (seed, epoch, batch, rank): random draws taken from it are replayed exactly by ``--resume``).
    """

    provenance: dict = field(default_factory=dict)
    extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    batch_loss: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    fold: Callable[[torch.nn.Module], dict[str, torch.Tensor]] = field(default=lambda model: {})


InstallFn = Callable[[torch.nn.Module, ModeOptions, int], Adaptation]


def install_everything(model: torch.nn.Module, options: ModeOptions, seed: int) -> Adaptation:
    """Full fine-tuning: every tensor the head reads trains."""
    from train.finetune import freeze_unused  # lazily: train.config imports the modes, train.finetune needs it

    freeze_unused(model)
    return Adaptation()


@dataclass(frozen=True)
class TrainingMode:
    """One way of turning the shared base into an ingredient.

    ``probe_first``: fit the head on cached frozen features before anything else (linear probe, LP-FT);
    ``fine_tunes``: then train on images with :func:`train.finetune.finetune` (False: the probe is the whole mode,
    which therefore ignores ``sweep.lrs`` and ``sweep.augment_strengths``); ``install(model, options, seed)``
    chooses and installs what is trained (default: everything the head reads, i.e. full fine-tuning);
    ``needs_masks``: training batches carry the frames' forgery masks, and fake frames without one are refused
    before training.
    """

    name: str
    prefix: str  # ingredient names start with it: ft_s0, lora_lr1e-4_s1
    trains: str  # one line for the docs table
    paper: str
    options: type[ModeOptions] = NoOptions
    probe_first: bool = False
    fine_tunes: bool = True
    install: InstallFn = install_everything
    needs_masks: bool = False

    def adapt(self, model: torch.nn.Module, options: ModeOptions, seed: int) -> Adaptation:
        """Install what trains; the provenance gets the options (if the mode has any) and the trainable parameter
        counts against the dense detector, measured before any factor is installed."""
        from train.modes.adaptation import dense_counts, parameter_counts  # lazily: no training code at import

        total, visual = dense_counts(model)
        adaptation = self.install(model, options, seed)
        recorded = {"mode_options": options.model_dump(mode="json")} if type(options).model_fields else {}
        adaptation.provenance = {**recorded, **parameter_counts(model, total, visual), **adaptation.provenance}
        return adaptation


MODES: dict[str, TrainingMode] = {}


def register(mode: TrainingMode) -> TrainingMode:
    """Add ``mode``; the same mode twice is a no-op, a conflicting name or prefix raises naming both."""
    clash = next((m for m in MODES.values() if m.prefix == mode.prefix and m.name != mode.name), None)
    if clash is not None:
        raise ValueError(f"training mode {mode.name!r}: prefix {mode.prefix!r} is already used by {clash.name!r}")
    return add_entry(MODES, mode.name, mode, "training mode")


def get_mode(name: str) -> TrainingMode:
    return get_entry(MODES, name, "training mode")


def mode_names() -> tuple[str, ...]:
    return tuple(MODES)
