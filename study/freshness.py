"""A finished study whose inputs did not change is not run again: its outputs are reused as they are.

After a complete run, ``OUT/cache/outputs.json`` records the *inputs key* of that run and the sha256 of every output
it wrote (study.json, report.md, figures). The inputs key hashes everything the numbers depend on:
- the study file as resolved (``output`` and ``tracking`` left out: where results go is not what they are);
- every family the study reads: its ``summary.json``, its training configuration, and each ingredient's and the
  base's model hash (weights + detector spec) plus the merge statistics files beside them;
- every dataset file in the JSON root (any registered format), by content;
- the source of the packages that compute (``mergekit_clip``, ``train``, ``eval``, ``study``) and the versions of
  mergekit, torch, open_clip and scikit-learn.
File hashes come from the study's hash cache (path, size, mtime, inode), so checking costs a stat per file.

When the key and every recorded output match, the rerun reads study.json and returns: no recipe is built, mergekit is
not imported, no score file is opened, nothing is drawn or written. Anything else goes down the ordinary path,
whose own caches (candidates, scores, statistics) keep the work to what changed.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from study.hashing import FileHashes, canonical_hash, write_json_atomic

OUTPUTS_FILE = Path("cache") / "outputs.json"
_PACKAGES = ("mergekit_clip", "train", "eval", "study")
_VERSIONS = ("mergekit", "torch", "open_clip_torch", "scikit-learn", "numpy")
_STATS_DIR = "merge_stats"


def code_digest() -> str:
    """sha256 over the source of the packages that compute a study's numbers (a code change reruns the report)."""
    import importlib

    digest = hashlib.sha256()
    for name in _PACKAGES:
        root = Path(importlib.import_module(name).__file__).parent
        for file in sorted(root.rglob("*.py")):
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    for dist in _VERSIONS:
        try:
            digest.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{dist}=absent".encode())
    return digest.hexdigest()


def _model_dirs(family_root: Path) -> list[Path]:
    dirs = [family_root / "base"] if (family_root / "base" / "config.json").is_file() else []
    ingredients = family_root / "ingredients"
    if ingredients.is_dir():
        dirs += sorted(p for p in ingredients.iterdir() if (p / "config.json").is_file())
    return dirs


def family_digest(root: Path, hashes: FileHashes) -> dict[str, Any] | None:
    """What a family contributes to the key; None while it is not finished (its summary is missing)."""
    summary = root / "summary.json"
    if not summary.is_file():
        return None
    resolved = root / "config.resolved.yaml"
    models = {}
    for model_dir in _model_dirs(root):
        stats = model_dir / _STATS_DIR
        stats_files = sorted(stats.glob("*.safetensors")) if stats.is_dir() else []
        models[model_dir.name] = {"model": hashes.model(model_dir),
                                  "stats": {f.name: hashes.safetensors(f) for f in stats_files}}  # fmt: skip
    return {"summary": hashes.file(summary), "config": hashes.file(resolved) if resolved.is_file() else None,
            "models": models}  # fmt: skip


def family_roots(study) -> list[Path]:
    """Every family folder the study reads: declared families and any family it trained itself."""
    from study.families import plan_families

    roots = {plan.output.absolute() for plan in plan_families(study).values()}
    trained = study.output / "families"
    if trained.is_dir():
        roots |= {p.absolute() for p in trained.iterdir() if p.is_dir()}
    return sorted(roots)


def dataset_digests(json_root: Path, hashes: FileHashes) -> dict[str, str]:
    from mergekit_clip.data.formats import FORMATS

    suffixes = {fmt.source("x", json_root).suffix for fmt in FORMATS.values()}
    files = sorted(p for p in Path(json_root).iterdir() if p.is_file() and p.suffix in suffixes)
    return {p.name: hashes.file(p) for p in files}


def inputs_key(study, hashes: FileHashes) -> str | None:
    """The key of everything the study's numbers depend on; None while a family is unfinished or data is absent."""
    families = {}
    for root in family_roots(study):
        digest = family_digest(root, hashes)
        if digest is None:
            return None
        families[str(root)] = digest
    if not study.data.json_root.is_dir():
        return None
    parts = {
        "study": study.model_dump(mode="json", exclude={"output"}),
        "families": families,
        "datasets": dataset_digests(study.data.json_root, hashes),
        "code": code_digest(),
    }
    return canonical_hash(parts, length=64)


def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def record_outputs(study, key: str | None, files: list[Path]) -> None:
    """After a complete run: the inputs key and the sha256 of each output, for the next run to compare."""
    if key is None:
        return
    out = study.output
    entry = {"inputs_key": key, "outputs": {str(f.relative_to(out)): _sha256(f) for f in files if f.is_file()}}
    write_json_atomic(out / OUTPUTS_FILE, entry)


def output_files(study) -> list[Path]:
    """study.json, report.md and every file under figures/ and robustness/."""
    out = study.output
    drawn = [f for folder in ("figures", "robustness") if (out / folder).is_dir()
             for f in sorted((out / folder).rglob("*")) if f.is_file()]  # fmt: skip
    return [out / "study.json", out / "report.md", *drawn]


def reusable_doc(study) -> dict[str, Any] | None:
    """study.json of a finished run with the same inputs whose outputs are all intact; None otherwise."""
    out = study.output
    record_file = out / OUTPUTS_FILE
    if not record_file.is_file() or not (out / "study.json").is_file():
        return None
    try:
        record = json.loads(record_file.read_text())
        doc = json.loads((out / "study.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    hashes = FileHashes(out / "cache" / "file_hashes.json")
    key = inputs_key(study, hashes)
    hashes.save()
    if key is None or record.get("inputs_key") != key:
        return None
    for name, sha in record.get("outputs", {}).items():
        file = out / name
        if not file.is_file() or _sha256(file) != sha:
            return None
    if any(not (Path(m["path"]) / "config.json").is_file() for m in doc.get("models", {}).values()):
        return None  # a merged model was deleted: rebuild it
    return doc
