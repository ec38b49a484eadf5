"""The plugin's merge methods from stock ``mergekit-yaml`` on a tiny detector family: same tensors as calling the
method directly, heads handled, data-aware methods reading ``mergekit-clip stats`` files (or failing clearly)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from merge_support import build_open_clip_family, run_many, run_mergekit_yaml, tensors
from mergekit.merge_methods.base import TensorGroup
from methods_support import DATASET, PLUGIN_PARAMS, write_tiny_dataset

from mergekit_clip.cli import main
from mergekit_clip.detector.io import load_detector
from mergekit_clip.plugin.methods import METHOD_MODULES, method_objects, needs_base
from mergekit_clip.stats.store import clear_cache

CHECKED = ("visual.transformer.resblocks.0.attn.in_proj_weight", "visual.transformer.resblocks.1.mlp.c_proj.weight")


@pytest.fixture(scope="module")
def family(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("family")
    paths = build_open_clip_family(root, tiny_spec, [tiny_spec.head] * 4, base_head=False)
    json_root, data_root = write_tiny_dataset(root)
    for name in ("ft0", "ft1", "ft2", "ft3"):
        for kind in ("gram", "fisher"):
            args = ["stats", str(paths[name]), "--kind", kind, "--dataset", DATASET, "--split", "train"]
            result = CliRunner().invoke(main, [*args, "--json-root", str(json_root), "--data-root", str(data_root)])
            assert result.exit_code == 0, result.output
    return paths


def _recipe(method: str, paths: dict) -> dict:
    models = [{"model": str(paths[f"ft{i}"])} for i in range(4)]
    cfg = {"merge_method": method, "models": models, "dtype": "float32", "parameters": PLUGIN_PARAMS[method]}
    if needs_base(method):
        cfg["base_model"] = str(paths["base"])
    return cfg


def _direct(method: str, paths: dict, name: str) -> torch.Tensor:
    ids = [str(paths[f"ft{i}"]) for i in range(4)]
    inputs = [tensors(paths[f"ft{i}"])[name] for i in range(4)]
    base_index = None
    if needs_base(method):
        ids, inputs, base_index = [str(paths["base"]), *ids], [tensors(paths["base"])[name], *inputs], 0
    group = TensorGroup.from_tensors(inputs, ids=ids, base_index=base_index, name=name)
    clear_cache()
    (out,) = method_objects()[method]((group,), parameters=PLUGIN_PARAMS[method])
    return out


def _check_methods(methods, family, tmp_path) -> None:
    results = run_many({m: (_recipe(m, family), tmp_path) for m in methods})
    heads = torch.stack([tensors(family[f"ft{i}"])["head.weight"] for i in range(4)])
    for method, proc in results.items():
        assert proc.returncode == 0, f"{method}: {proc.stderr[-3000:]}"
        merged = tensors(tmp_path / method)
        for name in CHECKED:
            torch.testing.assert_close(merged[name], _direct(method, family, name), atol=1e-5, rtol=1e-5)
        if method in ("real_aware", "cart"):
            torch.testing.assert_close(merged["head.weight"], heads.mean(0), atol=1e-6, rtol=1e-6)
        probs = load_detector(tmp_path / method).fake_probability(torch.zeros(2, 3, 32, 32))
        assert torch.isfinite(probs).all(), method


def test_a_data_free_and_a_data_aware_method_run_from_stock_mergekit_yaml(family, tmp_path):
    _check_methods(("tsv_m", "regmean"), family, tmp_path)


@pytest.mark.slow
def test_every_method_runs_from_stock_mergekit_yaml_and_matches_a_direct_call(family, tmp_path):
    _check_methods(tuple(METHOD_MODULES), family, tmp_path)


def test_data_aware_methods_without_statistics_fail_with_one_error_line(tmp_path, tiny_spec):
    paths = build_open_clip_family(tmp_path / "fam", tiny_spec, [tiny_spec.head] * 2, base_head=True)
    cfg = {"merge_method": "regmean", "models": [{"model": str(paths["ft0"])}, {"model": str(paths["ft1"])}]}
    proc = run_mergekit_yaml(cfg, tmp_path, "out")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no gram statistics" in errors[0] and "mergekit-clip stats" in errors[0], proc.stderr
    assert str(paths["ft0"]) in errors[0] or str(paths["ft1"]) in errors[0]
    assert not (tmp_path / "out").exists()
