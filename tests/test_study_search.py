"""Optuna searches in a study: a killed search resumes without repeating a trial; two worker processes on one
storage share a search and compute no candidate twice; the search key is refused where it cannot work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from study_support import make_dataset, make_family

from study.config import StudyConfig, StudyConfigError

GROUP = "ties_tpe"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("search")
    make_family(root / "family", tiny_spec)
    for i, name in enumerate(["Tiny-FF", "Tiny-A"]):
        make_dataset(root / "json", root / "data", name, videos=4, frames=2, seed=i)
    return root


def _raw(world, out, trials=4, storage=None) -> dict:
    search = {"space": {"density": [0.1, 0.9]}, "weights": [0.2, 1.0], "trials": trials, "seed": 0}
    if storage is not None:
        search["storage"] = storage
    return {
        "name": "tiny", "output": str(out),
        "data": {"json_root": str(world / "json"), "data_root": str(world / "data"), "source": "Tiny-FF",
                 "test": ["Tiny-A"]},
        "families": {"tiny": {"path": str(world / "family")}},
        "merges": {GROUP: {"method": "ties", "grid": {"lambda": 1.0}, "select": {"mode": "full_finetune"},
                           "search": search}},
        "eval": {"batch_size": 16, "workers": 0},
    }  # fmt: skip


@pytest.fixture()
def merges(monkeypatch):
    """Counts in-process merges (mergekit's run_merge)."""
    import mergekit.merge

    original = mergekit.merge.run_merge
    made = []

    def counting(config, out_path, options, config_source=None):
        made.append(Path(out_path).parent.name)  # the candidate's content key
        return original(config, out_path, options, config_source)

    monkeypatch.setattr(mergekit.merge, "run_merge", counting)
    return made


def _finished(study, group=GROUP):
    import optuna
    from optuna.trial import TrialState

    from study.search import open_storage, storage_url

    storage = open_storage(storage_url(study, study.merges[group].search))
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return optuna.load_study(study_name=name, storage=storage).get_trials(states=(TrialState.COMPLETE,))


def test_killed_search_resumes_without_repeating_a_trial(world, tmp_path, merges, monkeypatch):
    import study.search as search
    from study.runner import StudyRun
    from study.scores import metric_value

    study = StudyConfig.model_validate(_raw(world, tmp_path / "out", trials=4))
    real_score = search.protocol_score
    calls = {"n": 0}

    def killed_on_third(run, entry):  # killed after the third candidate was merged, before its score was told
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_score(run, entry)

    monkeypatch.setattr(search, "protocol_score", killed_on_third)
    run = StudyRun(study, progress=False)
    run.prepare()
    with pytest.raises(KeyboardInterrupt):
        search.GroupSearch(run, GROUP).optimize()
    assert len(merges) == 3 and len(_finished(study)) == 2
    killed_key = merges[2]

    monkeypatch.setattr(search, "protocol_score", real_score)
    run = StudyRun(study, progress=False)
    run.prepare()
    outcome = search.GroupSearch(run, GROUP).optimize()
    trials = _finished(study)
    keys = [t.user_attrs["key"] for t in trials]
    assert len(trials) == 4 and len(set(keys)) == 4  # the budget, no trial twice
    assert killed_key in keys and outcome.counts["retried"] == 1  # the killed trial was finished from its cache
    assert len(merges) == 4 == len(set(merges))  # one merge per candidate over both runs: nothing repeated
    assert sorted(c.key for c in outcome.candidates) == sorted(keys)
    assert (study.output / "search" / "optuna.db").is_file()  # the default storage: a SQLite file in the study
    for trial, candidate in zip(sorted(trials, key=lambda t: t.number), outcome.candidates):
        entry = search.GroupSearch(run, GROUP).entry_of(candidate)  # the trial's value is its val video AUC
        val = {d: s for (d, _), s in run.score(entry, [("Tiny-FF", "val")]).items()}
        assert trial.value == pytest.approx(metric_value(val, "video_auc"))
        weights = [m["parameters"]["weight"] for m in candidate.recipe["models"]]
        assert weights == [round(trial.params[f"w_{n}"], 4) for n in candidate.ingredients]
    again = search.GroupSearch(run, GROUP).optimize()  # a finished search: no new trial, nothing merged
    assert again.counts["trials"] == 0 and len(merges) == 4 and [c.key for c in again.candidates] == keys


WORKER = """
import json, sys, time
from pathlib import Path
from study.config import StudyConfig
from study.runner import StudyRun
from study.search import GroupSearch
raw, worker, barrier = json.loads(Path(sys.argv[1]).read_text()), int(sys.argv[2]), Path(sys.argv[3])
run = StudyRun(StudyConfig.model_validate(raw), progress=False)
run.prepare()
search = GroupSearch(run, "ties_tpe")
(barrier / str(worker)).touch()
while len(list(barrier.iterdir())) < 2:  # both workers imported and ready: they run side by side
    time.sleep(0.01)
outcome = search.optimize(worker)
print(json.dumps({**outcome.counts, "scored": run.store.computed}))
"""


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("journal", marks=pytest.mark.slow)])
def test_two_workers_share_one_search(world, tmp_path, storage):
    out = tmp_path / "out"
    url = None if storage == "sqlite" else f"journal:{tmp_path / 'journal.log'}"
    raw = _raw(world, out, trials=4, storage=url)
    (tmp_path / "study.json").write_text(json.dumps(raw))
    (tmp_path / "barrier").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "study.json"), str(w),
                               str(tmp_path / "barrier")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for w in (0, 1)]  # fmt: skip
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-2000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    study = StudyConfig.model_validate(raw)
    trials = _finished(study)
    keys = {t.user_attrs["key"] for t in trials}
    assert 4 <= len(trials) <= 5  # the budget over both workers (each may finish one trial past it)
    assert all(r["trials"] >= 1 for r in results)  # both workers ran trials of the one search
    merged_dirs = list((out / "candidates" / GROUP).iterdir())
    assert sum(r["merged"] for r in results) == len(keys) == len(merged_dirs)  # every candidate merged once
    assert sum(r["scored"] for r in results) == len(keys)  # and scored once (one val split)


def test_search_config_errors(world, tmp_path):
    raw = _raw(world, tmp_path)
    bad_grid = json.loads(json.dumps(raw))
    bad_grid["merges"][GROUP]["grid"] = {"lambda": [1.0, 2.0]}
    with pytest.raises(ValueError, match=r"grid \['lambda'\]: with 'search'"):
        StudyConfig.model_validate(bad_grid)
    typo = json.loads(json.dumps(raw))
    typo["merges"][GROUP]["search"]["trails"] = 3
    with pytest.raises(ValueError, match="trails"):
        StudyConfig.model_validate(typo)
    reversed_range = json.loads(json.dumps(raw))
    reversed_range["merges"][GROUP]["search"]["space"] = {"density": [0.9, 0.1]}
    with pytest.raises(ValueError, match="low 0.9 must be below high 0.1"):
        StudyConfig.model_validate(reversed_range)
    bad_storage = json.loads(json.dumps(raw))
    bad_storage["merges"][GROUP]["search"]["storage"] = "optuna.db"
    with pytest.raises(ValueError, match="journal:PATH"):
        StudyConfig.model_validate(bad_storage)

    from study.runner import StudyRun
    from study.search import GroupSearch, SearchError

    unknown = json.loads(json.dumps(raw))
    unknown["merges"][GROUP]["search"]["space"] = {"densty": [0.1, 0.9]}
    run = StudyRun(StudyConfig.model_validate(unknown), progress=False)
    run.prepare()
    with pytest.raises(SearchError, match=r"merges.ties_tpe.search: .*no parameter 'densty': did you mean 'density'"):
        GroupSearch(run, GROUP)
    assert StudyConfigError  # the CLI turns both into one-line errors
