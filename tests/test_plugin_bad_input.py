"""Bad merge inputs: one clear error naming the ingredient and the field or tensor, exit 1, no output left."""

from __future__ import annotations

import json

import pytest
import torch
from merge_support import build_open_clip_family, recipe, run_many
from safetensors.torch import load_file, save_file

from mergekit_clip.detector.io import create_detector, save_detector
from mergekit_clip.detector.spec import HeadSpec


def _variant(root, tiny_spec, name, **backbone):
    spec = tiny_spec.model_copy(update={"backbone": tiny_spec.backbone.model_copy(update=backbone)})
    save_detector(create_detector(spec, seed=5), root / name)
    return root / name


def _edit_weights(path, edit):
    file = path / "model.safetensors"
    state = load_file(str(file))
    edit(state)
    save_file(state, str(file))


@pytest.fixture(scope="module")
def cases(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("bad")
    fam = build_open_clip_family(root / "fam", tiny_spec, [HeadSpec(), HeadSpec()], base_head=True)
    bad = root / "bad"
    bad.mkdir()
    inputs = {
        "width": (_variant(bad, tiny_spec, "wide", width=128, heads=4), "backbone.width"),
        "depth": (_variant(bad, tiny_spec, "deep", layers=3), "backbone.layers"),
        "patch": (_variant(bad, tiny_spec, "patch", patch_size=16), "backbone.patch_size"),
        "image_size": (_variant(bad, tiny_spec, "size", image_size=64), "backbone.image_size"),
    }
    missing = _variant(bad, tiny_spec, "missing")
    _edit_weights(missing, lambda sd: sd.pop("visual.transformer.resblocks.1.mlp.c_fc.weight"))
    inputs["missing_tensor"] = (missing, "missing tensor visual.transformer.resblocks.1.mlp.c_fc.weight")
    nan = _variant(bad, tiny_spec, "nan")
    _edit_weights(nan, lambda sd: sd["visual.ln_post.weight"].__setitem__(3, float("nan")))
    inputs["nan"] = (nan, "tensor visual.ln_post.weight has NaN/Inf")
    labels = _variant(bad, tiny_spec, "labels")
    config = json.loads((labels / "config.json").read_text())
    config["head"]["labels"] = ["pristine", "manipulated"]
    (labels / "config.json").write_text(json.dumps(config))
    inputs["labels"] = (labels, "head.labels")
    empty = bad / "no_weights"
    empty.mkdir()
    (empty / "config.json").write_text((fam["ft0"] / "config.json").read_text())
    inputs["no_weights"] = (empty, "holds no weights")
    truncated = _variant(bad, tiny_spec, "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    inputs["truncated"] = (truncated, "truncated safetensors file")

    work = root / "runs"
    jobs = {name: (recipe("ties", fam["base"], [fam["ft0"], path]), work) for name, (path, _) in inputs.items()}
    results = run_many(jobs)
    return {name: (results[name], work / name, path, needle) for name, (path, needle) in inputs.items()}


CASES = ("width", "depth", "patch", "image_size", "missing_tensor", "nan", "labels", "no_weights", "truncated")


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_cleanly(case, cases):
    proc, out, bad_path, needle = cases[case]
    assert proc.returncode == 1, proc.stderr[-2000:]
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, proc.stderr[-2000:]
    assert str(bad_path) in error_lines[0] and needle in error_lines[0], error_lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "an output folder was left behind"
    assert not list(out.parent.glob(f".{out.name}.*")), "a temporary folder was left behind"


def test_failed_merge_keeps_previous_output(tmp_path, tiny_spec):
    fam = build_open_clip_family(tmp_path / "fam", tiny_spec, [HeadSpec()], base_head=True)
    out = tmp_path / "runs" / "merged"
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")  # a previous merge result
    nan = tmp_path / "nan"
    save_detector(create_detector(tiny_spec, seed=1), nan)
    _edit_weights(nan, lambda sd: sd["head.bias"].__setitem__(0, float("inf")))
    proc = run_many({"merged": (recipe("linear", fam["base"], [fam["ft0"], nan]), tmp_path / "runs")})["merged"]
    assert proc.returncode == 1
    assert (out / "config.json").read_text() == "{}"


def test_nan_check_runs_only_inside_our_merges():
    from mergekit_clip.plugin.heads import prepare_inputs

    with pytest.raises(ValueError, match="tensor w has NaN/Inf"):
        from mergekit_clip.plugin.heads import MergeContext, ModelHeadInfo

        ctx = MergeContext(models={"a": ModelHeadInfo(name="a", head=None)})
        prepare_inputs("w", {"a": torch.tensor([1.0, float("nan")])}, ctx, ["a"])
