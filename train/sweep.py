"""Run a family of ingredients: preflight, the shared base, one detector per sweep point, the summary.

Layout of ``OUT`` (the interface ``mergekit-yaml`` and ``clip-eval soup`` rely on)::

    OUT/config.resolved.yaml    the validated configuration, defaults filled in
    OUT/base/                   pretrained backbone + the shared head initialisation (a detector dir)
    OUT/ingredients/<name>/     one detector dir per sweep point, provenance with held-out scores
    OUT/metrics.jsonl           epoch records and held-out scores
    OUT/summary.json            the ingredients with their held-out scores
    OUT/runs/<name>/            epoch checkpoints of the ingredient in progress (removed once it is saved)
    OUT/cache/                  cached frozen-backbone features (keyed by weights, frames and transform)

Every check that can fail on bad input (config, datasets, splits, weights, output folder) runs before training.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from mergekit_clip.data.deepfakebench import FrameRecord
from mergekit_clip.data.transforms import build_eval_transform, build_train_transform
from mergekit_clip.detector.io import save_detector
from mergekit_clip.distributed import DistInfo, env_is_main, env_world_size, init_distributed
from train.backbone import build_base, resolve_spec
from train.config import ConfigError, IngredientPlan, TrainConfig, dump_config
from train.features import backbone_fingerprint, cached_features
from train.finetune import FinetuneSettings, evaluate, finetune
from train.frames import TrainFrames, check_frames, load_records, require_frames
from train.heldout import heldout_metrics
from train.lpft import probe_head
from train.metrics_log import MetricsLog
from train.modes import get_mode
from train.modes.adaptation import save_ingredient
from train.probe import logits_from_features

FACTORS_KEY = "_adapter_factors"  # train_ingredient -> run_sweep: the trained factors, saved beside the detector
RUN_FILES = ("config.resolved.yaml", "base", "ingredients", "runs", "metrics.jsonl", "summary.json")


class RunExistsError(ValueError):
    """The output folder already holds a run and neither --resume nor --overwrite was given."""


@dataclass
class RunContext:
    config: TrainConfig
    out: Path
    device: torch.device
    info: DistInfo
    bf16: bool
    log: MetricsLog
    base: torch.nn.Module
    base_key: str
    resume: bool
    records: dict[tuple[tuple[str, ...], str], list[FrameRecord]] = field(default_factory=dict)

    @property
    def cache_dir(self) -> Path:
        return self.config.cache_dir or self.out / "cache"


def resolve_device(config: TrainConfig, info: DistInfo) -> torch.device:
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available")
    return torch.device("cuda", info.local_rank)


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def check_output(config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse an output folder that holds a run unless resuming (same config) or overwriting."""
    out = config.output
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present:
        return
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if overwrite:
        return
    if not resume:
        raise RunExistsError(
            f"{out} already holds a run ({', '.join(present)}): pass --resume to continue it or --overwrite to "
            "replace it"
        )
    saved_file = out / "config.resolved.yaml"
    if not saved_file.exists():
        return
    saved = yaml.safe_load(saved_file.read_text())
    current = config.model_dump(mode="json")
    changed = sorted(_diff(saved, current))
    if changed:
        raise ConfigError(
            f"--resume: the configuration differs from {saved_file} at {', '.join(changed[:8])}; "
            "use --overwrite to start again"
        )


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def preflight(config: TrainConfig, plans: list[IngredientPlan]) -> dict:
    """Load every split the sweep needs (raises DatasetError naming dataset/split) and check batch sizes."""
    records = {}
    for plan in plans:
        key = tuple(plan.datasets)
        for split in (config.data.train_split, config.data.val_split):
            if (key, split) not in records:
                records[(key, split)] = load_records(config.data, key, split)
    _check_frames(config, records)
    world = env_world_size()
    unit = world * config.optim.grad_accum_steps
    if config.data.batch_size % unit:
        raise ConfigError(
            f"data.batch_size {config.data.batch_size} must be a multiple of world size {world} x "
            f"optim.grad_accum_steps {config.optim.grad_accum_steps}"
        )
    return records


def _check_frames(config: TrainConfig, records: dict) -> None:
    """Every training/val frame exists and reads (``data.check_images``) before any output folder is made."""
    d = config.data
    for (datasets, split), recs in records.items():
        what = f" (in {'+'.join(datasets)} {split})"
        if d.on_error == "raise":
            require_frames(recs, d.check_images, what=what)
            continue
        problems = check_frames(recs, d.check_images, what=what)
        if problems and env_is_main():
            print(f"warning: {len(problems)} bad frame(s){what} will be skipped (data.on_error=skip), e.g. "
                  f"{problems[0]}", file=sys.stderr)  # fmt: skip


def _frames(ctx: RunContext, plan: IngredientPlan, split: str, augment: float) -> TrainFrames:
    preprocess = ctx.base.spec.preprocess
    transform = build_train_transform(preprocess, strength=augment) if augment > 0 else build_eval_transform(preprocess)
    return TrainFrames(
        ctx.records[(tuple(plan.datasets), split)],
        transform,
        preprocess.image_size,
        seed=plan.seed,
        cache_images=ctx.config.data.cache_images,
        on_error=ctx.config.data.on_error,
        augment=augment > 0,
    )


def _features(ctx: RunContext, dataset: TrainFrames):
    d = ctx.config.data
    return cached_features(
        ctx.base, dataset, backbone_key=ctx.base_key, cache_dir=ctx.cache_dir, batch_size=d.eval_batch_size,
        device=ctx.device, info=ctx.info, workers=d.workers, bf16=ctx.bf16,
    )  # fmt: skip


def _finetune_settings(ctx: RunContext, plan: IngredientPlan) -> FinetuneSettings:
    c = ctx.config
    return FinetuneSettings(
        epochs=c.optim.epochs, lr=plan.lr, weight_decay=plan.weight_decay, batch_size=c.data.batch_size,
        grad_accum_steps=c.optim.grad_accum_steps, warmup_fraction=c.optim.warmup_fraction,
        min_lr_ratio=c.optim.min_lr_ratio, grad_clip=c.optim.grad_clip, seed=plan.seed, workers=c.data.workers,
        max_steps=c.max_steps, bf16=ctx.bf16, grad_checkpointing=c.backbone.grad_checkpointing,
        eval_each_epoch=c.optim.eval_each_epoch, eval_batch_size=c.data.eval_batch_size,
    )  # fmt: skip


def train_ingredient(ctx: RunContext, plan: IngredientPlan) -> tuple[torch.nn.Module, dict, dict]:
    """Train one sweep point; returns (model, held-out metrics, extra provenance)."""
    c = ctx.config
    mode = get_mode(plan.mode)
    model = copy.deepcopy(ctx.base).to(ctx.device)
    adaptation = mode.adapt(model, c.options_of(plan.mode), plan.seed)  # what trains (train/modes/)
    val_eval = _frames(ctx, plan, c.data.val_split, 0.0)
    extra: dict = dict(adaptation.provenance)
    if mode.probe_first:
        train_eval = _frames(ctx, plan, c.data.train_split, 0.0)
        features, labels, ok, hit = _features(ctx, train_eval)
        extra["feature_cache_hit"] = hit
        probe_head(model, features, labels, ok, c, plan, ctx.log)
    if not mode.fine_tunes:
        val_feats, val_labels, val_ok, _ = _features(ctx, val_eval)
        logits = logits_from_features(model, val_feats[val_ok])
        metrics = heldout_metrics(model.fake_probability_from_logits(logits), logits, val_labels[val_ok])
        extra["probe_epochs"] = c.optim.probe_epochs
        return model.eval(), metrics, extra
    run_dir = ctx.out / "runs" / plan.name
    if ctx.info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ctx.info.barrier()
    stats = finetune(
        model, _frames(ctx, plan, c.data.train_split, plan.augment_strength),
        dataclasses.replace(_finetune_settings(ctx, plan), extra_loss=adaptation.extra_loss), run_dir=run_dir, device=ctx.device, info=ctx.info, log=ctx.log, name=plan.name, resume=ctx.resume,
        val_set=val_eval,
    )  # fmt: skip
    extra[FACTORS_KEY] = adaptation.fold(model)  # dense weights from here on: evaluated and saved as such
    metrics = evaluate(
        model, val_eval, batch_size=c.data.eval_batch_size, device=ctx.device, info=ctx.info,
        workers=c.data.workers, bf16=ctx.bf16,
    )  # fmt: skip
    extra.update({"epochs": c.optim.epochs, "steps": stats["steps"], "images_per_s": round(stats["images_per_s"], 1)})
    if stats["resumed_from_epoch"]:
        extra["resumed_from_epoch"] = stats["resumed_from_epoch"]
    return model, metrics, extra


def _dataset_label(dataset: str | list[str]) -> str:
    return dataset if isinstance(dataset, str) else "+".join(dataset)


def run_sweep(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> list[dict]:
    """Train the whole family; returns the summary rows (also written to ``OUT/summary.json``)."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    info = init_distributed("cuda" if config.device == "cuda" else "cpu")
    device = resolve_device(config, info)
    plans = config.ingredients()
    check_output(config, resume, overwrite)
    records = preflight(config, plans)
    spec = resolve_spec(config)
    base = build_base(config, spec)
    out = config.output.absolute()
    if overwrite and info.is_main:
        for name in RUN_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    info.barrier()
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    ctx = RunContext(
        config=config, out=out, device=device, info=info, bf16=bf16 and device.type == "cuda",
        log=MetricsLog(out / "metrics.jsonl", enabled=info.is_main), base=base.to(device).eval(),
        base_key=backbone_fingerprint(base), resume=resume, records=records,
    )  # fmt: skip
    if info.is_main:
        (out / "ingredients").mkdir(parents=True, exist_ok=True)
        _write_text_atomic(out / "config.resolved.yaml", dump_config(config))
        if not (out / "base").exists():
            provenance = {
                "role": "base",
                "recipe": "clip-train",
                "pretrained": str(config.backbone.pretrained) if config.backbone.pretrained else None,
                "head_init_seed": config.head.init_seed,
            }
            save_detector(base, out / "base", provenance=provenance)
    info.barrier()
    rows = []
    for plan in plans:
        target = out / "ingredients" / plan.name
        if target.exists():  # finished before the run was interrupted
            rows.append(_summary_row(plan, target, json.loads((target / "config.json").read_text())["provenance"]))
            continue
        t0 = time.perf_counter()
        model, metrics, extra = train_ingredient(ctx, plan)
        factors = extra.pop(FACTORS_KEY, None)
        heldout = {"dataset": _dataset_label(plan.train_dataset), "split": config.data.val_split, **metrics}
        provenance = {
            "recipe": "clip-train",
            "mode": plan.mode,
            "seed": plan.seed,
            "lr": plan.lr,
            "weight_decay": plan.weight_decay,
            "augment_strength": plan.augment_strength,
            "train_dataset": plan.train_dataset,
            "base": str(out / "base"),
            "pretrained": str(config.backbone.pretrained) if config.backbone.pretrained else None,
            "heldout": heldout,
            "train_seconds": round(time.perf_counter() - t0, 2),
            "world_size": info.world_size,
            **extra,
        }
        if info.is_main:
            save_ingredient(model.cpu(), target, provenance=provenance, factors=factors)
            shutil.rmtree(out / "runs" / plan.name, ignore_errors=True)
        ctx.log.write({"ingredient": plan.name, "stage": "heldout", **heldout})
        info.barrier()
        rows.append(_summary_row(plan, target, provenance))
    if info.is_main:
        _write_text_atomic(out / "summary.json", json.dumps(rows, indent=2) + "\n")
        runs = out / "runs"
        if runs.exists() and not any(runs.iterdir()):
            runs.rmdir()
    info.barrier()
    return rows


def _summary_row(plan: IngredientPlan, path: Path, provenance: dict) -> dict:
    return {
        "name": plan.name,
        "path": str(path),
        **{k: provenance.get(k) for k in ("mode", "seed", "lr", "weight_decay", "augment_strength", "train_dataset")},
        "heldout": provenance.get("heldout"),
    }
