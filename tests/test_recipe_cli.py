"""``mergekit-clip recipe``: valid stock-mergekit YAML for a family; selection, defaults, did-you-mean errors."""

from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner
from study_support import make_family

from mergekit_clip.cli import main
from mergekit_clip.detector.io import load_detector


@pytest.fixture(scope="module")
def family(tmp_path_factory, tiny_spec):
    return make_family(tmp_path_factory.mktemp("fam") / "family", tiny_spec)


def _recipe(family, *args):
    result = CliRunner().invoke(main, ["recipe", *args, "--family", str(family)])
    return result, (yaml.safe_load(result.output) if result.exit_code == 0 else None)


def test_ties_over_full_finetunes_with_defaults_and_set(family):
    result, recipe = _recipe(family, "ties", "--select", "mode=full_finetune", "--select", "lr=1e-3",
                             "--set", "lambda=0.7")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert recipe["merge_method"] == "ties"
    assert recipe["base_model"] == f"{family}/base"
    assert [m["model"] for m in recipe["models"]] == [f"{family}/ingredients/ft_lr1e-3_s{s}" for s in (0, 1)]
    assert all(m["parameters"] == {"weight": 1.0, "density": 0.5} for m in recipe["models"])
    assert recipe["parameters"] == {"normalize": True, "lambda": 0.7}
    assert "# written by: mergekit-clip recipe ties" in result.output


def test_linear_has_no_base_and_takes_every_ingredient(family):
    result, recipe = _recipe(family, "linear")
    assert result.exit_code == 0, result.output
    assert "base_model" not in recipe
    assert len(recipe["models"]) == 5


def test_repeated_key_is_any_of_and_seed_selects(family):
    _, recipe = _recipe(family, "task_arithmetic", "--select", "seed=1", "--select", "mode=full_finetune")
    assert [m["model"].rsplit("/", 1)[1] for m in recipe["models"]] == ["ft_lr3e-4_s1", "ft_lr1e-3_s1"]
    _, recipe = _recipe(family, "linear", "--select", "name=lp_s0", "--select", "name=ft_lr3e-4_s0")
    assert len(recipe["models"]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["tiez"], "unknown merge method 'tiez': did you mean 'ties'?"),
        (["ties", "--set", "densty=0.2"], "has no parameter 'densty': did you mean 'density'?"),
        (["ties", "--select", "mdoe=full_finetune"], "unknown selection key 'mdoe': did you mean 'mode'?"),
        (["ties", "--select", "mode=full_fine_tune"], "did you mean 'full_finetune'?"),
        (["slerp", "--select", "mode=full_finetune"], "takes 1 ingredient(s) beside the base; the selection has 4"),
    ],
)
def test_errors_name_the_key(family, args, message):
    result, _ = _recipe(family, *args)
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.startswith("Error:")


def test_written_recipe_merges_in_process(family, tmp_path):
    out = tmp_path / "dare.yml"
    result = CliRunner().invoke(main, ["recipe", "dare_ties", "--family", str(family), "--select", "lr=3e-4",
                                       "--set", "density=0.3", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    import mergekit.merge
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions

    config = MergeConfiguration.model_validate(yaml.safe_load(out.read_text()))
    mergekit.merge.run_merge(config, str(tmp_path / "merged"), MergeOptions(random_seed=0, quiet=True))
    probs = load_detector(tmp_path / "merged").fake_probability(torch.zeros(2, 3, 32, 32))
    assert torch.isfinite(probs).all()
