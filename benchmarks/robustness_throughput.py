"""clip-eval images/s under a perturbation suite vs clean evaluation of the same frames, same run.

    python benchmarks/robustness_throughput.py                       # ViT-B/16 geometry, deeperforensics suite
    python benchmarks/robustness_throughput.py --arch tiny --suite gend   # decode-bound: the worst case
    python benchmarks/robustness_throughput.py --device cuda --precision bf16 --videos 16 --frames 16

Both sides are ``eval.predict.Predictor`` as ``clip-eval score`` runs it (OpenCV decode in DataLoader workers,
exact resize, device-side normalisation), with the frame cache off so every pass decodes its frames; the
perturbations run inside the same workers, after decoding and before the resize. Frames are 256 x 256 PNG face
crops (DeepfakeBench's usual size), ``--videos`` x ``--frames`` of them, so H.264 encodes real sequences.
Each perturbed pass is paired with a clean pass of the same frames just before it (load on a shared machine
drifts); prints images/s of clean evaluation (the baseline), of every perturbation type (all its levels) and of the
whole suite, each with its ratio to the paired clean passes (target: suite >= 0.8x).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from eval.predict import FrameCache, Predictor
from mergekit_clip.data.perturbations import SUITES, expand_perturbations
from mergekit_clip.detector.io import create_detector
from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec

ARCHES = {
    "ViT-B-16": BackboneSpec(),
    "small": BackboneSpec(image_size=224, patch_size=16, width=256, layers=4, heads=4, embed_dim=128),
    "tiny": BackboneSpec(image_size=64, patch_size=16, width=64, layers=2, heads=4, embed_dim=32),
}


def make_videos(folder: Path, videos: int, frames: int, side: int = 256) -> list[SimpleNamespace]:
    """Smooth textured frames drifting a pixel per frame (compress like video, not like noise)."""
    rng = np.random.default_rng(0)
    records = []
    for v in range(videos):
        small = rng.integers(0, 255, (side // 16 + 2, side // 16 + 2, 3), dtype=np.uint8)
        base = cv2.resize(small, (side + 32, side + 32), interpolation=cv2.INTER_CUBIC)
        (folder / f"{v:03d}").mkdir(parents=True)
        for f in range(frames):
            img = base[f : f + side, f : f + side]
            img = np.clip(img.astype(np.int16) + rng.integers(-6, 6, img.shape), 0, 255).astype(np.uint8)
            path = folder / f"{v:03d}" / f"{f}.png"
            cv2.imwrite(str(path), img)
            records.append(SimpleNamespace(path=path, label=v % 2, video_id=f"{v:03d}", dataset="bench"))
    return records


def timed(predictor: Predictor, model, records, perturbation=None) -> float:
    start = time.perf_counter()
    pred = predictor.predict(model, records, "bench", "bench", perturbation)
    elapsed = time.perf_counter() - start
    if not pred.ok.all():
        raise RuntimeError(f"{int((~pred.ok).sum())} frames failed under {perturbation}")
    return len(records) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=list(ARCHES), default="ViT-B-16")
    parser.add_argument("--suite", choices=list(SUITES), default="deeperforensics")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8, help="frames per video")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="as clip-eval's --precision")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decode workers (clip-eval's default)")
    args = parser.parse_args()

    torch.manual_seed(0)
    backbone = ARCHES[args.arch]
    spec = DetectorSpec(backbone=backbone, preprocess=PreprocessSpec(image_size=backbone.image_size))
    model = create_detector(spec, seed=0)
    predictor = Predictor(
        args.device, args.precision == "bf16", args.batch_size, args.workers, FrameCache(0), progress=False,
        perturb_seed=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        records = make_videos(Path(tmp), args.videos, args.frames)
        timed(predictor, model, records[: args.batch_size])  # warm-up: weights to device, kernels, worker start
        print(
            f"device {args.device} ({predictor.dtype_name}), arch {args.arch}, {len(records)} frames "
            f"({args.videos} videos), workers {predictor.num_workers}, torch threads {torch.get_num_threads()}"
        )
        # every perturbed pass is paired with a clean pass just before it, so load drifting on a shared machine
        # hits both sides alike; ratios are total clean time / total perturbed time per type
        perturbations = expand_perturbations([args.suite])
        clean_s: dict[str, float] = {}
        perturbed_s: dict[str, float] = {}
        for p in perturbations:
            clean_s[p.name] = clean_s.get(p.name, 0.0) + len(records) / timed(predictor, model, records)
            perturbed_s[p.name] = perturbed_s.get(p.name, 0.0) + len(records) / timed(predictor, model, records, p)
        frames_per_type = {n: sum(p.name == n for p in perturbations) * len(records) for n in clean_s}
        clean = sum(frames_per_type.values()) / sum(clean_s.values())
        print(f"{'clean (baseline)':<22} {clean:8.1f} img/s  1.00x")
        for name in clean_s:
            rate = frames_per_type[name] / perturbed_s[name]
            print(f"{name:<22} {rate:8.1f} img/s  {clean_s[name] / perturbed_s[name]:.2f}x")
        total = sum(frames_per_type.values()) / sum(perturbed_s.values())
        ratio = sum(clean_s.values()) / sum(perturbed_s.values())
        print(f"{'suite ' + args.suite:<22} {total:8.1f} img/s  {ratio:.2f}x  (target >= 0.80x)")


if __name__ == "__main__":
    main()
