"""``torchrun --nproc_per_node 2 -m train`` on CPU (gloo): data-parallel, rank 0 writes, same ingredient quality."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from train_support import make_dataset, tiny_config  # noqa: E402

from mergekit_clip.detector.io import read_state_dict  # noqa: E402


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_process_run_matches_one_process(tmp_path):
    make_dataset(tmp_path, "TinyA")
    cfg = tiny_config(tmp_path, tmp_path / "single", **{"optim.epochs": 2})
    cfg["sweep"] = {"modes": ["full_finetune", "linear_probe"], "seeds": [0]}
    file = tmp_path / "train.yaml"
    file.write_text(yaml.safe_dump(cfg))
    repo = Path(__file__).resolve().parents[1]

    single = _run([sys.executable, "-m", "train", str(file)], repo)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
         str(file), "--set", f"output={tmp_path / 'ddp'}"],
        repo,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    one = {r["name"]: r for r in json.loads((tmp_path / "single" / "summary.json").read_text())}
    two = {r["name"]: r for r in json.loads((tmp_path / "ddp" / "summary.json").read_text())}
    assert set(one) == set(two) == {"ft_s0", "lp_s0"}
    for name in one:
        assert two[name]["heldout"]["n"] == one[name]["heldout"]["n"]  # every val frame scored once
        assert abs(two[name]["heldout"]["auc"] - one[name]["heldout"]["auc"]) <= 0.02, (one[name], two[name])
    ddp_config = json.loads((tmp_path / "ddp" / "ingredients" / "ft_s0" / "config.json").read_text())
    assert ddp_config["provenance"]["world_size"] == 2
    # the global batch is split over the ranks, so both runs take the same steps on the same samples:
    # the weights agree up to float summation order
    a = read_state_dict(tmp_path / "single" / "ingredients" / "ft_s0")
    b = read_state_dict(tmp_path / "ddp" / "ingredients" / "ft_s0")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)
    # rank 0 alone wrote: one line per epoch, not one per rank
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r.get("stage") == "finetune"] == [1, 2]
