"""Tensor-name mapping between open_clip's visual tower and Hugging Face ``CLIPVisionTransformer``.

The two layouts hold the same numbers: Hugging Face splits attention into ``q_proj``/``k_proj``/``v_proj``
where open_clip (``nn.MultiheadAttention``) fuses them into ``in_proj_weight`` (rows q, k, v), and stores the
projection as ``visual_projection.weight`` (embed x width), the transpose of open_clip's ``visual.proj``.
Everything else is a rename.
"""

from __future__ import annotations

import re

import torch

HF_PREFIX = "vision_model."

_TOP_RENAMES = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "pre_layrnorm.weight": "ln_pre.weight",
    "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight",
    "post_layernorm.bias": "ln_post.bias",
}
_LAYER_RENAMES = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
_HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
# Keys the HF vision model holds that carry no weights (buffers).
_IGNORED = {"embeddings.position_ids"}


def strip_vision_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF vision-tower tensors keyed without ``vision_model.``; other top-level keys are kept as they are."""
    out = {}
    for key, value in state_dict.items():
        out[key[len(HF_PREFIX) :] if key.startswith(HF_PREFIX) else key] = value
    return out


def hf_vision_to_open_clip(state_dict: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Map an HF vision tower (keys with or without ``vision_model.``) to open_clip ``visual.*`` names.

    Keys outside the vision tower (heads, projections, text tower) are ignored here; the caller maps them.
    Raises ``KeyError`` naming the first missing tensor.
    """
    sd = strip_vision_prefix(state_dict)
    out: dict[str, torch.Tensor] = {}
    for hf_key, oc_key in _TOP_RENAMES.items():
        out[f"visual.{oc_key}"] = _require(sd, hf_key)
    for i in range(num_layers):
        src = f"encoder.layers.{i}."
        dst = f"visual.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            q, k, v = (_require(sd, f"{src}self_attn.{p}_proj.{kind}") for p in "qkv")
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([q, k, v], dim=0)
        for hf_key, oc_key in _LAYER_RENAMES.items():
            out[dst + oc_key] = _require(sd, src + hf_key)
    extra_layers = {int(m.group(1)) for k in sd if (m := _HF_LAYER.match(k))} - set(range(num_layers))
    if extra_layers:
        raise KeyError(f"checkpoint has layers {sorted(extra_layers)} beyond the configured {num_layers}")
    return out


def open_clip_to_hf_vision(state_dict: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hf_vision_to_open_clip`, producing ``vision_model.*`` keys (no projection)."""
    out: dict[str, torch.Tensor] = {}
    for hf_key, oc_key in _TOP_RENAMES.items():
        out[HF_PREFIX + hf_key] = _require(state_dict, f"visual.{oc_key}")
    for i in range(num_layers):
        src = f"visual.transformer.resblocks.{i}."
        dst = f"{HF_PREFIX}encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = _require(state_dict, f"{src}attn.in_proj_{kind}").chunk(3, dim=0)
            for name, part in zip("qkv", (q, k, v)):
                out[f"{dst}self_attn.{name}_proj.{kind}"] = part.contiguous()
        for hf_key, oc_key in _LAYER_RENAMES.items():
            out[dst + hf_key] = _require(state_dict, src + oc_key)
    return out


def _require(sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    try:
        return sd[key]
    except KeyError:
        raise KeyError(f"missing tensor {key!r}") from None


def hf_vision_tensor_names(num_layers: int, prefix: str = HF_PREFIX) -> list[str]:
    """Every tensor name of an HF CLIP vision tower, in model order."""
    names = [prefix + k for k in list(_TOP_RENAMES)[:4]]
    for i in range(num_layers):
        base = f"{prefix}encoder.layers.{i}."
        names += [f"{base}self_attn.{p}_proj.{kind}" for p in "qkv" for kind in ("weight", "bias")]
        names += [base + k for k in _LAYER_RENAMES]
    names += [prefix + k for k in list(_TOP_RENAMES)[4:]]
    return names


def open_clip_visual_tensor_names(num_layers: int) -> tuple[list[str], list[list[str]], list[str]]:
    """open_clip visual tower names split as (before layers, per layer, after layers)."""
    pre = [
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.conv1.weight",
        "visual.ln_pre.weight",
        "visual.ln_pre.bias",
    ]
    layer_keys = ["ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias"]
    layer_keys += ["attn.out_proj.weight", "attn.out_proj.bias", "ln_2.weight", "ln_2.bias"]
    layer_keys += ["mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]
    layers = [[f"visual.transformer.resblocks.{i}.{k}" for k in layer_keys] for i in range(num_layers)]
    post = ["visual.ln_post.weight", "visual.ln_post.bias", "visual.proj"]
    return pre, layers, post
