"""The study's robustness step: the selected merge and soup against the val-selected ingredient, perturbed."""

from __future__ import annotations

import numpy as np
import pytest
from study_support import make_dataset, make_family

from study.config import StudyConfig, StudyConfigError, load_study

PERTURBATIONS = ["gaussian_blur:13", "h264:40"]


@pytest.fixture()
def root(tmp_path, tiny_spec):
    make_family(tmp_path / "family", tiny_spec)
    for i, name in enumerate(["Tiny-FF", "Tiny-A", "Tiny-B"]):
        make_dataset(tmp_path / "json", tmp_path / "data", name, videos=4, frames=3, seed=i)
    return tmp_path


def _raw(root, **robustness) -> dict:
    return {
        "output": str(root / "out"),
        "data": {"json_root": str(root / "json"), "data_root": str(root / "data"), "source": "Tiny-FF",
                 "test": ["Tiny-A", "Tiny-B"]},
        "families": {"tiny": {"path": str(root / "family")}},
        "merges": {"ties": {"grid": {"density": [0.3, 0.7]}, "select": {"mode": "full_finetune"}}},
        "soups": {"uniform": {"select": {"mode": "full_finetune"}}},
        "eval": {"batch_size": 16, "workers": 0},
        "bootstrap": {"n_boot": 50},
        "robustness": {"perturbations": PERTURBATIONS, "datasets": ["Tiny-A"], **robustness},
    }  # fmt: skip


def test_selected_models_are_scored_as_clip_eval_scores_them_and_judged_paired(root):
    from eval.predict import Predictor
    from eval.robustness_run import evaluate_robustness
    from mergekit_clip.data.formats import load_frames
    from study.runner import StudyRun, run_study

    study = StudyConfig.model_validate(_raw(root))
    doc = run_study(study, progress=False)
    r = doc["robustness"]
    reference = doc["reference"]
    groups = {g["group"]: g["selected_on_val"] for g in doc["groups"]}
    assert r["roles"] == {"reference (val-selected ingredient)": reference, "ties": groups["ties"],
                          "uniform": groups["uniform"]}  # fmt: skip
    # the same models, frames and seeded perturbations through clip-eval's library entry point
    records = {"Tiny-A": load_frames("Tiny-A", "test", json_root=root / "json", data_root=root / "data")}
    dirs = {n: doc["models"][n]["path"] for n in r["models"]}
    predictor = Predictor("cpu", batch_size=16, num_workers=0, progress=False)
    direct = evaluate_robustness(dirs, records, PERTURBATIONS, predictor, seed=0)
    for name in r["models"]:
        for key in ("frame_auc", "video_auc", "drop_frame_auc"):
            assert r["means"][name][key] == pytest.approx(direct["robustness"]["means"][name][key], abs=1e-12)
    # Δ is the paired difference of the means over the perturbed conditions
    for name, vs in r["vs_reference"].items():
        expected = r["means"][name]["frame_auc"] - r["means"][reference]["frame_auc"]
        assert vs["frame"]["estimate"] == pytest.approx(expected, abs=1e-12)
        assert vs["frame"]["low"] <= vs["frame"]["estimate"] <= vs["frame"]["high"]
        assert vs["frame"]["verdict"] in ("more robust", "less robust", "within noise")
    report = (root / "out" / "report.md").read_text()
    assert "Is the merge more robust?" in report and "(reference)" in report
    assert (root / "out" / "robustness" / "robustness.csv").exists()
    assert any(f.startswith("robustness/") and f.endswith(".png") for f in doc["figures"])
    # a rerun scores nothing again (clean or perturbed)
    run = StudyRun(study, progress=False)
    run.prepare()
    result = run.validation()
    test = run.testing(result.entries)
    from study.robustness import run_robustness

    again = run_robustness(run, result, test)
    assert run.store.computed == 0
    assert again["means"][reference]["frame_auc"] == r["means"][reference]["frame_auc"]


def test_perturbed_scores_depend_on_the_seed_and_differ_from_clean(root):
    from mergekit_clip.data.perturbations import expand_perturbations
    from study.runner import StudyRun

    study = StudyConfig.model_validate(_raw(root, perturbations=["color_noise:0.05"], groups=["ties"]))
    run = StudyRun(study, progress=False)
    run.prepare()
    result = run.validation()
    test = run.testing(result.entries)
    entry = next(e for e in result.entries if e.name == result.selection.reference)
    noise = expand_perturbations(["color_noise:0.05"])

    def scores(seed: int) -> np.ndarray:
        got = run.store.get_perturbed(entry.path, entry.model_hash, [("Tiny-A", "test")], entry.name, noise, seed)
        return next(iter(got.values())).scores

    first = scores(0)
    for file in (root / "out" / "scores").rglob("*color_noise*"):
        file.unlink()  # computed again from the frames, not read back
    before = run.store.computed
    assert np.array_equal(scores(0), first) and run.store.computed == before + 1
    assert not np.array_equal(scores(1), first)
    assert not np.array_equal(first, test[entry.name]["Tiny-A"].scores)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"perturbations": ["gaussian_blur:8"]}, "robustness.perturbations"),
        ({"datasets": ["Tiny-FF"]}, "robustness.datasets ['Tiny-FF']: choose held-out test sets"),
        ({"groups": ["tise"]}, "robustness.groups ['tise']: choose from"),
    ],
)
def test_bad_robustness_sections_name_the_key(root, change, message):
    import yaml

    file = root / "study.yml"
    file.write_text(yaml.safe_dump(_raw(root, **change)))
    with pytest.raises(StudyConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_study(file)
