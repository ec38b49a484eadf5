"""Damaged and hostile inputs through the public commands: one ``Error:`` line naming the file and what is wrong
with it, exit 1 or 2, no traceback, nothing written (issue 29's cases, each replayed here)."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import yaml
from hostile_support import assert_refused, build_world, clip_eval, clip_study, clip_train, mergekit_yaml, snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_spec):
    return build_world(tmp_path_factory.mktemp("hostile"), tiny_spec)


@pytest.fixture()
def detector(world, tmp_path):
    """A fresh copy of the world's detector to damage."""
    copy = tmp_path / "det"
    shutil.copytree(world.detector, copy)
    return copy


def _edit_config(detector, edit) -> None:
    config = json.loads((detector / "config.json").read_text())
    edit(config)
    (detector / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda c: c["backbone"].update(width=2**20, layers=2**16), "backbone.width"),  # 76 TB if allocated
        (lambda c: c["backbone"].update(layers=100_000), "backbone.layers"),
        (lambda c: c["preprocess"].update(mean=[float("nan")] * 3), "preprocess.mean"),
        (lambda c: c["backbone"].update(layer_norm_eps=float("inf")), "backbone.layer_norm_eps"),
        (lambda c: c["backbone"].update(width=128), "tensors do not match config.json"),  # in bounds, not the file's
        (lambda c: c.update(backbone="wide"), "backbone"),
        (lambda c: c.update(preprocess=None), "preprocess.image_size 224 differs from backbone.image_size 32"),
        (lambda c: c["preprocess"].update(mean=[1e308, 0.5, 0.5]), "preprocess.mean"),  # finite, overflows
    ],
    ids=["absurd-geometry", "absurd-layers", "nan-mean", "inf-eps", "geometry-vs-weights", "type-swapped",
         "null-preprocess", "huge-mean"],
)
def test_a_bad_config_is_refused_before_any_tensor_is_allocated(world, detector, monkeypatch, edit, named):
    import torch

    import mergekit_clip.detector.model as model

    real_build = model.build_detector

    def meta_only(spec):  # the shape check builds on the meta device; a real build means it came too late
        if torch.empty(0).device.type != "meta":
            raise AssertionError("a detector was built from a config the weights do not match")
        return real_build(spec)

    monkeypatch.setattr(model, "build_detector", meta_only)
    _edit_config(detector, edit)
    assert_refused(clip_eval(world, detector), written=[world.out], names=(str(detector), named))


def test_a_damaged_provenance_is_informational_only(world, detector):
    _edit_config(detector, lambda c: c.update(provenance=-1))
    result = clip_eval(world, detector)
    assert result.exit_code == 0, result.output
    shutil.rmtree(world.out)


def test_a_deeply_nested_config_is_one_error(world, detector):
    (detector / "config.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    line = assert_refused(clip_eval(world, detector), written=[world.out], names=(str(detector / "config.json"),))
    assert "nested deeper than 64 levels" in line


def test_nan_weights_are_named_not_found_in_the_scores(world, detector):
    from safetensors.torch import load_file, save_file

    state = load_file(str(detector / "model.safetensors"))
    state["visual.ln_post.weight"][0] = float("nan")
    save_file(state, str(detector / "model.safetensors"))
    assert_refused(clip_eval(world, detector), written=[world.out], names=("visual.ln_post.weight", "NaN/Inf"))


@pytest.mark.parametrize("damage", ["truncated", "header-type-swapped", "negative-shape"])
def test_damaged_weights_name_the_file(world, detector, damage):
    file = detector / "model.safetensors"
    data = file.read_bytes()
    if damage == "truncated":
        file.write_bytes(data[: len(data) // 3])
    else:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        name = next(k for k in header if k != "__metadata__")
        header[name]["shape"] = "wide" if damage == "header-type-swapped" else [-1, 4]
        raw = json.dumps(header).encode()
        file.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + size :])
    assert_refused(clip_eval(world, detector), written=[world.out], names=(str(file),))


@pytest.mark.parametrize("damage", ["truncated", "nested", "type-swapped"])
def test_a_damaged_dataset_json_names_the_file(world, tmp_path, damage):
    shutil.copytree(world.json_root, tmp_path / "json")
    file = tmp_path / "json" / "Tiny-A.json"
    text = file.read_text()
    file.write_text({"truncated": text[: len(text) // 2], "nested": "[" * 100_000 + "]" * 100_000,
                     "type-swapped": json.dumps({"Tiny-A": ["DF_real"]})}[damage])  # fmt: skip
    result = _eval_with_json_root(world, tmp_path / "json", "Tiny-A")
    assert_refused(result, written=[world.out], names=(str(file),))


def test_a_damaged_csv_dataset_names_the_file(world, tmp_path):
    shutil.copytree(world.json_root, tmp_path / "json")
    file = tmp_path / "json" / "Tiny-C.csv"
    lines = file.read_text().splitlines()
    file.write_text("\n".join([lines[0], *lines[1:3], "only-a-path"]) + "\n")
    result = _eval_with_json_root(world, tmp_path / "json", "Tiny-C")
    assert_refused(result, written=[world.out], names=(str(file),))


def _eval_with_json_root(world, json_root, dataset):
    from click.testing import CliRunner

    from eval.cli import main

    args = ["--json-root", str(json_root), "--data-root", str(world.data_root), "--out", str(world.out)]
    return CliRunner().invoke(main, ["score", str(world.detector), "--datasets", dataset, *args])


def test_a_truncated_statistics_file_is_named_by_mergekit_yaml(world, tmp_path):
    from mergekit_clip.integrity import digest_path
    from mergekit_clip.stats.store import clear_cache, stats_path

    family = tmp_path / "family"
    shutil.copytree(world.family, family)
    stats = stats_path(family / "ingredients" / "ft_b", "gram")
    stats.write_bytes(stats.read_bytes()[:100])
    recipe = tmp_path / "regmean.yml"
    recipe.write_text((world.root / "regmean.yml").read_text().replace(str(world.family), str(family)))
    clear_cache()
    assert_refused(mergekit_yaml(world, recipe), written=[world.out], names=(str(stats), "digest"))
    digest_path(stats).unlink()  # statistics written by hand (no digest): still named, not a SafetensorError
    clear_cache()
    assert_refused(mergekit_yaml(world, recipe), written=[world.out], names=(str(stats), "not a readable safetensors"))


def test_a_nested_recipe_is_one_error(world, tmp_path):
    recipe = tmp_path / "deep.yml"
    recipe.write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert_refused(mergekit_yaml(world, recipe), written=[world.out], names=(str(recipe), "nested deeper"))


def test_a_yaml_alias_bomb_study_file_is_one_error(world, tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1},"
              f" *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]  # fmt: skip
    study = tmp_path / "bomb.yml"
    study.write_text("\n".join(lines) + "\n")
    assert_refused(clip_study(study), written=[tmp_path / "out"], names=(str(study), "values"))


def test_a_pickle_payload_checkpoint_is_refused_on_resume(tmp_path):
    from train_support import make_dataset, tiny_config

    from train.finetune import KILL_ENV

    make_dataset(tmp_path, "TinyA", videos={"train": 4, "val": 2, "test": 2}, frames=2)
    out = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, out, **{"optim.epochs": 2})))
    os.environ[KILL_ENV] = "1"
    try:
        clip_train(config)
    finally:
        del os.environ[KILL_ENV]
    [checkpoint] = tmp_path.glob(".run.tmp-*/**/checkpoint.pt")
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    checkpoint.write_bytes(pickle.dumps(Payload()))
    kept = snapshot(tmp_path)  # the killed run's folder is its resume state: kept as it is
    line = assert_refused(clip_train(config, "--resume"), written=[out], names=(str(checkpoint),), siblings=False)
    assert snapshot(tmp_path) == kept
    assert "not a checkpoint clip-train wrote" in line and not marker.exists()
    # a zip archive torch refuses to unpickle (weights_only) is named the same way
    import torch

    torch.save({"payload": Payload()}, checkpoint)
    line = assert_refused(clip_train(config, "--resume"), written=[out], names=(str(checkpoint),), siblings=False)
    assert "not a checkpoint clip-train wrote" in line and not marker.exists()


def test_a_lora_target_that_matches_nothing_names_it_and_the_choices(tmp_path):
    from train_support import tiny_config

    config = tiny_config(tmp_path, tmp_path / "run")
    config["sweep"] = {"modes": ["lora"], "seeds": [0]}
    config["mode_options"] = {"lora": {"targets": ["q_prj"]}}
    file = tmp_path / "lora.yaml"
    file.write_text(yaml.safe_dump(config))
    result = clip_train(file)
    assert_refused(result, written=[tmp_path / "run"], names=(str(file),))
    detail = result.output.split("Error:", 1)[1]
    assert "mode_options.lora.targets.0" in detail and "(got 'q_prj'; did you mean 'q_proj'?)" in detail
    for choice in ("q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"):
        assert f"'{choice}'" in detail


def test_a_family_summary_with_a_path_as_name_is_refused(world, tmp_path):
    family = tmp_path / "family"
    shutil.copytree(world.family, family)
    rows = json.loads((family / "summary.json").read_text())
    rows[0]["name"] = "../../etc"
    (family / "summary.json").write_text(json.dumps(rows))
    study = tmp_path / "study.yml"
    raw = yaml.safe_load((world.root / "study.yml").read_text())
    raw["families"]["tiny"]["path"] = str(family)
    raw["output"] = str(tmp_path / "out")
    study.write_text(yaml.safe_dump(raw))
    assert_refused(clip_study(study), written=[tmp_path / "out"], names=(str(family / "summary.json"), "'../../etc'"))


def test_a_recipe_missing_a_required_parameter_is_one_error(world, tmp_path):
    raw = yaml.safe_load((world.root / "recipe.yml").read_text())
    del raw["models"][1]["parameters"]  # linear needs a weight per model (found by the long fuzz profile)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(yaml.safe_dump(raw))
    assert_refused(mergekit_yaml(world, recipe), written=[world.out], names=(str(recipe), "weight"))


def test_a_recipe_with_an_unknown_dtype_is_one_error(world, tmp_path):
    raw = yaml.safe_load((world.root / "recipe.yml").read_text())
    raw["dtype"] = "fmoat32"  # one flipped bit (found by the long fuzz profile)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(yaml.safe_dump(raw))
    assert_refused(mergekit_yaml(world, recipe), written=[world.out], names=(str(recipe), "fmoat32"))
