"""Shared fixtures: tiny random detectors (width 64, 2 layers, 32 px) built in seconds on CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (merge_support)


@pytest.fixture(scope="session")
def tiny_spec():
    from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec

    return DetectorSpec(
        backbone=BackboneSpec(image_size=32, patch_size=8, width=64, layers=2, heads=4, embed_dim=32),
        preprocess=PreprocessSpec(image_size=32),
    )
