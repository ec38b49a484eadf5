"""Every recipe in ``recipes/`` is valid and runs as written against a family laid out like the demo's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from merge_support import BIN, finetune_of, mergekit_env
from methods_support import compute_recipe_stats

from mergekit_clip.detector.io import create_detector, load_detector, save_detector

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yml"))


def _model_paths(cfg: dict) -> set[str]:
    paths = {m["model"] for m in cfg.get("models", [])}
    return paths | ({cfg["base_model"]} if cfg.get("base_model") else set())


def test_recipes_cover_the_method_families():
    from mergekit.merge_methods import registered_methods

    methods = {yaml.safe_load(r.read_text())["merge_method"] for r in RECIPES}
    assert methods <= {m.spec.name for m in registered_methods()}
    assert {"ties", "dare_ties", "task_arithmetic", "linear", "slerp", "model_stock"} <= methods
    assert any(r.name == "ties_clip.yml" for r in RECIPES)


def test_recipes_name_models_the_demo_study_trains():
    """``make demo`` then ``mergekit-yaml recipes/X.yml OUT`` must find every model the recipe names."""
    from study.config import load_study
    from study.families import plan_families

    repo = Path(__file__).parents[1]
    made = set()
    for plan in plan_families(load_study(repo / "studies" / "demo.yml")).values():
        made.add(f"./{plan.output}/base")
        made |= {f"./{plan.output}/ingredients/{p.name}" for p in plan.train_config().ingredients()}
    for recipe in RECIPES:
        missing = _model_paths(yaml.safe_load(recipe.read_text())) - made
        assert not missing, f"{recipe.name}: the demo trains no {sorted(missing)}"


@pytest.fixture(scope="module")
def demo_layout(tmp_path_factory, tiny_spec):
    """A tiny family at runs/demo/family with exactly the names the recipes use."""
    root = tmp_path_factory.mktemp("demo")
    needed = set().union(*(_model_paths(yaml.safe_load(r.read_text())) for r in RECIPES))
    for i, rel in enumerate(sorted(needed)):
        path = root / rel
        assert rel.startswith(("./runs/demo/family/", "./runs/demo/specialists/")), rel
        model = create_detector(tiny_spec, seed=0)
        if not rel.endswith("/base"):
            finetune_of(model, seed=i)
        save_detector(model, path)
    for r in RECIPES:  # regmean / fisher read `mergekit-clip stats` files of their ingredients
        compute_recipe_stats(yaml.safe_load(r.read_text()), root)
    return root


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.stem)
def test_recipe_runs_in_process(recipe, demo_layout, tmp_path):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    cwd = os.getcwd()
    os.chdir(demo_layout)
    try:
        config = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
        run_merge(config, str(tmp_path / "out"), options=MergeOptions(random_seed=0, quiet=True))
    finally:
        os.chdir(cwd)
    probs = load_detector(tmp_path / "out").fake_probability(torch.zeros(2, 3, 32, 32))
    assert torch.isfinite(probs).all()


def test_flagship_runs_as_written_with_stock_mergekit_yaml(demo_layout):
    recipe = Path(__file__).parents[1] / "recipes" / "ties_clip.yml"
    cmd = [str(BIN / "mergekit-yaml"), str(recipe), "runs/demo/merges/ties_clip"]
    proc = subprocess.run(cmd, cwd=demo_layout, capture_output=True, text=True, env=mergekit_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = load_detector(demo_layout / "runs/demo/merges/ties_clip")
    assert merged.spec.head.labels == ("real", "fake")
