"""The study file's ``executor:`` section: the resources of each stage's jobs (``clip-study run --executor slurm``).

    executor:
      max_attempts: 3                  # a failed or pre-empted job is submitted at most this often
      default: {partition: gpu, account: lab, time_min: 120, cpus: 8, memory_gb: 32, gpus: 1,
                setup: ["module load cuda/12.4", "source ~/venvs/mkclip/bin/activate"]}
      stages:
        train: {time_min: 720, gpus: 4, tasks_per_node: 4}   # one job per ingredient, DDP over 4 GPUs
        merge: {gpus: 0, per_job: 8}                         # 8 candidates per job
        test: {per_job: 4, array_parallelism: 16}

A stage's resources are ``default`` with the stage's own keys laid over it; unknown keys are refused.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the study's stages in the order they run; each is a set of jobs whose results land in the content-keyed cache
STAGES = ("synth", "train", "stats", "merge", "val", "soups", "test", "robustness")


class Resources(BaseModel):
    """What one job of a stage asks Slurm for (None: the cluster's default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: int | None = Field(None, ge=0, description="GPUs per node (--gpus-per-node)")
    cpus: int | None = Field(None, gt=0, description="CPUs per task (--cpus-per-task)")
    memory_gb: float | None = Field(None, gt=0, description="memory per node in GB (--mem)")
    time_min: int | None = Field(None, gt=0, description="time limit in minutes (--time)")
    tasks_per_node: int | None = Field(None, gt=0, description="processes per job: >1 runs torch.distributed (DDP)")
    array_parallelism: int | None = Field(None, gt=0, description="jobs of the stage running at once (%N)")
    per_job: int | None = Field(None, gt=0, description="work units per job (candidates, model x split shards)")
    setup: list[str] | None = Field(None, description="shell lines run before the job (module load, venv)")
    sbatch: dict[str, Any] | None = Field(None, description="extra #SBATCH options, e.g. {constraint: a100}")


# what a job gets when neither the stage nor default says: small jobs, a few units each
FALLBACK = Resources(time_min=60, cpus=1, gpus=0, tasks_per_node=1, array_parallelism=2, per_job=4, setup=[],
                     sbatch={})  # fmt: skip
PER_JOB_FIXED = {"synth": 1, "train": 1, "soups": 1}  # one benchmark, one ingredient, every soup (greedy needs val)


class ExecutorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(3, gt=0, description="submissions of one job at most (the first included)")
    poll_s: float = Field(2.0, gt=0, description="seconds between two looks at the jobs")
    default: Resources = Resources()
    stages: dict[str, Resources] = Field(default_factory=dict, description=f"per stage: {', '.join(STAGES)}")

    @model_validator(mode="after")
    def _known_stages(self) -> ExecutorConfig:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"executor.stages {unknown}: choose from {list(STAGES)}")
        for stage, fixed in PER_JOB_FIXED.items():
            per_job = self.stages.get(stage, Resources()).per_job
            if per_job not in (None, fixed):
                raise ValueError(f"executor.stages.{stage}.per_job: always {fixed} for this stage")
        return self

    def resources(self, stage: str) -> Resources:
        """``default`` with the stage's keys over it, the fallback for what neither sets."""
        merged = FALLBACK.model_dump()
        for layer in (self.default, self.stages.get(stage, Resources())):
            merged |= {k: v for k, v in layer.model_dump().items() if v is not None}
        if stage in PER_JOB_FIXED:
            merged["per_job"] = PER_JOB_FIXED[stage]
        return Resources(**merged)
