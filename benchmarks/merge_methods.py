"""The plugin's extra merge methods (issue 16): ``mergekit-yaml`` + plugin against a plain in-memory merge.

Run::

    python -m benchmarks.merge_methods                 # ViT-B/16 x 4 specialists, every method
    python -m benchmarks.merge_methods --methods tsv_m,regmean --device cuda
    python -m benchmarks.merge_methods --quick         # tiny geometry: a smoke test of the benchmark itself

Ingredients are random-weight detector dirs written under ``--root`` (default ``runs/bench``, git-ignored) by
:func:`benchmarks.merge_speed.make_detector_family`: a bare base tower and N "specialists" (base + small noise,
each with a head). ``regmean`` and ``fisher`` get synthetic statistics files of the right shapes (random
positive-definite Grams, random Fishers), written with the ingredients' weight hashes, so the run measures the
merge, not the data pass (``mergekit-clip stats`` is a forward/backward pass over frames, timed by
``benchmarks/scale.py``-style eval benchmarks).

The baseline ("plain") loads every ingredient's full state dict into memory and applies the same per-tensor
kernels (the functions in ``mergekit_clip/plugin/methods``) in a loop, as a researcher would without mergekit; so
the ratio is mergekit's overhead (lazy loading, task graph, writing), not a difference of algorithm. Both run as
subprocesses, interleaved for ``--repeats`` rounds (order rotated); wall time includes imports, CPU time is the
child's user + system; times and the plugin/plain ratio are median [range] over rounds (the ratio per round; see
benchmarks/_timing.py); peak RssAnon (heap) is sampled every 10 ms and peak RSS is ``ru_maxrss`` (largest over
rounds). The outputs are compared (largest absolute difference over all tensors).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from benchmarks._device import device_option
from benchmarks._timing import REPEATS, Sample, speed_ratio, times
from benchmarks.merge_speed import make_detector_family, run_variant_timed
from mergekit_clip.plugin.methods import METHOD_MODULES, STATS_KINDS, default_parameters, needs_base

METHODS = tuple(METHOD_MODULES)


@dataclass
class Result:
    size: str
    method: str
    variant: str  # plugin | plain
    ingredients: int
    wall_s: float
    peak_rss_mb: float
    peak_anon_mb: float
    max_abs_diff: float | None = None
    cpu_s: float = 0.0
    samples: list = None  # [(wall, cpu)] per round, in round order

    def sample_list(self) -> list[Sample]:
        return [Sample(w, c) for w, c in (self.samples or [(self.wall_s, self.cpu_s)])]


def _tiny_spec():
    from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec

    backbone = BackboneSpec(image_size=32, patch_size=8, width=64, layers=2, heads=4, embed_dim=32)
    return DetectorSpec(backbone=backbone, preprocess=PreprocessSpec(image_size=32))


def make_family(root: Path, quick: bool, count: int) -> tuple[str, list[Path]]:
    size = "tiny" if quick else "ViT-B-16"
    return size, make_detector_family(root, size, count, spec=_tiny_spec() if quick else None)


# ---------------------------------------------------------------- synthetic statistics


def write_synthetic_stats(paths: list[Path]) -> None:
    """Gram and Fisher files for every specialist, of the shapes ``mergekit-clip stats`` writes."""
    import torch
    from safetensors.torch import load_file

    from mergekit_clip.detector.io import weights_hash
    from mergekit_clip.stats.store import stats_path, write_stats

    for i, path in enumerate(paths):
        if stats_path(path, "gram").exists() and stats_path(path, "fisher").exists():
            continue
        click.echo(f"  writing statistics of {path}", err=True)
        state = load_file(str(path / "model.safetensors"))
        gen = torch.Generator().manual_seed(1000 + i)
        grams, axes = {}, {}
        for name, tensor in state.items():
            is_linear = name.endswith(("in_proj_weight", "out_proj.weight", "c_fc.weight", "c_proj.weight"))
            if name == "head.weight" or is_linear:
                x = torch.randn(tensor.shape[1], tensor.shape[1] + 8, generator=gen)
                grams[name], axes[name] = x @ x.T / x.shape[1], 1
        digest = weights_hash(path)
        meta = {"dataset": "synthetic", "split": "train", "frames": "0", "weights_sha256": digest}
        write_stats(path, "gram", grams, {**meta, "input_axis": axes})
        fishers = {name: torch.rand(t.shape, generator=gen) ** 2 for name, t in state.items()}
        write_stats(path, "fisher", fishers, {**meta, "fisher_label": "predicted"})


# ---------------------------------------------------------------- recipes and the plain baseline


def recipe(method: str, paths: list[Path]) -> dict:
    # every method at its defaults, so the benchmark times what a recipe that sets nothing runs
    cfg: dict = {"merge_method": method, "dtype": "float32", "parameters": default_parameters(method)}
    cfg["models"] = [{"model": str(p)} for p in paths[1:]]
    if needs_base(method):
        cfg["base_model"] = str(paths[0])
    return cfg


def _plain_tensor(method: str, name: str, base, xs: list, stats: list, params: dict):
    import torch

    from mergekit_clip.plugin.methods.fisher import fisher_average
    from mergekit_clip.plugin.methods.iso_c import isotropic_update
    from mergekit_clip.plugin.methods.iso_cts import iso_cts_update
    from mergekit_clip.plugin.methods.linalg import is_head, is_matrix, low_rank, rank_of, treat_as_matrix
    from mergekit_clip.plugin.methods.real_aware import real_aware_update
    from mergekit_clip.plugin.methods.regmean import regmean_solve
    from mergekit_clip.plugin.methods.tsv_m import tsv_update

    if method == "regmean":
        grams = [s.get(name) for s in stats]
        if grams[0] is None:
            return torch.stack(xs).mean(0)
        return regmean_solve(xs, [g.to(xs[0].device) for g in grams], params["off_diagonal_scale"])
    if method == "fisher":
        fishers = [s.get(name).to(xs[0].device) for s in stats]
        return fisher_average(xs, fishers, [1.0] * len(xs), params["epsilon"])
    if method == "cart":
        average = torch.stack(xs).mean(0)
        if not is_matrix(name, average):
            return average
        rank = rank_of(params["rank_ratio"], average.shape)
        return average + params["scale"] * sum(low_rank(x - average, rank) for x in xs)
    tasks = torch.stack([x - base for x in xs])
    alpha = params["alpha"]
    if method == "real_aware" and is_head(name):
        return base + tasks.mean(0)
    policy = params.get("matrix_policy", "layers")
    if method == "real_aware" and not is_matrix(name, base):
        return base + alpha * tasks.mean(0)
    if method != "real_aware" and not treat_as_matrix(name, base, len(xs) if method == "tsv_m" else 1, policy):
        return base + alpha * tasks.mean(0)
    if method == "tsv_m":
        return base + alpha * tsv_update(tasks)
    if method == "iso_c":
        return base + alpha * isotropic_update(tasks.sum(0))
    if method == "iso_cts":
        return base + alpha * iso_cts_update(tasks, params["common_fraction"], params["subspace_rounding"])
    update = real_aware_update(tasks, params["shared_rank_ratio"], params["residual_rank_ratio"])
    return base + alpha * update


def plain_merge(cfg: dict, out: Path, device: str) -> None:
    """Every ingredient's state dict in memory, the same kernels tensor by tensor (no mergekit)."""
    import torch
    from safetensors.torch import load_file, save_file

    from mergekit_clip.stats.store import open_stats

    method, params = cfg["merge_method"], cfg["parameters"]
    files = [m["model"] for m in cfg["models"]]
    models = [load_file(str(Path(f) / "model.safetensors")) for f in files]
    base = load_file(str(Path(cfg["base_model"]) / "model.safetensors")) if cfg.get("base_model") else None
    kind = STATS_KINDS.get(method)
    stats = [open_stats(f, kind, method) for f in files] if kind else []
    merged = {}
    for name in models[0]:
        xs = [m[name].to(device, torch.float32) for m in models]
        if base is not None:  # a bare base without a head: the ingredients' mean head, as the plugin does
            b = base[name].to(device, torch.float32) if name in base else torch.stack(xs).mean(0)
        else:
            b = None
        merged[name] = _plain_tensor(method, name, b, xs, stats, params).cpu().contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(merged, str(out / "model.safetensors"))
    shutil.copy(Path(files[0]) / "config.json", out / "config.json")


# ---------------------------------------------------------------- measurement and report


def max_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if ta.keys() != tb.keys():
        raise click.ClickException(f"{a} and {b} hold different tensors: {sorted(set(ta) ^ set(tb))[:6]}")
    return max((ta[k].float() - tb[k].float()).abs().max().item() for k in ta)


def _print(results: list[Result]) -> None:
    header = f"{'size':9} {'method':11} {'variant':7} {'n':>2} {'wall s, median [range]':>24} {'CPU s':>20}"
    click.echo(f"\n{header} {'RSS MB':>7} {'anon MB':>7}  max|diff|")
    for r in results:
        diff = "" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}"
        samples = r.sample_list()
        click.echo(
            f"{r.size:9} {r.method:11} {r.variant:7} {r.ingredients:2d} {times(samples, 'wall').text('.1f'):>24} "
            f"{times(samples, 'cpu').text('.1f'):>20} {r.peak_rss_mb:7.0f} {r.peak_anon_mb:7.0f}  {diff}"
        )
    by = {(r.method, r.variant): r for r in results}
    click.echo("\nratios (same run, per round, median [range]; target <= 1.5x):")
    for method in dict.fromkeys(r.method for r in results):
        plugin, plain = by.get((method, "plugin")), by.get((method, "plain"))
        if plugin and plain:
            anon, rss = plugin.peak_anon_mb / plain.peak_anon_mb, plugin.peak_rss_mb / plain.peak_rss_mb
            # plugin time / plain time: the speed of plain against plugin
            wall, cpu = (speed_ratio(plain.sample_list(), plugin.sample_list(), f) for f in ("wall", "cpu"))
            click.echo(f"  {method}: plugin/plain wall {wall.ratio_text()} CPU {cpu.ratio_text()}, anon {anon:.2f}x, "
                       f"RSS {rss:.2f}x")  # fmt: skip


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Tiny geometry (width 64, 2 layers): checks the benchmark runs.")
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True)
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Comma-separated method names.")
@click.option("--ingredients", type=click.IntRange(min=2), default=4, show_default=True, help="Specialists.")
@device_option("cuda = mergekit-yaml --cuda and the plain merge on the GPU")
@click.option("--repeats", default=REPEATS, show_default=True, help="interleaved rounds of plain and plugin")
@click.option("--plain-recipe", type=click.Path(exists=True, path_type=Path), hidden=True)
@click.option("--plain-out", type=click.Path(path_type=Path), hidden=True)
def main(quick, root, methods, ingredients, device, repeats, plain_recipe, plain_out) -> None:
    """Time each new method in mergekit-yaml against a plain in-memory merge; print figures and ratios."""
    cuda = device == "cuda"
    if plain_recipe is not None:
        import yaml

        plain_merge(yaml.safe_load(plain_recipe.read_text()), plain_out, "cuda" if cuda else "cpu")
        return
    method_list = [m for m in methods.split(",") if m]
    unknown = [m for m in method_list if m not in METHODS]
    if unknown:
        raise click.BadParameter(f"unknown method(s) {unknown}; choose from {list(METHODS)}", param_hint="--methods")
    import torch

    device = torch.cuda.get_device_name(0) if cuda else f"CPU x{torch.get_num_threads()} threads"
    click.echo(f"device: {device}, torch {torch.__version__}; load average {os.getloadavg()}, cpus {os.cpu_count()}")
    size, paths = make_family(root, quick, ingredients)
    if set(method_list) & {"regmean", "fisher"}:
        write_synthetic_stats(paths[1:])
    results: list[Result] = []
    for method in method_list:
        cfg = recipe(method, paths)
        outs, runs = {}, {"plain": [], "plugin": []}
        for r in range(repeats):  # interleaved, the order alternating
            for variant in ("plain", "plugin") if r % 2 == 0 else ("plugin", "plain"):
                work, module = root / "work-methods" / variant, "benchmarks.merge_methods"
                sample, rss, anon, outs[variant] = run_variant_timed(variant, cfg, work, cuda, module)
                runs[variant].append((sample, rss, anon))
                click.echo(f"  {size} {method} {variant} round {r + 1}: {sample.wall:.1f} s", err=True)
        for variant, xs in runs.items():
            samples = [x[0] for x in xs]
            results.append(Result(size, method, variant, ingredients, times(samples, "wall").median,
                                  max(x[1] for x in xs), max(x[2] for x in xs), cpu_s=times(samples, "cpu").median,
                                  samples=[(x.wall, x.cpu) for x in samples]))  # fmt: skip
        results[-1].max_abs_diff = max_difference(outs["plugin"], outs["plain"])
        (root / "methods_results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    click.echo(f"load average after: {os.getloadavg()}", err=True)
    _print(results)


if __name__ == "__main__":
    main()
