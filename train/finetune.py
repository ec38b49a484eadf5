"""Full fine-tuning of a detector: AdamW, warm-up + cosine, clipping, accumulation, bf16 on GPU, DDP, resume.

Reproducibility: the sample order comes from ``DistributedSampler(seed, epoch)`` and the augmentation from
(seed, epoch, frame index), so the model after epoch k depends only on the state saved at epoch k-1 (model,
optimizer, scheduler, step and every rank's global RNG state). That is what makes ``--resume`` bitwise equal to
an uninterrupted run on CPU; gradients are cleared before the first step, so nothing a previous stage (the LP-FT
probe) left in ``.grad`` leaks into it. The global batch is split over ranks
and accumulation steps, so N processes take the same optimizer steps as one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from mergekit_clip.distributed import DistInfo
from train.features import autocast_context, map_frames
from train.frames import TrainFrames
from train.heldout import detector_loss, heldout_metrics
from train.metrics_log import MetricsLog
from train.optim import build_optimizer

CHECKPOINT = "checkpoint.pt"
KILL_ENV = "CLIP_TRAIN_KILL_AFTER_EPOCH"  # test hook: raise SimulatedKill once this many epochs are saved


class SimulatedKill(RuntimeError):
    """Raised by the test hook to stand in for a killed process (the epoch checkpoint is already on disk)."""


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int  # global
    grad_accum_steps: int
    warmup_fraction: float
    min_lr_ratio: float
    grad_clip: float | None
    seed: int
    workers: int = 0
    max_steps: int | None = None
    bf16: bool = False
    grad_checkpointing: bool = False
    eval_each_epoch: bool = False
    eval_batch_size: int = 64
    extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # a mode's (labels, ok) term
    batch_loss: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None  # a mode's own loss (Adaptation)


def freeze_unused(model) -> None:
    """Freeze tensors the head's feature never reads (DDP needs every trainable tensor to get a gradient)."""
    feature = model.spec.head.feature if model.spec.head is not None else "pooled"
    if feature != "projected" and model.visual.proj is not None:
        model.visual.proj.requires_grad_(False)
    if feature == "patch_mean":
        model.visual.ln_post.requires_grad_(False)


def evaluate(model, dataset: TrainFrames, *, batch_size: int, device, info: DistInfo, workers: int, bf16: bool) -> dict:
    """Held-out metrics of ``model`` on ``dataset`` (eval transform), computed over all ranks."""
    was_training = model.training
    model.eval()
    logits, ok = map_frames(
        model, dataset, batch_size=batch_size, device=device, info=info, workers=workers, bf16=bf16, desc="val"
    )
    model.train(was_training)
    labels = torch.tensor([r.label for r in dataset.records], dtype=torch.long)
    return heldout_metrics(model.fake_probability_from_logits(logits[ok]), logits[ok], labels[ok])


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def checkpoint_epoch(run_dir: Path) -> int | None:
    """The epoch saved in ``run_dir``'s checkpoint (memory-mapped: only the small fields are read), or None."""
    file = Path(run_dir) / CHECKPOINT
    if not file.exists():
        return None
    return int(load_checkpoint(file, "cpu", mmap=True)["epoch"])


class CheckpointError(ValueError):
    """A ``checkpoint.pt`` this tool cannot resume from (damaged, foreign, or a pickle payload it refuses)."""


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "step")


def load_checkpoint(file: Path, map_location, mmap: bool = False) -> dict:
    """A checkpoint ``clip-train`` wrote, loaded with ``weights_only=True`` (a pickle payload never runs); anything
    else is one :class:`CheckpointError` naming the file."""
    with open(file, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive; anything else (a bare pickle) is not read at all
        raise CheckpointError(
            f"{file}: not a checkpoint clip-train wrote (not a torch zip archive: a bare pickle is never loaded); "
            "delete it to restart this ingredient, or rerun without --resume"
        )
    try:
        state = torch.load(file, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001  (pickle, zip and torch errors alike: the file is unusable)
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{file}: not a checkpoint clip-train wrote ({type(e).__name__}: {detail}); delete it to restart this "
            "ingredient, or rerun without --resume"
        ) from e
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{file}: not a checkpoint clip-train wrote (expected keys {list(CHECKPOINT_KEYS)}, found {found}); "
            "delete it to restart this ingredient, or rerun without --resume"
        )
    return state


def _rng_states(info: DistInfo, device: torch.device) -> list[dict]:
    """Every rank's global RNG state (CPU, and CUDA on GPU): modes that draw from it (dropout) resume exactly."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    if not info.enabled:
        return [mine]
    states: list = [None] * info.world_size
    torch.distributed.all_gather_object(states, mine)
    return states


def _restore_rng(states: list[dict] | None, info: DistInfo, device: torch.device) -> None:
    if not states or len(states) != info.world_size:
        return  # a checkpoint from before RNG states were saved, or another world size
    mine = states[info.rank]
    torch.set_rng_state(mine["cpu"].cpu())
    if device.type == "cuda" and "cuda" in mine:
        torch.cuda.set_rng_state(mine["cuda"].cpu(), device)


# long: the epoch loop keeps model, optimizer, scheduler, scaler, step and RNG in one frame so that a resumed run
# is bitwise the uninterrupted one (tests/test_train_resume.py); pieces of it would pass all of them around
def finetune(
    model,
    train_set: TrainFrames,
    settings: FinetuneSettings,
    *,
    run_dir: Path,
    device: torch.device,
    info: DistInfo,
    log: MetricsLog,
    name: str,
    resume: bool = False,
    val_set: TrainFrames | None = None,
) -> dict:
    """Fine-tune ``model`` in place; returns {"steps", "images_per_s", "resumed_from_epoch"}."""
    world = info.world_size
    micro = settings.batch_size // (world * settings.grad_accum_steps)
    if micro < 1 or settings.batch_size % (world * settings.grad_accum_steps):
        raise ValueError(
            f"data.batch_size {settings.batch_size} must be a multiple of world size {world} x "
            f"optim.grad_accum_steps {settings.grad_accum_steps}"
        )
    freeze_unused(model)
    model.set_grad_checkpointing(settings.grad_checkpointing)
    model.to(device).train()
    sampler = DistributedSampler(train_set, num_replicas=world, rank=info.rank, shuffle=True, seed=settings.seed)
    loader = DataLoader(
        train_set,
        batch_size=micro,
        sampler=sampler,
        num_workers=settings.workers,
        pin_memory=device.type == "cuda",
    )
    micro_per_epoch = len(loader)
    steps_per_epoch = math.ceil(micro_per_epoch / settings.grad_accum_steps)
    total_steps = settings.epochs * steps_per_epoch
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(
        model, settings.lr, settings.weight_decay, total_steps, settings.warmup_fraction, settings.min_lr_ratio
    )
    ckpt_file = run_dir / CHECKPOINT
    start_epoch, step = 0, 0
    if resume and ckpt_file.exists():
        state = load_checkpoint(ckpt_file, device)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, step = int(state["epoch"]), int(state["step"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            detail = str(e).strip().splitlines()[0][:200]
            raise CheckpointError(f"{ckpt_file}: does not fit this run ({detail}); delete it to restart this "
                                  "ingredient, or rerun without --resume") from e  # fmt: skip
        _restore_rng(state.get("rng"), info, device)
    ddp = DistributedDataParallel(model) if info.enabled else model
    optimizer.zero_grad(set_to_none=True)
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    images_seen, t0 = 0, time.perf_counter()
    for epoch in range(start_epoch, settings.epochs):
        if step >= total_steps:
            break
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        running, counted = 0.0, 0
        step_running, step_counted = 0.0, 0  # this optimiser step's micro-batches: the per-step log line
        bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{settings.epochs}", disable=not info.is_main, leave=False)
        for i, (images, labels, _, ok, *masks) in enumerate(bar):  # masks: modes that need them (TrainFrames)
            group_start = (i // settings.grad_accum_steps) * settings.grad_accum_steps
            group_size = min(settings.grad_accum_steps, micro_per_epoch - group_start)
            last_of_group = i - group_start == group_size - 1
            images, labels, ok = images.to(device), labels.to(device), ok.to(device)
            sync = contextlib.nullcontext() if (last_of_group or not info.enabled) else ddp.no_sync()
            with sync:
                if settings.batch_loss is not None:  # the mode's own loss (ForensicsAdapter: CE + masks' terms)
                    mask = masks[0].to(device) if masks else None
                    # its random draws: seeded by (seed, epoch, micro-batch, rank), so --resume replays them
                    draws = torch.Generator().manual_seed(
                        (settings.seed * 1_000_003 + epoch * 100_003 + i * 101 + info.rank) % (2**63 - 1)
                    )
                    with autocast_context(device, settings.bf16):
                        per_sample, loss = settings.batch_loss(ddp, images, labels, ok, mask, draws)
                    per_sample, loss = per_sample.detach() * ok.float(), loss / group_size
                else:
                    with autocast_context(device, settings.bf16):
                        logits = ddp(images)
                    per_sample = detector_loss(logits, labels) * ok.float()
                    loss = per_sample.sum() / max(1, labels.numel()) / group_size
                if settings.extra_loss is not None:  # e.g. alignment/uniformity, Effort's orthogonality
                    loss = loss + settings.extra_loss(labels, ok) / group_size
                loss.backward()
            running += float(per_sample.detach().sum())
            counted += int(ok.sum())
            step_running += float(per_sample.detach().sum())
            step_counted += int(ok.sum())
            images_seen += labels.numel() * world
            if not last_of_group:
                continue
            if settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
            step_lr = optimizer.param_groups[0]["lr"]  # the rate this step used, before the schedule moves on
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            log.write({"ingredient": name, "stage": "step", "epoch": epoch + 1, "step": step,
                       "loss": step_running / max(1, step_counted), "lr": step_lr})  # fmt: skip
            step_running, step_counted = 0.0, 0
            if info.is_main:
                bar.set_postfix(loss=f"{running / max(1, counted):.4f}")
            if step >= total_steps:
                break
        elapsed = time.perf_counter() - t0
        record = {
            "ingredient": name,
            "stage": "finetune",
            "epoch": epoch + 1,
            "step": step,
            "loss": running / max(1, counted),
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": images_seen / max(elapsed, 1e-9),
        }
        if settings.eval_each_epoch and val_set is not None:
            val = evaluate(
                model,
                val_set,
                batch_size=settings.eval_batch_size,
                device=device,
                info=info,
                workers=settings.workers,
                bf16=settings.bf16,
            )
            record.update({f"val_{k}": v for k, v in val.items()})
        log.write(record)  # a kill before the checkpoint below: --resume drops this line and redoes the epoch
        rng = _rng_states(info, device)
        if info.is_main:
            _save_checkpoint(
                ckpt_file,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "rng": rng,
                },
            )
        info.barrier()
        if kill_after and epoch + 1 == kill_after:
            raise SimulatedKill(f"{KILL_ENV}={kill_after}: stopping {name} after epoch {epoch + 1}")
    elapsed = time.perf_counter() - t0
    model.eval()
    return {"steps": step, "images_per_s": images_seen / max(elapsed, 1e-9), "resumed_from_epoch": start_epoch}
