"""A tiny study for the executor tests: a 2-ingredient family trained from a config, 3 merges, a soup and a
robustness check, small enough that every stage is one or two jobs (7 jobs in all)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from train_support import make_dataset, tiny_config

# jobs per stage for the study below (units per job in its executor section): train 2, merge 1, val 1, soups 1,
# test 1, robustness 1
EXPECTED_JOBS = {"train": 2, "merge": 1, "val": 1, "soups": 1, "test": 1, "robustness": 1}


def make_world(root: Path) -> Path:
    """Data (TinyA source, TinyB held out) and the family's clip-train config; returns ``root``."""
    make_dataset(root, "TinyA", videos={"train": 8, "val": 6, "test": 4}, frames=2, seed=0)
    make_dataset(root, "TinyB", videos={"train": 2, "val": 2, "test": 6}, frames=2, seed=1)
    cfg = tiny_config(root, root / "unused", **{"optim.epochs": 1, "sweep.seeds": [0, 1]})
    (root / "family.yaml").write_text(yaml.safe_dump(cfg))
    return root


def study_file(root: Path, out: Path, family_out: Path, **executor) -> Path:
    raw = {
        "name": "tinyjobs",
        "output": str(out),
        "data": {"json_root": str(root / "json"), "data_root": str(root / "data"), "source": "TinyA",
                 "test": ["TinyB"]},
        "families": {"fam": {"config": str(root / "family.yaml"), "output": str(family_out)}},
        "merges": {"linear": {}, "task_arithmetic": {"grid": {"lambda": [0.5, 1.0]}}},
        "soups": {"uniform": {}},
        "robustness": {"perturbations": ["GB:7"], "datasets": ["TinyB"]},
        "eval": {"device": "cpu", "batch_size": 32, "workers": 0, "threads": 1},
        "bootstrap": {"n_boot": 50},
        "executor": {"poll_s": 0.5, "default": {"time_min": 60, "cpus": 1, "array_parallelism": 2},
                     "stages": {"val": {"per_job": 8}, "test": {"per_job": 16}}, **executor},
    }  # fmt: skip
    file = out.parent / f"{out.name}.yml"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return file


def comparable(doc: dict) -> dict:
    """study.json without what legitimately differs between two runs: timings and the creation time."""
    doc = json.loads(json.dumps(doc))
    doc.pop("timings_s", None)
    doc.pop("created", None)
    doc["provenance"].pop("versions", None)
    return doc
