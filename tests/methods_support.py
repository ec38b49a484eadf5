"""Helpers for the merge-method tests: a tiny DeepfakeBench-format dataset for ``mergekit-clip stats``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from mergekit_clip.plugin.methods import STATS_KINDS

DATASET = "Tiny-Set"

# non-default parameters of every plugin method (most differ from the defaults: a parameter lost on its way to the
# kernel shows as a mismatch); the plugin-method tests of every detector kind use this one table
PLUGIN_PARAMS = {
    "tsv_m": {"alpha": 0.8},
    "iso_c": {"alpha": 1.2},
    "iso_cts": {"alpha": 1.0, "common_fraction": 0.7},
    "cart": {"rank_ratio": 0.2, "scale": 1.0},
    "real_aware": {"shared_rank_ratio": 0.2, "residual_rank_ratio": 0.1},
    "regmean": {"off_diagonal_scale": 0.9},
    "fisher": {},
}


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


def compute_recipe_stats(cfg: dict, root: Path) -> None:
    """Run ``mergekit-clip stats`` for every ingredient of a recipe whose method reads statistics (paths under
    ``root``), on a generated tiny dataset."""
    from mergekit_clip.cli import main

    kind = STATS_KINDS.get(cfg["merge_method"])
    if kind is None:
        return
    json_root, data_root = (root / "_stats_data" / "json", root / "_stats_data" / "data")
    if not json_root.exists():
        (root / "_stats_data").mkdir()
        write_tiny_dataset(root / "_stats_data")
    for model in cfg["models"]:
        args = ["stats", str(root / model["model"]), "--kind", kind, "--dataset", DATASET, "--split", "train"]
        result = CliRunner().invoke(main, [*args, "--json-root", str(json_root), "--data-root", str(data_root)])
        assert result.exit_code == 0, result.output
