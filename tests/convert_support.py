"""Helpers for the importer tests: the one tiny Hugging Face CLIP geometry they all convert (2 layers, width 64)."""

from __future__ import annotations

from transformers import CLIPVisionConfig

TINY_VISION = dict(
    hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
)


# the same tower inside the CLIPModel / CLIPForImageClassification configs of the plugin tests, with a tiny text tower
TINY_CLIP_VISION = dict(TINY_VISION, projection_dim=32, hidden_act="quick_gelu")
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99)


def tiny_vision_config(act: str = "quick_gelu", eps: float = 1e-5) -> CLIPVisionConfig:
    """The tiny vision tower with activation ``act`` and LayerNorm epsilon ``eps``."""
    return CLIPVisionConfig(**TINY_VISION, hidden_act=act, layer_norm_eps=eps)
