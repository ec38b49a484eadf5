"""Images per second of clip-eval's predictor vs a plain PyTorch loop, same model and frames, same run.

    python -m benchmarks.eval_throughput --arch ViT-B-16 --frames 96
    python -m benchmarks.eval_throughput --arch tiny --frames 512

Baseline (what a script would do): PIL decode, shortest-side bicubic resize + centre crop, ToTensor/normalise
per image, batch 32, fp32 forward under ``torch.no_grad``. clip-eval: ``eval.predict.Predictor`` as the CLI runs
it (OpenCV decode in workers, device-side normalisation, inference_mode), with the default exact resize and
``--resize fast`` (OpenCV INTER_AREA, uint8 batches), in fp32 and with ``--precision bf16`` (bf16 weights on CPU);
each line prints the largest |P(fake) difference| against a reference. The four run interleaved for ``--repeats``
rounds (order rotated); images/s and the speed ratio to the plain loop of the same round are median [range] over
rounds, wall and process CPU time (plus finished decode workers; see benchmarks/_timing.py).
Frames are written as 256 x 256 PNG face-crop-sized images (DeepfakeBench's usual frame size).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from benchmarks._timing import REPEATS, Sample, interleaved, measure, speed_ratio, times
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16", help="open_clip ViT name, or 'tiny' (width 64, 2 layers)")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved rounds (median and range printed)")
    args = parser.parse_args()
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
        exact = Predictor(batch_size=32, num_workers=args.workers, progress=False)
        fast = Predictor(batch_size=32, num_workers=args.workers, progress=False, resize="fast")
        bf16 = Predictor(batch_size=32, num_workers=args.workers, bf16=True, progress=False)
        model16 = copy.deepcopy(model)
        runs = {
            "plain loop (PIL, fp32, batch 32)": lambda: plain_loop(model, paths, spec.preprocess),
            "clip-eval fp32 (--resize exact)": lambda: exact.score_paths(model, paths)[0],
            "clip-eval fp32 (--resize fast)": lambda: fast.score_paths(model, paths)[0],
            f"clip-eval --precision bf16 ({bf16.dtype_name})": lambda: bf16.score_paths(model16, paths)[0],
        }
        probs: dict[str, np.ndarray] = {}

        def case(name: str):
            def run() -> Sample:
                probs[name], sample = measure(runs[name])
                return sample.per(len(paths))

            return run

        samples = interleaved({name: case(name) for name in runs}, args.repeats)
        names = list(runs)
        base = samples[names[0]]
        checks = {names[1]: ("plain", names[0]), names[2]: ("exact", names[1]), names[3]: ("fp32", names[1])}
        print(f"{args.repeats} interleaved rounds; images/s and speed against the plain loop of the same round, "
              "median [range]")  # fmt: skip
        for name, xs in samples.items():
            rate = times([Sample(1 / x.wall, 1 / x.cpu) for x in xs], "wall").text(".1f")
            wall, cpu = speed_ratio(xs, base, "wall"), speed_ratio(xs, base, "cpu")
            check = ""
            if name in checks:
                label, ref = checks[name]
                check = f"  max|dp| vs {label} {np.abs(probs[name] - probs[ref]).max():.2e}"
            print(f"{name:<42} {rate:>22} img/s  wall {wall.ratio_text()}  CPU {cpu.ratio_text()}{check}")


if __name__ == "__main__":
    main()
