"""What a study costs per merge candidate, end to end, against a bare in-process merge + score of the same candidate.

Run::

    python -m benchmarks.study_cost                       # small geometry (width 256, 4 layers), 4 candidates, 5 rounds
    python -m benchmarks.study_cost --size ViT-B-16 --repeats 5

A random-weight family (base + 3 fine-tunes) and a small DeepfakeBench-format benchmark (a source dataset and one
held-out test set, frames at the model's input size) are written under ``--root``. Three things are timed, each
from a cold study folder, in rounds whose order rotates (a shared machine's drift falls on every variant):

* ``study, N candidates``: :func:`study.runner.run_study` with a TIES grid of N points: merge, score on source val
  and on the test sets, bootstrap, report, figures, everything a user waits for;
* ``study, 0 candidates``: the same study without merges (the ingredients are still scored and reported), so
  ``(N - 0) / N`` is what one more candidate costs;
* ``bare``: for each of the study's own recipes, stock ``mergekit.merge.run_merge`` (with the plugin, as the study),
  ``load_detector`` and a plain forward over the same frames the study scores (source val + every test split).

Then the rerun of the finished N-candidate study (nothing changed) is timed against its cold run.
Reported: medians over rounds with [min, max], wall and process CPU; the per-candidate ratio (study / bare, target
<= 1.2x) is the median of the per-round ratios (paired within a round); the rerun fraction (target <= 10 %) likewise.
The same merged tensors and P(fake) are checked for the study and the bare side (outside the timing).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch
import yaml

SIZES = {"ViT-B-16": (768, 12, 12, 16, 224), "small": (256, 4, 4, 16, 64)}  # width, layers, heads, patch, image
SOURCE, TEST = "Bench-FF", "Bench-CDF"


def build_family(root: Path, size: str, ingredients: int) -> Path:
    """``root`` laid out as clip-train writes a family (summary.json, base/, ingredients/)."""
    from mergekit_clip.detector.io import create_detector, save_detector
    from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec

    if (root / "summary.json").exists():
        return root
    width, layers, heads, patch, image = SIZES[size]
    spec = DetectorSpec(
        backbone=BackboneSpec(image_size=image, patch_size=patch, width=width, layers=layers, heads=heads,
                              embed_dim=width // 2),
        preprocess=PreprocessSpec(image_size=image),
    )  # fmt: skip
    save_detector(create_detector(spec, seed=0), root / "base", provenance={"role": "base"})
    rows = []
    for i in range(ingredients):
        gen = torch.Generator().manual_seed(100 + i)
        model = create_detector(spec, seed=0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 1e-2)
        name = f"ft_s{i}"
        save_detector(model, root / "ingredients" / name, provenance={"mode": "full_finetune", "seed": i})
        rows.append({"name": name, "mode": "full_finetune", "seed": i, "lr": 1e-5, "train_dataset": SOURCE})
    (root / "summary.json").write_text(json.dumps(rows))
    return root


def build_data(root: Path, videos: int, frames: int) -> None:
    """Two datasets in the tests' tiny DeepfakeBench layout (``videos`` real + ``videos`` fake per split, 32 px
    frames, fakes brighter; the eval transform resizes them to the model's input)."""
    import sys

    if (root / "json" / f"{TEST}.json").exists():
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from study_support import make_dataset

    for seed, name in enumerate((SOURCE, TEST)):
        make_dataset(root / "json", root / "data", name, videos=videos, frames=frames, seed=seed)


def make_study(root: Path, family: Path, densities: list[float], out: str):
    from study.config import StudyConfig

    merges = {"ties": {"grid": {"density": densities}}} if densities else {}
    return StudyConfig.model_validate({
        "name": out, "output": str(root / out),
        "data": {"json_root": str(root / "json"), "data_root": str(root / "data"), "source": SOURCE, "test": [TEST]},
        "families": {"bench": {"path": str(family)}},
        "merges": merges,
        "eval": {"workers": 0, "batch_size": 64},
        "tracking": {"tensorboard": False},
    })  # fmt: skip


def bare_merge_and_score(recipes: list, out: Path, frames: dict[str, list[Path]]) -> dict[str, dict[str, np.ndarray]]:
    """Stock run_merge + load_detector + a forward over the frames, per recipe; returns P(fake) per candidate and
    frame list."""
    import mergekit.merge
    from mergekit.merge import MergeOptions

    from mergekit_clip.data.transforms import build_eval_transform, read_image
    from mergekit_clip.detector.io import load_detector
    from mergekit_clip.recipe import validate_recipe

    options = MergeOptions(random_seed=0, quiet=True, write_model_card=False, copy_tokenizer=False)
    scores: dict[str, dict[str, np.ndarray]] = {}
    logging.disable(logging.WARNING)
    try:
        for i, recipe in enumerate(recipes):
            mergekit.merge.run_merge(validate_recipe(recipe), str(out / str(i)), options)
            model = load_detector(out / str(i)).eval()
            transform = build_eval_transform(model.spec.preprocess)
            scores[str(i)] = {}
            for split, files in frames.items():
                batch = torch.stack([transform(read_image(f)) for f in files])
                with torch.inference_mode():
                    scores[str(i)][split] = model.fake_probability(batch).numpy()
    finally:
        logging.disable(logging.NOTSET)
    return scores


def _timed(run: Callable[[], object]) -> tuple[float, float, object]:
    os.sync()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _process(study_file: Path) -> tuple[float, float]:
    """(wall, cpu) of ``python -m study run FILE --quiet`` in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as the in-process variants
    subprocess.run([sys.executable, "-m", "study", "run", str(study_file), "--quiet"], check=True, capture_output=True,
                   env=env)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - wall, cpu


def _row(name: str, values: list[float]) -> str:
    return f"{name:<44}{statistics.median(values):>9.3f}{min(values):>9.3f}{max(values):>9.3f}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--size", type=click.Choice(sorted(SIZES)), default="small", show_default=True)
@click.option("--candidates", default=4, show_default=True, help="TIES density grid points")
@click.option("--repeats", default=5, show_default=True, help="rounds of every variant (medians over them)")
@click.option("--videos", default=6, show_default=True, help="videos per class and split in each dataset")
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs/bench/study_cost"), show_default=True)
def main(size: str, candidates: int, repeats: int, videos: int, root: Path) -> None:
    """Per-candidate cost of a whole study against a bare merge + score, and a finished study's rerun fraction."""
    from mergekit_clip.data.formats import load_frames
    from mergekit_clip.recipe import load_family
    from study.candidates import plan_merges
    from study.runner import run_study

    torch.set_num_threads(1)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    root = root.absolute() / size
    family_dir = build_family(root / "family", size, ingredients=3)
    build_data(root, videos, frames=2)
    densities = [round(0.2 + 0.6 * k / max(1, candidates - 1), 3) for k in range(candidates)]
    study_n, study_0 = make_study(root, family_dir, densities, "study_n"), make_study(root, family_dir, [], "study_0")
    recipes = [c.recipe for c in plan_merges(study_n, {"bench": load_family(family_dir)}, None)]
    pairs = [(SOURCE, "val"), (TEST, "test"), (SOURCE, "test")]  # what the study scores
    records = {f"{d}/{s}": load_frames(d, s, json_root=root / "json", data_root=root / "data") for d, s in pairs}
    frames = {k: [r.path for r in v] for k, v in records.items()}
    test_labels = np.asarray([r.label for r in records[f"{TEST}/test"]])
    variants: dict[str, Callable[[], object]] = {
        "bare merge + score": lambda: bare_merge_and_score(recipes, root / "bare", frames),
        f"study, {candidates} candidates": lambda: run_study(study_n, progress=False),
        "study, 0 candidates": lambda: run_study(study_0, progress=False),
    }
    names = list(variants)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    rerun_wall, rerun_cpu, process_wall, process_cpu = [], [], [], []
    study_file = root / "study_n.yml"
    study_file.write_text(yaml.safe_dump(study_n.model_dump(mode="json") | {"tracking": {"tensorboard": False}}))
    _timed(variants[names[0]])  # warm-up: imports, plugin registration, page cache
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for folder in (root / "bare", study_n.output, study_0.output):
                shutil.rmtree(folder, ignore_errors=True)
            w, c, _ = _timed(variants[name])
            wall[name].append(w)
            cpu[name].append(c)
            if name == names[1]:  # the finished study, run again with nothing changed
                w, c, _ = _timed(variants[name])
                rerun_wall.append(w / wall[name][-1])
                rerun_cpu.append(c / cpu[name][-1])
        # what a user waits for at the shell: `clip-study run FILE` cold, then again (imports included)
        shutil.rmtree(study_n.output, ignore_errors=True)
        cold_w, cold_c = _process(study_file)
        again_w, again_c = _process(study_file)
        process_wall.append(again_w / cold_w)
        process_cpu.append(again_c / cold_c)
    bare, full, empty = names
    click.echo(f"{size}, 3 fine-tunes + base, {candidates} ties candidates (density {densities}), {videos} videos per "
               f"class and split, 1 torch thread, {repeats} rounds; load average {load_before} before, "
               f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after, {os.cpu_count()} cores")  # fmt: skip
    click.echo(f"{'seconds per run':<44}{'median':>9}{'min':>9}{'max':>9}")
    for name in names:
        click.echo(_row(f"{name} (wall)", wall[name]))
        click.echo(_row(f"{name} (cpu)", cpu[name]))
    for what, t in (("wall", wall), ("cpu", cpu)):
        ratios = [((n - z) / candidates) / (b / candidates) for n, z, b in zip(t[full], t[empty], t[bare])]
        verdict = "meets" if statistics.median(ratios) <= 1.2 else "misses"
        click.echo(f"per candidate, study / bare ({what}): {statistics.median(ratios):.2f}x "
                   f"[{min(ratios):.2f}, {max(ratios):.2f}] ({verdict} the 1.2x target)")  # fmt: skip
    for where, what, values in (("in process", "wall", rerun_wall), ("in process", "cpu", rerun_cpu),
                                ("clip-study run, fresh process", "wall", process_wall),
                                ("clip-study run, fresh process", "cpu", process_cpu)):  # fmt: skip
        verdict = "meets" if statistics.median(values) <= 0.10 else "misses"
        median = 100 * statistics.median(values)
        click.echo(f"rerun of the finished study / its cold run, {where} ({what}): {median:.1f} % "
                   f"[{100 * min(values):.1f}, {100 * max(values):.1f}] ({verdict} the 10 % target)")  # fmt: skip
    for folder in (root / "bare", study_n.output):  # the check needs both outputs on disk at once
        shutil.rmtree(folder, ignore_errors=True)
    _check_same(variants[full](), variants[bare](), root, test_labels, densities)


def _check_same(doc: dict, bare: dict[str, dict[str, np.ndarray]], root: Path, labels: np.ndarray,
                densities: list[float]) -> None:  # fmt: skip
    """Like with like, checked after the timing: the study's candidates hold the bare side's tensors, and their
    test AUC equals the AUC of the bare side's P(fake) on the same frames."""
    from sklearn.metrics import roc_auc_score

    from mergekit_clip.detector.io import read_state_dict

    tensors, aucs = [], []
    for i, density in enumerate(densities):
        model = doc["models"][f"ties[density={density}]"]
        a, b = read_state_dict(model["path"]), read_state_dict(root / "bare" / str(i))
        tensors.append(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a))
        aucs.append(abs(model["test"][TEST]["frame_auc"] - roc_auc_score(labels, bare[str(i)][f"{TEST}/test"])))
    click.echo(f"study and bare: same merged tensors {'yes' if all(tensors) else 'NO'}; "
               f"largest |test AUC difference| {max(aucs):.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
