"""A synthetic DeepfakeBench-format forgery benchmark, the embedded default (no dataset can be downloaded here).

Each dataset renders cartoon face crops (32 x 32 PNG, integer-named frames) of real and fake videos. A real video
is one identity in one scene with camera noise, skin texture and slight motion. A fake video takes a real video's
scene and swaps its inner face for another identity's face. Two kinds of trace tell a fake:

- the cue every dataset shares, weak: the swapped face was rendered without texture and with little camera noise
  (a face smoother than its surroundings) and is blended in with a seam;
- a strong trace of the forgery method itself (its ``Fingerprint``: a periodic pattern of its own frequency and
  colour on the swapped face, like the up-sampling grids that tell GAN generators apart in the spectrum), which
  no other dataset's methods leave.

A detector trained on the source dataset learns its methods' fingerprints (high in-domain AUC) and transfers to
the other datasets only through the shared cue (a clear cross-dataset drop), as real FF++ detectors overfit to
FF++'s manipulation artifacts. ``docs/data.md`` describes each dataset and the measured gap.

``Synth-FF`` is laid out like FaceForensics++: four methods (``FF-DF``, ``FF-F2F``, ``FF-FS``, ``FF-NT``) each fake
every real (target) video, and a target's fakes share one folder name (``000_003``: target 000 with source
identity 003) under every method; beside ``Synth-FF.json`` (all methods) one JSON per method (``Synth-FF-DF``,
``Synth-FF-F2F``, ``Synth-FF-FS``, ``Synth-FF-NT``: the shared reals + that method, as DeepfakeBench's ``FF-DF``
etc.) lets a specialist family train one ingredient per method. The held-out datasets put most of their videos
in ``test`` (10 / 10 / 80 %), so intervals of cross-dataset AUC are narrow.

The JSONs exercise the format's quirks: ``Synth-FF`` nests compression levels (``c23``, ``c40``) under the split
and uses Windows paths, as FaceForensics++ does; ``Synth-DFDCP`` uses Windows paths too; ``Synth-DFDC`` prefixes
``./``; frames are named by their position in a notional 300-frame video and listed in lexicographic order
(``150, 250, 50``), so readers must sort numerically. Label strings are DeepfakeBench's defaults. Output is
deterministic per seed (same bytes).

Every fake frame's blend mask (the feathered ellipse of the swap, 8-bit grey) is written at its DeepfakeBench
mask path, the frame path with its ``frames`` folder replaced by ``masks`` (every dataset keeps its frames under
a ``frames`` folder), so the ForensicsAdapter boundary loss trains on them (:mod:`mergekit_clip.data.masks`).

``preset="pretrain"`` writes no detection dataset but the generic pre-training corpus of
:mod:`mergekit_clip.data.pretext` (one dataset, same JSON layout), for the demo's tiny backbone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from mergekit_clip.data.deepfakebench import mask_rel_path
from mergekit_clip.data.jpeg import jpeg_roundtrip
from mergekit_clip.detector.io import atomic_directory

Preset = Literal["small", "full", "pretrain"]
MANIFEST = "synth.json"
IMAGE_SIZE = 32  # stored frame side, pixels (the demo's tiny ViT reads it unresized: 8 x 8 patches of 4 px)
VIDEO_LENGTH = 300  # frames of the notional source video; stored frames are evenly spaced in it (sparse names)


@dataclass(frozen=True)
class PresetSize:
    real_videos: int  # source dataset: real (target) videos; each of its methods fakes every one
    frames: int  # per source-dataset video
    heldout_videos: int = 0  # per class in each held-out dataset (0 = real_videos)
    heldout_frames: int = 0  # per held-out video (0 = frames)

    @property
    def heldout(self) -> tuple[int, int]:
        return self.heldout_videos or self.real_videos, self.heldout_frames or self.frames


# "pretrain" is not a detection benchmark: the generic pre-training corpus of mergekit_clip.data.pretext
# (real_videos = scenes, each an untouched and a processed clip).
PRESETS: dict[str, PresetSize] = {
    "small": PresetSize(real_videos=96, frames=3, heldout_videos=560, heldout_frames=2),
    "full": PresetSize(real_videos=400, frames=8, heldout_videos=1000, heldout_frames=4),
    "pretrain": PresetSize(2400, 1),
}
SOURCE_SPLIT = (0.60, 0.15, 0.25)  # train / val / test share of the source dataset's targets
HELDOUT_SPLIT = (0.10, 0.10, 0.80)  # held-out datasets are for testing: most videos in test


@dataclass(frozen=True)
class Fingerprint:
    """A forgery method's own trace: a periodic pattern on the swapped face (a generator's up-sampling grid).

    ``freq`` (cycles per pixel along x and y; 0.5 = period 2) and ``colour`` (peak amplitude per RGB channel,
    grey levels) identify the method; each fake video scales the amplitude by a factor drawn from ``scale``.
    """

    freq: tuple[float, float]
    colour: tuple[float, float, float]
    scale: tuple[float, float] = (0.5, 1.0)

    def pattern(self, size: int) -> np.ndarray:
        """(S, S, 3) float32, anchored to the pixel grid as an up-sampling grid is."""
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        wave = np.cos(2 * np.pi * (self.freq[0] * xx + self.freq[1] * yy))
        return (wave[..., None] * np.asarray(self.colour, np.float32)).astype(np.float32)


# The trace every generator leaves (a period-2 transposed-convolution checkerboard), weak beside each method's own
# fingerprint: what a detector can carry from one dataset to the others, with the clean (noise-free) face.
SHARED_GRID = Fingerprint((0.5, 0.5), (1.0, 1.0, 1.0))


@dataclass(frozen=True)
class Forgery:
    """One forgery method: how the swapped face is made and blended."""

    label: str  # DeepfakeBench label string
    method: str  # folder name of the method
    feather: float  # Gaussian sigma of the blending mask, px (small = visible seam)
    colour_match: float  # 1 = source face recoloured to the target's skin, 0 = raw skin-tone mismatch
    fingerprint: Fingerprint | None = None  # the method's own strong trace
    grid: float = 0.0  # amplitude (grey levels) of the decoder grid every method shares (SHARED_GRID), weak
    upsample: int = 1  # source face rendered at 1/upsample resolution, then enlarged
    upsample_mode: Literal["nearest", "linear"] = "linear"
    inner_jpeg: tuple[int, int] | None = None  # JPEG quality of the source face alone (double compression)
    residual_noise: float = 0.25  # fraction of the camera noise left on the swapped face
    mask_scale: float = 0.8  # swapped ellipse / face ellipse


@dataclass(frozen=True)
class DatasetStyle:
    name: str
    description: str
    real_label: str
    forgeries: tuple[Forgery, ...]
    path_style: Literal["posix", "windows", "dot"]
    jpeg: dict[str | None, tuple[int, int]]  # compression level (None = not nested) -> camera JPEG quality range
    noise: tuple[float, float]  # camera noise sigma range, grey levels
    real_layout: str  # frame dir of a real video, {video} filled in
    fake_layout: str  # frame dir of a fake video, {method}/{video} filled in
    real_group: str
    blur_real: float = 0.0  # probability that a real video is defocused (a distractor for the smoothness cue)
    every_method_fakes_every_target: bool = False  # FF++ layout (1 real : len(forgeries) fakes); else 1 : 1
    source: bool = False  # the training dataset: source split and one JSON per method


STYLES: tuple[DatasetStyle, ...] = (
    DatasetStyle(
        name="Synth-FF",
        description="FaceForensics++-like training set: four methods fake every real video, each with its own "
        "fingerprint (FF-DF: period-2 vertical green stripes, seam-visible blend with partial colour transfer; "
        "FF-F2F: period-2 horizontal red stripes, colour-matched; FF-FS: period-4 diagonal blue grating, sharp "
        "seam, skin-tone mismatch; FF-NT: grey period-2 checkerboard, wide feather) on a noise-free face; c23 "
        "(JPEG 90-97) and c40 (JPEG 40-55) levels nested under each split; Windows paths; a target's fakes share "
        "one folder name under every method; one JSON per method (Synth-FF-DF, -F2F, -FS, -NT).",
        real_label="FF-real",
        forgeries=(
            Forgery("FF-DF", "Deepfakes", feather=0.8, colour_match=0.5, residual_noise=0.0,
                    fingerprint=Fingerprint((0.5, 0.0), (16.0, 16.0, 16.0)), grid=8.0),
            Forgery("FF-F2F", "Face2Face", feather=1.2, colour_match=0.9, residual_noise=0.0,
                    fingerprint=Fingerprint((0.0, 0.5), (16.0, 16.0, 16.0)), grid=8.0),
            Forgery("FF-FS", "FaceSwap", feather=0.6, colour_match=0.3, residual_noise=0.0,
                    fingerprint=Fingerprint((0.25, 0.25), (16.0, 16.0, 16.0)), grid=8.0),
            Forgery("FF-NT", "NeuralTextures", feather=1.5, colour_match=1.0, residual_noise=0.0,
                    fingerprint=Fingerprint((0.25, -0.25), (16.0, 16.0, 16.0)), grid=8.0),
        ),  # fmt: skip
        path_style="windows",
        jpeg={"c23": (90, 97), "c40": (40, 55)},
        noise=(6.0, 9.0),
        real_layout="{root}/original_sequences/youtube/{level}/frames/{video}",
        fake_layout="{root}/manipulated_sequences/{method}/{level}/frames/{video}",
        real_group="FF-real",
        every_method_fakes_every_target=True,
        source=True,
    ),
    DatasetStyle(
        name="Synth-CDF",
        description="Celeb-DF-like: well colour-matched, widely feathered swaps whose faces are 2x nearest "
        "up-sampled, with a period-3 yellow/blue decoder grid; half the camera noise kept; JPEG 82-94.",
        real_label="CelebDFv2_real",
        forgeries=(
            Forgery("CelebDFv2_fake", "Celeb-synthesis", feather=2.0, colour_match=1.0, upsample=2,
                    upsample_mode="nearest", residual_noise=0.5,
                    fingerprint=Fingerprint((1 / 3, 1 / 3), (10.0, 10.0, 10.0)), grid=5.0),
        ),  # fmt: skip
        path_style="posix",
        jpeg={None: (82, 94)},
        noise=(3.0, 6.0),
        real_layout="{root}/Celeb-real/frames/{video}",
        fake_layout="{root}/{method}/frames/{video}",
        real_group="CelebDFv2_real",
    ),
    DatasetStyle(
        name="Synth-DFDC",
        description="DFDC-like: strong skin-tone mismatch with a sharp seam and a period-3 horizontal magenta "
        "grating, then heavy recompression of every frame (JPEG 45-70) that hides the camera noise and most of "
        "the grating; a quarter of real videos are defocused; './' paths.",
        real_label="DFDC_Real",
        forgeries=(
            Forgery("DFDC_Fake", "fake", feather=1.0, colour_match=0.2, residual_noise=0.5,
                    fingerprint=Fingerprint((0.0, 1 / 3), (10.0, 10.0, 10.0)), grid=8.0),
        ),  # fmt: skip
        path_style="dot",
        jpeg={None: (45, 70)},
        noise=(3.0, 8.0),
        real_layout="{root}/test/frames/real_{video}",
        fake_layout="{root}/test/frames/{method}_{video}",
        real_group="DFDC_Real",
        blur_real=0.25,
    ),
    DatasetStyle(
        name="Synth-DFDCP",
        description="DFDC-preview-like: two methods, a face double-compressed at JPEG 15-30 before blending "
        "(DFDCP_FakeA) and a 2x nearest up-sampled face with a period-3 vertical cyan grating (DFDCP_FakeB), both "
        "with medium feathering; JPEG 75-90; Windows paths.",
        real_label="DFDCP_Real",
        forgeries=(
            Forgery("DFDCP_FakeA", "method_A", feather=1.5, colour_match=0.8, inner_jpeg=(15, 30),
                    residual_noise=0.6, grid=6.0),
            Forgery("DFDCP_FakeB", "method_B", feather=1.5, colour_match=0.8, upsample=2, upsample_mode="nearest",
                    fingerprint=Fingerprint((1 / 3, 0.0), (10.0, 10.0, 10.0)), grid=6.0),
        ),  # fmt: skip
        path_style="windows",
        jpeg={None: (75, 90)},
        noise=(3.0, 6.0),
        real_layout="{root}/original_videos/frames/{video}",
        fake_layout="{root}/{method}/frames/{video}",
        real_group="DFDCP_Real",
    ),
    DatasetStyle(
        name="Synth-UADFV",
        description="UADFV-like: small swapped region (0.65 of the face) re-rendered at 2x lower resolution with "
        "a mild colour mismatch and a period-4 horizontal grey grating; almost uncompressed (JPEG 90-98) but "
        "noisy cameras.",
        real_label="UADFV_Real",
        forgeries=(
            Forgery("UADFV_Fake", "fake", feather=1.2, colour_match=0.6, upsample=2, mask_scale=0.65,
                    residual_noise=0.7, fingerprint=Fingerprint((1 / 3, -1 / 3), (10.0, 10.0, 10.0)), grid=4.0),
        ),  # fmt: skip
        path_style="posix",
        jpeg={None: (90, 98)},
        noise=(3.0, 6.0),
        real_layout="{root}/real/frames/{video}",
        fake_layout="{root}/fake/frames/{video}",
        real_group="UADFV_Real",
        blur_real=0.1,
    ),
)
TRAIN_DATASET = "Synth-FF"


def method_dataset(forgery: Forgery) -> str:
    """Name of the per-method JSON of a source-dataset method: ``FF-DF`` -> ``Synth-FF-DF``."""
    return f"Synth-{forgery.label}"


@dataclass(frozen=True)
class SynthInfo:
    """Where :func:`synthesize` wrote the benchmark and which dataset to train on (the others are test sets).

    ``method_datasets``: one dataset per method of the training dataset (its reals + that method's fakes, same
    frames and splits), for specialist families; they are not test sets and not in ``datasets``.
    """

    json_root: Path
    data_root: Path
    datasets: list[str] = field(default_factory=list)
    train_dataset: str = TRAIN_DATASET
    image_size: int = IMAGE_SIZE
    preset: str = "small"
    seed: int = 0
    method_datasets: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Identity:
    skin: np.ndarray  # (3,) RGB
    hair: np.ndarray
    lips: np.ndarray
    eye_dx: float
    eye_y: float
    eye_r: float
    mouth_w: float
    mouth_y: float
    texture: np.ndarray  # (S, S) static skin texture, grey levels


@dataclass(frozen=True)
class _Scene:
    bg_a: np.ndarray
    bg_b: np.ndarray
    bg_field: np.ndarray  # (S, S) low-frequency background variation
    angle: float
    cx: float
    cy: float
    rx: float
    ry: float
    light: tuple[float, float]
    noise: float
    motion: tuple[float, float, float]  # amplitude x, amplitude y, phase
    defocus: float


def _identity(rng: np.random.Generator, size: int) -> _Identity:
    tone = rng.uniform(0.35, 1.0)
    skin = np.array([95 + 150 * tone, 60 + 130 * tone, 45 + 115 * tone]) + rng.normal(0, 8, 3)
    hair = rng.choice([np.array([30.0, 25, 20]), np.array([90.0, 60, 30]), np.array([200.0, 170, 110]),
                       np.array([120.0, 120, 120])]) + rng.normal(0, 10, 3)  # fmt: skip
    lips = skin * np.array([0.95, 0.6, 0.6]) + rng.normal(0, 6, 3)
    tex = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 0.8) * rng.uniform(10, 16)
    return _Identity(
        skin=np.clip(skin, 30, 250), hair=np.clip(hair, 0, 255), lips=np.clip(lips, 0, 255),
        eye_dx=rng.uniform(0.33, 0.45), eye_y=rng.uniform(-0.22, -0.08), eye_r=rng.uniform(0.09, 0.14),
        mouth_w=rng.uniform(0.25, 0.42), mouth_y=rng.uniform(0.38, 0.52), texture=tex,
    )  # fmt: skip


def _scene(rng: np.random.Generator, size: int, noise: tuple[float, float], blur_p: float) -> _Scene:
    low = rng.normal(0, 1, (4, 4)).astype(np.float32)
    bg_field = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) * 12
    s = size / 64
    return _Scene(
        bg_a=rng.uniform(20, 235, 3), bg_b=rng.uniform(20, 235, 3), bg_field=bg_field,
        angle=rng.uniform(0, 2 * np.pi), cx=size / 2 + rng.normal(0, 2 * s), cy=size / 2 + 2 * s + rng.normal(0, 2 * s),
        rx=rng.uniform(15, 19) * s, ry=rng.uniform(20, 24) * s,
        light=(rng.uniform(-1, 1), rng.uniform(-1, 1)), noise=rng.uniform(*noise),
        motion=(rng.uniform(0, 1.5) * s, rng.uniform(0, 1.5) * s, rng.uniform(0, 2 * np.pi)),
        defocus=rng.uniform(1.0, 1.6) if rng.random() < blur_p else 0.0,
    )  # fmt: skip


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Anti-aliased coverage of an ellipse, (S, S) in [0, 1]."""
    d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return np.clip((1.0 - d) * min(rx, ry) + 0.5, 0.0, 1.0)


def _paint(img: np.ndarray, cover: np.ndarray, colour: np.ndarray) -> None:
    img += cover[..., None] * (colour - img)


def _render(ident: _Identity, scene: _Scene, t: float, size: int, *, clean: bool = False) -> np.ndarray:
    """One frame (S, S, 3) float32 in grey levels, without camera noise; ``clean`` omits the skin texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ax, ay, phase = scene.motion
    cx = scene.cx + ax * np.sin(t + phase)
    cy = scene.cy + ay * np.cos(0.7 * t + phase)
    rx, ry = scene.rx, scene.ry
    u = (np.cos(scene.angle) * (xx - size / 2) + np.sin(scene.angle) * (yy - size / 2)) / size + 0.5
    img = scene.bg_a * (1 - u[..., None]) + scene.bg_b * u[..., None] + scene.bg_field[..., None]
    _paint(img, np.clip((yy - (cy + 0.8 * ry)) / 3, 0, 1) * (np.abs(xx - cx) < 0.55 * rx), ident.skin * 0.8)  # neck
    _paint(img, _ellipse(xx, yy, cx, cy - 0.12 * ry, 1.12 * rx, 1.02 * ry), ident.hair)
    face = _ellipse(xx, yy, cx, cy, rx, ry)
    lx, ly = scene.light
    shade = 1 + 0.18 * (lx * (xx - cx) / rx + ly * (yy - cy) / ry)
    skin = ident.skin * shade[..., None]
    if not clean:
        skin = skin + ident.texture[..., None]
    img += face[..., None] * (skin - img)
    _paint(img, _ellipse(xx, yy, cx, cy - 1.0 * ry, 1.05 * rx, 0.45 * ry), ident.hair)  # fringe
    blink = 0.25 if (t * 1.7) % 6 < 0.5 else 1.0
    for side in (-1, 1):
        ex, ey = cx + side * ident.eye_dx * rx, cy + ident.eye_y * ry
        _paint(img, _ellipse(xx, yy, ex, ey, ident.eye_r * rx * 1.5, ident.eye_r * ry * blink), np.array([235.0] * 3))
        _paint(img, _ellipse(xx, yy, ex, ey, ident.eye_r * rx * 0.7, ident.eye_r * ry * 0.8 * blink),
               np.array([40.0, 30, 25]))  # fmt: skip
        _paint(img, _ellipse(xx, yy, ex, ey - 0.2 * ry, ident.eye_r * rx * 1.8, 0.035 * ry), ident.hair * 0.8)
    _paint(img, _ellipse(xx, yy, cx, cy + 0.12 * ry, 0.08 * rx, 0.16 * ry), ident.skin * 0.82 * shade.mean())
    mouth_open = 0.05 + 0.04 * (1 + np.sin(2.3 * t))
    _paint(img, _ellipse(xx, yy, cx, cy + ident.mouth_y * ry, ident.mouth_w * rx, mouth_open * ry), ident.lips)
    if scene.defocus:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), scene.defocus)
    return img.astype(np.float32)


def _swap(
    target: np.ndarray,
    source: np.ndarray,
    scene: _Scene,
    t: float,
    forgery: Forgery,
    rng: np.random.Generator,
    fingerprint_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``source``'s inner face into ``target`` the way ``forgery`` does; returns (image, blend mask)."""
    size = target.shape[0]
    if forgery.upsample > 1:
        small = cv2.resize(source, (size // forgery.upsample,) * 2, interpolation=cv2.INTER_AREA)
        mode = cv2.INTER_NEAREST if forgery.upsample_mode == "nearest" else cv2.INTER_LINEAR
        source = cv2.resize(small, (size, size), interpolation=mode)
    if forgery.fingerprint is not None:
        source = source + fingerprint_scale * forgery.fingerprint.pattern(size)
    if forgery.grid:
        source = source + (fingerprint_scale * forgery.grid / SHARED_GRID.colour[0]) * SHARED_GRID.pattern(size)
    if forgery.inner_jpeg is not None:
        source = jpeg_roundtrip(source, int(rng.integers(forgery.inner_jpeg[0], forgery.inner_jpeg[1] + 1)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ax, ay, phase = scene.motion
    cx, cy = scene.cx + ax * np.sin(t + phase), scene.cy + ay * np.cos(0.7 * t + phase)
    s = forgery.mask_scale
    hard = _ellipse(xx, yy, cx, cy + 0.08 * scene.ry, s * scene.rx, s * scene.ry)
    mask = cv2.GaussianBlur(hard, (0, 0), forgery.feather)[..., None]
    inner = hard > 0.5
    # colour transfer: move the source skin's mean towards the target's inside the swapped region
    shift = (target[inner].mean(0) - source[inner].mean(0)) * forgery.colour_match
    return target * (1 - mask) + (source + shift) * mask, mask[..., 0]


# ---------------------------------------------------------------- datasets


def _format_path(rel: str, style: str) -> str:
    if style == "windows":
        return rel.replace("/", "\\")
    if style == "dot":
        return f"./{rel}"
    return rel


def _splits(n: int, rng: np.random.Generator, shares: tuple[float, float, float] = SOURCE_SPLIT) -> list[str]:
    """Disjoint train/val/test assignment of ``n`` items by ``shares`` (at least one item each), shuffled."""
    n_val, n_test = max(1, round(shares[1] * n)), max(1, round(shares[2] * n))
    labels = ["val"] * n_val + ["test"] * n_test + ["train"] * (n - n_val - n_test)
    return [labels[i] for i in rng.permutation(n)]


def frame_names(frames: int) -> list[str]:
    """File names (no suffix) of ``frames`` frames evenly spaced in a ``VIDEO_LENGTH``-frame video."""
    return [str(int((k + 0.5) * VIDEO_LENGTH / frames)) for k in range(frames)]


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(np.clip(img, 0, 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {path}")


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A blend mask (S, S) in [0, 1] as an 8-bit grey PNG (255 = the swapped face), as DeepfakeBench stores them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.clip(mask * 255.0, 0, 255).round().astype(np.uint8),
                       [cv2.IMWRITE_PNG_COMPRESSION, 3]):  # fmt: skip
        raise OSError(f"could not write {path}")


def _videos(style: DatasetStyle, size: PresetSize) -> tuple[int, int]:
    """(real videos, frames per video) of one dataset under ``size``."""
    return (size.real_videos, size.frames) if style.source else size.heldout


def _jobs(style: DatasetStyle, n_real: int, seed: int, index: int) -> list[tuple[int, Forgery | None, int]]:
    """(target, forgery or None for the real video, method index) of every video of one dataset."""
    jobs: list[tuple[int, Forgery | None, int]] = [(i, None, 0) for i in range(n_real)]
    if style.every_method_fakes_every_target:  # FF++: every method fakes every target
        return jobs + [(t, forgery, f) for f, forgery in enumerate(style.forgeries) for t in range(n_real)]
    # otherwise one fake per target, the targets dealt out over the methods
    order = np.random.default_rng([seed, index, 1]).permutation(n_real)
    for f_idx, forgery in enumerate(style.forgeries):
        jobs += [(int(t), forgery, f_idx) for t in sorted(order[f_idx :: len(style.forgeries)])]
    return jobs


def _generate_dataset(
    style: DatasetStyle, index: int, size: PresetSize, seed: int, data_root: Path, progress: Callable[[int], Any]
) -> dict[str, Any]:
    """Render one dataset's frames under ``data_root`` and return its JSON document."""
    rng = np.random.default_rng([seed, index, 0])
    n_real, n_frames = _videos(style, size)
    split_of_real = _splits(n_real, rng, SOURCE_SPLIT if style.source else HELDOUT_SPLIT)
    groups: dict[str, Any] = {}
    levels = list(style.jpeg)

    def add(group: str, split: str, level: str | None, video: str, label: str, frames: list[str]) -> None:
        node = groups.setdefault(group, {}).setdefault(split, {})
        if level is not None:
            node = node.setdefault(level, {})
        node[video] = {"label": label, "frames": frames}

    names = frame_names(n_frames)
    for target, forgery, sub in _jobs(style, n_real, seed, index):
        vrng = np.random.default_rng([seed, index, 2, target])  # the target's scene is shared by its fakes
        ident, scene = _identity(vrng, IMAGE_SIZE), _scene(vrng, IMAGE_SIZE, style.noise, style.blur_real)
        if forgery is not None:
            # one source identity per target, shared by every method: FF++'s `000_003` under each method
            source_index = target + 1 + int(np.random.default_rng([seed, index, 5, target]).integers(n_real - 1))
            source_index %= n_real
            # the swapped-in face is the identity of real video `source_index` (its scene rng's first draw)
            source_id = _identity(np.random.default_rng([seed, index, 2, source_index]), IMAGE_SIZE)
            frng = np.random.default_rng([seed, index, 3, target, sub])
            scale = float(frng.uniform(*forgery.fingerprint.scale)) if forgery.fingerprint else 0.0
            scene = _scene_without_defocus(scene)
            video = f"{target:03d}_{source_index:03d}"
        else:
            frng = np.random.default_rng([seed, index, 4, target])
            video = f"{target:03d}"
        split = split_of_real[target]
        clean_frames, masks = [], []
        for k in range(n_frames):
            t = 0.9 * k
            noise = frng.normal(0, scene.noise, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
            img = _render(ident, scene, t, IMAGE_SIZE)
            if forgery is None:
                img = img + noise
            else:
                source = _render(source_id, scene, t, IMAGE_SIZE, clean=True)
                img, mask = _swap(img + noise, source, scene, t, forgery, frng, scale)
                img = img + (noise * (forgery.residual_noise * mask[..., None]))
                masks.append(mask)
            clean_frames.append(img)
        for level in levels:
            lo, hi = style.jpeg[level]
            layout = style.fake_layout if forgery is not None else style.real_layout
            rel_dir = layout.format(root=style.name, level=level, method=forgery.method if forgery else "",
                                    video=video)  # fmt: skip
            for name, img in zip(names, clean_frames):
                _write_png(data_root / rel_dir / f"{name}.png", jpeg_roundtrip(img, int(frng.integers(lo, hi + 1))))
            for name, mask in zip(names, masks):  # fakes only: DeepfakeBench's mask path, blend weights as grey
                write_mask(data_root / mask_rel_path(f"{rel_dir}/{name}.png"), mask)
            listed = [_format_path(f"{rel_dir}/{n}.png", style.path_style) for n in sorted(names)]
            group = forgery.label if forgery is not None else style.real_group
            add(group, split, level, video, forgery.label if forgery else style.real_label, listed)
            progress(n_frames)
    return {style.name: groups}


def _method_documents(style: DatasetStyle, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One JSON document per method of ``style`` (its reals + that method's fakes), as DeepfakeBench's FF-DF."""
    groups = doc[style.name]
    return {
        method_dataset(f): {method_dataset(f): {style.real_group: groups[style.real_group], f.label: groups[f.label]}}
        for f in style.forgeries
    }


def _scene_without_defocus(scene: _Scene) -> _Scene:
    # defocus is a real-video distractor only: a swap re-renders the face sharply
    from dataclasses import replace

    return replace(scene, defocus=0.0)


def _frame_total(size: PresetSize) -> int:
    total = 0
    for style in STYLES:
        n_real, n_frames = _videos(style, size)
        n_fake = n_real * len(style.forgeries) if style.every_method_fakes_every_target else n_real
        total += len(style.jpeg) * (n_real + n_fake) * n_frames
    return total


def synthesize(
    out_dir: str | os.PathLike, preset: Preset = "small", seed: int = 0, *, overwrite: bool = False
) -> SynthInfo:
    """Write the benchmark to ``out_dir`` (``json/<Name>.json``, ``data/...`` frames, ``synth.json``) atomically."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (choose from {sorted(PRESETS)})")
    size = PRESETS[preset]
    out = Path(out_dir).absolute()
    if preset == "pretrain":
        return _synthesize_pretext(out, size, seed, overwrite=overwrite)
    with atomic_directory(out, overwrite=overwrite) as tmp, tqdm(total=_frame_total(size), desc="synth",
                                                                 unit="frame") as bar:  # fmt: skip
        (tmp / "json").mkdir()
        documents: dict[str, dict[str, Any]] = {}
        for index, style in enumerate(STYLES):
            documents[style.name] = _generate_dataset(style, index, size, seed, tmp / "data", bar.update)
            if style.source:
                documents.update(_method_documents(style, documents[style.name]))
        for name, doc in documents.items():
            (tmp / "json" / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        source = next(s for s in STYLES if s.source)
        manifest = {
            "preset": preset,
            "seed": seed,
            "image_size": IMAGE_SIZE,
            "train_dataset": TRAIN_DATASET,
            "datasets": [s.name for s in STYLES],
            "method_datasets": [method_dataset(f) for f in source.forgeries],
            "descriptions": {s.name: s.description for s in STYLES},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return load_synth_info(out)


def _synthesize_pretext(out: Path, size: PresetSize, seed: int, *, overwrite: bool) -> SynthInfo:
    """The generic pre-training corpus (one dataset, train/val/test by scene); no detection dataset is written."""
    from mergekit_clip.data.pretext import PRETEXT_DATASET, generate_pretext

    names = frame_names(size.frames)
    splits = _splits(size.real_videos, np.random.default_rng([seed, 7]))
    total = 2 * size.real_videos * size.frames
    with atomic_directory(out, overwrite=overwrite) as tmp, tqdm(total=total, desc="synth", unit="frame") as bar:
        (tmp / "json").mkdir()
        doc = generate_pretext(
            size.real_videos, size.frames, seed, tmp / "data", image_size=IMAGE_SIZE, frame_names=names,
            splits=splits, write_png=_write_png, write_mask=write_mask, progress=bar.update,
        )  # fmt: skip
        (tmp / "json" / f"{PRETEXT_DATASET}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        manifest = {
            "preset": "pretrain",
            "seed": seed,
            "image_size": IMAGE_SIZE,
            "train_dataset": PRETEXT_DATASET,
            "datasets": [PRETEXT_DATASET],
            "descriptions": {PRETEXT_DATASET: "generic pre-training corpus: untouched vs processed (region or "
                             "whole frame) abstract scenes; DF_real = untouched, DF_fake = processed"},
        }  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return load_synth_info(out)


def load_synth_info(out_dir: str | os.PathLike) -> SynthInfo:
    """The :class:`SynthInfo` of a benchmark written by :func:`synthesize` (read from its ``synth.json``)."""
    out = Path(out_dir).absolute()
    path = out / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: {out} is not a benchmark made by `mergekit-clip data synth`")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    return SynthInfo(
        json_root=out / "json",
        data_root=out / "data",
        datasets=list(manifest["datasets"]),
        train_dataset=manifest["train_dataset"],
        image_size=int(manifest["image_size"]),
        preset=manifest["preset"],
        seed=int(manifest["seed"]),
        method_datasets=list(manifest.get("method_datasets", [])),
    )


__all__ = [
    "PRESETS", "STYLES", "Fingerprint", "SynthInfo", "frame_names", "load_synth_info", "method_dataset", "synthesize",
]
