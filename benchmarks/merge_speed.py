"""Merge speed and memory: ``mergekit-yaml`` + plugin vs stock mergekit vs a plain in-memory torch merge (issue 8).

Run::

    python -m benchmarks.merge_speed --quick          # ViT-B/16 only, ties + task_arithmetic, memory sweep
    python -m benchmarks.merge_speed                  # ViT-B/16 and ViT-L/14, all seven methods
    python -m benchmarks.merge_speed --device cuda    # the same with mergekit-yaml --cuda and torch on the GPU

Ingredients are random-weight CLIP vision towers written under ``--root`` (default ``runs/bench``, git-ignored):
a base and N "fine-tunes" (base + small noise), fp32 safetensors, in two layouts:

* Hugging Face ``CLIPVisionModel`` dirs, which stock mergekit can merge (its inferred architecture), so we time
  ``mergekit-yaml`` with ``MERGEKIT_CLIP_DISABLE=1`` (stock), with our plugin, and a plain merge on the same files;
* our detector dirs (open_clip names + a 2-logit head) for ``ties``: what the main job merges, plugin only.

Every variant runs as its own subprocess; wall time includes imports, CPU time is the child's user + system time.
The variants of one merge run interleaved for ``--repeats`` rounds (order rotated); times are median [range] over
rounds and every speed ratio is the median [range] of the per-round ratios, wall and CPU (see
benchmarks/_timing.py). Peak RSS is the child's ``ru_maxrss`` (it counts the page cache of mmap-ed inputs); peak
RssAnon (heap only) is sampled from ``/proc/<pid>/status`` every 10 ms (largest over rounds). Plugin and stock
outputs are compared tensor by tensor (``identical`` column).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from benchmarks._device import device_option
from benchmarks._timing import REPEATS, Sample, speed_ratio, times

SIZES = {  # HF CLIPVisionConfig geometry of the open_clip towers: (width, mlp width, layers, heads, patch)
    "ViT-B-16": (768, 3072, 12, 12, 16),
    "ViT-L-14": (1024, 4096, 24, 16, 14),
    "tiny": (64, 128, 2, 4, 16),  # a smoke test of the benchmark itself (tests/test_merge_speed_benchmark.py)
}
METHODS = ("ties", "dare_ties", "breadcrumbs_ties", "della", "task_arithmetic", "linear", "model_stock")
TIE_METHODS = ("ties", "breadcrumbs_ties")  # the kernels with a tie rule (MERGEKIT_CLIP_SPARSIFY_TIES)
BIN = Path(sys.executable).parent
DELTA_SCALE = 1e-3  # fine-tune noise relative to weights of std 0.02: a realistic task-vector size


@dataclass
class Result:
    size: str
    method: str
    variant: str  # stock | plugin | plain | plugin-detector
    ingredients: int
    wall_s: float
    peak_rss_mb: float
    peak_anon_mb: float
    identical: str = ""
    cpu_s: float = 0.0
    samples: list = None  # [(wall, cpu)] per round, in round order

    def sample_list(self) -> list[Sample]:
        return [Sample(w, c) for w, c in (self.samples or [(self.wall_s, self.cpu_s)])]


# ---------------------------------------------------------------- ingredients


def _hf_config(size: str):
    from transformers import CLIPVisionConfig

    width, mlp, layers, heads, patch = SIZES[size]
    config = CLIPVisionConfig(
        image_size=224,
        hidden_size=width,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        patch_size=patch,
    )
    config.architectures = ["CLIPVisionModel"]
    return config


def _random_base(shapes: dict, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        is_norm_scale = name.endswith("norm.weight") or ("ln_" in name and name.endswith("weight"))
        init = torch.ones(shape) if is_norm_scale else 0
        out[name] = init + torch.randn(shape, generator=g) * 0.02
    return out


def _finetune(base: dict, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=g) * DELTA_SCALE for k, v in base.items()}


def _write(path: Path, state: dict, write_config) -> None:
    from safetensors.torch import save_file

    from mergekit_clip.detector.io import atomic_directory

    with atomic_directory(path, overwrite=True) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"), {"format": "pt"})
        write_config(tmp)


def make_hf_family(root: Path, size: str, count: int) -> list[Path]:
    """``root/hf-SIZE/{base,ft0..}``: HF CLIPVisionModel dirs (reused when present)."""
    import torch
    from transformers import CLIPVisionModel

    fam = root / f"hf-{size}"
    paths = [fam / "base"] + [fam / f"ft{i}" for i in range(count)]
    if all((p / "model.safetensors").exists() for p in paths):
        return paths
    config = _hf_config(size)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CLIPVisionModel(config).state_dict().items()}
    base = _random_base(shapes, seed=0)
    for i, path in enumerate(paths):
        if not (path / "model.safetensors").exists():
            click.echo(f"  writing {path}", err=True)
            _write(path, base if i == 0 else _finetune(base, seed=i), lambda d: config.save_pretrained(str(d)))
    return paths


def make_detector_family(root: Path, size: str, count: int, spec=None) -> list[Path]:
    """``root/det-SIZE/{base,ft0..}``: our detector dirs; the base is a bare tower, fine-tunes carry a head.

    ``spec`` (a ``DetectorSpec``) overrides the open_clip geometry named by ``size``.
    """
    from mergekit_clip.detector.io import create_detector
    from mergekit_clip.detector.spec import DetectorConfig, spec_from_open_clip

    fam = root / f"det-{size}"
    paths = [fam / "base"] + [fam / f"ft{i}" for i in range(count)]
    if all((p / "model.safetensors").exists() for p in paths):
        return paths
    spec = spec or spec_from_open_clip(size)
    model = create_detector(spec, seed=0)
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    del model
    bare = spec.model_copy(update={"head": None})
    base = {k: v for k, v in full.items() if not k.startswith("head.")}
    for i, path in enumerate(paths):
        if (path / "model.safetensors").exists():
            continue
        click.echo(f"  writing {path}", err=True)
        if i == 0:
            _write(path, base, lambda d: DetectorConfig.from_spec(bare).save_pretrained(str(d)))
        else:
            state = _finetune(full, seed=i)
            _write(path, state, lambda d: DetectorConfig.from_spec(spec).save_pretrained(str(d)))
    return paths


# ---------------------------------------------------------------- recipes


def recipe(method: str, paths: list[Path]) -> dict:
    base, models = str(paths[0]), [str(p) for p in paths[1:]]
    params = {
        "ties": {"weight": 1.0, "density": 0.2},
        "dare_ties": {"weight": 1.0, "density": 0.2},
        "breadcrumbs_ties": {"weight": 1.0, "density": 0.2, "gamma": 0.01},
        "della": {"weight": 1.0, "density": 0.2, "epsilon": 0.1},
        "task_arithmetic": {"weight": 0.3},
        "linear": {"weight": 1.0},
        "model_stock": {},
    }[method]
    cfg: dict = {"merge_method": method, "dtype": "float32", "models": []}
    if method != "linear":
        cfg["base_model"] = base
    for m in models if method != "linear" else [base, *models]:
        cfg["models"].append({"model": m, **({"parameters": params} if params else {})})
    return cfg


# ---------------------------------------------------------------- plain in-memory merge (the baseline)


def plain_merge(cfg: dict, out: Path, device: str) -> None:
    """Merge with plain torch, every tensor in memory: what a researcher would write without mergekit."""
    import torch
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    method = cfg["merge_method"]
    base_path = cfg.get("base_model")
    files = [m["model"] for m in cfg["models"]]
    params = [m.get("parameters", {}) for m in cfg["models"]]
    base = load_file(str(Path(base_path) / "model.safetensors")) if base_path else None
    models = [load_file(str(Path(f) / "model.safetensors")) for f in files]
    merged = {}
    for name in models[0]:
        xs = [m[name].to(device) for m in models]
        b = base[name].to(device) if base is not None and name in base else torch.stack(xs).mean(0)
        merged[name] = _plain_tensor(method, b, xs, params).cpu()
    out.mkdir(parents=True, exist_ok=True)
    save_file(merged, str(out / "model.safetensors"))
    shutil.copy(Path(base_path or files[0]) / "config.json", out / "config.json")


def _plain_tensor(method: str, base, xs: list, params: list):
    import torch

    w = torch.tensor([p.get("weight", 1.0) for p in params], device=base.device).view(-1, *([1] * base.dim()))
    if method == "linear":
        return (torch.stack(xs) * w).sum(0) / w.sum()
    if method == "model_stock":
        d = torch.stack([x - base for x in xs]).flatten(1)
        cos = torch.nn.functional.cosine_similarity(d[:, None], d[None], dim=-1)
        n = len(xs)
        c = ((cos.sum() - n) / (n * (n - 1))).clamp(-1, 1)
        t = n * c / (1 + (n - 1) * c)
        return t * torch.stack(xs).mean(0) + (1 - t) * base
    deltas = torch.stack([x - base for x in xs])
    if method == "task_arithmetic":
        return base + (deltas * w).sum(0)
    density = params[0].get("density", 1.0)
    flat = deltas.flatten(1)
    mag = flat.abs()
    n = flat.shape[1]
    if method == "ties":
        k = max(1, int(density * n))
        thresh = mag.kthvalue(n - k + 1, dim=1, keepdim=True).values
        flat = flat * (mag >= thresh)
    elif method == "breadcrumbs_ties":
        target, top = int(density * n), int(params[0].get("gamma", 0.01) * n)
        lo = mag.kthvalue(max(1, n - target - top + 1), dim=1, keepdim=True).values
        hi = mag.kthvalue(n - top, dim=1, keepdim=True).values
        flat = flat * ((mag >= lo) & (mag <= hi))
    elif method == "dare_ties":
        flat = flat * torch.bernoulli(torch.full_like(flat, density)) / density
    elif method == "della":
        eps = params[0].get("epsilon", 0.1)
        rows = deltas.reshape(len(xs), -1, deltas.shape[-1])
        ranks = rows.abs().argsort(-1).argsort(-1).float() / max(1, rows.shape[-1] - 1)
        p = (density - eps) + ranks * 2 * eps
        flat = (rows * torch.bernoulli(p) / p).reshape(len(xs), -1)
    deltas = flat.view_as(deltas) * w
    sign = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
    agree = deltas.sign() == sign
    mixed = (deltas * agree).sum(0)
    if method in ("ties", "della"):  # mergekit's default normalize for these
        divisor = (w * agree).sum(0)
        mixed = mixed / divisor.masked_fill(divisor == 0, 1)
    return base + mixed


# ---------------------------------------------------------------- measurement


def _sample_anon(pid: int, peak: list, done: threading.Event) -> None:
    status = Path(f"/proc/{pid}/status")
    while not done.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return
        time.sleep(0.01)


def measure(cmd: list[str], env: dict) -> tuple[float, float, float, str, float]:
    """Run ``cmd``; wall seconds, peak RSS MB (ru_maxrss), peak RssAnon MB (sampled), stderr tail on failure, CPU
    seconds (the child's user + system)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()
    sampler = threading.Thread(target=_sample_anon, args=(proc.pid, peak, done), daemon=True)
    sampler.start()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    failed = err[-2000:] if proc.returncode != 0 else ""
    return wall, usage.ru_maxrss / 1024, peak[0] / 1024, failed, usage.ru_utime + usage.ru_stime


def run_variant(
    variant: str, cfg: dict, work: Path, cuda: bool, plain_module: str = "benchmarks.merge_speed"
) -> tuple[float, float, float, Path]:
    """Run one merge of ``cfg`` in a child process; ``plain`` runs ``python -m <plain_module> --plain-recipe``
    (the benchmark's own in-memory merge), the others ``mergekit-yaml``. Returns (wall s, max RSS MB, peak anon
    MB, output dir)."""
    sample, rss, anon, out = run_variant_timed(variant, cfg, work, cuda, plain_module)
    return sample.wall, rss, anon, out


def run_variant_timed(
    variant: str, cfg: dict, work: Path, cuda: bool, plain_module: str = "benchmarks.merge_speed"
) -> tuple[Sample, float, float, Path]:
    """:func:`run_variant` with wall and CPU seconds as a :class:`Sample`."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    recipe_file = work / "recipe.yml"
    import yaml

    recipe_file.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    if variant == "plain":
        cmd = [sys.executable, "-m", plain_module, "--plain-recipe", str(recipe_file)]
        cmd += ["--plain-out", str(out), "--device", "cuda" if cuda else "cpu"]
        env["MERGEKIT_CLIP_DISABLE"] = "1"  # the plain merge never imports mergekit anyway
    else:
        cmd = [str(BIN / "mergekit-yaml"), str(recipe_file), str(out), "--no-write-model-card", "--no-copy-tokenizer"]
        cmd += ["--quiet", "--random-seed", "0"] + (["--cuda"] if cuda else [])
        env["MERGEKIT_CLIP_DISABLE"] = "1" if variant == "stock" else "0"
        if variant == "plugin-index":  # opt-in tie rule: never sorts, not bit-identical on ambiguous ties
            env["MERGEKIT_CLIP_SPARSIFY_TIES"] = "index"
    wall, rss, anon, failed, cpu = measure(cmd, env)
    if failed:
        raise click.ClickException(f"{variant} {cfg['merge_method']} failed:\n{failed}")
    return Sample(wall, cpu), rss, anon, out


def same_output(a: Path, b: Path) -> str:
    """'yes' when every tensor is bitwise equal (ignoring the vision_model. prefix stock mergekit drops)."""
    import torch
    from safetensors.torch import load_file

    ta = {k.removeprefix("vision_model."): v for k, v in load_file(str(a / "model.safetensors")).items()}
    tb = {k.removeprefix("vision_model."): v for k, v in load_file(str(b / "model.safetensors")).items()}
    if ta.keys() != tb.keys():
        return "names differ"
    diff = max((x - tb[k]).abs().max().item() for k, x in ta.items())
    same = all(torch.equal(x.view(torch.int32), tb[k].view(torch.int32)) for k, x in ta.items())
    return "yes" if same else f"max|diff|={diff:.2e}"


# ---------------------------------------------------------------- report


def _device_name(cuda: bool) -> str:
    import torch

    where = torch.cuda.get_device_name(0) if cuda else f"CPU x{torch.get_num_threads()} threads"
    return f"{where}, torch {torch.__version__}"


def _print(results: list[Result]) -> None:
    click.echo(f"\n{'size':9} {'method':17} {'variant':16} {'n':>2} {'wall s, median [range]':>24} "
               f"{'CPU s':>22} {'RSS MB':>7} {'anon MB':>7}  same")  # fmt: skip
    for r in results:
        samples = r.sample_list()
        click.echo(
            f"{r.size:9} {r.method:17} {r.variant:16} {r.ingredients:2d} {times(samples, 'wall').text('.1f'):>24} "
            f"{times(samples, 'cpu').text('.1f'):>22} {r.peak_rss_mb:7.0f} {r.peak_anon_mb:7.0f}  {r.identical}"
        )
    by = {(r.size, r.method, r.variant, r.ingredients): r for r in results}
    click.echo("\nratios (same run, per round, median [range]):")
    for (size, method, variant, n), r in by.items():
        if variant not in ("plugin", "plugin-index"):
            continue
        stock, plain = by.get((size, method, "stock", n)), by.get((size, method, "plain", n))
        parts = []
        if stock:  # stock time / plugin time: > 1 = the plugin is faster
            wall, cpu = (speed_ratio(r.sample_list(), stock.sample_list(), f) for f in ("wall", "cpu"))
            parts.append(f"stock/plugin wall {wall.ratio_text()} CPU {cpu.ratio_text()}")
        if plain:  # plugin time / plain time
            wall, cpu = (speed_ratio(plain.sample_list(), r.sample_list(), f) for f in ("wall", "cpu"))
            anon = r.peak_anon_mb / plain.peak_anon_mb
            parts.append(f"plugin/plain wall {wall.ratio_text()} CPU {cpu.ratio_text()}, anon {anon:.2f}x")
        click.echo(f"  {size} {method} {variant} x{n}: " + "; ".join(parts))
    sweep = sorted((r.ingredients, r) for r in results if r.variant == "plugin-sweep")
    if len(sweep) > 1:
        first = sweep[0][1]
        for n, r in sweep[1:]:
            click.echo(
                f"  memory {r.size} ties: anon at {n} / at {first.ingredients} ingredients = "
                f"{r.peak_anon_mb / first.peak_anon_mb:.2f}x ({r.peak_anon_mb:.0f} vs {first.peak_anon_mb:.0f} MB)"
            )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="ViT-B/16 only, ties and task_arithmetic, plus the memory sweep.")
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True)
@click.option(
    "--sizes", default=None, help="Comma-separated of " + ", ".join(SIZES) + " (default: B/16 and L/14; quick: B/16)."
)
@click.option("--methods", default=None, help="Comma-separated of " + ", ".join(METHODS) + ".")
@click.option("--ingredients", type=int, default=3, show_default=True, help="Fine-tunes per merge.")
@click.option("--sweep", default="2,4,8", show_default=True, help="Ingredient counts for the memory sweep ('' = none).")
@click.option("--detector/--no-detector", default=True, show_default=True, help="Also time ties on our detector dirs.")
@device_option("cuda = mergekit-yaml --cuda and the plain merge on the GPU")
@click.option("--repeats", default=REPEATS, show_default=True, help="interleaved rounds of the variants of a merge")
@click.option("--plain-recipe", type=click.Path(exists=True, path_type=Path), hidden=True)
@click.option("--plain-out", type=click.Path(path_type=Path), hidden=True)
def main(quick, root, sizes, methods, ingredients, sweep, detector, device, repeats, plain_recipe, plain_out) -> None:
    """Time mergekit-yaml (plugin / stock) against a plain in-memory torch merge; print figures and ratios."""
    cuda = device == "cuda"
    if plain_recipe is not None:
        import yaml

        plain_merge(yaml.safe_load(plain_recipe.read_text()), plain_out, "cuda" if cuda else "cpu")
        return
    size_list = (sizes or ("ViT-B-16" if quick else "ViT-B-16,ViT-L-14")).split(",")
    method_list = (methods or ("ties,task_arithmetic" if quick else ",".join(METHODS))).split(",")
    bad = [s for s in size_list if s not in SIZES] + [m for m in method_list if m not in METHODS]
    if bad:
        raise click.BadParameter(f"unknown {bad}; sizes: {list(SIZES)}, methods: {list(METHODS)}")
    counts = [int(c) for c in sweep.split(",") if c.strip()]
    click.echo(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}", err=True)
    click.echo(f"device: {_device_name(cuda)}")
    results: list[Result] = []
    for size in size_list:
        hf = make_hf_family(root, size, max([ingredients, *counts]) if size == size_list[0] else ingredients)
        for method in method_list:
            cfg = recipe(method, hf[: ingredients + 1])
            outs = {}
            variants = ("stock", "plugin", "plain") + (("plugin-index",) if method in TIE_METHODS else ())
            runs: dict[str, list] = {v: [] for v in variants}
            for r in range(repeats):  # interleaved: every variant once per round, the order rotated
                for k in range(len(variants)):
                    variant = variants[(r + k) % len(variants)]
                    sample, rss, anon, outs[variant] = run_variant_timed(variant, cfg, root / "work" / variant, cuda)
                    runs[variant].append((sample, rss, anon))
                    click.echo(f"  {size} {method} {variant} round {r + 1}: {sample.wall:.1f} s", err=True)
            for variant in variants:
                samples = [x[0] for x in runs[variant]]
                wall, cpu = times(samples, "wall").median, times(samples, "cpu").median
                rss, anon = max(x[1] for x in runs[variant]), max(x[2] for x in runs[variant])
                results.append(Result(size, method, variant, ingredients, wall, rss, anon, cpu_s=cpu,
                                      samples=[(x.wall, x.cpu) for x in samples]))  # fmt: skip
                if variant.startswith("plugin"):
                    results[-1].identical = same_output(outs[variant], outs["stock"])
            (root / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
        if detector and "ties" in method_list:
            det = make_detector_family(root, size, ingredients)
            wall, rss, anon, _ = run_variant("plugin", recipe("ties", det), root / "work" / "det", cuda)
            results.append(Result(size, "ties", "plugin-detector", ingredients, wall, rss, anon))
        if size == size_list[0]:
            for n in counts:
                wall, rss, anon, _ = run_variant("plugin", recipe("ties", hf[: n + 1]), root / "work" / "sweep", cuda)
                results.append(Result(size, "ties", "plugin-sweep", n, wall, rss, anon))
                click.echo(f"  {size} ties sweep x{n}: {wall:.1f} s", err=True)
    click.echo(f"load average after: {os.getloadavg()}", err=True)
    _print(results)
    (root / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
