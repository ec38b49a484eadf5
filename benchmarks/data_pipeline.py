"""Throughput of the training image pipeline: decoded + augmented + CLIP-resized images per second.

    python benchmarks/data_pipeline.py [--image-size 224] [--frames 256] [--workers 0 2]

Generates the small synthetic benchmark in a temp dir, then times full passes of a DataLoader over the train
frames of its train dataset: decode only (eval transform, the baseline), decode + DeepfakeBench-like
augmentation, and the same with each frame's forgery mask read and moved with it (``FrameDataset(masks=True)``, what
the ForensicsAdapter mode reads), for each worker count. Ratios are against the 0-worker eval baseline of the same
run.
"""

from __future__ import annotations

import json
import tempfile
import time

import click

from mergekit_clip.data.formats import load_frames
from mergekit_clip.data.synthetic import synthesize
from mergekit_clip.data.transforms import FrameDataset, build_eval_transform, build_train_transform, make_loader
from mergekit_clip.detector.spec import PreprocessSpec


def _rate(dataset: FrameDataset, workers: int, batch_size: int) -> float:
    loader = make_loader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True)
    start = time.perf_counter()
    n = sum(len(batch[0]) for batch in loader)
    return n / (time.perf_counter() - start)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--image-size", default=224, type=int, help="CLIP input side, pixels")
@click.option("--frames", default=256, type=int, help="frames per pass (train frames repeated as needed)")
@click.option("--workers", "workers_list", default=(0, 2), multiple=True, type=int)
@click.option("--batch-size", default=32, type=int)
def main(image_size: int, frames: int, workers_list: tuple[int, ...], batch_size: int) -> None:
    pre = PreprocessSpec(image_size=image_size)
    with tempfile.TemporaryDirectory() as tmp:
        info = synthesize(f"{tmp}/synth", "small", 0)
        records = load_frames(info.train_dataset, "train", json_root=info.json_root, data_root=info.data_root)
        records = (records * (frames // len(records) + 1))[:frames]
        baseline = None
        _rate(FrameDataset(records[:batch_size], build_train_transform(pre, seed=0)), 0, batch_size)  # warm-up
        for workers in workers_list:
            pipelines = (
                ("decode", build_eval_transform(pre), False),
                ("decode+augment", build_train_transform(pre, seed=0), False),
                ("decode+augment+mask", build_train_transform(pre, seed=0), True),
            )
            for name, transform, masks in pipelines:
                rate = _rate(FrameDataset(records, transform, masks=masks), workers, batch_size)
                baseline = baseline or rate
                print(json.dumps({"pipeline": name, "workers": workers, "image_size": image_size,
                                  "source_px": info.image_size, "images_per_s": round(rate, 1),
                                  "ratio_vs_decode_w0": round(rate / baseline, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
