"""``mergekit-clip create``: a detector directory from an open_clip architecture name.

Random weights (seeded) for tests and experiments, or a local pretrained weights file (whole CLIP or visual
tower; OpenAI weights need ``--quick-gelu``). ``--no-head`` writes a bare backbone, as a merge base.
"""

from __future__ import annotations

from pathlib import Path

import click

from mergekit_clip.detector.io import DetectorFormatError, create_detector, load_pretrained_backbone, save_detector
from mergekit_clip.detector.spec import HeadSpec, spec_from_open_clip
from mergekit_clip.options import output_folder


@click.command("create", context_settings={"help_option_names": ["-h", "--help"]})
@output_folder("detector directory to write")
@click.option("--arch", required=True, help="open_clip architecture name, e.g. ViT-B-16 or ViT-L-14")
@click.option("--pretrained", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="local weights file")
@click.option("--quick-gelu/--no-quick-gelu", default=None, help="QuickGELU activation (OpenAI weights need it)")
@click.option("--image-size", type=int, help="override the architecture's input size")
@click.option("--head-feature", type=click.Choice(["pooled", "projected", "patch_mean"]), default="pooled")
@click.option("--no-head", is_flag=True, help="write a bare backbone (a merge base) without a forensic head")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the random initialisation")
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists")
def create_command(out, arch, pretrained, quick_gelu, image_size, head_feature, no_head, seed, overwrite) -> None:
    """Create a CLIP detector directory OUT."""
    try:
        head = HeadSpec(feature=head_feature)
        spec = spec_from_open_clip(arch, quick_gelu=quick_gelu, image_size=image_size, head=head)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--arch") from e
    if no_head:
        spec = spec.model_copy(update={"head": None})
    model = create_detector(spec, seed=seed)
    provenance = {"arch": arch, "seed": seed, "pretrained": str(pretrained.absolute()) if pretrained else None}
    if pretrained is not None:
        try:
            loaded = load_pretrained_backbone(model, pretrained)
        except DetectorFormatError as e:
            raise click.ClickException(str(e)) from e
        click.echo(f"loaded {len(loaded)} visual tensors from {pretrained}")
    try:
        save_detector(model, out, provenance=provenance, overwrite=overwrite)
    except FileExistsError as e:
        raise click.ClickException(f"{out} already exists; pass --overwrite to replace it") from e
    head = "no head" if no_head else f"head on {head_feature} features"
    click.echo(f"wrote {out} ({arch}, {spec.backbone.act}, {head})")
