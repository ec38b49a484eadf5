"""Every detector the project writes carries a Hugging Face model card whose front matter parses and says what the
detector is: ingredients (held-out scores from the provenance), merges from stock ``mergekit-yaml`` (the merged
models as ``base_model``, the recipe), HF exports, and scores added later from a study.json or an eval report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner
from huggingface_hub import ModelCard
from merge_support import finetune_of

from mergekit_clip.cli import main as mk_main
from mergekit_clip.convert.export_hf import export_hf
from mergekit_clip.detector.io import create_detector, save_detector


def parsed(folder) -> ModelCard:
    card = ModelCard.load(folder / "README.md")  # validates the YAML front matter, as the Hub does on upload
    assert card.text.lstrip().startswith("# ")
    return card


def test_ingredient_card_carries_its_held_out_scores(tmp_path, tiny_spec):
    held = {"dataset": "FaceForensics++", "split": "val", "auc": 0.9375, "acc": 0.875}
    prov = {"recipe": "clip-train", "mode": "full_finetune", "seed": 1, "lr": 3e-4, "train_dataset": "FaceForensics++",
            "base": "/runs/family/base", "heldout": held}  # fmt: skip
    save_detector(create_detector(tiny_spec, seed=0), tmp_path / "ft", provenance=prov)
    card = parsed(tmp_path / "ft")
    data = card.data
    assert data.library_name == "mergekit-clip" and "deepfake-detection" in data.tags
    assert data.base_model == ["/runs/family/base"] and data.datasets == ["FaceForensics++"]
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {("FaceForensics++", "frame_auc"): 0.9375, ("FaceForensics++", "acc"): 0.875}
    assert "mode: full_finetune" in card.text and "| FaceForensics++ | val | frame_auc | 0.9375 |" in card.text


@pytest.fixture(scope="module")
def merged(tmp_path_factory, tiny_spec):
    """A TIES merge of two fine-tunes written by stock mergekit-yaml (a subprocess, as a user runs it)."""
    tmp_path = tmp_path_factory.mktemp("cards")
    base = create_detector(tiny_spec, seed=0)
    save_detector(base, tmp_path / "base", provenance={"role": "base"})
    for i in (1, 2):
        model = create_detector(tiny_spec, seed=0)
        finetune_of(model, seed=i, scale=0.05)
        save_detector(model, tmp_path / f"ft{i}", provenance={"recipe": "clip-train", "mode": "full_finetune"})
    recipe = {"merge_method": "ties", "base_model": str(tmp_path / "base"), "dtype": "float32",
              "parameters": {"normalize": True},
              "models": [{"model": str(tmp_path / f"ft{i}"), "parameters": {"weight": 0.5, "density": 0.5}}
                         for i in (1, 2)]}  # fmt: skip
    (tmp_path / "ties.yml").write_text(yaml.safe_dump(recipe))
    exe = os.path.join(os.path.dirname(sys.executable), "mergekit-yaml")
    done = subprocess.run([exe, str(tmp_path / "ties.yml"), str(tmp_path / "merged")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp_path


def test_mergekit_yaml_merge_card(merged):
    card = parsed(merged / "merged")
    data = card.data
    assert {"merge", "mergekit", "mergekit-clip"} <= set(data.tags)
    assert data.base_model == [str(merged / "ft1"), str(merged / "ft2")]  # as mergekit lists the merged models
    assert data.base_model_relation == "merge"
    assert "mergekit `ties`" in card.text and "merge_method: ties" in card.text  # the recipe, verbatim
    assert "density: 0.5" in card.text


def test_export_to_hf_card(merged):
    export_hf(merged / "merged", merged / "hf")
    card = parsed(merged / "hf")
    assert card.data.library_name == "transformers" and "merge" in card.data.tags
    assert "CLIPVisionModelWithProjection" in card.text and "merge_method: ties" in card.text


def test_card_command_adds_study_scores(merged):
    study = {"models": {"merged": {
        "test": {"Celeb-DF-v2": {"frame_auc": 0.81, "video_auc": 0.85}, "DFDC": {"frame_auc": 0.7, "video_auc": None}},
        "held_out_mean": {"frame": {"estimate": 0.755, "low": 0.74, "high": 0.77},
                          "video": {"estimate": 0.85, "low": 0.8, "high": 0.9}}}}}  # fmt: skip
    (merged / "study.json").write_text(json.dumps(study))
    result = CliRunner().invoke(mk_main, ["card", str(merged / "merged"), "--scores", str(merged / "study.json")])
    assert result.exit_code == 0, result.output
    card = parsed(merged / "merged")
    got = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert got == {("Celeb-DF-v2", "frame_auc"): 0.81, ("Celeb-DF-v2", "video_auc"): 0.85, ("DFDC", "frame_auc"): 0.7,
                   ("held-out mean", "frame_auc"): 0.755, ("held-out mean", "video_auc"): 0.85}  # fmt: skip
    assert "[0.7400, 0.7700]" in card.text and "merge_method: ties" in card.text  # interval kept, recipe kept

    wrong = CliRunner().invoke(mk_main, ["card", str(merged / "merged"), "--scores", str(merged / "study.json"),
                                         "--model", "nope"])  # fmt: skip
    assert wrong.exit_code == 1 and "no model 'nope'" in wrong.output and "merged" in wrong.output
