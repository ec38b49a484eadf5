"""Load a detector and its frames, collect statistics, write the stats file (the body of ``mergekit-clip stats``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import torch

from mergekit_clip.data.deepfakebench import DatasetError
from mergekit_clip.data.formats import dataset_identity, load_frames
from mergekit_clip.data.transforms import FrameDataset, build_eval_transform, make_loader
from mergekit_clip.detector.io import DetectorFormatError, load_detector, model_layout, read_config_json, weights_hash
from mergekit_clip.detector.spec import ARCHITECTURE, PreprocessSpec
from mergekit_clip.stats.collect import collect_fisher, collect_grams
from mergekit_clip.stats.store import write_stats


def compute_stats(
    detector_dir: str | os.PathLike,
    kind: str,
    *,
    dataset: str,
    split: str,
    json_root: str | os.PathLike,
    data_root: str | os.PathLike,
    frame_num: int | None = None,
    compression: str = "c23",
    allow_outside_root: bool = False,
    follow_symlinks: bool = True,
    max_frames: int | None = None,
    batch_size: int = 32,
    workers: int = 0,
    fisher_label: str = "predicted",
    device: str = "cpu",
) -> tuple[Path, int]:
    """Compute and store ``kind`` statistics; returns ``(stats file, frames used)``. Errors are ClickExceptions."""
    try:
        if model_layout(read_config_json(detector_dir)) != ARCHITECTURE:
            raise click.ClickException(
                f"{detector_dir}: merge statistics are keyed by mergekit-clip tensor names; import this Hugging Face "
                "layout first (`mergekit-clip import`) and merge the imported detectors"
            )
        digest = weights_hash(detector_dir)
        model = load_detector(detector_dir, device=device)
        records = load_frames(dataset, split, json_root=json_root, data_root=data_root, frame_num=frame_num,
                              compression=compression, allow_outside_root=allow_outside_root,
                              follow_symlinks=follow_symlinks)  # fmt: skip
        dataset_digest = dataset_identity(dataset, json_root).digest
    except (DetectorFormatError, DatasetError) as e:
        raise click.ClickException(str(e)) from e
    if max_frames is not None:
        records = records[:max_frames]
    loader = make_loader(FrameDataset(records, build_eval_transform(model.spec.preprocess)), batch_size=batch_size,
                         num_workers=workers)  # fmt: skip
    if kind == "gram":
        tensors, extra, frames = collect_grams(model, (images for images, *_ in loader), device)
    else:
        with torch.enable_grad():
            tensors, frames = collect_fisher(model, ((im, lab) for im, lab, *_ in loader), device, fisher_label)
        extra = {}
    metadata = stats_metadata(dataset=dataset, split=split, frame_num=frame_num, compression=compression,
                              max_frames=max_frames, weights_sha256=digest, preprocess=model.spec.preprocess,
                              fisher_label=fisher_label if kind == "fisher" else None,
                              dataset_sha256=dataset_digest)  # fmt: skip
    return write_stats(detector_dir, kind, tensors, {**metadata, "frames": str(frames), **extra}), frames


def stats_metadata(
    *,
    dataset: str,
    split: str,
    frame_num: int | None,
    compression: str,
    max_frames: int | None,
    weights_sha256: str,
    preprocess: PreprocessSpec,
    fisher_label: str | None = None,
    dataset_sha256: str,
) -> dict[str, str]:
    """The string metadata that says what a statistics file was computed from: the one spelling both the writer
    and a freshness check (the study's) use, so a change of any input (frames, preprocessing, label rule) is seen."""
    meta = {
        "dataset": dataset,
        "dataset_sha256": dataset_sha256,
        "split": split,
        "frame_num": str(frame_num) if frame_num else "all",
        "compression": compression,
        "max_frames": str(max_frames) if max_frames else "all",
        "weights_sha256": weights_sha256,
        "preprocess": json.dumps(preprocess.model_dump(mode="json"), sort_keys=True),
    }
    if fisher_label is not None:
        meta["fisher_label"] = fisher_label
    return meta
