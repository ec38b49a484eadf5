"""Content keys: sha256 of weight files (cached by path, size and mtime) and of candidate recipes.

A candidate's key hashes its recipe with every model path replaced by the hash of that model's weights, plus the
merge options that change the result (random seed), so a moved family keeps its keys and a retrained ingredient
changes them. Score files are keyed by the model's weights hash and the frames they cover.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mergekit_clip.detector.io import weight_files


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def canonical_hash(data: Any, length: int = 16) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class FileHashes:
    """sha256 of files, remembered in a JSON file by (absolute path, size, mtime_ns)."""

    def __init__(self, cache_file: Path | None = None):
        self.cache_file = cache_file
        self._known: dict[str, dict] = {}
        self._dirty = False
        if cache_file is not None and cache_file.exists():
            try:
                self._known = json.loads(cache_file.read_text())
            except (OSError, json.JSONDecodeError):
                self._known = {}  # a damaged cache only costs re-hashing

    def file(self, path: Path) -> str:
        path = Path(path).absolute()
        stat = path.stat()
        entry = self._known.get(str(path))
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            return entry["sha256"]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        self._known[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
        self._dirty = True
        return digest.hexdigest()

    def model(self, model_dir: Path) -> str:
        """One hash for a model directory: its weight files' hashes in order."""
        return canonical_hash([self.file(f) for f in weight_files(model_dir)], length=64)

    def save(self) -> None:
        if self.cache_file is not None and self._dirty:
            write_json_atomic(self.cache_file, self._known)
            self._dirty = False


def recipe_key(recipe: Mapping[str, Any], hashes: FileHashes, options: Mapping[str, Any]) -> str:
    """The content key of a merge: recipe with model paths -> weight hashes, plus result-changing options."""
    def by_content(path: str) -> str:
        return hashes.model(Path(path))

    content = json.loads(json.dumps(recipe))
    if content.get("base_model"):
        content["base_model"] = by_content(content["base_model"])
    for model in content.get("models", []):
        model["model"] = by_content(model["model"])
    return canonical_hash({"recipe": content, "options": dict(options)})
