"""``clip-study``: selection never reads a test split, a killed study resumes, a changed grid runs only new points."""

from __future__ import annotations

import json

import pytest
import yaml
from study_support import make_dataset, make_family

from study.config import StudyConfig

TESTS = ["Tiny-A", "Tiny-B"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("study")
    make_family(root / "family", tiny_spec)
    for i, name in enumerate(["Tiny-FF", *TESTS]):
        make_dataset(root / "json", root / "data", name, videos=4, frames=2, seed=i)
    return root


def _study(world, out, **changes) -> StudyConfig:
    raw = {
        "name": "tiny",
        "output": str(out),
        "data": {"json_root": str(world / "json"), "data_root": str(world / "data"), "source": "Tiny-FF",
                 "test": TESTS},
        "families": {"tiny": {"path": str(world / "family")}},
        "merges": {
            "ties": {"grid": {"density": [0.3, 0.7]}, "select": {"mode": "full_finetune"}},
            "task_arithmetic": {"grid": {"lambda": [0.5, 1.0]}, "select": {"lr": 1e-3}},
            "linear": {},
        },
        "soups": {"uniform": {"select": {"mode": "full_finetune"}}, "greedy": {"select": {"mode": "full_finetune"}}},
        "eval": {"batch_size": 16, "workers": 0},
        "bootstrap": {"n_boot": 50},
    }  # fmt: skip
    for key, value in changes.items():
        raw[key] = value
    return StudyConfig.model_validate(raw)


@pytest.fixture()
def merge_counter(monkeypatch):
    """Counts in-process merges; ``fail_after`` simulates a study killed after that many merges."""
    import mergekit.merge

    original = mergekit.merge.run_merge
    state = {"calls": 0, "fail_after": None}

    def counting(config, out_path, options, config_source=None):
        if state["fail_after"] is not None and state["calls"] >= state["fail_after"]:
            raise KeyboardInterrupt("killed")
        state["calls"] += 1
        return original(config, out_path, options, config_source)

    monkeypatch.setattr(mergekit.merge, "run_merge", counting)
    return state


def test_selection_never_reads_a_test_split(world, tmp_path):
    from study.runner import StudyRun, run_study
    from study.scores import records_loader

    study = _study(world, tmp_path / "out")
    real = records_loader(study.data)
    reads = []

    def val_only(dataset, split):
        reads.append((dataset, split))
        if split == "test":
            raise AssertionError(f"selection read {dataset}/test")
        return real(dataset, split)

    run = StudyRun(study, val_only, progress=False)
    run.prepare()
    result = run.validation()
    assert reads and {split for _, split in reads} == {"val"}
    assert set(result.selection.selected) == {"ingredients", "ties", "task_arithmetic", "linear", "uniform", "greedy",
                                              "any soup", "any merge"}  # fmt: skip
    # the full study (which then reads test splits) reports exactly the selection made without them
    doc = run_study(study, progress=False)
    assert {g["group"]: g["selected_on_val"] for g in doc["groups"]} == result.selection.selected
    ingredients = [n for n, m in doc["models"].items() if m["kind"] == "ingredient"]
    val = {n: doc["models"][n]["val"]["score"] for n in ingredients}
    loss = {n: doc["models"][n]["val"]["tie_break"]["value"] for n in ingredients}  # log_loss: lower is better
    assert doc["tie_break"] == "log_loss"
    assert doc["reference"] == max(ingredients, key=lambda n: (val[n], -loss[n], -ingredients.index(n)))


def test_report_columns_intervals_and_verdicts(world, tmp_path):
    from study.runner import run_study

    doc = run_study(_study(world, tmp_path / "out"), progress=False)
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "selected on source val" in report and "oracle (best on test)" in report and "gap (inflation)" in report
    assert yaml.safe_load((out / "study.resolved.yaml").read_text())["name"] == "tiny"
    assert json.loads((out / "study.json").read_text())["reference"] == doc["reference"]
    for name, model in doc["models"].items():
        iv = model["held_out_mean"]["frame"]
        assert iv["low"] <= iv["estimate"] <= iv["high"], name
        tests = [model["test"][d]["frame_auc"] for d in TESTS]
        assert iv["estimate"] == pytest.approx(sum(tests) / len(tests))
        if model["kind"] != "ingredient":
            assert model["vs_reference"]["frame"]["verdict"] in ("helped", "hurt", "within noise")
    for group in doc["groups"]:
        assert group["gap"] == pytest.approx(group["oracle_held_out"] - group["selected_held_out"])
        assert group["gap"] >= 0
    assert doc["models"][doc["reference"]]["kind"] == "ingredient"


def test_killed_study_reruns_no_finished_candidate(world, tmp_path, merge_counter):
    from study.runner import run_study

    study = _study(world, tmp_path / "out")
    merge_counter["fail_after"] = 3
    with pytest.raises(KeyboardInterrupt):
        run_study(study, progress=False)
    assert merge_counter["calls"] == 3
    merge_counter.update(calls=0, fail_after=None)
    doc = run_study(study, progress=False)
    assert merge_counter["calls"] == 5 - 3  # 2 ties + 2 task_arithmetic + 1 linear, 3 were finished
    assert doc["merges"] == {"reused": 3, "merged": 2}
    merge_counter["calls"] = 0
    run_study(study, progress=False)
    assert merge_counter["calls"] == 0


def test_changed_grid_runs_only_new_points(world, tmp_path, merge_counter):
    from study.runner import StudyRun, run_study

    run_study(_study(world, tmp_path / "out"), progress=False)
    merge_counter["calls"] = 0
    wider = _study(world, tmp_path / "out", merges={
        "ties": {"grid": {"density": [0.3, 0.5, 0.7]}, "select": {"mode": "full_finetune"}},
        "task_arithmetic": {"grid": {"lambda": [0.5, 1.0]}, "select": {"lr": 1e-3}},
        "linear": {},
    })  # fmt: skip
    run = StudyRun(wider, progress=False)
    run.prepare()
    scored_before = run.store.computed
    result = run.validation()
    assert merge_counter["calls"] == 1
    assert result.merges == {"reused": 5, "merged": 1}
    assert run.store.computed - scored_before == 1  # only the new candidate is scored on val


def test_figures_get_every_model_and_roc_only_selected(world, tmp_path, monkeypatch):
    """The calls into study/figures.py follow the shared interface; ROC plots show selected models only."""
    import sys
    import types

    import study
    from study.report import _roc_models
    from study.runner import run_study

    calls = {}

    def recorder(name):
        def plot(*args):
            calls.setdefault(name, []).append(args)
            args[-1].write_bytes(b"png")
            return args[-1]

        return plot

    stub = types.ModuleType("study.figures")
    for name in ("plot_did_merging_help", "plot_val_vs_test", "plot_param_sweep"):
        setattr(stub, name, recorder(name))
    monkeypatch.setitem(sys.modules, "study.figures", stub)
    monkeypatch.setattr(study, "figures", stub, raising=False)
    doc = run_study(_study(world, tmp_path / "out"), progress=False)
    rows, reference, _ = calls["plot_did_merging_help"][0]
    assert reference == doc["reference"] and {r["name"] for r in rows} == set(doc["models"])
    assert {r["kind"] for r in rows} == {"ingredient", "soup", "merge"}
    candidates, _ = calls["plot_val_vs_test"][0]
    assert len(candidates) == 5 and all({"method", "name", "val", "test"} <= set(c) for c in candidates)
    picked = {g["selected_on_val"] for g in doc["groups"]}
    assert {r["name"] for r in rows if r["selected"]} == picked
    merged = {n for n in picked if doc["models"][n]["kind"] == "merge"}
    assert {c["name"] for c in candidates if c["selected"]} == merged
    assert [(a[1], a[2]) for a in calls["plot_param_sweep"]] == [("ties", "density"), ("task_arithmetic", "lambda")]
    shown = _roc_models(doc)
    groups = {g["group"]: g for g in doc["groups"]}
    must = {doc["reference"], groups["ingredients"]["oracle_best_on_test"], groups["any merge"]["selected_on_val"],
            groups["any soup"]["selected_on_val"]}  # fmt: skip
    assert must <= set(shown) <= picked | must  # the references and the overall picks, never an unpicked candidate
    assert len(shown) <= 4 + 2 * len(doc["family_references"]) and len(shown) < len(picked | must)
    assert (tmp_path / "out" / "figures" / "roc_Tiny-A.png").exists()
    assert "figures/did_merging_help.png" in (tmp_path / "out" / "report.md").read_text()


def test_several_families_are_also_judged_against_their_own_best_member(world, tmp_path, tiny_spec):
    from study.runner import run_study

    make_family(tmp_path / "second", tiny_spec, rows=(("sp_a", "full_finetune", 1e-3, 0),
                                                       ("sp_b", "full_finetune", 1e-3, 1)))  # fmt: skip
    study = _study(world, tmp_path / "out", families={"tiny": {"path": str(world / "family")},
                                                       "spec": {"path": str(tmp_path / "second")}},
                   merges={"linear": {"family": "spec"}},
                   soups={"uniform": {"family": "tiny"}, "greedy": {"family": "tiny"}})  # fmt: skip
    doc = run_study(study, progress=False)
    models = doc["models"]
    val = {n: (m["val"]["score"], -m["val"]["tie_break"]["value"]) for n, m in models.items()}
    for family in ("tiny", "spec"):
        members = [n for n, m in models.items() if m["kind"] == "ingredient" and m["family"] == family]
        assert doc["family_references"][family] == max(members, key=lambda n: (*val[n], -members.index(n)))
    for family in ("tiny", "spec"):  # each family's val pick among the merges and soups made from it
        made = [n for n, m in models.items() if m["kind"] != "ingredient" and m["family"] == family]
        assert doc["family_merges"][family] == max(made, key=lambda n: (*val[n], -made.index(n)))
    assert doc["family_merges"]["spec"] == "linear" and doc["family_merges"]["tiny"] in ("uniform", "greedy")
    vs = models["linear"]["vs_family_reference"]
    assert vs["family"] == "spec" and vs["reference"] == doc["family_references"]["spec"]
    expected = models["linear"]["held_out_mean"]["frame"]["estimate"] - models[vs["reference"]]["held_out_mean"][
        "frame"]["estimate"]  # fmt: skip
    assert vs["frame"]["estimate"] == pytest.approx(expected, abs=1e-12)
    assert "Within each family" in (tmp_path / "out" / "report.md").read_text()
