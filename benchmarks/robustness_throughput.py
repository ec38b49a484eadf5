"""clip-eval images/s under a perturbation suite vs clean evaluation of the same frames, same run, per model.

    python -m benchmarks.robustness_throughput                 # tiny (decode-bound) and width-256 ViT, deeperforensics
    python -m benchmarks.robustness_throughput --arch tiny --suite gend --per-type --separate
    python -m benchmarks.robustness_throughput --arch ViT-B-16 --device cuda --precision bf16 --videos 16 --frames 16

Both sides run as ``clip-eval score`` runs them: clean frames through ``eval.predict.Predictor.predict``, the suite
through ``eval.robustness.predict_perturbed`` (every frame decoded once for all the suite's perturbations, in the
DataLoader workers, after decoding and before the model's resize); OpenCV decode, exact resize, device-side
normalisation, the frame cache off so every pass decodes its frames. Frames are 256 x 256 PNG face crops
(DeepfakeBench's usual size), ``--videos`` x ``--frames`` of them, so H.264 encodes real sequences.

The load of a shared machine drifts, so every pass (clean, the suite, and with ``--per-type``/``--separate`` the
others) runs once per round, interleaved, for ``--repeats`` rounds (order rotated); images/s and the speed ratio to
the clean pass of the same round are median [range] over rounds, wall and process CPU time (this process plus its
finished decode workers; see benchmarks/_timing.py); the load average is printed next to the figures.
``--per-type``: one pass per perturbation type (its levels); ``--separate``: also the naive way, one pass per
perturbation each decoding its frames (what clip-eval did before). Target: suite >= 0.8x.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from benchmarks._device import DEVICES
from benchmarks._device import resolve as resolve_device
from benchmarks._timing import REPEATS, Sample, interleaved, measure, speed_ratio, times
from eval.predict import FrameCache, Predictor
from eval.robustness import predict_perturbed
from mergekit_clip.data.perturbations import SUITES, expand_perturbations
from mergekit_clip.detector.io import create_detector
from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec

ARCHES = {
    "ViT-B-16": BackboneSpec(),
    "small": BackboneSpec(image_size=224, patch_size=16, width=256, layers=4, heads=4, embed_dim=128),
    "tiny": BackboneSpec(image_size=64, patch_size=16, width=64, layers=2, heads=4, embed_dim=32),
}
# (videos, frames per video) unless given: a clean pass of seconds on 2 CPU cores, so starting the workers (a
# fixed cost per pass, paid once by the suite's single pass) is a small part of it
SIZES = {"ViT-B-16": (2, 8), "small": (4, 8), "tiny": (8, 16)}


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


def timed(predictor: Predictor, model, records, perturbations=None, *, separate: bool = False) -> Sample:
    """Seconds per image of one pass: clean (``None``), every perturbation of the list in one pass, or
    (``separate``) one pass per perturbation, each decoding its frames."""

    def run() -> list:
        if perturbations is None:
            return [predictor.predict(model, records, "bench", "bench")]
        if separate:
            return [predictor.predict(model, records, "bench", "bench", p) for p in perturbations]
        return predict_perturbed(predictor, model, records, "bench", "bench", perturbations)

    preds, sample = measure(run)
    for pred in preds:
        if not pred.ok.all():
            raise RuntimeError(f"{int((~pred.ok).sum())} frames failed under {pred.perturbation}")
    return sample.per(len(records) * len(preds))


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_arch(arch: str, args: argparse.Namespace, records: list) -> float:
    """Print one model's figures; return the suite's ratio to clean."""
    torch.manual_seed(0)
    backbone = ARCHES[arch]
    spec = DetectorSpec(backbone=backbone, preprocess=PreprocessSpec(image_size=backbone.image_size))
    model = create_detector(spec, seed=0)
    predictor = Predictor(
        args.device, args.precision == "bf16", args.batch_size, args.workers, FrameCache(0), progress=False,
        perturb_seed=0,
    )  # fmt: skip
    timed(predictor, model, records[: args.batch_size])  # warm-up: weights to device, kernels, worker start
    videos = len({r.video_id for r in records})
    print(
        f"\n== {arch}: device {args.device} ({predictor.dtype_name}), {len(records)} frames ({videos} videos), "
        f"workers {predictor.num_workers}, torch threads {torch.get_num_threads()}, {load()}"
    )
    perturbations = expand_perturbations([args.suite])
    types = list(dict.fromkeys(p.name for p in perturbations))
    levels = {name: [p for p in perturbations if p.name == name] for name in types}
    cases = {"clean": lambda: timed(predictor, model, records),
             "suite": lambda: timed(predictor, model, records, perturbations)}  # fmt: skip
    for name in types if args.per_type else ():
        cases[name] = lambda lv=levels[name]: timed(predictor, model, records, lv)
    for name in types if args.separate else ():
        cases[f"naive {name}"] = lambda lv=levels[name]: timed(predictor, model, records, lv, separate=True)
    samples = interleaved(cases, args.repeats)
    clean = samples["clean"]

    def line(label: str, xs: list[Sample], note: str = "") -> float:
        rate = times([Sample(1 / x.wall, 1 / x.cpu) for x in xs], "wall").text(".1f")
        wall, cpu = speed_ratio(xs, clean, "wall"), speed_ratio(xs, clean, "cpu")
        print(f"  {label:<26} {rate:>22} img/s  wall {wall.ratio_text()}  CPU {cpu.ratio_text()}{note}")
        return wall.median

    print(f"{args.repeats} interleaved rounds; images/s and speed against the clean pass of the same round, "
          "median [range]:")  # fmt: skip
    line("clean (baseline)", clean)
    ratio = line(f"suite {args.suite}, one pass", samples["suite"],
                 f"  ({len(perturbations)} perturbations; target >= 0.80x)")  # fmt: skip
    if args.per_type:
        print("per type, one pass over its levels:")
        for name in types:
            line(name, samples[name])
    if args.separate:
        print("naive: one pass per perturbation (each decodes its frames):")
        for name in types:
            line(name, samples[f"naive {name}"])
        counts = {name: len(levels[name]) for name in types}
        naive = [Sample(sum(samples[f"naive {n}"][r].wall * c for n, c in counts.items()) / len(perturbations),
                        sum(samples[f"naive {n}"][r].cpu * c for n, c in counts.items()) / len(perturbations))
                 for r in range(args.repeats)]  # fmt: skip
        line("suite, naive", naive)
    print(load())
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", nargs="+", choices=list(ARCHES), default=["tiny", "small"])
    parser.add_argument("--suite", choices=list(SUITES), default="deeperforensics")
    parser.add_argument("--videos", type=int, default=None, help="default per model: see SIZES")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default per model: see SIZES)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved rounds (median and range printed)")
    parser.add_argument("--per-type", action="store_true", help="also one pass per perturbation type")
    parser.add_argument("--separate", action="store_true", help="also one pass per perturbation (the naive way)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto = cuda when available")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="as clip-eval's --precision")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decode workers (clip-eval's default)")
    args = parser.parse_args()
    args.device = resolve_device(args.device)
    ratios = {}
    for arch in args.arch:
        videos, frames = args.videos or SIZES[arch][0], args.frames or SIZES[arch][1]
        with tempfile.TemporaryDirectory() as tmp:
            ratios[arch] = bench_arch(arch, args, make_videos(Path(tmp), videos, frames))
    summary = ", ".join(f"{arch} {r:.2f}x" for arch, r in ratios.items())
    print(f"\nsuite {args.suite} / clean images/s: {summary} (target >= 0.80x); {load()}")


if __name__ == "__main__":
    main()
