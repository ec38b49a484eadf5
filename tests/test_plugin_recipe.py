"""Recipe checks before mergekit plans: each bad recipe is one `Error:` line, exit 1, no traceback, no output.

Before issue #12 every case here except the stock validation errors *succeeded* (a misspelt `densty` ran TIES
untrimmed, an unknown key vanished, an output inside an input replaced it, an extra tensor was dropped) or
printed a traceback (stock validation errors, a non-numeric weight).
"""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from merge_support import build_open_clip_family, recipe
from safetensors.torch import load_file, save_file

from mergekit_clip.detector.io import create_detector, save_detector
from mergekit_clip.detector.spec import HeadSpec, PreprocessSpec


@pytest.fixture(scope="module")
def family(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("recipes")
    fam = build_open_clip_family(root, tiny_spec, [HeadSpec(), HeadSpec()], base_head=True)
    spec = tiny_spec.model_copy(update={"preprocess": PreprocessSpec(image_size=32, mean=(0.5, 0.5, 0.5))})
    save_detector(create_detector(spec, seed=4), root / "other_mean")
    save_detector(create_detector(tiny_spec.model_copy(update={"preprocess": PreprocessSpec(
        image_size=32, interpolation="bilinear")}), seed=4), root / "bilinear")  # fmt: skip
    extra = root / "extra_tensor"
    save_detector(create_detector(tiny_spec, seed=4), extra)
    state = load_file(str(extra / "model.safetensors"))
    state["visual.extra_scale"] = state["visual.ln_post.weight"].clone()
    save_file(state, str(extra / "model.safetensors"))
    fam.update(root=root, other_mean=root / "other_mean", bilinear=root / "bilinear", extra=extra)
    return fam


def _ties(family, *models):
    return recipe("ties", family["base"], list(models or (family["ft0"], family["ft1"])))


def _edit(cfg, fn):
    cfg = json.loads(json.dumps(cfg))
    fn(cfg)
    return cfg


def run_yaml(root, name: str, cfg, out=None):
    """mergekit-yaml in process (the plugin is registered): exit code, output, output folder."""
    from mergekit.scripts.run_yaml import main

    file = root / f"{name}.yml"
    file.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
    out = out or root / f"out_{name}"
    result = CliRunner().invoke(main, [str(file), str(out)])
    return result.exit_code, result.output, out


CASES = {
    "misspelt_parameter": (
        lambda f: _edit(_ties(f), lambda c: c["models"][0]["parameters"].update(densty=0.5)),
        ["unknown parameter 'densty' for ties", "did you mean 'density'", "models[0]"],
    ),
    "misspelt_global_parameter": (
        lambda f: _edit(_ties(f), lambda c: c.setdefault("parameters", {}).update(normalise=True)),
        ["unknown parameter 'normalise'", "did you mean 'normalize'"],
    ),
    "global_parameter_per_model": (
        lambda f: _edit(_ties(f), lambda c: c["models"][0]["parameters"].update(normalize=False)),
        ["'normalize' of ties is global"],
    ),
    "unknown_top_level_key": (
        lambda f: _edit(_ties(f), lambda c: c.update(base_modle=str(f["base"]))),
        ["unknown key 'base_modle' at top level", "did you mean 'base_model'"],
    ),
    "unknown_per_model_key": (
        lambda f: _edit(_ties(f), lambda c: c["models"][1].update(paramters={"weight": 1.0})),
        ["unknown key 'paramters' at models[1]", "did you mean 'parameters'"],
    ),
    "unknown_method": (
        lambda f: _edit(_ties(f), lambda c: c.update(merge_method="tie")),
        ["unknown merge_method 'tie'", "did you mean 'ties'"],
    ),
    "bad_parameter_value": (
        lambda f: _edit(_ties(f), lambda c: c["models"][0]["parameters"].update(weight="heavy")),
        ["parameter weight='heavy'", "valid number"],
    ),
    "stock_validation_error": (  # mergekit's own model_validator (a RuntimeError, a traceback in stock)
        lambda f: _edit(_ties(f), lambda c: c.pop("models")),
        ["invalid mergekit recipe", "Exactly one of 'models', 'slices', or 'modules'"],
    ),
    "stock_pydantic_error": (
        lambda f: _edit(_ties(f), lambda c: c.update(models="ft0")),
        ["invalid mergekit recipe", "models"],
    ),
    "not_yaml": (lambda f: "merge_method: [ties\n", ["not valid YAML"]),
    "different_mean": (
        lambda f: _ties(f, f["ft0"], f["other_mean"]),
        ["preprocess.mean is (0.5, 0.5, 0.5)", "other_mean"],
    ),
    "unknown_tensor": (
        lambda f: _ties(f, f["ft0"], f["extra"]),
        ["visual.extra_scale", "not part of the CLIPDetector layout", "extra_tensor"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_recipe_is_one_error_line(family, case):
    build, needles = CASES[case]
    code, output, out = run_yaml(family["root"], case, build(family))
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert code == 1, output[-2000:]
    assert len(errors) == 1 and all(n in errors[0] for n in needles), output[-2000:]
    assert "Traceback" not in output and not out.exists()


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_folder_that_is_an_input_is_refused(family, where):
    target = family["ft1"] if where == "same" else family["ft1"] / "merged"
    before = (family["ft1"] / "model.safetensors").read_bytes()
    code, output, _ = run_yaml(family["root"], f"out_{where}", _ties(family), out=target)
    assert code == 1 and "write the merge to a new folder" in output and str(family["ft1"]) in output, output
    assert (family["ft1"] / "model.safetensors").read_bytes() == before
    assert not (family["ft1"] / "merged").exists()


def test_output_folder_holding_an_input_is_refused(family):
    code, output, _ = run_yaml(family["root"], "out_parent", _ties(family), out=family["root"])
    assert code == 1 and "contains input" in output, output


def test_interpolation_difference_is_stated_in_the_merge_log(family):
    code, output, out = run_yaml(family["root"], "bilinear_ok", _ties(family, family["ft0"], family["bilinear"]))
    assert code == 0, output[-2000:]
    events = json.loads((out / "merge_log.json").read_text())["events"]
    assert any("preprocess.interpolation=bilinear" in e and "uses bicubic" in e for e in events), events


def test_valid_recipe_still_merges(family):
    code, output, out = run_yaml(family["root"], "valid", _ties(family))
    assert code == 0, output[-2000:]
    assert (out / "config.json").exists()


def test_headless_base_preprocessing_is_noted_and_the_detectors_decide(family, tiny_spec):
    other = PreprocessSpec(image_size=32, mean=(0.5, 0.5, 0.5))
    bare = tiny_spec.model_copy(update={"head": None, "preprocess": other})
    save_detector(create_detector(bare, seed=0), family["root"] / "bare_base")
    cfg = recipe("ties", family["root"] / "bare_base", [family["ft0"], family["ft1"]])
    code, output, out = run_yaml(family["root"], "bare_base_merge", cfg)
    assert code == 0, output[-2000:]
    merged = json.loads((out / "config.json").read_text())
    assert tuple(merged["preprocess"]["mean"]) == tiny_spec.preprocess.mean  # the fine-tunes', not the base's
    events = json.loads((out / "merge_log.json").read_text())["events"]
    assert any("bare_base uses preprocess.mean=(0.5, 0.5, 0.5)" in e and "no head" in e for e in events), events
