"""``mergekit-clip stats``: compute an ingredient's merge statistics (Grams for RegMean, Fisher for Fisher merging)
on frames of a DeepfakeBench-format split and store them beside it (``DIR/merge_stats/<kind>.safetensors``).

    mergekit-clip stats runs/family/ingredients/ft_s0 --kind gram --dataset FaceForensics++ --split train \\
        --json-root datasets/json --data-root datasets --frame-num 8 --device cuda
"""

from __future__ import annotations

import click

from mergekit_clip.stats.store import KINDS


@click.command("stats")
@click.argument("detector_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--kind", type=click.Choice(KINDS), required=True, help="gram (RegMean) or fisher (Fisher merging)")
@click.option("--dataset", required=True, help="dataset name: <json-root>/<NAME>.json")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True)
@click.option("--json-root", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--data-root", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--frame-num", type=click.IntRange(min=1), default=None, help="frames per video, evenly spaced [all]")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="cap on frames in total [no cap]")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--fisher-label",
    type=click.Choice(["predicted", "true"]),
    default="predicted",
    show_default=True,
    help="label whose log-likelihood gradient the Fisher squares: the model's own prediction or the frame's label",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N")
def stats_command(
    detector_dir, kind, dataset, split, json_root, data_root, frame_num, max_frames, batch_size, fisher_label, device
) -> None:
    """Compute KIND statistics of the detector DETECTOR_DIR on frames of DATASET/SPLIT and store them beside it."""
    from mergekit_clip.stats.compute import compute_stats

    path, frames = compute_stats(
        detector_dir,
        kind,
        dataset=dataset,
        split=split,
        json_root=json_root,
        data_root=data_root,
        frame_num=frame_num,
        max_frames=max_frames,
        batch_size=batch_size,
        fisher_label=fisher_label,
        device=device,
    )
    click.echo(f"{kind} statistics of {detector_dir} on {frames} frames of {dataset}/{split}: {path}")
