"""Put mapped tensors and resolved geometry together into a :class:`~mergekit_clip.convert.base.Converted`."""

from __future__ import annotations

import torch

from mergekit_clip.convert.base import ConversionError, Converted, ImportOptions, ImportReport
from mergekit_clip.convert.geometry import SourceHints, resolve_backbone, resolve_head
from mergekit_clip.detector.spec import (
    AdapterSpec,
    DetectorSpec,
    ForensicsAdapterSpec,
    PreprocessSpec,
    with_forensics_adapter,
)


def assemble(
    visual: dict[str, torch.Tensor],
    proj: torch.Tensor | None,
    head: dict[str, torch.Tensor],
    options: ImportOptions,
    hints: SourceHints,
    report: ImportReport,
    *,
    default_act: str,
    preprocess: PreprocessSpec | None = None,
    adapter: AdapterSpec | None = None,
    adapter_tensors: dict[str, torch.Tensor] | None = None,
    forensics_adapter: ForensicsAdapterSpec | None = None,
    forensics_adapter_tensors: dict[str, torch.Tensor] | None = None,
    provenance: dict | None = None,
) -> Converted:
    """``visual``: our ``visual.*`` names; ``proj``: (width, embed_dim) or None; ``head``: weight/bias or empty.

    With ``forensics_adapter`` the detector is a ForensicsAdapter: its trained tensors come by our names
    (``forensics_adapter_tensors``; the model checks every one when it is built) and its head is fixed."""
    state = dict(visual)
    if proj is not None:
        state["visual.proj"] = proj
    backbone = resolve_backbone(state, options, hints, report, default_act=default_act, has_proj=proj is not None)
    if proj is None:
        # Our detector always carries visual.proj; a pooled/patch-mean head never reads it, so zeros state
        # plainly that it is absent (and merge as neutral) rather than inventing random numbers.
        state["visual.proj"] = torch.zeros(
            backbone.width, backbone.embed_dim, dtype=visual["visual.conv1.weight"].dtype
        )
        report.note(
            f"visual.proj absent from the source: zero-filled ({backbone.width}, {backbone.embed_dim}), "
            "unused by a pooled head"
        )
    head_spec = None
    if forensics_adapter is not None:
        if proj is None:
            raise ConversionError(f"{report.source}: a ForensicsAdapter projects its query tokens: visual.proj needed")
        preprocess = preprocess or PreprocessSpec(image_size=forensics_adapter.image_size)
        state.update(forensics_adapter_tensors or {})
        report.note(f"forensics_adapter: {len(forensics_adapter_tensors or {})} trained tensors kept by name")
        spec = with_forensics_adapter(DetectorSpec(backbone=backbone, preprocess=preprocess), forensics_adapter)
        return Converted(spec=spec, state=state, report=report, provenance=dict(provenance or {}))
    if head:
        head_spec = resolve_head(head["weight"], backbone, options, hints, report)
        if head_spec.feature == "projected" and proj is None:
            raise ConversionError(f"{report.source}: the head reads projected features but there is no projection")
        state["head.weight"], state["head.bias"] = head["weight"], head["bias"]
    else:
        report.note("no head: written as a bare backbone (a base for merging, not a detector)")
    preprocess = preprocess or PreprocessSpec(image_size=backbone.image_size)
    if adapter is not None:
        if head_spec is None:
            raise ConversionError(f"{report.source}: an adapter needs a head")
        state.update(adapter_tensors or {})
        report.note(f"adapter: {adapter.type} (hidden {adapter.hidden}) tensors kept by name")
    spec = DetectorSpec(backbone=backbone, head=head_spec, adapter=adapter, preprocess=preprocess)
    return Converted(spec=spec, state=state, report=report, provenance=dict(provenance or {}))
