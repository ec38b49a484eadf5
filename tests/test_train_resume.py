"""A killed clip-train run continued with --resume ends bitwise equal to an uninterrupted one (CPU, fixed seeds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from train_support import make_dataset, tiny_config  # noqa: E402

from mergekit_clip.detector.io import read_state_dict  # noqa: E402
from train.cli import main  # noqa: E402
from train.finetune import KILL_ENV, SimulatedKill  # noqa: E402
from train.metrics_log import read_metrics  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    make_dataset(root, "TinyA")
    return root


def _config_file(root: Path, out: Path) -> Path:
    cfg = tiny_config(root, out, **{"optim.epochs": 3, "optim.grad_accum_steps": 2})
    cfg["sweep"] = {"modes": ["full_finetune", "lp_ft"], "seeds": [0]}
    file = out.parent / f"{out.name}.yaml"
    file.write_text(yaml.safe_dump(cfg))
    return file


def test_resume_after_kill_matches_uninterrupted_run(root, monkeypatch):
    runner = CliRunner()
    full = _config_file(root, root / "full")
    result = runner.invoke(main, [str(full)])
    assert result.exit_code == 0, result.output

    killed = _config_file(root, root / "killed")
    monkeypatch.setenv(KILL_ENV, "1")
    result = runner.invoke(main, [str(killed)])
    assert isinstance(result.exception, SimulatedKill), result.output
    assert (root / "killed" / "runs" / "ft_s0" / "checkpoint.pt").exists()
    assert not (root / "killed" / "ingredients" / "ft_s0").exists()  # no partial ingredient
    monkeypatch.delenv(KILL_ENV)

    refused = runner.invoke(main, [str(killed)])
    assert refused.exit_code == 1 and "--resume" in refused.output and "--overwrite" in refused.output

    changed = runner.invoke(main, [str(killed), "--resume", "--set", "optim.lr=0.5"])
    assert changed.exit_code == 1 and "optim.lr" in changed.output

    result = runner.invoke(main, [str(killed), "--resume"])
    assert result.exit_code == 0, result.output
    for name in ("ft_s0", "lpft_s0"):
        a = read_state_dict(root / "full" / "ingredients" / name)
        b = read_state_dict(root / "killed" / "ingredients" / name)
        assert set(a) == set(b)
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"
    epochs = [r["epoch"] for r in read_metrics(root / "killed" / "metrics.jsonl")
              if r.get("ingredient") == "ft_s0" and r["stage"] == "finetune"]  # fmt: skip
    assert epochs == [1, 2, 3]  # epoch 1 before the kill, 2 and 3 after the resume


def test_overwrite_replaces_a_run(root):
    file = _config_file(root, root / "over")
    runner = CliRunner()
    quick = ["--set", "optim.epochs=1", "--set", "sweep.modes=[linear_probe]"]
    assert runner.invoke(main, [str(file), *quick]).exit_code == 0
    (root / "over" / "ingredients" / "stale_s9").mkdir()
    result = runner.invoke(main, [str(file), "--overwrite", *quick])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (root / "over" / "ingredients").iterdir()) == ["lp_s0"]
