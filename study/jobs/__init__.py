"""Studies as jobs: Slurm (submitit) or local processes; results only through the content-keyed cache."""
