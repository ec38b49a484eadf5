"""``mergekit-clip data``: validate and summarise datasets of every registered format; generate the synthetic benchmark.

    mergekit-clip data synth OUT --preset small --seed 0
    mergekit-clip data validate --json-root OUT/json --data-root OUT/data            # every dataset in the folder
    mergekit-clip data summary Synth-FF Synth-CDF --json-root OUT/json [--data-root OUT/data]   # + mask files
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import click

from mergekit_clip.data.deepfakebench import DatasetError
from mergekit_clip.data.formats import list_datasets
from mergekit_clip.options import (
    CHECK_IMAGES_DEFAULT,
    CheckImages,
    DataOptions,
    choice_option,
    option_for,
    output_folder,
)


def _label_dict(path: Path | None) -> dict[str, int] | None:
    if path is None:
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise click.BadParameter(f"{path}: cannot read a JSON label dict ({e})", param_hint="--label-dict") from e
    if not isinstance(raw, dict) or not all(isinstance(v, int) and v in (0, 1) for v in raw.values()):
        raise click.BadParameter(f"{path}: must map label strings to 0 (real) or 1 (fake)", param_hint="--label-dict")
    from mergekit_clip.detector.labels import canonical_label_dict

    try:  # label strings are matched case-insensitively: two spellings of one name must agree
        canonical_label_dict(raw, str(path))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--label-dict") from e
    return raw


def _datasets(names: tuple[str, ...], json_root: Path) -> list[str]:
    try:
        return list(names) or list_datasets(json_root)
    except DatasetError as e:
        raise click.ClickException(str(e)) from e


_json_root = click.option(
    "--json-root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="folder holding one file per dataset in any registered format (<Name>.json, <Name>.csv)",
)  # fmt: skip
_label = click.option(
    "--label-dict", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="JSON file {label string: 0|1} replacing DeepfakeBench's default label dict",
)  # fmt: skip
# the same flag, type, default and help as every command that reads frames (mergekit_clip.options.DataOptions)
_compression = option_for("compression", DataOptions.model_fields["compression"])
_allow_outside_root = option_for("allow_outside_root", DataOptions.model_fields["allow_outside_root"])
_follow_symlinks = option_for("follow_symlinks", DataOptions.model_fields["follow_symlinks"])


# -h also when the group is invoked on its own first (click caches its help option per command object)
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Datasets (DeepfakeBench JSON, frame lists, any registered format): validate, summarise, synthesise."""


@data.command()
@click.argument("datasets", nargs=-1)
@_json_root
@click.option("--data-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="folder the frame paths are relative to; without it frames are not checked")  # fmt: skip
@_label
@_compression
@choice_option("--check-images", typing.get_args(CheckImages), CHECK_IMAGES_DEFAULT,
               "header = file exists and its image header reads (first/last bytes only); decode = full decode")
@click.option("--overlap-is-error", is_flag=True, help="treat videos shared between train and test as an error")
@_allow_outside_root
@_follow_symlinks
def validate(datasets, json_root, data_root, label_dict, compression, check_images, overlap_is_error,
             allow_outside_root, follow_symlinks) -> None:
    """Report every problem of DATASETS (default: all in --json-root); exit 1 if any error is found."""
    from mergekit_clip.data.validate import format_report, validate_dataset

    labels = _label_dict(label_dict)
    failed = []
    for name in _datasets(datasets, json_root):
        report = validate_dataset(
            name, json_root=json_root, data_root=data_root, label_dict=labels, compression=compression,
            check_images=check_images if data_root is not None else "none", strict=overlap_is_error,
            allow_outside_root=allow_outside_root, follow_symlinks=follow_symlinks,
        )  # fmt: skip
        click.echo(format_report(report))
        if report.errors:
            failed.append(name)
    if failed:
        raise click.ClickException(f"problems found in {', '.join(failed)}")


@data.command()
@click.argument("datasets", nargs=-1)
@_json_root
@click.option("--data-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="folder the frame paths are relative to; with it the masks column counts mask files")  # fmt: skip
@_label
@_compression
@_allow_outside_root
@_follow_symlinks
def summary(datasets, json_root, data_root, label_dict, compression, allow_outside_root, follow_symlinks) -> None:
    """Videos, frames and forgery-mask files per label group and split of DATASETS (default: all in --json-root)."""
    from mergekit_clip.data.validate import format_report, summarize, validate_dataset

    labels = _label_dict(label_dict)
    reports = [
        validate_dataset(n, json_root=json_root, data_root=data_root, label_dict=labels, compression=compression,
                         check_images="none", progress=False, allow_outside_root=allow_outside_root,
                         follow_symlinks=follow_symlinks)
        for n in _datasets(datasets, json_root)
    ]  # fmt: skip
    click.echo(summarize(reports, labels))
    for report in reports:
        if report.errors:  # the table is still useful, but say what is wrong underneath it
            click.echo(format_report(report), err=True)


@data.command()
@output_folder("benchmark folder to write")
@click.option("--preset", type=click.Choice(["small", "full", "pretrain"]), default="small", show_default=True,
              help="pretrain = the generic pre-training corpus, not a detection benchmark")
@click.option("--seed", type=int, default=0, show_default=True, help="seeds every random choice: same seed, same files")
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists")
def synth(out, preset, seed, overwrite) -> None:
    """Write the synthetic DeepfakeBench-format benchmark to OUT (OUT/json, OUT/data, OUT/synth.json)."""
    from mergekit_clip.data.synthetic import synthesize

    try:
        info = synthesize(out, preset, seed, overwrite=overwrite)
    except FileExistsError as e:
        raise click.ClickException(f"{e}; pass --overwrite") from e
    click.echo(f"json root: {info.json_root}\ndata root: {info.data_root}")
    click.echo(f"datasets: {', '.join(info.datasets)} (train on {info.train_dataset})")
