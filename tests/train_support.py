"""Tiny DeepfakeBench-format data and configs for the clip-train tests (a few dozen 32 px PNG frames).

A fake frame carries a reddish soft blob over a random smooth background (it survives the training augmentation),
so a 2-layer ViT separates the classes within a few epochs; real frames have none.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

LABELS = {0: "CelebDFv2_real", 1: "CelebDFv2_fake"}


def _frame(rng: np.random.Generator, fake: bool, size: int = 32) -> np.ndarray:
    base = rng.uniform(90, 160) + rng.uniform(-15, 15, size=3)
    ramp = np.linspace(-30, 30, size)[None, :, None] * rng.uniform(-1, 1)
    image = base[None, None, :] + ramp + rng.normal(0, 4, size=(size, size, 3))
    if fake:  # a bright, soft-edged blob: survives flips, blur and JPEG re-compression
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.uniform(size * 0.3, size * 0.7, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 5) ** 2))[..., None]
        image += blob * np.array([80.0, -20.0, -40.0])  # a reddish patch
    return np.clip(image, 0, 255).astype(np.uint8)


def make_dataset(root: Path, name: str, *, videos: dict[str, int] | None = None, frames: int = 4, seed: int = 0):
    """Write ``root/json/<name>.json`` and frames under ``root/data/<name>/...``; returns (json_root, data_root)."""
    videos = videos or {"train": 8, "val": 6, "test": 4}
    rng = np.random.default_rng(seed)
    json_root, data_root = root / "json", root / "data"
    json_root.mkdir(parents=True, exist_ok=True)
    groups: dict = {LABELS[0]: {}, LABELS[1]: {}}
    for split, count in videos.items():
        for label in (0, 1):
            entries = {}
            for v in range(count // 2 if count > 1 else count):
                vid = f"{split}_{label}_{v:02d}"
                paths = []
                for f in range(frames):
                    rel = f"{name}/{LABELS[label]}/{vid}/{f * 5}.png"
                    file = data_root / rel
                    file.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(file), cv2.cvtColor(_frame(rng, bool(label)), cv2.COLOR_RGB2BGR))
                    paths.append(rel.replace("/", "\\"))  # DeepfakeBench JSONs use Windows separators
                entries[vid] = {"label": LABELS[label], "frames": paths}
            groups[LABELS[label]].setdefault(split, {}).update(entries)
    (json_root / f"{name}.json").write_text(json.dumps({name: groups}))
    return json_root, data_root


def tiny_config(root: Path, out: Path, **overrides) -> dict:
    """A raw config dict: width-64, 2-layer ViT on 32 px, a handful of steps."""
    cfg = {
        "output": str(out),
        "backbone": {"width": 64, "layers": 2, "heads": 4, "patch_size": 8, "image_size": 32, "embed_dim": 32},
        "data": {
            "json_root": str(root / "json"),
            "data_root": str(root / "data"),
            "train_dataset": "TinyA",
            "batch_size": 8,
            "eval_batch_size": 32,
        },
        "optim": {"epochs": 2, "lr": 1e-3, "probe_epochs": 30, "probe_lr": 1e-2, "warmup_fraction": 0.1},
        "sweep": {"modes": ["full_finetune"], "seeds": [0]},
        "device": "cpu",
        "threads": 1,  # the test machine's 2 cores are shared: one thread avoids OpenMP oversubscription
    }
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg
