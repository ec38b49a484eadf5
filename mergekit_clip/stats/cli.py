"""``mergekit-clip stats``: compute an ingredient's merge statistics (Grams for RegMean, Fisher for Fisher merging)
on frames of a DeepfakeBench-format split and store them beside it (``DIR/merge_stats/<kind>.safetensors``).

    mergekit-clip stats runs/family/ingredients/ft_s0 --kind gram --dataset FaceForensics++ --split train \\
        --json-root datasets/json --data-root datasets --frame-num 8 --device auto
"""

from __future__ import annotations

import click

from mergekit_clip.options import (
    DataOptions,
    RunOptions,
    choice_option,
    click_options,
    option_for,
    options_from,
    resolve_device,
    resolve_workers,
)
from mergekit_clip.stats.store import KINDS

_RUN = RunOptions.model_fields


@click.command("stats", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("detector_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--kind", type=click.Choice(KINDS), required=True, help="gram (RegMean) or fisher (Fisher merging)")
@click.option("--dataset", required=True, help="dataset name: <json-root>/<NAME>.json")
@choice_option("--split", ["train", "val", "test"], "train", "split of --dataset the statistics are computed on")
@click_options(DataOptions)
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="cap on frames in total [no cap]")
@option_for("batch_size", _RUN["batch_size"])
@option_for("workers", _RUN["workers"])
@choice_option(
    "--fisher-label",
    ["predicted", "true"],
    "predicted",
    "label whose log-likelihood gradient the Fisher squares: the model's own prediction or the frame's label",
)
@option_for("device", _RUN["device"])
def stats_command(detector_dir, kind, dataset, split, max_frames, fisher_label, **options) -> None:
    """Compute KIND statistics of the detector DETECTOR_DIR on frames of DATASET/SPLIT and store them beside it.

    The statistics belong to the detector (DETECTOR_DIR/merge_stats/, where the regmean/fisher methods read
    them), so this command takes no output folder."""
    from mergekit_clip.stats.compute import compute_stats

    data = options_from(DataOptions, options)
    run = options_from(RunOptions, {k: v for k, v in options.items() if k in ("batch_size", "workers", "device")})
    path, frames = compute_stats(
        detector_dir,
        kind,
        dataset=dataset,
        split=split,
        json_root=data.json_root,
        data_root=data.data_root,
        frame_num=data.frame_num,
        compression=data.compression,
        allow_outside_root=data.allow_outside_root,
        follow_symlinks=data.follow_symlinks,
        max_frames=max_frames,
        batch_size=run.batch_size,
        workers=resolve_workers(run.workers),
        fisher_label=fisher_label,
        device=resolve_device(run.device),
    )
    click.echo(f"{kind} statistics of {detector_dir} on {frames} frames of {dataset}/{split}: {path}")
