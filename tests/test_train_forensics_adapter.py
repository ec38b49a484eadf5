"""clip-train mode ``forensics_adapter``: the losses against values worked out by hand, a tiny family whose CLIP tower
stays bitwise frozen and whose base is the adapter initialisation, resume bitwise exact, missing masks refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from mergekit_clip.detector.io import detector_spec, read_state_dict
from train.cli import main
from train.finetune import KILL_ENV
from train.modes.forensics_adapter import inter_frame_loss, intra_frame_loss

REPO = Path(__file__).resolve().parents[1]
LABELS = {0: "CelebDFv2_real", 1: "CelebDFv2_fake"}
SIZE = 64


def test_intra_frame_loss_by_hand():
    # one fake frame, two patches: the forged one e1 = (1, 0), the real one e2 = (0, 1); tau = 0.5.
    # F = [e1; 0], R = [0; e2]: exp(R R^T / tau) sums 3 ones and e^2; exp(F R^T / tau) sums 4 ones.
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[5.0, 5.0], [1.0, 2.0]]])  # the 2nd frame is real: unused
    labels, patches = torch.tensor([1, 0]), torch.tensor([[1, 0], [1, 1]])
    expected = -math.log((3 + math.e**2) / (4 + 3 + math.e**2))
    assert float(intra_frame_loss(tokens, labels, patches, 0.5)) == pytest.approx(expected, rel=1e-6)
    assert float(intra_frame_loss(tokens, torch.tensor([0, 0]), patches, 0.5)) == 0.0  # no fake frame


def test_inter_frame_loss_by_hand():
    # one real frame r = (3, 0) -> (1, 0) after normalising, one fake f = (0, 2) -> (0, 1); one patch each:
    # positive exp(r.r / 0.5) = e^2, negative exp(r.f / 0.5) = 1
    tokens = torch.tensor([[[3.0, 0.0]], [[0.0, 2.0]]])
    expected = -math.log(math.e**2 / (math.e**2 + 1))
    assert float(inter_frame_loss(tokens, torch.tensor([0, 1]), 0.5)) == pytest.approx(expected, rel=1e-6)
    assert float(inter_frame_loss(tokens, torch.tensor([1, 1]), 0.5)) == 0.0  # one label only


def _frame(rng, mask: np.ndarray | None) -> np.ndarray:
    image = rng.uniform(90, 160) + rng.normal(0, 6, size=(SIZE, SIZE, 3))
    if mask is not None:
        image = image + mask[..., None] * np.array([70.0, -20.0, -30.0])
    return np.clip(image, 0, 255).astype(np.uint8)


def make_masked_dataset(root: Path, name: str = "TinyM", videos: int = 4, frames: int = 2, seed: int = 0):
    """DeepfakeBench layout with a ``frames`` folder; every fake frame's blob mask at its ``masks`` path."""
    rng = np.random.default_rng(seed)
    groups: dict = {LABELS[0]: {}, LABELS[1]: {}}
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for split in ("train", "val"):
        for label in (0, 1):
            for v in range(videos // 2):
                vid, paths = f"{split}_{label}_{v}", []
                for f in range(frames):
                    rel = f"{name}/frames/{vid}/{f}.png"
                    mask = None
                    if label:
                        cy, cx = rng.uniform(20, 44, size=2)
                        mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < 16**2).astype(np.float64)
                        mask_file = root / "data" / name / "masks" / vid / f"{f}.png"
                        mask_file.parent.mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(mask_file), (mask * 255).astype(np.uint8))
                    (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(root / "data" / rel), _frame(rng, mask))
                    paths.append(rel)
                groups[LABELS[label]].setdefault(split, {})[vid] = {"label": LABELS[label], "frames": paths}
    (root / "json").mkdir(parents=True, exist_ok=True)
    (root / "json" / f"{name}.json").write_text(json.dumps({name: groups}))


def _config(root: Path, out: Path, **changes) -> Path:
    cfg = yaml.safe_load((REPO / "train" / "configs" / "tiny_forensics_adapter.yaml").read_text())
    cfg["output"] = str(out)
    cfg["backbone"] = {"width": 64, "layers": 2, "heads": 2, "patch_size": 8, "image_size": 32, "embed_dim": 32}
    cfg["data"].update(json_root=str(root / "json"), data_root=str(root / "data"), train_dataset="TinyM",
                       batch_size=4, eval_batch_size=8)  # fmt: skip
    cfg["optim"]["epochs"] = 2
    cfg["sweep"]["seeds"] = [0]
    cfg.update(changes)
    file = out.parent / f"{out.name}.yaml"
    file.write_text(yaml.safe_dump(cfg))
    return file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fa_train")
    make_masked_dataset(root)
    result = CliRunner().invoke(main, [str(_config(root, root / "full"))])
    assert result.exit_code == 0, result.output
    return root


def test_training_keeps_clip_bitwise_and_starts_from_the_saved_adapter_init(trained):
    out = trained / "full"
    base, ingredient = read_state_dict(out / "base"), read_state_dict(out / "ingredients" / "fa_s0")
    assert set(base) == set(ingredient)
    visual = [k for k in base if k.startswith("visual.")]
    assert visual and all(torch.equal(base[k], ingredient[k]) for k in visual)  # CLIP frozen, bit for bit
    trained_keys = [k for k in base if not k.startswith("visual.")]
    assert all(not torch.equal(base[k], ingredient[k]) for k in trained_keys if k.endswith("qkv.weight"))
    spec = detector_spec(out / "ingredients" / "fa_s0")
    assert spec == detector_spec(out / "base") and spec.forensics_adapter.num_queries == 8
    provenance = json.loads((out / "ingredients" / "fa_s0" / "config.json").read_text())["provenance"]
    n_trained = sum(base[k].numel() for k in trained_keys if "running_" not in k)
    assert provenance["trainable_parameters"] == n_trained and provenance["trainable_visual_parameters"] == 0
    assert provenance["mode_options"]["boundary_weight"] == 200.0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in lines if r.get("stage") == "step")


def test_resume_is_bitwise_exact(trained, monkeypatch):
    runner = CliRunner()
    file = _config(trained, trained / "killed")
    monkeypatch.setenv(KILL_ENV, "1")
    assert runner.invoke(main, [str(file)]).exit_code != 0
    monkeypatch.delenv(KILL_ENV)
    result = runner.invoke(main, [str(file), "--resume"])
    assert result.exit_code == 0, result.output
    a, b = (
        read_state_dict(trained / "full" / "ingredients" / "fa_s0"),
        read_state_dict(trained / "killed" / "ingredients" / "fa_s0"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_masks_are_refused_before_training(tmp_path):
    make_masked_dataset(tmp_path)
    masks = sorted((tmp_path / "data" / "TinyM" / "masks").rglob("*.png"))
    masks[0].unlink()
    result = CliRunner().invoke(main, [str(_config(tmp_path, tmp_path / "out"))])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "TinyM train: 1 of 4 fake frames have no forgery mask" in errors[0], result.output
    assert "mode forensics_adapter" in errors[0] and not (tmp_path / "out").exists()


def test_other_modes_in_the_family_and_a_misfit_adapter_are_refused(tmp_path):
    make_masked_dataset(tmp_path)
    mixed = _config(tmp_path, tmp_path / "mixed", sweep={"modes": ["forensics_adapter", "full_finetune"]})
    result = CliRunner().invoke(main, [str(mixed)])
    assert result.exit_code == 1 and "trains only forensics_adapter ingredients" in result.output
    heads = _config(tmp_path, tmp_path / "heads")
    result = CliRunner().invoke(main, [str(heads), "--set", "mode_options.forensics_adapter.adapter.bias_heads=16"])
    assert result.exit_code == 1 and "bias_heads 16 differs from the CLIP tower's heads 2" in result.output


@pytest.mark.slow
def test_two_processes_train_the_family_like_one(tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo, CPU): CLIP still bitwise the base's, the same held-out frames scored.
    BatchNorm statistics and the contrastive terms are per process (plain DDP), so weights agree only closely."""
    import os
    import subprocess
    import sys

    make_masked_dataset(tmp_path)
    file = _config(tmp_path, tmp_path / "single")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runs = {
        "single": [sys.executable, "-m", "train", str(file)],
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
                str(file), "--set", f"output={tmp_path / 'ddp'}"],
    }  # fmt: skip
    for name, cmd in runs.items():
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
    a = read_state_dict(tmp_path / "single" / "ingredients" / "fa_s0")
    b = read_state_dict(tmp_path / "ddp" / "ingredients" / "fa_s0")
    base = read_state_dict(tmp_path / "ddp" / "base")
    assert all(torch.equal(b[k], base[k]) for k in base if k.startswith("visual."))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 0.05
    one, two = (json.loads((tmp_path / r / "summary.json").read_text())[0]["heldout"] for r in ("single", "ddp"))
    assert one["n"] == two["n"] and abs(one["auc"] - two["auc"]) <= 0.1
    config = json.loads((tmp_path / "ddp" / "ingredients" / "fa_s0" / "config.json").read_text())
    assert config["provenance"]["world_size"] == 2
