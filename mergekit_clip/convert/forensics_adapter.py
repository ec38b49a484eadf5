"""Import a released ForensicsAdapter checkpoint (Cui et al., CVPR 2025; OUC-VAS/ForensicsAdapter, CC BY-NC).

The original trainer saves ``DS.state_dict()`` (``torch.save``), so its keys are those of its module tree (learnt by
reading its public model code; nothing copied):

- ``clip_model.*``: OpenAI's CLIP, vision tower ``clip_model.visual.*`` (OpenAI's names, which are open_clip's and
  ours under ``visual.*``; half precision when trained on a GPU) and the text tower (dropped);
- ``rec_attn_clip.vit.*``, ``rec_attn_clip.resblocks.*``, ``rec_attn_clip.ln_post.*``, ``rec_attn_clip.proj``: the
  same CLIP tensors again (the re-run module keeps references to the tower); checked equal, then dropped;
- the trained modules, whose names our detector mirrors one for one: ``adapter.query_embed``,
  ``adapter.query_pos_embed``, ``adapter.vit_model.pos_embed``, ``adapter.vit_model.blocks.N.*`` (timm's ViT-tiny
  blocks), ``adapter.mask_decoder.*``, ``adapter.ln_pre.*``, ``adapter.patch_conv.*``,
  ``rec_attn_clip.clip_intra_blocks.0.*``, ``masked_xray_post_process.process.*``, ``clip_post_process.*``;
- tensors its forward never reads (dropped, counted): ViT blocks from ``depth`` on (the loop stops after block 8),
  the ViT's own ``patch_embed`` (the adapter embeds with ``patch_conv``), ``rec_attn_clip.intra_scale``, and
  BatchNorm's ``num_batches_tracked`` counters (ours keep none).

Any other key is refused by name, as is any tensor our detector needs and the checkpoint lacks. The one part the
checkpoint cannot hold: the CLIP -> adapter projections (``adapter.fusions.*``), which the original creates inside
``forward`` with fresh random weights at every call (zero-mean, scaled by 0.01). They are imported as a zero
contribution (1x1 conv weight and bias 0, LayerNorm 1/0), the expectation of the original's random term, so the
imported detector is deterministic; fine-tuning trains them from there.

Shapes give the adapter's width, queries, patch, position grid, MLP ratio, mask-decoder sizes, bias heads and
refinement width; what they cannot tell (adapter heads, depth, fusion map, frame size, re-run and refinement
layers, interaction weights) is the paper's setting (:class:`~mergekit_clip.detector.spec.ForensicsAdapterSpec`
defaults) unless ``--forensics-adapter FILE`` (YAML/JSON of those fields) says otherwise. The CLIP tower's
geometry is read from its tensors as for every import (QuickGELU: OpenAI weights). Loading is never a pickle:
safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import yaml

from mergekit_clip.convert.base import ConversionError, Converted, ImportOptions, ImportReport, load_weights_file
from mergekit_clip.convert.geometry import SourceHints, resolve_backbone
from mergekit_clip.detector.spec import DetectorSpec, ForensicsAdapterSpec, with_forensics_adapter

CLIP_PREFIX = "clip_model.visual."
# the re-run module's references to the CLIP tower: source prefix -> our prefix
SHARED_CLIP = {
    "rec_attn_clip.vit.": "visual.",
    "rec_attn_clip.resblocks.": "visual.transformer.resblocks.",
    "rec_attn_clip.ln_post.": "visual.ln_post.",
    "rec_attn_clip.proj": "visual.proj",
}
TRAINED = (
    "adapter.query_embed",
    "adapter.query_pos_embed",
    "adapter.vit_model.pos_embed",
    "adapter.vit_model.blocks.",
    "adapter.mask_decoder.",
    "adapter.ln_pre.",
    "adapter.patch_conv.",
    "rec_attn_clip.clip_intra_blocks.",
    "masked_xray_post_process.",
    "clip_post_process.",
)
UNUSED = ("adapter.vit_model.patch_embed.", "rec_attn_clip.intra_scale")
FUSIONS = "adapter.fusions."
_VIT_BLOCK = re.compile(r"^adapter\.vit_model\.blocks\.(\d+)\.")
_MLP_LAYER = re.compile(r"^adapter\.mask_decoder\.query_mlp\.layers\.(\d+)\.weight$")


def _shape(state: dict[str, torch.Tensor], name: str, source: str) -> torch.Size:
    if name not in state:
        raise ConversionError(f"{source}: missing {name}: not a ForensicsAdapter checkpoint (--from forensics-adapter)")
    return state[name].shape


def _spec_file(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConversionError(f"--forensics-adapter {path}: cannot read it ({e})") from e
    if not isinstance(doc, dict):
        raise ConversionError(f"--forensics-adapter {path}: expected a mapping of forensics_adapter fields")
    return doc.get("forensics_adapter", doc)


def adapter_geometry(
    trained: dict[str, torch.Tensor], options: ImportOptions, report: ImportReport
) -> ForensicsAdapterSpec:
    """The adapter's spec: shapes, then ``--forensics-adapter``, then the paper's defaults; conflicts are errors."""
    source = report.source
    query = _shape(trained, "adapter.query_embed", source)
    width, queries = int(query[2]), int(query[1])
    positions = int(_shape(trained, "adapter.vit_model.pos_embed", source)[1])
    pos_grid = math.isqrt(positions)
    if pos_grid * pos_grid != positions:
        raise ConversionError(f"{source}: adapter.vit_model.pos_embed has {positions} positions, not a square grid")
    mlp_layers = 1 + max((int(m.group(1)) for k in trained if (m := _MLP_LAYER.match(k))), default=-1)
    if mlp_layers == 0:
        raise ConversionError(f"{source}: missing adapter.mask_decoder.query_mlp.layers.*")
    mlp_out = int(_shape(trained, f"adapter.mask_decoder.query_mlp.layers.{mlp_layers - 1}.weight", source)[0])
    attn_out = int(_shape(trained, f"adapter.mask_decoder.attn_mlp.layers.{mlp_layers - 1}.weight", source)[0])
    from_shapes = {
        "width": width,
        "num_queries": queries,
        "pos_grid": pos_grid,
        "patch_size": int(_shape(trained, "adapter.patch_conv.weight", source)[-1]),
        "mlp_ratio": _shape(trained, "adapter.vit_model.blocks.0.mlp.fc1.weight", source)[0] / width,
        "mlp_dim": int(_shape(trained, "adapter.mask_decoder.query_mlp.layers.0.weight", source)[0]),
        "mlp_out_dim": mlp_out,
        "mlp_layers": mlp_layers,
        "bias_heads": attn_out // mlp_out,
        "refine_dim": int(_shape(trained, "rec_attn_clip.clip_intra_blocks.0.conv_first.weight", source)[0]),
    }
    given = _spec_file(options.forensics_adapter)
    conflicts = [f"{k}: file {given[k]} vs tensors {v}" for k, v in from_shapes.items() if k in given and given[k] != v]
    if conflicts:
        raise ConversionError(f"--forensics-adapter {options.forensics_adapter} contradicts {source}: {conflicts}")
    blocks = 1 + max((int(m.group(1)) for k in trained if (m := _VIT_BLOCK.match(k))), default=-1)
    defaults = ForensicsAdapterSpec.model_fields
    depth = given.get("depth", min(defaults["depth"].default, blocks))
    fields = {**given, **from_shapes, "depth": depth}
    try:
        fa = ForensicsAdapterSpec.model_validate(fields)
    except ValueError as e:
        raise ConversionError(f"{source}: forensics_adapter: {e}") from e
    if fa.depth > blocks:
        raise ConversionError(f"{source}: depth {fa.depth} but the checkpoint holds {blocks} adapter ViT blocks")
    unset = [k for k in defaults if k not in fields and k != "type"]
    origin = f"--forensics-adapter {options.forensics_adapter}" if given else "no --forensics-adapter"
    report.note(f"adapter from shapes: {from_shapes}")
    report.note(f"adapter from the paper's setting ({origin}): " + ", ".join(f"{k}={getattr(fa, k)}" for k in unset))
    if given:
        report.note(f"adapter from {origin}: " + ", ".join(f"{k}={getattr(fa, k)}" for k in given))
    return fa


def split_checkpoint(state: dict[str, torch.Tensor], report: ImportReport):
    """(CLIP tower under our names, trained tensors, shared CLIP references, unknown keys); drops the text tower."""
    visual, trained, shared, unknown = {}, {}, {}, []
    for key, value in state.items():
        if key.startswith(CLIP_PREFIX):
            visual["visual." + key[len(CLIP_PREFIX) :]] = value
        elif key.startswith("clip_model."):
            report.drop("CLIP text tower / logit scale")
        elif prefix := next((p for p in SHARED_CLIP if key == p or key.startswith(p)), None):
            shared[SHARED_CLIP[prefix] + key[len(prefix) :]] = (key, value)
        elif key.startswith(UNUSED) or key.endswith(".num_batches_tracked"):
            report.drop("tensors the original's forward never reads")
        elif key.startswith(TRAINED):
            trained[key] = value
        else:
            unknown.append(key)
    return visual, trained, shared, unknown


def import_forensics_adapter(source: Path, options: ImportOptions) -> Converted:
    report = ImportReport("forensics-adapter", str(source))
    state = load_weights_file(source)
    visual, trained, shared, unknown = split_checkpoint(state, report)
    if unknown:
        more = f" ... ({len(unknown)} in all)" if len(unknown) > 12 else ""
        raise ConversionError(f"{source}: keys that are not ForensicsAdapter's: {sorted(unknown)[:12]}{more}")
    for ours, (key, value) in shared.items():
        if ours not in visual:
            visual[ours] = value  # only the reference was saved: it is the tower
        elif visual[ours].shape != value.shape or not torch.equal(visual[ours].to(value.dtype), value):
            raise ConversionError(f"{source}: {key} differs from {CLIP_PREFIX}{ours[len('visual.') :]}")
    if shared:
        report.drop("CLIP tensors saved twice (rec_attn_clip's references, equal)", len(shared))
    if not visual:
        raise ConversionError(f"{source}: no CLIP vision tower ({CLIP_PREFIX}*): not a ForensicsAdapter checkpoint")
    hints = SourceHints(origin="OpenAI CLIP (ForensicsAdapter loads it with clip.load)", act="quick_gelu")
    backbone = resolve_backbone(
        visual, options, hints, report, default_act="quick_gelu", has_proj="visual.proj" in visual
    )
    fa = adapter_geometry(trained, options, report)
    try:
        spec = with_forensics_adapter(DetectorSpec(backbone=backbone), fa)
    except ValueError as e:
        raise ConversionError(f"{source}: the adapter does not fit the CLIP tower: {e}") from e

    from mergekit_clip.detector.forensics_adapter import ForensicsAdapterDetector

    with torch.device("meta"):
        expected = ForensicsAdapterDetector(spec).state_dict()
    unused = [k for k in trained if (m := _VIT_BLOCK.match(k)) and int(m.group(1)) >= fa.depth]
    for k in unused:
        trained.pop(k)
    if unused:
        report.drop("tensors the original's forward never reads", len(unused))
    converted = {**visual, **trained}
    for name, tensor in expected.items():
        if name.startswith(FUSIONS):
            one = name.endswith("proj.0.weight")  # the channel LayerNorm's scale; everything else 0
            converted[name] = torch.ones(tensor.shape) if one else torch.zeros(tensor.shape)
    report.note(
        "adapter.fusions.*: not in the checkpoint (the original draws these projections afresh at every call); "
        "imported as a zero contribution, the expectation of its random term"
    )
    missing = sorted(set(expected) - set(converted))
    if missing:
        shown = [CLIP_PREFIX + k[len("visual.") :] if k.startswith("visual.") else k for k in missing]
        raise ConversionError(f"{source}: missing from the checkpoint: {shown[:12]}{' ...' if len(shown) > 12 else ''}")
    extra = sorted(set(converted) - set(expected))
    if extra:
        raise ConversionError(f"{source}: tensors the detector has no place for: {extra[:12]}")
    if any(v.dtype == torch.float16 for v in visual.values()):
        report.note("the CLIP tower is stored in float16 (the original ran it in half precision); scored in float32")
    return Converted(spec=spec, state=converted, report=report)
