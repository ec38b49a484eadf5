"""Content keys: sha256 of weight files (cached by path, size, mtime and inode) and of candidate recipes.

A candidate's key hashes its recipe with every model path replaced by the hash of that model (its weights and the
detector spec of its config.json), plus the merge options that change the result (random seed), so a moved family
keeps its keys and a retrained or re-labelled ingredient changes them. A data-aware method (regmean: Gram matrices,
fisher: diagonal Fisher) also reads each ingredient's ``merge_stats/<kind>.safetensors``: their content hashes join
its key, so statistics recomputed with new content re-merge it (and the same content rewritten does not). Score
files are keyed by the same model hash and the frames they cover.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mergekit_clip.detector.io import weight_files
from mergekit_clip.digest import update_from_file
from mergekit_clip.plugin.methods import STATS_KINDS
from mergekit_clip.stats.store import stats_path


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


CONTENT = "#safetensors-content"  # cache entry of a file's content hash (FileHashes.safetensors)


def canonical_hash(data: Any, length: int = 16) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class FileHashes:
    """sha256 of files, remembered in a JSON file by (absolute path, size, mtime_ns, inode).

    The inode catches a file replaced by rename (how weights and statistics are written) within one coarse
    mtime tick with the same size; an entry from before the inode was recorded is hashed again once.
    """

    def __init__(self, cache_file: Path | None = None):
        self.cache_file = cache_file
        self._known: dict[str, dict] = {}
        self._dirty = False
        self._models: dict[str, tuple[tuple, str]] = {}  # model dir -> (stat of its files, FileHashes.model)
        if cache_file is not None and cache_file.exists():
            try:
                self._known = json.loads(cache_file.read_text())
            except (OSError, json.JSONDecodeError):
                self._known = {}  # a damaged cache only costs re-hashing

    @staticmethod
    def _entry(path: Path, content: bool) -> str:
        return f"{path}{CONTENT}" if content else str(path)

    def _lookup(self, path: Path, content: bool) -> tuple[str | None, dict]:
        stat = path.stat()
        seen = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ino": stat.st_ino}
        entry = self._known.get(self._entry(path, content))
        return (entry["sha256"] if entry and all(entry.get(k) == v for k, v in seen.items()) else None), seen

    def _hash(self, path: Path, content: bool) -> str:
        path = Path(path).absolute()
        known, seen = self._lookup(path, content)
        if known is not None:
            return known
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            if content:
                # safetensors writes its header's metadata map in arbitrary order: hash the header with sorted
                # keys, so the same tensors and metadata rewritten give the same hash
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
                digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
            update_from_file(digest, f)
        self._known[self._entry(path, content)] = {**seen, "sha256": digest.hexdigest()}
        self._dirty = True
        return digest.hexdigest()

    def file(self, path: Path) -> str:
        """sha256 of the file's bytes."""
        return self._hash(path, content=False)

    def safetensors(self, path: Path) -> str:
        """sha256 of a safetensors file's tensors and metadata (canonical header, then the tensor bytes)."""
        return self._hash(path, content=True)

    def prefetch(self, files: Iterable[Path], safetensors: Iterable[Path] = ()) -> None:
        """Hash what is not known yet (``files`` as :meth:`file`, ``safetensors`` as :meth:`safetensors`) on
        several threads (hashlib releases the GIL): a cold cache then costs about one read per input file,
        spread over the cores, once per study."""
        wanted = {(Path(f).absolute(), False) for f in files} | {(Path(f).absolute(), True) for f in safetensors}
        todo = sorted(item for item in wanted if self._lookup(*item)[0] is None)
        workers = min(len(todo), len(os.sched_getaffinity(0)))
        if workers <= 1:
            for item in todo:
                self._hash(*item)
            return
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda item: self._hash(*item), todo))

    def model(self, model_dir: Path) -> str:
        """One hash for a model directory: its weight files' hashes in order and the detector spec its config.json
        describes (head labels, preprocessing, geometry change scores and merges without touching a weight;
        provenance does not and is left out)."""
        from mergekit_clip.detector.io import detector_spec

        files = [Path(model_dir) / "config.json", *weight_files(model_dir)]
        seen = tuple((s.st_size, s.st_mtime_ns, s.st_ino) for s in map(os.stat, files))
        known = self._models.get(str(Path(model_dir).absolute()))
        if known is not None and known[0] == seen:  # asked again in this process (verified, then keyed): a lookup
            return known[1]
        spec = detector_spec(model_dir).model_dump(mode="json")
        digest = canonical_hash({"weights": [self.file(f) for f in files[1:]], "spec": spec}, length=64)
        self._models[str(Path(model_dir).absolute())] = (seen, digest)
        return digest

    def weights_sha256(self, model_dir: Path) -> str:
        """:func:`mergekit_clip.detector.io.weights_hash` (sha256 over the weight files' bytes, what statistics
        files record as ``weights_sha256``), from the cache when the model has one weight file."""
        files = weight_files(model_dir)
        if len(files) == 1:
            return self.file(files[0])
        from mergekit_clip.detector.io import weights_hash

        return weights_hash(model_dir)  # sharded: the digest runs over the shards' concatenation

    def save(self) -> None:
        if self.cache_file is not None and self._dirty:
            write_json_atomic(self.cache_file, self._known)
            self._dirty = False


MODEL_DIGEST = "model_sha256"  # candidate.json's field: FileHashes.model of the candidate's model/ when written


def read_record(directory: Path) -> dict | None:
    try:
        record = json.loads((directory / "candidate.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def record_model_digest(directory: Path, hashes: FileHashes) -> None:
    """Add the model's digest to ``directory/candidate.json`` (merges and soups write it this way)."""
    record = read_record(directory) or {}
    record[MODEL_DIGEST] = hashes.model(directory / "model")
    write_json_atomic(directory / "candidate.json", record)


def verified_model(directory: Path, hashes: FileHashes, *, rebuild: bool = True) -> bool:
    """Whether the finished candidate (or soup) in ``directory`` may be reused: its ``model/`` must hash to the
    digest ``candidate.json`` recorded. A mismatch (weights or config rewritten, a record without a digest) removes
    the candidate with one warning (it is built again) or refuses (``rebuild=False``)."""
    import shutil

    from mergekit_clip.detector.io import DetectorFormatError
    from mergekit_clip.integrity import NO_DIGEST, distrust

    record = read_record(directory)
    if record is None and not (directory / "candidate.json").exists():
        return True  # killed between the atomic model/ and its record: the record is written now
    recorded = record.get(MODEL_DIGEST) if record else None
    try:
        actual = hashes.model(directory / "model")
    except (DetectorFormatError, OSError, ValueError) as e:
        actual, reason = None, f"is unreadable ({e})"
    if actual is not None:
        if recorded is None:
            reason = f"{NO_DIGEST} (candidate.json lacks {MODEL_DIGEST})"
        elif recorded != actual:
            reason = f"does not match its recorded digest (now {actual[:12]}, recorded {str(recorded)[:12]})"
        else:
            return True

    def remove(model: Path) -> None:
        shutil.rmtree(model, ignore_errors=True)
        (directory / "candidate.json").unlink(missing_ok=True)

    distrust(directory / "model", reason, rebuild=rebuild, what="candidate model", remove=remove)
    return False


def _model_paths(recipe: Mapping[str, Any]) -> list[str]:
    """Every model a recipe references: its base (if any), then its models, in order."""
    base = [recipe["base_model"]] if recipe.get("base_model") else []
    return base + [m["model"] for m in recipe.get("models", [])]


def stats_hashes(recipe: Mapping[str, Any], hashes: FileHashes) -> dict[str, Any] | None:
    """The content hashes of the statistics files the recipe's method reads, per referenced model in recipe order
    (``None`` for a missing file: the merge would refuse it, and computing it changes the key); ``None`` for a
    method that reads none. Recomputed statistics with the same tensors and metadata keep their hash."""
    kind = STATS_KINDS.get(recipe.get("merge_method"))
    if kind is None:
        return None
    found = []
    for path in _model_paths(recipe):
        file = stats_path(path, kind)
        found.append(hashes.safetensors(file) if file.is_file() else None)
    return {"kind": kind, "files": found}


def key_files(recipe: Mapping[str, Any]) -> tuple[list[Path], list[Path]]:
    """The files :func:`recipe_key` hashes: every referenced model's weight files, and the statistics files its
    method reads (those that exist)."""
    weights = [f for path in _model_paths(recipe) for f in weight_files(path)]
    kind = STATS_KINDS.get(recipe.get("merge_method"))
    stats = [stats_path(p, kind) for p in _model_paths(recipe)] if kind is not None else []
    return weights, [f for f in stats if f.is_file()]


def recipe_key(recipe: Mapping[str, Any], hashes: FileHashes, options: Mapping[str, Any]) -> str:
    """The content key of a merge: recipe with model paths -> weight hashes, the hashes of the merge statistics
    a data-aware method reads, plus result-changing options."""
    def by_content(path: str) -> str:
        return hashes.model(Path(path))

    stats = stats_hashes(recipe, hashes)
    content = json.loads(json.dumps(recipe))
    if content.get("base_model"):
        content["base_model"] = by_content(content["base_model"])
    for model in content.get("models", []):
        model["model"] = by_content(model["model"])
    key: dict[str, Any] = {"recipe": content, "options": dict(options)}
    if stats is not None:  # only data-aware methods: every other candidate keeps the key it had
        key["merge_stats"] = stats
    return canonical_hash(key)
