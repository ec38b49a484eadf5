"""Where jobs run: Slurm (through submitit's ``SlurmExecutor``) or local processes (submitit's ``LocalExecutor``).

Submission goes through submitit; whether a job is still alive is read from ``squeue`` (Slurm) or the process
table (local) rather than from submitit's job objects, so a coordinator started later re-attaches to jobs it
never submitted, by the ids kept in the study folder.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.jobs.config import Resources

KINDS = ("slurm", "submitit-local")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    stdout: str
    stderr: str


def slurm_parameters(resources: Resources, job_name: str) -> dict[str, Any]:
    """A stage's resources as submitit ``SlurmExecutor`` parameters (the names of its sbatch template)."""
    r = resources
    params: dict[str, Any] = {
        "job_name": job_name, "time": r.time_min, "cpus_per_task": r.cpus, "ntasks_per_node": r.tasks_per_node,
        "nodes": 1, "array_parallelism": r.array_parallelism, "setup": list(r.setup or []),
        "additional_parameters": dict(r.sbatch or {}),
    }  # fmt: skip
    optional = {"partition": r.partition, "account": r.account, "qos": r.qos,
                "gpus_per_node": r.gpus or None, "mem": None if r.memory_gb is None else f"{int(r.memory_gb * 1024)}M"}
    return params | {k: v for k, v in optional.items() if v is not None}  # fmt: skip


def sbatch_script(resources: Resources, job_name: str, folder: Path) -> str:
    """The sbatch script submitit writes for one job with these resources (what ``sbatch`` receives)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(resources, job_name)
    params.pop("array_parallelism")  # only arrays carry it (``--array=0-N%P``)
    return _make_sbatch_string(command="python -u -m submitit.core._submit FOLDER", folder=folder, **params)


class Backend:
    kind: str

    def submit(self, fn, args: list[tuple], resources: Resources, job_name: str, folder: Path) -> list[Submitted]:
        raise NotImplementedError

    def active(self, job_ids: list[str]) -> set[str]:
        """The ids among ``job_ids`` still pending or running."""
        raise NotImplementedError

    def state(self, job_id: str) -> str:
        """A finished job's final state, for the failure message."""
        return "finished"


class SlurmBackend(Backend):
    kind = "slurm"

    def submit(self, fn, args, resources, job_name, folder) -> list[Submitted]:
        import submitit

        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(**slurm_parameters(resources, job_name))
        jobs = executor.map_array(fn, *zip(*args))
        return [Submitted(j.job_id, str(j.paths.stdout), str(j.paths.stderr)) for j in jobs]

    def active(self, job_ids) -> set[str]:
        if not job_ids:
            return set()
        # -r: one line per array element, pending ones included (12_3, not 12_[3-5])
        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        live = {line.split()[0] for line in out.splitlines() if line.strip()}
        return {j for j in job_ids if j in live}

    def state(self, job_id: str) -> str:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                             text=True).stdout.split()  # fmt: skip
        return out[0] if out else "unknown (not in sacct)"


class LocalBackend(Backend):
    """submitit's local processes; at most ``array_parallelism`` of a stage run at once (the coordinator waits)."""

    kind = "submitit-local"

    def __init__(self):
        self._jobs: dict[str, Any] = {}  # job id -> submitit LocalJob, while this process owns it

    def submit(self, fn, args, resources, job_name, folder) -> list[Submitted]:
        import submitit

        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=resources.time_min, tasks_per_node=resources.tasks_per_node)
        jobs = executor.map_array(fn, *zip(*args))
        self._jobs |= {j.job_id: j for j in jobs}
        return [Submitted(j.job_id, str(j.paths.stdout), str(j.paths.stderr)) for j in jobs]

    def active(self, job_ids) -> set[str]:
        live = set()
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None:  # our child: poll it (a finished child would linger as a zombie for kill -0)
                if not job.done():
                    live.add(job_id)
            elif _submitit_process(int(job_id)):  # a killed coordinator's job, now init's child
                live.add(job_id)
        return live


def _submitit_process(pid: int) -> bool:
    try:
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (macOS): trust the pid
            return True
        except OSError:
            return False


def make_backend(kind: str) -> Backend:
    if kind == "slurm":
        return SlurmBackend()
    if kind == "submitit-local":
        return LocalBackend()
    raise ValueError(f"executor {kind!r}: choose from {', '.join(KINDS)} (or local)")


def controller_answers() -> str | None:
    """None when a Slurm controller answers ``scontrol ping`` (and ``sacct`` works), else why not."""
    for cmd in (["scontrol", "ping"], ["sacct", "-n", "-X", "-S", "now-1minutes"]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{' '.join(cmd)}: {e}"
        if done.returncode != 0 or "DOWN" in done.stdout:
            return f"{' '.join(cmd)}: {(done.stderr or done.stdout).strip().splitlines()[-1:] or 'failed'}"
    return None
