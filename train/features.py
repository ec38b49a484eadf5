"""Frozen-backbone features, computed once and cached on disk for linear probing.

A cache entry is ``<cache_dir>/<key>.safetensors`` (its sha256 beside it, checked before reuse) holding ``features``
(N, D) float32, ``labels`` (N,) and ``ok`` (N,) (False for a skipped undecodable frame). The key hashes everything
the features depend on: the visual tower's weights, the head's feature kind, the frame list (paths, labels, sizes,
mtimes) and the eval transform's preprocessing. A changed frame, weight or preprocessing therefore misses, never
returns stale features. Under torchrun every rank computes a stride of the frames and the rows are gathered; rank 0
writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from mergekit_clip.data.deepfakebench import FrameRecord
from mergekit_clip.distributed import DistInfo
from mergekit_clip.integrity import distrust, read_verified, save_verified
from train.frames import TrainFrames, records_fingerprint


def backbone_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the visual tower's tensors (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.visual.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_key(backbone_key: str, feature_kind: str, records: Sequence[FrameRecord], preprocess: dict) -> str:
    payload = json.dumps(
        {
            "backbone": backbone_key,
            "feature": feature_kind,
            "frames": records_fingerprint(records),
            "preprocess": preprocess,
            "transform": "eval",
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def autocast_context(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def map_frames(
    fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: TrainFrames,
    *,
    batch_size: int,
    device: torch.device,
    info: DistInfo,
    workers: int = 0,
    bf16: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(images)`` over every frame (sharded over ranks, gathered): returns (outputs float32, ok mask)."""
    total = len(dataset)
    indices = info.shard(total)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=workers)
    outputs, oks = [], []
    bar = tqdm(loader, desc=desc, unit="batch", disable=not info.is_main or len(loader) < 4, leave=False)
    for images, _, _, ok in bar:
        with autocast_context(device, bf16):
            out = fn(images.to(device, non_blocking=True))
        outputs.append(out.float().cpu())
        oks.append(ok.bool())
    if outputs:
        rows = torch.cat(outputs)
        ok = torch.cat(oks)
    else:  # a rank with no frames still joins the gather with the right row shape
        with autocast_context(device, bf16):
            probe = fn(torch.zeros(1, 3, dataset.image_size, dataset.image_size, device=device))
        rows = probe.float().cpu()[:0]
        ok = torch.zeros(0, dtype=torch.bool)
    rows = info.gather_rows(rows, total)
    ok = info.gather_rows(ok.to(torch.uint8), total).bool()
    return rows, ok


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Temp file + rename, with the file's sha256 recorded beside it (checked on reuse)."""
    save_verified(lambda tmp: save_file(tensors, str(tmp), metadata=metadata), path)


def _read_entry(file: Path, rows: int) -> dict[str, torch.Tensor] | None:
    """The cached tensors if the file matches its recorded digest and holds ``rows`` frames; otherwise the entry
    is removed with one warning naming it (and computed again)."""
    data, reason = read_verified(file)
    if reason is None:
        try:
            stored = load(data)
            if {"features", "labels", "ok"} <= stored.keys() and stored["features"].shape[0] == rows:
                return stored
            reason = f"does not hold {rows} frames' features, labels and ok flags"
        except (SafetensorError, ValueError) as e:
            reason = f"is not a readable safetensors file ({e})"
    distrust(file, reason, what="features cache entry")
    return None


def cached_features(
    model,
    dataset: TrainFrames,
    *,
    backbone_key: str,
    cache_dir: Path | None,
    batch_size: int,
    device: torch.device,
    info: DistInfo,
    workers: int = 0,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """(features, labels, ok, hit): read from the cache or compute with the frozen backbone and store.

    ``dataset`` must use the eval transform (``augment=False``): a linear probe on a frozen backbone sees
    each frame's single deterministic view.
    """
    feature_kind = model.spec.head.feature if model.spec.head is not None else "pooled"
    key = feature_key(backbone_key, feature_kind, dataset.records, model.spec.preprocess.model_dump(mode="json"))
    file = cache_dir / f"{key}.safetensors" if cache_dir is not None else None
    labels = torch.tensor([r.label for r in dataset.records], dtype=torch.long)
    if file is not None and file.exists():
        stored = _read_entry(file, len(dataset))
        if stored is not None:
            return stored["features"], stored["labels"], stored["ok"].bool(), True
    was_training = model.training
    model.eval()
    features, ok = map_frames(
        model.features, dataset, batch_size=batch_size, device=device, info=info, workers=workers, bf16=bf16
    )
    model.train(was_training)
    if file is not None and info.is_main:
        _atomic_save(
            {"features": features.contiguous(), "labels": labels, "ok": ok.to(torch.uint8)},
            file,
            {"feature": feature_kind, "frames": str(len(dataset))},
        )
    info.barrier()
    return features, labels, ok, False
