"""Linear-probe speed-up of the feature cache, and full fine-tuning throughput, on the synthetic benchmark.

Both probes fit the same head for the same number of epochs on the same frames (decoded once, in memory, for
both: the difference is the frozen backbone's forward pass only):

- recompute: every epoch runs the frozen backbone over every frame, then steps the head (a naive trainer);
- cache, cold: one backbone pass writes the cache, then every epoch steps the head on cached features;
- cache, warm: the cache already exists (the next ingredient of a sweep): read it and step the head.

The three run interleaved for ``--repeats`` rounds (order rotated); seconds and the speed-up over recompute are
median [range] over rounds, wall and process CPU time (see benchmarks/_timing.py).

    python -m benchmarks.linear_probe_cache            # ViT width 128, 4 layers, 64 px, 10 epochs
    python -m benchmarks.linear_probe_cache --quick    # smaller, for a smoke run
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import click
import torch

from benchmarks._timing import REPEATS, Sample, interleaved, measure, speed_ratio, times
from mergekit_clip.data.synthetic import synthesize
from mergekit_clip.data.transforms import build_eval_transform, build_train_transform
from mergekit_clip.detector.io import create_detector
from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec
from mergekit_clip.distributed import DistInfo
from train.config import DataConfig
from train.features import backbone_fingerprint, cached_features
from train.finetune import FinetuneSettings, finetune
from train.frames import TrainFrames, load_records
from train.heldout import detector_loss
from train.metrics_log import MetricsLog
from train.optim import build_optimizer
from train.probe import fit_head


def _recompute_probe(model, dataset: TrainFrames, epochs: int, lr: float, batch_size: int) -> Sample:
    """Seconds for a probe that recomputes the frozen features every epoch."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    optimizer, scheduler = build_optimizer(model.head, lr, 0.0, epochs * len(loader), 0.1, 0.0)
    model.eval()

    def run() -> None:
        for _ in range(epochs):
            for images, labels, _, _ in loader:
                with torch.no_grad():
                    features = model.features(images)
                loss = detector_loss(model.head_logits(features), labels).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()

    return measure(run)[1]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--epochs", default=10, show_default=True)
@click.option("--width", default=128, show_default=True)
@click.option("--layers", default=4, show_default=True)
@click.option("--image-size", default=64, show_default=True)
@click.option("--quick", is_flag=True, help="width 64, 2 layers, 32 px")
@click.option("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy shared CPU)")
@click.option("--repeats", default=REPEATS, show_default=True, help="interleaved rounds (median and range printed)")
def main(epochs: int, width: int, layers: int, image_size: int, quick: bool, threads: int | None, repeats: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    if quick:
        width, layers, image_size = 64, 2, 32
    torch.manual_seed(0)
    spec = DetectorSpec(
        backbone=BackboneSpec(image_size=image_size, patch_size=8, width=width, layers=layers, heads=width // 32,
                              embed_dim=width),
        preprocess=PreprocessSpec(image_size=image_size),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        info = synthesize(Path(tmp) / "synth", preset="small", seed=0)
        data = DataConfig(json_root=info.json_root, data_root=info.data_root, train_dataset=info.train_dataset)
        records = load_records(data, [info.train_dataset], "train")
        eval_set = TrainFrames(records, build_eval_transform(spec.preprocess), image_size, augment=False)
        n = len(records)
        print(f"{n} frames of {info.train_dataset}/train, ViT width {width}, {layers} layers, {image_size} px, "
              f"{epochs} probe epochs, {torch.get_num_threads()} threads")  # fmt: skip
        batch = 64

        model = create_detector(spec, seed=0)
        key = backbone_fingerprint(model)
        caches = iter(range(10**6))

        def cached_run(cache: Path, expect_hit: bool) -> Sample:
            m = create_detector(spec, seed=0)

            def run() -> bool:
                feats, labels, ok, hit = cached_features(m, eval_set, backbone_key=key, cache_dir=cache,
                                                         batch_size=batch, device=torch.device("cpu"),
                                                         info=DistInfo())  # fmt: skip
                fit_head(m, feats, labels, ok, epochs=epochs, lr=1e-3, weight_decay=0.0, batch_size=batch, seed=0)
                return hit

            hit, sample = measure(run)
            assert hit == expect_hit
            return sample

        warm_cache = Path(tmp) / "warm"
        cached_run(warm_cache, False)  # built once: every warm run reuses it
        samples = interleaved({
            "recompute": lambda: _recompute_probe(create_detector(spec, seed=0), eval_set, epochs, 1e-3, batch),
            "cold": lambda: cached_run(Path(tmp) / f"cold{next(caches)}", False),
            "warm": lambda: cached_run(warm_cache, True),
        }, repeats)  # fmt: skip
        labels = {"recompute": "recompute features every epoch", "cold": "feature cache (cold, builds it)",
                  "warm": "feature cache (warm, reuses it)"}  # fmt: skip
        print(f"{repeats} interleaved rounds, median [range]; speed-up over recompute of the same round")
        for name, xs in samples.items():
            seconds = times(xs, "wall").text(".2f", " s")
            wall = speed_ratio(xs, samples["recompute"], "wall").ratio_text()
            cpu = speed_ratio(xs, samples["recompute"], "cpu").ratio_text()
            print(f"linear probe, {labels[name]:<31} {seconds:>24}   speed-up wall {wall}  CPU {cpu}")

        ft_model = create_detector(spec, seed=0)
        train_set = TrainFrames(records, build_train_transform(spec.preprocess, 1.0), image_size, seed=0)
        settings = FinetuneSettings(epochs=1, lr=1e-4, weight_decay=0.05, batch_size=32, grad_accum_steps=1,
                                    warmup_fraction=0.1, min_lr_ratio=0.0, grad_clip=1.0, seed=0)  # fmt: skip
        stats = finetune(ft_model, train_set, settings, run_dir=Path(tmp), device=torch.device("cpu"),
                         info=DistInfo(), log=MetricsLog(None), name="bench")  # fmt: skip
        steps = math.ceil(n / 32)
        print(f"full fine-tuning: {stats['images_per_s']:8.1f} images/s (batch 32, {steps} steps, augmentation on)")


if __name__ == "__main__":
    main()
