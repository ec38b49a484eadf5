"""Import a Hugging Face CLIP directory or safetensors file, with or without a linear head.

Covers ``CLIPVisionModel``, ``CLIPVisionModelWithProjection``, ``CLIPForImageClassification`` (head on the
mean of the final patch tokens), ``CLIPModel`` (vision tower and projection; text tower dropped), our own
``export --to hf`` output (head spec in ``detector_head``) and LayerNorm-tuned detectors in the style of GenD
(a linear head on the, optionally L2-normalised, pooled feature; ``--head-normalize``). A file, or a directory
whose config is not a CLIP one, needs ``--hf-config`` with the CLIP config the model was built from.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mergekit_clip.convert.assemble import assemble
from mergekit_clip.convert.base import ConversionError, Converted, ImportOptions, ImportReport, load_weights_file
from mergekit_clip.convert.geometry import hints_from_hf_config, read_hf_config
from mergekit_clip.convert.hf_state import extract_hf_vision
from mergekit_clip.detector.io import weight_files
from mergekit_clip.detector.labels import normalize_labels
from mergekit_clip.detector.spec import MODEL_TYPE, BackboneSpec, HeadSpec, PreprocessSpec

_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL codes used by CLIPImageProcessor


def read_preprocessor(file: Path, default_size: int) -> PreprocessSpec:
    """Our preprocessing from a ``CLIPImageProcessor`` ``preprocessor_config.json``."""
    try:
        pp = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{file}: unreadable ({e})") from e
    crop = pp.get("crop_size", default_size)
    crop = crop.get("height", default_size) if isinstance(crop, dict) else crop
    resample = pp.get("resample", 3)
    if resample not in _RESAMPLE:
        raise ConversionError(f"{file}: resample={resample} is not representable (2 bilinear or 3 bicubic)")
    size = pp.get("size") or {}
    squash = not pp.get("do_center_crop", True) and isinstance(size, dict) and "height" in size
    default = PreprocessSpec()
    return PreprocessSpec(
        image_size=crop,
        mean=tuple(pp.get("image_mean", default.mean)),
        std=tuple(pp.get("image_std", default.std)),
        interpolation=_RESAMPLE[resample],
        resize_mode="squash" if squash else "shortest",
    )


def _load_state(source: Path) -> dict[str, torch.Tensor]:
    files = weight_files(source) if source.is_dir() else [source]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_weights_file(file))
    return state


def _check_config_geometry(cfg: dict, backbone: BackboneSpec, origin: str) -> None:
    vision = cfg.get("vision_config", cfg) if cfg.get("model_type") == "clip" else cfg
    fields = {
        "hidden_size": backbone.width,
        "num_hidden_layers": backbone.layers,
        "patch_size": backbone.patch_size,
        "image_size": backbone.image_size,
        "intermediate_size": backbone.mlp_width,
    }
    wrong = [f"{k}={vision[k]} vs tensors {v}" for k, v in fields.items() if k in vision and vision[k] != v]
    if wrong:
        raise ConversionError(f"{origin} does not describe the weights: {wrong}")


def import_hf(source: Path, options: ImportOptions) -> Converted:
    report = ImportReport("hf", str(source))
    cfg_path = options.hf_config or (source / "config.json" if source.is_dir() else None)
    if cfg_path is None:
        raise ConversionError(f"{source}: a weights file needs --hf-config (the CLIP config.json it was built from)")
    cfg = read_hf_config(cfg_path)
    origin = str(cfg_path / "config.json" if cfg_path.is_dir() else cfg_path)
    if cfg.get("model_type") == MODEL_TYPE:
        raise ConversionError(f"{origin}: already a mergekit-clip detector directory; nothing to import")
    if cfg.get("model_type") not in ("clip", "clip_vision_model"):
        raise ConversionError(
            f"{origin}: model_type {cfg.get('model_type')!r} is not a CLIP config; pass --hf-config with the "
            "CLIP (vision) config.json the model was built from"
        )
    hints = hints_from_hf_config(cfg, origin)
    arch = (cfg.get("architectures") or [None])[0]
    feature = normalize = labels = None
    head_key = options.head_key
    if cfg.get("detector_head"):
        head = HeadSpec.model_validate(cfg["detector_head"])
        feature, normalize, labels = head.feature, head.normalize, head.labels
        head_key = head_key or "head"
    elif arch == "CLIPForImageClassification":
        id2label = cfg.get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"}
        try:
            labels = normalize_labels([id2label[k] for k in sorted(id2label, key=int)], source=f"{origin} id2label")
        except ValueError as e:
            raise ConversionError(str(e)) from e
        feature, head_key = "patch_mean", head_key or "classifier"
        report.note("CLIPForImageClassification: classifier reads the mean of the final patch tokens")
    preprocess = None
    if cfg.get("detector_preprocess"):
        preprocess = PreprocessSpec.model_validate(cfg["detector_preprocess"])
    elif source.is_dir() and (source / "preprocessor_config.json").exists():
        preprocess = read_preprocessor(source / "preprocessor_config.json", hints_size(cfg))
    state = _load_state(source)
    parts = extract_hf_vision(state, report, head_key=head_key)
    converted = assemble(
        parts.visual,
        parts.proj,
        parts.head,
        options,
        hints,
        report,
        default_act=hints.act,
        head_feature=feature,
        head_normalize=normalize,
        labels=labels,
        preprocess=preprocess,
        provenance=cfg.get("detector_provenance"),
    )
    _check_config_geometry(cfg, converted.spec.backbone, origin)
    return converted


def hints_size(cfg: dict) -> int:
    vision = cfg.get("vision_config", cfg) if cfg.get("model_type") == "clip" else cfg
    return int(vision.get("image_size", 224))
