"""Helpers for the merge-method tests: a tiny DeepfakeBench-format dataset for ``mergekit-clip stats``."""

from __future__ import annotations

import json

import cv2
import numpy as np

DATASET = "Tiny-Set"


def write_tiny_dataset(root, videos: int = 4, frames: int = 3, size: int = 32, seed: int = 0):
    """A DeepfakeBench-format dataset: half real, half fake videos of random PNG frames."""
    rng = np.random.default_rng(seed)
    groups: dict = {"FF-real": {}, "FF-DF": {}}
    for v in range(videos):
        label = "FF-real" if v % 2 == 0 else "FF-DF"
        paths = []
        for f in range(frames):
            rel = f"frames/v{v}/{f}.png"
            (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "data" / rel), rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8))
            paths.append(rel)
        for split in ("train", "val", "test"):
            groups[label].setdefault(split, {})[f"v{v}"] = {"label": label, "frames": paths}
    (root / "json").mkdir(exist_ok=True)
    (root / "json" / f"{DATASET}.json").write_text(json.dumps({DATASET: groups}))
    return root / "json", root / "data"
