"""Helpers for recipe and study tests: a tiny clip-train family folder and a tiny DeepfakeBench dataset."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from merge_support import finetune_of

from mergekit_clip.detector.io import create_detector, save_detector

# name, mode, lr, seed: the rows clip-train's summary.json would hold for a 2 x 2 sweep plus a linear probe
FAMILY_ROWS = (
    ("lp_s0", "linear_probe", 1e-2, 0),
    ("ft_lr3e-4_s0", "full_finetune", 3e-4, 0),
    ("ft_lr3e-4_s1", "full_finetune", 3e-4, 1),
    ("ft_lr1e-3_s0", "full_finetune", 1e-3, 0),
    ("ft_lr1e-3_s1", "full_finetune", 1e-3, 1),
)


def make_family(root: Path, spec, rows=FAMILY_ROWS, dataset: str = "Tiny-FF") -> Path:
    """A folder laid out as clip-train writes it: base/, ingredients/<name>/, summary.json."""
    base = create_detector(spec, seed=0)
    save_detector(base, root / "base", provenance={"role": "base"})
    summary = []
    for i, (name, mode, lr, seed) in enumerate(rows):
        model = create_detector(spec, seed=0)
        finetune_of(model, seed=10 + i, scale=0.05)
        heldout = {"dataset": dataset, "split": "val", "auc": 0.5 + 0.05 * i}
        provenance = {"recipe": "clip-train", "mode": mode, "seed": seed, "lr": lr, "heldout": heldout}
        save_detector(model, root / "ingredients" / name, provenance=provenance)
        summary.append({"name": name, "path": str(root / "ingredients" / name), "mode": mode, "seed": seed,
                        "lr": lr, "weight_decay": 0.05, "augment_strength": 0.0, "train_dataset": dataset,
                        "heldout": heldout})  # fmt: skip
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    return root


def make_dataset(json_root: Path, data_root: Path, name: str, videos: int = 6, frames: int = 2, seed: int = 0) -> None:
    """``videos`` real and ``videos`` fake 32 px videos per split (train/val/test); fakes are brighter."""
    rng = np.random.default_rng(seed)
    groups: dict = {"DF_real": {}, "DF_fake": {}}
    for split in ("train", "val", "test"):
        for label, group in ((0, "DF_real"), (1, "DF_fake")):
            node = groups[group].setdefault(split, {})
            for v in range(videos):
                video = f"{name}/{split}/{group}/{v:03d}"
                paths = []
                for f in range(frames):
                    img = rng.integers(0, 160, (32, 32, 3), dtype=np.uint8) + np.uint8(60 * label)
                    file = data_root / video / f"{f}.png"
                    file.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(file), img)
                    paths.append(f"{video}/{f}.png")
                node[f"{v:03d}"] = {"label": group, "frames": paths}
    json_root.mkdir(parents=True, exist_ok=True)
    (json_root / f"{name}.json").write_text(json.dumps({name: groups}))
