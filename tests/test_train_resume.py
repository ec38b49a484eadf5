"""A killed clip-train run continued with --resume ends bitwise equal to an uninterrupted one (CPU, fixed seeds).

A kill is simulated with the ``CLIP_TRAIN_KILL_AFTER_EPOCH`` hook (the epoch checkpoint is on disk, then the run
raises). The run is built in the hidden sibling ``.OUT.tmp-<host>-<pid>``; ``--resume`` continues there and swaps it
into ``OUT``. Final weights are compared bit for bit and ``metrics.jsonl`` line for line (no line twice).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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

EPOCHS = 3


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    make_dataset(root, "TinyA")
    return root


def _config_file(root: Path, out: Path, modes: list[str] = ("full_finetune", "lp_ft")) -> Path:
    cfg = tiny_config(root, out, **{"optim.epochs": EPOCHS, "optim.grad_accum_steps": 2})
    cfg["sweep"] = {"modes": list(modes), "seeds": [0]}
    file = out.parent / f"{out.name}.yaml"
    file.write_text(yaml.safe_dump(cfg))
    return file


@pytest.fixture(scope="module")
def uninterrupted(root) -> Path:
    result = CliRunner().invoke(main, [str(_config_file(root, root / "full"))])
    assert result.exit_code == 0, result.output
    return root / "full"


def temp_runs(out: Path) -> list[Path]:
    """The hidden work folders of runs into ``out`` (a killed run leaves exactly one)."""
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a, b = read_state_dict(a_dir), read_state_dict(b_dir)
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{b_dir.name}: {key} differs after resume"


def log_lines(out: Path, ingredient: str) -> list[tuple]:
    """What an ingredient's metrics lines say, without wall-clock fields."""
    keep = ("stage", "epoch", "step", "loss", "lr", "auc", "acc", "n")
    records = read_metrics(out / "metrics.jsonl")
    return [tuple(r.get(k) for k in keep) for r in records if r.get("ingredient") == ingredient]


def kill_after(runner: CliRunner, file: Path, epochs: int, monkeypatch, *extra: str):
    monkeypatch.setenv(KILL_ENV, str(epochs))
    result = runner.invoke(main, [str(file), *extra])
    monkeypatch.delenv(KILL_ENV)
    assert isinstance(result.exception, SimulatedKill), result.output
    return result


def test_resume_after_kill_matches_uninterrupted_run(root, uninterrupted, monkeypatch):
    runner = CliRunner()
    killed = _config_file(root, root / "killed")
    kill_after(runner, killed, 1, monkeypatch)
    assert not (root / "killed").exists()  # nothing partial where the run goes
    (work,) = temp_runs(root / "killed")
    assert (work / "runs" / "ft_s0" / "checkpoint.pt").exists()
    assert not (work / "ingredients" / "ft_s0").exists()  # no partial ingredient

    refused = runner.invoke(main, [str(killed)])
    assert refused.exit_code == 1 and "--resume" in refused.output and "--overwrite" in refused.output
    assert work.name in refused.output

    changed = runner.invoke(main, [str(killed), "--resume", "--set", "optim.lr=0.5"])
    assert changed.exit_code == 1 and "optim.lr" in changed.output

    result = runner.invoke(main, [str(killed), "--resume"])
    assert result.exit_code == 0, result.output
    assert temp_runs(root / "killed") == []
    for name in ("ft_s0", "lpft_s0"):
        assert_same_weights(uninterrupted / "ingredients" / name, root / "killed" / "ingredients" / name)
        assert log_lines(root / "killed", name) == log_lines(uninterrupted, name)
    epochs = [r["epoch"] for r in read_metrics(root / "killed" / "metrics.jsonl")
              if r.get("ingredient") == "ft_s0" and r["stage"] == "finetune"]  # fmt: skip
    assert epochs == [1, 2, 3]  # epoch 1 before the kill, 2 and 3 after the resume
    summary = json.loads((root / "killed" / "summary.json").read_text())
    assert all(Path(row["path"]).parent == root / "killed" / "ingredients" for row in summary)  # not the temp


@pytest.mark.parametrize("epochs", [1, 2, EPOCHS])  # EPOCHS: killed after the last checkpoint, before the save
def test_lp_ft_resume_is_bitwise_exact_at_every_kill_point(root, uninterrupted, monkeypatch, epochs):
    runner = CliRunner()
    out = root / f"lpft_kill{epochs}"
    file = _config_file(root, out, modes=["lp_ft"])
    kill_after(runner, file, epochs, monkeypatch)
    result = runner.invoke(main, [str(file), "--resume"])
    assert result.exit_code == 0, result.output
    assert_same_weights(uninterrupted / "ingredients" / "lpft_s0", out / "ingredients" / "lpft_s0")
    lines = log_lines(out, "lpft_s0")
    assert lines == log_lines(uninterrupted, "lpft_s0")  # the probe stage is not re-run, no line twice
    assert len(set(lines)) == len(lines)


def test_a_line_logged_before_the_kill_is_not_duplicated(root, uninterrupted, monkeypatch):
    """Killed between an epoch's log line and its checkpoint, or mid-line: the resumed log is still exact."""
    runner = CliRunner()
    out = root / "torn"
    file = _config_file(root, out, modes=["lp_ft"])
    kill_after(runner, file, 1, monkeypatch)
    (work,) = temp_runs(out)
    log = work / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    epoch1 = next(line for line in lines if '"finetune"' in line)
    log.write_text("".join(lines) + epoch1.replace('"epoch": 1', '"epoch": 2') + '{"ingredient": "lpft_s0", "sta')
    result = runner.invoke(main, [str(file), "--resume"])
    assert result.exit_code == 0, result.output
    assert log_lines(out, "lpft_s0") == log_lines(uninterrupted, "lpft_s0")


def test_resume_refuses_changed_training_data(tmp_path, monkeypatch):
    make_dataset(tmp_path, "TinyA")
    runner = CliRunner()
    file = _config_file(tmp_path, tmp_path / "run", modes=["full_finetune"])
    kill_after(runner, file, 1, monkeypatch)
    dataset = tmp_path / "json" / "TinyA.json"
    doc = json.loads(dataset.read_text())
    group = doc["TinyA"]["CelebDFv2_fake"]["train"]
    group.pop(sorted(group)[0])  # one training video fewer
    dataset.write_text(json.dumps(doc))
    result = runner.invoke(main, [str(file), "--resume"])
    assert result.exit_code == 1
    assert "training data changed" in result.output and str(dataset) in result.output
    assert result.output.count("Error:") == 1 and "Traceback" not in result.output
    (work,) = temp_runs(tmp_path / "run")
    recorded = json.loads((work / "run_inputs.json").read_text())
    assert str(dataset) in recorded["dataset_sha256"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failing_overwrite_keeps_the_previous_run_byte_identical(root, monkeypatch):
    runner = CliRunner()
    file = _config_file(root, root / "over", modes=["linear_probe"])
    quick = ["--set", "optim.epochs=1"]
    assert runner.invoke(main, [str(file), *quick]).exit_code == 0
    before = snapshot(root / "over")

    import train.sweep as sweep

    def broken(ctx, plan):
        raise RuntimeError("simulated failure after the run folder was started")

    monkeypatch.setattr(sweep, "train_ingredient", broken)
    result = runner.invoke(main, [str(file), "--overwrite", *quick])
    assert isinstance(result.exception, RuntimeError)
    assert snapshot(root / "over") == before  # old code had deleted it before training
    assert temp_runs(root / "over") == []  # nothing worth resuming: no partial folder either
    monkeypatch.undo()

    (root / "over" / "ingredients" / "stale_s9").mkdir()
    result = runner.invoke(main, [str(file), "--overwrite", *quick])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (root / "over" / "ingredients").iterdir()) == ["lp_s0"]


def test_killed_overwrite_keeps_the_old_run_until_resume_completes(root, uninterrupted, monkeypatch):
    runner = CliRunner()
    out = root / "over_kill"
    old = _config_file(root, out, modes=["linear_probe"])
    assert runner.invoke(main, [str(old)]).exit_code == 0
    before = snapshot(out)
    new = _config_file(root, out, modes=["full_finetune"])
    kill_after(runner, new, 1, monkeypatch, "--overwrite")
    assert snapshot(out) == before
    result = runner.invoke(main, [str(new), "--resume"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "ingredients").iterdir()) == ["ft_s0"]
    assert_same_weights(uninterrupted / "ingredients" / "ft_s0", out / "ingredients" / "ft_s0")
    assert temp_runs(out) == []


def test_output_that_is_not_a_run_is_not_replaced(tmp_path):
    make_dataset(tmp_path, "TinyA")
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    file = _config_file(tmp_path, out, modes=["linear_probe"])
    result = CliRunner().invoke(main, [str(file)])
    assert result.exit_code == 1 and "not a clip-train run folder" in result.output
    assert (out / "thesis.tex").read_text() == "precious"


def test_run_files_follow_the_umask(tmp_path):
    make_dataset(tmp_path, "TinyA")
    file = _config_file(tmp_path, tmp_path / "run", modes=["linear_probe"])
    old = os.umask(0o027)
    try:
        result = CliRunner().invoke(main, [str(file), "--set", "optim.probe_epochs=2"])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    wrong = {k: oct(v) for k, v in modes.items() if v != (0o750 if (out / k).is_dir() else 0o640)}
    assert not wrong and any(k.startswith("cache/") for k in modes)  # mkdtemp/mkstemp made 0700/0600


@pytest.mark.slow
def test_sigkilled_process_is_resumed_by_the_next_one(root, uninterrupted):
    """A real SIGKILL (no exception handler runs): the next process finds the dead pid's folder and resumes it."""
    out = root / "sigkill"
    file = _config_file(root, out, modes=["lp_ft"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "train", str(file)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(out.parent.glob(f".{out.name}.tmp-*/runs/*/checkpoint.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and len(temp_runs(out)) == 1
    result = CliRunner().invoke(main, [str(file), "--resume"])
    assert result.exit_code == 0, result.output
    assert_same_weights(uninterrupted / "ingredients" / "lpft_s0", out / "ingredients" / "lpft_s0")
    assert log_lines(out, "lpft_s0") == log_lines(uninterrupted, "lpft_s0")
    assert temp_runs(out) == []
