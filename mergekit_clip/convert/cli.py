"""``mergekit-clip import`` and ``mergekit-clip export``.

mergekit-clip import open_clip_pytorch_model.bin --out base/ --from openclip --arch ViT-B-16 --quick-gelu
mergekit-clip import ckpt_best.pth dfb_clip/ --from deepfakebench --hf-config clip-vit-base-patch16/
mergekit-clip import effort.pth effort/ --from effort --arch ViT-L-14 --quick-gelu
mergekit-clip import gend_dir/ gend/ --from hf --head-normalize
mergekit-clip import ckpt_best.pth fa/ --from forensics-adapter [--forensics-adapter fa.yaml]
mergekit-clip export merged/ merged_hf/ --to hf

The output folder is ``--out DIR`` or the last positional argument (``import SRC OUT``), as in every command.
"""

from __future__ import annotations

import typing
from pathlib import Path

import click
from pydantic import ValidationError

from mergekit_clip.convert.base import ImportOptions
from mergekit_clip.options import RegistryChoice, click_options, output_folder


def _importer_names() -> list[str]:
    from mergekit_clip.convert import IMPORTERS  # the importers load torch: only when asked

    return list(IMPORTERS)


def import_options(func: typing.Callable) -> typing.Callable:
    """One option per :class:`ImportOptions` field; unset flags stay ``None`` so the importer sees what was given."""
    return click_options(ImportOptions, default_from_model=False)(func)


def _options(values: dict) -> ImportOptions:
    try:
        return ImportOptions(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        raise click.BadParameter(str(e)) from e


@click.command("import", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@output_folder("detector directory to write")
@click.option(
    "--from",
    "kind",
    required=True,
    type=RegistryChoice(_importer_names),
    help="layout of SOURCE",
)
@import_options
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists")
def import_command(source: Path, out: Path, kind: str, overwrite: bool, **values) -> None:
    """Import SOURCE (weights file or directory) as a detector directory OUT."""
    from mergekit_clip.convert import import_detector

    options = _options(values)
    try:
        report = import_detector(kind, source, out, options, overwrite=overwrite)
    except (ValueError, FileExistsError, OSError) as e:
        raise click.ClickException(str(e)) from e
    for line in report.lines():
        click.echo(line)
    click.echo(f"wrote {out}")


@click.command("export", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@output_folder("folder to write the exported model to")
@click.option("--to", "target", required=True, type=click.Choice(["hf"]), help="output format")
@click.option(
    "--projection/--no-projection",
    default=True,
    help="write CLIPVisionModelWithProjection (default) or CLIPVisionModel",
)
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists")
def export_command(source: Path, out: Path, target: str, projection: bool, overwrite: bool) -> None:
    """Export the detector directory SOURCE to OUT in another format."""
    from mergekit_clip.convert.export_hf import export_hf

    try:
        lines = export_hf(source, out, projection=projection, overwrite=overwrite)
    except (ValueError, FileExistsError, OSError) as e:
        raise click.ClickException(str(e)) from e
    for line in lines:
        click.echo(line)
