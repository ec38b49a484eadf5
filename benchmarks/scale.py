"""Real-scale figures (issue 18): evaluation, training and merging at ViT-B/16 and ViT-L/14, each against its limit.

    python -m benchmarks.scale --device cuda                 # a GPU machine: ViT-B/16 and ViT-L/14, ~5 min on an H200
    python -m benchmarks.scale --tiny                        # CPU smoke run in well under 2 minutes (CI runs it)
    python -m benchmarks.scale --device cuda --sections eval,merge --archs ViT-L-14

Everything is built here: random-weight detectors (``create_detector``) and synthetic 256 px PNG frames on local
disk; nothing is downloaded. Each figure is printed as a ratio against its limit measured in the same run:

* **eval**: end-to-end images/s of clip-eval's scorer (``eval.predict.Predictor``: real PNG decoding in DataLoader
  workers, resize, normalisation, forward) against the model-only forward on tensors already in device memory, same
  batch and precision (fp32; bf16 = autocast on CUDA, bf16 weights on CPU, as clip-eval does). Target >= 0.8x.
* **train**: images/s and peak device memory of one optimisation step per training mode (every mode in clip-train's
  registry that this checkout has), with and without gradient checkpointing, at a fixed batch, against the
  forward+backward time of the model alone (all parameters trainable, no optimiser). Target: no mode slower per image
  than full fine-tuning.
* **merge**: ``mergekit-yaml [--cuda]`` wall time for ties, task_arithmetic (and the plugin's SVD-based methods where
  they exist) on N detectors against a plain in-memory implementation of the same algorithm on the same device
  (:mod:`benchmarks.merge_speed`). Target <= 1.5x.

The eval and merge sections run their two sides interleaved for ``--repeats`` rounds (order rotated) and report the
median [range] of the per-round ratio, wall and process CPU time (see benchmarks/_timing.py); the train section
keeps best of ``--repeats`` per mode (interleaving would hold every mode's model and optimiser state in device
memory at once).

``--out`` (default ``runs/bench/scale.json``) receives every figure plus the device, torch and CUDA versions.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import click
import torch

from benchmarks._device import device_option
from benchmarks._timing import REPEATS, Sample, interleaved, measure, speed_ratio, times
from benchmarks.eval_throughput import make_frames

ARCHS = ("ViT-B-16", "ViT-L-14")
SECTIONS = ("eval", "train", "merge")


# ---------------------------------------------------------------- models


def detector_spec(arch: str):
    from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec, spec_from_open_clip

    if arch == "tiny":  # 2-layer ViT at 64 px: the CPU smoke size
        return DetectorSpec(
            backbone=BackboneSpec(image_size=64, patch_size=16, width=64, layers=2, heads=4, embed_dim=32),
            preprocess=PreprocessSpec(image_size=64),
        )
    return spec_from_open_clip(arch)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_rate(fn, items: int, repeats: int, device: torch.device) -> float:
    """Best items/s over ``repeats`` runs (the first call of ``fn`` outside the timing warms kernels up)."""
    fn()
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = max(best, items / (time.perf_counter() - start))
    return best


def per_item(fn, items: int, device: torch.device) -> Sample:
    """Wall and CPU seconds per item of one call of ``fn`` (device work finished inside the timing)."""

    def run() -> None:
        synchronize(device)
        fn()
        synchronize(device)

    return measure(run)[1].per(items)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """Peak device memory since :func:`reset_peak` (CUDA only; ``None`` on CPU, where RSS is not per-step)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# ---------------------------------------------------------------- eval


def bench_eval(arch: str, device: torch.device, frames: int, batch: int, workers: int | None, repeats: int) -> list:
    from eval.predict import Predictor
    from mergekit_clip.detector.io import create_detector

    spec = detector_spec(arch)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_frames(Path(tmp), frames)
        for precision in ("fp32", "bf16"):
            model = create_detector(spec, seed=0)
            predictor = Predictor(
                device=str(device), bf16=precision == "bf16", batch_size=batch, num_workers=workers, progress=False
            )
            predictor.prepare(model)
            dtype = next(model.parameters()).dtype
            side = spec.preprocess.image_size
            x = torch.randn(batch, 3, side, side, device=device).to(dtype)
            autocast = torch.autocast(device.type, dtype=torch.bfloat16) if predictor._autocast else nullcontext()
            steps = max(1, len(paths) // batch)

            def forward(m=model, x=x, autocast=autocast, steps=steps):
                with torch.inference_mode(), autocast:
                    for _ in range(steps):
                        m(x)

            def score(p=predictor, m=model):
                p.score_paths(m, paths)

            score(), forward()  # warm-up: kernels, worker start, allocator
            cases = {"end_to_end": lambda f=score: per_item(f, len(paths), device),
                     "model_only": lambda f=forward, n=steps * batch: per_item(f, n, device)}  # fmt: skip
            samples = interleaved(cases, repeats)
            wall = speed_ratio(samples["end_to_end"], samples["model_only"], "wall")
            cpu = speed_ratio(samples["end_to_end"], samples["model_only"], "cpu")
            rows.append(
                {
                    "section": "eval",
                    "arch": arch,
                    "precision": predictor.dtype_name,
                    "batch": batch,
                    "frames": len(paths),
                    "rounds": repeats,
                    "end_to_end_img_s": 1 / times(samples["end_to_end"], "wall").median,
                    "model_only_img_s": 1 / times(samples["model_only"], "wall").median,
                    "ratio": wall.median,
                    "ratio_range": [wall.low, wall.high],
                    "ratio_cpu": cpu.rounded(3),
                    "target": ">= 0.8",
                }
            )
            del model
    return rows


# ---------------------------------------------------------------- train


def _trainable_modes() -> dict:
    """Mode name -> ``prepare(model) -> model`` making exactly that mode's parameters trainable.

    Read from clip-train's mode registry (:mod:`train.modes`), with each mode's default options, so every mode this
    checkout has is measured. A probe-only mode trains the head; LP-FT is timed in its second (fine-tuning) stage.
    A mode that trains on forgery masks builds its own detector kind (ForensicsAdapter: frozen tower + adapter), not
    the plain detector this section times: ``python -m benchmarks.forensics_adapter`` measures it against full
    fine-tuning of the same tower.
    """
    from train.modes import MODES

    def prepare_for(mode):
        def prepare(model):
            if not mode.fine_tunes:  # the probe is the whole mode: only the head learns
                for name, p in model.named_parameters():
                    p.requires_grad_(name.startswith("head."))
            elif mode.adapt is not None:
                mode.adapt(model, mode.options(), 0)
            return model

        return prepare

    return {name: prepare_for(mode) for name, mode in MODES.items() if not mode.needs_masks}


def _train_rate(model, params, device, batch, side, steps, repeats, bf16) -> tuple[float, float | None]:
    x = torch.randn(batch, 3, side, side, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    optimizer = torch.optim.AdamW(params, lr=1e-5) if params is not None else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step_loop():
        for _ in range(steps):
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                model.zero_grad(set_to_none=True)

    reset_peak(device)
    rate = best_rate(step_loop, steps * batch, repeats, device)
    return rate, peak_mb(device)


def bench_train(arch: str, device: torch.device, batch: int, steps: int, repeats: int, bf16: bool) -> list:
    from mergekit_clip.detector.io import create_detector

    spec = detector_spec(arch)
    side = spec.preprocess.image_size
    rows = []
    for checkpointing in (False, True):
        model = create_detector(spec, seed=0).to(device).train()
        model.set_grad_checkpointing(checkpointing)
        limit, limit_mem = _train_rate(model, None, device, batch, side, steps, repeats, bf16)
        del model
        full_rate = None
        for name, prepare in _trainable_modes().items():
            model = prepare(create_detector(spec, seed=0)).to(device).train()
            model.set_grad_checkpointing(checkpointing)
            params = [p for p in model.parameters() if p.requires_grad]
            rate, mem = _train_rate(model, params, device, batch, side, steps, repeats, bf16)
            full_rate = rate if name == "full_finetune" else full_rate
            rows.append(
                {
                    "section": "train",
                    "arch": arch,
                    "mode": name,
                    "grad_checkpointing": checkpointing,
                    "precision": "bf16-autocast" if bf16 else "fp32",
                    "batch": batch,
                    "trainable_params": sum(p.numel() for p in params),
                    "img_s": rate,
                    "peak_mb": mem,
                    "fwd_bwd_limit_img_s": limit,
                    "fwd_bwd_limit_peak_mb": limit_mem,
                    "ratio": rate / limit,
                }
            )
            del model
        for row in rows:
            if row["grad_checkpointing"] == checkpointing and full_rate:
                row["vs_full_finetune"] = row["img_s"] / full_rate
    return rows


# ---------------------------------------------------------------- merge


def _merge_methods() -> list[str]:
    """ties and task_arithmetic, plus the plugin's SVD-based methods when this checkout has them."""
    methods = ["ties", "task_arithmetic"]
    try:
        from benchmarks.merge_methods import PLAIN_METHODS
    except ImportError:
        return methods
    return methods + [m for m in PLAIN_METHODS if m not in methods]


def bench_merge(arch: str, device: torch.device, ingredients: int, root: Path, repeats: int) -> list:
    from benchmarks import merge_speed

    cuda = device.type == "cuda"
    family = merge_speed.make_detector_family(root, arch, ingredients, spec=detector_spec(arch))
    rows = []
    for method in _merge_methods():
        cfg = _recipe(method, family)
        work = root / "work" / method
        anon = {}

        def run(variant: str, cfg=cfg, work=work, anon=anon) -> Sample:
            sample, _, anon[variant], _ = merge_speed.run_variant_timed(variant, cfg, work / variant, cuda)
            return sample

        samples = interleaved({v: (lambda v=v: run(v)) for v in ("plugin", "plain")}, repeats)
        # plugin time / plain time per round
        wall = speed_ratio(samples["plain"], samples["plugin"], "wall")
        cpu = speed_ratio(samples["plain"], samples["plugin"], "cpu")
        rows.append(
            {
                "section": "merge",
                "arch": arch,
                "method": method,
                "ingredients": ingredients,
                "rounds": repeats,
                "mergekit_yaml_s": times(samples["plugin"], "wall").median,
                "plain_in_memory_s": times(samples["plain"], "wall").median,
                "ratio": wall.median,
                "ratio_range": [wall.low, wall.high],
                "ratio_cpu": cpu.rounded(3),
                "peak_anon_mb": anon["plugin"],
                "plain_peak_anon_mb": anon["plain"],
                "target": "<= 1.5",
            }
        )
    return rows


def _recipe(method: str, family: list[Path]) -> dict:
    from benchmarks import merge_speed

    if method in merge_speed.METHODS:
        return merge_speed.recipe(method, family)
    from benchmarks.merge_methods import recipe

    return recipe(method, family)


# ---------------------------------------------------------------- report


def environment(device: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def format_row(row: dict) -> str:
    if row["section"] == "eval":
        return (
            f"eval  {row['arch']:9} {row['precision']:14} batch {row['batch']:3}: "
            f"clip-eval {row['end_to_end_img_s']:8.1f} img/s, model only {row['model_only_img_s']:8.1f} img/s "
            f"-> {_spread(row)} (target >= 0.8)"
        )
    if row["section"] == "train":
        mem = "" if row["peak_mb"] is None else f", peak {row['peak_mb']:.0f} MB"
        gc = "ckpt" if row["grad_checkpointing"] else "    "
        vs = f", {row['vs_full_finetune']:.2f}x full fine-tune" if "vs_full_finetune" in row else ""
        return (
            f"train {row['arch']:9} {row['mode']:14} {gc}: {row['img_s']:8.1f} img/s{mem}, "
            f"{row['trainable_params']:>11,} trainable -> {row['ratio']:.2f}x fwd+bwd limit{vs}"
        )
    return (
        f"merge {row['arch']:9} {row['method']:16} x{row['ingredients']}: "
        f"mergekit-yaml {row['mergekit_yaml_s']:6.1f} s, "
        f"plain {row['plain_in_memory_s']:6.1f} s -> {_spread(row)} (target <= 1.5)"
    )


def _spread(row: dict) -> str:
    low, high = row["ratio_range"]
    cpu = row["ratio_cpu"]
    return f"{row['ratio']:.2f}x [{low:.2f}-{high:.2f}] wall, {cpu[0]:.2f}x [{cpu[1]:.2f}-{cpu[2]:.2f}] CPU"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@device_option()
@click.option("--archs", default=",".join(ARCHS), show_default=True, help="comma-separated open_clip ViT names")
@click.option("--sections", default=",".join(SECTIONS), show_default=True, help="comma-separated of eval,train,merge")
@click.option("--tiny", is_flag=True, help="CPU smoke size: a 2-layer 64 px ViT, few frames and steps")
@click.option("--frames", type=int, default=1024, show_default=True, help="eval frames (256 px PNG)")
@click.option("--eval-batch", type=int, default=128, show_default=True)
@click.option("--train-batch", type=int, default=32, show_default=True)
@click.option("--train-steps", type=int, default=5, show_default=True, help="timed optimisation steps per repeat")
@click.option("--workers", type=int, default=None, help="eval DataLoader workers (default: clip-eval's)")
@click.option("--ingredients", type=int, default=4, show_default=True, help="detectors per merge")
@click.option("--repeats", type=int, default=REPEATS, show_default=True,
              help="interleaved rounds (eval, merge: median [range]); train: best of N")  # fmt: skip
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="training precision: auto = bf16 autocast on CUDA, fp32 on CPU (as clip-train's key)")  # fmt: skip
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs/bench/scale"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench/scale.json"), show_default=True)
def main(device, archs, sections, tiny, frames, eval_batch, train_batch, train_steps, workers, ingredients, repeats,
         precision, root, out) -> None:  # fmt: skip
    """Print evaluation, training and merging figures at real scale, each as a ratio against its limit."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda given but torch sees no CUDA device")
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise click.BadParameter(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}", param_hint="--sections")
    arch_list = ["tiny"] if tiny else [a.strip() for a in archs.split(",") if a.strip()]
    if tiny:
        frames, eval_batch, train_batch, train_steps, ingredients, repeats = 64, 16, 8, 2, 2, 1
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    env = environment(device)
    click.echo(f"device: {env['device']} ({env['device_type']}), torch {env['torch']}, CUDA {env['cuda']}")
    rows: list[dict] = []
    out.parent.mkdir(parents=True, exist_ok=True)

    def record(new: list[dict]) -> None:
        for row in new:
            click.echo(format_row(row))
        rows.extend(new)
        out.write_text(json.dumps({"environment": env, "results": rows}, indent=1) + "\n")  # incremental

    for arch in arch_list:
        if "eval" in chosen:
            record(bench_eval(arch, device, frames, eval_batch, workers, repeats))
        if "train" in chosen:
            record(bench_train(arch, device, train_batch, train_steps, repeats, bf16))
        if "merge" in chosen:
            record(bench_merge(arch, device, ingredients, root, repeats))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
