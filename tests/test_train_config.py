"""clip-train configuration: validation with suggestions, overrides, sweep expansion, preflight errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from train_support import make_dataset, tiny_config  # noqa: E402

from train.cli import main  # noqa: E402
from train.config import ConfigError, TrainConfig, apply_overrides, load_config  # noqa: E402
from train.optim import warmup_cosine  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cfgdata")
    make_dataset(root, "TinyA")
    return root


def _write(tmp_path: Path, cfg: dict) -> Path:
    file = tmp_path / "train.yaml"
    file.write_text(yaml.safe_dump(cfg))
    return file


def test_unknown_yaml_key_suggests_closest(tmp_path, data_root):
    cfg = tiny_config(data_root, tmp_path / "out")
    cfg["optim"]["learning_rat"] = 1e-3
    cfg["optim"]["epocs"] = 2
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, cfg))
    text = str(err.value)
    assert "unknown key 'optim.epocs'" in text and "did you mean 'epochs'?" in text
    assert "optim.learning_rat" in text and str(tmp_path / "train.yaml") in text


def test_unknown_override_key_suggests_closest(tmp_path, data_root):
    file = _write(tmp_path, tiny_config(data_root, tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"unknown key 'sweep\.seed'.*did you mean 'seeds'\?"):
        load_config(file, ["sweep.seed=[1,2]"])
    with pytest.raises(ConfigError, match=r"unknown key 'optm'.*did you mean 'optim'\?"):
        load_config(file, ["optm.lr=1"])


def test_overrides_beat_yaml_and_parse_yaml_values(tmp_path, data_root):
    file = _write(tmp_path, tiny_config(data_root, tmp_path / "out"))
    config = load_config(file, ["optim.epochs=5", "sweep.lrs=[1e-4, 3e-4]", "data.frame_num=2"])
    assert config.optim.epochs == 5 and config.sweep.lrs == [1e-4, 3e-4] and config.data.frame_num == 2
    assert config.optim.probe_epochs == 30  # from the YAML
    assert config.optim.grad_clip == 1.0  # default
    raw = apply_overrides({"a": 1}, ["optim.lr=0.5"])
    assert raw == {"a": 1, "optim": {"lr": 0.5}}


def test_sweep_is_the_cartesian_product_with_stable_names(tmp_path, data_root):
    cfg = tiny_config(data_root, tmp_path / "out")
    cfg["sweep"] = {
        "modes": ["linear_probe", "full_finetune", "lp_ft"],
        "seeds": [0, 1],
        "lrs": [1e-4, 3e-4],
        "augment_strengths": [0.5, 1.0],
    }
    plans = TrainConfig.model_validate(cfg).ingredients()
    names = [p.name for p in plans]
    # linear probes ignore lr and augmentation (frozen features): 2 seeds; ft and lpft: 2 lrs x 2 augs x 2 seeds
    assert len(plans) == 2 + 8 + 8 and len(set(names)) == len(names)
    assert "lp_s0" in names and "ft_lr1e-4_aug0.5_s1" in names and "lpft_lr3e-4_aug1_s0" in names
    lp = next(p for p in plans if p.name == "lp_s1")
    assert lp.lr == cfg["optim"]["probe_lr"] and lp.augment_strength == 0.0
    assert {(p.lr, p.augment_strength, p.seed) for p in plans if p.mode == "full_finetune"} == {
        (lr, a, s) for lr in (1e-4, 3e-4) for a in (0.5, 1.0) for s in (0, 1)
    }


def test_warmup_cosine_schedule():
    total, warmup = 10, 2
    values = [warmup_cosine(s, total, warmup) for s in range(total)]
    assert values[0] == pytest.approx(1 / 3) and values[1] == pytest.approx(2 / 3)
    assert values[2] == pytest.approx(1.0) and values[-1] == pytest.approx(0.0, abs=1e-12)
    mid = 2 + 7 / 2  # halfway through the cosine part
    assert warmup_cosine(int(mid), total, warmup) == pytest.approx(0.5 * (1 + math.cos(math.pi * (int(mid) - 2) / 7)))
    assert all(a >= b for a, b in zip(values[2:], values[3:]))


def test_cli_dry_run_lists_ingredients(tmp_path, data_root):
    file = _write(tmp_path, tiny_config(data_root, tmp_path / "out"))
    result = CliRunner().invoke(main, [str(file), "--dry-run", "--set", "sweep.seeds=[3,4]"])
    assert result.exit_code == 0, result.output
    assert "ft_s3:" in result.output and "ft_s4:" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.train_dataset=NoSuchSet", "NoSuchSet"),
        ("data.val_split=validation", "validation"),
        ("sweep.modes=[probing]", "sweep.modes.0"),
        ("data.batch_size=7", None),  # fine for one process
        ("backbone.heads=3", "width 64 is not divisible by heads 3"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, data_root, override, message):
    file = _write(tmp_path, tiny_config(data_root, tmp_path / "out"))
    result = CliRunner().invoke(main, [str(file), "--set", override, "--set", "optim.epochs=1"])
    if message is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "base").exists() and not (tmp_path / "out" / "ingredients").exists()


def test_empty_split_is_refused(tmp_path):
    make_dataset(tmp_path, "NoVal", videos={"train": 4, "val": 0})
    file = _write(tmp_path, tiny_config(tmp_path, tmp_path / "out", **{"data.train_dataset": "NoVal"}))
    result = CliRunner().invoke(main, [str(file)])
    assert result.exit_code == 1 and "val" in result.output and "NoVal" in result.output, result.output
    assert not (tmp_path / "out" / "base").exists()


def test_weights_that_do_not_fit_are_refused(tmp_path, data_root, tiny_spec):
    from mergekit_clip.detector.io import create_detector

    wrong = create_detector(tiny_spec.model_copy(update={"backbone": tiny_spec.backbone.model_copy(
        update={"width": 32, "heads": 2})}))  # fmt: skip
    weights = tmp_path / "wrong.pth"
    torch.save({f"visual.{k}": v for k, v in wrong.visual.state_dict().items()}, weights)
    cfg = tiny_config(data_root, tmp_path / "out")
    cfg["backbone"]["pretrained"] = str(weights)
    result = CliRunner().invoke(main, [str(_write(tmp_path, cfg))])
    assert result.exit_code == 1, result.output
    assert "wrong.pth does not fit the architecture" in result.output and "visual.conv1.weight" in result.output
    assert not (tmp_path / "out" / "base").exists()


def test_open_clip_arch_and_dataset_axis(tmp_path, data_root):
    from train.backbone import resolve_spec

    cfg = tiny_config(data_root, tmp_path / "out")
    cfg["backbone"] = {"arch": "ViT-B-16", "quick_gelu": True}
    cfg["sweep"] = {"modes": ["full_finetune"], "seeds": [0], "train_datasets": ["TinyA", ["TinyA", "Tiny_B"]]}
    config = TrainConfig.model_validate(cfg)
    spec = resolve_spec(config)
    assert (spec.backbone.width, spec.backbone.layers, spec.backbone.patch_size) == (768, 12, 16)
    assert spec.backbone.act == "quick_gelu" and spec.preprocess.image_size == 224
    assert [p.name for p in config.ingredients()] == ["ft_TinyA_s0", "ft_TinyA+Tiny-B_s0"]
    with pytest.raises(ConfigError, match="backbone: unknown open_clip architecture 'ViT-Q-99'"):
        resolve_spec(TrainConfig.model_validate({**cfg, "backbone": {"arch": "ViT-Q-99"}}))
