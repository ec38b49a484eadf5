"""``clip-study run --executor slurm|submitit-local``: every stage as jobs, the same study.json as the local run.

The Slurm tests (marked ``slurm``) talk to a real controller (``scripts/slurm-dev up`` starts one on 127.0.0.1;
``.ci/run`` does); without one they are skipped with the reason. One scenario covers the cluster's cases at once,
to keep the suite fast: a coordinator killed while its training jobs run, a second coordinator that re-attaches,
a scoring job cancelled with ``scancel`` mid-way and resubmitted, then a rerun of the finished study.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from jobs_support import EXPECTED_JOBS, comparable, make_world, study_file

from study.config import StudyConfigError, load_study
from study.jobs.config import STAGES

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("jobs"))


@pytest.fixture(scope="module")
def local_doc(world):
    """The reference: the same tiny study run in this process (``--executor local``)."""
    from study.runner import run_study

    file = study_file(world, world / "local", world / "fam_local")
    return run_study(load_study(file), progress=False), world / "local", world / "fam_local"


def _same_study(doc: dict, out: Path, fam: Path, reference) -> None:
    ref_doc, ref_out, ref_fam = reference
    text = json.dumps(comparable(doc)).replace(str(out), "OUT").replace(str(fam), "FAM")
    ref = json.dumps(comparable(ref_doc)).replace(str(ref_out), "OUT").replace(str(ref_fam), "FAM")
    assert json.loads(text) == json.loads(ref)


def _book(out: Path) -> dict:
    return json.loads((out / "jobs" / "book.json").read_text())


def _jobs_per_stage(book: dict) -> dict[str, int]:
    return {stage: len({e["job_id"] for e in units.values()}) for stage, units in book.items()}


# ---------------------------------------------------------------- the executor section and the sbatch scripts


RESOURCES = {
    "max_attempts": 2,
    "default": {"partition": "gpu", "account": "lab", "qos": "high", "time_min": 120, "cpus": 8, "memory_gb": 32,
                "gpus": 1, "setup": ["module load cuda/12.4", "source /opt/venv/bin/activate"],
                "sbatch": {"constraint": "a100"}},
    "stages": {"train": {"gpus": 4, "tasks_per_node": 4, "time_min": 720, "memory_gb": 128},
               "merge": {"gpus": 0, "cpus": 16, "per_job": 8}, "test": {"array_parallelism": 16}},
}  # fmt: skip


def _sbatch_fields(script: str) -> dict[str, str]:
    fields = {}
    for line in script.splitlines():
        m = re.fullmatch(r"#SBATCH --([\w-]+)(?:=(.*))?", line.strip())
        if m:
            fields[m.group(1)] = m.group(2) if m.group(2) is not None else ""
    return fields


def test_sbatch_script_of_each_stage(tmp_path):
    from study.jobs.backends import sbatch_script

    file = tmp_path / "s.yml"
    raw = {"name": "lab", "output": str(tmp_path / "out"),
           "data": {"json_root": "j", "data_root": "d", "source": "A", "test": ["B"]},
           "families": {"f": {"path": str(tmp_path / "f")}}, "executor": RESOURCES}  # fmt: skip
    file.write_text(json.dumps(raw))
    executor = load_study(file).executor
    assert executor.max_attempts == 2
    for stage in STAGES:
        default, own = RESOURCES["default"], RESOURCES["stages"].get(stage, {})
        want = {**default, **own}  # the stage's keys over the default, worked out here independently
        fields = _sbatch_fields(sbatch_script(executor.resources(stage), f"lab-{stage}", tmp_path / "logs"))
        assert fields["job-name"] == f"lab-{stage}"
        assert fields["partition"] == "gpu" and fields["account"] == "lab" and fields["qos"] == "high"
        assert fields["time"] == str(want["time_min"])
        assert fields["cpus-per-task"] == str(want["cpus"])
        assert fields["mem"] == f"{int(want['memory_gb'] * 1024)}M"
        assert fields["ntasks-per-node"] == str(want.get("tasks_per_node", 1))
        assert fields["nodes"] == "1"
        assert fields["constraint"] == "a100"
        if want["gpus"]:
            assert fields["gpus-per-node"] == str(want["gpus"])
        else:
            assert "gpus-per-node" not in fields
        script = sbatch_script(executor.resources(stage), f"lab-{stage}", tmp_path / "logs")
        setup = [script.index(line) for line in default["setup"]]
        assert setup == sorted(setup) and setup[-1] < script.index("srun")  # before the job, in order
    assert executor.resources("merge").per_job == 8
    assert executor.resources("train").per_job == 1  # one ingredient per job, always
    assert executor.resources("test").array_parallelism == 16


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        ({"default": {"partitoin": "gpu"}}, "partitoin"),
        ({"stages": {"merges": {}}}, "executor.stages ['merges']: choose from ['synth', 'train'"),
        ({"stages": {"train": {"per_job": 3}}}, "executor.stages.train.per_job: always 1"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_executor_section_is_refused(tmp_path, executor, message):
    file = tmp_path / "s.yml"
    raw = {"output": "o", "data": {"json_root": "j", "data_root": "d", "source": "A", "test": ["B"]},
           "families": {"f": {"path": "f"}}, "executor": executor}  # fmt: skip
    file.write_text(json.dumps(raw))
    with pytest.raises(StudyConfigError, match=re.escape(message)):
        load_study(file)


def test_a_second_coordinator_is_refused(tmp_path):
    from study.jobs.coordinator import StudyJobsError, coordinator_lock

    class Study:
        output = tmp_path / "out"

    with coordinator_lock(Study):
        with pytest.raises(StudyJobsError, match=r"another clip-study coordinator runs this study \(pid \d+"):
            with coordinator_lock(Study):
                pass
    with coordinator_lock(Study):  # released: the next one gets it
        pass


# ---------------------------------------------------------------- submitit's local processes (no cluster)


def test_submitit_local_study_equals_local(world, local_doc):
    from study.jobs.coordinator import run_with_jobs

    out, fam = world / "sublocal", world / "fam_sublocal"
    study = load_study(study_file(world, out, fam))
    _same_study(run_with_jobs(study, "submitit-local", progress=False), out, fam, local_doc)
    book = _book(out)
    assert _jobs_per_stage(book) == EXPECTED_JOBS
    assert all(e["attempts"] == 1 for units in book.values() for e in units.values())
    before = json.dumps(book)
    run_with_jobs(study, "submitit-local", progress=False)  # finished: nothing to submit
    assert json.dumps(_book(out)) == before
    from study.jobs.status import stage_status

    rows = {r.stage: r for r in stage_status(study, "submitit-local")}
    units = {stage: len(entries) for stage, entries in book.items()}
    assert {s: r.done for s, r in rows.items() if r.done} == units
    assert not any(r.running or r.failed or r.missing or r.waiting for r in rows.values())


# ---------------------------------------------------------------- a real Slurm


def _slurm_or_skip() -> None:
    from study.jobs.backends import controller_answers

    reason = controller_answers()
    if reason is not None:
        pytest.skip(f"no Slurm controller answers ({reason}); start one with scripts/slurm-dev up")


def _sacct(since: str, name_prefix: str) -> list[tuple[str, str, str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", since, "-o", "JobID,JobName,State"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    rows = [tuple(line.split("|")) for line in out.splitlines() if line.strip()]
    return [r for r in rows if r[1].startswith(name_prefix)]


def _squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
    return out.strip()


def _wait(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def slurm_scenario(world):
    """Coordinator A killed mid-training; B re-attaches, a val job is scancel'ed mid-way; then a rerun."""
    _slurm_or_skip()
    from study.jobs.coordinator import run_with_jobs

    out, fam = world / "slurm", world / "fam_slurm"
    file = study_file(world, out, fam)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    a = subprocess.Popen([sys.executable, "-m", "study", "run", str(file), "--executor", "slurm", "--quiet"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        book_file = out / "jobs" / "book.json"
        train = _wait(lambda: book_file.exists() and _book(out).get("train"), 180, "A's training jobs")
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait()
    killed_while = {_squeue_state(e["job_id"]) for e in train.values()}

    cancelled: dict[str, str] = {}

    def cancel_first_val_job():
        def running_val_job():
            book = _book(out) if book_file.exists() else {}
            ids = [e["job_id"] for e in book.get("val", {}).values()]
            return next((j for j in ids if _squeue_state(j) == "RUNNING"), None)

        job_id = _wait(running_val_job, 400, "a running val job")
        subprocess.run(["scancel", job_id], check=True)
        cancelled["job_id"] = job_id

    canceller = threading.Thread(target=cancel_first_val_job, daemon=True)
    canceller.start()
    messages = io.StringIO()
    with contextlib.redirect_stderr(messages), contextlib.redirect_stdout(messages):
        doc = run_with_jobs(load_study(file), "slurm", progress=False)
    canceller.join(timeout=5)
    finished_book = _book(out)
    with contextlib.redirect_stdout(io.StringIO()):
        run_with_jobs(load_study(file), "slurm", progress=False)  # the rerun of a finished study
    return {"doc": doc, "out": out, "fam": fam, "since": since, "killed_while": killed_while, "train": train,
            "cancelled": cancelled.get("job_id"), "messages": messages.getvalue(), "book": finished_book,
            "rerun_book": _book(out)}  # fmt: skip


@pytest.mark.slurm
def test_slurm_study_equals_local_and_jobs_are_in_sacct(slurm_scenario, local_doc):
    s = slurm_scenario
    _same_study(s["doc"], s["out"], s["fam"], local_doc)
    rows = _sacct(s["since"], "tinyjobs-")
    per_stage = {stage: sum(1 for r in rows if r[1] == f"tinyjobs-{stage}") for stage in EXPECTED_JOBS}
    want = dict(EXPECTED_JOBS, val=EXPECTED_JOBS["val"] + 1)  # the cancelled val job and its resubmission
    assert per_stage == want
    states = {r[0]: r[2] for r in rows}
    assert states[s["cancelled"]].startswith("CANCELLED")
    assert sum(1 for st in states.values() if st == "COMPLETED") == sum(EXPECTED_JOBS.values())


@pytest.mark.slurm
def test_killed_coordinator_is_reattached_and_nothing_submitted_twice(slurm_scenario):
    s = slurm_scenario
    assert s["killed_while"] & {"PENDING", "RUNNING"}  # A died while its training jobs were alive
    assert "train: attached to" in s["messages"]
    train = s["book"]["train"]
    assert {k: e["job_id"] for k, e in train.items()} == {k: e["job_id"] for k, e in s["train"].items()}
    assert all(e["attempts"] == 1 for e in train.values())


@pytest.mark.slurm
def test_cancelled_job_is_resubmitted_with_its_log_named(slurm_scenario):
    s = slurm_scenario
    val = s["book"]["val"]
    assert any(e["attempts"] == 2 for e in val.values()) and s["cancelled"] not in {e["job_id"] for e in val.values()}
    line = next(x for x in s["messages"].splitlines() if x.startswith(f"val: job {s['cancelled']} ended CANCELLED"))
    assert "submitting again (2/3)" in line
    log = line.rsplit("log: ", 1)[1]
    assert log.endswith("_log.err") and s["cancelled"] in log and Path(log).parent.is_dir()


@pytest.mark.slurm
def test_rerun_of_a_finished_study_submits_no_job(slurm_scenario):
    s = slurm_scenario
    assert s["rerun_book"] == s["book"]
    rows = _sacct(s["since"], "tinyjobs-")
    assert len(rows) == sum(EXPECTED_JOBS.values()) + 1


# ---------------------------------------------------------------- a scoring job of two tasks (torch.distributed)


def test_scores_of_a_two_task_job_equal_one_process(tmp_path, tiny_spec):
    """A val job with tasks_per_node 2 (gloo on CPU): each rank scores half the frames, rank 0 writes, and the
    files hold what one process computes."""
    import numpy as np
    from study_support import make_dataset as make_tiny_dataset
    from study_support import make_family

    from study.jobs.backends import LocalBackend
    from study.jobs.stages import Planner
    from study.jobs.work import run_units
    from study.runner import StudyRun
    from study.scores import ScoreStore, make_predictor

    make_family(tmp_path / "family", tiny_spec, rows=(("ft_a", "full_finetune", 1e-3, 0), ("ft_b", "full_finetune",
                                                                                              1e-3, 1)))
    make_tiny_dataset(tmp_path / "json", tmp_path / "data", "Tiny-FF", videos=5, frames=3)
    raw = {"name": "ddp", "output": str(tmp_path / "out"),
           "data": {"json_root": str(tmp_path / "json"), "data_root": str(tmp_path / "data"), "source": "Tiny-FF",
                    "test": ["Tiny-FF2"]},
           "families": {"tiny": {"path": str(tmp_path / "family")}},
           "eval": {"device": "cpu", "batch_size": 4, "workers": 0, "threads": 1}}  # fmt: skip
    make_tiny_dataset(tmp_path / "json", tmp_path / "data", "Tiny-FF2", videos=2, frames=1, seed=1)
    file = tmp_path / "s.yml"
    file.write_text(json.dumps(raw))
    study = load_study(file)
    run = StudyRun(study, progress=False)
    planner = Planner(run)
    planner.load_families()
    units = planner._score_units(run.ingredient_entries(), run._val_pairs())
    assert len(units) == 2 and not any(u.done() for u in units)
    resources = study.executor.resources("val").model_copy(update={"tasks_per_node": 2})
    backend = LocalBackend()
    (job,) = backend.submit(run_units, [(study, "val", [u.payload for u in units])], resources, "ddp",
                            tmp_path / "logs")  # fmt: skip
    _wait(lambda: not backend.active([job.job_id]), 300, "the two-task job")
    assert all(u.done() for u in units), Path(job.stderr).read_text()[-2000:]
    for rank in (0, 1):  # each task's own log
        assert f"scoring as rank {rank} of 2" in Path(job.stdout.replace("_0_log", f"_{rank}_log")).read_text()
    single = ScoreStore(tmp_path / "single", study.data, study.eval, run.loader, make_predictor(study.eval))
    for model_dir, model_hash, name, dataset, split in (u.payload for u in units):
        (two,) = run.store.get(Path(model_dir), model_hash, [(dataset, split)], name).values()
        (one,) = single.get(Path(model_dir), model_hash, [(dataset, split)], name).values()
        assert one.scores.size == 30 and np.array_equal(two.labels, one.labels)
        np.testing.assert_allclose(two.scores, one.scores, rtol=0, atol=1e-6)
        assert list(two.video_ids) == list(one.video_ids)
