"""Import a Hugging Face CLIP directory or safetensors file, with or without a linear head.

Covers ``CLIPVisionModel``, ``CLIPVisionModelWithProjection``, ``CLIPForImageClassification`` (head on the
mean of the final patch tokens), ``CLIPModel`` (vision tower and projection; text tower dropped), our own
``export --to hf`` output (head spec in ``detector_head``) and LayerNorm-tuned detectors in the style of GenD
(a linear head on the, optionally L2-normalised, pooled feature; ``--head-normalize``). A file, or a directory
whose config is not a CLIP one, needs ``--hf-config`` with the CLIP config the model was built from.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from mergekit_clip.convert.assemble import assemble
from mergekit_clip.convert.base import ConversionError, Converted, ImportOptions, ImportReport, load_weights_file
from mergekit_clip.convert.geometry import hints_from_hf_config, read_hf_config
from mergekit_clip.convert.hf_state import extract_hf_vision
from mergekit_clip.detector.forensics_adapter import TRAINED_MODULES
from mergekit_clip.detector.io import weight_files
from mergekit_clip.detector.layouts import (
    ADAPTER_TENSORS,
    HF_PREPROCESS_KEY,
    HF_PREPROCESSOR_FILE,
    HF_PROVENANCE_KEY,
    adapter_from_hf_config,
    forensics_adapter_from_hf_config,
    head_from_hf_config,
    hf_vision_config,
    preprocess_from_hf,
)
from mergekit_clip.detector.spec import MODEL_TYPE, BackboneSpec


def _load_state(source: Path) -> dict[str, torch.Tensor]:
    files = weight_files(source) if source.is_dir() else [source]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_weights_file(file))
    return state


def _check_config_geometry(cfg: dict, backbone: BackboneSpec, origin: str) -> None:
    vision = hf_vision_config(cfg)
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


def _read_processor(source: Path) -> dict | None:
    file = source / HF_PREPROCESSOR_FILE if source.is_dir() else None
    if file is None or not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{file}: unreadable ({e})") from e


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
    try:
        head = head_from_hf_config(cfg, origin)
        adapter = adapter_from_hf_config(cfg)
        forensics_adapter = forensics_adapter_from_hf_config(cfg)
        processor = _read_processor(source)
        size = int(hf_vision_config(cfg).get("image_size", 224))
        preprocess = preprocess_from_hf(cfg, processor, size, str(source / HF_PREPROCESSOR_FILE))
    except ValueError as e:
        raise ConversionError(str(e)) from e
    head_key = options.head_key
    if head is not None:
        hints = replace(hints, head_feature=head.feature, head_normalize=head.normalize, labels=head.labels)
        if head.feature == "patch_mean" and not head_key and not cfg.get("detector_head"):
            head_key = "classifier"
            report.note("CLIPForImageClassification: classifier reads the mean of the final patch tokens")
        head_key = head_key or "head"
    if not cfg.get(HF_PREPROCESS_KEY) and processor is None:
        preprocess = None  # nothing recorded: assemble uses the defaults at the tensors' image size
    state = _load_state(source)
    fa_tensors = {}
    if forensics_adapter is not None:  # our export of a ForensicsAdapter: its modules ride by name, no linear head
        fa_tensors = {k: state.pop(k) for k in list(state) if k.split(".", 1)[0] in TRAINED_MODULES}
        head_key = None
    adapter_tensors = {k: state.pop(k) for k in ADAPTER_TENSORS if k in state}
    if adapter_tensors and adapter is None:
        raise ConversionError(
            f"{source}: adapter tensors {sorted(adapter_tensors)} but config.json has no detector_adapter"
        )
    if adapter is not None and len(adapter_tensors) != len(ADAPTER_TENSORS):
        missing = sorted(set(ADAPTER_TENSORS) - set(adapter_tensors))
        raise ConversionError(f"{source}: config.json declares an adapter but the weights lack {missing}")
    parts = extract_hf_vision(state, report, head_key=head_key)
    converted = assemble(
        parts.visual,
        parts.proj,
        parts.head,
        options,
        hints,
        report,
        default_act=hints.act,
        preprocess=preprocess,
        adapter=adapter,
        adapter_tensors=adapter_tensors,
        forensics_adapter=forensics_adapter,
        forensics_adapter_tensors=fa_tensors,
        provenance=cfg.get(HF_PROVENANCE_KEY),
    )
    _check_config_geometry(cfg, converted.spec.backbone, origin)
    return converted
