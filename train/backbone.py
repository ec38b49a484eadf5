"""The family's starting point: detector spec from the config, pretrained visual tower, shared head init."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from mergekit_clip.detector.io import DetectorFormatError, create_detector, detector_spec, load_detector
from mergekit_clip.detector.spec import (
    BackboneSpec,
    DetectorSpec,
    HeadSpec,
    PreprocessSpec,
    spec_from_open_clip,
    with_forensics_adapter,
)
from train.config import ConfigError, TrainConfig


def _configured_backbone(config: TrainConfig) -> BackboneSpec | None:
    """The geometry the config asks for (open_clip name or explicit), or None when only ``pretrained`` is given."""
    b = config.backbone
    act = "quick_gelu" if b.quick_gelu else "gelu"
    if b.arch is not None:
        spec = spec_from_open_clip(b.arch, quick_gelu=b.quick_gelu or None, image_size=b.image_size)
        return spec.backbone
    if None in (b.width, b.layers, b.heads, b.patch_size):
        return None
    return BackboneSpec(
        image_size=b.image_size or 224,
        patch_size=b.patch_size,
        width=b.width,
        layers=b.layers,
        heads=b.heads,
        embed_dim=b.embed_dim or b.width,
        act=act,
    )


def resolve_spec(config: TrainConfig) -> DetectorSpec:
    """Detector spec of every ingredient; a pretrained detector dir must agree with any configured geometry.

    A ``forensics_adapter`` family puts its adapter (``mode_options.forensics_adapter.adapter``) beside the tower.
    """
    try:
        spec = _resolve_spec(config)
    except DetectorFormatError:
        raise
    except ValueError as e:  # an unknown open_clip name, width not divisible by heads, ...
        raise ConfigError(f"backbone: {e}") from e
    if "forensics_adapter" in config.sweep.modes:
        try:
            return with_forensics_adapter(spec, config.options_of("forensics_adapter").adapter)
        except ValueError as e:  # the adapter does not fit the tower (heads, fusion layers)
            why = "; ".join(err["msg"] for err in e.errors()) if isinstance(e, ValidationError) else str(e)
            raise ConfigError(f"mode_options.forensics_adapter.adapter: {why}") from e
    return spec


def _resolve_spec(config: TrainConfig) -> DetectorSpec:
    head = HeadSpec(feature=config.head.feature, normalize=config.head.normalize)
    wanted = _configured_backbone(config)
    pretrained = config.backbone.pretrained
    if pretrained is not None and Path(pretrained).is_dir():
        source = detector_spec(pretrained)
        if wanted is not None and wanted != source.backbone:
            diff = {
                k: (v, getattr(source.backbone, k))
                for k, v in wanted.model_dump().items()
                if getattr(source.backbone, k) != v
            }
            raise DetectorFormatError(
                f"backbone.pretrained {pretrained} does not fit the configured architecture: "
                + ", ".join(f"{k}: config {a} vs dir {b}" for k, (a, b) in diff.items())
            )
        return DetectorSpec(backbone=source.backbone, head=head, preprocess=source.preprocess)
    if wanted is None:
        raise DetectorFormatError(
            f"backbone.pretrained {pretrained} is a file: give backbone.arch or the explicit geometry too"
        )
    return DetectorSpec(backbone=wanted, head=head, preprocess=PreprocessSpec(image_size=wanted.image_size))


def build_base(config: TrainConfig, spec: DetectorSpec):
    """Pretrained visual tower + the shared head initialisation (``head.init_seed``), before any training.

    Raises :class:`DetectorFormatError` naming the file when the weights do not fit the architecture.
    """
    from mergekit_clip.detector.io import load_pretrained_backbone

    model = create_detector(spec, seed=config.head.init_seed)
    pretrained = config.backbone.pretrained
    if pretrained is None:
        return model
    path = Path(pretrained)
    if not path.exists():
        raise DetectorFormatError(f"backbone.pretrained: {path} does not exist")
    if path.is_dir():
        source = load_detector(path, require_head=False)
        model.visual.load_state_dict(source.visual.state_dict(), strict=True)
    else:
        load_pretrained_backbone(model, path)
    return model
