"""Export a detector directory as a Hugging Face CLIP vision model that transformers loads.

Output: ``config.json`` (a ``CLIPVisionConfig`` with ``architectures`` ``CLIPVisionModelWithProjection``, or
``CLIPVisionModel`` with ``projection=False``), ``model.safetensors`` (``vision_model.*``,
``visual_projection.weight``, plus ``head.*`` and ``adapter.*`` (or a ForensicsAdapter's modules), which
transformers reports as unexpected and skips) and ``preprocessor_config.json`` (``CLIPImageProcessor``). The head,
adapter and ForensicsAdapter specs, our exact preprocessing and the provenance ride in ``config.json`` as
``detector_head``/``detector_adapter``/``detector_forensics_adapter``/``detector_preprocess``/``detector_provenance``
(written and read by :mod:`mergekit_clip.detector.layouts`), so
``mergekit_clip.detector.io.load_detector`` and ``import --from hf`` read the directory back bit for bit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from mergekit_clip.convert.base import ConversionError
from mergekit_clip.detector.card import write_card
from mergekit_clip.detector.io import WEIGHTS_NAME, atomic_directory, detector_spec, load_provenance, read_state_dict
from mergekit_clip.detector.layouts import (
    HF_PREPROCESSOR_FILE,
    HF_PROJECTION,
    HF_PROVENANCE_KEY,
    carried_tensor_names,
    detector_hf_fields,
    hf_vision_config_fields,
    open_clip_to_hf_vision,
    processor_config,
)
from mergekit_clip.detector.spec import DetectorSpec


def hf_config(spec: DetectorSpec, projection: bool, provenance: dict):
    """The ``CLIPVisionConfig`` of an export, carrying our head, adapter, preprocessing and provenance."""
    from transformers import CLIPVisionConfig

    config = CLIPVisionConfig(**hf_vision_config_fields(spec.backbone))
    config.architectures = ["CLIPVisionModelWithProjection" if projection else "CLIPVisionModel"]
    for key, value in detector_hf_fields(spec).items():
        setattr(config, key, value)
    setattr(config, HF_PROVENANCE_KEY, provenance)
    return config


def export_hf(
    source: str | os.PathLike, out: str | os.PathLike, *, projection: bool = True, overwrite: bool = False
) -> list[str]:
    """Write ``source`` (our detector dir) as an HF CLIP vision model at ``out``; returns report lines."""
    source, out = Path(source), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    spec = detector_spec(source)
    state = read_state_dict(source)
    if not projection and spec.head is not None and spec.head.feature == "projected":
        raise ConversionError(f"{source}: the head reads projected features: export with the projection")
    try:
        tensors = open_clip_to_hf_vision(state, spec.backbone.layers)
    except KeyError as e:
        raise ConversionError(f"{source}: {e.args[0]}") from e
    lines = [f"export --to hf: {source} -> {out}", f"vision tower: {len(tensors)} tensors (in_proj split into q/k/v)"]
    if projection:
        tensors[HF_PROJECTION] = state["visual.proj"].t()
        lines.append(f"visual.proj transposed into {HF_PROJECTION}")
    carried = carried_tensor_names(spec)
    missing = [k for k in carried if k not in state]
    if missing:
        raise ConversionError(f"{source}: config.json declares them but the weights lack {missing}")
    for key in carried:
        tensors[key] = state[key]
    if spec.forensics_adapter is not None:
        lines.append(
            f"forensics_adapter: {len(carried)} adapter/head tensors kept by name, spec in detector_forensics_adapter"
        )
    elif spec.head is not None:
        lines.append(f"head: {tuple(state['head.weight'].shape)} as head.weight/head.bias, spec in detector_head")
    if spec.adapter is not None:
        lines.append("adapter: adapter.* tensors kept by name, spec in detector_adapter (transformers skips them)")
    used = {"visual.proj", *carried} | {k for k in state if k.startswith("visual.")}
    leftover = sorted(set(state) - used)
    if leftover:
        raise ConversionError(f"{source}: cannot export tensors {leftover[:8]}")
    config = hf_config(spec, projection, load_provenance(source))
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        config.save_pretrained(str(tmp))
        (tmp / HF_PREPROCESSOR_FILE).write_text(json.dumps(processor_config(spec.preprocess), indent=2))
        recipe = source / "mergekit_config.yml"
        write_card(tmp, spec, load_provenance(source), recipe=recipe.read_text() if recipe.is_file() else None, hf=True)
    lines.append(f"wrote {config.architectures[0]} + {HF_PREPROCESSOR_FILE}")
    return lines
