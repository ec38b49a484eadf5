"""The real-scale benchmark (benchmarks/scale.py) at tiny size on CPU: every section runs and its JSON is complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_run_writes_every_section(tmp_path):
    out = tmp_path / "scale.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    cmd = [sys.executable, "-m", "benchmarks.scale", "--tiny", "--device", "cpu", "--root", str(tmp_path / "work"),
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    env_info = report["environment"]
    assert env_info["device_type"] == "cpu" and env_info["torch"] == __import__("torch").__version__
    rows = report["results"]
    by_section = {s: [r for r in rows if r["section"] == s] for s in ("eval", "train", "merge")}
    assert {r["precision"] for r in by_section["eval"]} == {"fp32", "bf16-weights"}
    for row in by_section["eval"]:  # the ratio is what the two printed rates say
        assert row["ratio"] == pytest.approx(row["end_to_end_img_s"] / row["model_only_img_s"])
    modes = {r["mode"] for r in by_section["train"]}
    assert {"full_finetune", "linear_probe"} <= modes
    full = [r for r in by_section["train"] if r["mode"] == "full_finetune"]
    probe = [r for r in by_section["train"] if r["mode"] == "linear_probe"]
    assert {r["grad_checkpointing"] for r in full} == {False, True}
    assert probe[0]["trainable_params"] < full[0]["trainable_params"]
    assert all(r["vs_full_finetune"] == pytest.approx(r["img_s"] / f["img_s"]) for r, f in zip(full, full))
    methods = {r["method"] for r in by_section["merge"]}
    assert {"ties", "task_arithmetic"} <= methods
    assert all(r["ratio"] > 0 and r["plain_in_memory_s"] > 0 for r in by_section["merge"])
    for line in ("eval  tiny", "train tiny", "merge tiny"):
        assert line in proc.stdout
