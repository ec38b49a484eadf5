"""mergekit architecture definitions for CLIP vision towers with forensic heads.

Two layouts, one definition each:

* ``CLIPDetector`` (ours): open_clip names ``visual.*`` + ``head.*`` / ``adapter.*``, or for a ForensicsAdapter
  detector its trained modules (``adapter.*``, ``rec_attn_clip.*``, ...), read from the model of its config.
* Hugging Face CLIP (``CLIPVisionModel``, ``CLIPVisionModelWithProjection``, ``CLIPForImageClassification``,
  ``CLIPModel``'s vision tower): ``vision_model.*`` (aliases without the prefix, as saved from a bare
  ``CLIPVisionTransformer``) + optional ``visual_projection.weight``, ``classifier.*`` and ``head.*``.

Heads, adapters and projections are optional weights: a bare pretrained base has none, and the plugin's head
policy (:mod:`mergekit_clip.plugin.heads`) supplies what a base-relative method needs.
"""

from __future__ import annotations

from mergekit.architecture import ModelArchitecture, ModuleArchitecture, ModuleDefinition, WeightInfo
from transformers import PretrainedConfig

from mergekit_clip.detector.layouts import (
    _LAYER_RENAMES,
    ADAPTER_TENSORS,
    HEAD_TENSORS,
    HF_CLIP_ARCHITECTURES,
    HF_PREFIX,
    OPTIONAL_TENSORS,
    carried_tensor_names,
    open_clip_visual_tensor_names,
)
from mergekit_clip.detector.spec import ARCHITECTURE, MODEL_TYPE


def _optional(names) -> list[WeightInfo]:
    # No aliases on optional weights: mergekit 0.1.5's plan.py concatenates list + tuple there.
    return [WeightInfo(name=n, optional=True) for n in names]


def num_vision_layers(config: PretrainedConfig) -> int:
    if getattr(config, "model_type", None) == MODEL_TYPE:
        return int(config.backbone["layers"])
    vision = getattr(config, "vision_config", None)
    if vision is not None and getattr(config, "model_type", None) == "clip":
        return int(vision.num_hidden_layers)
    return int(config.num_hidden_layers)


class OpenCLIPDetectorArchitecture(ModuleArchitecture):
    """Our detector directories (open_clip visual tower names)."""

    def num_layers_config_key(self) -> str:
        return "num_hidden_layers"

    def num_layers(self, config: PretrainedConfig) -> int:
        return num_vision_layers(config)

    def pre_weights(self, config: PretrainedConfig) -> list[WeightInfo]:
        pre, _, _ = open_clip_visual_tensor_names(0)
        return [WeightInfo(name=n) for n in pre]

    def layer_weights(self, index: int, config: PretrainedConfig) -> list[WeightInfo]:
        _, layers, _ = open_clip_visual_tensor_names(index + 1)
        return [WeightInfo(name=n) for n in layers[index]]

    def post_weights(self, config: PretrainedConfig) -> list[WeightInfo]:
        _, _, post = open_clip_visual_tensor_names(0)
        out = [WeightInfo(name=n) for n in post]
        if getattr(config, "forensics_adapter", None):
            # Every input of a ForensicsAdapter merge has them (a family's base is its adapter initialisation);
            # listed from the model built at this geometry, so the list cannot drift from the module.
            return out + [WeightInfo(name=n) for n in carried_tensor_names(config.spec)]
        return out + _optional(ADAPTER_TENSORS + HEAD_TENSORS)


class HFCLIPVisionArchitecture(ModuleArchitecture):
    """Hugging Face CLIP vision towers; keys with or without ``vision_model.``."""

    def num_layers_config_key(self) -> str:
        return "num_hidden_layers"

    def num_layers(self, config: PretrainedConfig) -> int:
        return num_vision_layers(config)

    @staticmethod
    def _weight(name: str) -> WeightInfo:
        return WeightInfo(name=HF_PREFIX + name, aliases=(name,))

    def pre_weights(self, config: PretrainedConfig) -> list[WeightInfo]:
        names = (
            "embeddings.class_embedding",
            "embeddings.patch_embedding.weight",
            "embeddings.position_embedding.weight",
            "pre_layrnorm.weight",
            "pre_layrnorm.bias",
        )
        return [self._weight(n) for n in names]

    def layer_weights(self, index: int, config: PretrainedConfig) -> list[WeightInfo]:
        base = f"encoder.layers.{index}."
        names = [f"{base}self_attn.{p}_proj.{kind}" for p in "qkv" for kind in ("weight", "bias")]
        names += [base + k for k in _LAYER_RENAMES]
        return [self._weight(n) for n in names]

    def post_weights(self, config: PretrainedConfig) -> list[WeightInfo]:
        out = [self._weight("post_layernorm.weight"), self._weight("post_layernorm.bias")]
        return out + _optional(OPTIONAL_TENSORS)


OPEN_CLIP_DETECTOR = ModelArchitecture(
    modules={"default": ModuleDefinition(architecture=OpenCLIPDetectorArchitecture())},
    architectures=[ARCHITECTURE],
    model_type=MODEL_TYPE,
)
HF_CLIP_VISION = ModelArchitecture(
    modules={"default": ModuleDefinition(architecture=HFCLIPVisionArchitecture())},
    architectures=list(HF_CLIP_ARCHITECTURES),
    model_type="clip_vision_model",
    tagalong_files=["preprocessor_config.json"],
)
ALL_ARCHITECTURES = (OPEN_CLIP_DETECTOR, HF_CLIP_VISION)


def is_ours(arch: ModelArchitecture) -> bool:
    return any(arch is a for a in ALL_ARCHITECTURES)
