"""Perturbations change pixels as their protocol says, monotonically in the level, identically for one seed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mergekit_clip.data.perturbations import (
    BLOCK_SIZE,
    BLOCK_VALUE,
    PERTURBATIONS,
    SUITES,
    X264_ASM,
    Perturbation,
    PerturbationError,
    block_positions,
    expand_perturbations,
    h264_sequence,
    parse_perturbation,
)


def textured_frame(size: int = 64, seed: int = 0) -> np.ndarray:
    """A face-crop stand-in: colour gradients, edges and fine texture; no pixel is exactly the occlusion grey."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([200 * xx + 20, 180 * yy + 30, 120 * (1 - xx) * yy + 60], axis=-1)
    img[size // 4 : size // 2, size // 4 : 3 * size // 4] += 40  # an edge
    img += rng.normal(0, 12, img.shape)  # texture for blur / pixelation / compression to remove
    img = np.clip(img, 0, 255).astype(np.uint8)
    img[img == BLOCK_VALUE] = BLOCK_VALUE + 1
    return img


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def clip_frames(n: int = 6, size: int = 64) -> list[np.ndarray]:
    """A short clip: the textured frame drifting by a pixel per frame."""
    base = textured_frame(size + 8)
    return [np.ascontiguousarray(base[i : i + size, i : i + size]) for i in range(n)]


def frames_for(name: str, n: int = 6) -> list[np.ndarray]:
    """64 px frames, 256 px for DeeperForensics' occlusion (it paints no block below 256 px)."""
    return clip_frames(n, 256 if name == "block_occlusion" else 64)


def perturbed(name: str, level: float, seed: int = 0) -> list[np.ndarray]:
    p = Perturbation(name, float(level))
    return p.apply_video(frames_for(name), seed, "video/000")


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_psnr_falls_monotonically_with_the_level(name):
    entry = PERTURBATIONS[name]
    clean = frames_for(name)
    values = []
    for level in entry.levels:
        out = perturbed(name, level)
        assert all(o.dtype == np.uint8 and o.ndim == 3 for o in out)
        if name == "resize":  # the frame changes size: short side = level, compared after scaling back
            assert min(out[0].shape[:2]) == level
            out = [cv2.resize(o, (64, 64), interpolation=cv2.INTER_AREA) for o in out]
        values.append(np.mean([psnr(c, o) for c, o in zip(clean, out)]))
    if name == "resize":  # 224 and 112 up-scale a 64 px frame (near lossless), 64 is the frame itself
        assert values[0] > 30 and values[1] > 30
        return
    assert all(np.isfinite(v) for v in values), (name, values)
    assert all(a > b for a, b in zip(values, values[1:])), (name, values)


def test_saturation_and_contrast_measured_fall_with_the_level():
    clean = textured_frame()
    saturation = [cv2.cvtColor(perturbed("saturation", lv)[0], cv2.COLOR_RGB2HSV)[..., 1].mean() for lv in
                  PERTURBATIONS["saturation"].levels]  # fmt: skip
    original = cv2.cvtColor(clean, cv2.COLOR_RGB2HSV)[..., 1].mean()
    assert original > saturation[0] and all(a > b for a, b in zip(saturation, saturation[1:]))
    assert saturation[-1] < 1  # level 0: grey (their truncation can split a grey value by 1 between channels)
    rms = [
        cv2.cvtColor(perturbed("contrast", lv)[0], cv2.COLOR_RGB2GRAY).std() for lv in PERTURBATIONS["contrast"].levels
    ]
    assert all(a > b for a, b in zip(rms, rms[1:]))
    base_rms = cv2.cvtColor(clip_frames()[0], cv2.COLOR_RGB2GRAY).std()
    for level, value in zip(PERTURBATIONS["contrast"].levels, rms):
        assert value == pytest.approx(level * base_rms, rel=0.03)  # RMS contrast scales by the level


@pytest.mark.parametrize("level", PERTURBATIONS["block_occlusion"].levels)
@pytest.mark.parametrize("name, size, per_level", [("BW", 224, 0), ("BW", 256, 1), ("BW", 300, 1), ("BW", 512, 2),
                                                   ("block_occlusion_any_size", 128, 1)])  # fmt: skip
def test_occlusion_paints_the_said_number_of_blocks(level, name, size, per_level):
    # DeeperForensics: min(h, w) // 256 * level blocks; corners in [0, side - 1 - 8]
    count = int(level) * per_level
    frame = textured_frame(size)
    p = parse_perturbation(f"{name}:{level}")
    out = p.apply_frame(frame, seed=3, item="a/0.png")
    corners = block_positions(size, size, count, p.rng(3, "a/0.png"))
    assert len(corners) == count
    assert corners.size == 0 or (corners.min() >= 0 and corners.max() <= size - 1 - BLOCK_SIZE)
    mask = np.zeros((size, size), bool)
    for row, col in corners:
        assert (out[row : row + BLOCK_SIZE, col : col + BLOCK_SIZE] == BLOCK_VALUE).all()
        mask[row : row + BLOCK_SIZE, col : col + BLOCK_SIZE] = True
    assert (out[~mask] == frame[~mask]).all()  # nothing outside the blocks changes
    assert (out[mask] == BLOCK_VALUE).all()


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_identical_for_one_seed_and_inputs_untouched(name):
    level = PERTURBATIONS[name].levels[-1]
    frames = frames_for(name)
    before = [f.copy() for f in frames]
    first = Perturbation(name, float(level)).apply_video(frames, 7, "v")
    second = Perturbation(name, float(level)).apply_video(frames, 7, "v")
    assert all((a == b).all() for a, b in zip(first, second))
    assert all((a == b).all() for a, b in zip(frames, before))
    if name in ("block_occlusion", "block_occlusion_any_size", "color_noise", "noise"):  # random: depend on the seed
        other = Perturbation(name, float(level)).apply_video(frames, 8, "v")
        assert any((a != b).any() for a, b in zip(first, other))


def test_h264_is_a_real_encoder_on_the_sequence():
    frames = clip_frames(8)
    out = Perturbation("h264", 40.0).apply_video(frames, 0, "v")
    assert len(out) == 8 and all(o.shape == f.shape for o, f in zip(out, frames))
    assert 20 < np.mean([psnr(f, o) for f, o in zip(frames, out)]) < 40  # lossy, but still the picture
    runs = [Perturbation("h264", 40.0).apply_video(frames, 0, "v") for _ in range(6)]  # once varied call to call
    assert all((a == b).all() for run in runs for a, b in zip(run, out))
    odd = [f[:63, :61] for f in frames]  # 4:2:0 needs even sides: padded and cropped back
    assert [o.shape for o in Perturbation("h264", 30.0).apply_video(odd, 0, "v")] == [f.shape for f in odd]


def test_specs_suites_and_errors():
    assert parse_perturbation("CS:0.2") == Perturbation("saturation", 0.2)
    assert parse_perturbation("gb:9").key == "gaussian_blur:9"
    assert parse_perturbation("JPEG:3").name == "pixelation"  # the protocol's name for pixelation
    assert parse_perturbation("jpeg_quality:50").key == "jpeg_quality:50"
    df = expand_perturbations(["deeperforensics"])
    assert len(df) == 35 and {p.name for p in df} == {n for n, _ in SUITES["deeperforensics"]}
    assert [p.severity for p in df[:5]] == [1, 2, 3, 4, 5]
    both = expand_perturbations(["gend", "GB:7,CS:0.25"])
    assert len(both) == 6 + 5 + 3 + 5 + 2 and both[-1].severity is None
    with pytest.raises(PerturbationError, match="odd kernel"):
        parse_perturbation("GB:8")
    with pytest.raises(PerturbationError, match="deeperforensics"):
        parse_perturbation("fog:3")
    with pytest.raises(PerturbationError, match=r"in \[0, 1\]"):
        parse_perturbation("CS:1.5")
    with pytest.raises(PerturbationError, match="not a number"):
        parse_perturbation("CS:high")


def _h264_digest(frames: list[np.ndarray], crf: int, asm: str = X264_ASM) -> str:
    out = h264_sequence(frames, crf, np.random.default_rng(0), asm=asm)
    return hashlib.sha256(b"".join(o.tobytes() for o in out)).hexdigest()


def test_h264_kernels_equal_the_c_kernels_and_other_processes():
    """X264_ASM (SSE2-level kernels on x86-64) is ~2.6x faster than the C kernels; its output must be theirs bit
    for bit, and the same in a fresh process."""
    clips = {"clip": clip_frames(8), "odd": [f[:63, :61] for f in clip_frames(5)], "noise": [
        np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(6)]}  # fmt: skip
    digests = {}
    for name, frames in clips.items():
        for crf in (20, 30, 40):
            digests[name, crf] = _h264_digest(frames, crf)
            assert digests[name, crf] == _h264_digest(frames, crf, asm="0"), (name, crf)
    assert len(set(digests.values())) == len(digests)  # the CRF and the content matter
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from test_perturbations import _h264_digest, clip_frames; "
        "print(_h264_digest(clip_frames(8), 40))"
    )
    child = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert child.stdout.strip() == digests["clip", 40]


def test_register_follows_the_registry_rules():
    """Same entry again: no-op; another entry under a taken name or alias: refused naming both, nothing left behind."""
    from mergekit_clip.data.perturbations import _ALIASES, PerturbationType, register

    saturation = PERTURBATIONS["saturation"]
    assert register(saturation) is saturation
    other = PerturbationType("saturation", lambda rgb, level, rng: rgb, (1.0,), lambda x: True, "any", "another")
    with pytest.raises(ValueError, match=r"perturbation 'saturation' is already registered .*refusing"):
        register(other)
    assert PERTURBATIONS["saturation"] is saturation
    # a new name whose alias is another type's ("CS" is saturation's): refused before the name is added
    clash = PerturbationType("tint", lambda rgb, level, rng: rgb, (1.0,), lambda x: True, "any", "", aliases=("cs",))
    refused = r"perturbation name 'cs' is already registered \('saturation'\); refusing 'tint'"
    with pytest.raises(ValueError, match=refused):
        register(clash)
    assert "tint" not in PERTURBATIONS and "tint" not in _ALIASES
