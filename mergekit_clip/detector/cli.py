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
@click.option("--head-feature", type=click.Choice(["pooled", "projected", "patch_mean"]), default="pooled",
              show_default=True, help="what the head reads: the pooled token, its projection, or the patch mean")
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


@click.command("card", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("detector", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--scores", "scores_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="clip-eval report.json or clip-study study.json whose scores of this detector go on the card")
@click.option("--model", default=None, help="the detector's name in the scores file (default: the folder's name)")
@click.option("--print", "print_only", is_flag=True, help="print the card, do not write DETECTOR/README.md")
def card_command(detector: Path, scores_file: Path | None, model: str | None, print_only: bool) -> None:
    """(Re)write DETECTOR's model card (README.md, Hugging Face format), with scores from a report or study."""
    from mergekit_clip.detector.card import CARD_NAME, card_provenance, card_text, scores_from_file
    from mergekit_clip.detector.io import detector_spec, read_config_json
    from mergekit_clip.detector.spec import MODEL_TYPE
    from mergekit_clip.outputs import write_text_atomic

    try:
        spec = detector_spec(detector)
        cfg = read_config_json(detector)
        scores = scores_from_file(scores_file, model or detector.name) if scores_file else []
    except (DetectorFormatError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    provenance = card_provenance(cfg)
    recipe = detector / "mergekit_config.yml"
    hf = cfg.get("model_type") != MODEL_TYPE
    text = card_text(spec, provenance, scores=scores, recipe=recipe.read_text() if recipe.is_file() else None, hf=hf)
    if print_only:
        click.echo(text)
        return
    write_text_atomic(detector / CARD_NAME, text)
    click.echo(f"wrote {detector / CARD_NAME} ({len(scores)} score(s) from {scores_file or 'the provenance'})")
