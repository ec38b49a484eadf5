"""Images per second of clip-eval's predictor vs a plain PyTorch loop, same model and frames, same run.

    python benchmarks/eval_throughput.py --arch ViT-B-16 --frames 96
    python benchmarks/eval_throughput.py --arch tiny --frames 512

Baseline (what a script would do): PIL decode, shortest-side bicubic resize + centre crop, ToTensor/normalise
per image, batch 32, fp32 forward under ``torch.no_grad``. clip-eval: ``eval.predict.Predictor`` as the CLI runs
it (OpenCV decode in workers, device-side normalisation, inference_mode), with the default exact resize and
``--resize fast`` (OpenCV INTER_AREA, uint8 batches), in fp32 and with ``--precision bf16`` (bf16 weights on CPU);
each line prints the largest |P(fake) difference| against a reference.
Frames are written as 256 x 256 PNG face-crop-sized images (DeepfakeBench's usual frame size).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from eval.predict import Predictor
from mergekit_clip.detector.io import create_detector
from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec, spec_from_open_clip


def make_frames(folder: Path, n: int, side: int = 256) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 255, (side // 16, side // 16, 3), dtype=np.uint8)
        img = cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC)  # smooth, compresses like a photo
        img = np.clip(img.astype(np.int16) + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i}.png"
        cv2.imwrite(str(path), img)
        paths.append(str(path))
    return paths


def plain_loop(model, paths: list[str], spec: PreprocessSpec, batch: int = 32) -> np.ndarray:
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), batch):
            images = []
            for p in paths[start : start + batch]:
                img = Image.open(p).convert("RGB")
                w, h = img.size
                scale = spec.image_size / min(w, h)
                img = img.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
                left, top = (img.width - spec.image_size) // 2, (img.height - spec.image_size) // 2
                img = img.crop((left, top, left + spec.image_size, top + spec.image_size))
                x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
                images.append((x - mean) / std)
            out.append(torch.softmax(model(torch.stack(images)), -1)[:, 1])
    return torch.cat(out).numpy()


REPEATS = 3  # best of: the machine is shared, so take each method's least-disturbed run


def timed(fn, n: int) -> tuple[float, object]:
    best, result = 0.0, None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        result = fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16", help="open_clip ViT name, or 'tiny' (width 64, 2 layers)")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="best of N runs per method")
    args = parser.parse_args()
    globals()["REPEATS"] = args.repeats
    if args.arch == "tiny":
        spec = DetectorSpec(
            backbone=BackboneSpec(image_size=224, patch_size=32, width=64, layers=2, heads=4, embed_dim=32),
            preprocess=PreprocessSpec(image_size=224),
        )
    else:
        spec = spec_from_open_clip(args.arch)
    model = create_detector(spec, seed=0).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, arch {args.arch}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_frames(Path(tmp), args.frames)
        plain_loop(model, paths[:8], spec.preprocess)  # warm-up (allocator, kernels)
        base_ips, base = timed(lambda: plain_loop(model, paths, spec.preprocess), len(paths))
        print(f"plain loop (PIL, fp32, batch 32):     {base_ips:8.1f} img/s")
        exact = Predictor(batch_size=32, num_workers=args.workers, progress=False)
        ips, fp32 = timed(lambda: exact.score_paths(model, paths)[0], len(paths))
        print(f"clip-eval fp32 (--resize exact):      {ips:8.1f} img/s  x{ips / base_ips:.2f}  "
              f"max|dp| vs plain {np.abs(fp32 - base).max():.2e}")  # fmt: skip
        fast = Predictor(batch_size=32, num_workers=args.workers, progress=False, resize="fast")
        ips, pfast = timed(lambda: fast.score_paths(model, paths)[0], len(paths))
        print(f"clip-eval fp32 (--resize fast):       {ips:8.1f} img/s  x{ips / base_ips:.2f}  "
              f"max|dp| vs exact {np.abs(pfast - fp32).max():.2e}")  # fmt: skip
        bf16 = Predictor(batch_size=32, num_workers=args.workers, bf16=True, progress=False)
        model16 = copy.deepcopy(model)
        ips16, p16 = timed(lambda: bf16.score_paths(model16, paths)[0], len(paths))
        print(f"clip-eval --precision bf16 ({bf16.dtype_name}, batch 32): {ips16:8.1f} img/s  x{ips16 / base_ips:.2f}  "
              f"max|dp| vs fp32 {np.abs(p16 - fp32).max():.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
