"""What a report says about each model: where it came from and how it was selected."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mergekit_clip.detector.io import read_config_json, weights_hash


def model_selection(cfg: dict[str, Any]) -> str:
    """``ingredient`` / ``uniform soup`` / ``greedy soup on <val>`` / ``merge: <method>``, from ``config.json``.

    Training ingredients carry ``provenance.heldout`` (selected on a source-domain validation split); mergekit
    outputs carry ``provenance.merge.method`` (``mergekit_clip.merge`` in HF layouts); our soups ``provenance.soup``.
    """
    prov = _mapping(cfg.get("provenance"))  # informational: a damaged field reads as absent, never a crash
    merge = _mapping(prov.get("merge") or _mapping(cfg.get("mergekit_clip")).get("merge"))
    soup = _mapping(prov.get("soup"))
    if soup:
        if soup.get("method") == "greedy":
            return f"greedy soup on {soup.get('val_dataset')}/{soup.get('val_split', 'val')}"
        return "uniform soup"
    if merge:
        return f"merge: {merge.get('method', 'unknown')}"
    heldout = _mapping(prov.get("heldout"))
    if heldout.get("dataset"):
        split = heldout.get("split", "val")
        if split == "test":  # a checkpoint picked on a test set is an oracle, never mixed with honest ones
            return f"ingredient (oracle: selected on {heldout['dataset']}/test)"
        return f"ingredient (held-out {heldout['dataset']}/{split})"
    return "ingredient"


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def model_provenance(path: str | os.PathLike) -> dict[str, Any]:
    cfg = read_config_json(path)
    return {
        "model_dir": str(Path(path).resolve()),
        "weights_hash": weights_hash(path),
        "selection": model_selection(cfg),
        "layout": cfg.get("model_type"),
    }


def unique_names(dirs: list[str]) -> list[str]:
    """Display names: the folder name, prefixed by parents until all names differ."""
    paths = [Path(d).resolve() for d in dirs]
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth > max(len(p.parts) for p in paths):
            return names
        depth += 1


def slug(name: str) -> str:
    """A file-name-safe version of a model or dataset name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "unnamed"
