"""Run a family of ingredients: preflight, the shared base, one detector per sweep point, the summary.

Layout of ``OUT`` (the interface ``mergekit-yaml`` and ``clip-eval soup`` rely on)::

    OUT/config.resolved.yaml    the validated configuration, defaults filled in
    OUT/base/                   pretrained backbone + the shared head initialisation (a detector dir)
    OUT/ingredients/<name>/     one detector dir per sweep point, provenance with held-out scores
    OUT/metrics.jsonl           epoch records and held-out scores
    OUT/summary.json            the ingredients with their held-out scores
    OUT/run_inputs.json         sha256 of the resolved config and of every dataset file the run reads
    OUT/runs/<name>/            epoch checkpoints of the ingredient in progress (removed once it is saved)
    OUT/cache/                  cached frozen-backbone features (keyed by weights, frames and transform)

Every check that can fail on bad input (config, datasets, splits, weights, output folder) runs before training.

Nothing lost: a run is built in the hidden sibling ``.OUT.tmp-<host>-<pid>`` (:mod:`mergekit_clip.outputs`) and
swapped into ``OUT`` only when every ingredient and the summary are written, so ``--overwrite`` keeps the previous
run until the new one is complete. A run that fails before it saved any epoch removes its folder; one that is
killed (or fails later) leaves it for ``--resume``, which continues in it and swaps at the end; ``--overwrite``
discards it, and a plain run refuses, naming it. ``--resume`` of a run in ``OUT`` itself continues in place.
``--resume`` refuses a changed configuration or a changed dataset file, in any format (``run_inputs.json``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from mergekit_clip import outputs
from mergekit_clip.data.deepfakebench import FrameRecord
from mergekit_clip.data.formats import dataset_identity
from mergekit_clip.data.masks import require_masks
from mergekit_clip.data.transforms import build_eval_transform, build_train_transform
from mergekit_clip.detector.io import save_detector
from mergekit_clip.distributed import DistInfo, env_is_main, env_world_size, init_distributed
from mergekit_clip.tracking import open_trackers
from train.backbone import build_base, resolve_spec
from train.config import ConfigError, IngredientPlan, TrainConfig, dump_config
from train.features import backbone_fingerprint, cached_features
from train.finetune import CHECKPOINT, FinetuneSettings, SimulatedKill, checkpoint_epoch, evaluate, finetune
from train.frames import TrainFrames, check_frames, load_records, require_frames
from train.heldout import heldout_metrics
from train.lpft import probe_head
from train.metrics_log import MetricsLog
from train.modes import get_mode
from train.modes.adaptation import save_ingredient
from train.probe import logits_from_features

FACTORS_KEY = "_adapter_factors"  # train_ingredient -> run_sweep: the trained factors, saved beside the detector
RUN_FILES = ("config.resolved.yaml", "base", "ingredients", "runs", "metrics.jsonl", "summary.json", "run_inputs.json")
INPUTS_FILE = "run_inputs.json"


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


def _holds_run(folder: Path) -> list[str]:
    return [name for name in RUN_FILES if (folder / name).exists()]


def _has_progress(folder: Path) -> bool:
    """True once something worth resuming is on disk: a saved ingredient or an epoch checkpoint."""
    ingredients = folder / "ingredients"
    if ingredients.is_dir() and any(ingredients.iterdir()):
        return True
    return any((folder / "runs").glob(f"*/{CHECKPOINT}"))


def _progress_note(folder: Path) -> str:
    done = sorted(p.name for p in (folder / "ingredients").glob("*") if p.is_dir())
    running = sorted(p.parent.name for p in (folder / "runs").glob(f"*/{CHECKPOINT}"))
    parts = [f"finished: {', '.join(done)}" if done else "no ingredient finished"]
    if running:
        parts.append(f"checkpointed: {', '.join(running)}")
    return "; ".join(parts)


def _check_same_config(config: TrainConfig, folder: Path) -> None:
    saved_file = folder / "config.resolved.yaml"
    if not saved_file.exists():
        return
    saved = yaml.safe_load(saved_file.read_text())
    changed = sorted(_diff(saved, config.model_dump(mode="json")))
    if changed:
        raise ConfigError(
            f"--resume: the configuration differs from {saved_file} at {', '.join(changed[:8])}; "
            "use --overwrite to start again"
        )


@dataclass(frozen=True)
class WorkFolder:
    """Where this run writes: ``path`` (None = a new temporary sibling, made once preflight passed)."""

    path: Path | None
    in_place: bool  # True: resuming a run in OUT itself, nothing to swap at the end


def choose_work_folder(config: TrainConfig, resume: bool, overwrite: bool) -> WorkFolder:
    """Decide where the run goes; refuse an output that holds a run (or a killed run's folder) without a flag."""
    out = config.output.absolute()
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    stale = [p for p in outputs.stale_siblings(out) if p.name.startswith(f".{out.name}.{outputs.TEMP}-")]
    killed = sorted((p for p in stale if (p / "config.resolved.yaml").exists() and _has_progress(p)),
                    key=lambda p: (p / "config.resolved.yaml").stat().st_mtime)  # fmt: skip
    present = _holds_run(out) if out.is_dir() else []
    if overwrite:
        return WorkFolder(None, in_place=False)
    if resume:
        if killed:
            _check_same_config(config, killed[-1])
            return WorkFolder(killed[-1], in_place=False)
        if present:
            _check_same_config(config, out)
            return WorkFolder(out, in_place=True)
    elif present:
        raise RunExistsError(
            f"{out} already holds a run ({', '.join(present)}): pass --resume to continue it or --overwrite to "
            "replace it"
        )
    elif killed:
        raise RunExistsError(
            f"{out}: a killed run left {killed[-1]} ({_progress_note(killed[-1])}): pass --resume to continue it "
            "or --overwrite to discard it"
        )
    if os.path.lexists(out) and not (out.is_dir() and not any(out.iterdir())):
        raise RunExistsError(
            f"{out} exists and is not a clip-train run folder: choose another output or pass --overwrite to replace it"
        )
    return WorkFolder(None, in_place=False)


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def run_inputs(config: TrainConfig, plans: list[IngredientPlan]) -> dict:
    """sha256 of the resolved config and of each file the sweep's datasets are read from, whichever format holds
    them (``OUT/run_inputs.json``)."""
    names = sorted({name for plan in plans for name in plan.datasets})
    files = {f: sha for name in names for f, sha in dataset_identity(name, config.data.json_root).files.items()}
    return {
        "config_sha256": hashlib.sha256(dump_config(config).encode()).hexdigest(),
        "dataset_sha256": dict(sorted(files.items())),
    }


def check_same_inputs(inputs: dict, folder: Path) -> None:
    """Refuse to resume a run whose dataset files (or resolved config) changed since it started."""
    file = folder / INPUTS_FILE
    if not file.exists():
        return  # a run from before the inputs were recorded: the config check above is all there is
    saved = json.loads(file.read_text())
    # runs started before the record covered every format named it dataset_json_sha256
    old, new = saved.get("dataset_sha256", saved.get("dataset_json_sha256", {})), inputs["dataset_sha256"]
    changed = [f"{f} (sha256 {old.get(f, 'absent')[:12]} at the start, {new.get(f, 'absent')[:12]} now)"
               for f in sorted(set(old) | set(new)) if old.get(f) != new.get(f)]  # fmt: skip
    if changed:
        raise ConfigError(
            f"--resume: the training data changed since the run in {folder} started: {'; '.join(changed)}; "
            "use --overwrite to start again"
        )
    if saved.get("config_sha256") != inputs["config_sha256"]:
        raise ConfigError(
            f"--resume: the resolved configuration changed since the run in {folder} started (sha256 "
            f"{saved.get('config_sha256', '')[:12]} then, {inputs['config_sha256'][:12]} now); "
            "use --overwrite to start again"
        )


def preflight(config: TrainConfig, plans: list[IngredientPlan]) -> dict:
    """Load every split the sweep needs (raises DatasetError naming dataset/split) and check batch sizes."""
    records = {}
    for plan in plans:
        key = tuple(plan.datasets)
        for split in (config.data.train_split, config.data.val_split):
            if (key, split) not in records:
                records[(key, split)] = load_records(config.data, key, split)
    _check_frames(config, records)
    for plan in plans:  # a mode trained on forgery masks refuses fake frames without one, counting them
        if get_mode(plan.mode).needs_masks:
            key = (tuple(plan.datasets), config.data.train_split)
            require_masks(records[key], what=f"{'+'.join(key[0])} {key[1]}", needed_by=f"mode {plan.mode}")
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


def _frames(ctx: RunContext, plan: IngredientPlan, split: str, augment: float, masks: bool = False) -> TrainFrames:
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
        masks=masks,
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
    run_dir = ctx.out / "runs" / plan.name
    resuming = ctx.resume and (run_dir / CHECKPOINT).exists()  # the checkpoint already holds the probed head
    if mode.probe_first and not resuming:
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
    if ctx.info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ctx.info.barrier()
    stats = finetune(
        model, _frames(ctx, plan, c.data.train_split, plan.augment_strength, masks=mode.needs_masks),
        dataclasses.replace(_finetune_settings(ctx, plan), extra_loss=adaptation.extra_loss,
                            batch_loss=adaptation.batch_loss),
        run_dir=run_dir, device=ctx.device, info=ctx.info, log=ctx.log, name=plan.name, resume=ctx.resume,
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
    final = config.output.absolute()
    decided = _on_main(info, lambda: choose_work_folder(config, resume, overwrite))
    records = preflight(config, plans)
    inputs = run_inputs(config, plans)
    if decided.path is not None and resume:
        check_same_inputs(inputs, decided.path)
    spec = resolve_spec(config)
    base = build_base(config, spec)
    work = decided.path or _on_main(info, lambda: outputs.make_temp_dir(final))
    try:
        rows = _run_in(config, plans, records, inputs, info, device, base, work, final, decided.path is not None)
        if info.is_main and not decided.in_place:
            outputs.swap_into_place(work, final)
        info.barrier()
    except BaseException as e:
        if info.is_main and not decided.in_place:
            _after_failure(work, final, e)
        raise
    return rows


def _on_main(info: DistInfo, decide):
    """Rank 0's decision (or its refusal, raised on every rank) shared with all ranks."""
    if not info.enabled:
        return decide()
    outcome = None
    if info.is_main:
        try:
            outcome = ("ok", decide())
        except (ConfigError, RunExistsError) as e:
            outcome = ("error", e)
    kind, value = info.broadcast(outcome)
    if kind == "error":
        raise value
    return value


def _after_failure(work: Path, final: Path, error: BaseException) -> None:
    """Remove a failed run's folder unless it holds resumable work; say where that work is."""
    if not work.exists():
        return
    if not isinstance(error, (KeyboardInterrupt, SimulatedKill)) and not _has_progress(work):
        outputs.remove_tree(work)
        return
    outputs.release(work)  # left for --resume, exactly as a killed process leaves it
    print(
        f"clip-train: the unfinished run is kept in {work} ({_progress_note(work)}); {final} is untouched. "
        "Pass --resume to continue it or --overwrite to discard it.",
        file=sys.stderr,
    )


def _run_in(config, plans, records, inputs, info, device, base, out: Path, final: Path, resume: bool) -> list[dict]:
    """Train every ingredient into ``out``; provenance and the summary name paths under ``final``."""
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    trackers = open_trackers(config.tracking, out, experiment=final.name, enabled=info.is_main)
    ctx = RunContext(
        config=config, out=out, device=device, info=info, bf16=bf16 and device.type == "cuda",
        log=MetricsLog(out / "metrics.jsonl", enabled=info.is_main, trackers=trackers), base=base.to(device).eval(),
        base_key=backbone_fingerprint(base), resume=resume, records=records,
    )  # fmt: skip
    try:
        return _train_plans(ctx, plans, inputs, final)
    finally:
        ctx.log.close()  # event files complete before the run folder is moved into place


def _train_plans(ctx: RunContext, plans: list[IngredientPlan], inputs: dict, final: Path) -> list[dict]:
    config, info, out, resume, base = ctx.config, ctx.info, ctx.out, ctx.resume, ctx.base
    if info.is_main:
        (out / "ingredients").mkdir(parents=True, exist_ok=True)
        outputs.write_text_atomic(out / "config.resolved.yaml", dump_config(config))
        outputs.write_text_atomic(out / INPUTS_FILE, json.dumps(inputs, indent=2) + "\n")
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
            provenance = json.loads((target / "config.json").read_text())["provenance"]
            rows.append(_summary_row(plan, final / "ingredients" / plan.name, provenance))
            continue
        if resume and info.is_main:  # drop the lines this resume redoes: the log reads as if never killed
            ctx.log.rewind(plan.name, checkpoint_epoch(out / "runs" / plan.name))
        if ctx.log.trackers:
            plan_text = yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False)
            ctx.log.trackers.text(plan.name, "ingredient", plan_text)
            ctx.log.trackers.text(plan.name, "config", dump_config(config))
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
            "base": str(final / "base"),
            "pretrained": str(config.backbone.pretrained) if config.backbone.pretrained else None,
            "heldout": heldout,
            "train_seconds": round(time.perf_counter() - t0, 2),
            "world_size": info.world_size,
            **extra,
        }
        ctx.log.write({"ingredient": plan.name, "stage": "heldout", **heldout})  # before the save: see rewind
        if info.is_main:
            save_ingredient(model.cpu(), target, provenance=provenance, factors=factors)
            shutil.rmtree(out / "runs" / plan.name, ignore_errors=True)
        info.barrier()
        rows.append(_summary_row(plan, final / "ingredients" / plan.name, provenance))
    if info.is_main:
        outputs.write_text_atomic(out / "summary.json", json.dumps(rows, indent=2) + "\n")
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


# ---------------------------------------------------------------- one ingredient per job (clip-study --executor)


def run_sweep_part(config: TrainConfig, name: str, part: Path) -> dict:
    """Train the one sweep point ``name`` into the folder ``part`` (base/, ingredients/<name>/, metrics.jsonl,
    summary.json with its one row); provenance and the row name paths under ``config.output``, as :func:`run_sweep`
    writes them. A killed part resumes from its epoch checkpoint. :func:`assemble_parts` makes the family."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    plans = [p for p in config.ingredients() if p.name == name]
    if not plans:
        raise ConfigError(f"ingredient {name!r}: the sweep has {[p.name for p in config.ingredients()]}")
    info = init_distributed("cuda" if config.device == "cuda" else "cpu")
    device = resolve_device(config, info)
    records = preflight(config, plans)
    base = build_base(config, resolve_spec(config))
    part = Path(part).absolute()
    resume = (part / "runs" / name).exists()
    rows = _run_in(config, plans, records, run_inputs(config, plans), info, device, base, part,
                   config.output.absolute(), resume)  # fmt: skip
    return rows[0]


def assemble_parts(config: TrainConfig, parts: dict[str, Path]) -> None:
    """The family folder from finished parts (ingredient name -> part folder), exactly as :func:`run_sweep`
    lays it out (ingredients and metrics in sweep order); built beside ``config.output`` and swapped in."""
    plans = config.ingredients()
    missing = [p.name for p in plans if not (Path(parts.get(p.name, "/nonexistent")) / "summary.json").exists()]
    if missing:
        raise ConfigError(f"{config.output}: ingredients not trained yet: {', '.join(missing)}")
    final = config.output.absolute()
    work = outputs.make_temp_dir(final)
    try:
        shutil.copytree(Path(parts[plans[0].name]) / "base", work / "base")
        (work / "ingredients").mkdir()
        rows, lines = [], []
        for plan in plans:
            part = Path(parts[plan.name])
            shutil.copytree(part / "ingredients" / plan.name, work / "ingredients" / plan.name)
            rows += json.loads((part / "summary.json").read_text())
            if (part / "metrics.jsonl").exists():
                lines += (part / "metrics.jsonl").read_text().splitlines(keepends=True)
            for extra in part.iterdir():  # what the trackers wrote (TensorBoard event files), merged
                if extra.is_dir() and extra.name not in ("base", "ingredients", "runs", "cache"):
                    shutil.copytree(extra, work / extra.name, dirs_exist_ok=True)
        (work / "metrics.jsonl").write_text("".join(lines))
        outputs.write_text_atomic(work / "config.resolved.yaml", dump_config(config))
        outputs.write_text_atomic(work / INPUTS_FILE, json.dumps(run_inputs(config, plans), indent=2) + "\n")
        outputs.write_text_atomic(work / "summary.json", json.dumps(rows, indent=2) + "\n")
        outputs.swap_into_place(work, final)
    except BaseException:
        outputs.remove_tree(work)
        raise
