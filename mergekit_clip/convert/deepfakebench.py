"""Import a DeepfakeBench ``clip`` detector checkpoint (``.pth``).

That trainer's detector is a Hugging Face CLIP vision model (the tower of ``openai/clip-vit-*``) whose pooled
output (post-LayerNorm CLS token) feeds ``nn.Linear(width, 2)``; it saves ``model.state_dict()``, so keys read
``backbone.<tower>`` + ``head.weight``/``head.bias``, with ``module.`` in front when trained under DataParallel.
The checkpoint holds no config: geometry comes from shapes, heads/activation/eps from ``--hf-config`` (the
CLIP config it started from), ``--arch`` or the defaults of OpenAI CLIP (QuickGELU, head width 64, eps 1e-5).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from mergekit_clip.convert.assemble import assemble
from mergekit_clip.convert.base import ConversionError, Converted, ImportOptions, ImportReport, load_weights_file
from mergekit_clip.convert.geometry import SourceHints, hints_from_hf_config, read_hf_config
from mergekit_clip.convert.hf_state import extract_hf_vision


def convert_pooled_detector(state: dict[str, torch.Tensor], options: ImportOptions, report: ImportReport) -> Converted:
    """A HF CLIP tower + linear head on the pooled output, from any prefix layout (shared with Effort)."""
    hints = SourceHints()
    if options.hf_config is not None:
        hints = hints_from_hf_config(read_hf_config(options.hf_config), origin=str(options.hf_config))
    hints = replace(hints, head_feature="pooled")
    parts = extract_hf_vision(state, report, head_key=options.head_key)
    if not parts.head:
        raise ConversionError(f"{report.source}: no head found (expected head.weight/head.bias); see --head-key")
    return assemble(parts.visual, parts.proj, parts.head, options, hints, report, default_act="quick_gelu")


def import_deepfakebench(source: Path, options: ImportOptions) -> Converted:
    report = ImportReport("deepfakebench", str(source))
    return convert_pooled_detector(load_weights_file(source), options, report)
