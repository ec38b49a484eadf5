"""Find a Hugging Face CLIP vision tower inside any state dict and map it to our names.

Trainers wrap the tower differently (``backbone.``, ``backbone.vision_model.``, ``vision_model.``,
``model.feature_extractor.`` ...). The tower is located by its patch embedding, whatever the prefix; every
other tensor must be the projection, the head, or something known to be irrelevant to the vision
detector (the text tower of a ``CLIPModel``, ``position_ids`` buffers). Anything else is refused by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from mergekit_clip.convert.base import ConversionError, ImportReport, refuse_leftovers, take_head
from mergekit_clip.detector.layouts import HF_TEXT_TENSOR, hf_vision_tensor_names, hf_vision_to_open_clip

_ANCHOR = "embeddings.patch_embedding.weight"
_TOWER_PARTS = ("embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm.")
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


@dataclass
class HFVision:
    prefix: str
    visual: dict[str, torch.Tensor]  # our names, visual.* without visual.proj
    proj: torch.Tensor | None  # our orientation (width, embed_dim)
    head_key: str | None
    head: dict[str, torch.Tensor]  # {"weight", "bias"} or empty


def locate_tower(state: dict[str, torch.Tensor], source: str) -> str:
    prefixes = sorted(k[: -len(_ANCHOR)] for k in state if k.endswith(_ANCHOR))
    if not prefixes:
        raise ConversionError(
            f"{source}: no Hugging Face CLIP vision tower found (no tensor named *{_ANCHOR}); "
            f"first keys: {sorted(state)[:6]}"
        )
    if len(prefixes) > 1:
        raise ConversionError(f"{source}: several vision towers (prefixes {prefixes}); expected one")
    return prefixes[0]


def extract_hf_vision(state: dict[str, torch.Tensor], report: ImportReport, *, head_key: str | None = None) -> HFVision:
    """Split ``state`` into tower / projection / head, refusing unknown tensors by name."""
    source = report.source
    prefix = locate_tower(state, source)
    tower = {
        k[len(prefix) :]: v
        for k, v in state.items()
        if k.startswith(prefix) and k[len(prefix) :].startswith(_TOWER_PARTS)
    }
    others = {k: v for k, v in state.items() if not (k.startswith(prefix) and k[len(prefix) :] in tower)}
    layers = 1 + max((int(m.group(1)) for k in tower if (m := _LAYER.match(k))), default=-1)
    try:
        visual = hf_vision_to_open_clip(tower, layers)
    except KeyError as e:
        raise ConversionError(f"{source}: vision tower under prefix {prefix!r}: {e.args[0]}") from e
    buffers = [k for k in tower if k.endswith("position_ids")]
    leftover = set(tower) - set(hf_vision_tensor_names(layers, prefix="")) - set(buffers)
    refuse_leftovers({prefix + k for k in leftover}, source, "vision-tower tensors outside the CLIP layout")
    if buffers:
        report.drop("position_ids buffers", len(buffers))
    report.note(
        f"vision tower under prefix {prefix!r}: {layers} layers, q/k/v projections fused into "
        "attn.in_proj_*, HF names renamed to open_clip's"
    )

    proj = None
    proj_keys = [k for k in others if k.endswith("visual_projection.weight")]
    if len(proj_keys) > 1:
        raise ConversionError(f"{source}: several projections {proj_keys}")
    if proj_keys:
        proj = others.pop(proj_keys[0]).t().contiguous()
        report.note(f"{proj_keys[0]} transposed into visual.proj")
    text = [k for k in others if HF_TEXT_TENSOR.match(k) or k.endswith("position_ids")]
    for k in text:
        others.pop(k)
    if text:
        report.drop("text tower / logit scale / buffers", len(text))
    found_key, head = take_head(others, source, head_key)
    if found_key is not None:
        report.note(f"head tensors {found_key}.weight/.bias -> head.weight/.bias")
    refuse_leftovers(others, source, "tensors outside the vision tower, projection and head")
    return HFVision(prefix=prefix, visual=visual, proj=proj, head_key=found_key, head=head)
