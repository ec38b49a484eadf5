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
# The Hugging Face CLIP architectures the plugin and the loaders accept (``architectures[0]`` of config.json).
HF_CLIP_ARCHITECTURES = (
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
    "CLIPForImageClassification",
    "CLIPModel",
)
HEAD_TENSORS = ("head.weight", "head.bias")  # ours, and our HF export's
HF_CLASSIFIER_TENSORS = ("classifier.weight", "classifier.bias")  # CLIPForImageClassification
ADAPTER_TENSORS = ("adapter.down.weight", "adapter.down.bias", "adapter.up.weight", "adapter.up.bias")
HF_PROJECTION = "visual_projection.weight"
# Tensors only some inputs of a merge carry: fine-tunes have heads/adapters, a pretrained base has none.
OPTIONAL_TENSORS = (HF_PROJECTION, *ADAPTER_TENSORS, *HEAD_TENSORS, *HF_CLASSIFIER_TENSORS)
# A CLIPModel's text tower (and logit scale): not part of a vision detector.
HF_TEXT_TENSOR = re.compile(r"^(.*\.)?(text_model\..*|text_projection\.weight|logit_scale|logit_bias)$")

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


# ---------------------------------------------------------------- Hugging Face config.json <-> our specs
# The one place that reads and writes Hugging Face CLIP configs: load_detector, `import --from hf`, `export --to
# hf` and the plugin's merged config all go through these, so an export -> load round trip keeps every field.

# config.json keys our export adds beside CLIPVisionConfig's (transformers keeps unknown keys as attributes).
HF_HEAD_KEY = "detector_head"
HF_ADAPTER_KEY = "detector_adapter"
HF_PREPROCESS_KEY = "detector_preprocess"
HF_FORENSICS_ADAPTER_KEY = "detector_forensics_adapter"
HF_PROVENANCE_KEY = "detector_provenance"
HF_PREPROCESSOR_FILE = "preprocessor_config.json"
PIL_RESAMPLE = {"bilinear": 2, "bicubic": 3}  # CLIPImageProcessor's `resample` codes
_HF_ACTS = ("quick_gelu", "gelu")  # hidden_act values that are ours too


def hf_vision_config(cfg: dict) -> dict:
    """The vision part of a Hugging Face config (``vision_config`` of a ``CLIPConfig``, else the config itself)."""
    return cfg.get("vision_config", cfg) if cfg.get("model_type") == "clip" else cfg


def backbone_from_hf_config(cfg: dict, source: str = "config.json"):
    """Backbone geometry from a ``CLIPConfig``/``CLIPVisionConfig`` dict (transformers' defaults where silent)."""
    from mergekit_clip.detector.spec import BackboneSpec

    v = hf_vision_config(cfg)
    hidden = v.get("hidden_size", 768)
    act = v.get("hidden_act", "quick_gelu")  # CLIPVisionConfig's default
    if act not in _HF_ACTS:
        raise ValueError(f"{source}: hidden_act {act!r} is not representable (one of {list(_HF_ACTS)})")
    return BackboneSpec(
        image_size=v.get("image_size", 224),
        patch_size=v.get("patch_size", 32),
        width=hidden,
        layers=v.get("num_hidden_layers", 12),
        heads=v.get("num_attention_heads", 12),
        mlp_ratio=v.get("intermediate_size", 3072) / hidden,
        embed_dim=v.get("projection_dim", cfg.get("projection_dim", 512)),
        act=act,
        layer_norm_eps=v.get("layer_norm_eps", 1e-5),
    )


def hf_classifier_labels(cfg: dict, source: str = "config.json") -> tuple[str, ...]:
    """Label names of a ``CLIPForImageClassification`` head, from ``id2label`` in row order."""
    from mergekit_clip.detector.labels import normalize_labels

    id2label = cfg.get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"}
    return normalize_labels([id2label[k] for k in sorted(id2label, key=int)], source=f"{source} id2label")


def head_from_hf_config(cfg: dict, source: str = "config.json"):
    """The head spec of a Hugging Face CLIP config: ours (``detector_head``), a classifier's, or ``None``."""
    from mergekit_clip.detector.spec import HeadSpec

    if cfg.get(HF_HEAD_KEY):
        return HeadSpec.model_validate(cfg[HF_HEAD_KEY])
    if (cfg.get("architectures") or [None])[0] == "CLIPForImageClassification":
        labels = hf_classifier_labels(cfg, source)
        return HeadSpec(feature="patch_mean", num_classes=2 if len(labels) == 2 else 1, labels=labels)
    return None


def adapter_from_hf_config(cfg: dict):
    from mergekit_clip.detector.spec import AdapterSpec

    return AdapterSpec.model_validate(cfg[HF_ADAPTER_KEY]) if cfg.get(HF_ADAPTER_KEY) else None


def forensics_adapter_from_hf_config(cfg: dict):
    from mergekit_clip.detector.spec import ForensicsAdapterSpec

    section = cfg.get(HF_FORENSICS_ADAPTER_KEY)
    return ForensicsAdapterSpec.model_validate(section) if section else None


def carried_tensor_names(spec) -> list[str]:
    """Tensors a detector holds beside its vision tower and projection: the linear head and bottleneck adapter, or
    a ForensicsAdapter's trained modules (listed from the model itself). Exporters carry these by name."""
    if spec.forensics_adapter is not None:
        from mergekit_clip.detector.forensics_adapter import forensics_adapter_tensor_names

        return forensics_adapter_tensor_names(spec)
    return [*(HEAD_TENSORS if spec.head is not None else ()), *(ADAPTER_TENSORS if spec.adapter is not None else ())]


def preprocess_from_processor(pp: dict, default_size: int, source: str = HF_PREPROCESSOR_FILE):
    """Our preprocessing from a ``CLIPImageProcessor`` config (the inverse of :func:`processor_config`)."""
    from mergekit_clip.detector.spec import PreprocessSpec

    crop = pp.get("crop_size", default_size)
    crop = crop.get("height", default_size) if isinstance(crop, dict) else crop
    resample = pp.get("resample", PIL_RESAMPLE["bicubic"])
    codes = {code: name for name, code in PIL_RESAMPLE.items()}
    if resample not in codes:
        raise ValueError(f"{source}: resample={resample} is not representable ({codes})")
    size = pp.get("size") or {}
    squash = not pp.get("do_center_crop", True) and isinstance(size, dict) and "height" in size
    default = PreprocessSpec()
    return PreprocessSpec(
        image_size=crop,
        mean=tuple(pp.get("image_mean", default.mean)),
        std=tuple(pp.get("image_std", default.std)),
        interpolation=codes[resample],
        resize_mode="squash" if squash else "shortest",
    )


def preprocess_from_hf(cfg: dict, processor: dict | None, default_size: int, source: str = "config.json"):
    """Our exact preprocessing (``detector_preprocess``) if recorded, else the image processor's, else defaults."""
    from mergekit_clip.detector.spec import PreprocessSpec

    if cfg.get(HF_PREPROCESS_KEY):
        return PreprocessSpec.model_validate(cfg[HF_PREPROCESS_KEY])
    if processor is not None:
        return preprocess_from_processor(processor, default_size, source)
    return PreprocessSpec(image_size=default_size)


def spec_from_hf_config(cfg: dict, processor: dict | None = None, source: str = "config.json"):
    """The detector spec a Hugging Face CLIP config (+ its ``preprocessor_config.json``) describes."""
    from mergekit_clip.detector.spec import DetectorSpec

    backbone = backbone_from_hf_config(cfg, source)
    head = head_from_hf_config(cfg, source)
    preprocess = preprocess_from_hf(cfg, processor, backbone.image_size, source)
    return DetectorSpec(
        backbone=backbone,
        head=head,
        adapter=adapter_from_hf_config(cfg),
        preprocess=preprocess,
        forensics_adapter=forensics_adapter_from_hf_config(cfg),
    )


def hf_vision_config_fields(backbone) -> dict:
    """``CLIPVisionConfig`` keyword arguments for a backbone (the inverse of :func:`backbone_from_hf_config`)."""
    return {
        "hidden_size": backbone.width,
        "intermediate_size": backbone.mlp_width,
        "projection_dim": backbone.embed_dim,
        "num_hidden_layers": backbone.layers,
        "num_attention_heads": backbone.heads,
        "image_size": backbone.image_size,
        "patch_size": backbone.patch_size,
        "hidden_act": backbone.act,
        "layer_norm_eps": backbone.layer_norm_eps,
    }


def detector_hf_fields(spec) -> dict:
    """Our keys in an exported config.json: head, adapter, ForensicsAdapter and exact preprocessing (read back by
    the loaders)."""
    fa = spec.forensics_adapter
    return {
        HF_HEAD_KEY: spec.head.model_dump(mode="json") if spec.head is not None else None,
        HF_ADAPTER_KEY: spec.adapter.model_dump(mode="json") if spec.adapter is not None else None,
        HF_PREPROCESS_KEY: spec.preprocess.model_dump(mode="json"),
        HF_FORENSICS_ADAPTER_KEY: fa.model_dump(mode="json") if fa is not None else None,
    }


def processor_config(pre) -> dict:
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
        "resample": PIL_RESAMPLE[pre.interpolation],
        "do_center_crop": pre.resize_mode == "shortest",
        "crop_size": {"height": pre.image_size, "width": pre.image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pre.mean),
        "image_std": list(pre.std),
        "do_convert_rgb": True,
    }
