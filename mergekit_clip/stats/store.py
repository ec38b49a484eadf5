"""The merge-statistics file: ``<ingredient>/merge_stats/<kind>.safetensors`` (kind ``gram`` or ``fisher``).

Tensors are keyed by the ingredient's weight name they belong to:

* ``gram``: ``G = X^T X / N`` for the inputs ``X`` (N rows: every token of every frame) of each linear layer,
  float32, ``in x in``; the metadata field ``input_axis`` (JSON) says which axis of the weight is its input
  (1 for ``nn.Linear``-style ``out x in`` weights, 0 for ``visual.proj``, which open_clip applies as ``x @ proj``);
* ``fisher``: the diagonal Fisher, same shape as the weight, float32.

String metadata: ``format`` (= ``mergekit-clip-merge-stats``), ``format_version``, ``kind``, ``dataset``,
``dataset_sha256`` (the dataset file's digest, :func:`mergekit_clip.data.formats.dataset_identity`),
``split``, ``frames`` (count used), ``frame_num`` (per video, ``all`` when unset), ``compression``, ``max_frames``
(the cap asked for, ``all`` when unset), ``weights_sha256`` (of the ingredient's weight files when the statistics
were computed: a different value means they are stale), ``preprocess`` (the detector's preprocessing as JSON),
``fisher_label`` (``predicted`` or ``true``) and ``tokens`` (Gram rows per layer). The fields that say what the
statistics were computed from are spelled once, by :func:`mergekit_clip.stats.compute.stats_metadata`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mergekit_clip.detector.io import DetectorFormatError, check_safetensors_file, weight_files, weights_hash
from mergekit_clip.digest import file_sha256
from mergekit_clip.integrity import mismatch, recorded_digest, save_verified
from mergekit_clip.structured import StructuredFileError, parse_json

STATS_DIR = "merge_stats"
FORMAT = "mergekit-clip-merge-stats"
FORMAT_VERSION = "1"
KINDS = ("gram", "fisher")


class StatsError(click.ClickException, ValueError):
    """Missing, stale or malformed statistics; the message names the ingredient and the command to run."""


def stats_path(model_dir: str | os.PathLike, kind: str) -> Path:
    return Path(model_dir) / STATS_DIR / f"{kind}.safetensors"


def stats_command(model_dir: str | os.PathLike, kind: str) -> str:
    return (
        f"mergekit-clip stats {model_dir} --kind {kind} --dataset NAME --split train "
        "--json-root JSON_ROOT --data-root DATA_ROOT"
    )


def write_stats(model_dir: str | os.PathLike, kind: str, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
    """Write atomically (temp file + rename) so a killed run never leaves half a file."""
    if kind not in KINDS:
        raise ValueError(f"unknown statistics kind {kind!r} (choose from {list(KINDS)})")
    path = stats_path(model_dir, kind)
    path.parent.mkdir(exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in tensors.items()}
    return save_verified(lambda tmp: save_file(tensors, str(tmp), meta), path)  # with its sha256 beside it


@dataclass
class StatsFile:
    """An opened statistics file (tensors read on demand)."""

    path: Path
    model_dir: str
    kind: str
    metadata: dict
    _handle: object

    def get(self, name: str, device: torch.device | str = "cpu") -> torch.Tensor | None:
        if name not in self._names:
            return None
        return self._handle.get_tensor(name).to(device=device, dtype=torch.float32)

    @property
    def _names(self) -> set[str]:
        return set(self._handle.keys())

    def input_axis(self, name: str) -> int:
        return int(json.loads(self.metadata.get("input_axis", "{}")).get(name, 1))


_CACHE: dict[tuple[str, str], StatsFile] = {}
_LOCK = threading.Lock()  # mergekit may execute tasks from several threads


def open_stats(model_dir: str | os.PathLike, kind: str, method: str) -> StatsFile:
    """The checked statistics of an ingredient, cached per process; raises :class:`StatsError`."""
    path = stats_path(model_dir, kind)
    # A rewritten stats file or re-trained weights (a study run in one process) must not hit the cache.
    key = (str(Path(model_dir).resolve()), kind, _mtime(path), *(_mtime(f) for f in _weight_files(model_dir)))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if not path.exists():
            raise StatsError(
                f"{method}: ingredient {model_dir} has no {kind} statistics ({path} missing); "
                f"compute them with: {stats_command(model_dir, kind)}"
            )
        reason = mismatch(path, file_sha256(path)) if recorded_digest(path) is not None else None
        if reason is not None:  # a file without a digest (written by hand or before digests) is checked below only
            raise StatsError(f"{method}: statistics file {path} {reason}; recompute it with: "
                             f"{stats_command(model_dir, kind)}")  # fmt: skip
        try:
            check_safetensors_file(path)  # dtypes, shapes and offsets agree: get_tensor cannot fail later
            handle = safe_open(str(path), framework="pt", device="cpu")
            metadata = dict(handle.metadata() or {})
        except (SafetensorError, OSError, DetectorFormatError) as e:
            raise StatsError(
                f"{method}: statistics file {path} is not a readable safetensors file ({e}); recompute it with: "
                f"{stats_command(model_dir, kind)}"
            ) from e
        if metadata.get("format") != FORMAT or metadata.get("kind") != kind:
            raise StatsError(
                f"{path}: not a mergekit-clip {kind} statistics file (format={metadata.get('format')!r}, "
                f"kind={metadata.get('kind')!r})"
            )
        try:
            axes = parse_json(metadata.get("input_axis", "{}"), f"{path} (metadata input_axis)")
            if not isinstance(axes, dict) or not all(v in (0, 1) for v in axes.values()):
                raise StructuredFileError(f"{path}: metadata input_axis must map weight names to 0 or 1")
        except StructuredFileError as e:
            raise StatsError(f"{method}: {e}; recompute it with: {stats_command(model_dir, kind)}") from e
        current = weights_hash(model_dir)
        if metadata.get("weights_sha256") != current:
            raise StatsError(
                f"{method}: {kind} statistics of ingredient {model_dir} are stale (computed for weights "
                f"{str(metadata.get('weights_sha256'))[:12]}, the weights are now {current[:12]}); recompute them "
                f"with: {stats_command(model_dir, kind)}"
            )
        _CACHE[key] = StatsFile(path, str(model_dir), kind, metadata, handle)
        return _CACHE[key]


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def _weight_files(model_dir: str | os.PathLike) -> list[Path]:
    try:
        return weight_files(model_dir)
    except DetectorFormatError:
        return []


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
