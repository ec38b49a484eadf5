"""The main job on the embedded default: synthetic benchmark -> ingredients -> every recipe -> soups -> scores.

``make demo`` runs ``python -m study.demo``. Every step is a public command a user would type, printed
before it runs; a step whose output already exists is skipped, so a second run reuses what is built:

1. ``mergekit-clip data synth``: the synthetic DeepfakeBench-format benchmark and a generic pre-training corpus;
2. ``clip-train``: pre-train a tiny CLIP ViT briefly on the generic corpus (no pretrained weights exist here, and
   fine-tunes of one shared start share a basin, as real CLIP fine-tunes do), then the ingredient family
   (linear probe, full fine-tune, LP-FT; several seeds and learning rates) on the training dataset;
3. ``mergekit-yaml`` on every recipe in ``recipes/`` (their paths point at ``runs/demo/family``);
4. ``clip-eval soup``: uniform and greedy soups (greedy selection on the training dataset's val split);
5. ``clip-eval``: every ingredient, soup and merge on the held-out synthetic datasets, then the table.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
RUNS = Path("runs/demo")


def _echo_step(index: int, total: int, title: str) -> None:
    click.secho(f"\n==> [{index}/{total}] {title}", fg="cyan", bold=True)


def _run(cmd: list[str], log: Path | None = None) -> None:
    """Run one public command, echoing it; its output streams through unless a log file is given."""
    click.echo("$ " + shlex.join(cmd))
    if log is None:
        result = subprocess.run(cmd, cwd=REPO)
    else:
        with open(log, "w") as f:
            result = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = f"\n{log.read_text()[-3000:]}" if log is not None else ""
        raise click.ClickException(f"step failed (exit {result.returncode}): {shlex.join(cmd)}{tail}")


def _done(marker: Path) -> bool:
    if marker.exists():
        click.echo(f"(reusing {marker.parent})")
        return True
    return False


def _ingredients(family: Path) -> list[Path]:
    summary = json.loads((family / "summary.json").read_text())
    return [family / "ingredients" / item["name"] for item in summary]


def _merge_recipes(recipes: list[Path], merges: Path, logs: Path) -> list[Path]:
    """``mergekit-yaml`` on each recipe, two at a time (this machine has 2 cores)."""
    todo = [r for r in recipes if not (merges / r.stem / "config.json").exists()]
    for recipe in recipes:
        if recipe not in todo:
            click.echo(f"(reusing {merges / recipe.stem})")

    def merge(recipe: Path) -> None:
        # DARE and DELLA drop entries at random: a fixed seed keeps the demo's table reproducible.
        cmd = ["mergekit-yaml", str(recipe.relative_to(REPO)), str(merges / recipe.stem), "--random-seed", "0"]
        _run(cmd, log=logs / f"{recipe.stem}.log")

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(merge, todo))
    return [merges / r.stem for r in recipes]


@click.command()
@click.option("--seed", default=0, show_default=True, help="seed of the synthetic benchmark")
@click.option("--threads", default=1, show_default=True, help="torch threads per process (1 is fastest on 2 cores)")
def main(seed: int, threads: int) -> None:
    """Run the whole mission on the embedded default and print the cross-dataset table."""
    from mergekit_clip.data.synthetic import load_synth_info

    start = time.monotonic()
    os.chdir(REPO)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    synth, pretext = RUNS / "synth", RUNS / "pretext"
    pretrain, family = RUNS / "pretrain", RUNS / "family"
    merges, soups, report, logs = RUNS / "merges", RUNS / "soups", RUNS / "report", RUNS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    total = 7

    _echo_step(1, total, "synthesise the benchmark (DeepfakeBench format) and a generic pre-training corpus")
    if not _done(synth / "synth.json"):
        _run(["mergekit-clip", "data", "synth", str(synth), "--preset", "small", "--seed", str(seed)])
    if not _done(pretext / "synth.json"):
        _run(["mergekit-clip", "data", "synth", str(pretext), "--preset", "pretrain", "--seed", str(seed)])
    info, pre_info = load_synth_info(synth), load_synth_info(pretext)
    test_sets = [d for d in info.datasets if d != info.train_dataset]
    click.echo(f"train on {info.train_dataset}; cross-dataset test sets: {', '.join(test_sets)}")

    _echo_step(2, total, f"pre-train a tiny CLIP ViT on the generic corpus ({pre_info.train_dataset})")
    if not _done(pretrain / "summary.json"):
        _run([
            "clip-train", "train/configs/tiny_pretrain.yaml", "--overwrite",
            "--set", f"output={pretrain}", "--set", f"threads={threads}",
            "--set", f"data.json_root={pre_info.json_root}", "--set", f"data.data_root={pre_info.data_root}",
            "--set", f"data.train_dataset={pre_info.train_dataset}",
        ])  # fmt: skip
    backbone = _ingredients(pretrain)[0]

    _echo_step(3, total, f"train the ingredient family on {info.train_dataset} (LP, full FT, LP-FT)")
    if not _done(family / "summary.json"):
        _run([
            "clip-train", "train/configs/tiny_family.yaml", "--overwrite",
            "--set", f"output={family}", "--set", f"threads={threads}", "--set", f"backbone.pretrained={backbone}",
            "--set", f"data.json_root={info.json_root}", "--set", f"data.data_root={info.data_root}",
            "--set", f"data.train_dataset={info.train_dataset}",
        ])  # fmt: skip
    ingredients = _ingredients(family)
    click.echo(f"{len(ingredients)} ingredients: {', '.join(p.name for p in ingredients)}")

    recipes = sorted((REPO / "recipes").glob("*.yml"))
    _echo_step(4, total, f"stock mergekit-yaml on {len(recipes)} recipes ({', '.join(r.stem for r in recipes)})")
    merged = _merge_recipes(recipes, merges, logs)

    _echo_step(5, total, f"uniform and greedy soups (greedy selects on {info.train_dataset}/val, never test)")
    data_args = ["--json-root", str(info.json_root), "--data-root", str(info.data_root)]
    soup_dirs = []
    for method in ("uniform", "greedy"):
        out = soups / method
        soup_dirs.append(out)
        if _done(out / "config.json"):
            continue
        cmd = ["clip-eval", "soup", "--method", method, *map(str, ingredients), "--out", str(out)]
        if method == "greedy":
            cmd += ["--val", info.train_dataset, *data_args]
        _run(cmd)

    models = [*ingredients, *soup_dirs, *merged]
    title = f"clip-eval: {len(models)} models on {info.train_dataset} (in-domain) + {len(test_sets)} held-out sets"
    _echo_step(6, total, title)
    newest = max((p / "config.json").stat().st_mtime for p in models)
    if not ((report / "report.json").exists() and (report / "report.json").stat().st_mtime > newest):
        _run([
            "clip-eval", *map(str, models), "--datasets", *test_sets, info.train_dataset, *data_args,
            "--split", "test", "--out", str(report), "--overwrite",
        ], log=logs / "eval.log")  # fmt: skip
    else:
        click.echo(f"(reusing {report})")

    _echo_step(7, total, "did merging help? (frame AUC on the test splits; mean over the held-out datasets)")
    summarize(report / "report.json", test_sets, info.train_dataset)
    click.echo(f"\nfull report with plots: {(report / 'report.md').absolute()}")
    click.echo(f"demo finished in {time.monotonic() - start:.0f} s")


def summarize(report_json: Path, test_sets: list[str], train_dataset: str) -> None:
    """Print the comparison table: ingredients vs soups vs merges, cross-dataset mean first."""
    from study.demo_table import comparison_table

    click.echo(comparison_table(json.loads(report_json.read_text()), test_sets, train_dataset))


if __name__ == "__main__":
    sys.exit(main())
