"""Merging a tiny ForensicsAdapter family (one saved adapter initialisation as the base, 3 ingredients) with every
mergekit method and every plugin method: the frozen CLIP tower passes through bit for bit, the merged forward equals
the forward of a reference merge computed here, and mixed or mismatched inputs are refused naming both models."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from fa_support import tiny_fa_spec
from merge_support import ALL_METHODS, WEIGHTS, assert_bitwise, recipe, run_mergekit_yaml, tensors
from methods_support import DATASET, PLUGIN_PARAMS, write_tiny_dataset

from mergekit_clip.detector.io import create_detector, detector_spec, load_detector, save_detector
from mergekit_clip.plugin.methods import METHOD_MODULES, method_objects, needs_base
from mergekit_clip.stats.store import clear_cache

INGREDIENTS = ("ft0", "ft1", "ft2")
CHECKED = "adapter.vit_model.blocks.1.attn.qkv.weight"  # a 2-D adapter tensor every plugin method transforms


def _ingredient(base, seed: int):
    model = create_detector(base.spec, seed=None)
    model.load_state_dict(base.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # "training" touched only what is trained: never visual.*
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not name.startswith("visual.") and t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=gen) * 0.05 * (t.std() if t.numel() > 1 else 1.0))
    return model


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("fa_family")
    base = create_detector(tiny_fa_spec(), seed=0).eval()  # the family's saved adapter initialisation
    paths = {"base": save_detector(base, root / "base")}
    for i, name in enumerate(INGREDIENTS):
        paths[name] = save_detector(_ingredient(base, 100 + i), root / name)
    json_root, data_root = write_tiny_dataset(root / "data", size=64)
    from mergekit_clip.cli import main

    for name in INGREDIENTS:
        for kind in ("gram", "fisher"):
            args = ["stats", str(paths[name]), "--kind", kind, "--dataset", DATASET, "--split", "train"]
            result = CliRunner().invoke(main, [*args, "--json-root", str(json_root), "--data-root", str(data_root)])
            assert result.exit_code == 0, result.output
    return paths


def _recipe(method: str, paths: dict) -> dict:
    models = [paths[n] for n in INGREDIENTS]
    if method in ALL_METHODS:
        return recipe(method, paths["base"], models)
    cfg = {"merge_method": method, "models": [{"model": str(m)} for m in models], "dtype": "float32"}
    cfg["parameters"] = PLUGIN_PARAMS[method]
    if needs_base(method):
        cfg["base_model"] = str(paths["base"])
    return cfg


def _merge(method: str, paths: dict, out):
    import mergekit_clip.plugin as plugin

    plugin.register()
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    config = MergeConfiguration.model_validate(_recipe(method, paths))
    run_merge(config, str(out), options=MergeOptions(random_seed=0, quiet=True, write_model_card=False))
    return out


def _reference_merge(method: str, sds: dict) -> dict:
    """linear, task arithmetic and TIES written from their definitions, on every tensor."""
    base, fts = sds["base"], [sds[n] for n in INGREDIENTS]
    if method == "linear":
        return {k: sum(w * ft[k] for ft, w in zip(fts, WEIGHTS)) / sum(WEIGHTS) for k in base}
    if method == "task_arithmetic":
        return {k: base[k] + sum(w * (ft[k] - base[k]) for ft, w in zip(fts, WEIGHTS)) for k in base}
    out = {}
    for k in base:  # TIES, density 0.5: trim each task vector to its top half, elect signs, disjoint mean
        kept = []
        for ft, w in zip(fts, WEIGHTS):
            delta = (ft[k] - base[k]).flatten()
            keep = max(1, int(0.5 * delta.numel()))
            threshold = delta.abs().sort(descending=True).values[keep - 1]
            kept.append(torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta)) * w)
        stacked = torch.stack(kept)
        sign = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
        agree = (torch.sign(stacked) == sign).float()
        divisor = (torch.tensor(WEIGHTS)[:, None] * agree).sum(0)
        divisor[divisor == 0] = 1
        out[k] = base[k] + ((stacked * agree).sum(0) / divisor).reshape(base[k].shape)
    return out


def _direct(method: str, paths: dict, name: str) -> torch.Tensor:
    from mergekit.merge_methods.base import TensorGroup

    ids = [str(paths[n]) for n in INGREDIENTS]
    inputs = [tensors(paths[n])[name] for n in INGREDIENTS]
    base_index = None
    if needs_base(method):
        ids, inputs, base_index = [str(paths["base"]), *ids], [tensors(paths["base"])[name], *inputs], 0
    clear_cache()
    group = TensorGroup.from_tensors(inputs, ids=ids, base_index=base_index, name=name)
    (out,) = method_objects()[method]((group,), parameters=PLUGIN_PARAMS[method])
    return out


def test_architecture_lists_the_adapter_tensors_of_the_model(family):
    from mergekit.architecture import arch_info_for_config

    import mergekit_clip.plugin as plugin
    from mergekit_clip.detector.spec import DetectorConfig

    plugin.register()
    config = DetectorConfig.from_pretrained(str(family["base"]))
    arch = arch_info_for_config(config)
    names = {w.name for w in arch.all_weights(config)}
    assert names == set(tensors(family["base"]))  # every stored tensor, nothing else


def test_every_method_merges_the_family_with_clip_passing_through(family, tmp_path):
    frames = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    base_sd = tensors(family["base"])
    sds = {n: tensors(family[n]) for n in ("base", *INGREDIENTS)}
    for method in (*ALL_METHODS, *METHOD_MODULES):
        out = _merge(method, family, tmp_path / method)
        merged = tensors(out)
        assert set(merged) == set(base_sd), method
        for k, v in base_sd.items():
            if k.startswith("visual."):
                assert_bitwise(merged[k], v)  # the frozen tower passes through exactly
        model = load_detector(out)
        assert model.spec.forensics_adapter == detector_spec(family["base"]).forensics_adapter
        logits = model(frames)
        assert torch.isfinite(logits).all(), method
        if method in ("linear", "task_arithmetic", "ties"):
            reference = create_detector(model.spec, seed=None).eval()
            reference.load_state_dict(_reference_merge(method, sds))
            torch.testing.assert_close(logits, reference(frames), rtol=1e-5, atol=1e-6, msg=method)
        if method in METHOD_MODULES:
            torch.testing.assert_close(merged[CHECKED], _direct(method, family, CHECKED), rtol=1e-5, atol=1e-6)


def test_stock_mergekit_yaml_merges_the_family(family, tmp_path):
    proc = run_mergekit_yaml(_recipe("ties", family), tmp_path, "ties", "--no-write-model-card")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = _reference_merge("ties", {n: tensors(family[n]) for n in ("base", *INGREDIENTS)})
    merged = tensors(tmp_path / "ties")
    for k in expected:
        torch.testing.assert_close(merged[k], expected[k], rtol=1e-5, atol=1e-6)


def _one_error(exc: pytest.ExceptionInfo, odd, family: dict) -> str:
    """One line naming the odd model and a model of the family (which one: mergekit's input order is a set's)."""
    message = exc.value.format_message()
    assert "\n" not in message and str(odd) in message, message
    assert any(str(family[n]) in message for n in ("base", *INGREDIENTS)), message
    return message


def test_mixing_kinds_or_geometries_is_refused_naming_both(family, tmp_path, tiny_spec):
    from mergekit_clip.plugin.heads import MergeInputError

    fa_spec = detector_spec(family["base"])
    plain_spec = tiny_spec.model_copy(update={"backbone": fa_spec.backbone, "preprocess": fa_spec.preprocess})
    plain = save_detector(create_detector(plain_spec), tmp_path / "plain")
    other = save_detector(create_detector(tiny_fa_spec(num_queries=12)), tmp_path / "other")
    for odd, needle in ((plain, "is not; a ForensicsAdapter merges only"), (other, "forensics_adapter.num_queries")):
        paths = {"base": family["base"], "ft0": family["ft0"], "ft1": family["ft1"], "ft2": odd}
        with pytest.raises(MergeInputError) as exc:
            _merge("task_arithmetic", paths, tmp_path / "refused")
        assert needle in _one_error(exc, odd, family)
        assert not (tmp_path / "refused").exists()
