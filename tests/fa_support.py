"""Tiny ForensicsAdapter geometry shared by the tests (CLIP width 64, 4 layers, 4 heads, 32 px; adapter width 32)."""

from __future__ import annotations

from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, ForensicsAdapterSpec, with_forensics_adapter

TINY_CLIP = BackboneSpec(image_size=32, patch_size=8, width=64, layers=4, heads=4, embed_dim=32)
TINY_FA = ForensicsAdapterSpec(
    image_size=64,
    patch_size=16,
    width=32,
    depth=3,
    heads=2,
    pos_grid=3,  # != the 4x4 patch grid: the positional embedding is resized, as ViT-tiny's 14 -> 16
    num_queries=8,
    fusion_map={1: 1, 2: 3},
    mlp_dim=16,
    mlp_out_dim=8,
    bias_heads=4,
    rerun_from_layer=1,
    refine_layer=3,
    refine_dim=16,
)


def tiny_fa_spec(**changes) -> DetectorSpec:
    fa = TINY_FA.model_copy(update=changes) if changes else TINY_FA
    fa = ForensicsAdapterSpec.model_validate(fa.model_dump())  # model_copy does not validate
    return with_forensics_adapter(DetectorSpec(backbone=TINY_CLIP), fa)
