"""Helpers for the clip-eval tests (no tests here): a tiny DeepfakeBench-format dataset and tiny detectors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from mergekit_clip.detector.io import create_detector, save_detector

# dataset name -> (real label string, fake label string), from DeepfakeBench's default label dict
LABELS = {"Celeb-DF-v2": ("CelebDFv2_real", "CelebDFv2_fake"), "DFDC": ("DFDC_Real", "DFDC_Fake")}


def make_dataset(
    root: Path,
    name: str = "Celeb-DF-v2",
    videos: int = 3,
    frames: int = 3,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> tuple[Path, Path]:
    """``root/json/<name>.json`` + PNG frames under ``root/data``; fakes are brighter so a detector can tell."""
    rng = np.random.default_rng(seed)
    json_root, data_root = root / "json", root / "data"
    json_root.mkdir(parents=True, exist_ok=True)
    real_label, fake_label = LABELS[name]
    doc: dict = {name: {}}
    for group, label in ((f"{name}_real", real_label), (f"{name}_fake", fake_label)):
        doc[name][group] = {}
        for split in splits:
            entries = {}
            for v in range(videos):
                folder = Path(name) / group / split / f"{v:03d}"
                (data_root / folder).mkdir(parents=True, exist_ok=True)
                paths = []
                for f in range(frames):
                    base = 150 if label == fake_label else 90
                    img = rng.integers(0, 80, (*size, 3), dtype=np.uint8) + base
                    cv2.imwrite(str(data_root / folder / f"{f}.png"), img)
                    paths.append(str(folder / f"{f}.png").replace("/", "\\"))  # Windows style, as in the wild
                entries[f"{v:03d}"] = {"label": label, "frames": paths}
            doc[name][group][split] = entries
    (json_root / f"{name}.json").write_text(json.dumps(doc))
    return json_root, data_root


def make_detectors(root: Path, spec, seeds=(0, 1, 2)) -> list[Path]:
    """Detectors sharing one backbone (as fine-tunes do) with different heads and small weight noise."""
    dirs = []
    base = create_detector(spec, seed=100)
    for seed in seeds:
        model = create_detector(spec, seed=100)
        model.load_state_dict(base.state_dict())
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
            model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=gen))
        dirs.append(save_detector(model, root / f"det{seed}", provenance={"heldout": {"dataset": "X", "split": "val"}}))
    return dirs


def make_hf_classifier(root: Path) -> Path:
    """A tiny Hugging Face ``CLIPForImageClassification`` dir with labels real/fake."""
    from transformers import CLIPConfig, CLIPForImageClassification

    config = CLIPConfig(
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=32),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        projection_dim=32, id2label={0: "real", 1: "fake"}, label2id={"real": 0, "fake": 1},
    )  # fmt: skip
    torch.manual_seed(0)
    model = CLIPForImageClassification(config)
    out = root / "hf_clf"
    model.save_pretrained(str(out))
    return out
