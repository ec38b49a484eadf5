"""What verifying the study's cache entries costs on a rerun (issue 29; target: under 2 % of the rerun).

Run::

    python -m benchmarks.cache_check                 # 6 ingredients, 13 candidates + 2 soups, 4 datasets
    python -m benchmarks.cache_check --repeats 5 --videos 16

A random-weight family (width 64, 2 layers, 32 px: the demo's geometry is of the same order) and small DeepfakeBench
datasets are written under ``--root``; the study (TIES and task-arithmetic grids, linear, uniform and greedy soups,
one source and three test sets) runs once cold. Then ``--repeats`` reruns, every entry reused, alternate between

* ``verified``: today's rerun (every score file read once and hashed in memory against its ``.sha256``; every
  candidate and soup model hashed, from the stat-keyed hash cache, against ``candidate.json``);
* ``unverified``: the same with the digest comparison switched off (the bytes are still read once).

Each rerun drops ``cache/outputs.json`` first: with the same inputs and intact outputs a finished study returns its
study.json without opening any cache entry (``study/freshness.py``); the checks run on the ordinary path, where a
changed input (one more candidate, a new test set) sends a rerun, and every reused entry is verified there.

Reported: the time spent inside the checks during a verified rerun (timed around each check) as a share of that
rerun, and the medians of both variants with their ratio (the second figure carries the machine's noise).
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

import click


def build(root: Path, ingredients: int, videos: int) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import yaml
    from study_support import make_dataset, make_family

    from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec

    spec = DetectorSpec(backbone=BackboneSpec(image_size=32, patch_size=8, width=64, layers=2, heads=4, embed_dim=32),
                        preprocess=PreprocessSpec(image_size=32))  # fmt: skip
    if not (root / "family" / "summary.json").exists():
        rows = tuple((f"ft_{i}", "full_finetune", 1e-3, i) for i in range(ingredients))
        make_family(root / "family", spec, rows=rows)
        for i, name in enumerate(["Bench-FF", "Bench-A", "Bench-B", "Bench-C"]):
            make_dataset(root / "json", root / "data", name, videos=videos, frames=4, seed=i)
    study = root / "study.yml"
    study.write_text(yaml.safe_dump({
        "name": "cache-check", "output": str(root / "out"),
        "data": {"json_root": str(root / "json"), "data_root": str(root / "data"), "source": "Bench-FF",
                 "test": ["Bench-A", "Bench-B", "Bench-C"]},
        "families": {"bench": {"path": str(root / "family")}},
        "merges": {"ties": {"grid": {"density": [0.2, 0.5, 0.8], "lambda": [1.0, 1.5]}},
                   "task_arithmetic": {"grid": {"lambda": [0.5, 1.0, 1.5, 2.0]}}, "linear": {}},
        "soups": {"uniform": {}, "greedy": {}},
        "eval": {"batch_size": 64, "workers": 0},
        "bootstrap": {"n_boot": 200},
    }))  # fmt: skip
    return study


class CheckTimer:
    """Wraps the two checks (score files, candidate models) to time them, or to switch the comparison off."""

    def __init__(self) -> None:
        import study.candidates
        import study.runner
        import study.scores

        self.modules = (study.scores, study.candidates, study.runner)
        self.originals = (study.scores.read_verified, study.candidates.verified_model, study.runner.verified_model)
        self.seconds = 0.0  # both checks
        self.score_seconds = 0.0  # score files alone (the model checks' hash is the one the run keys scores by)
        self.verify = True

    def install(self) -> None:
        read_verified, verified_model, _ = self.originals

        def timed_read(file):
            if not self.verify:
                return Path(file).read_bytes(), None
            t0 = time.perf_counter()
            try:
                return read_verified(file)
            finally:
                self.seconds += time.perf_counter() - t0
                self.score_seconds += time.perf_counter() - t0

        def timed_model(directory, hashes, *, rebuild=True):
            if not self.verify:
                return True
            t0 = time.perf_counter()
            try:
                return verified_model(directory, hashes, rebuild=rebuild)
            finally:
                self.seconds += time.perf_counter() - t0

        scores, candidates, runner = self.modules
        scores.read_verified = timed_read
        candidates.verified_model = timed_model
        runner.verified_model = timed_model


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/bench/cache_check"),
              show_default=True, help="where the family, data and study are written")
@click.option("--ingredients", default=6, show_default=True, help="family size")
@click.option("--videos", default=8, show_default=True, help="videos per label and split of every dataset")
@click.option("--repeats", default=3, show_default=True, help="reruns per variant (alternating)")
@click.option("--fresh", is_flag=True, help="delete --root first")  # fmt: skip
def main(root: Path, ingredients: int, videos: int, repeats: int, fresh: bool) -> None:
    """Time the cache checks of a study rerun against the rerun itself."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
    study_file = build(root, ingredients, videos)
    from study.config import load_study
    from study.runner import run_study

    timer = CheckTimer()
    timer.install()
    study = load_study(study_file)
    t0 = time.perf_counter()
    run_study(study, progress=False)
    click.echo(f"cold run: {time.perf_counter() - t0:.1f} s")
    entries = len(list((root / "out" / "scores").rglob("*.npz")))
    megabytes = sum(p.stat().st_size for p in (root / "out" / "scores").rglob("*.npz")) / 1e6
    models = len(list((root / "out" / "candidates").glob("*/*/model")))
    times: dict[bool, list[float]] = {True: [], False: []}
    shares, score_shares = [], []
    for round_ in range(repeats):
        for verify in (True, False) if round_ % 2 == 0 else (False, True):  # rotated: drift falls on both
            timer.verify, timer.seconds, timer.score_seconds = verify, 0.0, 0.0
            (root / "out" / "cache" / "outputs.json").unlink(missing_ok=True)  # the ordinary path, not the fast one
            t0 = time.perf_counter()
            run_study(study, progress=False)
            elapsed = time.perf_counter() - t0
            times[verify].append(elapsed)
            if verify:
                shares.append(timer.seconds / elapsed)
                score_shares.append(timer.score_seconds / elapsed)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    click.echo(f"cache entries checked per rerun: {entries} score files ({megabytes:.2f} MB), {models} models")
    click.echo(f"time inside the checks: median {100 * statistics.median(shares):.2f} % of a verified rerun "
               f"(per round: {', '.join(f'{100 * s:.2f} %' for s in shares)}); score files alone "
               f"{100 * statistics.median(score_shares):.2f} % (a model check computes the hash the run then keys "
               "that model's scores by: not extra work)")  # fmt: skip
    click.echo(f"rerun median: verified {on:.2f} s, unverified {off:.2f} s, ratio {on / off:.3f} "
               f"(load average {os.getloadavg()[0]:.1f}; per round verified "
               f"{', '.join(f'{t:.1f}' for t in times[True])} s, unverified "
               f"{', '.join(f'{t:.1f}' for t in times[False])} s)")  # fmt: skip


if __name__ == "__main__":
    main()
