"""Learned layer-wise merging: the learned merge equals ``mergekit-yaml`` on its emitted recipe to 1e-6."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from study_support import make_family

from eval.learned_merge import LearnedMergeError, LearnOptions, layer_group, learn_merge, write_learned_merge
from mergekit_clip.detector.io import read_state_dict

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def family(tmp_path_factory, tiny_spec):
    return make_family(tmp_path_factory.mktemp("learned") / "family", tiny_spec)


def _data(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    frames = torch.randn(n, 3, 32, 32, generator=gen) + labels.view(-1, 1, 1, 1) * 0.5
    return frames, labels


def _ingredients(family):
    return [family / "ingredients" / n for n in ("ft_lr3e-4_s0", "ft_lr1e-3_s0", "ft_lr1e-3_s1")]


def test_layer_groups_of_the_detector_layout():
    assert layer_group("visual.conv1.weight") == layer_group("visual.positional_embedding") == "patch_embed"
    assert layer_group("visual.transformer.resblocks.1.attn.in_proj_weight") == "block1"
    assert layer_group("visual.transformer.resblocks.10.mlp.c_fc.bias") == "block10"
    assert layer_group("visual.proj") == layer_group("head.bias") == layer_group("visual.ln_post.weight") == "head"


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[n].float() - b[n].float()).abs().max().item() for n in a)


def test_learned_soup_equals_mergekit_yaml_on_its_recipe(family, tmp_path):
    frames, labels = _data()
    ingredients = _ingredients(family)
    result = learn_merge(ingredients, frames, labels, LearnOptions(form="linear", steps=6, lr=0.2, batch_size=8))
    w = result.weights
    assert list(result.groups) == ["patch_embed", "block0", "block1", "head"] and w.shape == (4, 3)
    assert torch.allclose(w.sum(dim=1), torch.ones(4)) and (w - 1 / 3).abs().max() > 1e-3  # learned, per group
    assert result.log[-1]["loss"] < result.log[0]["loss"] + 0.5  # moved without diverging
    # independently: a block tensor is its group's weighted sum of the ingredients' tensors
    states = [read_state_dict(p) for p in ingredients]
    name = "visual.transformer.resblocks.1.mlp.c_fc.weight"
    expected = sum(float(w[2, i]) * states[i][name] for i in range(3))
    assert torch.allclose(result.state[name], expected, atol=1e-6)
    recipe_file = tmp_path / "learned.yml"
    import yaml

    recipe_file.write_text(yaml.safe_dump(result.recipe(), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get(
        "PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run([str(BIN / "mergekit-yaml"), str(recipe_file), str(tmp_path / "yaml_out"),
                           "--no-write-model-card"], capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert _max_diff(result.state, read_state_dict(tmp_path / "yaml_out")) <= 1e-6


def test_adamerging_task_arithmetic_equals_its_recipe(family, tmp_path):
    frames, _ = _data(seed=1)
    result = learn_merge(_ingredients(family), frames, None,
                         LearnOptions(form="task_arithmetic", objective="entropy", steps=4, lr=0.05, batch_size=8),
                         base=family / "base")  # fmt: skip
    assert result.transductive and result.recipe()["merge_method"] == "task_arithmetic"
    assert (result.weights - 0.3).abs().max() > 1e-4  # entropy moved the lambdas off their start
    model = write_learned_merge(result, tmp_path / "ta")
    assert _max_diff(result.state, read_state_dict(model)) <= 1e-6
    assert (tmp_path / "ta" / "recipe.yml").is_file() and (tmp_path / "ta" / "learned.json").is_file()


def test_learned_merge_refuses_bad_input(family):
    frames, labels = _data()
    with pytest.raises(LearnedMergeError, match="needs frames of both labels"):
        learn_merge(_ingredients(family), frames, torch.zeros_like(labels), LearnOptions())
    with pytest.raises(LearnedMergeError, match="give the base model"):
        learn_merge(_ingredients(family), frames, labels, LearnOptions(form="task_arithmetic"))
    with pytest.raises(LearnedMergeError, match="at least 2 ingredients"):
        learn_merge(_ingredients(family)[:1], frames, labels, LearnOptions())


def test_study_learned_group_is_a_keyed_candidate(family, tmp_path, monkeypatch):
    from study_support import make_dataset

    from study.config import StudyConfig
    from study.runner import StudyRun

    for i, name in enumerate(["Tiny-FF", "Tiny-A"]):
        make_dataset(tmp_path / "json", tmp_path / "data", name, videos=3, frames=2, seed=i)
    study = StudyConfig.model_validate({
        "output": str(tmp_path / "out"),
        "data": {"json_root": str(tmp_path / "json"), "data_root": str(tmp_path / "data"), "source": "Tiny-FF",
                 "test": ["Tiny-A"]},
        "families": {"tiny": {"path": str(family)}},
        "learned": {"learned_soup": {"select": {"mode": "full_finetune"}, "steps": 3, "batch_size": 4}},
        "eval": {"batch_size": 16, "workers": 0},
    })  # fmt: skip
    run = StudyRun(study, progress=False)
    run.prepare()
    result = run.validation()
    (entry,) = [e for e in result.entries if e.group == "learned_soup"]
    directory = entry.path.parent
    assert entry.kind == "merge" and (directory / "recipe.yml").is_file() and (directory / "learned.json").is_file()
    assert "learned_soup" in result.selection.val_scores
    import eval.learned_merge as learned

    monkeypatch.setattr(learned, "learn_merge", lambda *a, **k: pytest.fail("a finished learned merge was refitted"))
    again = StudyRun(study, progress=False)
    again.prepare()
    assert [e.path for e in again.validation().entries if e.group == "learned_soup"] == [entry.path]


def test_clip_eval_learn_merge_command(family, tmp_path):
    import json

    from click.testing import CliRunner
    from study_support import make_dataset

    from eval.cli import main

    make_dataset(tmp_path / "json", tmp_path / "data", "Tiny-FF", videos=3, frames=2)
    common = [*map(str, _ingredients(family)), "--dataset", "Tiny-FF", "--json-root", str(tmp_path / "json"),
              "--data-root", str(tmp_path / "data"), "--steps", "2", "--batch-size", "4"]  # fmt: skip
    refused = CliRunner().invoke(main, ["learn-merge", *common, "--split", "test", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "would fit on test labels" in refused.output
    done = CliRunner().invoke(main, ["learn-merge", *common, "--objective", "entropy", "--split", "test",
                                     "--out", str(tmp_path / "ent")])  # fmt: skip
    assert done.exit_code == 0, done.output
    info = json.loads((tmp_path / "ent" / "learned.json").read_text())
    assert info["transductive"] is True and set(info["weights"]) == {"patch_embed", "block0", "block1", "head"}
    assert "transductive" in (tmp_path / "ent" / "recipe.yml").read_text().splitlines()[0]
    assert (tmp_path / "ent" / "model" / "config.json").is_file()
