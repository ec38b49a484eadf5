"""Synthetic benchmark: format quirks present, readable by the reader, valid, disjoint splits, deterministic."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mergekit_clip.data.cli import data
from mergekit_clip.data.deepfakebench import load_frames
from mergekit_clip.data.masks import mask_path_for, read_mask, require_masks
from mergekit_clip.data.pretext import OPERATIONS, PRETEXT_DATASET, _process, render_scene
from mergekit_clip.data.synthetic import (
    IMAGE_SIZE,
    PRESETS,
    SHARED_GRID,
    STYLES,
    PresetSize,
    load_synth_info,
    synthesize,
)
from mergekit_clip.data.transforms import read_image
from mergekit_clip.data.validate import validate_dataset


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module", autouse=True)
def _smaller_presets():
    # same generators, fewer videos: keeps this file fast on 2 shared cores (the CLI reads the same dict)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "small", PresetSize(24, 4))
        mp.setitem(PRESETS, "pretrain", PresetSize(60, 1))
        yield


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("s") / "bench", "small", seed=0)


@pytest.fixture(scope="module")
def pretext(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("p") / "pretext", "pretrain", seed=0)


def test_info_and_manifest(synth):
    assert synth.train_dataset in synth.datasets and len(synth.datasets) >= 4
    assert synth.image_size == IMAGE_SIZE == 32 and synth.json_root.is_dir() and synth.data_root.is_dir()
    assert load_synth_info(synth.json_root.parent) == synth


def test_json_styles_present(synth):
    texts = {d: (synth.json_root / f"{d}.json").read_text() for d in synth.datasets}
    assert any("\\\\" in t for t in texts.values())  # Windows separators (escaped in JSON)
    assert any('"./' in t for t in texts.values())
    nested = [d for d in synth.datasets if '"c23"' in texts[d] and '"c40"' in texts[d]]
    assert nested
    c23 = load_frames(f"{nested[0]}", "test", json_root=synth.json_root, data_root=synth.data_root)
    c40 = load_frames(f"{nested[0]}_c40", "test", json_root=synth.json_root, data_root=synth.data_root)
    assert len(c23) == len(c40) and all("/c40/" in str(r.path) for r in c40)
    # same content, stronger compression: frames differ but only a little
    a, b = read_image(c23[0].path).astype(int), read_image(c40[0].path).astype(int)
    assert 0 < np.abs(a - b).mean() < 20


def test_every_dataset_valid_balanced_and_disjoint(synth):
    for name in synth.datasets:
        report = validate_dataset(name, json_root=synth.json_root, data_root=synth.data_root, progress=False)
        assert report.findings == {}, (name, report.findings)
        roots = {"json_root": synth.json_root, "data_root": synth.data_root}
        splits = {s: load_frames(name, s, **roots) for s in ("train", "val", "test")}
        for recs in splits.values():
            labels = {r.label for r in recs}
            assert labels == {0, 1}
        ids = {s: {r.video_id for r in recs} for s, recs in splits.items()}
        assert not ids["train"] & ids["test"] and not ids["train"] & ids["val"]
        # a fake's target identity never appears in another split: split by the first three digits (target id)
        targets = {s: {re.search(r"\d{3}", v.rsplit("/", 1)[-1]).group() for v in ids[s]} for s in ids}
        assert not targets["train"] & targets["test"], name
        frame = read_image(splits["test"][0].path)
        assert frame.shape == (32, 32, 3)


def test_frames_listed_lexicographically_read_numerically(synth):
    doc = json.loads((synth.json_root / "Synth-CDF.json").read_text())
    group = next(iter(doc["Synth-CDF"].values()))
    frames = next(iter(group["train"].values()))["frames"]
    names = [int(Path(f).stem) for f in frames]
    assert names != sorted(names)  # the JSON order is not numeric ...
    recs = load_frames("Synth-CDF", "train", json_root=synth.json_root, data_root=synth.data_root)
    first_video = [int(r.path.stem) for r in recs if r.video_id == recs[0].video_id]
    assert first_video == sorted(names)  # ... the reader's is


def test_deterministic_per_seed(synth, tmp_path):
    again = CliRunner().invoke(data, ["synth", str(tmp_path / "again"), "--preset", "small", "--seed", "0"])
    assert again.exit_code == 0, again.output
    assert _digest(tmp_path / "again") == _digest(synth.json_root.parent)
    refused = CliRunner().invoke(data, ["synth", str(tmp_path / "again")])
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    other = synthesize(tmp_path / "seed1", "small", seed=1)
    a = read_image(load_frames("Synth-UADFV", "test", json_root=other.json_root, data_root=other.data_root)[0].path)
    b = read_image(
        load_frames("Synth-UADFV", "test", json_root=synth.json_root, data_root=synth.data_root)[0].path
    )
    assert not np.array_equal(a, b)


def _trace(path: Path, freq: tuple[float, float]) -> float:
    """Amplitude of the grey image's component at spatial frequency ``freq`` (cycles/px) in the face centre."""
    img = read_image(path).astype(float).mean(2)[10:22, 10:22]  # 12 px: whole periods of 2, 3 and 4 px
    yy, xx = np.mgrid[10:22, 10:22]
    phase = 2 * np.pi * (freq[0] * xx + freq[1] * yy)
    return float(np.hypot((img * np.cos(phase)).mean(), (img * np.sin(phase)).mean()))


def test_each_method_leaves_its_fingerprint_and_every_fake_the_shared_grid(synth):
    # independent measure (a Fourier coefficient of the decoded frame), not the generator's own code
    roots = {"json_root": synth.json_root, "data_root": synth.data_root}
    for style in STYLES:
        recs = load_frames(style.name, "test", **roots) + load_frames(style.name, "train", **roots)
        reals = [r for r in recs if r.label == 0]
        for forgery in style.forgeries:
            fakes = [r for r in recs if r.label == 1 and f"/{forgery.method}" in str(r.path)]
            assert fakes, (style.name, forgery.method)
            # a face double-compressed before blending (inner_jpeg) loses its grid there
            checks = [(SHARED_GRID.freq, 0.0 if forgery.inner_jpeg else forgery.grid)]
            if forgery.fingerprint is not None:
                checks.append((forgery.fingerprint.freq, forgery.fingerprint.colour[0]))
            for freq, amplitude in checks:
                if amplitude == 0 or style.name == "Synth-DFDC":
                    continue  # DFDC's heavy JPEG (45-70) erases most of its traces: that makes it the hard set
                real = np.median([_trace(r.path, freq) for r in reals])
                fake = np.median([_trace(r.path, freq) for r in fakes])
                assert fake > 1.25 * real, (style.name, forgery.method, freq, real, fake)


def test_ff_layout_shared_names_and_one_dataset_per_method(synth):
    assert synth.method_datasets == ["Synth-FF-DF", "Synth-FF-F2F", "Synth-FF-FS", "Synth-FF-NT"]
    assert not set(synth.method_datasets) & set(synth.datasets)  # training subsets, never test sets
    roots = {"json_root": synth.json_root, "data_root": synth.data_root}
    full = load_frames("Synth-FF", "train", **roots)
    names = {}
    for r in full:
        if r.label == 1:
            names.setdefault(r.video_id.split("/")[-1], set()).add(r.video_id.split("/")[2])
    assert names and all(len(methods) == 4 for methods in names.values())  # `000_003` under every method
    reals = {r.video_id for r in full if r.label == 0}
    assert len(names) == len(reals)  # every method fakes every real (target) video
    for name in synth.method_datasets:
        report = validate_dataset(name, json_root=synth.json_root, data_root=synth.data_root, progress=False)
        assert report.findings == {}, (name, report.findings)
        for split in ("train", "val", "test"):
            recs = load_frames(name, split, **roots)
            whole = load_frames("Synth-FF", split, **roots)
            assert {r.video_id for r in recs if r.label == 0} == {r.video_id for r in whole if r.label == 0}
            fakes = {r.video_id.split("/")[2] for r in recs if r.label == 1}
            assert len(fakes) == 1  # one method per dataset
    # the DeepfakeBench reader's parent-folder ids pool the four methods' fakes of one target
    parent = load_frames("Synth-FF", "train", **roots, video_id_mode="parent")
    assert len({r.video_id for r in parent if r.label == 1}) == len(names)


def _highpass(img: np.ndarray) -> float:
    """Mean absolute 4-neighbour Laplacian of the grey image: fine detail (noise, texture, sharp edges)."""
    g = img.astype(float).mean(2)
    return float(np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]).mean())


def test_pretext_corpus_is_a_separate_valid_binary_task(pretext, synth):
    assert pretext.datasets == [PRETEXT_DATASET] and pretext.train_dataset == PRETEXT_DATASET
    assert pretext.preset == "pretrain" and load_synth_info(pretext.json_root.parent) == pretext
    assert not set(pretext.datasets) & set(synth.datasets)  # never a detection (test) dataset
    assert [p.name for p in pretext.json_root.iterdir()] == [f"{PRETEXT_DATASET}.json"]
    report = validate_dataset(PRETEXT_DATASET, json_root=pretext.json_root, data_root=pretext.data_root, progress=False)
    assert report.findings == {}, report.findings
    roots = {"json_root": pretext.json_root, "data_root": pretext.data_root}
    splits = {s: load_frames(PRETEXT_DATASET, s, **roots) for s in ("train", "val", "test")}
    for recs in splits.values():
        labels = [r.label for r in recs]
        assert labels.count(0) == labels.count(1) > 0  # every scene once untouched, once processed
    scenes = {s: {r.video_id.rsplit("/", 1)[-1] for r in recs} for s, recs in splits.items()}
    assert not scenes["train"] & scenes["test"] and not scenes["train"] & scenes["val"]
    assert sum(len(v) for v in scenes.values()) == PRESETS["pretrain"].real_videos


def test_pretext_processed_frames_lost_detail(pretext):
    # every default operation removes fine detail, so processed frames are smoother on average (independent
    # Laplacian measure, not the generator's own code)
    recs = load_frames(PRETEXT_DATASET, "train", json_root=pretext.json_root, data_root=pretext.data_root)
    energy = {label: np.mean([_highpass(read_image(r.path)) for r in recs if r.label == label]) for label in (0, 1)}
    assert energy[1] < 0.85 * energy[0], energy


@pytest.mark.parametrize("op", OPERATIONS)
def test_pretext_operations_remove_detail(op):
    rng = np.random.default_rng(3)
    img = render_scene(rng, 64) + rng.normal(0, 6, (64, 64, 3)).astype(np.float32)
    out = _process(img, op, rng)
    assert out.shape == img.shape and np.isfinite(out).all()
    assert _highpass(out) < 0.8 * _highpass(img)


def test_pretext_deterministic_and_refuses_unknown_preset(pretext, tmp_path):
    again = CliRunner().invoke(data, ["synth", str(tmp_path / "again"), "--preset", "pretrain", "--seed", "0"])
    assert again.exit_code == 0, again.output
    assert _digest(tmp_path / "again") == _digest(pretext.json_root.parent)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        synthesize(tmp_path / "huge", "huge")  # type: ignore[arg-type]
    assert not (tmp_path / "huge").exists()


def test_every_fake_frame_has_its_blend_mask_at_the_deepfakebench_path(synth):
    # independent of the generator: a fake frame differs from its target's real frame (same scene, same frame
    # name, same level) inside the swapped region, and only by camera noise outside it
    roots = {"json_root": synth.json_root, "data_root": synth.data_root}
    for name in [*synth.datasets, *synth.method_datasets]:
        recs = [r for s in ("train", "val", "test") for r in load_frames(name, s, **roots)]
        require_masks(recs, what=name)  # every fake frame has its mask file
        assert all(r.mask is None for r in recs if r.label == 0)
        if name in synth.method_datasets:
            continue

        def key(r):
            return "/c40/" in str(r.path), re.search(r"\d{3}", r.path.parent.name).group(), r.path.name

        reals = {key(r): r.path for r in recs if r.label == 0}
        inside, outside = [], []
        for r in (r for r in recs if r.label == 1):
            assert r.mask == mask_path_for(r.path) and "/masks/" in str(r.mask)
            mask = read_mask(r.mask, IMAGE_SIZE, IMAGE_SIZE)
            # an ellipse of 0.65-0.8 of the face (rx 7.5-9.5 px, ry 10-12 px at 32 px): 100-230 px above 0.5
            assert 90 <= (mask > 0.5).sum() <= 240 and mask.max() > 0.99 and mask.min() < 0.01, (name, r.mask)
            diff = np.abs(read_image(r.path).astype(float) - read_image(reals[key(r)]).astype(float)).mean(2)
            inside.append(diff[mask > 0.9].mean())
            outside.append(diff[mask < 0.02].mean())
        if name != "Synth-DFDC":  # its heavy JPEG (45-70) smears the difference over the frame
            assert np.mean(inside) > 2 * np.mean(outside), (name, np.mean(inside), np.mean(outside))


def test_pretext_processed_frames_have_their_region_masks(pretext):
    recs = [
        r
        for s in ("train", "val", "test")
        for r in load_frames(PRETEXT_DATASET, s, json_root=pretext.json_root, data_root=pretext.data_root)
    ]
    require_masks(recs, what=PRETEXT_DATASET)
    masks = [read_mask(r.mask, IMAGE_SIZE, IMAGE_SIZE) for r in recs if r.label == 1]
    assert masks and all(m.max() > 0.5 for m in masks)  # every processed frame has a (maybe feathered) region
    assert any(m.min() < 0.01 for m in masks) and any(m.min() > 0.99 for m in masks)  # regions and whole frames
