"""What a study costs per merge candidate, against a bare in-process ``run_merge`` and one ``mergekit-yaml`` each.

Run::

    python -m benchmarks.study_cost                      # ViT-B/16 geometry, 3 fine-tunes, 4 ties candidates
    python -m benchmarks.study_cost --size small         # a quick look (width 256, 4 layers)

A random-weight family (base + N fine-tunes = base + noise, detector dirs with a 2-logit head) is written under
``--root`` (default ``runs/bench/study_cost``); the candidates are a TIES grid over ``density``. Three ways of
merging the same recipes, each into a fresh folder:

* ``bare``: ``mergekit.merge.run_merge`` called in this process on each recipe (what the study calls);
* ``study``: the study's own path, ``study.candidates.plan_merges`` + ``run_merges`` (recipe building, content
  keys with cold and then warm weight-hash caches, recipe.yml / candidate.json, the skip check);
* ``mergekit-yaml``: one process per candidate (interpreter start, imports, plugin registration each time).

Target: study / bare <= 1.2 (the study adds bookkeeping, not merge work). Ratios are measured in this run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
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


@click.command()
@click.option("--size", type=click.Choice(sorted(SIZES)), default="ViT-B-16", show_default=True)
@click.option("--ingredients", default=3, show_default=True)
@click.option("--candidates", default=4, show_default=True, help="TIES density grid points")
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs/bench/study_cost"), show_default=True)
def main(size: str, ingredients: int, candidates: int, root: Path) -> None:
    import mergekit.merge
    from mergekit.merge import MergeOptions

    from mergekit_clip.recipe import load_family, validate_recipe
    from study.candidates import plan_merges, run_merges, write_recipe
    from study.hashing import FileHashes

    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = root.absolute() / size
    family_dir = build_family(root / "family", size, ingredients)
    densities = [round(0.2 + 0.6 * k / max(1, candidates - 1), 3) for k in range(candidates)]
    study = _study(root, family_dir, densities)
    family = load_family(family_dir)
    options = MergeOptions(random_seed=0, quiet=True, write_model_card=False, copy_tokenizer=False)
    plans = plan_merges(study, {"bench": family}, None)
    for folder in ("bare", "study", "yaml", "recipes"):
        shutil.rmtree(root / folder, ignore_errors=True)
    shutil.rmtree(study.output, ignore_errors=True)

    # warm-up: imports, plugin registration, page cache of the inputs (all three variants then start equal)
    mergekit.merge.run_merge(validate_recipe(plans[0].recipe), str(root / "bare" / "warmup"), options)

    t0 = time.perf_counter()
    for i, c in enumerate(plans):
        mergekit.merge.run_merge(validate_recipe(c.recipe), str(root / "bare" / str(i)), options)
    bare = (time.perf_counter() - t0) / len(plans)

    t0 = time.perf_counter()
    hashes = FileHashes(study.output / "cache" / "file_hashes.json")  # cold: hashes every input once
    run_merges(plan_merges(study, {"bench": family}, hashes), study.output, study, progress=False)
    hashes.save()
    study_cold = (time.perf_counter() - t0) / len(plans)
    shutil.rmtree(study.output / "candidates")
    t0 = time.perf_counter()
    hashes = FileHashes(study.output / "cache" / "file_hashes.json")  # warm: (path, size, mtime) hits
    run_merges(plan_merges(study, {"bench": family}, hashes), study.output, study, progress=False)
    study_warm = (time.perf_counter() - t0) / len(plans)

    t0 = time.perf_counter()
    for i, c in enumerate(plans):
        recipe = write_recipe(c, root / "recipes" / f"{i}.yml")
        cmd = [str(BIN / "mergekit-yaml"), str(recipe), str(root / "yaml" / str(i)), "--random-seed", "0",
               "--no-write-model-card"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    per_process = (time.perf_counter() - t0) / len(plans)

    click.echo(f"{size}, {ingredients} fine-tunes + base, {len(plans)} ties candidates (density {densities}), "
               f"{torch.get_num_threads()} torch threads")  # fmt: skip
    click.echo(f"{'variant':<34}{'s / candidate':>14}{'vs bare':>10}")
    for label, value in (("bare in-process run_merge", bare), ("study, cold hash cache", study_cold),
                         ("study, warm hash cache", study_warm), ("mergekit-yaml, one process each", per_process)):
        click.echo(f"{label:<34}{value:>14.2f}{value / bare:>9.2f}x")  # fmt: skip
    verdict = "meets" if study_cold / bare <= 1.2 else "misses"
    click.echo(f"study / bare = {study_cold / bare:.2f}x cold ({verdict} the 1.2x target); "
               f"mergekit-yaml / study = {per_process / study_warm:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
