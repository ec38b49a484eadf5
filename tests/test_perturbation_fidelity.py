"""The perturbations equal their sources: DeeperForensics-1.0's ``perturbation/distortions.py`` and GenD's grid
(torchvision transforms), at every level.

The DeeperForensics reference below is written here from the steps their code takes (described in docs/eval.md),
on OpenCV's BGR frames as they read them, so a channel-order slip in the RGB implementation shows; small examples
are worked out by hand from the formulas. GenD's transforms are torchvision's, which is a dependency: the test calls
it directly.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from mergekit_clip.data.perturbations import PERTURBATIONS, SUITES, Perturbation, block_count

# ------------------------------------------------------------------ a test-local DeeperForensics reference (BGR)


def ref_to_ycbcr(bgr: np.ndarray) -> np.ndarray:
    """Their bgr2ycbcr: float32 BGR of 0-255 values -> OpenCV's float YCrCb (offset 0.5) -> (Y, Cb, Cr), then
    Y * 219 + 16 and C * 224 + 16, over 255."""
    ycrcb = cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2YCrCb)
    y, cr, cb = ycrcb[..., 0], ycrcb[..., 1], ycrcb[..., 2]
    return np.stack([(y * 219 + 16) / 255, (cb * 224 + 16) / 255, (cr * 224 + 16) / 255], axis=-1).astype(np.float32)


def ref_to_bgr(ycbcr: np.ndarray) -> np.ndarray:
    """Their ycbcr2bgr: undo the scaling, back to (Y, Cr, Cb), OpenCV's float YCrCb -> BGR."""
    y = (ycbcr[..., 0] * 255 - 16) / 219
    cb, cr = ((ycbcr[..., c] * 255 - 16) / 224 for c in (1, 2))
    return cv2.cvtColor(np.stack([y, cr, cb], axis=-1).astype(np.float32), cv2.COLOR_YCrCb2BGR)


def ref_saturation(bgr, param, rng):
    ycbcr = ref_to_ycbcr(bgr)
    ycbcr[..., 1:] = 0.5 + (ycbcr[..., 1:] - 0.5) * np.float32(param)
    return ref_to_bgr(ycbcr).astype(np.uint8)


def ref_contrast(bgr, param, rng):
    return (bgr.astype(np.float32) * np.float32(param)).astype(np.uint8)


def ref_noise(bgr, param, rng):
    ycbcr = ref_to_ycbcr(bgr) / 255
    noisy = (ycbcr + math.sqrt(param) * rng.standard_normal(ycbcr.shape)) * 255  # float64 noise, as theirs
    return np.clip(ref_to_bgr(noisy), 0, 255).astype(np.uint8)


def ref_blur(bgr, param, rng):
    return cv2.GaussianBlur(bgr, (int(param), int(param)), param / 6)


def ref_pixelation(bgr, param, rng):
    h, w = bgr.shape[:2]
    small = cv2.resize(bgr, (w // int(param), h // int(param)))  # OpenCV's default interpolation both ways
    return cv2.resize(small, (w, h))


def ref_blocks(bgr, param, rng):
    out = bgr.copy()
    for _ in range(min(bgr.shape[:2]) // 256 * int(param)):
        col = rng.integers(0, bgr.shape[1] - 1 - 8, endpoint=True)
        row = rng.integers(0, bgr.shape[0] - 1 - 8, endpoint=True)
        out[row : row + 8, col : col + 8] = 128
    return out


REFERENCE = {"saturation": ref_saturation, "contrast": ref_contrast, "color_noise": ref_noise,
             "gaussian_blur": ref_blur, "pixelation": ref_pixelation, "block_occlusion": ref_blocks}  # fmt: skip
DETERMINISTIC = ("saturation", "contrast", "gaussian_blur", "pixelation")


def reference_rgb(name: str, rgb: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """The reference on an RGB frame: to BGR, their steps, back to RGB."""
    out = REFERENCE[name](np.ascontiguousarray(rgb[..., ::-1]), level, np.random.default_rng(seed))
    return np.ascontiguousarray(out[..., ::-1])


def face_like(size: int = 256, seed: int = 0, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Smooth skin-like colour field with texture and edges (every hue and saturation occurs)."""
    h, w = shape or (size, size)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([150 + 90 * np.sin(xx / 23 + seed), 110 + 80 * np.cos(yy / 17), 90 + 70 * np.sin((xx + yy) / 31)],
                   axis=-1)  # fmt: skip
    img[h // 3 : h // 2, w // 4 : w // 2] = (250, 250, 250)  # a white patch (their CS turns white into 254)
    img[h // 2 :, : w // 5] = (3, 2, 1)  # a near-black patch
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ------------------------------------------------------------------ hand-worked examples


def test_opencv_float_ycrcb_is_the_documented_formula_with_offset_half():
    # the quirk their code relies on: OpenCV's float YCrCb adds 0.5 (meant for 0-1 values) to 0-255 values
    r, g, b = 200.0, 100.0, 50.0
    y = 0.299 * r + 0.587 * g + 0.114 * b  # 124.2
    expected = [y, (r - y) * 0.713 + 0.5, (b - y) * 0.564 + 0.5]
    got = cv2.cvtColor(np.float32([[[b, g, r]]]), cv2.COLOR_BGR2YCrCb)[0, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_hand_worked_values_of_the_deterministic_operations():
    def apply(name, level, rgb):
        return Perturbation(name, float(level)).apply_frame(np.uint8(rgb), 0, "x")

    # CC: 200 * 0.35 = 70, 101 * 0.35 = 35.35 -> 35, 7 * 0.35 = 2.45 -> 2 (truncated, not rounded)
    assert apply("contrast", 0.35, [[[200, 101, 7]]]).tolist() == [[[70, 35, 2]]]
    # CS, level 0: their chroma becomes p C + (1 - p) 111.5 / 224 = 0.497768 (offset from OpenCV's 0.5), so
    # R = Y + 1.403 (0.497768 - 0.5) = Y - 0.0031, G = Y + 0.0024, B = Y - 0.0040, truncated. (200, 100, 50):
    # Y = 124.2 -> (124, 124, 124); white: Y = 255 -> (254, 255, 254) at every level (the chroma of white is 0.5).
    assert apply("saturation", 0.0, [[[200, 100, 50]]]).tolist() == [[[124, 124, 124]]]
    for level in PERTURBATIONS["saturation"].levels:
        assert apply("saturation", level, [[[255, 255, 255]]]).tolist() == [[[254, 255, 254]]]
    # CS, level 0.4 on (200, 100, 50): C' = 0.4 C + 0.6 * 0.497768 with Cr = 75.8 * 0.713 + 0.5 = 54.5454,
    # Cb = -74.2 * 0.564 + 0.5 = -41.3488: Cr' = 22.1168, Cb' = -16.2409; R = 124.2 + 1.403 * 21.6168 = 154.53,
    # G = 124.2 - 0.714 * 21.6168 - 0.344 * (-16.7409) = 114.52, B = 124.2 + 1.773 * (-16.7409) = 94.52
    assert apply("saturation", 0.4, [[[200, 100, 50]]]).tolist() == [[[154, 114, 94]]]
    # JPEG (pixelation) 2 on columns (0, 0, 200, 200): bilinear halving averages pairs -> (0, 200); bilinear
    # doubling samples at x / 2 - 0.25: 0 (clamped), 0.25 -> 50, 0.75 -> 150, 200 (clamped)
    columns = np.uint8([0, 0, 200, 200])[None, :, None].repeat(4, 0).repeat(3, 2)
    assert apply("pixelation", 2, columns)[:, :, 0].tolist() == [[0, 50, 150, 200]] * 4
    # JPEG 3 on a 5 x 7 frame: their integer division gives a 1 x 2 thumbnail (not rounded sizes)
    small = cv2.resize(np.zeros((5, 7, 3), np.uint8), (7 // 3, 5 // 3))
    assert small.shape[:2] == (1, 2)
    # GB: an impulse of 255 blurred by a k x k kernel, sigma = k / 6, has centre 255 * g0^2, g0 = 1 / sum_i
    # exp(-i^2 / (2 sigma^2)) over i = -(k-1)/2 .. (k-1)/2
    for k in PERTURBATIONS["gaussian_blur"].levels:
        impulse = np.zeros((31, 31, 3), np.uint8)
        impulse[15, 15] = 255
        sigma = k / 6
        g0 = 1 / sum(math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-(int(k) // 2), int(k) // 2 + 1))
        assert abs(int(apply("gaussian_blur", k, impulse)[15, 15, 0]) - 255 * g0 * g0) <= 1, k


def test_block_count_by_frame_size_is_theirs():
    # min(h, w) // 256 * level: none below 256 px, twice as many from 512 px
    assert [block_count(h, w, 16) for h, w in [(224, 224), (255, 999), (256, 256), (300, 511), (512, 600)]] == [
        0, 0, 16, 16, 32]  # fmt: skip


def test_color_noise_std_is_their_formula_on_a_flat_frame():
    # noise n ~ N(0, level) added to their YCbCr / 255, so in 0-255 YCrCb units: Y gets sqrt(level) * 255^2 / 219,
    # Cb and Cr sqrt(level) * 255^2 / 224; RGB: R = Y + 1.403 Cr', G = Y - 0.714 Cr' - 0.344 Cb', B = Y + 1.773 Cb'
    level = 0.001  # small enough that a mid-grey frame does not clip
    s_y, s_c = math.sqrt(level) * 255**2 / 219, math.sqrt(level) * 255**2 / 224
    expected = [math.hypot(s_y, 1.403 * s_c), math.sqrt(s_y**2 + (0.714 * s_c) ** 2 + (0.344 * s_c) ** 2),
                math.hypot(s_y, 1.773 * s_c)]  # fmt: skip
    flat = np.full((512, 512, 3), 128, np.uint8)
    out = Perturbation("color_noise", level).apply_frame(flat, 0, "x").astype(np.float64)
    measured = out.reshape(-1, 3).std(axis=0)
    # truncation adds uniform rounding noise of variance 1/12
    np.testing.assert_allclose(measured, np.sqrt(np.square(expected) + 1 / 12), rtol=0.01)


# ------------------------------------------------------------------ agreement at every level


FRAMES = [face_like(256, 0), face_like(0, 1, shape=(300, 260)), face_like(0, 2, shape=(97, 131))]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_operations_equal_the_reference_at_every_level(name):
    for frame in FRAMES:
        for level in PERTURBATIONS[name].levels:
            ours = Perturbation(name, float(level)).apply_frame(frame, 0, "x")
            assert (ours == reference_rgb(name, frame, level)).all(), (name, level, frame.shape)


def test_color_noise_has_the_reference_distribution_at_every_level():
    frame = face_like(512, 3)
    for level in PERTURBATIONS["color_noise"].levels:
        ours = Perturbation("color_noise", level).apply_frame(frame, 0, "x").astype(np.float64) - frame
        ref = reference_rgb("color_noise", frame, level, seed=1).astype(np.float64) - frame
        for c in range(3):
            assert ours[..., c].std() == pytest.approx(ref[..., c].std(), rel=0.01), (level, c)
            assert abs(ours[..., c].mean() - ref[..., c].mean()) < 0.01 * ref[..., c].std() + 0.05, (level, c)


@pytest.mark.parametrize("size", [224, 256, 384, 512])
def test_block_occlusion_paints_the_reference_count_at_every_level(size):
    frame = face_like(size, 4)
    for level in PERTURBATIONS["block_occlusion"].levels:
        ours = Perturbation("block_occlusion", float(level)).apply_frame(frame, 0, "x")
        ref = reference_rgb("block_occlusion", frame, level)
        # both paint min // 256 * level blocks: with few overlaps the painted areas match in expectation
        expected_blocks = size // 256 * level
        assert (ours != frame).any(axis=-1).sum() <= expected_blocks * 64
        if expected_blocks == 0:
            assert (ours == frame).all() and (ref == frame).all()
        else:
            painted = [(x == 128).all(axis=-1).sum() for x in (ours, ref)]
            assert abs(painted[0] - painted[1]) <= 0.25 * painted[1] + 64, (size, level, painted)
        # nothing in the last row or column: corners stop at side - 1 - 8
        assert (ours[-1] == frame[-1]).all() and (ours[:, -1] == frame[:, -1]).all()


# ------------------------------------------------------------------ GenD's grid: torchvision, as GenD's script


def test_gend_suite_is_gends_script_level_for_level():
    assert dict(SUITES["gend"]) == {
        "jpeg_quality": (100, 80, 60, 40, 20, 10),
        "blur": (0.5, 1, 1.5, 2, 3),  # GenD pairs (kernel, sigma): (5, 0.5), (7, 1), (11, 1.5), (13, 2), (19, 3)
        "resize": (224, 112, 64),
        "noise": (0.01, 0.03, 0.05, 0.1, 0.2),
    }
    assert dict(SUITES["gend_extra"]) == {"noise": (0.02,)}  # ours, not GenD's


@pytest.mark.parametrize("sigma, kernel", [(0.5, 5), (1, 7), (1.5, 11), (2, 13), (3, 19)])
def test_gend_blur_equals_torchvision_gaussian_blur(sigma, kernel):
    from torchvision.transforms.v2 import functional as tvf

    frame = face_like(0, 5, shape=(64, 80))
    ours = Perturbation("blur", float(sigma)).apply_frame(frame, 0, "x")
    theirs = tvf.gaussian_blur(torch.from_numpy(frame).permute(2, 0, 1), [kernel, kernel], [sigma, sigma])
    diff = np.abs(ours.astype(int) - theirs.permute(1, 2, 0).numpy().astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999, (sigma, diff.max(), (diff == 0).mean())


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.05, 0.1, 0.2])
def test_gend_noise_has_torchvisions_distribution(sigma):
    from torchvision.transforms import v2
    from torchvision.transforms.functional import to_pil_image

    frame = face_like(384, 6)
    ours = Perturbation("noise", sigma).apply_frame(frame, 0, "x").astype(np.float64) - frame
    torch.manual_seed(0)
    tensor = v2.GaussianNoise(0.0, sigma)(torch.from_numpy(frame).permute(2, 0, 1).float() / 255)  # ToTensor
    theirs = np.asarray(to_pil_image(tensor)).astype(np.float64) - frame  # ToPILImage: x * 255, truncated
    assert ours.std() == pytest.approx(theirs.std(), rel=0.01)
    assert abs(ours.mean() - theirs.mean()) < 0.02 * theirs.std() + 0.02


@pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
def test_gend_jpeg_is_close_to_torchvisions():
    from torchvision.io import decode_jpeg, encode_jpeg

    frame = face_like(128, 7)
    for quality in PERTURBATIONS["jpeg_quality"].levels:
        ours = Perturbation("jpeg_quality", float(quality)).apply_frame(frame, 0, "x")
        theirs = decode_jpeg(encode_jpeg(torch.from_numpy(frame).permute(2, 0, 1), quality=int(quality)))
        assert psnr(ours, theirs.permute(1, 2, 0).numpy()) >= 40, quality
