"""Image pipeline: decoding, each augmentation taking effect (albumentations 2.x names), CLIP resize/normalise."""

from __future__ import annotations

import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from mergekit_clip.data.deepfakebench import FrameRecord
from mergekit_clip.data.transforms import (
    AugmentSpec,
    FrameDataset,
    FrameDecodeError,
    build_augmentation,
    build_eval_transform,
    build_train_transform,
    make_loader,
    read_image,
)
from mergekit_clip.detector.spec import OPENAI_MEAN, OPENAI_STD, PreprocessSpec

OFF = {"flip_p": 0.0, "rotate_p": 0.0, "blur_p": 0.0, "color_p": 0.0, "jpeg_p": 0.0}


def _image(seed: int = 0, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img + rng.integers(0, 20, img.shape, dtype=np.uint8))


def _only(**on) -> A.Compose:
    return build_augmentation(AugmentSpec(**{**OFF, **on}), seed=0)


def test_read_image_rgb_order_and_errors(tmp_path):
    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    cv2.imwrite(str(tmp_path / "0.png"), img[..., ::-1])
    out = read_image(tmp_path / "0.png")
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and out[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(FrameDecodeError, match="1.png"):
        read_image(tmp_path / "1.png")
    (tmp_path / "2.png").write_bytes(b"garbage")
    with pytest.raises(FrameDecodeError, match="2.png"):
        read_image(tmp_path / "2.png")


def test_all_off_is_identity():
    img = _image()
    assert np.array_equal(build_augmentation(AugmentSpec(**OFF))(image=img)["image"], img)


def test_flip_takes_effect():
    img = _image()
    assert np.array_equal(_only(flip_p=1.0)(image=img)["image"], img[:, ::-1])


def test_rotation_takes_effect():
    img = _image()
    out = _only(rotate_p=1.0, rotate_limit=10)(image=img)["image"]
    assert not np.array_equal(out, img)
    assert (out.reshape(-1, 3) == 0).all(1).sum() > 0  # constant border from the rotation


def test_blur_takes_effect():
    img = _image()
    out = _only(blur_p=1.0, blur_limit=(7, 7))(image=img)["image"].astype(float)
    # blurring lowers the high-frequency energy (sum of squared horizontal differences)
    assert np.square(np.diff(out, axis=1)).sum() < 0.7 * np.square(np.diff(img.astype(float), axis=1)).sum()


def test_colour_jitter_takes_effect():
    img = _image()
    out = _only(color_p=1.0, brightness_limit=0.3, contrast_limit=0.3, hue_shift_limit=20)(image=img)["image"]
    assert np.abs(out.astype(int) - img).mean() > 1.0


def test_jpeg_quality_range_takes_effect():
    img = _image()
    low = _only(jpeg_p=1.0, jpeg_quality=(10, 10))(image=img)["image"]
    high = _only(jpeg_p=1.0, jpeg_quality=(100, 100))(image=img)["image"]
    # independent reference: cv2's own JPEG at quality 10 (albumentations hands cv2 the array as it is)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 10])
    ref = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert ok and np.abs(low.astype(int) - ref).mean() < 1.0
    assert np.abs(low.astype(int) - img).mean() > 2 * np.abs(high.astype(int) - img).mean()


def test_old_albumentations_names_fall_back_silently():
    # Why the tests above exist: the 1.x name is dropped and the 2.x default (quality 99-100) is used.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = A.ImageCompression(quality_lower=10, quality_upper=10, p=1.0)
    assert tuple(old.quality_range) == (99, 100)


def test_strength_scales_and_zero_disables():
    spec = AugmentSpec().scaled(0.5)
    assert spec.flip_p == 0.25 and spec.rotate_limit == 5.0 and spec.jpeg_quality == (70, 100)
    pre = PreprocessSpec(image_size=32)
    assert build_train_transform(pre, strength=0.0).augmentation is None
    with pytest.raises(ValueError, match="strength"):
        AugmentSpec().scaled(-1)


def test_eval_transform_normalises_and_resizes():
    pre = PreprocessSpec(image_size=16)
    img = np.full((40, 32, 3), (10, 128, 250), np.uint8)
    out = build_eval_transform(pre)(img)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    expected = [(c / 255 - m) / s for c, m, s in zip((10, 128, 250), OPENAI_MEAN, OPENAI_STD)]
    assert torch.allclose(out.mean((1, 2)), torch.tensor(expected), atol=1e-4)
    # shortest-side resize + centre crop keeps a centred square; squash keeps everything
    img2 = np.zeros((40, 20, 3), np.uint8)
    img2[:10] = 255  # white band at the top, cropped away by the centre crop
    crop = build_eval_transform(PreprocessSpec(image_size=10, resize_mode="shortest"))(img2)
    squash = build_eval_transform(PreprocessSpec(image_size=10, resize_mode="squash"))(img2)
    assert crop[0].max() < -1.5 and squash[0, 0].min() > 1.5


class _Records:
    @staticmethod
    def make(tmp_path, n: int = 6) -> list[FrameRecord]:
        recs = []
        for i in range(n):
            path = tmp_path / f"v{i % 2}" / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            cv2.imwrite(str(path), _image(i, 24))
            recs.append(FrameRecord(path, i % 2, f"v{i % 2}", "T"))
        return recs


def test_frame_dataset_skip_and_raise(tmp_path):
    recs = _Records.make(tmp_path, 3)
    recs.append(FrameRecord(tmp_path / "missing" / "0.png", 1, "missing", "T"))
    pre = PreprocessSpec(image_size=16)
    skip = FrameDataset(recs, build_eval_transform(pre), on_error="skip")
    image, label, index, ok = skip[3]
    assert (ok, label, index) == (False, 1, 3) and image.shape == (3, 16, 16) and image.abs().sum() == 0
    assert skip[0][3] is True
    with pytest.raises(FrameDecodeError, match="missing"):
        FrameDataset(recs, build_eval_transform(pre))[3]
    loader = make_loader(skip, batch_size=4)
    images, labels, indices, oks = next(iter(loader))
    assert images.shape == (4, 3, 16, 16) and oks.tolist() == [True, True, True, False]
    assert labels.tolist() == [0, 1, 0, 1] and indices.tolist() == [0, 1, 2, 3]


def test_workers_get_distinct_augmentation_streams(tmp_path):
    recs = [_Records.make(tmp_path, 1)[0]] * 8  # the same frame 8 times
    ds = FrameDataset(recs, build_train_transform(PreprocessSpec(image_size=16), strength=1.0, seed=0))
    batches = [b[0] for b in make_loader(ds, batch_size=4, num_workers=2, seed=0)]
    # with a shared generator both workers would emit identical batches
    assert not torch.equal(batches[0], batches[1])
