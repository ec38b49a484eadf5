"""What a study costs per merge candidate, against a bare in-process ``run_merge`` and one ``mergekit-yaml`` each.

Run::

    python -m benchmarks.study_cost                      # ViT-B/16 geometry, 3 fine-tunes, 4 ties candidates, 3 repeats
    python -m benchmarks.study_cost --size small         # a quick look (width 256, 4 layers)

A random-weight family (base + N fine-tunes = base + noise, detector dirs with a 2-logit head) is written under
``--root`` (default ``runs/bench/study_cost``); the candidates are a TIES grid over ``density``. The same recipes
(``plan_merges``' own) are merged four ways, each into a fresh folder:

* ``bare``: ``validate_recipe`` + ``mergekit.merge.run_merge`` in this process on each recipe (what the study calls,
  with the plugin's hook: preflight, atomic output, merged config), logging as quiet as the study's;
* ``study, cold``: the study's own path with an empty hash cache: ``plan_merges`` (recipes, every input's weights
  hashed once for the content keys) + ``run_merges(hashes=...)`` (recipe.yml, the merge, candidate.json, the new
  model's hash that keys its scores);
* ``study, warm``: the same with the hash cache of an earlier run (inputs are (path, size, mtime, inode) hits;
  each new model is still hashed);
* ``mergekit-yaml``: one process per candidate (interpreter start, imports, plugin registration each time).

Like with like: one warm-up merge first (imports, plugin registration, the inputs in the page cache), then
``--repeats`` rounds; each round runs every variant once, in an order rotated from round to round (slow drift of a
shared machine's load falls on every variant), with the previous outputs deleted and ``sync`` called before each
variant (no variant pays for another's write-back). Reported: the median over rounds of s / candidate, and the
median of the per-round ratios to ``bare`` (paired within a round). The machine's load average is printed too.
Target: study / bare <= 1.2 (the study adds bookkeeping, not merge work).
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import torch

BIN = Path(sys.executable).parent
SIZES = {"ViT-B-16": (768, 12, 12, 16, 224), "small": (256, 4, 4, 16, 64)}  # width, layers, heads, patch, image


def build_family(root: Path, size: str, ingredients: int) -> Path:
    """``root`` laid out as clip-train writes a family (summary.json, base/, ingredients/)."""
    import json

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
    base = create_detector(spec, seed=0)
    save_detector(base, root / "base", provenance={"role": "base"})
    rows = []
    for i in range(ingredients):
        gen = torch.Generator().manual_seed(100 + i)
        model = create_detector(spec, seed=0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 1e-3)
        name = f"ft_s{i}"
        save_detector(model, root / "ingredients" / name, provenance={"mode": "full_finetune", "seed": i})
        rows.append({"name": name, "mode": "full_finetune", "seed": i, "lr": 1e-5, "train_dataset": "bench"})
    (root / "summary.json").write_text(json.dumps(rows))
    return root


def _study(root: Path, family: Path, densities: list[float]):
    from study.config import StudyConfig

    return StudyConfig.model_validate({
        "output": str(root / "study"),
        "data": {"json_root": str(root), "data_root": str(root), "source": "bench", "test": ["none"]},
        "families": {"bench": {"path": str(family)}},
        "merges": {"ties": {"grid": {"density": densities}}},
    })  # fmt: skip


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--size", type=click.Choice(sorted(SIZES)), default="ViT-B-16", show_default=True)
@click.option("--ingredients", default=3, show_default=True)
@click.option("--candidates", default=4, show_default=True, help="TIES density grid points")
@click.option("--repeats", default=3, show_default=True, help="rounds of every variant (medians over them)")
@click.option("--yaml/--no-yaml", "with_yaml", default=True, show_default=True,
              help="also time one mergekit-yaml process per candidate")  # fmt: skip
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs/bench/study_cost"), show_default=True)
def main(size: str, ingredients: int, candidates: int, repeats: int, with_yaml: bool, root: Path) -> None:
    import mergekit.merge
    from mergekit.merge import MergeOptions

    from mergekit_clip.detector.io import weight_files
    from mergekit_clip.recipe import load_family, validate_recipe
    from study.candidates import plan_merges, run_merges, write_recipe
    from study.hashing import FileHashes

    load_before = _load()
    root = root.absolute() / size
    family_dir = build_family(root / "family", size, ingredients)
    densities = [round(0.2 + 0.6 * k / max(1, candidates - 1), 3) for k in range(candidates)]
    study = _study(root, family_dir, densities)
    families = {"bench": load_family(family_dir)}
    options = MergeOptions(random_seed=0, quiet=True, write_model_card=False, copy_tokenizer=False)
    plans = plan_merges(study, families, None)  # the study's recipes: every variant merges exactly these
    for folder in ("bare", "yaml", "recipes", "warmup"):
        shutil.rmtree(root / folder, ignore_errors=True)
    shutil.rmtree(study.output, ignore_errors=True)
    recipes = [write_recipe(c, root / "recipes" / f"{i}.yml") for i, c in enumerate(plans)]
    warm_cache = root / "warm_file_hashes.json"  # the inputs' hashes, as an earlier run of the study leaves them
    warm_cache.unlink(missing_ok=True)
    hashes = FileHashes(warm_cache)
    keyed = plan_merges(study, families, hashes)
    hashes.save()
    outputs = {"bare in-process run_merge": [root / "bare" / str(i) for i in range(len(plans))],
               "study, cold hash cache": [c.model_dir(study.output) for c in keyed]}  # fmt: skip
    merged: dict[str, list[str]] = {}

    # warm-up: imports, plugin registration, page cache of the inputs (every variant then starts equal)
    mergekit.merge.run_merge(validate_recipe(plans[0].recipe), str(root / "warmup"), options)
    shutil.rmtree(root / "warmup")

    def bare() -> None:
        logging.disable(logging.WARNING)  # as quiet as run_merges (a few warnings and a traceback per merge)
        try:
            for i, c in enumerate(plans):
                mergekit.merge.run_merge(validate_recipe(c.recipe), str(root / "bare" / str(i)), options)
        finally:
            logging.disable(logging.NOTSET)

    def study_run() -> None:
        hashes = FileHashes(study.output / "cache" / "file_hashes.json")
        run_merges(plan_merges(study, families, hashes), study.output, study, progress=False, hashes=hashes)
        hashes.save()

    def warm_start() -> None:  # untimed: the hash cache an earlier run of this study left
        (study.output / "cache").mkdir(parents=True)
        shutil.copy(warm_cache, study.output / "cache" / "file_hashes.json")

    def per_process() -> None:
        for i, recipe in enumerate(recipes):
            cmd = [str(BIN / "mergekit-yaml"), str(recipe), str(root / "yaml" / str(i)), "--random-seed", "0",
                   "--no-write-model-card"]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)

    def nothing() -> None:
        pass

    # name -> (untimed preparation, timed run)
    variants: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "bare in-process run_merge": (nothing, bare),
        "study, cold hash cache": (nothing, study_run),
        "study, warm hash cache": (warm_start, study_run),
    }
    if with_yaml:
        variants["mergekit-yaml, one process each"] = (nothing, per_process)
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for folder in (root / "bare", root / "yaml", study.output):
                shutil.rmtree(folder, ignore_errors=True)
            prepare, run = variants[name]
            prepare()
            os.sync()
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) / len(plans))
            if r == 0 and name in outputs:  # like with like: the same merged tensors (checked outside the timing)
                merged[name] = [FileHashes().safetensors(f) for d in outputs[name] for f in weight_files(d)]
    load_after = _load()

    bare_t = times[names[0]]
    click.echo(f"{size}, {ingredients} fine-tunes + base, {len(plans)} ties candidates (density {densities}), "
               f"{torch.get_num_threads()} torch threads, {repeats} rounds")  # fmt: skip
    click.echo(f"load average (1, 5, 15 min): {load_before} before, {load_after} after; {os.cpu_count()} cores")
    click.echo(f"{'variant':<34}{'s / candidate':>14}{'min':>8}{'max':>8}{'vs bare':>10}")
    ratios = {}
    for name in names:
        values = times[name]
        ratios[name] = statistics.median(v / b for v, b in zip(values, bare_t))
        click.echo(f"{name:<34}{statistics.median(values):>14.2f}{min(values):>8.2f}{max(values):>8.2f}"
                   f"{ratios[name]:>9.2f}x")  # fmt: skip
    cold, warm = ratios[names[1]], ratios[names[2]]
    verdict = "meets" if max(cold, warm) <= 1.2 else "misses"
    line = f"study / bare = {cold:.2f}x cold, {warm:.2f}x warm ({verdict} the 1.2x target)"
    if with_yaml:
        per_process = statistics.median(times[names[3]]) / statistics.median(times[names[2]])
        line += f"; mergekit-yaml / study (warm) = {per_process:.2f}x"
    click.echo(line)
    same = len(set(map(tuple, merged.values()))) == 1 and len(merged) == 2
    click.echo(f"study and bare wrote the same merged tensors: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
