"""Export a detector directory as a Hugging Face CLIP vision model that transformers loads.

Output: ``config.json`` (a ``CLIPVisionConfig`` with ``architectures`` ``CLIPVisionModelWithProjection``, or
``CLIPVisionModel`` with ``projection=False``), ``model.safetensors`` (``vision_model.*``,
``visual_projection.weight``, plus ``head.weight``/``head.bias``, which transformers reports as unexpected
and skips) and ``preprocessor_config.json`` (``CLIPImageProcessor``). The head spec, our exact preprocessing and
the provenance ride in ``config.json`` as ``detector_head``/``detector_preprocess``/``detector_provenance``, so
``mergekit_clip.detector.io.load_detector`` and ``import --from hf`` read the directory back bit for bit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from mergekit_clip.convert.base import ConversionError
from mergekit_clip.detector.io import WEIGHTS_NAME, atomic_directory, detector_spec, load_provenance, read_state_dict
from mergekit_clip.detector.layouts import open_clip_to_hf_vision
from mergekit_clip.detector.spec import DetectorSpec, PreprocessSpec

_RESAMPLE = {"bilinear": 2, "bicubic": 3}


def hf_vision_config(spec: DetectorSpec, projection: bool):
    from transformers import CLIPVisionConfig

    b = spec.backbone
    config = CLIPVisionConfig(
        hidden_size=b.width,
        intermediate_size=b.mlp_width,
        projection_dim=b.embed_dim,
        num_hidden_layers=b.layers,
        num_attention_heads=b.heads,
        image_size=b.image_size,
        patch_size=b.patch_size,
        hidden_act=b.act,
        layer_norm_eps=b.layer_norm_eps,
    )
    config.architectures = ["CLIPVisionModelWithProjection" if projection else "CLIPVisionModel"]
    return config


def preprocessor_config(pre: PreprocessSpec) -> dict:
    """A ``CLIPImageProcessor`` config doing our preprocessing (shortest-side resize + centre crop, or squash)."""
    size = (
        {"height": pre.image_size, "width": pre.image_size}
        if pre.resize_mode == "squash"
        else {"shortest_edge": pre.image_size}
    )
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": size,
        "resample": _RESAMPLE[pre.interpolation],
        "do_center_crop": pre.resize_mode == "shortest",
        "crop_size": {"height": pre.image_size, "width": pre.image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pre.mean),
        "image_std": list(pre.std),
        "do_convert_rgb": True,
    }


def export_hf(
    source: str | os.PathLike, out: str | os.PathLike, *, projection: bool = True, overwrite: bool = False
) -> list[str]:
    """Write ``source`` (our detector dir) as an HF CLIP vision model at ``out``; returns report lines."""
    source, out = Path(source), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    spec = detector_spec(source)
    state = read_state_dict(source)
    if spec.adapter is not None or any(k.startswith("adapter.") for k in state):
        adapters = sorted(k for k in state if k.startswith("adapter."))
        raise ConversionError(f"{source}: adapters have no Hugging Face equivalent; cannot export {adapters}")
    if not projection and spec.head is not None and spec.head.feature == "projected":
        raise ConversionError(f"{source}: the head reads projected features: export with the projection")
    try:
        tensors = open_clip_to_hf_vision(state, spec.backbone.layers)
    except KeyError as e:
        raise ConversionError(f"{source}: {e.args[0]}") from e
    lines = [f"export --to hf: {source} -> {out}", f"vision tower: {len(tensors)} tensors (in_proj split into q/k/v)"]
    if projection:
        tensors["visual_projection.weight"] = state["visual.proj"].t()
        lines.append("visual.proj transposed into visual_projection.weight")
    if spec.head is not None:
        tensors["head.weight"], tensors["head.bias"] = state["head.weight"], state["head.bias"]
        lines.append(f"head: {tuple(state['head.weight'].shape)} as head.weight/head.bias, spec in detector_head")
    used = {"visual.proj", "head.weight", "head.bias"} | {k for k in state if k.startswith("visual.")}
    leftover = sorted(set(state) - used)
    if leftover:
        raise ConversionError(f"{source}: cannot export tensors {leftover[:8]}")
    config = hf_vision_config(spec, projection)
    config.detector_head = spec.head.model_dump(mode="json") if spec.head is not None else None
    config.detector_preprocess = spec.preprocess.model_dump(mode="json")
    config.detector_provenance = load_provenance(source)
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        config.save_pretrained(str(tmp))
        (tmp / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(spec.preprocess), indent=2))
    lines.append(f"wrote {config.architectures[0]} + preprocessor_config.json")
    return lines
