"""``clip-train`` configuration: one pydantic model per concern, unknown keys refused with a suggestion.

Precedence is defaults < YAML < ``--set key=value`` (dotted keys, values parsed as YAML scalars). The resolved
configuration is written next to the results as ``config.resolved.yaml``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from mergekit_clip import config_files
from mergekit_clip.config_files import format_validation_errors  # noqa: F401  (study.config used it from here)
from mergekit_clip.options import CHECK_IMAGES_DEFAULT, JSON_ROOT_HELP, CheckImages, Compression
from mergekit_clip.structured import StructuredFileError, read_yaml
from mergekit_clip.tracking import TrackingConfig
from train.modes import MODES
from train.modes.registry import NoOptions


def _registered_mode(name: str) -> str:
    """A training mode registered now (train/modes/; a mode registered after import counts too)."""
    if name not in MODES:
        raise ValueError(f"unknown training mode {name!r}; choose from {list(MODES)}")
    return name


Mode = Annotated[str, AfterValidator(_registered_mode)]


class ConfigError(ValueError):
    """A configuration problem; the message names the key (and the closest valid key when it is a typo)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackboneConfig(_Section):
    """An open_clip architecture name, or an explicit tiny geometry (tests, demo)."""

    arch: str | None = Field(None, description="open_clip name such as ViT-B-16; None = explicit geometry below")
    pretrained: Path | None = Field(
        None, description="local open_clip/OpenAI weights file, or an existing detector dir (its visual tower)"
    )
    quick_gelu: bool = Field(False, description="QuickGELU activation (OpenAI weights were trained with it)")
    image_size: int | None = Field(None, gt=0, description="input side in pixels")
    patch_size: int | None = Field(None, gt=0, description="patch side in pixels")
    width: int | None = Field(None, gt=0, description="transformer width (channels)")
    layers: int | None = Field(None, gt=0, description="residual attention blocks")
    heads: int | None = Field(None, gt=0, description="attention heads")
    embed_dim: int | None = Field(None, gt=0, description="output dim of visual.proj")
    grad_checkpointing: bool = Field(False, description="recompute activations in backward (ViT-L/14 on GPU)")


class HeadConfig(_Section):
    feature: Literal["pooled", "projected", "patch_mean"] = "pooled"
    normalize: bool = Field(False, description="L2-normalise the feature before the linear layer")
    init_seed: int = Field(0, description="seed of the shared head initialisation written to OUT/base")


class DataConfig(_Section):
    json_root: Path = Field(description=JSON_ROOT_HELP)
    data_root: Path = Field(description="root the relative frame paths resolve against")
    train_dataset: str | list[str] = Field(description="dataset name(s) to train on (a list = one pooled set)")
    train_split: str = "train"
    val_split: str = Field("val", description="held-out split of the training data (never a test set)")
    frame_num: int | None = Field(None, gt=0, description="frames per video, evenly spaced; None = all")
    compression: Compression = "c23"
    batch_size: int = Field(32, gt=0, description="global batch (split over ranks and accumulation steps)")
    eval_batch_size: int = Field(64, gt=0)
    workers: int = Field(
        0, ge=0, le=16,
        description="DataLoader workers (0-2 on a laptop CPU); an explicit number, not clip-eval's 'by CPU count', "
        "because each worker draws its own augmentation stream, so the count is part of the run",
    )  # fmt: skip
    cache_images: bool = Field(True, description="decode frames once and keep them in memory (small datasets)")
    on_error: Literal["raise", "skip"] = "raise"
    check_images: CheckImages = Field(
        CHECK_IMAGES_DEFAULT,
        description="frame check before training starts: exists, header (image header read, cheap) or decode (full)",
    )
    allow_outside_root: bool = Field(
        False, description="accept frame paths that are absolute or climb out of data_root with '..'"
    )
    follow_symlinks: bool = Field(
        True, description="follow symlinks inside data_root; false refuses a link that resolves outside it"
    )


class OptimConfig(_Section):
    epochs: int = Field(3, gt=0, description="full fine-tuning epochs")
    lr: float = Field(1e-4, gt=0, description="full fine-tuning learning rate (the sweep overrides it)")
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="share of optimizer steps spent warming up")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a share of the peak lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient L2 norm; None = no clipping")
    grad_accum_steps: int = Field(1, gt=0)
    probe_epochs: int = Field(20, gt=0, description="linear-probe epochs on cached features")
    probe_lr: float = Field(1e-3, gt=0)
    probe_batch_size: int = Field(256, gt=0)
    eval_each_epoch: bool = Field(False, description="score the val split after every fine-tuning epoch")


ModeOptionsConfig = create_model(
    "ModeOptionsConfig",
    __base__=_Section,
    __doc__="Options of the modes that have some, one section per mode (``mode_options.lora.rank``).",
    **{name: (mode.options, mode.options()) for name, mode in MODES.items() if mode.options is not NoOptions},
)


class SweepConfig(_Section):
    """The family: the cartesian product of every list; one shared base."""

    modes: list[Mode] = Field(default_factory=lambda: ["full_finetune"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    lrs: list[float] | None = Field(None, description="None = [optim.lr]")
    weight_decays: list[float] | None = Field(None, description="None = [optim.weight_decay]")
    augment_strengths: list[float] = Field(default_factory=lambda: [1.0])
    train_datasets: list[str | list[str]] | None = Field(None, description="None = [data.train_dataset]")

    @field_validator("modes", "seeds", "augment_strengths")
    @classmethod
    def _not_empty(cls, value: list) -> list:
        if not value:
            raise ValueError("must list at least one value")
        if len(set(map(str, value))) != len(value):
            raise ValueError(f"duplicate values {value}")
        return value


class TrainConfig(_Section):
    output: Path = Field(description="run folder: base/, ingredients/, metrics.jsonl, summary.json")
    backbone: BackboneConfig = BackboneConfig()
    head: HeadConfig = HeadConfig()
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    sweep: SweepConfig = SweepConfig()
    mode_options: ModeOptionsConfig = ModeOptionsConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 autocast on GPU only")
    cache_dir: Path | None = Field(None, description="feature cache; None = OUT/cache")
    max_steps: int | None = Field(None, gt=0, description="stop each fine-tune after this many steps (debug)")
    threads: int | None = Field(
        None, gt=0, description="torch CPU threads; None = torch's default. 1 is fastest on a busy, shared CPU"
    )
    # where curves go is not what the run computes: left out of config.resolved.yaml and the --resume checks
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, exclude=True, description="TensorBoard / MLflow")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        b = self.backbone
        geometry = [b.width, b.layers, b.heads, b.patch_size]
        if b.arch is None and b.pretrained is None and None in geometry:
            raise ValueError("backbone: give arch (an open_clip name), pretrained, or width/layers/heads/patch_size")
        for mode in self.sweep.modes:
            self.options_of(mode).check_config(self)
        return self

    def options_of(self, mode: str) -> BaseModel:
        """The options of ``mode`` (``mode_options.<mode>``; an empty model for modes without options)."""
        return getattr(self.mode_options, mode, None) or MODES[mode].options()

    def ingredients(self) -> list[IngredientPlan]:
        """Every run of the sweep, in a fixed order; modes that do not fine-tune (linear probes) ignore lr and
        augmentation (see docs)."""
        s = self.sweep
        lrs = s.lrs or [self.optim.lr]
        wds = s.weight_decays or [self.optim.weight_decay]
        datasets = s.train_datasets or [self.data.train_dataset]
        plans: dict[str, IngredientPlan] = {}
        for mode, dataset, wd, lr, aug, seed in itertools.product(
            s.modes, datasets, wds, lrs, s.augment_strengths, s.seeds
        ):
            fine_tunes = MODES[mode].fine_tunes
            if not fine_tunes:  # frozen features: no augmentation, its own lr
                lr, aug = self.optim.probe_lr, 0.0
            parts = [MODES[mode].prefix]
            if len(datasets) > 1:
                parts.append(_dataset_tag(dataset))
            if len(lrs) > 1 and fine_tunes:
                parts.append(f"lr{_num(lr)}")
            if len(wds) > 1:
                parts.append(f"wd{_num(wd)}")
            if len(s.augment_strengths) > 1 and fine_tunes:
                parts.append(f"aug{_num(aug)}")
            parts.append(f"s{seed}")
            name = "_".join(parts)
            plans.setdefault(
                name,
                IngredientPlan(
                    name=name, mode=mode, seed=seed, lr=lr, weight_decay=wd, augment_strength=aug, train_dataset=dataset
                ),
            )
        return list(plans.values())


class IngredientPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    mode: Mode
    seed: int
    lr: float
    weight_decay: float
    augment_strength: float
    train_dataset: str | list[str]

    @property
    def datasets(self) -> list[str]:
        return [self.train_dataset] if isinstance(self.train_dataset, str) else list(self.train_dataset)


def _num(value: float) -> str:
    """Short, file-name safe number: 0.0001 -> 1e-4, 3e-4 -> 3e-4, 0.5 -> 0.5."""
    if value != 0 and abs(value) < 1e-2:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}"


def _dataset_tag(dataset: str | list[str]) -> str:
    names = [dataset] if isinstance(dataset, str) else dataset
    return "+".join(n.replace("_", "-") for n in names)


# ---------------------------------------------------------------- loading, overrides, did-you-mean


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at ``loc`` (None when it leaves the models)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = field.annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict, refusing keys the schema does not know (with a suggestion)."""
    return config_files.apply_overrides(raw, overrides, model_at=lambda loc: _model_at(TrainConfig, loc),
                                        error=ConfigError)  # fmt: skip


def parse_override(item: str) -> tuple[list[str], Any]:
    return config_files.parse_override(item, ConfigError)


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    """Read a YAML file (``yaml.safe_load``), apply ``--set`` overrides and validate."""
    raw: dict = dict(base or {})
    source = "configuration"
    if path is not None:
        source = str(path)
        try:
            loaded = read_yaml(path)
        except StructuredFileError as e:
            raise ConfigError(str(e)) from e
        except OSError as e:
            raise ConfigError(f"{path}: cannot read configuration ({e})") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        raw.update(loaded or {})
    raw = apply_overrides(raw, list(overrides))
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(
            format_validation_errors(e, source, "configuration", lambda loc: _model_at(TrainConfig, loc))
        ) from e
    return config


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
