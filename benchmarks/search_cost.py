"""What an Optuna search costs per trial, against a bare in-process merge + score of the same candidates.

Run::

    python -m benchmarks.search_cost                   # width 256, 4 layers, 64 px; 3 fine-tunes; 4 trials; 5 rounds
    python -m benchmarks.search_cost --size ViT-B-16 --trials 3 --repeats 5

A random-weight family (``benchmarks.study_cost.build_family``) and a small DeepfakeBench-format dataset (PNG
frames, ``--videos`` real + fake videos of ``--frames`` frames in the val split) are written under ``--root``. The
search is a TIES group with ``density`` in [0.1, 0.9] and one weight per ingredient in [0.2, 1.0], seeded TPE. Two
variants, each from nothing (fresh output folder, fresh predictor and decoded-frame cache), on the same candidates:

* ``search``: ``GroupSearch(run, group).optimize()`` on a new ``StudyRun``: Optuna study on a SQLite file, each
  trial's recipe and content key (the inputs' hash cache copied in, as a study's earlier steps leave it; each new
  model is still hashed, its score key), the key lock, the merge
  via ``run_merges`` (recipe.yml, candidate.json, the new model's hash), the score through the score store (npz
  written) and the protocol's AUC, Optuna's tell;
* ``bare``: for the same recipes (the search is seeded: every round proposes the same ones), ``validate_recipe`` +
  ``mergekit.merge.run_merge`` + ``load_detector`` + ``Predictor.score_paths`` on the val frames + the video AUC.

Interleaved: one warm-up round first (imports, page cache), then ``--repeats`` rounds, the order alternating from
round to round. Reported per variant: the median over rounds of wall and CPU (this process) seconds per trial, with
min and max, and the median of the per-round ratio search / bare (paired within a round). Target: <= 1.2x.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import time
from pathlib import Path

import click
import numpy as np

GROUP = "ties_tpe"


def write_dataset(json_root: Path, data_root: Path, name: str, videos: int, frames: int, image: int) -> None:
    """``videos`` real and fake videos in the val split, ``frames`` PNG frames each (fakes a little brighter)."""
    import cv2

    if (json_root / f"{name}.json").exists():
        return
    rng = np.random.default_rng(0)
    groups: dict = {"DF_real": {"val": {}}, "DF_fake": {"val": {}}}
    for label, group in ((0, "DF_real"), (1, "DF_fake")):
        for v in range(videos):
            video = f"{name}/val/{group}/{v:03d}"
            paths = []
            for f in range(frames):
                img = rng.integers(0, 200, (image, image, 3), dtype=np.uint8) + np.uint8(30 * label)
                file = data_root / video / f"{f}.png"
                file.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(file), img)
                paths.append(f"{video}/{f}.png")
            groups[group]["val"][f"{v:03d}"] = {"label": group, "frames": paths}
    json_root.mkdir(parents=True, exist_ok=True)
    (json_root / f"{name}.json").write_text(json.dumps({name: groups}))


def _study(root: Path, family: Path, output: Path, trials: int):
    from study.config import StudyConfig

    return StudyConfig.model_validate({
        "output": str(output),
        "data": {"json_root": str(root / "json"), "data_root": str(root / "data"), "source": "Bench",
                 "test": ["Bench"]},
        "families": {"bench": {"path": str(family)}},
        "merges": {GROUP: {"method": "ties", "grid": {"lambda": 1.0},
                           "search": {"space": {"density": [0.1, 0.9]}, "weights": [0.2, 1.0], "trials": trials}}},
        "eval": {"device": "cpu", "batch_size": 64, "workers": 0},
    })  # fmt: skip


# long: a benchmark script read top to bottom: set-up, warm-up, timed rounds of both variants, the table
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--size", type=click.Choice(["small", "ViT-B-16"]), default="small", show_default=True)
@click.option("--ingredients", default=3, show_default=True)
@click.option("--trials", default=4, show_default=True, help="trials per search round")
@click.option("--repeats", default=5, show_default=True, help="rounds of both variants (medians over them)")
@click.option("--videos", default=16, show_default=True, help="real and fake val videos each")
@click.option("--frames", default=4, show_default=True, help="frames per video")
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs/bench/search_cost"), show_default=True)
def main(size: str, ingredients: int, trials: int, repeats: int, videos: int, frames: int, root: Path) -> None:
    import mergekit.merge
    import torch
    from mergekit.merge import MergeOptions

    from benchmarks.study_cost import SIZES, build_family
    from mergekit_clip.detector.io import load_detector
    from mergekit_clip.recipe import validate_recipe
    from study.runner import StudyRun
    from study.scores import SplitScores, make_predictor, metric_value, records_loader
    from study.search import GroupSearch

    root = root.absolute() / size
    family = build_family(root / "family", size, ingredients)
    write_dataset(root / "json", root / "data", "Bench", videos, frames, SIZES[size][4])
    options = MergeOptions(random_seed=0, quiet=True, write_model_card=False, copy_tokenizer=False)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    recipes: list = []

    warm_cache = root / "warm_file_hashes.json"  # the inputs' hashes, as an earlier run of the study leaves them
    warm_cache.unlink(missing_ok=True)  # written afresh by the warm-up round

    def search_round() -> list[float]:
        out = root / "search_out"
        shutil.rmtree(out, ignore_errors=True)
        if warm_cache.exists():  # (a small copy; the first, warm-up round writes it)
            (out / "cache").mkdir(parents=True)
            shutil.copy(warm_cache, out / "cache" / "file_hashes.json")
        study = _study(root, family, out, trials)
        run = StudyRun(study, progress=False)
        run.prepare()
        outcome = GroupSearch(run, GROUP).optimize()
        recipes[:] = [c.recipe for c in outcome.candidates]
        if not warm_cache.exists():
            shutil.copy(out / "cache" / "file_hashes.json", warm_cache)
        return [outcome.counts["merged"]]

    def bare_round() -> list[float]:
        out = root / "bare_out"
        shutil.rmtree(out, ignore_errors=True)
        study = _study(root, family, out, trials)
        records = records_loader(study.data)("Bench", "val")
        paths = [str(r.path) for r in records]
        labels = np.asarray([int(r.label) for r in records])
        videos_ = np.asarray([str(r.video_id) for r in records])
        predictor = make_predictor(study.eval)()
        aucs = []
        logging.disable(logging.WARNING)  # as quiet as run_merges
        try:
            for i, recipe in enumerate(recipes):
                mergekit.merge.run_merge(validate_recipe(recipe), str(out / str(i)), options)
                scores, ok = predictor.score_paths(load_detector(out / str(i)), paths, desc="bare")
                aucs.append(metric_value({"Bench": SplitScores(labels[ok], scores[ok], videos_[ok])}, "video_auc"))
        finally:
            logging.disable(logging.NOTSET)
        return aucs

    variants = {"search (Optuna trial)": search_round, "bare merge + score": bare_round}
    search_round()  # warm-up: imports, the inputs' hashes and page cache; fixes the candidates both variants run
    bare_round()
    wall: dict[str, list[float]] = {n: [] for n in variants}
    cpu: dict[str, list[float]] = {n: [] for n in variants}
    names = list(variants)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            os.sync()
            t0, c0 = time.perf_counter(), time.process_time()
            variants[name]()
            wall[name].append((time.perf_counter() - t0) / trials)
            cpu[name].append((time.process_time() - c0) / trials)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    click.echo(f"{size}, {ingredients} fine-tunes + base, TIES search over density + {ingredients} weights, "
               f"{trials} trials a round, {2 * videos * frames} val frames, {torch.get_num_threads()} torch threads, "
               f"{repeats} rounds")  # fmt: skip
    click.echo(f"load average (1, 5, 15 min): {load_before} before, {load_after} after; {os.cpu_count()} cores")
    click.echo(f"{'variant':<24}{'wall s/trial':>13}{'min':>7}{'max':>7}{'CPU s/trial':>12}{'min':>7}{'max':>7}")
    for name in names:
        w, c = wall[name], cpu[name]
        click.echo(f"{name:<24}{statistics.median(w):>13.3f}{min(w):>7.3f}{max(w):>7.3f}"
                   f"{statistics.median(c):>12.3f}{min(c):>7.3f}{max(c):>7.3f}")  # fmt: skip
    ratio_w = [s / b for s, b in zip(wall[names[0]], wall[names[1]])]
    ratio_c = [s / b for s, b in zip(cpu[names[0]], cpu[names[1]])]
    def verdict(ratios: list[float]) -> str:
        return "meets" if statistics.median(ratios) <= 1.2 else "misses"

    click.echo(f"search / bare: wall {statistics.median(ratio_w):.2f}x [{min(ratio_w):.2f}, {max(ratio_w):.2f}] "
               f"({verdict(ratio_w)} the 1.2x target), CPU {statistics.median(ratio_c):.2f}x [{min(ratio_c):.2f}, "
               f"{max(ratio_c):.2f}] ({verdict(ratio_c)} it)")  # fmt: skip


if __name__ == "__main__":
    main()
