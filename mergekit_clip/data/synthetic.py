"""A synthetic DeepfakeBench-format forgery benchmark, the embedded default (no dataset can be downloaded here).

Each dataset renders cartoon face crops (64 x 64 PNG, integer-named frames) of real and fake videos. A real video
is one identity in one scene with camera noise and slight motion. A fake video swaps the inner face of the target
for another identity's face, rendered without camera noise (the cue every dataset shares: a too-clean inner face
and a blending boundary) and forged with the dataset's own families and post-processing (see ``STYLES``), so a
detector trained on one dataset transfers to the others only partly. ``docs/data.md`` describes each dataset.

The JSONs exercise the format's quirks: ``Synth-FF`` nests compression levels (``c23``, ``c40``) under the split
and uses Windows paths, as FaceForensics++ does; ``Synth-DFDCP`` uses Windows paths too; ``Synth-DFDC`` prefixes
``./``; frames are listed in lexicographic file-name order (``0, 10, 15, 5``) so readers must sort numerically.
Label strings are DeepfakeBench's defaults. Output is deterministic per seed (same bytes).

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

from mergekit_clip.detector.io import atomic_directory

Preset = Literal["small", "full", "pretrain"]
MANIFEST = "synth.json"
IMAGE_SIZE = 64  # stored frame side, pixels
FRAME_STEP = 5  # frame file names are 0, 5, 10, ... (sparse like DeepfakeBench's sampled frames)


@dataclass(frozen=True)
class PresetSize:
    real_videos: int  # per dataset; there are as many fake videos
    frames: int  # per video


# "pretrain" is not a detection benchmark: the generic pre-training corpus of mergekit_clip.data.pretext
# (real_videos = scenes, each an untouched and a processed clip).
PRESETS: dict[str, PresetSize] = {
    "small": PresetSize(80, 4),
    "full": PresetSize(100, 16),
    "pretrain": PresetSize(2400, 1),
}


@dataclass(frozen=True)
class Forgery:
    """One forgery family: how the swapped face is made and blended."""

    label: str  # DeepfakeBench label string
    method: str  # folder name of the method
    feather: float  # Gaussian sigma of the blending mask, px (small = visible seam)
    colour_match: float  # 1 = source face recoloured to the target's skin, 0 = raw skin-tone mismatch
    upsample: int = 1  # source face rendered at 1/upsample resolution, then enlarged
    upsample_mode: Literal["nearest", "linear"] = "linear"
    checkerboard: float = 0.0  # amplitude (grey levels) of a transposed-convolution-like period-4 grid
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


STYLES: tuple[DatasetStyle, ...] = (
    DatasetStyle(
        name="Synth-FF",
        description="FaceForensics++-like training set: two families, a seam-visible blend with partial colour "
        "transfer (FF-DF) and a 2x bilinear re-rendered face (FF-F2F); c23 (JPEG 85-95) and c40 (JPEG 40-55) "
        "levels nested under each split; Windows paths; fake video names shared across methods.",
        real_label="FF-real",
        forgeries=(
            Forgery("FF-DF", "Blend", feather=0.7, colour_match=0.3, residual_noise=0.0),
            Forgery("FF-F2F", "Reenact", feather=1.5, colour_match=0.8, upsample=2, upsample_mode="linear",
                    residual_noise=0.0),
        ),  # fmt: skip
        path_style="windows",
        jpeg={"c23": (90, 97), "c40": (40, 55)},
        noise=(6.0, 9.0),
        real_layout="{root}/original_sequences/youtube/{level}/frames/{video}",
        fake_layout="{root}/manipulated_sequences/{method}/{level}/frames/{video}",
        real_group="FF-real",
    ),
    DatasetStyle(
        name="Synth-CDF",
        description="Celeb-DF-like: well colour-matched, widely feathered swaps whose faces are 4x nearest "
        "up-sampled with a checkerboard (decoder) pattern; light compression (JPEG 88-98).",
        real_label="CelebDFv2_real",
        forgeries=(
            Forgery("CelebDFv2_fake", "Celeb-synthesis", feather=3.0, colour_match=1.0, upsample=2,
                    upsample_mode="nearest", checkerboard=5.0, residual_noise=0.7),
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
        description="DFDC-like: strong skin-tone mismatch with a sharp seam, then heavy recompression of every "
        "frame (JPEG 45-70) that hides the camera noise; a quarter of real videos are defocused; './' paths.",
        real_label="DFDC_Real",
        forgeries=(Forgery("DFDC_Fake", "fake", feather=1.2, colour_match=0.2, residual_noise=0.5),),
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
        description="DFDC-preview-like: two families, a face double-compressed at JPEG 15-30 before blending "
        "(DFDCP_FakeA) and a 2x nearest up-sampled face (DFDCP_FakeB), both with medium feathering; JPEG 75-90; "
        "Windows paths.",
        real_label="DFDCP_Real",
        forgeries=(
            Forgery("DFDCP_FakeA", "method_A", feather=2.0, colour_match=0.8, inner_jpeg=(15, 30),
                    residual_noise=0.6),
            Forgery("DFDCP_FakeB", "method_B", feather=2.0, colour_match=0.8, upsample=2, upsample_mode="nearest"),
        ),  # fmt: skip
        path_style="windows",
        jpeg={None: (75, 90)},
        noise=(3.0, 6.0),
        real_layout="{root}/original_videos/{video}",
        fake_layout="{root}/{method}/{video}",
        real_group="DFDCP_Real",
    ),
    DatasetStyle(
        name="Synth-UADFV",
        description="UADFV-like: small swapped region (0.65 of the face) re-rendered at 2x lower resolution with "
        "a mild colour mismatch; almost uncompressed (JPEG 95-100) but noisy cameras.",
        real_label="UADFV_Real",
        forgeries=(
            Forgery("UADFV_Fake", "fake", feather=1.5, colour_match=0.6, upsample=2, mask_scale=0.65,
                    residual_noise=0.7),
        ),  # fmt: skip
        path_style="posix",
        jpeg={None: (90, 98)},
        noise=(3.0, 6.0),
        real_layout="{root}/real/{video}",
        fake_layout="{root}/fake/{video}",
        real_group="UADFV_Real",
        blur_real=0.1,
    ),
)
TRAIN_DATASET = "Synth-FF"


@dataclass(frozen=True)
class SynthInfo:
    """Where :func:`synthesize` wrote the benchmark and which dataset to train on (the others are test sets)."""

    json_root: Path
    data_root: Path
    datasets: list[str] = field(default_factory=list)
    train_dataset: str = TRAIN_DATASET
    image_size: int = IMAGE_SIZE
    preset: str = "small"
    seed: int = 0


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


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    bgr = cv2.cvtColor(np.clip(img, 0, 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2 could not JPEG-encode a synthetic frame")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32)


def _swap(
    target: np.ndarray, source: np.ndarray, scene: _Scene, t: float, forgery: Forgery, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``source``'s inner face into ``target`` the way ``forgery`` does; returns (image, blend mask)."""
    size = target.shape[0]
    if forgery.upsample > 1:
        small = cv2.resize(source, (size // forgery.upsample,) * 2, interpolation=cv2.INTER_AREA)
        mode = cv2.INTER_NEAREST if forgery.upsample_mode == "nearest" else cv2.INTER_LINEAR
        source = cv2.resize(small, (size, size), interpolation=mode)
    if forgery.checkerboard:
        yy, xx = np.mgrid[0:size, 0:size]
        source = source + forgery.checkerboard * (((xx // 2 + yy // 2) % 2) * 2 - 1)[..., None]
    if forgery.inner_jpeg is not None:
        source = _jpeg(source, int(rng.integers(forgery.inner_jpeg[0], forgery.inner_jpeg[1] + 1)))
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


def _splits(n: int, rng: np.random.Generator) -> list[str]:
    """Disjoint train/val/test assignment: 60 / 15 / 25 % of ``n`` items, shuffled."""
    n_val, n_test = max(1, round(0.15 * n)), max(1, round(0.25 * n))
    labels = ["val"] * n_val + ["test"] * n_test + ["train"] * (n - n_val - n_test)
    return [labels[i] for i in rng.permutation(n)]


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(np.clip(img, 0, 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {path}")


def _generate_dataset(
    style: DatasetStyle, index: int, size: PresetSize, seed: int, data_root: Path, progress: Callable[[int], Any]
) -> dict[str, Any]:
    """Render one dataset's frames under ``data_root`` and return its JSON document."""
    rng = np.random.default_rng([seed, index, 0])
    n_real = size.real_videos
    split_of_real = _splits(n_real, rng)
    groups: dict[str, Any] = {}
    levels = list(style.jpeg)

    def add(group: str, split: str, level: str | None, video: str, label: str, frames: list[str]) -> None:
        node = groups.setdefault(group, {}).setdefault(split, {})
        if level is not None:
            node = node.setdefault(level, {})
        node[video] = {"label": label, "frames": frames}

    # fake videos are spread over the families; in FF style each target id gets one fake per family at most
    fakes_per_family = max(1, n_real // len(style.forgeries))
    jobs: list[tuple[int, Forgery | None, int]] = [(i, None, 0) for i in range(n_real)]
    for f_idx, forgery in enumerate(style.forgeries):
        targets = np.random.default_rng([seed, index, 1, f_idx]).permutation(n_real)[:fakes_per_family]
        jobs += [(int(t), forgery, f_idx) for t in sorted(targets)]

    frame_names = [str(FRAME_STEP * k) for k in range(size.frames)]
    for target, forgery, sub in jobs:
        vrng = np.random.default_rng([seed, index, 2, target])  # the target's scene is shared by its fakes
        ident, scene = _identity(vrng, IMAGE_SIZE), _scene(vrng, IMAGE_SIZE, style.noise, style.blur_real)
        if forgery is not None:
            frng = np.random.default_rng([seed, index, 3, target, sub])
            source_id = _identity(frng, IMAGE_SIZE)
            scene = _scene_without_defocus(scene)
            video = f"{target:03d}_{(target + 1 + int(frng.integers(n_real - 1))) % n_real:03d}"
        else:
            frng = np.random.default_rng([seed, index, 4, target])
            video = f"{target:03d}"
        split = split_of_real[target]
        clean_frames = []
        for k in range(size.frames):
            t = 0.9 * k
            noise = frng.normal(0, scene.noise, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
            img = _render(ident, scene, t, IMAGE_SIZE)
            if forgery is None:
                img = img + noise
            else:
                source = _render(source_id, scene, t, IMAGE_SIZE, clean=True)
                img, mask = _swap(img + noise, source, scene, t, forgery, frng)
                img = img + (noise * (forgery.residual_noise * mask[..., None]))
            clean_frames.append(img)
        for level in levels:
            lo, hi = style.jpeg[level]
            layout = style.fake_layout if forgery is not None else style.real_layout
            rel_dir = layout.format(root=style.name, level=level, method=forgery.method if forgery else "",
                                    video=video)  # fmt: skip
            for name, img in zip(frame_names, clean_frames):
                _write_png(data_root / rel_dir / f"{name}.png", _jpeg(img, int(frng.integers(lo, hi + 1))))
            listed = [_format_path(f"{rel_dir}/{n}.png", style.path_style) for n in sorted(frame_names)]
            group = forgery.label if forgery is not None else style.real_group
            add(group, split, level, video, forgery.label if forgery else style.real_label, listed)
            progress(size.frames)
    return {style.name: groups}


def _scene_without_defocus(scene: _Scene) -> _Scene:
    # defocus is a real-video distractor only: a swap re-renders the face sharply
    from dataclasses import replace

    return replace(scene, defocus=0.0)


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
    total = sum(len(s.jpeg) * (size.real_videos + len(s.forgeries) * max(1, size.real_videos // len(s.forgeries)))
                for s in STYLES) * size.frames  # fmt: skip
    with atomic_directory(out, overwrite=overwrite) as tmp, tqdm(total=total, desc="synth", unit="frame") as bar:
        (tmp / "json").mkdir()
        for index, style in enumerate(STYLES):
            doc = _generate_dataset(style, index, size, seed, tmp / "data", bar.update)
            (tmp / "json" / f"{style.name}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        manifest = {
            "preset": preset,
            "seed": seed,
            "image_size": IMAGE_SIZE,
            "train_dataset": TRAIN_DATASET,
            "datasets": [s.name for s in STYLES],
            "descriptions": {s.name: s.description for s in STYLES},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return load_synth_info(out)


def _synthesize_pretext(out: Path, size: PresetSize, seed: int, *, overwrite: bool) -> SynthInfo:
    """The generic pre-training corpus (one dataset, train/val/test by scene); no detection dataset is written."""
    from mergekit_clip.data.pretext import PRETEXT_DATASET, generate_pretext

    frame_names = [str(FRAME_STEP * k) for k in range(size.frames)]
    splits = _splits(size.real_videos, np.random.default_rng([seed, 7]))
    total = 2 * size.real_videos * size.frames
    with atomic_directory(out, overwrite=overwrite) as tmp, tqdm(total=total, desc="synth", unit="frame") as bar:
        (tmp / "json").mkdir()
        doc = generate_pretext(
            size.real_videos, size.frames, seed, tmp / "data", image_size=IMAGE_SIZE, frame_names=frame_names,
            splits=splits, write_png=_write_png, progress=bar.update,
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
    )


__all__ = ["PRESETS", "STYLES", "SynthInfo", "load_synth_info", "synthesize"]
