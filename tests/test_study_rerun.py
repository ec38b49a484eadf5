"""A finished study reruns near free: nothing touched, nothing drawn, mergekit never imported; one new candidate
rebuilds exactly what depends on it (its merge, its score files, the figures that show it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from study_support import make_dataset, make_family

TESTS = ["Tiny-A", "Tiny-B"]
ROWS = (("ft_lr1e-3_s0", "full_finetune", 1e-3, 0), ("ft_lr1e-3_s1", "full_finetune", 1e-3, 1),
        ("ft_lr3e-4_s0", "full_finetune", 3e-4, 0))  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("rerun")
    make_family(root / "family", tiny_spec, rows=ROWS)
    for i, name in enumerate(["Tiny-FF", *TESTS]):
        make_dataset(root / "json", root / "data", name, videos=3, frames=2, seed=i)
    return root


def raw_study(world: Path, out: Path, lambdas=(0.5, 1.0)) -> dict:
    return {
        "name": "tiny", "output": str(out),
        "data": {"json_root": str(world / "json"), "data_root": str(world / "data"), "source": "Tiny-FF",
                 "test": TESTS},
        "families": {"tiny": {"path": str(world / "family")}},
        "merges": {"ties": {"grid": {"density": [0.3, 0.7]}}, "task_arithmetic": {"grid": {"lambda": list(lambdas)}}},
        "eval": {"batch_size": 16, "workers": 0}, "bootstrap": {"n_boot": 50},
        "tracking": {"tensorboard": False},
    }  # fmt: skip


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


RUN = """
import sys
from study.cli import main
try:
    main(["run", sys.argv[1], "--quiet"])
except SystemExit as e:
    code = e.code
print("MERGEKIT_IMPORTED", any(m == "mergekit" or m.startswith("mergekit.") for m in sys.modules))
"""


def run_in_fresh_process(study_file: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get(
        "PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", RUN, str(study_file)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_rerun_of_a_finished_study_touches_nothing_and_imports_no_mergekit(world, tmp_path):
    out = tmp_path / "out"
    study_file = tmp_path / "study.yml"
    study_file.write_text(yaml.safe_dump(raw_study(world, out)))
    first = run_in_fresh_process(study_file)
    assert "MERGEKIT_IMPORTED True" in first  # the cold run merges
    before = mtimes(out)
    assert any(k.startswith("figures/") for k in before) and any(k.startswith("scores/") for k in before)
    second = run_in_fresh_process(study_file)
    assert "is up to date" in second and "MERGEKIT_IMPORTED False" in second
    assert mtimes(out) == before  # no cached file, figure, report or study.json rewritten
    assert json.loads((out / "study.json").read_text())["groups"]  # and the summary was printed from it
    assert "Did merging help?" in second


def test_a_study_that_writes_statistics_is_up_to_date_on_its_second_run(world, tmp_path, capsys):
    """The study computes RegMean statistics beside the ingredients: the recorded key must include them."""
    from study.config import StudyConfig
    from study.runner import run_study

    raw = raw_study(world, tmp_path / "out")
    raw["merges"] = {"regmean": {}}
    raw["stats"] = {"dataset": "source", "max_frames": 8}
    run_study(StudyConfig.model_validate(raw), progress=False)
    assert list((world / "family" / "ingredients").glob("*/merge_stats/*.safetensors"))
    capsys.readouterr()
    run_study(StudyConfig.model_validate(raw), progress=False)
    assert "is up to date" in capsys.readouterr().out


def test_a_changed_input_is_not_reused(world, tmp_path):
    from study.config import StudyConfig
    from study.runner import run_study

    study = StudyConfig.model_validate(raw_study(world, tmp_path / "out"))
    run_study(study, progress=False)
    changed = StudyConfig.model_validate({**raw_study(world, tmp_path / "out"), "bootstrap": {"n_boot": 60}})
    doc = run_study(changed, progress=False)
    assert doc["bootstrap"]["n_boot"] == 60  # a study-file change runs the (cached) study again
    study_json = tmp_path / "out" / "study.json"
    study_json.write_text(study_json.read_text().replace('"n_boot": 60', '"n_boot": 61'))
    assert run_study(changed, progress=False)["bootstrap"]["n_boot"] == 60  # an edited output is rebuilt


def test_one_new_candidate_rebuilds_exactly_what_depends_on_it(world, tmp_path, monkeypatch):
    import study.candidates as candidates
    from study.config import StudyConfig
    from study.runner import run_study

    out = tmp_path / "out"
    run_study(StudyConfig.model_validate(raw_study(world, out)), progress=False)
    before = mtimes(out)
    merged = []
    original = candidates.merge_candidate
    monkeypatch.setattr(candidates, "merge_candidate", lambda c, o, s: merged.append(c.name) or original(c, o, s))
    doc = run_study(StudyConfig.model_validate(raw_study(world, out, lambdas=(0.5, 1.0, 1.5))), progress=False)
    assert merged == ["task_arithmetic[lambda=1.5]"]
    after = mtimes(out)
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in before if after.get(k) != before[k])
    new_model = Path(doc["models"]["task_arithmetic[lambda=1.5]"]["path"]).parent.name
    assert all(k.startswith(f"candidates/task_arithmetic/{new_model}/") or k.startswith("scores/") for k in new), new
    new_scores = sorted(Path(k).name.split("__")[:2] for k in new if k.startswith("scores/") and k.endswith(".npz"))
    assert new_scores == sorted([["Tiny-FF", "val"], ["Tiny-FF", "test"]] + [[t, "test"] for t in TESTS])
    assert not any(k.startswith(("candidates/", "scores/")) for k in changed), changed  # old entries untouched
    assert "figures/sweep_ties_density.png" not in changed  # the ties group did not change
    assert "figures/sweep_task_arithmetic_lambda.png" in changed and "figures/did_merging_help.png" in changed
