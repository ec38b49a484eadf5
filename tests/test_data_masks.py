"""Forgery masks: DeepfakeBench's path rule in every format, the refusal of fake frames without masks, mask
coverage in `data validate`/`summary`, and ForensicsAdapter's boundary target and patch labels against values
worked out by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mergekit_clip.data.cli import data
from mergekit_clip.data.deepfakebench import DatasetError
from mergekit_clip.data.formats import FORMATS, load_frames
from mergekit_clip.data.masks import (
    boundary_patches,
    boundary_target,
    mask_coverage,
    mask_path_for,
    patch_labels,
    read_mask,
    require_masks,
)

FF = "FaceForensics++"
REAL_DIR = f"{FF}/original_sequences/youtube/c23/frames/000"
FAKE_DIR = f"{FF}/manipulated_sequences/Deepfakes/c23/frames/000_003"
FAKE_DIR2 = f"{FF}/manipulated_sequences/FaceSwap/c23/frames/000_003"
# (video dir, label string, frame numbers)
VIDEOS = [(REAL_DIR, "FF-real", [0, 1]), (FAKE_DIR, "FF-DF", [0, 1]), (FAKE_DIR2, "FF-FS", [0, 1])]


def _png(path: Path, value: int = 255, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size), value, np.uint8))


def _write(json_root: Path, data_root: Path, fmt: str, videos=VIDEOS) -> None:
    """The dataset ``Tiny`` (test split) in format ``fmt``, with Windows separators where the format allows."""
    json_root.mkdir(parents=True, exist_ok=True)
    for video, _, numbers in videos:
        for n in numbers:
            _png(data_root / video / f"{n}.png", 128)
    if fmt == "deepfakebench":
        doc: dict = {}
        for video, label, numbers in videos:
            frames = [f"{video}/{n}.png".replace("/", "\\") for n in numbers]
            doc.setdefault(label, {}).setdefault("test", {})[video] = {"label": label, "frames": frames}
        (json_root / "Tiny.json").write_text(json.dumps({"Tiny": doc}))
    else:
        with open(json_root / "Tiny.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            for video, label, numbers in videos:
                w.writerows([f"{video}/{n}.png".replace("/", "\\"), label] for n in numbers)


def test_mask_path_rule_on_strings():
    assert mask_path_for(f"{FAKE_DIR}/7.png".replace("/", "\\")) == Path(
        f"{FF}/manipulated_sequences/Deepfakes/c23/masks/000_003/7.png"
    )
    assert mask_path_for("./a/frames/b/frames/3.png") == Path("a/frames/b/masks/3.png")  # the last folder
    assert mask_path_for("a/myframes/3.png") is None  # only a folder named exactly 'frames'
    assert mask_path_for("a/b/frames.png") is None  # never the file name


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_gives_fake_frames_their_mask_path(tmp_path, fmt):
    data_root = tmp_path / "data"
    _write(tmp_path / "json", data_root, fmt)
    records = load_frames("Tiny", "test", json_root=tmp_path / "json", data_root=data_root)
    masks = {(r.path.parent.name, r.path.parent.parent.parent.parent.name, r.path.name): r.mask for r in records}
    assert masks == {
        ("000", "youtube", "0.png"): None,  # real: all-zero, no path
        ("000", "youtube", "1.png"): None,
        ("000_003", "Deepfakes", "0.png"): data_root / FF / "manipulated_sequences/Deepfakes/c23/masks/000_003/0.png",
        ("000_003", "Deepfakes", "1.png"): data_root / FF / "manipulated_sequences/Deepfakes/c23/masks/000_003/1.png",
        ("000_003", "FaceSwap", "0.png"): data_root / FF / "manipulated_sequences/FaceSwap/c23/masks/000_003/0.png",
        ("000_003", "FaceSwap", "1.png"): data_root / FF / "manipulated_sequences/FaceSwap/c23/masks/000_003/1.png",
    }


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_refusal_counts_fake_frames_without_masks_and_names_the_first(tmp_path, fmt):
    data_root = tmp_path / "data"
    _write(tmp_path / "json", data_root, fmt)
    records = load_frames("Tiny", "test", json_root=tmp_path / "json", data_root=data_root)
    with pytest.raises(DatasetError) as e:
        require_masks(records, what="Tiny test")
    first = data_root / FF / "manipulated_sequences/Deepfakes/c23/masks/000_003/0.png"
    assert str(e.value).startswith(f"Tiny test: 4 of 4 fake frames have no forgery mask (first: {first}); ")
    assert "mode forensics_adapter needs them" in str(e.value) and "\n" not in str(e.value)
    for n in (0, 1):
        _png(data_root / FF / "manipulated_sequences/Deepfakes/c23/masks/000_003" / f"{n}.png")
    with pytest.raises(DatasetError, match=r"2 of 4 fake frames .*FaceSwap/c23/masks/000_003/0\.png"):
        require_masks(records, what="Tiny test")
    coverage = mask_coverage(records)
    assert {k: (v.frames, v.masks) for k, v in coverage.items()} == {("Tiny", 0): (2, 0), ("Tiny", 1): (4, 2)}
    for n in (0, 1):
        _png(data_root / FF / "manipulated_sequences/FaceSwap/c23/masks/000_003" / f"{n}.png")
    require_masks(records, what="Tiny test")  # real frames need none


def test_a_fake_frame_outside_any_frames_folder_is_counted_and_named(tmp_path):
    videos = [("celeb/fake/v0", "CelebDFv2_fake", [0]), ("celeb/real/v0", "CelebDFv2_real", [0])]
    _write(tmp_path / "json", tmp_path / "data", "deepfakebench", videos)
    records = load_frames("Tiny", "test", json_root=tmp_path / "json", data_root=tmp_path / "data")
    assert [r.mask for r in records] == [None, None]
    with pytest.raises(DatasetError, match=r"1 of 1 fake frames .*fake/v0/0\.png, whose path has no 'frames' folder"):
        require_masks(records, what="Tiny")


def test_a_format_without_masks_gives_none(tmp_path, monkeypatch):
    from dataclasses import replace

    _write(tmp_path / "json", tmp_path / "data", "frame_list")
    monkeypatch.setitem(FORMATS, "frame_list", replace(FORMATS["frame_list"], masks=False))
    records = load_frames("Tiny", "test", json_root=tmp_path / "json", data_root=tmp_path / "data")
    assert all(r.mask is None for r in records)
    from mergekit_clip.data.validate import validate_dataset

    report = validate_dataset("Tiny", json_root=tmp_path / "json", data_root=tmp_path / "data", progress=False)
    assert all(s.masks is None for s in report.stats.values()) and "missing_mask" not in report.findings


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_mask_folder_symlinked_out_of_the_root_is_refused(tmp_path, fmt):
    data_root, outside = tmp_path / "data", tmp_path / "elsewhere"
    _write(tmp_path / "json", data_root, fmt)
    outside.mkdir()
    (data_root / FF / "manipulated_sequences/Deepfakes/c23/masks").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetError, match="mask path .*Deepfakes/c23/masks/000_003/0.png.*outside the data root"):
        load_frames("Tiny", "test", json_root=tmp_path / "json", data_root=data_root, follow_symlinks=False)
    records = load_frames("Tiny", "test", json_root=tmp_path / "json", data_root=data_root, allow_outside_root=True)
    assert sum(r.mask is not None for r in records) == 4


def test_read_mask_grey_colour_resized_and_missing(tmp_path):
    assert np.array_equal(read_mask(None, 3, 5), np.zeros((3, 5), np.float32))
    grey = np.array([[0, 51], [102, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert np.allclose(read_mask(tmp_path / "g.png", 2, 2), grey / 255.0)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[..., :] = 255  # white in colour: grey 255
    colour[0, 0] = 0
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    assert np.allclose(read_mask(tmp_path / "c.png", 2, 2), [[0, 1], [1, 1]])
    big = read_mask(tmp_path / "g.png", 4, 6)
    assert big.shape == (4, 6) and big.dtype == np.float32 and 0 <= big.min() and big.max() <= 1
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_mask(tmp_path / "nope.png", 2, 2)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_validate_and_summary_report_mask_coverage(tmp_path, fmt):
    data_root, json_root = tmp_path / "data", tmp_path / "json"
    _write(json_root, data_root, fmt)
    _png(data_root / FF / "manipulated_sequences/Deepfakes/c23/masks/000_003/0.png")
    runner = CliRunner()
    out = runner.invoke(data, ["validate", "--json-root", str(json_root), "--data-root", str(data_root)])
    assert out.exit_code == 0, out.output  # missing masks are a note: only a mode that needs them refuses
    assert "NOTE missing_mask: 3" in out.output
    assert "masks (frames with a mask file, all splits): FF-real 0/2, FF-DF 1/2, FF-FS 0/2" in out.output
    out = runner.invoke(data, ["summary", "--json-root", str(json_root), "--data-root", str(data_root)])
    assert out.exit_code == 0, out.output
    rows = [line.split() for line in out.output.splitlines()]
    assert rows[0][-1] == "masks"
    assert ["Tiny", "FF-DF", "FF-DF", "(fake)", "test", "1", "2", "1"] in rows
    assert ["Tiny", "=", "all", "fake", "test", "2", "4", "1"] in rows
    out = runner.invoke(data, ["summary", "--json-root", str(json_root)])
    assert ["Tiny", "=", "all", "fake", "test", "2", "4", "-"] in [line.split() for line in out.output.splitlines()]


# ---------------------------------------------------------------- targets, by hand


def test_boundary_target_by_hand():
    # columns 0 0 1 1: the blur [1, 2, 1] / 4 (cv2's 3x3 kernel for sigma 0), edges reflected without repeating
    # the edge pixel, gives 0, 1/4, 3/4, 1 per row; 4 b (1 - b) = 0, 3/4, 3/4, 0
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert torch.allclose(boundary_target(mask), torch.tensor([[0.0, 0.75, 0.75, 0.0]] * 3))
    # one white pixel in a corner: reflection gives it weight (1/2)(1/2) = 1/4 -> 4 (1/4)(3/4) = 3/4; its
    # neighbour (0, 1) gets (1/4)(1/2) = 1/8 -> 4 (1/8)(7/8) = 7/16; (1, 1) gets 1/16 -> 15/64
    corner = torch.zeros(4, 4)
    corner[0, 0] = 1.0
    target = boundary_target(corner)
    assert torch.allclose(target[:2, :2], torch.tensor([[0.75, 7 / 16], [7 / 16, 15 / 64]]))
    assert target[2:].abs().max() == 0 and target[:, 2:].abs().max() == 0
    # batches, real (all zero) and fully forged frames
    batch = torch.stack([torch.zeros(4, 4), torch.ones(4, 4), corner])
    out = boundary_target(batch)
    assert out.shape == (3, 4, 4) and out[0].abs().max() == 0 and out[1].abs().max() < 1e-6
    assert torch.allclose(out[2], target)


def test_boundary_target_matches_opencv_as_the_original_calls_it():
    rng = np.random.default_rng(0)
    mask = (rng.random((2, 9, 11)) > 0.5).astype(np.float32)
    for i in range(2):
        b = cv2.GaussianBlur(mask[i] * 255, (3, 3), 0) / 255.0
        assert np.allclose(boundary_target(torch.from_numpy(mask))[i].numpy(), 4 * b * (1 - b), atol=1e-6)
    b = cv2.GaussianBlur(mask[0], (5, 5), 1.3)
    assert np.allclose(boundary_target(torch.from_numpy(mask[0]), kernel_size=5, sigma=1.3), 4 * b * (1 - b), atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        boundary_target(torch.zeros(4, 4), kernel_size=4)


def test_patch_labels_by_hand():
    mask = torch.zeros(33, 33)  # 2 x 2 cells of 16 px; the 33rd row and column are dropped, as the original does
    mask[:2, :13] = 1.0  # cell (0, 0): 26 of 256 white = 0.102 > 0.1 -> forged, partly white -> boundary
    mask[:5, 16:21] = 1.0  # cell (0, 1): 25 of 256 = 0.098 -> not forged
    mask[16:32, :16] = 1.0  # cell (1, 0): all white -> forged, no boundary inside
    mask[16:32, 16:32] = 40 / 255  # cell (1, 1): grey 40 is black (the original: white above 40) ...
    mask[16:19, 16:30] = 41 / 255  # ... grey 41 white: 42 of 256 = 0.164 -> forged, boundary
    mask[32, :] = 1.0
    mask[:, 32] = 1.0
    assert patch_labels(mask).tolist() == [[1, 0], [1, 1]]
    assert boundary_patches(mask).tolist() == [[1, 0], [0, 1]]
    assert patch_labels(mask).dtype == torch.int64
    # a batch, and CLIP's 14-px grid on a 28-px mask: 20 of 196 white = 0.102 -> 1; 19 of 196 = 0.097 -> 0
    small = torch.zeros(2, 28, 28)
    small[0, :2, :10] = 1.0
    small[0, 14:15, 14:28] = 1.0
    small[0, 15, 14:19] = 1.0
    small[1, 14:16, 18:28] = 1.0
    assert patch_labels(small, patch=14).tolist() == [[[1, 0], [0, 0]], [[0, 0], [0, 1]]]
    assert patch_labels(mask, threshold=0.0).tolist() == [[1, 1], [1, 1]]


# ---------------------------------------------------------------- masks through the image pipeline


def _ellipse_frame(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (9, 12), (6, 9), 20, 0, 360, 255, -1)  # off-centre, so a flip moves it
    return np.repeat(mask[..., None], 3, axis=2), mask.astype(np.float32) / 255.0


def _unnormalise(image: torch.Tensor, pre) -> torch.Tensor:
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    return (image * std + mean).mean(0)


def test_mask_moves_with_the_frame_through_augmentation_and_resize():
    from mergekit_clip.data.transforms import AugmentSpec, build_eval_transform, build_train_transform
    from mergekit_clip.detector.spec import PreprocessSpec

    pre = PreprocessSpec(image_size=16)
    image, mask = _ellipse_frame()
    # eval: the mask is resized like the frame (here the frame is the mask in grey)
    frame, moved = build_eval_transform(pre).with_mask(image, mask)
    assert moved.shape == (16, 16) and moved.dtype == torch.float32 and 0 <= moved.min() and moved.max() <= 1
    assert (moved - _unnormalise(frame, pre)).abs().max() < 0.02
    # a certain flip: the mask is the eval mask mirrored
    off = {"blur_p": 0.0, "color_p": 0.0, "jpeg_p": 0.0}
    flip = build_train_transform(pre, augment=AugmentSpec(flip_p=1.0, rotate_p=0.0, **off), seed=0)
    _, flipped = flip.with_mask(image, mask)
    assert torch.allclose(flipped, moved.flip(-1), atol=1e-5)
    # random rotations and flips, with blur/colour/JPEG on the frame only: the mask follows the frame's geometry
    spec = AugmentSpec(flip_p=0.5, rotate_p=1.0, rotate_limit=40, blur_p=0.0, color_p=0.0, jpeg_p=0.0)
    rotate = build_train_transform(pre, augment=spec, seed=3)
    gaps = []
    for _ in range(6):
        frame, rotated = rotate.with_mask(image, mask)
        gaps.append((rotated - _unnormalise(frame, pre)).abs().mean().item())
        assert (rotated - moved).abs().mean() > 0.01  # it did move
    assert max(gaps) < 0.05, gaps


def test_frame_dataset_yields_masks(tmp_path):
    from mergekit_clip.data.transforms import FrameDataset, build_eval_transform, make_loader
    from mergekit_clip.detector.spec import PreprocessSpec

    data_root = tmp_path / "data"
    _write(tmp_path / "json", data_root, "deepfakebench")
    for method in ("Deepfakes", "FaceSwap"):
        for n in (0, 1):
            _png(data_root / FF / "manipulated_sequences" / method / "c23/masks/000_003" / f"{n}.png")
    records = load_frames("Tiny", "test", json_root=tmp_path / "json", data_root=data_root)
    pre = PreprocessSpec(image_size=16)
    dataset = FrameDataset(records, build_eval_transform(pre), masks=True)
    images, labels, _, oks, masks = next(iter(make_loader(dataset, batch_size=6)))
    assert images.shape == (6, 3, 16, 16) and masks.shape == (6, 16, 16) and oks.all()
    assert masks[labels == 0].abs().max() == 0 and (masks[labels == 1].amax(dim=(1, 2)) > 0.9).all()
    assert len(FrameDataset(records, build_eval_transform(pre))[0]) == 4  # without masks: as before
    with pytest.raises(TypeError, match="with_mask"):
        FrameDataset(records, lambda image: image, masks=True)
