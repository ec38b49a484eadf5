"""Per-frame scores of every model on every split, computed once and kept on disk.

``OUT/scores/<model hash>/<dataset>__<split>__<frames key>.npz`` (with its sha256 beside it, checked before
reuse: :mod:`mergekit_clip.integrity`) holds P(fake), decode success, labels and
video ids; the frames key hashes the dataset JSON, split, frame_num, compression and the eval settings that
change a score (resize, precision), so a changed setting re-scores and an unchanged one never does. One
:class:`~eval.predict.Predictor` with one :class:`~eval.predict.FrameCache` serves every model: frames are
decoded once for all of them.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mergekit_clip.integrity import distrust, read_verified, save_verified
from mergekit_clip.metrics import binary_auc_score, video_level

# (dataset, split) -> frame records; the study's own loader, or a test's
RecordsLoader = Callable[[str, str], Sequence]


@dataclass(frozen=True)
class SplitScores:
    """One model on one dataset split; frames that failed to decode are already dropped."""

    labels: np.ndarray
    scores: np.ndarray
    video_ids: np.ndarray

    def auc(self, level: str = "frame") -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one class -> nan, reported as n/a
            if level == "frame":
                return binary_auc_score(self.labels, self.scores)
            y, s, _ = video_level(self.labels, self.scores, list(self.video_ids))
            return binary_auc_score(y, s)


def metric_value(scores: Mapping[str, SplitScores], metric: str) -> float:
    """The mean over datasets of each dataset's ``metric`` (any registered one; AUCs on their fast path)."""
    if metric in ("frame_auc", "video_auc"):
        values = [s.auc(metric.split("_")[0]) for s in scores.values()]
    else:
        from mergekit_clip.metrics import compute_metrics

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one class -> nan, reported as n/a
            values = [compute_metrics(s.labels, s.scores, list(s.video_ids), names=[metric])[metric]
                      for s in scores.values()]  # fmt: skip
    return float(np.mean(values)) if values else float("nan")


def records_loader(data) -> RecordsLoader:
    """The DeepfakeBench reader over the study's data section, memoised per (dataset, split)."""
    from mergekit_clip.data.formats import load_frames

    memo: dict[tuple[str, str], list] = {}

    def load(dataset: str, split: str):
        if (dataset, split) not in memo:
            memo[(dataset, split)] = load_frames(
                dataset, split, json_root=data.json_root, data_root=data.data_root, frame_num=data.frame_num,
                compression=data.compression, **data.root_options(),
            )  # fmt: skip
        return memo[(dataset, split)]

    return load


def _digest(json_root: Path, dataset: str) -> str:
    """The dataset file's digest, whichever format holds it (an edited file keys new scores)."""
    from mergekit_clip.data.deepfakebench import DatasetError
    from mergekit_clip.data.formats import dataset_identity

    try:
        return dataset_identity(dataset, json_root).digest[:16]
    except DatasetError:
        return "missing"  # the read that follows names the problem


class ScoreStore:
    """Scores on disk under ``root``; :meth:`get` computes what is missing with the shared predictor."""

    KEEP_LOADED = 4  # models that always stay loaded (the robustness step visits each model per condition)
    KEEP_LOADED_BYTES = 2 << 30  # more stay while their weights fit: val then test scoring loads each model once

    def __init__(
        self, root: Path, data, eval_cfg, loader: RecordsLoader, predictor_factory: Callable, rebuild: bool = True
    ):
        self.root, self.data, self.eval_cfg, self.loader = root, data, eval_cfg, loader
        self.rebuild = rebuild  # a file that fails its digest: rebuilt (True) or refused
        self._predictor_factory = predictor_factory
        self._predictor = None
        self.computed = 0  # model x split scorings run in this process (tests count them)
        self.writes = True  # False on the ranks > 0 of a job of several tasks: they score, rank 0 writes
        self._models: dict[str, object] = {}  # model hash -> loaded detector, oldest first
        self._model_bytes: dict[str, int] = {}  # model hash -> size of its weight files

    @property
    def predictor(self):
        if self._predictor is None:
            self._predictor = self._predictor_factory()
        return self._predictor

    def _file(self, model_hash: str, dataset: str, split: str, perturbation=None, seed: int = 0) -> Path:
        from mergekit_clip.data.deepfakebench import split_dataset_name

        base, _ = split_dataset_name(dataset)
        condition = () if perturbation is None else (perturbation.key, seed)  # clean files keep their old key
        frames_key = hashlib.sha256(
            repr((_digest(self.data.json_root, base), dataset, split, self.data.frame_num, self.data.compression,
                  self.eval_cfg.resize, effective_precision(self.eval_cfg), *condition)).encode()
        ).hexdigest()[:12]  # fmt: skip
        tag = "" if perturbation is None else f"__{perturbation.key.replace(':', '-')}"
        return self.root / model_hash[:16] / f"{dataset}__{split}{tag}__{frames_key}.npz"

    def has(self, model_hash: str, dataset: str, split: str) -> bool:
        return self._file(model_hash, dataset, split).exists()

    def get(self, model_dir: Path, model_hash: str, pairs: Sequence[tuple[str, str]], name: str) -> dict:
        """``{(dataset, split): SplitScores}`` for one model; loads the model only if something is missing."""
        found = self._collect(model_dir, model_hash, [(d, s, None) for d, s in pairs], name, 0)
        return {(d, s): scores for (d, s, _), scores in found.items()}

    def get_perturbed(
        self, model_dir: Path, model_hash: str, pairs: Sequence[tuple[str, str]], name: str, perturbations, seed: int
    ) -> dict:
        """``{(dataset, split, perturbation key): SplitScores}``: every pair under every perturbation, seeded."""
        jobs = [(d, s, p) for d, s in pairs for p in perturbations]
        found = self._collect(model_dir, model_hash, jobs, name, seed)
        return {(d, s, p.key): scores for (d, s, p), scores in found.items()}

    def get_unlabelled(self, model_dir: Path, model_hash: str, pairs: Sequence[tuple[str, str]], name: str) -> dict:
        """``{(dataset, split): P(fake) per frame}`` read without labels (the transductive protocols): the scores
        array of a stored score file (its labels are never loaded), else the frames scored from their paths alone
        and kept in an ``__unlabelled`` file that holds no labels."""
        out, todo = {}, []
        for dataset, split in pairs:
            labelled = self._file(model_hash, dataset, split)
            tag = f"{dataset}__{split}__"
            bare = labelled.with_name(labelled.name.replace(tag, f"{tag}unlabelled__"))
            for file in (labelled, bare):
                found = self._read_scores_only(file) if file.exists() else None
                if found is not None:
                    out[(dataset, split)] = found
                    break
            else:
                todo.append((dataset, split, bare))
        if todo:
            model = self._model(model_dir, model_hash)
            for dataset, split, bare in todo:
                records = self.loader(dataset, split)
                paths = [str(r.path) for r in records]
                videos = [str(r.video_id) for r in records]
                scores, ok = self.predictor.score_paths(model, paths, desc=f"{name} | {dataset}/{split} unlabelled",
                                                        video_ids=videos)  # fmt: skip
                kept = {"scores": scores[ok], "video_ids": np.asarray(videos)[ok].astype(str)}
                save_verified(lambda tmp, kept=kept: _savez(tmp, **kept), bare)
                self.computed += 1
                out[(dataset, split)] = scores[ok]
        return out

    def _collect(self, model_dir: Path, model_hash: str, jobs, name: str, seed: int) -> dict:
        out, todo = {}, []
        for dataset, split, perturbation in jobs:
            file = self._file(model_hash, dataset, split, perturbation, seed)
            found = self._read(file) if file.exists() else None
            if found is not None:
                out[(dataset, split, perturbation)] = found
            else:
                todo.append((dataset, split, perturbation))
        if not todo:
            return out
        model = self._model(model_dir, model_hash)
        self.predictor.perturb_seed = int(seed)
        for dataset, split, perturbation in todo:
            records = self.loader(dataset, split)
            paths = [str(r.path) for r in records]
            videos = [str(r.video_id) for r in records]
            where = f"{dataset}/{split}" + ("" if perturbation is None else f" | {perturbation.key}")
            scores, ok = self.predictor.score_paths(model, paths, desc=f"{name} | {where}", perturbation=perturbation,
                                                    video_ids=videos)  # fmt: skip
            labels = np.asarray([int(r.label) for r in records], dtype=np.int64)
            result = SplitScores(labels[ok], scores[ok], np.asarray(videos)[ok])
            if self.writes:
                self._save(self._file(model_hash, dataset, split, perturbation, seed), result)
            self.computed += 1
            out[(dataset, split, perturbation)] = result
        return out

    def _model(self, model_dir: Path, model_hash: str):
        """The loaded detector. The last ``KEEP_LOADED`` stay loaded, and more while their weight files add up to
        ``KEEP_LOADED_BYTES``: a study scores every model on val, selects, then scores them on the test sets, and
        small models then load once instead of twice."""
        from mergekit_clip.detector.io import load_detector, weight_files

        if model_hash not in self._models:
            size = sum(f.stat().st_size for f in weight_files(model_dir))
            budget = self.KEEP_LOADED_BYTES - size
            while len(self._models) >= self.KEEP_LOADED and sum(self._model_bytes.values()) > budget:
                oldest = next(iter(self._models))
                self._models.pop(oldest)
                self._model_bytes.pop(oldest, None)
            self._models[model_hash] = load_detector(model_dir)
            self._model_bytes[model_hash] = size
        return self._models[model_hash]

    def _read(self, file: Path) -> SplitScores | None:
        """The stored scores if their bytes match the recorded digest (read once, hashed in memory); else the
        file is rebuilt (``None``, one warning) or refused."""
        data, reason = read_verified(file)
        if reason is None:
            try:
                with np.load(io.BytesIO(data), allow_pickle=False) as z:
                    found = SplitScores(z["labels"], z["scores"], z["video_ids"])
                if found.labels.shape == found.scores.shape == found.video_ids.shape == (len(found.labels),):
                    return found
                reason = "holds arrays of different lengths"
            except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
                reason = f"is not a readable score file ({e})"
        distrust(file, reason, rebuild=self.rebuild, what="score file")
        return None

    def _read_scores_only(self, file: Path) -> np.ndarray | None:
        """The ``scores`` array of a verified score file (its labels are never parsed); ``None``: rebuild."""
        data, reason = read_verified(file)
        if reason is None:
            try:
                with np.load(io.BytesIO(data), allow_pickle=False) as z:  # lazy: only the arrays named are read
                    return np.asarray(z["scores"])
            except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
                reason = f"is not a readable score file ({e})"
        distrust(file, reason, rebuild=self.rebuild, what="score file")
        return None

    @staticmethod
    def _save(file: Path, result: SplitScores) -> None:
        arrays = {"labels": result.labels, "scores": result.scores, "video_ids": result.video_ids.astype(str)}
        save_verified(lambda tmp: _savez(tmp, **arrays), file)


def _savez(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
        np.savez(f, **arrays)


def effective_precision(eval_cfg) -> str:
    """``fp32`` or ``bf16`` as the scores are computed (``auto`` resolved on this machine): part of the score key."""
    from mergekit_clip.options import resolve_device, uses_bf16

    return "bf16" if uses_bf16(eval_cfg.precision, resolve_device(eval_cfg.device)) else "fp32"


def make_predictor(eval_cfg, dist=None) -> Callable:
    """The study's predictor factory; ``dist`` (a :class:`~mergekit_clip.distributed.DistInfo`): each rank scores
    its shard of the frames and every rank gets all scores (a job of several tasks)."""

    def factory():
        import torch

        from eval.predict import FrameCache, Predictor
        from mergekit_clip.options import resolve_device

        if eval_cfg.threads is not None:
            torch.set_num_threads(eval_cfg.threads)
        device = resolve_device(eval_cfg.device)
        return Predictor(
            dist.device(device) if dist is not None else device, effective_precision(eval_cfg) == "bf16",
            eval_cfg.batch_size, eval_cfg.workers,
            FrameCache(eval_cfg.cache_mb), strict=False, resize=eval_cfg.resize, progress=False, dist=dist,
        )  # fmt: skip  (the study's own bars count models and conditions; one bar per split would bury them)

    return factory
