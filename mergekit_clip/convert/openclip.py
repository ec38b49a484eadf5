"""Import OpenAI / open_clip pretrained weights: the whole CLIP or the visual tower only, plus an optional head.

Accepted sources: a weights file (``.safetensors``, or ``.pt``/``.pth``/``.bin`` read with
``weights_only=True``; OpenAI's TorchScript ``.pt`` only with ``--trust-torchscript``) or an open_clip hub
directory (``open_clip_config.json`` + ``open_clip_model.safetensors``/``open_clip_pytorch_model.bin``).
open_clip's visual names are ours, so the tower is copied name for name; the text tower is dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mergekit_clip.convert.assemble import assemble
from mergekit_clip.convert.base import (
    ConversionError,
    Converted,
    ImportOptions,
    ImportReport,
    is_torchscript,
    load_weights_file,
    refuse_leftovers,
    take_head,
)
from mergekit_clip.convert.geometry import SourceHints
from mergekit_clip.detector.spec import PreprocessSpec

_TEXT = re.compile(
    r"^(positional_embedding|text_projection|logit_scale|logit_bias|attn_mask|input_resolution|context_length"
    r"|vocab_size|token_embedding\..+|transformer\..+|ln_final\..+|text\..+)$"
)
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hub_dir(source: Path) -> tuple[Path, SourceHints, PreprocessSpec | None]:
    """Weights file, hints and preprocessing of an open_clip hub directory."""
    cfg_file = source / "open_clip_config.json"
    weights = next((source / n for n in _HUB_WEIGHTS if (source / n).exists()), None)
    if weights is None:
        raise ConversionError(f"{source}: no {' or '.join(_HUB_WEIGHTS)} in this directory")
    if not cfg_file.exists():
        return weights, SourceHints(), None
    try:
        cfg = json.loads(cfg_file.read_text())
        model_cfg, vision = cfg["model_cfg"], cfg["model_cfg"]["vision_cfg"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ConversionError(f"{cfg_file}: not an open_clip config ({e})") from e
    width = vision.get("width", 768)
    hints = SourceHints(
        origin=str(cfg_file),
        heads=width // vision.get("head_width", 64),
        act="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        embed_dim=model_cfg.get("embed_dim"),
    )
    pp = cfg.get("preprocess_cfg") or {}
    interpolation, resize_mode = pp.get("interpolation", "bicubic"), pp.get("resize_mode", "shortest")
    if interpolation not in ("bicubic", "bilinear") or resize_mode not in ("shortest", "squash"):
        raise ConversionError(
            f"{cfg_file}: preprocess_cfg interpolation={interpolation!r} resize_mode={resize_mode!r} is not "
            "representable (bicubic/bilinear, shortest/squash)"
        )
    size = vision.get("image_size", 224)
    preprocess = PreprocessSpec(
        image_size=size[0] if isinstance(size, (list, tuple)) else size,
        mean=tuple(pp.get("mean", PreprocessSpec().mean)),
        std=tuple(pp.get("std", PreprocessSpec().std)),
        interpolation=interpolation,
        resize_mode=resize_mode,
    )
    return weights, hints, preprocess


def _head_file(file: Path, options: ImportOptions) -> dict:
    state = load_weights_file(file)
    if set(state) == {"weight", "bias"}:  # a bare nn.Linear state dict
        state = {f"head.{k}": v for k, v in state.items()}
    _, head = take_head(state, str(file), options.head_key)
    if not head:
        raise ConversionError(f"{file}: no linear head (a (1 or 2, dim) weight with its bias) in {sorted(state)}")
    refuse_leftovers(state, str(file), "tensors besides the head")
    return head


def import_openclip(source: Path, options: ImportOptions) -> Converted:
    report = ImportReport("openclip", str(source))
    hints, preprocess = SourceHints(), None
    file = source
    if source.is_dir():
        file, hints, preprocess = _hub_dir(source)
    state = load_weights_file(file, trust_torchscript=options.trust_torchscript)
    default_act = "gelu"
    if is_torchscript(file):
        hints = SourceHints(origin="OpenAI TorchScript archive (trained with QuickGELU)", act="quick_gelu")
    if any(k.startswith("visual.") for k in state):
        visual = {k: v for k, v in state.items() if k.startswith("visual.")}
        others = {k: v for k, v in state.items() if not k.startswith("visual.")}
        report.note("whole CLIP: visual.* tensors copied name for name")
    else:
        visual = {f"visual.{k}": v for k, v in state.items() if not k.startswith("head.")}
        others = {k: v for k, v in state.items() if k.startswith("head.")}
        report.note("visual tower only: tensors prefixed with visual.")
    text = [k for k in others if _TEXT.match(k)]
    for k in text:
        others.pop(k)
    if text:
        report.drop("text tower / logit scale", len(text))
    _, head = take_head(others, str(file), options.head_key if options.head is None else None)
    refuse_leftovers(others, str(file), "non-visual tensors that are neither text tower nor head")
    if options.head is not None:
        if head:
            raise ConversionError(f"{file} already holds a head; --head {options.head} would replace it")
        head = _head_file(options.head, options)
        report.note(f"head from {options.head}")
    proj = visual.pop("visual.proj", None)
    return assemble(visual, proj, head, options, hints, report, default_act=default_act, preprocess=preprocess)
