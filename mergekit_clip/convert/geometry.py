"""Detector geometry of an imported source: read from tensor shapes, completed by hints.

Shapes fix width, patch, image size, depth, MLP width and (when a projection exists) the embed dim. They
cannot tell the number of attention heads, the activation or the LayerNorm epsilon; those come, in order of
precedence, from explicit options (``--heads``, ``--quick-gelu``, ``--layer-norm-eps``), ``--arch``, the
source's own config, then defaults (head width 64 as in every OpenAI/open_clip ViT, eps 1e-5).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mergekit_clip.convert.base import ConversionError, ImportOptions, ImportReport
from mergekit_clip.detector.layouts import backbone_from_hf_config, hf_vision_config
from mergekit_clip.detector.spec import BackboneSpec, HeadSpec, spec_from_open_clip

_RESBLOCK = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.")
# OpenAI CLIP embed dims by tower width (B: 768 -> 512, L: 1024 -> 768, H: 1280 -> 1024), for sources that
# ship no projection: the zero-filled visual.proj then has the shape a same-family base would have.
_OPENAI_EMBED = {768: 512, 1024: 768, 1280: 1024}


@dataclass(frozen=True)
class SourceHints:
    """What the source's own config says (None = silent)."""

    origin: str = ""
    heads: int | None = None
    act: str | None = None
    layer_norm_eps: float | None = None
    embed_dim: int | None = None
    # the head's own description (a HF config's detector_head; DeepfakeBench: pooled); options still win
    head_feature: str | None = None
    head_normalize: bool | None = None
    labels: tuple[str, ...] | None = None


def hints_from_hf_config(cfg: dict, origin: str) -> SourceHints:
    """Hints from a Hugging Face CLIP ``config.json`` (``CLIPConfig`` or ``CLIPVisionConfig``)."""
    try:
        act = backbone_from_hf_config(cfg, origin).act  # the one HF config reader (refuses other activations)
    except ValueError as e:
        raise ConversionError(str(e)) from e
    vision = hf_vision_config(cfg)
    return SourceHints(
        origin=origin,
        heads=vision.get("num_attention_heads", 12),
        act=act,
        layer_norm_eps=vision.get("layer_norm_eps", 1e-5),
        embed_dim=vision.get("projection_dim", cfg.get("projection_dim")),
    )


def read_hf_config(path: Path) -> dict:
    file = path / "config.json" if path.is_dir() else path
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{file}: cannot read a Hugging Face config ({e})") from e


# long: one pass over the geometry fields, each inferred from a tensor shape and checked against the source's
# hint with a message naming both; split, the fields would be threaded through helpers in the same order
def resolve_backbone(
    visual: dict[str, torch.Tensor],
    options: ImportOptions,
    hints: SourceHints,
    report: ImportReport,
    *,
    default_act: str,
    has_proj: bool,
) -> BackboneSpec:
    """Backbone spec from ``visual.*`` tensors (our names) plus hints; mismatches name the tensor."""
    source = report.source
    required = ("visual.conv1.weight", "visual.positional_embedding", "visual.transformer.resblocks.0.mlp.c_fc.weight")
    absent = [k for k in required if k not in visual]
    if absent:
        raise ConversionError(f"{source}: not a ViT vision tower: missing {absent}")
    conv = visual["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    positions = visual["visual.positional_embedding"].shape[0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ConversionError(
            f"{source}: visual.positional_embedding has {positions} rows, not 1 + a square grid of patches"
        )
    layers = 1 + max((int(m.group(1)) for k in visual if (m := _RESBLOCK.match(k))), default=-1)
    if layers == 0:
        raise ConversionError(f"{source}: no transformer blocks found")
    mlp = visual["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    embed = visual["visual.proj"].shape[1] if has_proj else None

    arch = spec_from_open_clip(options.arch, quick_gelu=options.quick_gelu).backbone if options.arch else None
    if arch is not None:
        found = {
            "width": width,
            "patch_size": patch,
            "image_size": grid * patch,
            "layers": layers,
            "mlp_width": mlp,
            "embed_dim": embed,
        }
        wrong = [
            f"{k}: --arch {getattr(arch, k)} vs tensors {v}"
            for k, v in found.items()
            if v is not None and getattr(arch, k) != v
        ]
        if wrong:
            raise ConversionError(f"{source} does not match --arch {options.arch}: {wrong}")

    def pick(name: str, explicit, from_arch, from_source, default, why_default: str):
        sources = ((explicit, "the command line"), (from_arch, f"--arch {options.arch}"), (from_source, hints.origin))
        for value, origin in sources:
            if value is not None:
                report.note(f"{name}={value} from {origin}")
                return value
        report.note(f"{name}={default} assumed ({why_default})")
        return default

    if options.heads is None and arch is None and hints.heads is None and width % 64:
        raise ConversionError(f"{source}: width {width} is not a multiple of 64: pass --heads")
    heads = pick(
        "heads", options.heads, arch and arch.heads, hints.heads, width // 64, "head width 64; pass --heads to override"
    )
    quick = None if options.quick_gelu is None else ("quick_gelu" if options.quick_gelu else "gelu")
    act = pick(
        "activation", quick, arch and arch.act, hints.act, default_act, "--quick-gelu/--no-quick-gelu to override"
    )
    eps = pick("layer_norm_eps", options.layer_norm_eps, None, hints.layer_norm_eps, 1e-5, "open_clip default")
    if embed is None:
        embed = (arch and arch.embed_dim) or hints.embed_dim or _OPENAI_EMBED.get(width, width)
    if int(width * (mlp / width)) != mlp:
        raise ConversionError(f"{source}: MLP width {mlp} is not representable as a ratio of width {width}")
    try:
        return BackboneSpec(
            image_size=grid * patch,
            patch_size=patch,
            width=width,
            layers=layers,
            heads=heads,
            mlp_ratio=mlp / width,
            embed_dim=embed,
            act=act,
            layer_norm_eps=eps,
        )
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from e


def resolve_head(
    weight: torch.Tensor, backbone: BackboneSpec, options: ImportOptions, hints: SourceHints, report: ImportReport
) -> HeadSpec:
    """Head spec of a ``(classes, dim)`` weight: options, then the source's own say (``hints``), then the shapes."""
    rows, dim = weight.shape
    feature = options.head_feature or hints.head_feature
    if feature is None:
        if dim == backbone.width:
            feature = "pooled"
            if dim == backbone.embed_dim:
                report.note("head input width equals both width and embed dim: pooled assumed (--head-feature)")
        elif dim == backbone.embed_dim:
            feature = "projected"
        else:
            raise ConversionError(
                f"{report.source}: head weight {tuple(weight.shape)} reads a {dim}-dim feature, but the backbone "
                f"has width {backbone.width} and embed dim {backbone.embed_dim}"
            )
    expected = backbone.embed_dim if feature == "projected" else backbone.width
    if dim != expected:
        raise ConversionError(
            f"{report.source}: head weight {tuple(weight.shape)} does not read the {feature} feature ({expected}-dim)"
        )
    normalize = options.head_normalize if options.head_normalize is not None else bool(hints.head_normalize)
    labels = options.labels or hints.labels or (("real", "fake") if rows == 2 else ("fake",))
    try:
        head = HeadSpec(feature=feature, normalize=normalize, num_classes=rows, labels=labels)
    except ValueError as e:
        raise ConversionError(f"{report.source}: head: {e}") from e
    report.note(
        f"head: {rows} logit(s) {list(head.labels)} on the {'L2-normalised ' if normalize else ''}{feature} feature"
    )
    return head
