"""clip-train modes on a tiny ViT: linear probe (feature cache), full fine-tune, LP-FT, the family layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from train_support import make_dataset, tiny_config  # noqa: E402

from mergekit_clip.data.deepfakebench import load_frames  # noqa: E402
from mergekit_clip.data.transforms import build_eval_transform, read_image  # noqa: E402
from mergekit_clip.detector.io import load_detector, load_provenance, read_state_dict  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.metrics_log import read_metrics  # noqa: E402
from train.sweep import run_sweep  # noqa: E402


def pair_auc(labels: list[int], scores: list[float]) -> float:
    """AUC as the share of (fake, real) pairs ranked correctly, ties counting one half."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    make_dataset(root, "TinyA", seed=0)
    make_dataset(root, "TinyB", seed=1)
    cfg = tiny_config(root, root / "out")
    cfg["sweep"] = {"modes": ["linear_probe", "full_finetune", "lp_ft"], "seeds": [0, 1], "train_datasets": ["TinyA"]}
    config = TrainConfig.model_validate(cfg)
    rows = run_sweep(config)
    return root, config, rows


def test_family_layout_and_provenance(family):
    root, config, rows = family
    out = root / "out"
    names = sorted(p.name for p in (out / "ingredients").iterdir())
    assert names == sorted(["lp_s0", "lp_s1", "ft_s0", "ft_s1", "lpft_s0", "lpft_s1"])
    assert yaml.safe_load((out / "config.resolved.yaml").read_text()) == config.model_dump(mode="json")
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary] == [r["name"] for r in rows]
    assert not (out / "runs").exists()  # checkpoints are removed once the ingredient is saved
    for row in summary:
        prov = load_provenance(row["path"])
        for key in ("mode", "seed", "lr", "weight_decay", "augment_strength", "train_dataset", "base", "heldout"):
            assert key in prov, (row["name"], key)
        assert prov["base"] == str(out / "base")
        assert prov["heldout"]["split"] == "val" and prov["heldout"]["dataset"] == "TinyA"
        assert prov["heldout"] == row["heldout"]
    stages = {r["stage"] for r in read_metrics(out / "metrics.jsonl")}
    assert {"probe", "finetune", "heldout"} <= stages


def test_heldout_scores_match_an_independent_evaluation(family):
    root, _, rows = family
    records = load_frames("TinyA", "val", json_root=root / "json", data_root=root / "data")
    labels = [r.label for r in records]
    for row in rows:
        model = load_detector(row["path"])
        transform = build_eval_transform(model.spec.preprocess)
        images = torch.stack([transform(read_image(r.path)) for r in records])
        probs = model.fake_probability(images).tolist()
        assert row["heldout"]["auc"] == pytest.approx(pair_auc(labels, probs), abs=1e-6), row["name"]
        acc = float(np.mean([(p > 0.5) == y for p, y in zip(probs, labels)]))
        assert row["heldout"]["acc"] == pytest.approx(acc, abs=1e-6)
        assert row["heldout"]["auc"] > 0.8, row  # the tiny task is learnable in every mode


def test_linear_probe_keeps_the_backbone_and_fine_tune_changes_it(family):
    root, _, _ = family
    base = read_state_dict(root / "out" / "base")
    lp = read_state_dict(root / "out" / "ingredients" / "lp_s0")
    ft = read_state_dict(root / "out" / "ingredients" / "ft_s0")
    lpft = read_state_dict(root / "out" / "ingredients" / "lpft_s0")
    assert set(base) == set(lp) == set(ft)  # every tensor has a base (head included)
    for name in base:
        if name.startswith("visual."):
            assert torch.equal(base[name], lp[name]), name
    assert not torch.equal(base["head.weight"], lp["head.weight"])
    changed = [n for n in base if n.startswith("visual.transformer") and not torch.equal(base[n], ft[n])]
    assert changed
    assert torch.equal(base["visual.proj"], ft["visual.proj"])  # pooled head never reads proj: frozen
    # LP-FT starts from the probed head: its head is closer to the LP head than the plain fine-tune's
    assert (lpft["head.weight"] - lp["head.weight"]).norm() < (ft["head.weight"] - lp["head.weight"]).norm()


def test_feature_cache_hits_and_matches_recomputed_features(family, tmp_path):
    root, config, _ = family
    from mergekit_clip.distributed import DistInfo
    from train.features import backbone_fingerprint, cached_features
    from train.frames import TrainFrames

    base = load_detector(root / "out" / "base")
    records = load_frames("TinyA", "train", json_root=root / "json", data_root=root / "data")
    transform = build_eval_transform(base.spec.preprocess)
    dataset = TrainFrames(records, transform, 32, augment=False)
    kwargs = dict(cache_dir=root / "out" / "cache", batch_size=16, device=torch.device("cpu"), info=DistInfo())
    feats, labels, ok, hit = cached_features(base, dataset, backbone_key=backbone_fingerprint(base), **kwargs)
    assert hit  # the sweep computed them already
    with torch.no_grad():
        expected = base.features(torch.stack([transform(read_image(r.path)) for r in records]))
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-5)
    assert labels.tolist() == [r.label for r in records] and bool(ok.all())
    # other weights are another key: a miss, never stale features
    other = load_detector(root / "out" / "ingredients" / "ft_s0")
    _, _, _, hit = cached_features(other, dataset, backbone_key=backbone_fingerprint(other), **kwargs)
    assert not hit


def test_mergekit_merges_base_with_ingredients(family, tmp_path):
    root, _, _ = family
    out = root / "out"
    recipe = {
        "merge_method": "ties",
        "base_model": str(out / "base"),
        "models": [
            {"model": str(out / "ingredients" / n), "parameters": {"weight": 1.0, "density": 0.5}}
            for n in ("ft_s0", "ft_s1", "lpft_s0")
        ],
        "dtype": "float32",
    }
    (tmp_path / "ties.yml").write_text(yaml.safe_dump(recipe))
    exe = Path(sys.executable).with_name("mergekit-yaml")
    result = subprocess.run(
        [str(exe), str(tmp_path / "ties.yml"), str(tmp_path / "merged"), "--no-write-model-card"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    merged = read_state_dict(tmp_path / "merged")
    base = read_state_dict(out / "base")
    assert set(merged) == set(base)
    assert all(bool(torch.isfinite(t).all()) for t in merged.values())
    assert not torch.equal(merged["head.weight"], base["head.weight"])


def test_pretrained_detector_dir_is_the_shared_start(family, tmp_path):
    root, _, _ = family
    source = root / "out" / "ingredients" / "ft_s0"
    cfg = tiny_config(root, tmp_path / "out2", **{"optim.epochs": 1, "data.train_dataset": "TinyB"})
    cfg["backbone"] = {"pretrained": str(source)}
    run_sweep(TrainConfig.model_validate(cfg))
    base = read_state_dict(tmp_path / "out2" / "base")
    src = read_state_dict(source)
    for name, tensor in src.items():
        if name.startswith("visual."):
            assert torch.equal(base[name], tensor), name
    prov = load_provenance(tmp_path / "out2" / "ingredients" / "ft_s0")
    assert prov["heldout"]["dataset"] == "TinyB" and prov["pretrained"] == str(source)


def test_pretrained_weights_file_and_grad_checkpointing(family, tmp_path):
    root, _, _ = family
    source = load_detector(root / "out" / "ingredients" / "ft_s1")
    weights = tmp_path / "open_clip.pth"  # an open_clip-style whole-model state dict (visual.* + text tower)
    torch.save({**{f"visual.{k}": v for k, v in source.visual.state_dict().items()}, "logit_scale": torch.ones(())},
               weights)  # fmt: skip
    outs = {}
    for flag in (False, True):
        cfg = tiny_config(root, tmp_path / f"gc{flag}", **{"optim.epochs": 1, "backbone.grad_checkpointing": flag})
        cfg["backbone"]["pretrained"] = str(weights)
        run_sweep(TrainConfig.model_validate(cfg))
        outs[flag] = read_state_dict(tmp_path / f"gc{flag}" / "ingredients" / "ft_s0")
    base = read_state_dict(tmp_path / "gcFalse" / "base")
    for name, tensor in source.visual.state_dict().items():
        assert torch.equal(base[f"visual.{name}"], tensor), name
    # recomputing activations in backward changes memory, not the result
    for name in outs[False]:
        torch.testing.assert_close(outs[True][name], outs[False][name], rtol=1e-5, atol=1e-6, msg=name)


def test_clip_train_help_and_docs_list_every_registered_mode():
    from pathlib import Path

    from click.testing import CliRunner

    from train.cli import main
    from train.modes import mode_names

    text = CliRunner().invoke(main, ["-h"]).output
    table = (Path(__file__).parents[1] / "docs" / "train.md").read_text()
    for mode in mode_names():
        assert mode in text, mode
        assert f"| `{mode}`" in table, f"docs/train.md's table of modes lacks {mode}"
