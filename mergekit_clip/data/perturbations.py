"""Test-time perturbations of decoded frames: the DeeperForensics-1.0 robustness protocol and GenD's grid.

Every perturbation takes a decoded RGB uint8 ``(H, W, 3)`` frame (before the model's resize) and returns a new
uint8 frame (same shape but for ``resize``); inputs are never mutated. Randomness (noise, occlusion positions)
comes from a ``numpy`` generator seeded by (seed, perturbation, frame path), so a result is identical across runs,
processes and data workers for one seed. ``h264`` works on a video's whole frame sequence through a real encoder
(PyAV, libx264), as the protocol compresses videos, not frames.

DeeperForensics-1.0 (Jiang et al., CVPR 2020), 7 types x 5 levels: each follows the function of the authors'
``perturbation/distortions.py`` (EndlessSora/DeeperForensics-1.0) named in brackets, quirks included, on RGB frames
(theirs are OpenCV's BGR); re-implemented from its behaviour. The protocol abbreviation is the alias; its "JPEG" is
pixelation, not JPEG coding. docs/eval.md lists every quirk and departure.

========================  =====  ===============================================  ===========================
name                      alias  level = ... [their function]                     levels (mild -> severe)
========================  =====  ===============================================  ===========================
``saturation``            CS     chroma scale in their YCbCr [color_saturation]   0.4, 0.3, 0.2, 0.1, 0.0
``contrast``              CC     RGB intensities x level [color_contrast]         0.85, 0.725, 0.6, 0.475, 0.35
``block_occlusion``       BW     8x8 grey blocks per 256 px of short side         16, 32, 48, 64, 80
                                 [block_wise]
``color_noise``           GNC    noise variance in their YCbCr                    0.001, 0.002, 0.005, 0.01, 0.05
                                 [gaussian_noise_color]
``gaussian_blur``         GB     kernel size, sigma = kernel / 6 [gaussian_blur]  7, 9, 13, 17, 21
``pixelation``            JPEG   bilinear down by ``//`` level, back up           2, 3, 4, 5, 6
                                 [jpeg_compression]
``h264``                  VC     H.264 CRF (libx264, preset medium)               30, 32, 35, 38, 40
                                 [video_compression]
========================  =====  ===============================================  ===========================

``block_occlusion_any_size`` paints ``level`` blocks at any frame size (DeeperForensics paints none below 256 px);
the ``deeperforensics_any_size`` suite uses it in place of ``block_occlusion``.

GenD's grid (``gend`` suite), level for level as GenD's ``src/exp/wacv_rebuttal_aug_robustness.py`` (yermandy/GenD)
with its torchvision transforms: ``jpeg_quality`` 100, 80, 60, 40, 20, 10 (OpenCV's libjpeg); ``blur`` Gaussian
sigma 0.5, 1, 1.5, 2, 3 (kernels 5, 7, 11, 13, 19, as GenD pairs them); ``resize`` short side to 224, 112, 64 px;
``noise`` Gaussian noise of standard deviation 0.01, 0.03, 0.05, 0.1, 0.2 (of 255), clamped and truncated as
torchvision's ``ToPILImage`` does. ``gend_extra``: a level GenD lacks (``noise`` 0.02, in this tool's grid before).

Single perturbations are written ``NAME:LEVEL`` (``CS:0.2``, ``gaussian_blur:9``, ``jpeg_quality:50``; ``JPEG:3``
is the protocol's pixelation); a suite name expands to all its (name, level) pairs. Adding a type: one function
plus one :func:`register` line.
"""

from __future__ import annotations

import hashlib
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import cv2
import numpy as np

from mergekit_clip.registry import add_entry

Kind = Literal["frame", "video"]
BLOCK_SIZE = 8  # px, the protocol's occlusion block side
BLOCK_VALUE = 128  # grey


# libx264's kernels, as its ``asm`` option names them. With every kernel this CPU has (SSSE3 up to AVX-512 on
# x86-64) the output differed from the C kernels', and with AVX-512 it also varied call to call in one process
# (PyAV 18, libx264 in its wheel), which would break one-seed reproducibility. Up to SSE2 (every x86-64 CPU has
# it) it is bit-identical to the C kernels (asm=0) on 448 clips x CRFs and 2.6x faster; elsewhere: C kernels.
# tests/test_perturbations.py checks both claims on every run.
X264_ASM = "MMX2,SSE,SSE2,SSE2Fast" if platform.machine().lower() in ("x86_64", "amd64") else "0"


class PerturbationError(ValueError):
    """A perturbation spec that cannot be used (the message names it and the allowed values)."""


def _check_frame(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise PerturbationError(f"perturbations take RGB uint8 (H, W, 3) frames, got {rgb.dtype} {rgb.shape}")
    return rgb


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- DeeperForensics-1.0
# Their code casts with ``astype(np.uint8)``: truncation toward zero, not rounding; kept. Their colour
# operations convert 0-255 float BGR with OpenCV's float YCrCb (offset 0.5, meant for 0-1 values) and then apply
# the studio-range scaling meant for 0-1 values to it; kept, so noise and chroma scale as in their code.


def _truncate(x: np.ndarray) -> np.ndarray:
    """``astype(np.uint8)`` of in-range floats: truncation toward zero (clipped here, where numpy would wrap)."""
    return np.clip(np.trunc(x), 0, 255).astype(np.uint8)


def df_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """DeeperForensics' ``bgr2ycbcr`` on an RGB frame: float32 (Y, Cb, Cr) with Y -> (219 Y + 16) / 255 and
    C -> (224 C + 16) / 255 applied to OpenCV's float YCrCb of 0-255 values."""
    # through BGR as theirs: OpenCV's RGB and BGR kernels differ in the last float bit, which truncation can show
    ycrcb = cv2.cvtColor(rgb[..., ::-1].astype(np.float32), cv2.COLOR_BGR2YCrCb)
    ycbcr = ycrcb[..., (0, 2, 1)].copy()
    ycbcr[..., 0] = (ycbcr[..., 0] * np.float32(235 - 16) + 16) / np.float32(255.0)
    ycbcr[..., 1:] = (ycbcr[..., 1:] * np.float32(240 - 16) + 16) / np.float32(255.0)
    return ycbcr


def df_ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """DeeperForensics' ``ycbcr2bgr`` (the inverse scaling, then OpenCV's float YCrCb -> BGR), giving RGB floats."""
    ycbcr = ycbcr.astype(np.float32)  # a copy
    ycbcr[..., 0] = (ycbcr[..., 0] * np.float32(255.0) - 16) / np.float32(235 - 16)
    ycbcr[..., 1:] = (ycbcr[..., 1:] * np.float32(255.0) - 16) / np.float32(240 - 16)
    return cv2.cvtColor(np.ascontiguousarray(ycbcr[..., (0, 2, 1)]), cv2.COLOR_YCrCb2BGR)[..., ::-1]


def color_saturation(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Scale both chroma channels of DeeperForensics' YCbCr about 0.5 by ``level`` (0 = grey), truncate."""
    ycbcr = df_ycbcr(_check_frame(rgb))
    ycbcr[..., 1:] = np.float32(0.5) + (ycbcr[..., 1:] - np.float32(0.5)) * np.float32(level)
    return _truncate(df_ycbcr_to_rgb(ycbcr))


def color_contrast(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply RGB intensities by ``level`` and truncate (the RMS contrast scales by it)."""
    return _truncate(_check_frame(rgb).astype(np.float32) * np.float32(level))


def block_positions(height: int, width: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, 2)`` top-left corners (row, col) of occlusion blocks, uniform over ``[0, side - 1 - 8]`` as in
    DeeperForensics (a block never touches the last row or column)."""
    # drawn as (row, col) pairs in turn, so the first k blocks of a larger count are those of count k
    return rng.integers(0, [max(1, height - BLOCK_SIZE), max(1, width - BLOCK_SIZE)], size=(count, 2))


def block_count(height: int, width: int, level: float) -> int:
    """DeeperForensics' count: ``min(h, w) // 256 * level`` (none below 256 px, twice as many at 512 px)."""
    return min(height, width) // 256 * int(level)


def _paint_blocks(rgb: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    out = rgb.copy()
    for row, col in block_positions(out.shape[0], out.shape[1], count, rng):
        out[row : row + BLOCK_SIZE, col : col + BLOCK_SIZE] = BLOCK_VALUE
    return out


def block_occlusion(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Paint :func:`block_count` grey 8x8 blocks at random positions (they may overlap, as in the protocol)."""
    h, w = _check_frame(rgb).shape[:2]
    return _paint_blocks(rgb, block_count(h, w, level), rng)


def block_occlusion_any_size(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Paint ``level`` grey 8x8 blocks whatever the frame size (the protocol's count for a 256-511 px frame)."""
    return _paint_blocks(_check_frame(rgb), int(level), rng)


def color_noise(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """DeeperForensics' colour noise: ``(ycbcr / 255 + sqrt(level) * N(0, 1)) * 255`` in its YCbCr, back to RGB,
    clipped to 0-255 and truncated. Because their YCbCr holds 0-255-scale values, the RGB noise std is about
    ``sqrt(level) * 255 * 255 / 219`` in Y (not ``sqrt(level) * 255``)."""
    ycbcr = df_ycbcr(_check_frame(rgb)) / np.float32(255.0)
    ycbcr += rng.standard_normal(ycbcr.shape, dtype=np.float32) * np.float32(math.sqrt(level))
    return _truncate(df_ycbcr_to_rgb(ycbcr * np.float32(255.0)))


def gaussian_blur(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with an odd ``level`` x ``level`` kernel and sigma = kernel / 6."""
    k = int(level)
    return cv2.GaussianBlur(_check_frame(rgb), (k, k), k / 6.0)


def pixelation(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Down-scale to ``(h // level, w // level)`` and back up, both with OpenCV's default bilinear: the
    protocol's "JPEG". A side that would be 0 (frame smaller than the factor: their code fails) is 1."""
    h, w = _check_frame(rgb).shape[:2]
    small = cv2.resize(rgb, (max(1, int(w // level)), max(1, int(h // level))), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def h264_sequence(
    frames: Sequence[np.ndarray], level: float, rng: np.random.Generator, *, asm: str = X264_ASM
) -> list[np.ndarray]:
    """Encode a video's frames with libx264 at CRF ``level`` (yuv420p, 25 fps, one thread), decode them back.

    Frames are padded to even sides (4:2:0 needs them) and frames of another size than the first are resized to
    it for encoding and back afterwards. Deterministic: one encoder thread, ``asm`` kernels (:data:`X264_ASM`),
    no randomness.
    """
    try:
        import av
    except ImportError as e:
        raise PerturbationError("h264 (VC) needs PyAV: pip install av") from e
    if not frames:
        return []
    shapes = [_check_frame(f).shape[:2] for f in frames]
    h, w = shapes[0]
    ph, pw = h + h % 2, w + w % 2
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = pw, ph, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, 25), Fraction(25, 1)
    encoder.thread_count = 1
    encoder.options = {"crf": str(int(level)), "preset": "medium", "x264-params": f"asm={asm}"}
    pictures, packets = [], []  # libx264 reads queued pictures after encode() returns: keep them to the flush
    for index, (frame, shape) in enumerate(zip(frames, shapes)):
        if shape != (h, w):
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        padded = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        # BT.601 limited range, as ffmpeg converts RGB by default
        picture = av.VideoFrame.from_ndarray(cv2.cvtColor(padded, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        picture.pts = index
        pictures.append(picture)
        packets += encoder.encode(picture)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count, decoder.thread_type = 1, "NONE"
    decoded = []
    for packet in [*packets, None]:
        for picture in decoder.decode(packet):
            rgb = cv2.cvtColor(np.ascontiguousarray(picture.to_ndarray(format="yuv420p")), cv2.COLOR_YUV2RGB_I420)
            decoded.append(rgb[:h, :w].copy())
    if len(decoded) != len(frames):
        raise PerturbationError(f"h264: encoded {len(frames)} frames but decoded {len(decoded)}")
    return [
        np.ascontiguousarray(
            d if shape == (h, w) else cv2.resize(d, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        )
        for d, shape in zip(decoded, shapes)
    ]


# ---------------------------------------------------------------- GenD's grid


def jpeg_quality(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG-encode at quality ``level`` (0-100, OpenCV/libjpeg) and decode."""
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(_check_frame(rgb), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(level)]
    )
    if not ok:
        raise PerturbationError(f"jpeg: OpenCV could not encode a {rgb.shape} frame")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def blur_sigma(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with sigma ``level`` px and kernel ``2 ceil(3 sigma) + 1`` (GenD's pairs: 0.5 -> 5, 1 -> 7,
    1.5 -> 11, 2 -> 13, 3 -> 19); edges reflected without repeating the border pixel, in float and rounded, as
    torchvision's ``GaussianBlur`` does (OpenCV's 8-bit fixed-point path differs by 1 in ~4 % of values)."""
    k = 2 * math.ceil(3 * level) + 1
    blurred = cv2.GaussianBlur(_check_frame(rgb).astype(np.float32), (k, k), float(level),
                               borderType=cv2.BORDER_REFLECT_101)  # fmt: skip
    return _to_uint8(blurred)


def resize_short_side(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Scale so the short side is ``level`` px (area down, cubic up); the frame changes shape, by design."""
    h, w = _check_frame(rgb).shape[:2]
    scale = float(level) / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return rgb.copy()
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def rgb_noise(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """GenD's noise: ``x / 255 + N(0, level)`` per RGB value, clamped to [0, 1], times 255, truncated (torchvision's
    ``ToTensor``, ``GaussianNoise`` and ``ToPILImage``)."""
    x = _check_frame(rgb).astype(np.float32) / np.float32(255.0)
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(level)
    return (np.clip(x, 0, 1) * np.float32(255.0)).astype(np.uint8)


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class PerturbationType:
    """One kind of perturbation: ``apply(frame, level, rng)`` (or, for ``kind="video"``, on a frame list)."""

    name: str
    apply: Callable
    levels: tuple[float, ...]  # the protocol's levels, mild -> severe
    valid: Callable[[float], bool]
    valid_text: str
    description: str
    aliases: tuple[str, ...] = ()
    kind: Kind = "frame"
    integer: bool = False


PERTURBATIONS: dict[str, PerturbationType] = {}
_ALIASES: dict[str, str] = {}


def register(entry: PerturbationType) -> PerturbationType:
    """Add a perturbation type (:mod:`mergekit_clip.registry`'s rules); its name and aliases (case-insensitive)
    must not name another type. Every name is checked on a copy first, so a refused entry leaves nothing behind."""
    names = {key.lower(): entry.name for key in (entry.name, *entry.aliases)}
    trial = dict(_ALIASES)
    for key, name in names.items():
        add_entry(trial, key, name, "perturbation name")
    add_entry(PERTURBATIONS, entry.name, entry, "perturbation")
    _ALIASES.update(names)
    return entry


@dataclass(frozen=True, order=True)
class Perturbation:
    """A perturbation type at one level; ``key`` (``"gaussian_blur:9"``) names it in caches, files and reports."""

    name: str
    level: float

    @property
    def type(self) -> PerturbationType:
        return PERTURBATIONS[self.name]

    @property
    def key(self) -> str:
        level = int(self.level) if self.type.integer else self.level
        return f"{self.name}:{level:g}" if isinstance(level, float) else f"{self.name}:{level}"

    @property
    def kind(self) -> Kind:
        return self.type.kind

    @property
    def severity(self) -> int | None:
        """1-based position among the protocol's levels (1 = mildest), None for a level outside them."""
        levels = self.type.levels
        return levels.index(self.level) + 1 if self.level in levels else None

    def rng(self, seed: int, item: str) -> np.random.Generator:
        """The generator for one frame path (or video id): stable across processes, unlike ``hash()``."""
        digest = hashlib.blake2b(f"{seed}|{self.key}|{item}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(digest, "little"))

    def apply_frame(self, rgb: np.ndarray, seed: int, item: str) -> np.ndarray:
        if self.kind == "video":
            return self.apply_video([rgb], seed, item)[0]
        return self.type.apply(rgb, self.level, self.rng(seed, item))

    def apply_video(self, frames: Sequence[np.ndarray], seed: int, video: str) -> list[np.ndarray]:
        """A video's frames in order; frame types are applied per frame (seeded by ``video`` and position)."""
        if self.kind == "video":
            return self.type.apply(list(frames), self.level, self.rng(seed, video))
        return [self.apply_frame(f, seed, f"{video}#{i}") for i, f in enumerate(frames)]


def parse_perturbation(spec: str) -> Perturbation:
    """``"NAME:LEVEL"`` (name or protocol alias, case-insensitive) -> :class:`Perturbation`, level checked."""
    name, sep, raw_level = str(spec).partition(":")
    canonical = _ALIASES.get(name.strip().lower())
    if canonical is None or not sep:
        known = ", ".join(f"{n} ({'/'.join(t.aliases)})" if t.aliases else n for n, t in PERTURBATIONS.items())
        raise PerturbationError(
            f"unknown perturbation {spec!r}: write NAME:LEVEL or a suite ({', '.join(SUITES)}); names: {known}"
        )
    entry = PERTURBATIONS[canonical]
    try:
        level = float(raw_level)
    except ValueError:
        raise PerturbationError(f"perturbation {spec!r}: level {raw_level!r} is not a number") from None
    if entry.integer and level != int(level):
        raise PerturbationError(f"perturbation {spec!r}: {canonical} takes an integer level ({entry.valid_text})")
    if not entry.valid(level):
        raise PerturbationError(f"perturbation {spec!r}: {canonical} level must be {entry.valid_text}")
    return Perturbation(canonical, float(int(level)) if entry.integer else level)


def suite(name: str) -> list[Perturbation]:
    try:
        types = SUITES[name]
    except KeyError:
        raise PerturbationError(f"unknown perturbation suite {name!r} (choose from {list(SUITES)})") from None
    out = []
    for type_name, levels in types:
        for level in levels:
            out.append(Perturbation(type_name, float(level)))
    return out


def expand_perturbations(specs: Sequence[str]) -> list[Perturbation]:
    """Suite names and ``NAME:LEVEL`` specs (comma separated or repeated) -> unique perturbations, order kept."""
    out: list[Perturbation] = []
    for spec in (p.strip() for s in specs for p in str(s).split(",") if p.strip()):
        for item in suite(spec) if spec in SUITES else [parse_perturbation(spec)]:
            if item not in out:
                out.append(item)
    return out


def _odd(x: float) -> bool:
    return x >= 1 and int(x) % 2 == 1


register(PerturbationType("saturation", color_saturation, (0.4, 0.3, 0.2, 0.1, 0.0), lambda x: 0 <= x <= 1,
                          "in [0, 1]", "colour saturation change (YCbCr chroma x level)", ("CS",)))  # fmt: skip
register(PerturbationType("contrast", color_contrast, (0.85, 0.725, 0.6, 0.475, 0.35), lambda x: 0 <= x <= 1,
                          "in [0, 1]", "colour contrast change (intensities x level)", ("CC",)))  # fmt: skip
register(PerturbationType("block_occlusion", block_occlusion, (16, 32, 48, 64, 80), lambda x: 0 <= x <= 10_000,
                          "a block count in [0, 10000]", "block-wise occlusion, 8x8 grey blocks per 256 px", ("BW",),
                          integer=True))  # fmt: skip
register(PerturbationType("block_occlusion_any_size", block_occlusion_any_size, (16, 32, 48, 64, 80),
                          lambda x: 0 <= x <= 10_000, "a block count in [0, 10000]",
                          "block-wise occlusion, level 8x8 grey blocks at any frame size", integer=True))  # fmt: skip
register(PerturbationType("color_noise", color_noise, (0.001, 0.002, 0.005, 0.01, 0.05), lambda x: 0 <= x <= 1,
                          "a variance in [0, 1]", "colour Gaussian noise in YCbCr", ("GNC",)))  # fmt: skip
register(PerturbationType("gaussian_blur", gaussian_blur, (7, 9, 13, 17, 21), _odd, "an odd kernel size >= 1",
                          "Gaussian blur, sigma = kernel / 6", ("GB",), integer=True))  # fmt: skip
register(PerturbationType("pixelation", pixelation, (2, 3, 4, 5, 6), lambda x: 1 <= x <= 64, "a factor in [1, 64]",
                          "down/up-scaling (the protocol's 'JPEG')", ("JPEG",)))  # fmt: skip
register(PerturbationType("h264", h264_sequence, (30, 32, 35, 38, 40), lambda x: 0 <= x <= 51, "a CRF in [0, 51]",
                          "H.264 video compression (libx264)", ("VC",), kind="video", integer=True))  # fmt: skip
register(PerturbationType("jpeg_quality", jpeg_quality, (100, 80, 60, 40, 20, 10), lambda x: 1 <= x <= 100,
                          "a quality in [1, 100]", "JPEG compression (GenD grid)", integer=True))  # fmt: skip
register(PerturbationType("blur", blur_sigma, (0.5, 1, 1.5, 2, 3), lambda x: 0 < x <= 20, "a sigma in (0, 20]",
                          "Gaussian blur by sigma (GenD grid)"))  # fmt: skip
register(PerturbationType("resize", resize_short_side, (224, 112, 64), lambda x: 8 <= x <= 4096,
                          "a short side in [8, 4096] px", "down-scaling (GenD grid)", integer=True))  # fmt: skip
register(PerturbationType("noise", rgb_noise, (0.01, 0.03, 0.05, 0.1, 0.2), lambda x: 0 <= x <= 1, "a std in [0, 1]",
                          "RGB Gaussian noise (GenD grid)"))  # fmt: skip

_DEEPERFORENSICS = ("saturation", "contrast", "block_occlusion", "color_noise", "gaussian_blur", "pixelation", "h264")
SUITES: dict[str, list[tuple[str, tuple[float, ...]]]] = {
    "deeperforensics": [(n, PERTURBATIONS[n].levels) for n in _DEEPERFORENSICS],
    "deeperforensics_any_size": [
        (n if n != "block_occlusion" else "block_occlusion_any_size", PERTURBATIONS[n].levels) for n in _DEEPERFORENSICS
    ],
    "gend": [(n, PERTURBATIONS[n].levels) for n in ("jpeg_quality", "blur", "resize", "noise")],
    "gend_extra": [("noise", (0.02,))],  # levels of this tool's earlier grid that GenD's script lacks
}
