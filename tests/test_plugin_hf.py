"""Hugging Face CLIP layouts through stock mergekit: every base layout x every method.

Bases: ``CLIPVisionModel`` (keys with and without ``vision_model.``), ``CLIPVisionModelWithProjection``,
``CLIPModel`` (its vision tower) and ``CLIPForImageClassification``; ingredients: fine-tuned
``CLIPForImageClassification`` detectors, one with its labels stored in reverse order. ``mergekit-yaml`` runs
TIES for each base layout; ``mergekit-multi`` (also stock) runs all 20 methods per layout in one process to
keep the start-up cost down. Merged classifiers are loaded by transformers itself and compared with ours.
"""

from __future__ import annotations

import copy
import json
import subprocess

import pytest
import torch
import yaml
from convert_support import TINY_CLIP_VISION, TINY_TEXT
from merge_support import ALL_METHODS, BIN, WEIGHTS, mergekit_env, recipe, run_many, tensors
from safetensors.torch import save_file
from transformers import (
    CLIPConfig,
    CLIPForImageClassification,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)

from mergekit_clip.detector.io import load_detector

VISION, TEXT = TINY_CLIP_VISION, TINY_TEXT
BASE_LAYOUTS = ("vision", "vision_unprefixed", "vision_projection", "clip_model", "classifier")


def _vision_state(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("vision_model.")}


@pytest.fixture(scope="module")
def hf_family(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    vcfg = CLIPVisionConfig(**VISION)
    pretrained = CLIPVisionModelWithProjection(vcfg)
    vision = _vision_state(pretrained)
    paths = {}

    def save(model, name, **config_updates):
        state = model.state_dict()
        state.update({k: v.clone() for k, v in vision.items() if k in state})
        model.load_state_dict(state)
        for key, value in config_updates.items():
            setattr(model.config, key, value)
        model.save_pretrained(root / name)
        paths[name] = root / name

    save(CLIPVisionModel(vcfg), "vision")
    save(pretrained, "vision_projection")
    save(CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=32)), "clip_model")
    cls_cfg = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=32, num_labels=2)
    cls_cfg.id2label, cls_cfg.label2id = {0: "real", 1: "fake"}, {"real": 0, "fake": 1}
    save(CLIPForImageClassification(cls_cfg), "classifier")
    # The same tower saved from a bare CLIPVisionTransformer: keys without `vision_model.`.
    unprefixed = root / "vision_unprefixed"
    unprefixed.mkdir()
    (unprefixed / "config.json").write_text((paths["vision"] / "config.json").read_text())
    save_file(
        {k[len("vision_model.") :]: v.contiguous() for k, v in vision.items()}, str(unprefixed / "model.safetensors")
    )
    paths["vision_unprefixed"] = unprefixed

    gen = torch.Generator().manual_seed(1)
    for i in range(3):
        model = CLIPForImageClassification(copy.deepcopy(cls_cfg))  # configs are shared by reference
        state = model.state_dict()
        for key, value in vision.items():
            state[key] = value + 0.02 * torch.randn(value.shape, generator=gen) * (
                value.std() if value.numel() > 1 else 1
            )
        state["classifier.weight"] = torch.randn(state["classifier.weight"].shape, generator=gen)
        state["classifier.bias"] = torch.randn(2, generator=gen) * 0.1
        model.load_state_dict(state)
        if i == 1:  # stored with the opposite label order
            model.config.id2label, model.config.label2id = {0: "fake", 1: "real"}, {"fake": 0, "real": 1}
        model.save_pretrained(root / f"ft{i}")
        paths[f"ft{i}"] = root / f"ft{i}"
    return paths


@pytest.fixture(scope="module")
def hf_merges(hf_family, tmp_path_factory):
    work = tmp_path_factory.mktemp("hf_merges")
    fts = [hf_family[f"ft{i}"] for i in range(3)]
    jobs = {f"ties_{layout}": (recipe("ties", hf_family[layout], fts), work) for layout in BASE_LAYOUTS}
    jobs["linear_unprefixed"] = (recipe("linear", hf_family["vision_unprefixed"], fts), work)
    yaml_runs = run_many(jobs)
    multi_runs = {}
    for layout in BASE_LAYOUTS:
        # A merge named like a method would read `merge_method: <name>` as a dependency: prefix the names.
        docs = [dict(name=f"merge_{m}", **recipe(m, hf_family[layout], fts)) for m in ALL_METHODS]
        config = work / f"multi_{layout}.yml"
        config.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        out = work / f"multi_{layout}"
        cmd = [str(BIN / "mergekit-multi"), str(config), "--intermediate-dir", str(out)]
        multi_runs[layout] = (subprocess.run(cmd, capture_output=True, text=True, env=mergekit_env(), timeout=900), out)
    return {"yaml": {k: (p, work / k) for k, p in yaml_runs.items()}, "multi": multi_runs}


def _probabilities(path, images):
    return load_detector(path).fake_probability(images)


IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("layout", BASE_LAYOUTS)
def test_mergekit_yaml_ties_on_hf_layout(layout, hf_merges):
    proc, out = hf_merges["yaml"][f"ties_{layout}"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["CLIPForImageClassification"]
    assert config["id2label"] == {"0": "real", "1": "fake"}
    ours = _probabilities(out, IMAGES)
    theirs = CLIPForImageClassification.from_pretrained(out).eval()
    with torch.no_grad():
        reference = torch.softmax(theirs(pixel_values=IMAGES).logits, dim=-1)[:, 1]
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", BASE_LAYOUTS)
def test_all_methods_on_hf_layout(layout, hf_merges):
    proc, out = hf_merges["multi"][layout]
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in ALL_METHODS:
        probs = _probabilities(out / f"merge_{method}", IMAGES)
        assert torch.isfinite(probs).all(), method
        assert json.loads((out / f"merge_{method}" / "merge_log.json").read_text())["method"] == method


def test_linear_on_unprefixed_base_matches_average(hf_merges, hf_family):
    proc, out = hf_merges["yaml"]["linear_unprefixed"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    sds = [tensors(hf_family[f"ft{i}"]) for i in range(3)]
    for key in ("classifier.weight", "classifier.bias"):
        sds[1][key] = sds[1][key][[1, 0]]  # aligned to (real, fake) by the head policy
    merged = tensors(out)
    expected_keys = {k for k in sds[0] if k.startswith(("vision_model.", "classifier."))} - {
        "vision_model.embeddings.position_ids"
    }
    assert expected_keys <= set(merged)
    for key in expected_keys:
        expected = sum(w * sd[key] for w, sd in zip(WEIGHTS, sds)) / sum(WEIGHTS)
        torch.testing.assert_close(merged[key], expected, rtol=1e-5, atol=1e-6)
