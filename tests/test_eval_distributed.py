"""torchrun with 2 CPU processes (gloo): frames are sharded without duplicates and the report equals 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner
from test_eval_support import make_dataset, make_detectors

from eval.cli import main
from mergekit_clip.distributed import DistInfo


def test_shards_are_disjoint_and_cover_everything():
    for n in (0, 1, 7, 10):
        shards = [DistInfo(rank=r, world_size=3).shard(n) for r in range(3)]
        flat = sorted(i for s in shards for i in s)
        assert flat == list(range(n))


def test_two_process_run_matches_single_process(tmp_path, tiny_spec):
    json_root, data_root = make_dataset(tmp_path / "ds", name="DFDC", videos=3, frames=3)  # 18 frames: odd shards
    (model,) = make_detectors(tmp_path / "m", tiny_spec, seeds=(0,))
    common = ["--datasets", "DFDC", "--json-root", str(json_root), "--data-root", str(data_root),
              "--workers", "0", "--batch-size", "4"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    single = tmp_path / "single"
    result = CliRunner().invoke(main, [str(model), *common, "--out", str(single)])
    assert result.exit_code == 0, result.output
    multi = tmp_path / "multi"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "eval", str(model), *common, "--out", str(multi)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def rows(folder):
        lines = (folder / "predictions" / "det0__DFDC.jsonl").read_text().splitlines()[1:]
        return [json.loads(x) for x in lines]

    one, two = rows(single), rows(multi)
    assert [r["path"] for r in two] == [r["path"] for r in one] and len(two) == 18
    for a, b in zip(one, two):
        assert abs(a["score"] - b["score"]) < 1e-5
    rep1 = json.loads((single / "report.json").read_text())
    rep2 = json.loads((multi / "report.json").read_text())
    assert rep2["results"][0]["frames"] == 18
    assert abs(rep2["results"][0]["frame_auc"] - rep1["results"][0]["frame_auc"]) < 1e-9
    assert rep2["models"]["det0"]["world_size"] == 2
