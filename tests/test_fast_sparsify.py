"""fast_sparsify keeps exactly stock mergekit's entries: bitwise against the stock kernels and a stock merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mergekit.sparsify as sp  # importing mergekit registers the plugin (and installs the fast kernels)
import pytest
import torch
import yaml
from merge_support import assert_bitwise
from safetensors.torch import load_file, save_file

from mergekit_clip.plugin.kernels import fast_sparsify as fs
from mergekit_clip.plugin.kernels.fast_sparsify import TIES_ENV

BIN = Path(sys.executable).parent


def stock(name: str):
    fs.install()
    return fs._STOCK[name]


def cases() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(300, 7, generator=g),  # distinct values
        torch.randint(-2, 3, (6, 3, 4, 4), generator=g).float(),  # a conv weight (della ranks along dim 1)
        torch.randint(-3, 4, (5000,), generator=g).float(),  # ties everywhere, both signs
        torch.randint(0, 3, (64, 65), generator=g).float() - 1,  # mostly ties at |x| == 1
        torch.where(torch.rand(4096, generator=g) < 0.9, 0.0, torch.randn(4096, generator=g)),  # ties at zero
        -torch.zeros(1000),  # signed zeros only
        torch.randn(1, generator=g),
        torch.randn(2000, generator=g).half(),
        torch.randn(2000, generator=g).bfloat16(),
    ]


@pytest.fixture(autouse=True)
def _stock_ties(monkeypatch):
    monkeypatch.delenv(TIES_ENV, raising=False)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.2, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("norm", [None, sp.RescaleNorm.l1, sp.RescaleNorm.l2])
def test_magnitude_bitwise_equal_to_stock(density, norm):
    for x in cases():
        assert_bitwise(fs.magnitude(x, density, norm), stock("magnitude")(x, density, norm))


@pytest.mark.parametrize("density,gamma", [(0.2, 0.01), (0.5, 0.1), (0.9, 0.05), (0.3, 0.0), (0.05, 0.5)])
def test_magnitude_outliers_bitwise_equal_to_stock(density, gamma):
    for x in cases():
        for norm in (None, sp.RescaleNorm.l1):
            expected = stock("magnitude_outliers")(x, density, norm, gamma)
            assert_bitwise(fs.magnitude_outliers(x, density, norm, gamma), expected)


@pytest.mark.parametrize("density,epsilon", [(0.2, 0.1), (0.5, 0.3)])
def test_della_bitwise_equal_to_stock(density, epsilon):
    for x in cases():
        if x.numel() < 2:
            continue
        torch.manual_seed(7)
        expected = stock("della_magprune")(x, density, epsilon, sp.RescaleNorm.l1)
        torch.manual_seed(7)
        assert_bitwise(fs.della_magprune(x, density, epsilon, sp.RescaleNorm.l1), expected)


def test_fast_path_without_ties_replay_on_ambiguous_ties():
    fs.fallbacks.clear()
    fs.replays.clear()
    x = torch.randn(10_000)
    fs.magnitude(x, 0.2)
    fs.magnitude_outliers(x, 0.2, None, 0.01)
    assert sum(fs.fallbacks.values()) == 0 and sum(fs.replays.values()) == 0
    ties = torch.tensor([3.0, -3.0, 3.0, 1.0, -3.0, 0.5] * 100)  # 400 entries tie at |x| == 3, k = 300
    assert_bitwise(fs.magnitude(ties, 0.5), stock("magnitude")(ties, 0.5))
    assert_bitwise(fs.magnitude_outliers(ties, 0.5, None, 0.1), stock("magnitude_outliers")(ties, 0.5, None, 0.1))
    assert fs.replays["magnitude"] == 1 and fs.replays["magnitude_outliers"] == 1
    assert sum(fs.fallbacks.values()) == 0


def test_stock_kernel_runs_when_the_replay_is_unavailable(monkeypatch):
    """A torch build whose CPU sort no longer matches the replay: stock's own sort decides the ties."""
    monkeypatch.setattr(fs, "replay_matches_torch", lambda: False)
    fs.fallbacks.clear()
    ties = torch.tensor([3.0, -3.0, 3.0, 1.0, -3.0, 0.5] * 100)
    assert_bitwise(fs.magnitude(ties, 0.5), stock("magnitude")(ties, 0.5))
    assert_bitwise(fs.magnitude_outliers(ties, 0.5, None, 0.1), stock("magnitude_outliers")(ties, 0.5, None, 0.1))
    assert fs.fallbacks["magnitude"] == 1 and fs.fallbacks["magnitude_outliers"] == 1


def test_index_tie_mode_matches_stable_argsort(monkeypatch):
    """MERGEKIT_CLIP_SPARSIFY_TIES=index: lowest index first among ties, as a stable argsort orders them."""
    monkeypatch.setenv(TIES_ENV, "index")
    fs.fallbacks.clear()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-4, 5, (3000,), generator=g).float()
    n = x.numel()
    for density in (0.1, 0.37, 0.8):
        k = max(1, int(density * n))
        keep = torch.zeros(n)
        keep[torch.argsort(x.abs(), descending=True, stable=True)[:k]] = 1
        assert_bitwise(fs.magnitude(x, density), x * keep)
        gamma = 0.05
        target, n_bot = int(density * n), max(0, n - int(density * n) - int(gamma * n))
        keep = torch.zeros(n)
        keep[torch.sort(x.abs(), stable=True).indices[n_bot : n_bot + target]] = 1
        assert_bitwise(fs.magnitude_outliers(x, density, None, gamma), x * keep)
    assert sum(fs.fallbacks.values()) == 0


def test_bad_tie_mode_is_named(monkeypatch):
    monkeypatch.setenv(TIES_ENV, "random")
    with pytest.raises(ValueError, match=TIES_ENV):
        fs.magnitude(torch.tensor([1.0, 1.0, 2.0]), 0.5)


def test_install_is_idempotent_and_routes_sparsify():
    fs.install()
    fs.install()
    assert sp.magnitude is fs.magnitude and fs._STOCK["magnitude"] is not fs.magnitude
    assert fs._STOCK["magnitude"].__module__ == "mergekit.sparsify"
    x = torch.randint(-2, 3, (999,)).float()
    out = sp.sparsify(x, 0.3, sp.SparsificationMethod.magnitude)
    assert_bitwise(out, fs._STOCK["magnitude"](x, 0.3))


def _write_clip_vision(path: Path, state: dict, config) -> None:
    path.mkdir(parents=True)
    config.save_pretrained(str(path))
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def hf_family(tmp_path_factory):
    """A tiny HF CLIPVisionModel base and three fine-tunes whose task vectors hold ties (quantised noise)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    root = tmp_path_factory.mktemp("hf_family")
    config = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    config.architectures = ["CLIPVisionModel"]
    torch.manual_seed(0)
    base = CLIPVisionModel(config).state_dict()
    _write_clip_vision(root / "base", base, config)
    g = torch.Generator().manual_seed(1)
    for i in range(3):
        # noise on a 1/64 grid: many |delta| tie (up to rounding), exercising the tie rules end to end
        ft = {k: v + torch.round(torch.randn(v.shape, generator=g) * 4) / 64 for k, v in base.items()}
        _write_clip_vision(root / f"ft{i}", ft, config)
    return root


def _mergekit(recipe: dict, out: Path, disable_plugin: bool) -> dict[str, torch.Tensor]:
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = out.parent / f"{out.name}.yml"
    cfg.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, HF_HUB_OFFLINE="1", MERGEKIT_CLIP_DISABLE="1" if disable_plugin else "0")
    cmd = [str(BIN / "mergekit-yaml"), str(cfg), str(out), "--no-write-model-card", "--no-copy-tokenizer", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # stock mergekit's inferred CLIP architecture drops the ``vision_model.`` prefix; the plugin keeps it
    return {k.removeprefix("vision_model."): v for k, v in load_file(str(out / "model.safetensors")).items()}


@pytest.mark.parametrize("method", ["ties", "breadcrumbs_ties"])
def test_mergekit_yaml_with_plugin_equals_stock_mergekit(hf_family, tmp_path, method):
    params = {"weight": 1.0, "density": 0.2}
    if method == "breadcrumbs_ties":
        params["gamma"] = 0.05
    recipe = {
        "merge_method": method,
        "base_model": str(hf_family / "base"),
        "models": [{"model": str(hf_family / f"ft{i}"), "parameters": params} for i in range(3)],
        "dtype": "float32",
    }
    stock_out = _mergekit(recipe, tmp_path / "stock", disable_plugin=True)
    ours = _mergekit(recipe, tmp_path / "plugin", disable_plugin=False)
    assert stock_out.keys() == ours.keys() and len(ours) > 10
    base_file = hf_family / "base" / "model.safetensors"
    base = {k.removeprefix("vision_model."): v for k, v in load_file(str(base_file)).items()}
    changed = 0
    for name, tensor in stock_out.items():
        assert_bitwise(ours[name], tensor)
        changed += int(not torch.equal(tensor, base[name]))
    assert changed > 10  # the merge did move the weights
    kernels = json.loads((tmp_path / "plugin" / "merge_log.json").read_text())["kernels"]
    assert kernels["fast_sparsify"] and kernels["inplace_merge_group"] and kernels["tie_mode"] == "stock"
    assert sum(kernels["tie_replays"].values()) > 0  # the quantised task vectors did tie at the threshold
    assert kernels["stock_sort_fallbacks"] == {}


def test_bad_tie_mode_fails_before_merging_and_writes_nothing(hf_family, tmp_path):
    recipe = {
        "merge_method": "linear",  # no sparsification: only the up-front check can catch it
        "models": [{"model": str(hf_family / f"ft{i}"), "parameters": {"weight": 1.0}} for i in range(2)],
        "dtype": "float32",
    }
    cfg = tmp_path / "linear.yml"
    cfg.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, HF_HUB_OFFLINE="1", MERGEKIT_CLIP_DISABLE="0", **{TIES_ENV: "random"})
    cmd = [str(BIN / "mergekit-yaml"), str(cfg), str(tmp_path / "out"), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"{TIES_ENV}='random': expected one of stock, index" in proc.stderr
    assert "linear merge of" not in proc.stderr  # refused before the merge started
    assert not (tmp_path / "out").exists()


def test_gather_nan_check_uses_sum_but_stays_exact():
    """The plugin's NaN/Inf input check: fast finite-sum pre-check, exact when the sum overflows."""
    from mergekit_clip.plugin.heads import MergeContext, MergeInputError, ModelHeadInfo, prepare_inputs

    ctx = MergeContext(models={"a": ModelHeadInfo("model_a", None), "b": ModelHeadInfo("model_b", None)})
    big = torch.full((8,), 3e38)  # finite entries whose float32 sum overflows to inf
    assert prepare_inputs("visual.proj", {"a": big, "b": -big}, ctx, ["a", "b"])["a"] is big
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.ones(100)
        x[37] = bad
        with pytest.raises(MergeInputError, match="model_b: tensor visual.proj has NaN/Inf"):
            prepare_inputs("visual.proj", {"a": torch.ones(100), "b": x}, ctx, ["a", "b"])


def test_kth_smallest_is_exact_when_the_sample_brackets_and_when_it_misses():
    g = torch.Generator().manual_seed(2)
    periodic = (torch.arange(98_304) % 12 != 0).float() + torch.rand(98_304, generator=g)  # the sample sees < 1
    for w in (torch.rand(200_001, generator=g), torch.randint(0, 50, (100_000,), generator=g).float(), periodic):
        ordered = w.sort().values
        for rank in (0, 1, w.numel() // 5, w.numel() // 2, w.numel() - 2, w.numel() - 1):
            assert fs._kth_smallest(w, rank).item() == ordered[rank].item()
