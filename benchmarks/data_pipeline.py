"""Throughput of the training image pipeline: decoded + augmented + CLIP-resized images per second.

    python -m benchmarks.data_pipeline [--image-size 224] [--frames 256] [--workers 0 2] [--repeats 5]

Generates the small synthetic benchmark in a temp dir, then times full passes of a DataLoader over the train
frames of its train dataset: decode only (eval transform, the baseline), decode + DeepfakeBench-like
augmentation, and the same with each frame's forgery mask read and moved with it (``FrameDataset(masks=True)``, what
the ForensicsAdapter mode reads), for each worker count. Every (pipeline, workers) pass runs once per round,
interleaved, for ``--repeats`` rounds; images/s and the speed ratio to the 0-worker decode pass of the same round are
median [range] over rounds, beside the same ratio of CPU time (this process plus its finished loader workers; see
benchmarks/_timing.py).
"""

from __future__ import annotations

import json
import tempfile

import click

from benchmarks._timing import REPEATS, Sample, interleaved, measure, speed_ratio, times
from mergekit_clip.data.formats import load_frames
from mergekit_clip.data.synthetic import synthesize
from mergekit_clip.data.transforms import FrameDataset, build_eval_transform, build_train_transform, make_loader
from mergekit_clip.detector.spec import PreprocessSpec


def _pass(dataset: FrameDataset, workers: int, batch_size: int) -> Sample:
    """Seconds per image of one full pass (wall, and CPU including the loader workers, which end with the pass)."""
    loader = make_loader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True)
    n, sample = measure(lambda: sum(len(batch[0]) for batch in loader))
    return sample.per(n)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--image-size", default=224, type=int, help="CLIP input side, pixels")
@click.option("--frames", default=256, type=int, help="frames per pass (train frames repeated as needed)")
@click.option("--workers", "workers_list", default=(0, 2), multiple=True, type=int)
@click.option("--batch-size", default=32, type=int)
@click.option("--repeats", default=REPEATS, show_default=True, help="interleaved rounds (median and range printed)")
def main(image_size: int, frames: int, workers_list: tuple[int, ...], batch_size: int, repeats: int) -> None:
    pre = PreprocessSpec(image_size=image_size)
    with tempfile.TemporaryDirectory() as tmp:
        info = synthesize(f"{tmp}/synth", "small", 0)
        records = load_frames(info.train_dataset, "train", json_root=info.json_root, data_root=info.data_root)
        records = (records * (frames // len(records) + 1))[:frames]
        _pass(FrameDataset(records[:batch_size], build_train_transform(pre, seed=0)), 0, batch_size)  # warm-up
        pipelines = (
            ("decode", lambda: build_eval_transform(pre), False),
            ("decode+augment", lambda: build_train_transform(pre, seed=0), False),
            ("decode+augment+mask", lambda: build_train_transform(pre, seed=0), True),
        )
        cases = {}
        for workers in workers_list:
            for name, transform, masks in pipelines:
                dataset = FrameDataset(records, transform(), masks=masks)
                cases[name, workers] = lambda d=dataset, w=workers: _pass(d, w, batch_size)
        samples = interleaved(cases, repeats)
        baseline = samples[next(iter(cases))]
        for (name, workers), xs in samples.items():
            rate = times([Sample(1 / x.wall, 1 / x.cpu) for x in xs], "wall")
            wall, cpu = speed_ratio(xs, baseline, "wall"), speed_ratio(xs, baseline, "cpu")
            print(json.dumps({"pipeline": name, "workers": workers, "image_size": image_size,
                              "source_px": info.image_size, "rounds": repeats,
                              "images_per_s": rate.rounded(1), "speed_vs_first_wall": wall.rounded(),
                              "speed_vs_first_cpu": cpu.rounded()}))  # fmt: skip


if __name__ == "__main__":
    main()
